import { errorSums } from '../simd/index.ts';

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
  const { signal, noise, maxAbs, zeros } = errorSums(original, compressed);
  const n = original.length || 1;
  return {
    mse: noise / n,
    snrDb: noise === 0 ? Infinity : signal === 0 ? -Infinity : 10 * Math.log10(signal / noise),
    maxAbsError: maxAbs,
    sparsity: zeros / n,
  };
}
