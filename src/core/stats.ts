/** Summary statistics and histograms over a tensor's values (flat loops, float64 accumulators). */
import type { TensorValues } from './onnx/model.ts';
import { histogramCounts, moments, rangeAndZeros } from './simd/index.ts';

export interface TensorStats {
  min: number;
  max: number;
  mean: number;
  std: number;
  /** Fraction of values that are exactly zero. */
  zeros: number;
}

// float32 tensors (the weights): chunked two-sweep moments in WebAssembly SIMD (simd/index.ts), about
// 20× faster than the loop below, which the statistics of every tensor of a model at open paid in full.
// Other types: Welford's online mean/variance, one pass, numerically stable. std is the population std.
export function tensorStats(values: TensorValues | Float32Array): TensorStats {
  const n = values.length;
  if (n === 0) return { min: 0, max: 0, mean: 0, std: 0, zeros: 0 };
  if (values instanceof Float32Array) {
    const m = moments(values);
    return { min: m.lo, max: m.hi, mean: m.mean, std: Math.sqrt(m.m2 / n), zeros: m.zeros / n };
  }
  let min = Infinity;
  let max = -Infinity;
  let mean = 0;
  let m2 = 0;
  let zeros = 0;
  const isBig = values instanceof BigInt64Array || values instanceof BigUint64Array;
  for (let i = 0; i < n; i++) {
    const x = isBig ? Number(values[i]) : (values[i] as number);
    if (x < min) min = x;
    if (x > max) max = x;
    if (x === 0) zeros++;
    const d = x - mean;
    mean += d / (i + 1);
    m2 += d * (x - mean);
  }
  return { min, max, mean, std: Math.sqrt(m2 / n), zeros: zeros / n };
}

export interface Histogram {
  /** bins + 1 edges, from min to max. */
  edges: number[];
  counts: number[];
}

// counts[b] = #{x : edges[b] <= x < edges[b+1]}, the last bin closed on the right; NaN and values
// outside an explicit range are not counted. Both sweeps run as WebAssembly SIMD.
export function histogram(values: Float32Array, bins: number, range?: [number, number]): Histogram {
  let { lo, hi } = range ? { lo: range[0], hi: range[1] } : rangeAndZeros(values);
  if (!(lo <= hi)) {
    lo = 0;
    hi = 0;
  }
  if (lo === hi) {
    lo -= 0.5;
    hi += 0.5;
  }
  const counts = Array.from(histogramCounts(values, lo, hi, bins / (hi - lo), bins));
  const edges = Array.from({ length: bins + 1 }, (_, i) => lo + (i * (hi - lo)) / bins);
  return { edges, counts };
}
