/**
 * A GPT-style float32 model of a few GB written straight to disk as `model.onnx` + `model.onnx_data`
 * (external data, 4 KiB-aligned), tensor by tensor, for the large-model bench (tools/bench/large.ts).
 * Deterministic: the same spec gives the same bytes. Never holds more than one tensor.
 *
 * Shapes: B batch, S sequence, D model width, V vocabulary, L blocks. Each block (single-head
 * attention without a mask, which is enough for a model that only has to run):
 *   a = LayerNorm(x); q, k, v = Split(a · W_attn [D, 3D]); x += softmax(q kᵀ / √D) v · W_proj [D, D]
 *   b = LayerNorm(x); x += Relu(b · W_fc [D, 4D]) · W_out [4D, D]
 * then logits = LayerNorm(x) · W_head [D, V]; the input is Gather(wte [V, D], input_ids).
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { makeModelBytes, makeNode, valueInfo, int64Tensor, floatTensor } from '../../src/core/onnx/build.ts';
import { DATA_LOCATION_EXTERNAL, type NodeProto, type TensorProto } from '../../src/core/onnx/proto.ts';

export interface LargeSpec {
  layers: number;
  width: number;
  vocab: number;
  /** float32 (4 bytes a weight) or float16 (2). */
  dtype: 'float32' | 'float16';
}

export const LARGE_SPEC: LargeSpec = { layers: 11, width: 2048, vocab: 32000, dtype: 'float32' };

export function largeParams(s: LargeSpec): number {
  return s.layers * (12 * s.width * s.width + 4 * s.width) + 2 * s.vocab * s.width + 2 * s.width;
}

/** xorshift32 uniform values in ±scale, written as float32 or float16 bytes. */
function fillWeights(n: number, seed: number, scale: number, dtype: LargeSpec['dtype']): Uint8Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  // xorshift32: advances s
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
  };
  if (dtype === 'float32') {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      next();
      out[i] = (s / 4294967296 - 0.5) * 2 * scale;
    }
    return new Uint8Array(out.buffer);
  }
  // float16 of a uniform value: a random mantissa under an exponent that keeps |x| ≤ scale (≈ 2^-6)
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    next();
    const sign = (s & 1) << 15;
    const exponent = 9 + ((s >>> 1) % 4); // 2^-6 … 2^-3 below the bias of 15: |x| < 0.125
    out[i] = sign | (exponent << 10) | ((s >>> 8) & 0x3ff);
  }
  return new Uint8Array(out.buffer);
}

/** Writes the model into `dir`; returns the two paths and their total size. */
export function writeLargeModel(dir: string, spec: LargeSpec = LARGE_SPEC): { model: string; bytes: number } {
  const { layers: L, width: D, vocab: V } = spec;
  const dataType = spec.dtype === 'float32' ? DataType.FLOAT : DataType.FLOAT16;
  const elementBytes = spec.dtype === 'float32' ? 4 : 2;
  const dataPath = join(dir, 'model.onnx_data');
  const fd = openSync(dataPath, 'w');
  let offset = 0;
  let seed = 1;
  const initializers: TensorProto[] = [];
  const weight = (name: string, dims: number[], scale: number, constant?: number): string => {
    const n = dims.reduce((a, b) => a * b, 1);
    let bytes: Uint8Array;
    if (constant === undefined) bytes = fillWeights(n, seed++, scale, spec.dtype);
    else if (spec.dtype === 'float32') bytes = new Uint8Array(new Float32Array(n).fill(constant).buffer);
    else bytes = new Uint8Array(new Uint16Array(n).fill(constant === 1 ? 0x3c00 : 0).buffer);
    offset += (4096 - (offset % 4096)) % 4096;
    for (let at = 0; at < bytes.byteLength;)
      at += writeSync(fd, bytes, at, bytes.byteLength - at, offset + at);
    initializers.push({
      name,
      dims,
      data_type: dataType,
      data_location: DATA_LOCATION_EXTERNAL,
      external_data: [
        { key: 'location', value: 'model.onnx_data' },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(n * elementBytes) },
      ],
    });
    offset += bytes.byteLength;
    return name;
  };
  const nodes: NodeProto[] = [];
  let count = 0;
  const op = (type: string, inputs: string[], attrs: Record<string, unknown> = {}, outputs = 1): string[] => {
    const names = Array.from({ length: outputs }, (_, i) => `${type.toLowerCase()}_${count}_${i}`);
    count++;
    nodes.push(makeNode(type, inputs, names, attrs as Parameters<typeof makeNode>[3]));
    return names;
  };
  try {
    let x = op('Gather', [weight('wte', [V, D], 0.5), 'input_ids'])[0];
    const layerNorm = (input: string, name: string) =>
      op('LayerNormalization', [input, weight(`${name}.g`, [D], 0, 1), weight(`${name}.b`, [D], 0, 0)], {
        axis: -1,
      })[0];
    const w = 1 / Math.sqrt(D);
    for (let l = 0; l < L; l++) {
      const a = layerNorm(x, `h${l}.ln_1`);
      const qkv = op('MatMul', [a, weight(`h${l}.attn.c_attn`, [D, 3 * D], w)])[0];
      const [q, k, v] = op('Split', [qkv, 'split3'], { axis: -1 }, 3);
      const kt = op('Transpose', [k], { perm: [0, 2, 1] })[0];
      const scores = op('Mul', [op('MatMul', [q, kt])[0], 'attn_scale'])[0];
      const attended = op('MatMul', [op('Softmax', [scores], { axis: -1 })[0], v])[0];
      x = op('Add', [x, op('MatMul', [attended, weight(`h${l}.attn.c_proj`, [D, D], w)])[0]])[0];
      const b = layerNorm(x, `h${l}.ln_2`);
      const hidden = op('Relu', [op('MatMul', [b, weight(`h${l}.mlp.c_fc`, [D, 4 * D], w)])[0]])[0];
      x = op('Add', [x, op('MatMul', [hidden, weight(`h${l}.mlp.c_proj`, [4 * D, D], w / 2)])[0]])[0];
    }
    const logits = op('MatMul', [layerNorm(x, 'ln_f'), weight('lm_head', [D, V], w)])[0];
    nodes.push(makeNode('Identity', [logits], ['logits']));
  } finally {
    closeSync(fd);
  }
  const small: TensorProto[] = [
    int64Tensor('split3', [3], [D, D, D]),
    floatTensor('attn_scale', [], [1 / Math.sqrt(D)]),
  ];
  const inputIds = valueInfo('input_ids', DataType.INT64, ['batch', 'seq']);
  const modelBytes = makeModelBytes({
    nodes: spec.dtype === 'float32' ? nodes : castInputs(nodes, initializers),
    inputs: [inputIds],
    outputs: [valueInfo('logits', DataType.FLOAT, ['batch', 'seq', V])],
    initializers: [...initializers, ...small],
    name: 'large-gpt',
  });
  const model = join(dir, 'model.onnx');
  const mfd = openSync(model, 'w');
  try {
    writeSync(mfd, modelBytes);
  } finally {
    closeSync(mfd);
  }
  return { model, bytes: offset + modelBytes.byteLength };
}

/**
 * A float16 model computes in float32 here: each weight is read through a Cast, as exports with
 * float16 storage and float32 activations do (the studio compresses the stored float16 weight).
 */
function castInputs(nodes: NodeProto[], weights: TensorProto[]): NodeProto[] {
  const names = new Set(weights.map((t) => t.name));
  const casts: NodeProto[] = [];
  const renamed = nodes.map((n) => ({
    ...n,
    input: n.input.map((x) => {
      if (!names.has(x)) return x;
      casts.push(makeNode('Cast', [x], [`${x}.f32`], { to: DataType.FLOAT }));
      return `${x}.f32`;
    }),
  }));
  return [...casts, ...renamed];
}
