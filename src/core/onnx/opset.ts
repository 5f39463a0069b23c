/**
 * Raising a graph's default-domain opset for ops an exporter adds (blocked int4 DequantizeLinear
 * needs 21). Only the changes between 13 and 21 that break existing nodes are rewritten: the
 * Reduce* ops took `axes` as an input from opset 18. Ops whose meaning changed in ways this cannot
 * rewrite are refused with a clear error instead of producing a model that computes something else.
 */
import { ModelError } from '../errors.ts';
import { bytesOf } from './build.ts';
import { DataType } from './dtypes.ts';
import type { GraphProto, NodeProto, TensorProto } from './proto.ts';

const REDUCE_AXES_TO_INPUT = new Set([
  'ReduceMean',
  'ReduceMax',
  'ReduceMin',
  'ReduceProd',
  'ReduceL1',
  'ReduceL2',
  'ReduceLogSum',
  'ReduceLogSumExp',
  'ReduceSumSquare',
]);

/**
 * Ops whose semantics changed between 18 and 21 in ways not rewritten here. A Map, not an object
 * literal: an op type read from the file ('constructor', 'toString') must not find Object's members.
 */
const CHANGED_SEMANTICS = new Map<string, number>([
  ['GridSample', 20],
  ['DFT', 20],
  ['GroupNormalization', 21],
]);

function mapGraph(graph: GraphProto, f: (n: NodeProto) => NodeProto): GraphProto {
  return {
    ...graph,
    node: graph.node.map((n) => {
      const mapped = f(n);
      if (!mapped.attribute?.some((a) => a.g || a.graphs?.length)) return mapped;
      return {
        ...mapped,
        attribute: mapped.attribute.map((a) => ({
          ...a,
          ...(a.g ? { g: mapGraph(a.g, f) } : {}),
          ...(a.graphs?.length ? { graphs: a.graphs.map((g) => mapGraph(g, f)) } : {}),
        })),
      };
    }),
  };
}

/**
 * An `axes` attribute as the int64 input opset 18 takes. Each value goes through its decimal text, so
 * an int64 the decoder kept as a string or a Long stays exact (a JS number would round it).
 */
function axesTensor(name: string, ints: readonly unknown[]): TensorProto {
  const values = BigInt64Array.from(ints, (v) => BigInt.asIntN(64, BigInt(String(v))));
  return { name, dims: [values.length], data_type: DataType.INT64, raw_data: bytesOf(values) };
}

/**
 * The graph rewritten for default-domain opset `to` (from `from`). New constant inputs go into the
 * main graph's initializers, which subgraphs can read as outer-scope values.
 */
export function upgradeDefaultOpset(graph: GraphProto, from: number, to: number): GraphProto {
  if (to <= from) return graph;
  if (from < 13) {
    throw new ModelError(
      'unsupported',
      `This export needs ONNX opset ${to}, but the model uses opset ${from}, older than the 13 the studio can upgrade from. ` +
        `Re-export the model with opset 17 or newer, or pick a format that needs no upgrade (int4 as MatMulNBits, int8).`,
    );
  }
  const added: TensorProto[] = [];
  const taken = new Set(graph.initializer.map((t) => t.name));
  const upgraded = mapGraph(graph, (node) => {
    const since = CHANGED_SEMANTICS.get(node.op_type);
    if (!node.domain && since && from < since && to >= since) {
      throw new ModelError(
        'unsupported',
        `The model's ${node.op_type} node '${node.name ?? ''}' changed meaning in opset ${since}; ` +
          `the studio cannot raise this model to opset ${to}. Choose an export format that keeps opset ${from}.`,
      );
    }
    if (node.domain || !REDUCE_AXES_TO_INPUT.has(node.op_type) || from >= 18 || to < 18) return node;
    const axes = node.attribute?.find((a) => a.name === 'axes');
    if (!axes) return node;
    // Before opset 18 a Reduce op has exactly one input, the data; the rewrite adds axes as the second.
    if (node.input.length !== 1 || !node.input[0]) {
      throw new ModelError(
        'corrupt',
        `The model's ${node.op_type} node '${node.name || node.output[0] || ''}' has ${node.input.length} input(s) ` +
          `[${node.input.map((x) => `'${x}'`).join(', ')}], but ${node.op_type} before opset 18 takes exactly one (the data). ` +
          `The model is damaged; it cannot be raised to opset ${to}.`,
      );
    }
    const base = node.name || node.output[0] || node.op_type;
    let name = `${base}_axes`;
    for (let i = 1; taken.has(name); i++) name = `${base}_axes_${i}`;
    taken.add(name);
    added.push(axesTensor(name, axes.ints ?? []));
    return {
      ...node,
      input: [node.input[0], name],
      attribute: node.attribute?.filter((a) => a !== axes),
    };
  });
  return { ...upgraded, initializer: [...upgraded.initializer, ...added] };
}
