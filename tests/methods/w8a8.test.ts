/**
 * W8A8 (static activation int8): calibrated activation ranges, int8 weights, and an export whose
 * QuantizeLinear → DequantizeLinear pairs onnxruntime-node runs exactly as a direct simulation says.
 */
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { planCapture } from '../../src/core/calibrate/capture.ts';
import {
  accumulateInputStats,
  emptyInputStats,
  HISTOGRAM_SHIFT,
  type CalibrationStats,
} from '../../src/core/calibrate/stats.ts';
import { isModelError } from '../../src/core/errors.ts';
import {
  activationInterval,
  activationQuantization,
  fakeQuantizeActivation,
  roundHalfToEven,
} from '../../src/methods/w8a8/kernel.ts';
import type { W8a8Encoding } from '../../src/methods/w8a8/index.ts';
import { mlpModel, seededFloats } from '../helpers/models.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { maxAbs, maxAbsDiff, opTypes, runOutput } from '../helpers/compress.ts';

const K = 16;
const HIDDEN = 32;
const N = 8;
const ROWS = 64;

/** Statistics of the MLP's two MatMul inputs on `x`, captured by running the capture graph. */
async function mlpCalibration(bytes: Uint8Array, x: Float32Array): Promise<CalibrationStats> {
  const model = parseModel(bytesSource('mlp.onnx', bytes));
  const plan = planCapture(model, ['w1', 'w2'], { hessian: false });
  const session = await ort.InferenceSession.create(plan.bytes);
  const out = await session.run({ x: new ort.Tensor('float32', x, [ROWS, K]) });
  await session.release();
  const layers: CalibrationStats['layers'] = {};
  for (const t of plan.targets) {
    const stats = emptyInputStats(t.input, t.k, false);
    accumulateInputStats(stats, out[t.output].data as Float32Array, ROWS);
    layers[t.weight] = stats;
  }
  return { version: 1, sequences: 1, tokens: ROWS, layers };
}

function matmul(x: Float32Array, w: Float32Array, rows: number, k: number, n: number): Float32Array {
  const y = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = 0; i < k; i++) s += x[r * k + i] * w[i * n + j];
      y[r * n + j] = s;
    }
  return y;
}

describe('w8a8 kernel', () => {
  it('covers the calibrated range with 0 exact, and rounds halves to even as QuantizeLinear does', () => {
    const a = activationQuantization(-1, 3, false);
    expect(a.scale).toBeCloseTo(4 / 255, 7);
    expect(a.zeroPoint).toBe(64); // round(1 / (4/255)) = round(63.75)
    const fq = fakeQuantizeActivation(Float32Array.of(0, -1, 3, 10, -10), a);
    expect(fq[0]).toBe(0);
    expect(fq[3]).toBeCloseTo(3, 1); // saturates at the top code
    expect(fq[4]).toBeCloseTo(-64 * a.scale, 6); // and at code 0
    const s = activationQuantization(-2, 1, true);
    expect(s).toEqual({ scale: Math.fround(2 / 127), zeroPoint: 0, symmetric: true });
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4].map(roundHalfToEven)).toEqual([0, 2, 2, -0, -2, -2, 2]);
    // an all-zero activation still gets a usable scale (QuantizeLinear divides by it)
    expect(activationQuantization(0, 0, false).scale).toBe(1);
    try {
      activationQuantization(Infinity, -Infinity, false);
      expect.unreachable();
    } catch (e) {
      expect(isModelError(e) && e.code).toBe('invalid-argument');
    }
  });
});

describe('w8a8 on a two-layer MLP built in code', () => {
  for (const activation of ['asymmetric', 'symmetric'] as const)
    it(`exports QDQ that onnxruntime runs as the JS simulation computes (${activation} activations)`, async () => {
      const bytes = mlpModel(K, HIDDEN, N);
      const calibration = await mlpCalibration(bytes, seededFloats(ROWS * K, 11, 1));
      const model = parseModel(bytesSource('mlp.onnx', bytes));
      const steps = resolveRecipe({
        steps: [{ method: 'w8a8', options: { activation }, select: { lmHead: true } }],
      });
      const result = compressModel(model, steps, { calibration });
      expect(result.outcomes.map((o) => o.candidate.name).sort()).toEqual(['w1', 'w2']);
      // stored as int8 weights are (the activations' scale and zero point are per MatMul, not per weight)
      const int8 = compressModel(
        model,
        resolveRecipe({ steps: [{ method: 'int8', select: { lmHead: true } }] }),
      );
      expect(result.reports.map((r) => r.bitsPerWeight)).toEqual(int8.reports.map((r) => r.bitsPerWeight));
      const exported = exportCompressed(model, result).model;
      const ops = opTypes(exported);
      expect(ops.filter((o) => o === 'QuantizeLinear')).toHaveLength(2);
      expect(ops.filter((o) => o === 'DequantizeLinear')).toHaveLength(4);

      // held-out inputs, a third wider than the calibration data so the codes saturate too
      const x = seededFloats(ROWS * K, 12, 1.3);
      const feeds = { x: new ort.Tensor('float32', x, [ROWS, K]) };
      // QuantizeLinear / DequantizeLinear as written, computed in float
      const got = await runOutput(exported, feeds, 'y', { graphOptimizationLevel: 'disabled' });
      // as the studio runs it: onnxruntime fuses the QDQ pairs into integer MatMul kernels
      const fused = await runOutput(exported, feeds, 'y');

      const outcome = (name: string) => result.outcomes.find((o) => o.candidate.name === name)!;
      const enc = (name: string) => (outcome(name).encoder!.encoding as W8a8Encoding).activation;
      const b1 = model.graph.initializer.find((t) => t.name === 'b1')!;
      const bias = new Float32Array(b1.raw_data!.slice().buffer);
      const h = matmul(fakeQuantizeActivation(x, enc('w1')), outcome('w1').values, ROWS, K, HIDDEN);
      for (let i = 0; i < h.length; i++) h[i] = Math.tanh(h[i] + bias[i % HIDDEN]);
      const want = matmul(fakeQuantizeActivation(h, enc('w2')), outcome('w2').values, ROWS, HIDDEN, N);
      expect(maxAbsDiff(got, want)).toBeLessThanOrEqual(1e-4 * (1 + maxAbs(want)));
      // int8 × int8 is exact in int32; uint8 × int8 may saturate int16 pair sums on x86 CPUs
      // without VNNI (onnxruntime's documented caveat), so only the default is pinned
      if (activation === 'symmetric')
        expect(maxAbsDiff(fused, want)).toBeLessThanOrEqual(1e-4 * (1 + maxAbs(want)));

      // and the activation quantization is really there: the weight-only output differs
      const weightOnly = matmul(h, outcome('w2').values, ROWS, HIDDEN, N);
      expect(maxAbsDiff(got, weightOnly)).toBeGreaterThan(1e-3);
    });

  it('is a needs-calibration error without statistics', () => {
    const model = parseModel(bytesSource('mlp.onnx', mlpModel(K, HIDDEN, N)));
    try {
      compressModel(model, resolveRecipe({ steps: [{ method: 'w8a8' }] }));
      expect.unreachable();
    } catch (e) {
      expect(isModelError(e) && e.code).toBe('needs-calibration');
    }
  });
});

describe('w8a8 activation ranges from the value histogram', () => {
  // 20 000 values spread over [-1, 1] and one outlier at 50 (rarer than 0.01 %): min–max spends
  // almost every code on the outlier
  const x = new Float32Array(20_001);
  for (let i = 0; i < 20_000; i++) x[i] = -1 + (2 * i) / 19_999;
  x[20_000] = 50;
  const stats = emptyInputStats('x', 1, false);
  accumulateInputStats(stats, x, x.length);

  it('min–max keeps the whole range; percentile and MSE clip the outlier', () => {
    expect(activationInterval(stats, 'minmax', true, HISTOGRAM_SHIFT)).toEqual([-1, 50]);
    const [plo, phi] = activationInterval(stats, 'percentile', true, HISTOGRAM_SHIFT);
    expect(plo).toBeCloseTo(-1, 1);
    expect(phi).toBeGreaterThan(0.9);
    expect(phi).toBeLessThan(1.1);
    const [, mhi] = activationInterval(stats, 'mse', true, HISTOGRAM_SHIFT);
    expect(mhi).toBeLessThan(50);
    // and the clipped range's codes give a smaller error on these values than min–max's
    const err = (range: 'minmax' | 'mse') => {
      const q = activationQuantization(...activationInterval(stats, range, true, HISTOGRAM_SHIFT), true);
      const fq = fakeQuantizeActivation(x, q);
      return fq.reduce((s, v, i) => s + (v - x[i]) ** 2, 0);
    };
    expect(err('mse')).toBeLessThan(err('minmax'));
  });

  it('a percentile range without a histogram is a typed error', () => {
    try {
      activationInterval({ min: -1, max: 1 }, 'percentile', true, HISTOGRAM_SHIFT);
      expect.unreachable();
    } catch (e) {
      expect(isModelError(e) && e.code).toBe('invalid-argument');
    }
  });
});

describe('w8a8 on a Gemm with transB', () => {
  it('quantizes the weight per output row and the Gemm input as calibrated', async () => {
    // y = x · Wᵀ + b, W stored [N, K]: output channels on axis 0
    const bytes = makeModelBytes({
      nodes: [makeNode('Gemm', ['x', 'w', 'b'], ['y'], { transB: 1 })],
      inputs: [valueInfo('x', DataType.FLOAT, ['batch', K])],
      outputs: [valueInfo('y', DataType.FLOAT, ['batch', N])],
      initializers: [
        floatTensor('w', [N, K], seededFloats(N * K, 21, 0.5)),
        floatTensor('b', [N], seededFloats(N, 22, 0.1)),
      ],
    });
    const model = parseModel(bytesSource('gemm.onnx', bytes));
    const plan = planCapture(model, ['w'], { hessian: false });
    const capture = await ort.InferenceSession.create(plan.bytes);
    const calibX = seededFloats(ROWS * K, 23, 1);
    const captured = await capture.run({ x: new ort.Tensor('float32', calibX, [ROWS, K]) });
    await capture.release();
    const stats = emptyInputStats('x', K, false);
    accumulateInputStats(stats, captured[plan.targets[0].output].data as Float32Array, ROWS);
    const calibration: CalibrationStats = { version: 1, sequences: 1, tokens: ROWS, layers: { w: stats } };
    const steps = resolveRecipe({ steps: [{ method: 'w8a8', select: { lmHead: true } }] });
    const result = compressModel(model, steps, { calibration });
    const [o] = result.outcomes;
    expect(o.candidate.channelAxis).toBe(0);
    const exported = exportCompressed(model, result).model;
    expect(opTypes(exported)).toEqual(['DequantizeLinear', 'QuantizeLinear', 'DequantizeLinear', 'Gemm']);

    const x = seededFloats(ROWS * K, 24, 1.3);
    const got = await runOutput(exported, { x: new ort.Tensor('float32', x, [ROWS, K]) }, 'y', {
      graphOptimizationLevel: 'disabled',
    });
    const fq = fakeQuantizeActivation(x, (o.encoder!.encoding as W8a8Encoding).activation);
    const bias = seededFloats(N, 22, 0.1);
    const want = new Float32Array(ROWS * N);
    for (let r = 0; r < ROWS; r++)
      for (let n = 0; n < N; n++) {
        let s = bias[n];
        for (let i = 0; i < K; i++) s += fq[r * K + i] * o.values[n * K + i];
        want[r * N + n] = s;
      }
    expect(maxAbsDiff(got, want)).toBeLessThanOrEqual(1e-4 * (1 + maxAbs(want)));
  });
});
