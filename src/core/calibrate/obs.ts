/**
 * The shared loop of GPTQ and SparseGPT (Frantar et al. 2022, 2023): visit the inputs (rows of a
 * [K, N] weight) in order; replace row i by its compressed version q_i; spread the error over the
 * rows not yet visited with the optimal-brain-surgeon update W_j −= U_ij · (w_i − q_i) / U_ii, where
 * U is the upper Cholesky factor of H⁻¹. Updates inside a block of rows are applied at once; those
 * to later rows are batched per block ("lazy batch"), which changes the order of additions but not
 * the result.
 *
 * The pass reads V = U⁻¹ (H = VVᵀ, V upper: `reversedCholesky`), not U, which saves inverting it
 * (k³/3 multiply-adds, as much as the factorisation). With d_m = w_m − q_m (w the rows before the
 * pass) and E the rows' scaled errors, the updates add up to W − Q = UᵀE, so E = VᵀD; from that, the
 * rows of a block [i1, i2) once every earlier row is done are w_b + U_bbᵀ a_b, where
 * a_j = Σ_{m<i1} V_mj d_m is what the earlier blocks add to row j and U_bb = V_bb⁻¹ is the block's
 * own b × b corner of U. So the trailing rows accumulate a (a product with V, no division), and
 * each block inverts only its own corner (k·b²/3 in all) and runs the OBS updates inside it with U,
 * exactly as with the whole U.
 */

export interface ObsPass {
  /** Working weights [k, n], input-major, in processing order; every row ends up compressed. */
  work: Float64Array;
  k: number;
  n: number;
  /** V, upper triangular with H = VVᵀ (H in processing order), [k, k]: `reversedCholesky(h)`. */
  v: Float64Array;
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
  const { work, k, n, v, block } = pass;
  // acc[j] = Σ V_mj d_m over the rows m of finished blocks; d[i − i1] = w_i − q_i for the block's rows
  const acc = new Float64Array(k * n);
  const d = new Float64Array(block * n);
  const u = new Float64Array(block * block);
  const q = new Float64Array(n);
  for (let i1 = 0; i1 < k; i1 += block) {
    const i2 = Math.min(k, i1 + block);
    const b = i2 - i1;
    invertCorner(v, k, i1, b, u);
    // the block's rows before the pass are kept in d (for d_i), then brought up to date: w_j += Σ_{m ≤ j} U_mj a_m
    d.set(work.subarray(i1 * n, i2 * n));
    for (let m = 0; m < b; m++) {
      const am = (i1 + m) * n;
      for (let j = m; j < b; j++) {
        const a = u[m * b + j];
        if (a === 0) continue;
        for (let c = 0, at = (i1 + j) * n; c < n; c++, at++) work[at] += a * acc[am + c];
      }
    }
    pass.startBlock?.(i1, i2);
    for (let i = i1; i < i2; i++) {
      const w = work.subarray(i * n, (i + 1) * n);
      pass.compressRow(i, w, q);
      const r = i - i1;
      const inv = 1 / u[r * b + r];
      const e = acc.subarray(i * n, (i + 1) * n); // row i's accumulator is spent: reuse it for e_i
      for (let c = 0; c < n; c++) e[c] = (w[c] - q[c]) * inv;
      w.set(q);
      for (let j = r + 1; j < b; j++) {
        const a = u[r * b + j];
        if (a === 0) continue;
        for (let c = 0, at = (i1 + j) * n; c < n; c++, at++) work[at] -= a * e[c];
      }
      const di = d.subarray(r * n, (r + 1) * n);
      for (let c = 0; c < n; c++) di[c] -= q[c];
    }
    trailingUpdate(acc, k, n, v, d, i1, i2);
  }
}

/** u [b, b] = the inverse of V's upper triangular corner V[i0 .. i0+b, i0 .. i0+b] (row i of VU = I, from the bottom). */
function invertCorner(v: Float64Array, k: number, i0: number, b: number, u: Float64Array): void {
  u.fill(0, 0, b * b);
  for (let i = b - 1; i >= 0; i--) {
    const rowV = (i0 + i) * k + i0;
    const inv = 1 / v[rowV + i];
    u[i * b + i] = inv;
    for (let m = i + 1; m < b; m++) {
      const a = v[rowV + m];
      if (a === 0) continue;
      for (let j = m; j < b; j++) u[i * b + j] -= a * u[m * b + j];
    }
    for (let j = i + 1; j < b; j++) u[i * b + j] *= inv;
  }
}

/**
 * acc rows j ≥ i2 += Σ_{i in [i1, i2)} V_ij · d_i: a [k − i2, b] × [b, n] product, k²n/2
 * multiply-adds over the pass. Four rows of d at a time, so each row of `work` is loaded and stored
 * once per four.
 */
function trailingUpdate(
  acc: Float64Array,
  k: number,
  n: number,
  v: Float64Array,
  d: Float64Array,
  i1: number,
  i2: number,
): void {
  for (let j = i2; j < k; j++) {
    const rowJ = j * n;
    let i = i1;
    for (; i + 3 < i2; i += 4) {
      const a0 = v[i * k + j];
      const a1 = v[(i + 1) * k + j];
      const a2 = v[(i + 2) * k + j];
      const a3 = v[(i + 3) * k + j];
      if (a0 === 0 && a1 === 0 && a2 === 0 && a3 === 0) continue;
      const d0 = (i - i1) * n;
      const d1 = d0 + n;
      const d2 = d1 + n;
      const d3 = d2 + n;
      for (let c = 0; c < n; c++)
        acc[rowJ + c] += a0 * d[d0 + c] + a1 * d[d1 + c] + a2 * d[d2 + c] + a3 * d[d3 + c];
    }
    for (; i < i2; i++) {
      const a = v[i * k + j];
      if (a === 0) continue;
      for (let c = 0, at = (i - i1) * n; c < n; c++, at++) acc[rowJ + c] += a * d[at];
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
