/**
 * The compressed model as ONNX: same graph inputs and outputs, each compressed weight replaced by
 * its method's storage format (or by its new dense values), opsets raised only as far as the new
 * nodes need. The source model is not modified.
 */
import { DataType } from '../onnx/dtypes.ts';
import { upgradeDefaultOpset } from '../onnx/opset.ts';
import { rawTensor, writeModel, type ExternalDataOptions, type WrittenModel } from '../onnx/write.ts';
import { isExternal, tensorBytes, type OnnxModel } from '../onnx/model.ts';
import { findWeight } from '../onnx/graphs.ts';
import type { GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto } from '../onnx/proto.ts';
import { getMethod } from '../../methods/registry.ts';
import { bytesOf, makeNode } from '../onnx/build.ts';
import { castFloat32ToFloat16 } from '../onnx/dtypes.ts';
import { GraphEditor } from './graph-editor.ts';
import type { CompressionResult, TensorOutcome } from './pipeline.ts';
import type { WeightMatrix } from '../../methods/types.ts';

export interface ExportOptions {
  externalData?: ExternalDataOptions;
}

/** IR version that first carried each default-domain opset we may raise a model to. */
function minIrVersion(opset: number): number {
  return opset >= 21 ? 10 : opset >= 19 ? 9 : opset >= 15 ? 8 : 7;
}

/** The written model, and what the export did other than the recipe asked (a format fallen back). */
export type ExportedModel = WrittenModel & { warnings: string[] };

export function exportCompressed(
  model: OnnxModel,
  result: CompressionResult,
  options: ExportOptions = {},
): ExportedModel {
  const root = new GraphEditor(model.graph, model.proto.opset_import);
  for (const o of result.outcomes) rewriteOutcome(model, root, o);
  const { graph, proto } = finishRewrite(model, root, result.outcomes.length);
  return {
    ...writeModel(model, { graph, externalData: options.externalData, proto }),
    warnings: [...root.warnings],
  };
}

/** One compressed weight written into the graph that holds it: its storage format, or its new values. */
export function rewriteOutcome(model: OnnxModel, root: GraphEditor, o: TensorOutcome): void {
  // rewritten in the graph that holds it, under the name that graph's nodes read it by
  const weight = findWeight(model, o.candidate.name);
  const editor = root.editorFor(weight.scope.graph);
  if (weight.source === 'constant') editor.constantToInitializer(weight.tensorName);
  // values read only where they are written (a dense weight): an encoding's rewrite needs its codes alone
  const matrixNamed = (name: string): WeightMatrix => ({
    name,
    shape: o.candidate.shape,
    channelAxis: o.candidate.channelAxis,
    get values() {
      return o.values;
    },
  });
  const matrix = matrixNamed(weight.tensorName);
  const half = o.candidate.dataType;
  if (!o.encoder) {
    // dense weights go back in the source's type: exact for what a transform keeps (a float16
    // weight pruned is float16 values and zeros)
    editor.setInitializer(
      half === undefined
        ? rawTensor(weight.tensorName, DataType.FLOAT, [...o.candidate.shape], bytesOf(o.values))
        : rawTensor(weight.tensorName, half, [...o.candidate.shape], halfBytes(o.values, half)),
    );
    return;
  }
  const method = getMethod(o.encoder.method);
  if (half === undefined) {
    method.rewrite?.(matrix, o.encoder.encoding, editor, o.encoder.options);
    return;
  }
  // a float16 / bfloat16 weight: the method's decode writes a float32 tensor, cast back to the
  // source's type under the weight's name, so every reader still gets the type it was built for
  const wide = editor.uniqueName(`${weight.tensorName}_float32`);
  editor.removeInitializer(weight.tensorName);
  editor.setInitializer({ name: wide, data_type: DataType.FLOAT, dims: [...o.candidate.shape] });
  const cast = makeNode(
    'Cast',
    [wide],
    [weight.tensorName],
    { to: half },
    { name: editor.uniqueName(`${wide}_Cast`) },
  );
  editor.addDecodeNodes(cast);
  method.rewrite?.(matrixNamed(wide), o.encoder.encoding, editor, o.encoder.options);
  // the cast reads what the method's decode nodes write: it runs after them
  editor.moveDecodeNodeLast(cast);
  if (editor.hasInitializer(wide) && !editor.getInitializer(wide).raw_data)
    editor.setInitializer(rawTensor(wide, DataType.FLOAT, [...o.candidate.shape], bytesOf(o.values)));
}

/** float32 values as float16 or bfloat16 bytes (round to nearest even). */
function halfBytes(values: Float32Array, dataType: number): Uint8Array {
  if (dataType === DataType.FLOAT16) return bytesOf(castFloat32ToFloat16(values));
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const b = bits[i];
    // NaN keeps a quiet NaN; others round the dropped 16 bits to nearest, ties to even
    out[i] = (b & 0x7fffffff) > 0x7f800000 ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return bytesOf(out);
}

/**
 * The rewritten graph (opset raised as far as the new nodes need, nested external data embedded)
 * and the model-level fields that change, after `rewritten` weights went through `rewriteOutcome`.
 */
export function finishRewrite(
  model: OnnxModel,
  root: GraphEditor,
  rewrittenCount: number,
): { graph: GraphProto; proto: Partial<ModelProto> } {
  const before = new Map(model.proto.opset_import.map((o) => [o.domain ?? '', Number(o.version)]));
  const fromDefault = before.get('') ?? 1;
  const toDefault = root.opsets.get('') ?? fromDefault;
  const graph = embedNestedExternalData(
    model,
    upgradeDefaultOpset(root.finish(), fromDefault, toDefault),
    true,
  );
  const opsetImport: OperatorSetIdProto[] = [...root.opsets].map(([domain, version]) => ({
    domain,
    version,
  }));
  const irVersion = Math.max(Number(model.proto.ir_version), minIrVersion(toDefault));
  // opset_import and ir_version stay as they were when nothing was rewritten (a copy is byte-identical)
  const opsetsChanged =
    opsetImport.length !== before.size || opsetImport.some((o) => before.get(o.domain ?? '') !== o.version);
  const rewritten = rewrittenCount > 0 || opsetsChanged;
  const proto: Partial<ModelProto> = {};
  if (opsetsChanged) proto.opset_import = opsetImport;
  if (rewritten && irVersion !== Number(model.proto.ir_version)) proto.ir_version = irVersion;
  return { graph, proto };
}

/**
 * `graph` with the external-data tensors of its subgraphs and Constant nodes embedded: the writer
 * moves main-graph initializers to the new data file, and a reference left pointing at the source's
 * data file would make the output depend on (or misread) a file that is not part of it.
 */
function embedNestedExternalData(model: OnnxModel, graph: GraphProto, main: boolean): GraphProto {
  const embed = (t: TensorProto): TensorProto => {
    if (!isExternal(t)) return t;
    const embedded: TensorProto = { ...t, raw_data: tensorBytes(model, t) };
    delete embedded.data_location;
    delete embedded.external_data;
    return embedded;
  };
  const node = (n: NodeProto): NodeProto => {
    if (!n.attribute?.some((a) => a.g || a.graphs?.length || (a.t && isExternal(a.t)))) return n;
    return {
      ...n,
      attribute: n.attribute.map((a) => ({
        ...a,
        ...(a.t ? { t: embed(a.t) } : {}),
        ...(a.g ? { g: embedNestedExternalData(model, a.g, false) } : {}),
        ...(a.graphs?.length
          ? { graphs: a.graphs.map((g) => embedNestedExternalData(model, g, false)) }
          : {}),
      })),
    };
  };
  return {
    ...graph,
    node: graph.node.map(node),
    initializer: main ? graph.initializer : graph.initializer.map(embed),
  };
}
