/**
 * GPTQ, SparseGPT and Wanda against direct reference implementations written here: one input at a
 * time, the inverse Hessian from a full Gauss–Jordan inverse and downdated explicitly after each
 * input (no Cholesky factor, no lazy blocks), scales fitted straight from the int4/int8 formulas.
 */
import { describe, expect, it } from 'vitest';
import {
  accumulateInputStats,
  emptyInputStats,
  finishInputStats,
  type InputStats,
} from '../../src/core/calibrate/stats.ts';
import { layerHessian, upperCholeskyOfInverse } from '../../src/core/calibrate/linalg.ts';
import { gptqInt4, gptqInt8 } from '../../src/methods/gptq/kernel.ts';
import { sparsegptPrune } from '../../src/methods/sparsegpt/kernel.ts';
import { wandaPrune } from '../../src/methods/wanda/kernel.ts';
import { int4Method } from '../../src/methods/int4/index.ts';
import { int8Method } from '../../src/methods/int8/index.ts';
import type { WeightMatrix } from '../../src/methods/types.ts';
import type { Int4Quantized } from '../../src/methods/int4/kernel.ts';
import type { Int8Quantized } from '../../src/methods/int8/kernel.ts';
import { isModelError } from '../../src/core/errors.ts';
import { seededFloats } from '../helpers/models.ts';

const K = 32;
const N = 16;
const ROWS = 256;

/** Correlated activations X [rows, k]: seeded noise mixed by a random matrix, features of unequal scale. */
function activations(rows: number, k: number, seed: number): Float32Array {
  const z = seededFloats(rows * k, seed);
  const mix = seededFloats(k * k, seed + 1, 0.5);
  const x = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < k; j++) {
      let s = z[r * k + j] * (1 + (j % 5));
      for (let m = 0; m < k; m++) s += z[r * k + m] * mix[m * k + j];
      x[r * k + j] = s;
    }
  return x;
}

function statsOf(x: Float32Array, rows: number, k: number): InputStats {
  const stats = emptyInputStats('x', k, true);
  // in two batches, as capture streams them
  const half = rows >> 1;
  accumulateInputStats(stats, x.subarray(0, half * k), half);
  accumulateInputStats(stats, x.subarray(half * k), rows - half);
  finishInputStats(stats);
  return stats;
}

function matrix(values: Float32Array, shape: [number, number], channelAxis: 0 | 1 = 1): WeightMatrix {
  return { name: 'w', shape, values, channelAxis };
}

/** Gauss–Jordan inverse with partial pivoting. */
function inverse(a: Float64Array, k: number): Float64Array {
  const m = Float64Array.from(a);
  const inv = new Float64Array(k * k);
  for (let i = 0; i < k; i++) inv[i * k + i] = 1;
  for (let col = 0; col < k; col++) {
    let p = col;
    for (let r = col + 1; r < k; r++) if (Math.abs(m[r * k + col]) > Math.abs(m[p * k + col])) p = r;
    for (let j = 0; j < k; j++) {
      [m[col * k + j], m[p * k + j]] = [m[p * k + j], m[col * k + j]];
      [inv[col * k + j], inv[p * k + j]] = [inv[p * k + j], inv[col * k + j]];
    }
    const d = m[col * k + col];
    for (let j = 0; j < k; j++) {
      m[col * k + j] /= d;
      inv[col * k + j] /= d;
    }
    for (let r = 0; r < k; r++) {
      if (r === col) continue;
      const f = m[r * k + col];
      for (let j = 0; j < k; j++) {
        m[r * k + j] -= f * m[col * k + j];
        inv[r * k + j] -= f * inv[col * k + j];
      }
    }
  }
  return inv;
}

/** H = 2XᵀX/rows straight from X, dead inputs → 1, plus dampening · mean diag. */
function referenceHessian(x: Float32Array, rows: number, k: number, damp: number) {
  const h = new Float64Array(k * k);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < k; i++)
      for (let j = 0; j < k; j++) h[i * k + j] += (2 * x[r * k + i] * x[r * k + j]) / rows;
  const dead: boolean[] = [];
  for (let i = 0; i < k; i++) {
    dead.push(h[i * k + i] === 0);
    if (dead[i]) h[i * k + i] = 1;
  }
  let mean = 0;
  for (let i = 0; i < k; i++) mean += h[i * k + i] / k;
  for (let i = 0; i < k; i++) h[i * k + i] += damp * mean;
  return { h, dead };
}

/** Removes input q from the inverse Hessian: H⁻¹ ← H⁻¹ − H⁻¹[:,q] H⁻¹[q,:] / H⁻¹[q,q]. */
function eliminate(hinv: Float64Array, k: number, q: number): void {
  const d = hinv[q * k + q];
  const col = Array.from({ length: k }, (_, i) => hinv[i * k + q]);
  const row = Array.from({ length: k }, (_, j) => hinv[q * k + j]);
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) hinv[i * k + j] -= (col[i] * row[j]) / d;
}

/** Rows of W [k, n] with input-major layout: W[i][c] = w[i * n + c]. */
type Grid = { kind: 'int4'; blockSize: number; symmetric: boolean } | { kind: 'int8'; symmetric: boolean };

/** Reference GPTQ: the OBS update for one input at a time in the given order. */
function referenceGptq(
  w: Float32Array,
  x: Float32Array,
  grid: Grid,
  actOrder: boolean,
  damp = 0.01,
): { values: Float64Array; codes: number[] } {
  const { h, dead } = referenceHessian(x, ROWS, K, damp);
  const hinv = inverse(h, K);
  const W = Float64Array.from(w);
  for (let i = 0; i < K; i++) if (dead[i]) W.fill(0, i * N, (i + 1) * N);
  const order = Array.from({ length: K }, (_, i) => i);
  if (actOrder) order.sort((a, b) => h[b * K + b] - h[a * K + a] || a - b);
  const groupSize = grid.kind === 'int4' ? grid.blockSize : K;
  // scale (and zero point) per [group][output] from a set of rows
  const scale = new Map<number, { s: number; z: number }[]>();
  const fit = (g: number, src: Float64Array) => {
    const params = [];
    for (let c = 0; c < N; c++) {
      let lo = 0;
      let hi = 0;
      for (let i = g * groupSize; i < Math.min(K, (g + 1) * groupSize); i++) {
        lo = Math.min(lo, src[i * N + c]);
        hi = Math.max(hi, src[i * N + c]);
      }
      if (grid.kind === 'int4') {
        if (grid.symmetric) params.push({ s: Math.fround((Math.abs(lo) > hi ? lo : hi) / -8), z: 8 });
        else {
          const s = Math.fround((hi - lo) / 15);
          params.push({ s, z: s ? Math.min(15, Math.max(0, Math.round(-lo / s))) : 8 });
        }
      } else if (grid.symmetric) params.push({ s: Math.fround(Math.max(-lo, hi) / 127), z: 0 });
      else {
        const s = Math.fround((hi - lo) / 255);
        params.push({ s, z: s ? Math.min(255, Math.max(0, Math.round(-lo / s))) : 0 });
      }
    }
    scale.set(g, params);
  };
  if (grid.kind === 'int8') fit(0, Float64Array.from(w));
  else if (actOrder) for (let g = 0; g * groupSize < K; g++) fit(g, W);
  const [lowest, highest] = grid.kind === 'int4' ? [0, 15] : grid.symmetric ? [-128, 127] : [0, 255];
  const codes = new Array<number>(K * N).fill(0);
  for (let t = 0; t < K; t++) {
    const q = order[t];
    const g = Math.floor(q / groupSize);
    if (grid.kind === 'int4' && !actOrder && q % groupSize === 0) fit(g, W);
    const err = new Float64Array(N);
    for (let c = 0; c < N; c++) {
      const { s, z } = scale.get(g)![c];
      const code = s === 0 ? z : Math.min(highest, Math.max(lowest, Math.round(W[q * N + c] / s) + z));
      codes[q * N + c] = code;
      const deq = Math.fround((code - z) * s);
      err[c] = (W[q * N + c] - deq) / hinv[q * K + q];
      W[q * N + c] = deq;
    }
    for (const j of order.slice(t + 1)) for (let c = 0; c < N; c++) W[j * N + c] -= hinv[q * K + j] * err[c];
    eliminate(hinv, K, q);
  }
  return { values: W, codes };
}

function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number): void {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  expect(worst).toBeLessThan(tol);
}

const W = seededFloats(K * N, 11, 0.2);
const X = activations(ROWS, K, 21);
const STATS = statsOf(X, ROWS, K);

describe('calibration statistics', () => {
  it('accumulate XᵀX, Σx², max |x| and the range exactly as a direct computation', () => {
    const direct = new Float64Array(K * K);
    for (let r = 0; r < ROWS; r++)
      for (let i = 0; i < K; i++)
        for (let j = 0; j < K; j++) direct[i * K + j] += X[r * K + i] * X[r * K + j];
    expectClose(STATS.xtx!, direct, 1e-9 * Math.max(...direct));
    expect(STATS.rows).toBe(ROWS);
    for (let j = 0; j < K; j++) {
      expect(STATS.sumSquares[j]).toBeCloseTo(direct[j * K + j], 6);
      let m = 0;
      for (let r = 0; r < ROWS; r++) m = Math.max(m, Math.abs(X[r * K + j]));
      expect(STATS.absMax[j]).toBe(m);
    }
    expect(STATS.min).toBe(Math.min(...X));
    expect(STATS.max).toBe(Math.max(...X));
  });

  it('the upper Cholesky factor of H⁻¹ satisfies UᵀU = H⁻¹', () => {
    const { h } = layerHessian(STATS, 0.01);
    const u = upperCholeskyOfInverse(h, K);
    const hinv = inverse(h, K);
    const utu = new Float64Array(K * K);
    for (let i = 0; i < K; i++)
      for (let j = 0; j < K; j++) {
        expect(i > j ? u[i * K + j] : 0).toBe(0);
        for (let m = 0; m < K; m++) utu[i * K + j] += u[m * K + i] * u[m * K + j];
      }
    expectClose(utu, hinv, 1e-9 * Math.max(...hinv.map(Math.abs)));
    // the blocked factorisation, blocks not dividing k, equals the one-block one
    for (const block of [1, 5, 8])
      expectClose(upperCholeskyOfInverse(h, K, block), u, 1e-12 * Math.max(...u));
  });
});

describe('GPTQ', () => {
  const grids: [string, Grid][] = [
    ['int4 b8 symmetric', { kind: 'int4', blockSize: 8, symmetric: true }],
    ['int4 b16 zero points', { kind: 'int4', blockSize: 16, symmetric: false }],
    ['int8 per-channel symmetric', { kind: 'int8', symmetric: true }],
    ['int8 per-channel asymmetric', { kind: 'int8', symmetric: false }],
  ];
  for (const [label, grid] of grids)
    for (const actOrder of [false, true]) {
      it(`${label}${actOrder ? ', act-order' : ''} equals the reference, whatever the lazy block`, () => {
        const ref = referenceGptq(W, X, grid, actOrder);
        for (const lazyBlock of [1, 8, 128]) {
          const common = { dampening: 0.01, actOrder, lazyBlock };
          const w = matrix(W, [K, N]);
          let values: Float32Array;
          let codes: number[];
          if (grid.kind === 'int4') {
            const r = gptqInt4(w, STATS, { ...common, blockSize: grid.blockSize, symmetric: grid.symmetric });
            values = r.values;
            codes = Array.from(r.encoding.codes);
          } else {
            const r = gptqInt8(w, STATS, { ...common, symmetric: grid.symmetric });
            values = r.values;
            codes = Array.from(r.encoding.q);
          }
          expect(codes).toEqual(ref.codes);
          expectClose(values, ref.values, 1e-5);
        }
      });
    }

  it('with uncorrelated inputs of equal scale it is round-to-nearest: the int4 and int8 methods’ codes exactly', () => {
    // X = the identity repeated: XᵀX ∝ I, so no error is carried anywhere
    const eye = new Float32Array(2 * K * K);
    for (let r = 0; r < 2 * K; r++) eye[r * K + (r % K)] = 1;
    const stats = statsOf(eye, 2 * K, K);
    for (const channelAxis of [1, 0] as const) {
      const shape: [number, number] = channelAxis === 1 ? [K, N] : [N, K];
      const w = matrix(W, shape, channelAxis);
      for (const symmetric of [true, false]) {
        const rtn4 = int4Method.apply([w], { blockSize: 16, symmetric, format: 'matmulnbits' })[0];
        const g4 = gptqInt4(w, stats, { blockSize: 16, symmetric, dampening: 0.01, actOrder: false });
        expect(g4.encoding).toEqual(rtn4.encoding as Int4Quantized);
        expect(g4.values).toEqual(rtn4.values);
        const rtn8 = int8Method.apply([w], { granularity: 'per-channel', symmetric })[0];
        const g8 = gptqInt8(w, stats, { symmetric, dampening: 0.01, actOrder: true });
        expect(g8.encoding).toEqual(rtn8.encoding as Int8Quantized);
        expect(g8.values).toEqual(rtn8.values);
      }
    }
  });

  it('gives the transposed result for a weight stored [N, K] (channelAxis 0)', () => {
    const t = new Float32Array(K * N);
    for (let k = 0; k < K; k++) for (let c = 0; c < N; c++) t[c * K + k] = W[k * N + c];
    const opts = { blockSize: 16, symmetric: true, dampening: 0.01, actOrder: true };
    const a = gptqInt4(matrix(W, [K, N], 1), STATS, opts);
    const b = gptqInt4(matrix(t, [N, K], 0), STATS, opts);
    expect(b.encoding.scales).toEqual(a.encoding.scales);
    for (let k = 0; k < K; k++)
      for (let c = 0; c < N; c++) {
        expect(b.values[c * K + k]).toBe(a.values[k * N + c]);
        expect(b.encoding.codes[c * K + k]).toBe(a.encoding.codes[k * N + c]);
      }
  });

  it('lowers the layer error ‖XW − XŴ‖ below round-to-nearest on correlated inputs', () => {
    const w = matrix(W, [K, N]);
    const rtn = int4Method.apply([w], { blockSize: 16, symmetric: true, format: 'matmulnbits' })[0].values;
    const g = gptqInt4(w, STATS, { blockSize: 16, symmetric: true, dampening: 0.01, actOrder: false }).values;
    expect(layerError(g)).toBeLessThan(0.8 * layerError(rtn));
  });

  it('zeroes inputs that never fire, and rejects statistics that do not fit', () => {
    const x = X.slice();
    for (let r = 0; r < ROWS; r++) x[r * K + 3] = 0;
    const stats = statsOf(x, ROWS, K);
    const r = gptqInt4(matrix(W, [K, N]), stats, {
      blockSize: 16,
      symmetric: true,
      dampening: 0.01,
      actOrder: false,
    });
    for (let c = 0; c < N; c++) expect(Math.abs(r.values[3 * N + c])).toBe(0);
    const wrongShape = () =>
      gptqInt4(matrix(W, [N, K], 1), STATS, {
        blockSize: 16,
        symmetric: true,
        dampening: 0.01,
        actOrder: false,
      });
    expect(wrongShape).toThrow(/input features/);
    const noXtx = () =>
      gptqInt8(
        matrix(W, [K, N]),
        { ...STATS, xtx: null },
        { symmetric: true, dampening: 0.01, actOrder: false },
      );
    try {
      noXtx();
      expect.unreachable();
    } catch (e) {
      expect(isModelError(e) && e.code).toBe('invalid-argument');
    }
    const empty = () =>
      gptqInt8(matrix(W, [K, N]), emptyInputStats('x', K, true), {
        symmetric: true,
        dampening: 0.01,
        actOrder: false,
      });
    expect(empty).toThrow(/0 rows/);
  });
});

/** ‖XW − XŴ‖²_F = tr(ΔWᵀ XᵀX ΔW) for a [K, N] weight. */
function layerError(values: Float32Array): number {
  const xtx = STATS.xtx!;
  let e = 0;
  for (let c = 0; c < N; c++)
    for (let i = 0; i < K; i++) {
      const di = values[i * N + c] - W[i * N + c];
      if (di === 0) continue;
      for (let j = 0; j < K; j++) e += di * xtx[i * K + j] * (values[j * N + c] - W[j * N + c]);
    }
  return e;
}

/** Reference SparseGPT: masks from OBS saliency, one input at a time with explicit downdates. */
function referenceSparseGpt(
  sparsity: number,
  nm: [number, number] | null,
  maskBlock: number,
  group: 'block' | 'output' = 'block',
): Float64Array {
  const { h, dead } = referenceHessian(X, ROWS, K, 0.01);
  const hinv = inverse(h, K);
  // [H⁻¹]_ii once inputs 0..i−1 are eliminated: depends on H only
  const dseq: number[] = [];
  const scratch = Float64Array.from(hinv);
  for (let i = 0; i < K; i++) {
    dseq.push(scratch[i * K + i]);
    eliminate(scratch, K, i);
  }
  const Wr = Float64Array.from(W);
  for (let i = 0; i < K; i++) if (dead[i]) Wr.fill(0, i * N, (i + 1) * N);
  const pruned = new Set<number>();
  const total = Math.round(sparsity * K * N);
  for (let i = 0; i < K; i++) {
    if (!nm && i % maskBlock === 0) {
      const i2 = Math.min(K, i + maskBlock);
      const count = Math.round((total * i2) / K) - Math.round((total * i) / K);
      // the block's weights of all outputs compete, or each output's (its share of count, cumulatively rounded)
      const groups =
        group === 'block'
          ? [{ cols: Array.from({ length: N }, (_, c) => c), share: count }]
          : Array.from({ length: N }, (_, c) => ({
              cols: [c],
              share: Math.round((count * (c + 1)) / N) - Math.round((count * c) / N),
            }));
      for (const { cols, share } of groups) {
        const cand = [];
        for (let r = i; r < i2; r++)
          for (const c of cols) cand.push({ at: r * N + c, s: Wr[r * N + c] ** 2 / dseq[r] });
        cand.sort((a, b) => a.s - b.s || a.at - b.at);
        for (const { at } of cand.slice(0, share)) pruned.add(at);
      }
    }
    if (nm && i % nm[1] === 0) {
      const len = Math.min(nm[1], K - i);
      const keep = len === nm[1] ? nm[0] : Math.ceil((len * nm[0]) / nm[1]);
      for (let c = 0; c < N; c++) {
        const cand = [];
        for (let r = i; r < i + len; r++) cand.push({ r, s: Wr[r * N + c] ** 2 / dseq[r] });
        cand.sort((a, b) => b.s - a.s || a.r - b.r);
        for (const { r } of cand.slice(keep)) pruned.add(r * N + c);
      }
    }
    const d = hinv[i * K + i];
    const err = new Float64Array(N);
    for (let c = 0; c < N; c++) {
      const q = pruned.has(i * N + c) ? 0 : Wr[i * N + c];
      err[c] = (Wr[i * N + c] - q) / d;
      Wr[i * N + c] = q;
    }
    for (let j = i + 1; j < K; j++) for (let c = 0; c < N; c++) Wr[j * N + c] -= hinv[i * K + j] * err[c];
    eliminate(hinv, K, i);
  }
  return Wr;
}

function zeros(x: ArrayLike<number>): number {
  let z = 0;
  for (let i = 0; i < x.length; i++) if (x[i] === 0) z++;
  return z;
}

/** Every group of m consecutive inputs of every output keeps at most n non-zeros. */
function expectNM(values: Float32Array, n: number, m: number): void {
  for (let c = 0; c < N; c++)
    for (let k0 = 0; k0 < K; k0 += m) {
      let kept = 0;
      for (let k = k0; k < Math.min(K, k0 + m); k++) if (values[k * N + c] !== 0) kept++;
      expect(kept).toBeLessThanOrEqual(n);
    }
}

describe('SparseGPT', () => {
  for (const [sparsity, lazyBlock] of [
    [0.5, 8],
    [0.3, 16],
    [0.5, 128],
  ] as const)
    it(`unstructured ${sparsity * 100} % (mask block ${lazyBlock}) equals the reference, exact sparsity`, () => {
      const out = sparsegptPrune(matrix(W, [K, N]), STATS, {
        sparsity,
        pattern: 'unstructured',
        dampening: 0.01,
        lazyBlock,
      });
      expectClose(out, referenceSparseGpt(sparsity, null, lazyBlock), 1e-5);
      expect(zeros(out)).toBe(Math.round(sparsity * K * N));
    });

  for (const [sparsity, lazyBlock] of [
    [0.3, 8],
    [0.5, 128],
  ] as const)
    it(`unstructured ${sparsity * 100} %, each output its own share (mask block ${lazyBlock}): equals the reference`, () => {
      const out = sparsegptPrune(matrix(W, [K, N]), STATS, {
        sparsity,
        pattern: 'unstructured',
        dampening: 0.01,
        lazyBlock,
        group: 'output',
      });
      expectClose(out, referenceSparseGpt(sparsity, null, lazyBlock, 'output'), 1e-5);
      expect(zeros(out)).toBe(Math.round(sparsity * K * N));
      // every output within one of the mean per block: zeros per output differ by at most the block count
      const blocks = Math.ceil(K / lazyBlock);
      const perOutput = Array.from({ length: N }, (_, c) => zeros(out.filter((_, at) => at % N === c)));
      expect(Math.max(...perOutput) - Math.min(...perOutput)).toBeLessThanOrEqual(blocks);
      // not the block-wide mask: the groups differ
      const wide = sparsegptPrune(matrix(W, [K, N]), STATS, {
        sparsity,
        pattern: 'unstructured',
        dampening: 0.01,
        lazyBlock,
      });
      expect(Array.from(out).some((v, i) => (v === 0) !== (wide[i] === 0))).toBe(true);
    });

  for (const [n, m] of [
    [2, 4],
    [4, 8],
  ] as const)
    it(`${n}:${m} equals the reference and keeps ${n} of every ${m} inputs`, () => {
      for (const lazyBlock of [4, 128]) {
        const out = sparsegptPrune(matrix(W, [K, N]), STATS, {
          sparsity: 0,
          pattern: `${n}:${m}`,
          dampening: 0.01,
          lazyBlock,
        });
        expectClose(out, referenceSparseGpt(0, [n, m], 128), 1e-5);
        expectNM(out, n, m);
        expect(zeros(out)).toBe(((m - n) / m) * K * N);
      }
    });

  it('gives the transposed result for a weight stored [N, K] (channelAxis 0)', () => {
    const t = new Float32Array(K * N);
    for (let k = 0; k < K; k++) for (let c = 0; c < N; c++) t[c * K + k] = W[k * N + c];
    for (const pattern of ['unstructured', '2:4'] as const) {
      const opts = { sparsity: 0.5, pattern, dampening: 0.01 };
      const a = sparsegptPrune(matrix(W, [K, N], 1), STATS, opts);
      const b = sparsegptPrune(matrix(t, [N, K], 0), STATS, opts);
      for (let k = 0; k < K; k++) for (let c = 0; c < N; c++) expect(b[c * K + k]).toBe(a[k * N + c]);
    }
  });

  it('lowers the layer error below magnitude pruning at the same sparsity', () => {
    const w = matrix(W, [K, N]);
    const magnitude = W.map((v) => v);
    const order = Array.from(W.keys()).sort((a, b) => Math.abs(W[a]) - Math.abs(W[b]) || a - b);
    for (const i of order.slice(0, (K * N) / 2)) magnitude[i] = 0;
    const sgpt = sparsegptPrune(w, STATS, { sparsity: 0.5, pattern: 'unstructured', dampening: 0.01 });
    expect(layerError(sgpt)).toBeLessThan(0.7 * layerError(magnitude));
  });
});

describe('Wanda', () => {
  /** Reference: per output, sort inputs by |W|·‖X_j‖ and zero the smallest. */
  function referenceWanda(sparsity: number, nm: [number, number] | null): Float32Array {
    const norms = Array.from({ length: K }, (_, j) => {
      let s = 0;
      for (let r = 0; r < ROWS; r++) s += X[r * K + j] ** 2;
      return Math.sqrt(s);
    });
    const out = W.slice();
    const total = Math.round(sparsity * K * N);
    for (let c = 0; c < N; c++) {
      const score = (j: number) => Math.abs(W[j * N + c]) * norms[j];
      if (nm) {
        for (let k0 = 0; k0 < K; k0 += nm[1]) {
          const group = Array.from({ length: Math.min(nm[1], K - k0) }, (_, t) => k0 + t);
          group.sort((a, b) => score(b) - score(a) || a - b);
          for (const j of group.slice(nm[0])) out[j * N + c] = 0;
        }
        continue;
      }
      const count = Math.round((total * (c + 1)) / N) - Math.round((total * c) / N);
      const order = Array.from({ length: K }, (_, j) => j).sort((a, b) => score(a) - score(b) || a - b);
      for (const j of order.slice(0, count)) out[j * N + c] = 0;
    }
    return out;
  }

  it('unstructured: equals the reference, exact sparsity, each output within one of the mean', () => {
    for (const sparsity of [0.3, 0.5, 0.77]) {
      const out = wandaPrune(matrix(W, [K, N]), STATS, { sparsity, pattern: 'unstructured' });
      expect(out).toEqual(referenceWanda(sparsity, null));
      expect(zeros(out)).toBe(Math.round(sparsity * K * N));
      for (let c = 0; c < N; c++) {
        let z = 0;
        for (let k = 0; k < K; k++) if (out[k * N + c] === 0) z++;
        expect(Math.abs(z - sparsity * K)).toBeLessThanOrEqual(1);
      }
    }
  });

  it('N:M equals the reference, and the [N, K] layout gives the transposed result', () => {
    const out = wandaPrune(matrix(W, [K, N]), STATS, { sparsity: 0, pattern: '2:4' });
    expect(out).toEqual(referenceWanda(0, [2, 4]));
    expectNM(out, 2, 4);
    const t = new Float32Array(K * N);
    for (let k = 0; k < K; k++) for (let c = 0; c < N; c++) t[c * K + k] = W[k * N + c];
    const outT = wandaPrune(matrix(t, [N, K], 0), STATS, { sparsity: 0, pattern: '2:4' });
    for (let k = 0; k < K; k++) for (let c = 0; c < N; c++) expect(outT[c * K + k]).toBe(out[k * N + c]);
  });

  it('with the whole tensor as comparison group: the lowest |W|·‖X_j‖ over all weights, exactly', () => {
    const norms = Array.from({ length: K }, (_, j) => Math.sqrt(STATS.sumSquares[j]));
    const order = Array.from(W.keys()).sort(
      (a, b) =>
        Math.abs(W[a]) * norms[Math.floor(a / N)] - Math.abs(W[b]) * norms[Math.floor(b / N)] || a - b,
    );
    const want = W.slice();
    for (const i of order.slice(0, Math.round(0.4 * K * N))) want[i] = 0;
    expect(
      wandaPrune(matrix(W, [K, N]), STATS, { sparsity: 0.4, pattern: 'unstructured', group: 'tensor' }),
    ).toEqual(want);
  });

  it('rejects a pattern it cannot apply', () => {
    expect(() => wandaPrune(matrix(W, [K, N]), STATS, { sparsity: 0, pattern: '5:4' })).toThrow(/N ≤ M/);
  });
});
