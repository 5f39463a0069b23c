/**
 * A one-block decoder laid out as Hugging Face Optimum's merged decoders are: the weights are
 * initializers of the main graph, read only inside the two branches of an `If` on `use_cache_branch`
 * (then: the new keys/values appended to `past_key_values.*`; else: no cache), each branch computing
 * the logits and `present.*`. Also the no-cache branch alone as a plain decoder, for comparison.
 * Random weights; attention without a mask (what is checked is the graph plumbing, not language).
 */
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, int64Tensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import {
  AttributeType,
  type GraphProto,
  type NodeProto,
  type TensorProto,
} from '../../src/core/onnx/proto.ts';
import { seededFloats } from './models.ts';

export const MERGED = { vocab: 48, dim: 32, heads: 2, headDim: 16, hidden: 64 };

function weights(): TensorProto[] {
  const { vocab, dim, hidden } = MERGED;
  const w = (name: string, dims: number[], seed: number, scale: number) =>
    floatTensor(name, dims, seededFloats(dims[0] * dims[1], seed, scale));
  return [
    w('wte', [vocab, dim], 71, 1),
    w('attn.q', [dim, dim], 72, 0.3),
    w('attn.k', [dim, dim], 73, 0.3),
    w('attn.v', [dim, dim], 74, 0.3),
    w('attn.proj', [dim, dim], 75, 0.3),
    w('mlp.fc', [dim, hidden], 76, 0.3),
    w('mlp.proj', [hidden, dim], 77, 0.3),
    w('lm_head', [dim, vocab], 78, 0.3),
    int64Tensor('heads_shape', [4], [0, -1, MERGED.heads, MERGED.headDim]),
    int64Tensor('merge_shape', [3], [0, -1, dim]),
    floatTensor('inv_sqrt_d', [], [1 / Math.sqrt(MERGED.headDim)]),
  ];
}

/** The decoder's nodes; with `past`, keys and values are appended to the cache inputs. */
function decoderNodes(
  prefix: string,
  past: boolean,
): { nodes: NodeProto[]; logits: string; present: string[] } {
  const nodes: NodeProto[] = [];
  let n = 0;
  const op = (type: string, inputs: string[], attrs = {}) => {
    const out = `${prefix}/${type}_${n++}`;
    nodes.push(makeNode(type, inputs, [out], attrs, { name: out }));
    return out;
  };
  const heads = (x: string) => op('Transpose', [op('Reshape', [x, 'heads_shape'])], { perm: [0, 2, 1, 3] });
  const h = op('Gather', ['wte', 'input_ids']);
  const q = heads(op('MatMul', [h, 'attn.q']));
  let k = heads(op('MatMul', [h, 'attn.k']));
  let v = heads(op('MatMul', [h, 'attn.v']));
  if (past) {
    k = op('Concat', ['past_key_values.0.key', k], { axis: 2 });
    v = op('Concat', ['past_key_values.0.value', v], { axis: 2 });
  }
  const presentKey = `${prefix}/present_key`;
  const presentValue = `${prefix}/present_value`;
  nodes.push(makeNode('Identity', [k], [presentKey]), makeNode('Identity', [v], [presentValue]));
  const scores = op('Mul', [op('MatMul', [q, op('Transpose', [k], { perm: [0, 1, 3, 2] })]), 'inv_sqrt_d']);
  const attended = op('MatMul', [op('Softmax', [scores], { axis: -1 }), v]);
  const merged = op('Reshape', [op('Transpose', [attended], { perm: [0, 2, 1, 3] }), 'merge_shape']);
  const h1 = op('Add', [h, op('MatMul', [merged, 'attn.proj'])]);
  const h2 = op('Add', [h1, op('MatMul', [op('Tanh', [op('MatMul', [h1, 'mlp.fc'])]), 'mlp.proj'])]);
  const logits = op('MatMul', [h2, 'lm_head']);
  return { nodes, logits, present: [presentKey, presentValue] };
}

const { heads, headDim, vocab } = MERGED;
const LOGITS = () => valueInfo('logits', DataType.FLOAT, ['batch', 'seq', vocab]);
const PRESENT = (kind: string) =>
  valueInfo(`present.0.${kind}`, DataType.FLOAT, ['batch', heads, 'total_seq', headDim]);
const PAST = (kind: string) =>
  valueInfo(`past_key_values.0.${kind}`, DataType.FLOAT, ['batch', heads, 'past_seq', headDim]);

function branch(name: string, past: boolean): GraphProto {
  const { nodes, logits, present } = decoderNodes(name, past);
  const outs = [`${name}/logits`, `${name}/present.0.key`, `${name}/present.0.value`];
  nodes.push(
    makeNode('Identity', [logits], [outs[0]]),
    makeNode('Identity', [present[0]], [outs[1]]),
    makeNode('Identity', [present[1]], [outs[2]]),
  );
  return {
    name,
    node: nodes,
    input: [],
    output: [
      valueInfo(outs[0], DataType.FLOAT, ['batch', 'seq', vocab]),
      valueInfo(outs[1], DataType.FLOAT, ['batch', heads, 'total_seq', headDim]),
      valueInfo(outs[2], DataType.FLOAT, ['batch', heads, 'total_seq', headDim]),
    ],
    initializer: [],
  };
}

/** input_ids, past_key_values.0.{key,value}, use_cache_branch → logits, present.0.{key,value}. */
export function mergedDecoder(): Uint8Array {
  const ifNode: NodeProto = {
    op_type: 'If',
    name: 'optimum::if',
    input: ['use_cache_branch'],
    output: ['logits', 'present.0.key', 'present.0.value'],
    attribute: [
      { name: 'then_branch', type: AttributeType.GRAPH, g: branch('with_past', true) },
      { name: 'else_branch', type: AttributeType.GRAPH, g: branch('no_past', false) },
    ],
  };
  return makeModelBytes({
    nodes: [ifNode],
    inputs: [
      valueInfo('input_ids', DataType.INT64, ['batch', 'seq']),
      PAST('key'),
      PAST('value'),
      valueInfo('use_cache_branch', DataType.BOOL, [1]),
    ],
    outputs: [LOGITS(), PRESENT('key'), PRESENT('value')],
    initializers: weights(),
  });
}

/** The no-cache branch as a plain decoder: input_ids → logits (and present.*). */
export function plainDecoder(): Uint8Array {
  return branchAsDecoder('plain', false, [valueInfo('input_ids', DataType.INT64, ['batch', 'seq'])]);
}

/**
 * The with-cache branch as a plain decoder, as transformers.js' GPT-2 runs one: input_ids,
 * attention_mask (declared, as exports do; this graph does not read it) and past_key_values.0.* →
 * logits and present.0.*.
 */
export function cachedDecoder(): Uint8Array {
  return branchAsDecoder('cached', true, [
    valueInfo('input_ids', DataType.INT64, ['batch', 'seq']),
    valueInfo('attention_mask', DataType.INT64, ['batch', 'total_seq']),
    PAST('key'),
    PAST('value'),
  ]);
}

/** One branch's nodes as a model of its own, its outputs renamed to logits and present.0.*. */
function branchAsDecoder(
  prefix: string,
  cached: boolean,
  inputs: Parameters<typeof makeModelBytes>[0]['inputs'],
): Uint8Array {
  const { nodes, logits, present } = decoderNodes(prefix, cached);
  nodes.push(
    makeNode('Identity', [logits], ['logits']),
    makeNode('Identity', [present[0]], ['present.0.key']),
    makeNode('Identity', [present[1]], ['present.0.value']),
  );
  return makeModelBytes({
    nodes,
    inputs,
    outputs: [LOGITS(), PRESENT('key'), PRESENT('value')],
    initializers: weights(),
  });
}
