/**
 * Every differentiable op of the training engine against central finite differences on small random
 * inputs: L = Σ r·y for a fixed random r, so dL/dx from the op's backward (seeded with r) must equal
 * (L(x + h) − L(x − h)) / 2h per element, with broadcasting, batching and odd axes exercised.
 */
import { describe, expect, it } from 'vitest';
import { makeNode, type AttributeValue } from '../../src/core/onnx/build.ts';
import { OPS, erf, opFor, type NodeContext } from '../../src/core/train/ops.ts';
import { intValue, type Value } from '../../src/core/train/tensor.ts';
import { seededFloats } from '../helpers/models.ts';

function f32(shape: number[], seed: number, opts: { positive?: boolean; scale?: number } = {}): Value {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = seededFloats(n, seed, opts.scale ?? 1);
  if (opts.positive) for (let i = 0; i < n; i++) data[i] = 0.5 + Math.abs(data[i]);
  return { dtype: 'float32', shape, data };
}

interface Case {
  op: string;
  inputs: (Value | undefined)[];
  attrs?: Record<string, AttributeValue>;
  /** Inputs whose gradient is checked (default: every float input). */
  wrt?: number[];
  /** Outputs seeded with a random cotangent (default [0]). */
  seed?: number[];
  outputs?: number;
  opset?: number;
}

function run(c: Case, inputs: (Value | undefined)[]) {
  const node = makeNode(
    c.op,
    inputs.map((v, i) => (v ? `in${i}` : '')),
    Array.from({ length: c.outputs ?? 1 }, (_, i) => `out${i}`),
    c.attrs,
  );
  const ctx: NodeContext = {
    node,
    where: c.op,
    opset: c.opset ?? 17,
    readTensor: () => {
      throw new Error('no tensors');
    },
  };
  const op = opFor(node)!;
  return { op, ctx, y: op.forward(inputs, ctx) };
}

function gradCheck(c: Case): void {
  const { op, ctx, y } = run(c, c.inputs);
  const seeds = c.seed ?? [0];
  const r = y.map((v, k) => (seeds.includes(k) ? seededFloats(v.data.length, 100 + k) : undefined));
  const lossOf = (out: Value[]) => {
    let s = 0;
    out.forEach((v, k) => {
      const rk = r[k];
      if (rk) for (let i = 0; i < rk.length; i++) s += rk[i] * v.data[i];
    });
    return s;
  };
  const g = op.backward!(c.inputs, y, r, ctx);
  const wrt = c.wrt ?? c.inputs.flatMap((v, i) => (v?.dtype === 'float32' ? [i] : []));
  expect(wrt.length).toBeGreaterThan(0);
  for (const i of wrt) {
    const x = c.inputs[i]!;
    const gi = g[i];
    expect(gi, `${c.op}: gradient of input ${i}`).toBeDefined();
    expect(gi!.length).toBe(x.data.length);
    const h = 1e-2;
    let maxErr = 0;
    let maxRef = 0;
    const count = Math.min(x.data.length, 48);
    for (let j = 0; j < count; j++) {
      const at = Math.floor((j * x.data.length) / count);
      const plus = Float32Array.from(x.data as Float32Array);
      const minus = Float32Array.from(x.data as Float32Array);
      plus[at] += h;
      minus[at] -= h;
      const with_ = (d: Float32Array) => c.inputs.map((v, k) => (k === i ? { ...x, data: d } : v));
      const numeric = (lossOf(run(c, with_(plus)).y) - lossOf(run(c, with_(minus)).y)) / (2 * h);
      maxErr = Math.max(maxErr, Math.abs(numeric - gi![at]));
      maxRef = Math.max(maxRef, Math.abs(numeric));
    }
    expect(maxRef, `${c.op}: input ${i} has some gradient`).toBeGreaterThan(1e-3);
    expect(maxErr, `${c.op}: input ${i}`).toBeLessThan(5e-3 * Math.max(1, maxRef));
  }
}

describe('training engine: op gradients against finite differences', () => {
  const a = f32([2, 3, 4], 1);
  it.each(['Add', 'Sub', 'Mul', 'Div'])(
    '%s with broadcasting ([2,3,4] and [3,1], [4] and a scalar)',
    (op) => {
      const denominator = op === 'Div';
      gradCheck({ op, inputs: [a, f32([3, 1], 2, { positive: denominator })] });
      gradCheck({ op, inputs: [f32([4], 3), f32([2, 3, 4], 4, { positive: denominator })] });
      gradCheck({ op, inputs: [a, f32([], 5, { positive: denominator })] });
      gradCheck({ op, inputs: [f32([], 6), f32([2, 3, 4], 7, { positive: denominator })] });
      gradCheck({ op, inputs: [a, f32([2, 3, 4], 8, { positive: denominator })] });
      gradCheck({ op, inputs: [a, f32([1, 3, 4], 9, { positive: denominator })] });
    },
  );

  it('Pow (positive base, tensor and scalar exponents)', () => {
    gradCheck({ op: 'Pow', inputs: [f32([3, 4], 6, { positive: true }), f32([4], 7)] });
    gradCheck({
      op: 'Pow',
      inputs: [f32([3, 4], 8), { dtype: 'float32', shape: [], data: Float32Array.of(3) }],
      wrt: [0],
    });
  });

  it.each([
    ['Neg', false],
    ['Sqrt', true],
    ['Reciprocal', true],
    ['Exp', false],
    ['Log', true],
    ['Tanh', false],
    ['Sigmoid', false],
    ['Erf', false],
    ['Gelu', false],
    ['Relu', false],
    ['Abs', false],
    ['Cos', false],
    ['Sin', false],
  ] as const)('%s', (op, positive) => {
    gradCheck({ op, inputs: [f32([5, 7], 9, { positive })] });
  });

  it('Max and Min (broadcast), CumSum forward, exclusive and reverse', () => {
    // operands kept apart by more than the finite-difference step: no kink inside it
    const far: Value = { dtype: 'float32', shape: [4], data: Float32Array.of(-2, 2, -2, 2) };
    gradCheck({ op: 'Max', inputs: [f32([3, 4], 60), far] });
    const x = f32([3, 4], 62);
    const near: Value = { ...x, data: (x.data as Float32Array).map((v, i) => v + (i % 2 ? 0.5 : -0.5)) };
    gradCheck({ op: 'Min', inputs: [x, near] });
    gradCheck({ op: 'CumSum', inputs: [f32([3, 4], 64), intValue([], [1])], wrt: [0] });
    gradCheck({
      op: 'CumSum',
      inputs: [f32([3, 4], 65), intValue([], [0])],
      attrs: { exclusive: 1, reverse: 1 },
      wrt: [0],
    });
  });

  it('Gelu with the tanh approximation', () => {
    gradCheck({ op: 'Gelu', inputs: [f32([5, 7], 10)], attrs: { approximate: 'tanh' } });
  });

  it('erf matches known values to 1e-6', () => {
    for (const [x, v] of [
      [0, 0],
      [0.5, 0.5204998778],
      [1, 0.8427007929],
      [-2, -0.995322265],
      [3, 0.9999779095],
    ])
      expect(Math.abs(erf(x) - v)).toBeLessThan(1e-6);
  });

  it('MatMul: activations × weight, batched attention shapes, broadcast batch, vectors', () => {
    gradCheck({ op: 'MatMul', inputs: [f32([2, 3, 5], 11), f32([5, 4], 12)] });
    gradCheck({ op: 'MatMul', inputs: [f32([2, 3, 4, 5], 13), f32([2, 3, 5, 4], 14)] });
    gradCheck({ op: 'MatMul', inputs: [f32([2, 3, 4, 5], 15), f32([3, 5, 2], 16)] });
    gradCheck({ op: 'MatMul', inputs: [f32([5], 17), f32([5, 3], 18)] });
  });

  it('Gemm with transposes, alpha, beta and a broadcast bias', () => {
    gradCheck({
      op: 'Gemm',
      inputs: [f32([5, 3], 19), f32([4, 5], 20), f32([4], 21)],
      attrs: { transA: 1, transB: 1, alpha: { float: 0.7 }, beta: { float: 1.3 } },
    });
    gradCheck({ op: 'Gemm', inputs: [f32([3, 5], 22), f32([5, 4], 23), f32([3, 4], 24)] });
  });

  it('LayerNormalization over the last axis and over the last two', () => {
    gradCheck({
      op: 'LayerNormalization',
      inputs: [f32([2, 3, 8], 25), f32([8], 26), f32([8], 27)],
      attrs: { axis: -1, epsilon: { float: 1e-5 } },
      outputs: 3,
    });
    gradCheck({
      op: 'LayerNormalization',
      inputs: [f32([2, 3, 4], 28), f32([3, 4], 29)],
      attrs: { axis: 1 },
      outputs: 3,
    });
  });

  it.each(['Softmax', 'LogSoftmax'])('%s on the last axis and a middle one', (op) => {
    gradCheck({ op, inputs: [f32([2, 3, 5], 30, { scale: 2 })] });
    gradCheck({ op, inputs: [f32([2, 3, 5], 31, { scale: 2 })], attrs: { axis: 1 } });
  });

  it('ReduceMean (axes attribute) and ReduceSum (axes input), with and without keepdims', () => {
    gradCheck({ op: 'ReduceMean', inputs: [f32([2, 3, 4], 32)], attrs: { axes: [-1], keepdims: 1 } });
    gradCheck({ op: 'ReduceMean', inputs: [f32([2, 3, 4], 33)], attrs: { axes: [0, 2], keepdims: 0 } });
    gradCheck({ op: 'ReduceSum', inputs: [f32([2, 3, 4], 34), intValue([1], [1])], attrs: { keepdims: 0 } });
    gradCheck({ op: 'ReduceSum', inputs: [f32([2, 3, 4], 35)] });
  });

  it('Transpose, Expand, Reshape, Flatten, Unsqueeze, Squeeze, Identity, Cast', () => {
    gradCheck({ op: 'Transpose', inputs: [f32([2, 3, 4], 36)], attrs: { perm: [1, 2, 0] } });
    gradCheck({ op: 'Transpose', inputs: [f32([2, 3], 37)] });
    gradCheck({ op: 'Expand', inputs: [f32([3, 1], 38), intValue([3], [2, 3, 4])] });
    gradCheck({ op: 'Reshape', inputs: [f32([2, 3, 4], 39), intValue([3], [0, -1, 2])] });
    gradCheck({ op: 'Flatten', inputs: [f32([2, 3, 4], 40)], attrs: { axis: 2 } });
    gradCheck({ op: 'Unsqueeze', inputs: [f32([2, 3], 41), intValue([2], [0, -1])] });
    gradCheck({ op: 'Squeeze', inputs: [f32([2, 1, 3], 42), intValue([1], [1])] });
    gradCheck({ op: 'Identity', inputs: [f32([4], 43)] });
    gradCheck({ op: 'Cast', inputs: [f32([4], 44)], attrs: { to: 1 } });
  });

  it('Slice with negative starts, a step of 2 and a negative step', () => {
    const x = f32([4, 6], 45);
    gradCheck({ op: 'Slice', inputs: [x, intValue([1], [1]), intValue([1], [-1]), intValue([1], [1])] });
    gradCheck({
      op: 'Slice',
      inputs: [
        x,
        intValue([2], [0, 5]),
        intValue([2], [4, -100]),
        intValue([2], [0, 1]),
        intValue([2], [2, -2]),
      ],
    });
  });

  it('Concat and Split along a middle axis', () => {
    gradCheck({ op: 'Concat', inputs: [f32([2, 3, 2], 46), f32([2, 1, 2], 47)], attrs: { axis: 1 } });
    gradCheck({
      op: 'Split',
      inputs: [f32([2, 6, 2], 48), intValue([3], [1, 2, 3])],
      attrs: { axis: 1 },
      outputs: 3,
      seed: [0, 2],
    });
    gradCheck({
      op: 'Split',
      inputs: [f32([2, 6], 49)],
      attrs: { axis: -1, num_outputs: 3 },
      outputs: 3,
      opset: 18,
      seed: [1],
    });
  });

  it('Gather along axis 0 with a repeated index (embedding) and along axis 1 (GQA head map)', () => {
    gradCheck({ op: 'Gather', inputs: [f32([5, 3], 50), intValue([2, 3], [4, 0, 4, 1, -1, 2])], wrt: [0] });
    gradCheck({
      op: 'Gather',
      inputs: [f32([2, 3, 4], 51), intValue([4], [0, 0, 2, 1])],
      attrs: { axis: 1 },
      wrt: [0],
    });
  });

  it('Where (broadcast condition) and Trilu (the causal mask)', () => {
    const cond: Value = { dtype: 'bool', shape: [3, 1], data: Uint8Array.of(1, 0, 1) };
    gradCheck({ op: 'Where', inputs: [cond, f32([3, 4], 52), f32([4], 53)], wrt: [1, 2] });
    // GPT-2's causal mask [1, 1, L, L] over scores [B, H, L, L], the fill a scalar, either side
    const mask: Value = {
      dtype: 'bool',
      shape: [1, 1, 3, 4],
      data: Uint8Array.of(1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0),
    };
    const scores = f32([2, 2, 3, 4], 55);
    gradCheck({ op: 'Where', inputs: [mask, f32([], 56), scores], wrt: [1, 2] });
    gradCheck({ op: 'Where', inputs: [mask, scores, f32([], 57)], wrt: [1, 2] });
    gradCheck({ op: 'Where', inputs: [mask, scores, f32([2, 2, 3, 4], 58)], wrt: [1, 2] });
    gradCheck({ op: 'Where', inputs: [mask, f32([4], 59), scores], wrt: [1, 2] });
    // the padding mask [B, 1, L, L] over [B, H, L, L]: broadcast in the middle
    const padMask: Value = {
      dtype: 'bool',
      shape: [2, 1, 3, 4],
      data: Uint8Array.from({ length: 24 }, (_, i) => (i * 7) % 3 && 1),
    };
    gradCheck({ op: 'Where', inputs: [padMask, f32([], 60), scores], wrt: [1, 2] });
    gradCheck({ op: 'Where', inputs: [padMask, scores, f32([4], 61)], wrt: [1, 2] });
    const fill = f32([4], 59);
    const y = run({ op: 'Where', inputs: [] }, [mask, fill, scores]).y[0];
    expect(y.shape).toEqual([2, 2, 3, 4]);
    expect(Array.from(y.data)).toEqual(
      Array.from(scores.data, (v, i) => (mask.data[i % 12] ? fill.data[i % 4] : v)),
    );
    gradCheck({
      op: 'Trilu',
      inputs: [f32([2, 4, 4], 54), intValue([], [1])],
      attrs: { upper: 0 },
      wrt: [0],
    });
  });

  it('every op the table lists forwards without a gradient only when its outputs are not floats', () => {
    for (const name of ['Shape', 'ConstantOfShape', 'Range', 'Equal', 'Or', 'Not', 'Constant'])
      expect(OPS[name].backward, name).toBeUndefined();
  });
});
