/**
 * The compressed model as ONNX: same graph inputs and outputs, each compressed weight replaced by
 * its method's storage format (or by its new dense values), opsets raised only as far as the new
 * nodes need. The source model is not modified.
 */
import { DataType } from '../onnx/dtypes.ts';
import { upgradeDefaultOpset } from '../onnx/opset.ts';
import { rawTensor, writeModel, type ExternalDataOptions, type WrittenModel } from '../onnx/write.ts';
import type { OnnxModel } from '../onnx/model.ts';
import type { ModelProto, OperatorSetIdProto } from '../onnx/proto.ts';
import { getMethod } from '../../methods/registry.ts';
import { bytesOf } from '../onnx/build.ts';
import { GraphEditor } from './graph-editor.ts';
import { asMatrix, type CompressionResult } from './pipeline.ts';

export interface ExportOptions {
  externalData?: ExternalDataOptions;
}

/** IR version that first carried each default-domain opset we may raise a model to. */
function minIrVersion(opset: number): number {
  return opset >= 21 ? 10 : opset >= 19 ? 9 : opset >= 15 ? 8 : 7;
}

export function exportCompressed(
  model: OnnxModel,
  result: CompressionResult,
  options: ExportOptions = {},
): WrittenModel {
  const editor = new GraphEditor(model.graph, model.proto.opset_import);
  for (const o of result.outcomes) {
    const matrix = asMatrix(o.candidate, o.values);
    if (o.encoder) {
      const method = getMethod(o.encoder.method);
      method.rewrite?.(matrix, o.encoder.encoding, editor, o.encoder.options);
    } else {
      editor.setInitializer(
        rawTensor(o.candidate.name, DataType.FLOAT, [...o.candidate.shape], bytesOf(o.values)),
      );
    }
  }
  const before = new Map(model.proto.opset_import.map((o) => [o.domain ?? '', Number(o.version)]));
  const fromDefault = before.get('') ?? 1;
  const toDefault = editor.opsets.get('') ?? fromDefault;
  const graph = upgradeDefaultOpset(editor.finish(), fromDefault, toDefault);
  const opsetImport: OperatorSetIdProto[] = [...editor.opsets].map(([domain, version]) => ({
    domain,
    version,
  }));
  const irVersion = Math.max(Number(model.proto.ir_version), minIrVersion(toDefault));
  // opset_import and ir_version stay as they were when nothing was rewritten (a copy is byte-identical)
  const opsetsChanged =
    opsetImport.length !== before.size || opsetImport.some((o) => before.get(o.domain ?? '') !== o.version);
  const rewritten = result.outcomes.length > 0 || opsetsChanged;
  const proto: Partial<ModelProto> = {};
  if (opsetsChanged) proto.opset_import = opsetImport;
  if (rewritten && irVersion !== Number(model.proto.ir_version)) proto.ir_version = irVersion;
  return writeModel(model, { graph, externalData: options.externalData, proto });
}
