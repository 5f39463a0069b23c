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

import { denseArena, gemmSub } from '../simd/dense.ts';

export interface ObsPass {
  /** Working weights [k, n], input-major, in processing order; ends holding the compressed weights. */
  work: Float32Array;
  k: number;
  n: number;
  /** V, upper triangular with H = VVᵀ (H in processing order), [k, k]: `reversedCholeskyFloat32(h)`. */
  v: Float32Array;
  /** Rows per lazy block; callers keep it a multiple of `group`. */
  block: number;
  /**
   * Rows decided on together (default 1): when row i, a multiple of `group`, comes up, compressRow
   * may read rows [i, i + group) of `live`, and they carry every update from the rows before i.
   */
  group?: number;
  /**
   * Called at the start of each block, before any of its rows is compressed, with its rows [i1, i2)
   * already carrying every update from earlier blocks. `live` is the pass's own copy of the working
   * weights [k, n] (rows from i1 on are current only inside the block); it is valid during the call.
   */
  startBlock?(i1: number, i2: number, live: Float32Array): void;
  /**
   * Writes the compressed version of row i (current values `w`, length n) into `q`; `live` as in
   * startBlock (the block's later rows carry the updates of its earlier ones).
   */
  compressRow(i: number, w: Float32Array, q: Float32Array, live: Float32Array): void;
}

/**
 * Runs the pass; `work` ends holding the compressed weights. The pass keeps its matrices in the SIMD
 * product's arena (src/core/simd/dense.ts) in float32, as the reference implementations run it: the
 * working weights W [k, n], the accumulators as −a [k, n], the block's d [b, n], Uᵀ of its corner
 * [b, b] and the transposed rows of V it multiplies [k − i2, b]. The callbacks must not use the arena.
 */
/** Rows per sub-block of a lazy block (rounded to whole groups): rank-one updates stay inside one. */
const SUB_BLOCK_ROWS = 16;

export function runObsPass(pass: ObsPass): void {
  const { work, k, n, v, block } = pass;
  const group = pass.group ?? 1;
  const sub = group * Math.max(1, Math.round(SUB_BLOCK_ROWS / group));
  const b0 = Math.min(block, k);
  const at = { w: 0, acc: k * n, d: 2 * k * n, ut: 2 * k * n + b0 * n };
  const vtAt = at.ut + b0 * b0;
  const mem = denseArena(vtAt + k * b0);
  mem.set(work.subarray(0, k * n), at.w);
  mem.fill(0, at.acc, at.acc + k * n);
  const live = mem.subarray(at.w, at.w + k * n);
  const u = new Float64Array(b0 * b0);
  const q = new Float32Array(n);
  for (let i1 = 0; i1 < k; i1 += block) {
    const i2 = Math.min(k, i1 + block);
    const b = i2 - i1;
    invertCorner(v, k, i1, b, u);
    // Uᵀ [b, b], lower triangular: row j holds U_mj for m ≤ j
    for (let j = 0; j < b; j++) for (let m = 0; m < b; m++) mem[at.ut + j * b + m] = u[m * b + j];
    // the block's rows before the pass are kept in d (for d_i), then brought up to date:
    // w_j += Σ_{m ≤ j} U_mj a_m, that is W_block −= Uᵀ · (−A_block)
    mem.copyWithin(at.d, at.w + i1 * n, at.w + i2 * n);
    // (Uᵀ is lower triangular: rows in sub-blocks, each over the columns up to its last row)
    if (i1 > 0)
      for (let r0 = 0; r0 < b; r0 += sub) {
        const rows = Math.min(sub, b - r0);
        gemmSub(at.w + (i1 + r0) * n, n, at.ut + r0 * b, b, at.acc + i1 * n, n, rows, n, r0 + rows);
      }
    pass.startBlock?.(i1, i2, live);
    // rows in sub-blocks of whole groups: each row's update reaches the rest of its sub-block at once
    // (compressRow may read ahead within its group), the block's later rows once per sub-block
    for (let s1 = i1; s1 < i2; s1 += sub) {
      const s2 = Math.min(i2, s1 + sub);
      for (let i = s1; i < s2; i++) {
        const w = live.subarray(i * n, (i + 1) * n);
        pass.compressRow(i, w, q, live);
        const r = i - i1;
        const inv = 1 / u[r * b + r];
        // row i's accumulator is spent: reuse it for e_i
        const eAt = at.acc + i * n;
        const dAt = at.d + r * n;
        for (let c = 0; c < n; c++) {
          mem[eAt + c] = (w[c] - q[c]) * inv;
          mem[dAt + c] -= q[c];
        }
        w.set(q);
        // w_j −= U_rj e_i for the sub-block's later rows (column r of Uᵀ below the diagonal, stride b)
        gemmSub(at.w + (i + 1) * n, n, at.ut + (r + 1) * b + r, b, eAt, n, s2 - i - 1, n, 1);
      }
      // w_j −= Σ_{r in the sub-block} U_rj e_r for the block's rows after it
      gemmSub(
        at.w + s2 * n,
        n,
        at.ut + (s2 - i1) * b + (s1 - i1),
        b,
        at.acc + s1 * n,
        n,
        i2 - s2,
        n,
        s2 - s1,
      );
    }
    if (i2 < k) {
      // −a_j −= Σ_{i in [i1, i2)} V_ij d_i for the rows j ≥ i2: [k − i2, b] × [b, n], k²n/2 over the pass
      for (let t = 0; t < b; t++)
        for (let j = 0, from = (i1 + t) * k + i2, to = vtAt + t; j < k - i2; j++, from++, to += b)
          mem[to] = v[from];
      gemmSub(at.acc + i2 * n, n, vtAt, b, at.d, n, k - i2, n, b);
    }
  }
  work.set(live);
}

/** u [b, b] = the inverse of V's upper triangular corner V[i0 .. i0+b, i0 .. i0+b] (row i of VU = I, from the bottom), in float64. */
function invertCorner(v: Float32Array, k: number, i0: number, b: number, u: Float64Array): void {
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

/** The weight as [K, N] (input-major), a copy, whichever axis its output channels run along. */
export function inputMajor(
  values: Float32Array,
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
): Float32Array {
  if (channelAxis === 1) return Float32Array.from(values);
  // [N, K] → [K, N]
  const out = new Float32Array(rows * cols);
  for (let c = 0; c < rows; c++) for (let k = 0; k < cols; k++) out[k * rows + c] = values[c * cols + k];
  return out;
}

/** Back from [K, N] input-major to the weight's own layout. */
export function ownLayout(work: Float32Array, rows: number, cols: number, channelAxis: 0 | 1): Float32Array {
  if (channelAxis === 1) return work;
  const out = new Float32Array(rows * cols);
  for (let c = 0; c < rows; c++) for (let k = 0; k < cols; k++) out[c * cols + k] = work[k * rows + c];
  return out;
}
