/**
 * LLM.int8-style weights (Dettmers et al. 2022): the few input features whose activations reach
 * large magnitudes ("outlier features") would stretch every int8 scale they touch, so the weight
 * rows that multiply them stay float32 and only the remaining rows are rounded to int8, with a scale
 * per output channel computed over those rows alone. Which features are outliers comes from
 * calibration: max |x| over the calibration tokens above a threshold (6 in the paper).
 */
import { ModelError } from '../../core/errors.ts';
import type { InputStats } from '../../core/calibrate/stats.ts';
import type { WeightMatrix } from '../types.ts';
import { calibratedDims } from '../calibrated.ts';
import { dequantizeInt8, quantizeInt8, type Int8Quantized } from '../int8/kernel.ts';

export interface LlmInt8Encoding {
  /** Input features kept in float32, ascending. */
  outliers: Uint32Array;
  /** The other input features, ascending. */
  inliers: Uint32Array;
  /**
   * The inlier features' weights as symmetric int8 with a scale per output channel, in the weight's
   * own layout with only those features: [inliers, N] (channelAxis 1) or [N, inliers] (channelAxis 0).
   * Null when every feature is an outlier.
   */
  int8: Int8Quantized | null;
  /** The outlier features' weights, exact, laid out as `int8` is: [outliers, N] or [N, outliers]. */
  outlierWeights: Float32Array;
}

export interface LlmInt8Result {
  values: Float32Array;
  encoding: LlmInt8Encoding;
}

/** Input features whose calibrated max |x| exceeds `threshold` (never, for threshold = Infinity). */
export function outlierFeatures(absMax: ArrayLike<number>, threshold: number): Uint32Array {
  const out: number[] = [];
  for (let j = 0; j < absMax.length; j++) if (absMax[j] > threshold) out.push(j);
  return Uint32Array.from(out);
}

/** The sub-matrix of `w` holding only the input features `features`, in `w`'s layout. */
function featureColumns(w: WeightMatrix, features: Uint32Array): Float32Array {
  const [rows, cols] = w.shape;
  const f = features.length;
  if (w.channelAxis === 1) {
    // [K, N]: features are rows
    const out = new Float32Array(f * cols);
    features.forEach((j, i) => out.set(w.values.subarray(j * cols, (j + 1) * cols), i * cols));
    return out;
  }
  // [N, K]: features are columns
  const out = new Float32Array(rows * f);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < f; i++) out[r * f + i] = w.values[r * cols + features[i]];
  return out;
}

export function llmInt8(
  w: WeightMatrix,
  stats: Pick<InputStats, 'absMax' | 'k'>,
  threshold: number,
): LlmInt8Result {
  const { rows, cols, k, n } = calibratedDims(w, stats.k, stats.absMax.length);
  if (!(threshold >= 0))
    throw new ModelError('invalid-argument', `The outlier threshold must be ≥ 0, got ${threshold}.`);
  const outliers = outlierFeatures(stats.absMax, threshold);
  const isOutlier = new Uint8Array(k);
  for (const j of outliers) isOutlier[j] = 1;
  const inliers = Uint32Array.from({ length: k - outliers.length }, () => 0);
  for (let j = 0, i = 0; j < k; j++) if (!isOutlier[j]) inliers[i++] = j;

  const values = w.values.slice(); // outlier features keep their exact weights
  let int8: Int8Quantized | null = null;
  if (inliers.length) {
    const sub = featureColumns(w, inliers);
    const [subRows, subCols] = w.channelAxis === 1 ? [inliers.length, n] : [n, inliers.length];
    int8 = quantizeInt8(sub, subRows, subCols, w.channelAxis, true);
    const dq = dequantizeInt8(int8, subRows, subCols, w.channelAxis);
    if (w.channelAxis === 1) inliers.forEach((j, i) => values.set(dq.subarray(i * n, (i + 1) * n), j * n));
    else
      for (let r = 0; r < rows; r++)
        for (let i = 0; i < inliers.length; i++) values[r * cols + inliers[i]] = dq[r * subCols + i];
  }
  return { values, encoding: { outliers, inliers, int8, outlierWeights: featureColumns(w, outliers) } };
}

/** Bytes of the export: int8 codes and scales, the float32 outlier weights, and int32 feature indices. */
export function llmInt8StoredBytes(e: LlmInt8Encoding): number {
  const int8 = e.int8 ? e.int8.q.byteLength + e.int8.scales.byteLength : 0;
  // a layer without outliers exports as plain int8: no float part, no indices
  const indices = e.outliers.length && e.inliers.length ? (e.outliers.length + e.inliers.length) * 4 : 0;
  return int8 + e.outlierWeights.byteLength + indices;
}
