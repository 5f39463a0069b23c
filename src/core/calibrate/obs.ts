/**
 * The shared loop of GPTQ and SparseGPT (Frantar et al. 2022, 2023): visit the inputs (rows of a
 * [K, N] weight) in order; replace row i by its compressed version q_i; spread the error over the
 * rows not yet visited with the optimal-brain-surgeon update W_j −= U_ij · (w_i − q_i) / U_ii, where
 * U is the upper Cholesky factor of H⁻¹. Updates inside a block of rows are applied at once; those
 * to later rows are batched per block ("lazy batch"), which changes the order of additions but not
 * the result.
 */

export interface ObsPass {
  /** Working weights [k, n], input-major, in processing order; every row ends up compressed. */
  work: Float64Array;
  k: number;
  n: number;
  /** Upper Cholesky factor of H⁻¹ in processing order, [k, k]. */
  u: Float64Array;
  /** Rows per lazy block; callers keep it a multiple of any row group they decide on together. */
  block: number;
  /**
   * Called at the start of each block, before any of its rows is compressed, with its rows [i1, i2)
   * already carrying every update from earlier blocks.
   */
  startBlock?(i1: number, i2: number): void;
  /** Writes the compressed version of row i (current values `w`, length n) into `q`. */
  compressRow(i: number, w: Float64Array, q: Float64Array): void;
}

/** Runs the pass; `work` ends holding the compressed weights. */
export function runObsPass(pass: ObsPass): void {
  const { work, k, n, u, block } = pass;
  const err = new Float64Array(block * n);
  const q = new Float64Array(n);
  for (let i1 = 0; i1 < k; i1 += block) {
    const i2 = Math.min(k, i1 + block);
    pass.startBlock?.(i1, i2);
    for (let i = i1; i < i2; i++) {
      const w = work.subarray(i * n, (i + 1) * n);
      pass.compressRow(i, w, q);
      const d = u[i * k + i];
      const e = err.subarray((i - i1) * n, (i - i1 + 1) * n);
      for (let c = 0; c < n; c++) e[c] = (w[c] - q[c]) / d;
      w.set(q);
      for (let j = i + 1; j < i2; j++) {
        const a = u[i * k + j];
        if (a === 0) continue;
        for (let c = 0, at = j * n; c < n; c++, at++) work[at] -= a * e[c];
      }
    }
    for (let j = i2; j < k; j++) {
      const rowJ = j * n;
      for (let i = i1; i < i2; i++) {
        const a = u[i * k + j];
        if (a === 0) continue;
        for (let c = 0, at = (i - i1) * n; c < n; c++, at++) work[rowJ + c] -= a * err[at];
      }
    }
  }
}

/** The weight as [K, N] float64 (input-major), whichever axis its output channels run along. */
export function inputMajor(
  values: Float32Array,
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
): Float64Array {
  if (channelAxis === 1) return Float64Array.from(values);
  // [N, K] → [K, N]
  const out = new Float64Array(rows * cols);
  for (let c = 0; c < rows; c++) for (let k = 0; k < cols; k++) out[k * rows + c] = values[c * cols + k];
  return out;
}

/** Back from [K, N] input-major to the weight's own layout, as float32. */
export function ownLayout(work: Float64Array, rows: number, cols: number, channelAxis: 0 | 1): Float32Array {
  if (channelAxis === 1) return Float32Array.from(work);
  const out = new Float32Array(rows * cols);
  for (let c = 0; c < rows; c++) for (let k = 0; k < cols; k++) out[c * cols + k] = work[k * rows + c];
  return out;
}
