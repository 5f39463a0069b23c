/**
 * A two-block Llama-style decoder laid out as Hugging Face's torch.onnx exports lay it out: head
 * shapes built by Concat from Shape pieces and constants, grouped-query KV heads repeated by
 * repeat_kv (Unsqueeze → Expand → Reshape), SwiGLU MLPs, RMSNorm, a causal mask. Random weights.
 */
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, int64Tensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import type { NodeProto, TensorProto } from '../../src/core/onnx/proto.ts';
import { seededFloats } from './models.ts';

export const HF_LLAMA = { vocab: 40, dim: 32, heads: 4, kvHeads: 2, headDim: 8, hidden: 48, blocks: 2 };

export function hfLlamaModel(): Uint8Array {
  const { vocab, dim, heads, kvHeads, headDim, hidden, blocks } = HF_LLAMA;
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  let seed = 100;
  const weight = (name: string, dims: number[], scale: number) => {
    inits.push(floatTensor(name, dims, seededFloats(dims[0] * (dims[1] ?? 1), seed++, scale)));
    return name;
  };
  const int = (name: string, values: number[], scalar = false) => {
    inits.push(int64Tensor(name, scalar ? [] : [values.length], values));
    return name;
  };
  let n = 0;
  const op = (type: string, inputs: string[], attrs = {}) => {
    const out = `/${type}_${n++}`;
    nodes.push(makeNode(type, inputs, [out], attrs, { name: out }));
    return out;
  };
  int('zero', [0], true);
  int('one', [1], true);
  int('ax0', [0]);
  int('ax2', [2]);
  weight('embed', [vocab, dim], 1);
  let x = op('Gather', ['embed', 'input_ids']);
  // batch and sequence length as 1-element pieces, the way exports take x.shape[0], x.shape[1]
  const shape = op('Shape', [x]);
  const batch = op('Unsqueeze', [op('Gather', [shape, 'zero'], { axis: 0 }), 'ax0']);
  const seq = op('Unsqueeze', [op('Gather', [shape, 'one'], { axis: 0 }), 'ax0']);
  inits.push(
    floatTensor(
      'mask_tab',
      [64, 64],
      Float32Array.from({ length: 64 * 64 }, (_, i) => (i % 64 > Math.floor(i / 64) ? -1e9 : 0)),
    ),
  );
  const mask = op('Slice', [
    'mask_tab',
    int('m0', [0, 0]),
    op('Concat', [seq, seq], { axis: 0 }),
    int('m01', [0, 1]),
  ]);
  inits.push(floatTensor('eps', [1], [1e-5]));
  const rms = (h: string, w: string) =>
    op('Mul', [
      op('Div', [
        h,
        op('Sqrt', [op('Add', [op('ReduceMean', [op('Mul', [h, h])], { axes: [-1], keepdims: 1 }), 'eps'])]),
      ]),
      w,
    ]);
  inits.push(floatTensor('scale', [1], [1 / Math.sqrt(headDim)]));
  for (let b = 0; b < blocks; b++) {
    const p = `model.layers.${b}`;
    const h = rms(x, weight(`${p}.input_layernorm.weight`, [dim], 1));
    const split = (proj: string, count: number) => {
      const shapeOf = op(
        'Concat',
        [batch, seq, int(`${p}.${proj}.heads`, [count]), int(`${p}.${proj}.hd`, [headDim])],
        { axis: 0 },
      );
      return op(
        'Transpose',
        [
          op('Reshape', [
            op('MatMul', [h, weight(`${p}.self_attn.${proj}.weight`, [dim, count * headDim], 0.3)]),
            shapeOf,
          ]),
        ],
        { perm: [0, 2, 1, 3] },
      );
    };
    const repeat = (t: string, proj: string) => {
      const expandShape = op(
        'Concat',
        [
          batch,
          int(`${p}.${proj}.kvh`, [kvHeads]),
          int(`${p}.${proj}.rep`, [heads / kvHeads]),
          seq,
          int(`${p}.${proj}.hd2`, [headDim]),
        ],
        { axis: 0 },
      );
      const expanded = op('Expand', [op('Unsqueeze', [t, 'ax2']), expandShape]);
      const merged = op(
        'Concat',
        [batch, int(`${p}.${proj}.h`, [heads]), seq, int(`${p}.${proj}.hd3`, [headDim])],
        { axis: 0 },
      );
      return op('Reshape', [expanded, merged]);
    };
    const q = split('q_proj', heads);
    const k = repeat(split('k_proj', kvHeads), 'k');
    const v = repeat(split('v_proj', kvHeads), 'v');
    const scores = op('Add', [
      op('Mul', [op('MatMul', [q, op('Transpose', [k], { perm: [0, 1, 3, 2] })]), 'scale']),
      mask,
    ]);
    const ctx = op('Transpose', [op('MatMul', [op('Softmax', [scores], { axis: -1 }), v])], {
      perm: [0, 2, 1, 3],
    });
    const merged = op('Reshape', [
      ctx,
      op('Concat', [batch, seq, int(`${p}.width`, [heads * headDim])], { axis: 0 }),
    ]);
    x = op('Add', [
      x,
      op('MatMul', [merged, weight(`${p}.self_attn.o_proj.weight`, [heads * headDim, dim], 0.3)]),
    ]);
    const m = rms(x, weight(`${p}.post_attention_layernorm.weight`, [dim], 1));
    const gate = op('MatMul', [m, weight(`${p}.mlp.gate_proj.weight`, [dim, hidden], 0.3)]);
    const up = op('MatMul', [m, weight(`${p}.mlp.up_proj.weight`, [dim, hidden], 0.3)]);
    const act = op('Mul', [op('Mul', [gate, op('Sigmoid', [gate])]), up]);
    x = op('Add', [x, op('MatMul', [act, weight(`${p}.mlp.down_proj.weight`, [hidden, dim], 0.3)])]);
  }
  nodes.push(
    makeNode(
      'MatMul',
      [rms(x, weight('model.norm.weight', [dim], 1)), weight('lm_head.weight', [dim, vocab], 0.5)],
      ['logits'],
    ),
  );
  return makeModelBytes({
    nodes,
    inputs: [valueInfo('input_ids', DataType.INT64, ['batch', 'sequence_length'])],
    outputs: [valueInfo('logits', DataType.FLOAT, ['batch', 'sequence_length', vocab])],
    initializers: inits,
  });
}
