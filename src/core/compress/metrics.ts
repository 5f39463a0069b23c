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
  let signal = 0;
  let noise = 0;
  let maxAbs = 0;
  let zeros = 0;
  for (let i = 0; i < original.length; i++) {
    const x = original[i];
    const e = x - compressed[i];
    signal += x * x;
    noise += e * e;
    const a = Math.abs(e);
    if (a > maxAbs) maxAbs = a;
    if (compressed[i] === 0) zeros++;
  }
  const n = original.length || 1;
  return {
    mse: noise / n,
    snrDb: noise === 0 ? Infinity : signal === 0 ? -Infinity : 10 * Math.log10(signal / noise),
    maxAbsError: maxAbs,
    sparsity: zeros / n,
  };
}
