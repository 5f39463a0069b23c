/**
 * AWQ-style activation-aware int4: the kernel against a direct reference written here (scales,
 * round-to-nearest int4 and the output error computed from X itself, not from XᵀX), and exports
 * that onnxruntime-node runs exactly as the preview says, whatever reads the weight.
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
  finishInputStats,
  type CalibrationStats,
  type InputStats,
} from '../../src/core/calibrate/stats.ts';
import { isModelError } from '../../src/core/errors.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { awqInt4, outputError, type AwqKernelOptions } from '../../src/methods/awq/kernel.ts';
import { getMethod, resolveOptions } from '../../src/methods/registry.ts';
import { int4Method } from '../../src/methods/int4/index.ts';
import { gptqInt4 } from '../../src/methods/gptq/kernel.ts';
import type { WeightMatrix } from '../../src/methods/types.ts';
import { mlpModel, seededFloats } from '../helpers/models.ts';
import { denseReference, maxAbs, maxAbsDiff, opTypes, runOutput } from '../helpers/compress.ts';

const K = 48;
const N = 12;
const ROWS = 200;

/** Activations whose features differ in scale by up to 50×, as a transformer's do (a few outliers). */
function activations(rows: number, k: number, seed: number): Float32Array {
  const z = seededFloats(rows * k, seed);
  const x = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < k; j++) x[r * k + j] = z[r * k + j] * (j % 7 === 3 ? 25 : 0.5 + (j % 4));
  return x;
}

function statsOf(x: Float32Array, rows: number, k: number, input = 'x'): InputStats {
  const stats = emptyInputStats(input, k, true);
  accumulateInputStats(stats, x, rows);
  finishInputStats(stats);
  return stats;
}

const OPTIONS: AwqKernelOptions = {
  blockSize: 16,
  symmetric: true,
  gridPoints: 11,
  quantizer: 'rtn',
  clip: false,
  dampening: 0.01,
  actOrder: true,
};

// ---- the reference: AWQ written out, one number at a time, in float64 ----

/** Round-to-nearest int4 of one block (the int4 method's grid), dequantized. */
function rtnBlock(v: number[], symmetric: boolean): number[] {
  const lo = Math.min(0, ...v);
  const hi = Math.max(0, ...v);
  if (symmetric) {
    const scale = (-lo > hi ? lo : hi) / -8;
    return v.map((x) =>
      scale === 0 ? 0 : (Math.min(15, Math.max(0, Math.round(x / scale) + 8)) - 8) * scale,
    );
  }
  const scale = (hi - lo) / 15;
  if (scale === 0) return v.map(() => 0);
  const z = Math.min(15, Math.max(0, Math.round(-lo / scale)));
  return v.map((x) => (Math.min(15, Math.max(0, Math.round(x / scale) + z)) - z) * scale);
}

/** W [k][n] input-major; X [rows][k]. Returns the chosen α and diag(1/s)·Q(diag(s)·W). */
function referenceAwq(
  w: number[][],
  x: number[][],
  blockSize: number,
  symmetric: boolean,
  grid: number,
): { alpha: number; values: number[][] } {
  const k = w.length;
  const n = w[0].length;
  const rms = Array.from({ length: k }, (_, j) =>
    Math.sqrt(x.reduce((s, row) => s + row[j] ** 2, 0) / x.length),
  );
  let best = { alpha: -1, error: Infinity, values: [] as number[][] };
  for (let g = 0; g < grid; g++) {
    const alpha = g / (grid - 1);
    const raw = rms.map((m) => (m > 0 ? Math.max(m ** alpha, 1e-4) : 0));
    const live = raw.filter((r) => r > 0);
    const norm = Math.sqrt(Math.max(...live) * Math.min(...live));
    const s = raw.map((r) => (r > 0 ? r / norm : 1));
    const values = w.map((row) => row.map(() => 0));
    for (let c = 0; c < n; c++)
      for (let b = 0; b < k; b += blockSize) {
        const block: number[] = [];
        for (let j = b; j < Math.min(k, b + blockSize); j++) block.push(w[j][c] * s[j]);
        rtnBlock(block, symmetric).forEach((q, i) => (values[b + i][c] = q / s[b + i]));
      }
    let error = 0;
    for (const row of x)
      for (let c = 0; c < n; c++) {
        let d = 0;
        for (let j = 0; j < k; j++) d += row[j] * (w[j][c] - values[j][c]);
        error += d * d;
      }
    if (error < best.error) best = { alpha, error, values };
  }
  return best;
}

function rowsOf(flat: Float32Array, rows: number, cols: number): number[][] {
  return Array.from({ length: rows }, (_, r) => Array.from(flat.subarray(r * cols, (r + 1) * cols)));
}

describe('awq kernel', () => {
  const x = activations(ROWS, K, 11);
  const stats = statsOf(x, ROWS, K);
  const wKN = seededFloats(K * N, 5, 0.4);

  for (const symmetric of [true, false])
    for (const channelAxis of [1, 0] as const)
      it(`equals the direct reference (${symmetric ? 'symmetric' : 'zero points'}, weight ${channelAxis === 1 ? '[K, N]' : '[N, K]'})`, () => {
        const ref = referenceAwq(rowsOf(wKN, K, N), rowsOf(x, ROWS, K), 16, symmetric, 11);
        // the same weight stored either way round
        const values =
          channelAxis === 1
            ? wKN
            : Float32Array.from({ length: K * N }, (_, i) => wKN[(i % K) * N + Math.floor(i / K)]);
        const w: WeightMatrix = {
          name: 'w',
          shape: channelAxis === 1 ? [K, N] : [N, K],
          values,
          channelAxis,
        };
        const [got] = awqInt4([w], stats, { ...OPTIONS, symmetric });
        expect(got.encoding.alpha).toBeCloseTo(ref.alpha, 12);
        // activation-aware: these activations have outliers, so some scaling wins over plain RTN
        expect(ref.alpha).toBeGreaterThan(0);
        let worst = 0;
        for (let j = 0; j < K; j++)
          for (let c = 0; c < N; c++) {
            const v = channelAxis === 1 ? got.values[j * N + c] : got.values[c * K + j];
            worst = Math.max(worst, Math.abs(v - ref.values[j][c]));
          }
        expect(worst).toBeLessThan(1e-5);
        // the encoding holds Q(diag(s)·W) and 1/s: decoding it gives the preview's values
        const q = got.encoding.int4;
        expect(q.blockSize).toBe(16);
        expect(got.encoding.inverseScale).toHaveLength(K);
        expect(q.zeroPoints === null).toBe(symmetric);
      });

  it('never does worse than round-to-nearest int4 on the output error, and clearly better here', () => {
    const w: WeightMatrix = { name: 'w', shape: [K, N], values: wKN, channelAxis: 1 };
    const rtn = int4Method.apply([w], { blockSize: 16, symmetric: true, format: 'matmulnbits' })[0].values;
    const [awq] = awqInt4([w], stats, OPTIONS);
    const eRtn = outputError(w, rtn, stats.xtx!);
    expect(outputError(w, awq.values, stats.xtx!)).toBeLessThan(0.9 * eRtn);
    // a one-point grid is α = 0: plain RTN, bit for bit
    const [plain] = awqInt4([w], stats, { ...OPTIONS, gridPoints: 1 });
    expect(plain.encoding.alpha).toBe(0);
    expect(Array.from(plain.values)).toEqual(Array.from(rtn));
    // GPTQ on the scaled weight (AWQ then GPTQ) lowers it further
    const [gptq] = awqInt4([w], stats, { ...OPTIONS, quantizer: 'gptq' });
    // and the α searched with GPTQ rounding never does worse than GPTQ alone (α = 0)
    const plainGptq = gptqInt4(w, stats, { blockSize: 16, symmetric: true, dampening: 0.01, actOrder: true });
    expect(outputError(w, gptq.values, stats.xtx!)).toBeLessThanOrEqual(
      outputError(w, plainGptq.values, stats.xtx!),
    );
    expect(outputError(w, gptq.values, stats.xtx!)).toBeLessThan(outputError(w, awq.values, stats.xtx!));
  });

  it('weights sharing an activation share one scale chosen on their summed error', () => {
    const a: WeightMatrix = { name: 'a', shape: [K, N], values: wKN, channelAxis: 1 };
    const b: WeightMatrix = { name: 'b', shape: [K, 8], values: seededFloats(K * 8, 9, 0.3), channelAxis: 1 };
    const [ga, gb] = awqInt4([a, b], stats, OPTIONS);
    expect(ga.encoding.inverseScale).toBe(gb.encoding.inverseScale);
    const sum = (r: typeof ga, s: typeof gb) =>
      outputError(a, r.values, stats.xtx!) + outputError(b, s.values, stats.xtx!);
    const [alone] = awqInt4([a], stats, OPTIONS);
    const [aloneB] = awqInt4([b], stats, OPTIONS);
    // each alone fits itself at least as well; together no worse than RTN for both
    expect(outputError(a, alone.values, stats.xtx!)).toBeLessThanOrEqual(
      outputError(a, ga.values, stats.xtx!),
    );
    const rtn = (w: WeightMatrix) =>
      int4Method.apply([w], { blockSize: 16, symmetric: true, format: 'matmulnbits' })[0].values;
    expect(sum(ga, gb)).toBeLessThanOrEqual(
      outputError(a, rtn(a), stats.xtx!) + outputError(b, rtn(b), stats.xtx!),
    );
    expect(sum(alone, aloneB)).toBeLessThanOrEqual(sum(ga, gb));
  });

  it('bad input is a typed error', () => {
    const w: WeightMatrix = {
      name: 'w',
      shape: [K + 1, N],
      values: new Float32Array((K + 1) * N),
      channelAxis: 1,
    };
    const fits: WeightMatrix = { ...w, shape: [K, N], values: new Float32Array(K * N) };
    const method = getMethod('awq');
    const calls: [string, () => unknown][] = [
      ['invalid-argument', () => awqInt4([w], stats, OPTIONS)],
      ['invalid-argument', () => awqInt4([fits], { ...stats, xtx: null }, OPTIONS)],
      ['invalid-argument', () => awqInt4([fits], stats, { ...OPTIONS, gridPoints: 0 })],
      ['needs-calibration', () => method.apply([fits], resolveOptions(method))],
    ];
    for (const [code, call] of calls) {
      let caught: unknown;
      try {
        call();
      } catch (e) {
        caught = e;
      }
      expect(isModelError(caught) && caught.code).toBe(code);
    }
  });
});

// ---- exports ----

const MLP_K = 16;
const MLP_HIDDEN = 32;

/** Statistics (with XᵀX) of `weights` in `bytes` on the input `x` [rows, MLP_K], from the capture graph. */
async function captureStats(
  bytes: Uint8Array,
  weights: string[],
  x: Float32Array,
  rows: number,
): Promise<CalibrationStats> {
  const model = parseModel(bytesSource('m.onnx', bytes));
  const plan = planCapture(model, weights);
  const session = await ort.InferenceSession.create(plan.bytes);
  const out = await session.run({ x: new ort.Tensor('float32', x, [rows, MLP_K]) });
  await session.release();
  const layers: CalibrationStats['layers'] = {};
  const byInput = new Map<string, InputStats>();
  for (const t of plan.targets) {
    // weights reading one activation share its statistics, as capture gives them
    let stats = byInput.get(t.input);
    if (!stats) {
      stats = statsOf(out[t.output].data as Float32Array, rows, t.k, t.input);
      byInput.set(t.input, stats);
    }
    layers[t.weight] = stats;
  }
  return { version: 1, sequences: 1, tokens: rows, layers };
}

async function exportMatchesPreview(
  bytes: Uint8Array,
  weights: string[],
  options: Record<string, unknown>,
  outputs: string[],
): Promise<{ ops: string[] }> {
  const x = activations(64, MLP_K, 3);
  const calibration = await captureStats(bytes, weights, x, 64);
  const model = parseModel(bytesSource('m.onnx', bytes));
  const result = compressModel(
    model,
    resolveRecipe({ steps: [{ method: 'awq', options, select: { embeddings: true, lmHead: true } }] }),
    {
      calibration,
    },
  );
  expect(result.reports.map((r) => r.method)).toEqual(weights.map(() => 'awq'));
  const exported = exportCompressed(model, result).model;
  const reference = denseReference({ model, result, exported });
  const probe = { x: new ort.Tensor('float32', activations(5, MLP_K, 77), [5, MLP_K]) };
  for (const out of outputs) {
    const got = await runOutput(exported, probe, out);
    const want = await runOutput(reference, probe, out);
    const original = await runOutput(bytes, probe, out);
    expect(maxAbsDiff(got, want), out).toBeLessThan(1e-4 * maxAbs(want));
    // the first output is computed with compressed weights, not passed through
    if (out === outputs[0]) expect(maxAbsDiff(got, original), out).toBeGreaterThan(1e-3 * maxAbs(original));
  }
  return { ops: opTypes(exported) };
}

describe('awq export runs in onnxruntime-node as the preview computes', () => {
  for (const format of ['matmulnbits', 'dequantize'] as const)
    for (const symmetric of [true, false])
      it(`MLP, ${format}, ${symmetric ? 'symmetric' : 'zero points'}: a Mul by 1/s in front of each MatMul`, async () => {
        const { ops } = await exportMatchesPreview(
          mlpModel(MLP_K, MLP_HIDDEN, 8),
          ['w1', 'w2'],
          { blockSize: 16, symmetric, format },
          ['y'],
        );
        expect(ops.filter((o) => o === 'Mul')).toHaveLength(2);
        if (format === 'matmulnbits') {
          expect(ops.filter((o) => o === 'MatMulNBits')).toHaveLength(2);
          expect(ops).not.toContain('MatMul');
        } else expect(ops.filter((o) => o === 'DequantizeLinear')).toHaveLength(2);
      });

  it('a tied table (Gather + Transpose → MatMul) is rebuilt as DequantizeLinear · 1/s; an [N, K] weight shares the scale', async () => {
    // table [20, K]: gathered by ids and, transposed, multiplied with x (a tied embedding / LM head);
    // u [12, K], transposed for a MatMul on the same x: one scale for both (scaleGroup 'input')
    const bytes = makeModelBytes({
      nodes: [
        makeNode('Transpose', ['table'], ['tableT'], { perm: [1, 0] }),
        makeNode('MatMul', ['x', 'tableT'], ['y']),
        makeNode('Transpose', ['u'], ['uT'], { perm: [1, 0] }),
        makeNode('MatMul', ['x', 'uT'], ['yu']),
        makeNode('Gather', ['table', 'ids'], ['rows'], { axis: 0 }),
      ],
      inputs: [valueInfo('x', DataType.FLOAT, ['batch', MLP_K])],
      outputs: [
        valueInfo('y', DataType.FLOAT, ['batch', 20]),
        valueInfo('yu', DataType.FLOAT, ['batch', 12]),
        valueInfo('rows', DataType.FLOAT, [3, MLP_K]),
      ],
      initializers: [
        floatTensor('table', [20, MLP_K], seededFloats(20 * MLP_K, 4, 0.5)),
        floatTensor('u', [12, MLP_K], seededFloats(12 * MLP_K, 6, 0.5)),
        {
          name: 'ids',
          dims: [3],
          data_type: DataType.INT64,
          raw_data: new Uint8Array(BigInt64Array.of(0n, 5n, 19n).buffer),
        },
      ],
    });
    const { ops } = await exportMatchesPreview(
      bytes,
      ['table', 'u'],
      { blockSize: 16, scaleGroup: 'input' },
      ['y', 'yu', 'rows'],
    );
    // table: DequantizeLinear then Mul by 1/s, read by Gather and Transpose alike; u: Mul on x
    expect(ops.filter((o) => o === 'Mul')).toHaveLength(2);
    expect(ops.filter((o) => o === 'DequantizeLinear')).toHaveLength(2);
    expect(ops).toContain('Gather');
  });

  for (const [scaleGroup, exposed, muls] of [
    ['input', false, 0],
    ['weight', false, 2],
    ['input', true, 2],
  ] as const)
    it(`LayerNormalization before two MatMuls, scale per ${scaleGroup}${exposed ? ', its output also a graph output' : ''}: ${muls ? 'a Mul each' : '1/s folded into its scale and bias'}`, async () => {
      const bytes = makeModelBytes({
        nodes: [
          makeNode('LayerNormalization', ['x', 'gamma', 'beta'], ['h'], { axis: -1 }),
          makeNode('MatMul', ['h', 'wa'], ['ya']),
          makeNode('MatMul', ['h', 'wb'], ['yb']),
          makeNode('Add', ['ya', 'yb'], ['y']),
        ],
        inputs: [valueInfo('x', DataType.FLOAT, ['batch', MLP_K])],
        outputs: [
          valueInfo('y', DataType.FLOAT, ['batch', 8]),
          ...(exposed ? [valueInfo('h', DataType.FLOAT, ['batch', MLP_K])] : []),
        ],
        initializers: [
          floatTensor(
            'gamma',
            [MLP_K],
            Float32Array.from(seededFloats(MLP_K, 8), (v) => 1 + v),
          ),
          floatTensor('beta', [MLP_K], seededFloats(MLP_K, 9, 0.2)),
          floatTensor('wa', [MLP_K, 8], seededFloats(MLP_K * 8, 10, 0.5)),
          floatTensor('wb', [MLP_K, 8], seededFloats(MLP_K * 8, 11, 0.5)),
        ],
      });
      const { ops } = await exportMatchesPreview(
        bytes,
        ['wa', 'wb'],
        { blockSize: 16, scaleGroup },
        exposed ? ['y', 'h'] : ['y'],
      );
      expect(ops.filter((o) => o === 'Mul')).toHaveLength(muls);
      expect(ops.filter((o) => o === 'MatMulNBits')).toHaveLength(2);
    });
});
