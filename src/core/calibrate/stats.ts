/**
 * Per-weight activation statistics gathered from calibration data: what the data-aware methods need
 * to know about the inputs X ([rows, K], one row per token) that a weight W is multiplied with.
 * Plain objects of typed arrays, so they survive structured clone (postMessage, IndexedDB) as they are.
 */
import { ModelError } from '../errors.ts';
import { accumulateActivationStats } from '../simd/dense.ts';

export interface InputStats {
  /** The graph tensor the statistics were captured from (the MatMul/Gemm's activation input). */
  input: string;
  /** Input features: the length of the weight's reduction axis. */
  k: number;
  /** Activation rows (tokens) accumulated. */
  rows: number;
  /** XᵀX, [k, k] row-major, accumulated in float64; null when it was not asked for (it is k² doubles). */
  xtx: Float64Array | null;
  /** Σ x² per input feature, [k] (the diagonal of XᵀX, kept also when XᵀX is not). */
  sumSquares: Float64Array;
  /** max |x| per input feature, [k]. */
  absMax: Float32Array;
  /** Smallest and largest activation over the whole input (static activation quantization). */
  min: number;
  max: number;
  /**
   * Counts of every activation value by its float32 bits' top 13 (sign, exponent, 4 mantissa bits):
   * bins 6 % wide at any magnitude, needing no range in advance (percentile and MSE activation ranges
   * read it; see histogramBin). 32 KiB per activation.
   */
  histogram?: Uint32Array;
}

/** Bins of `InputStats.histogram`: a float32's bits shifted right by this many. */
export const HISTOGRAM_SHIFT = 19;

/** What the second-order kernels (GPTQ, SparseGPT) read: XᵀX, its row count and width. */
export type HessianSource = Pick<InputStats, 'xtx' | 'rows' | 'k'>;

/**
 * Statistics for a model on one calibration set, keyed by weight (initializer) name. Weights that read
 * the same activation (a layer's q/k/v projections) share one InputStats object.
 */
export interface CalibrationStats {
  version: 1;
  sequences: number;
  tokens: number;
  layers: Record<string, InputStats>;
}

export function emptyInputStats(input: string, k: number, withXtx: boolean): InputStats {
  return {
    input,
    k,
    rows: 0,
    xtx: withXtx ? new Float64Array(k * k) : null,
    sumSquares: new Float64Array(k),
    absMax: new Float32Array(k),
    min: Infinity,
    max: -Infinity,
    histogram: new Uint32Array(2 ** (32 - HISTOGRAM_SHIFT)),
  };
}

// Rows accumulated per pass over XᵀX: enough to reuse each row of the accumulator while it is in cache.
const XTX_ROW_CHUNK = 64;

/**
 * Adds `rows` activation rows x[rows, k] (row-major) into `stats`. XᵀX is accumulated on its upper
 * triangle in chunks of rows (each accumulator row i gets Σ_r x[r,i]·x[r,i..k) in one sweep) and
 * mirrored by `finishInputStats` — unless `gram`, these rows' XᵀX computed elsewhere (the capture
 * graph computes it with onnxruntime's MatMul, k²·rows multiply-adds that are slow in plain JS), is
 * given: the whole k × k matrix, or blocks of it covering the upper triangle; it is added in float64.
 */
export function accumulateInputStats(
  stats: InputStats,
  x: Float32Array,
  rows: number,
  gram?: ArrayLike<number> | GramBlockValues[],
): void {
  const { k } = stats;
  if (x.length !== rows * k)
    throw new ModelError(
      'invalid-argument',
      `Activation '${stats.input}' has ${x.length} values, expected ${rows} rows of ${k}.`,
    );
  const range = Float32Array.of(stats.min, stats.max);
  accumulateActivationStats(x, rows, k, stats.sumSquares, stats.absMax, range, stats.histogram);
  if (!stats.sumSquares.every(Number.isFinite)) {
    const v = x.find((a) => !Number.isFinite(a));
    throw new ModelError(
      'invalid-argument',
      `The model produced a non-finite activation (${v}) at '${stats.input}' on the calibration data.`,
    );
  }
  stats.min = range[0];
  stats.max = range[1];
  stats.rows += rows;
  const xtx = stats.xtx;
  if (!xtx) return;
  if (gram && Array.isArray(gram)) {
    for (const b of gram as GramBlockValues[]) {
      const { r0, c0, rows: br, cols: bc } = b;
      // a typed array, so the adds below stay a monomorphic loop
      const data = b.data instanceof Float32Array ? b.data : Float32Array.from(b.data);
      if (data.length !== br * bc || r0 + br > k || c0 + bc > k)
        throw new ModelError(
          'invalid-argument',
          `An XᵀX block of '${stats.input}' does not fit its ${k}² matrix.`,
        );
      for (let i = 0; i < br; i++) addRow(xtx, (r0 + i) * k + c0, data, i * bc, bc);
    }
    return;
  }
  if (gram) {
    if (gram.length !== k * k)
      throw new ModelError(
        'invalid-argument',
        `XᵀX of '${stats.input}' has ${gram.length} values, expected ${k}².`,
      );
    for (let i = 0; i < k * k; i++) xtx[i] += (gram as ArrayLike<number>)[i];
    return;
  }
  const chunk = new Float64Array(XTX_ROW_CHUNK * k);
  for (let r0 = 0; r0 < rows; r0 += XTX_ROW_CHUNK) {
    const n = Math.min(XTX_ROW_CHUNK, rows - r0);
    for (let i = 0; i < n * k; i++) chunk[i] = x[r0 * k + i];
    for (let i = 0; i < k; i++) {
      const rowAt = i * k;
      for (let r = 0; r < n; r++) {
        const xi = chunk[r * k + i];
        if (xi === 0) continue;
        for (let j = i, at = r * k + i; j < k; j++, at++) xtx[rowAt + j] += xi * chunk[at];
      }
    }
  }
}

/** XᵀX[r0 .. r0+rows, c0 .. c0+cols] of some activation rows, row-major (blocks on or above the diagonal). */
export interface GramBlockValues {
  r0: number;
  c0: number;
  rows: number;
  cols: number;
  data: ArrayLike<number>;
}

/** dst[at .. at+len) += src[from .. from+len), in float64. */
function addRow(dst: Float64Array, at: number, src: Float32Array, from: number, len: number): void {
  for (let j = 0; j < len; j++) dst[at + j] += src[from + j];
}

/** Mirrors XᵀX's upper triangle into its lower one; call once, after the last accumulate. */
export function finishInputStats(stats: InputStats): void {
  const { xtx, k } = stats;
  if (!xtx) return;
  for (let i = 0; i < k; i++) for (let j = i + 1; j < k; j++) xtx[j * k + i] = xtx[i * k + j];
}

/** E[x²] per input feature, [k]. */
export function meanSquare(stats: Pick<InputStats, 'sumSquares' | 'rows'>): Float64Array {
  return stats.sumSquares.map((s) => (stats.rows > 0 ? s / stats.rows : 0));
}
