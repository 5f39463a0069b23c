import { errorSums, type ErrorSums } from '../simd/index.ts';

/** Error of a compressed tensor against its original (float64 accumulators). */
export interface ErrorStats {
  mse: number;
  /** 10·log10(Σx² / Σ(x − x')²); Infinity when the tensor is unchanged. */
  snrDb: number;
  maxAbsError: number;
  /** Fraction of exact zeros in the compressed tensor. */
  sparsity: number;
}

export function errorStats(original: Float32Array, compressed: Float32Array): ErrorStats {
  return errorStatsFromSums(errorSums(original, compressed), original.length);
}

/** ErrorStats of a tensor of `length` values from its error sums (errorSums, or a quantizer's own). */
export function errorStatsFromSums(sums: ErrorSums, length: number): ErrorStats {
  const { signal, noise, maxAbs, zeros } = sums;
  const n = length || 1;
  return {
    mse: noise / n,
    snrDb: noise === 0 ? Infinity : signal === 0 ? -Infinity : 10 * Math.log10(signal / noise),
    maxAbsError: maxAbs,
    sparsity: zeros / n,
  };
}
