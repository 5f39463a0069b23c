/** Tiny decoder graphs with each signature the evaluator must handle, every extra input wired into the logits. */
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, int64Tensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import type { NodeProto, TensorProto, ValueInfoProto } from '../../src/core/onnx/proto.ts';
import { seededFloats } from './models.ts';

export interface DecoderSignature {
  attentionMask?: boolean;
  positionIds?: boolean;
  past?: boolean;
  useCacheBranch?: boolean;
}

export const VOCAB = 24;
const D = 8;
const HEADS = 2;

export function tinyDecoder(sig: DecoderSignature): Uint8Array {
  const nodes: NodeProto[] = [makeNode('Gather', ['E', 'input_ids'], ['h0'])];
  const inits: TensorProto[] = [
    floatTensor('E', [VOCAB, D], seededFloats(VOCAB * D, 11, 1)),
    floatTensor('W', [D, VOCAB], seededFloats(D * VOCAB, 12, 1)),
  ];
  const inputs: ValueInfoProto[] = [valueInfo('input_ids', DataType.INT64, ['batch', 'seq'])];
  const outputs: ValueInfoProto[] = [valueInfo('logits', DataType.FLOAT, ['batch', 'seq', VOCAB])];
  let h = 'h0';
  const step = (op: string, ins: string[], attrs = {}) => {
    const out = `${op.toLowerCase()}_${nodes.length}`;
    nodes.push(makeNode(op, ins, [out], attrs));
    return out;
  };
  // a running mean of the previous token's embedding makes each position depend on its context
  h = step('Add', [h, step('CumSum', [h, 'axis1'])]);
  inits.push(int64Tensor('axis1', [], [1]));
  if (sig.positionIds) {
    inputs.push(valueInfo('position_ids', DataType.INT64, ['batch', 'seq']));
    inits.push(floatTensor('P', [512, D], seededFloats(512 * D, 13, 0.5)));
    h = step('Add', [h, step('Gather', ['P', 'position_ids'])]);
  }
  if (sig.attentionMask) {
    inputs.push(valueInfo('attention_mask', DataType.INT64, ['batch', 'total_seq']));
    inits.push(int64Tensor('axes2', [1], [2]));
    const mask = step('Unsqueeze', [step('Cast', ['attention_mask'], { to: DataType.FLOAT }), 'axes2']);
    h = step('Mul', [h, mask]);
  }
  if (sig.past) {
    // 0 keeps the batch dimension: the graph computes each sequence of a batch on its own
    inits.push(int64Tensor('heads_shape', [4], [0, -1, HEADS, D / HEADS]));
    const k = step('Transpose', [step('Reshape', [h, 'heads_shape'])], { perm: [0, 2, 1, 3] });
    for (const kind of ['key', 'value']) {
      inputs.push(
        valueInfo(`past_key_values.0.${kind}`, DataType.FLOAT, ['batch', HEADS, 'past_seq', D / HEADS]),
      );
      outputs.push(valueInfo(`present.0.${kind}`, DataType.FLOAT, ['batch', HEADS, 'total_seq', D / HEADS]));
      nodes.push(makeNode('Concat', [`past_key_values.0.${kind}`, k], [`present.0.${kind}`], { axis: 2 }));
    }
    // a non-empty past would shift every logit row differently (the mean is per sequence: [batch, 1, 1])
    inits.push(int64Tensor('per_sequence', [3], [0, 1, 1]));
    const mean = step('ReduceMean', ['present.0.key'], { axes: [1, 2, 3], keepdims: 1 });
    h = step('Add', [h, step('Reshape', [mean, 'per_sequence'])]);
  }
  if (sig.useCacheBranch) {
    inputs.push(valueInfo('use_cache_branch', DataType.BOOL, [1]));
    inits.push(floatTensor('one', [1], [1]));
    h = step('Mul', [h, step('Add', ['one', step('Cast', ['use_cache_branch'], { to: DataType.FLOAT })])]);
  }
  nodes.push(makeNode('MatMul', [h, 'W'], ['logits']));
  return makeModelBytes({ nodes, inputs, outputs, initializers: inits });
}
