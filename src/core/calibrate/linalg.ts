/**
 * Dense symmetric linear algebra for the second-order methods (GPTQ, SparseGPT) on row-major [k, k]
 * matrices: the float32 WebAssembly SIMD factor the methods use (`reversedCholeskyFloat32`), and the
 * float64 TypeScript one it is checked against (`reversedCholesky`, `upperCholeskyOfInverse`).
 */
import { ModelError } from '../errors.ts';
import { denseArena, gemmSub } from '../simd/dense.ts';

export interface LayerHessian {
  /** H = 2XᵀX / rows with dead inputs set to 1 on the diagonal and dampening added, [k, k]. */
  h: Float64Array;
  /** Inputs that were never non-zero on the calibration data (their weights carry no signal). */
  dead: Uint8Array;
  damp: number;
}

/**
 * The layer-wise objective's Hessian ‖XW − XŴ‖² = tr(ΔWᵀ H ΔW) / 2, made invertible as GPTQ does it:
 * an input that never fired gets H_ii = 1, then λ = dampening · mean(diag H) is added to the diagonal.
 */
export function layerHessian(
  stats: { xtx: Float64Array | null; rows: number; k: number },
  dampening: number,
): LayerHessian {
  const { xtx, rows, k } = stats;
  if (!xtx)
    throw new ModelError(
      'invalid-argument',
      'These calibration statistics have no XᵀX: recapture them with the Hessian included.',
    );
  if (rows <= 0)
    throw new ModelError('invalid-argument', 'The calibration statistics hold no activations (0 rows).');
  if (!(dampening >= 0) || !Number.isFinite(dampening))
    throw new ModelError('invalid-argument', `Dampening must be a non-negative number, got ${dampening}.`);
  const h = new Float64Array(k * k);
  const scale = 2 / rows;
  for (let i = 0; i < h.length; i++) h[i] = xtx[i] * scale;
  const dead = new Uint8Array(k);
  let trace = 0;
  for (let i = 0; i < k; i++) {
    if (h[i * k + i] === 0) {
      dead[i] = 1;
      h[i * k + i] = 1;
    }
    trace += h[i * k + i];
  }
  const damp = (dampening * trace) / k;
  for (let i = 0; i < k; i++) h[i * k + i] += damp;
  return { h, dead, damp };
}

function notPositiveDefinite(): ModelError {
  return new ModelError(
    'invalid-argument',
    'The calibration Hessian is not positive definite: raise the dampening or calibrate on more tokens.',
  );
}

/**
 * U, upper triangular with H⁻¹ = UᵀU (what GPTQ gets from cholesky(cholesky_inverse(cholesky(H)),
 * upper=True)), in two steps instead of three: the "reversed" Cholesky H = VVᵀ with V upper, computed
 * from the bottom-right corner, then U = V⁻¹, since H⁻¹ = V⁻ᵀV⁻¹. Row i of U is the OBS row of the
 * inverse Hessian once inputs 0..i−1 are eliminated, scaled by 1/√[H⁻¹]ᵢᵢ.
 *
 * Both steps run in blocks of `block` rows/columns, so each long row is read once per block rather
 * than once per column: unblocked, k = 3072 streams ~40 GB through memory; blocked by 64, under 1 GB.
 */
export function upperCholeskyOfInverse(h: Float64Array, k: number, block = 64): Float64Array {
  const v = reversedCholesky(h, k, block);
  const u = invertUpper(v, k, block);
  for (const x of u) if (!Number.isFinite(x)) throw notPositiveDefinite();
  return u;
}

/**
 * V upper with H = VVᵀ (the "reversed" Cholesky factor, from the bottom-right corner), columns in
 * blocks [j0, j1) from the last. V⁻¹ = U is the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), so V is
 * all the OBS pass needs (see runObsPass), without the k³/3 of inverting it.
 */
export function reversedCholesky(h: Float64Array, k: number, block = 64): Float64Array {
  const v = reversedCholeskyBlocked(h, k, block);
  for (const x of v) if (!Number.isFinite(x)) throw notPositiveDefinite();
  return v;
}

function reversedCholeskyBlocked(h: Float64Array, k: number, block: number): Float64Array {
  const v = new Float64Array(k * k);
  for (let j1 = k; j1 > 0; j1 -= block) {
    const j0 = Math.max(0, j1 - block);
    // the bulk: v[i][j] = h[i][j] − Σ_{m ≥ j1} v[i][m]·v[j][m] for every i ≤ j in the block's columns,
    // four columns j at a time, so each v[i][m] loaded serves four independent sums (this is ~k³/3 of
    // the k³/3 + k²n/2 multiply-adds of a GPTQ layer)
    for (let i = 0; i < j1; i++) {
      const rowI = i * k;
      let j = Math.max(j0, i);
      for (; j + 3 < j1; j += 4) {
        const r0 = j * k;
        const r1 = r0 + k;
        const r2 = r1 + k;
        const r3 = r2 + k;
        let s0 = h[rowI + j];
        let s1 = h[rowI + j + 1];
        let s2 = h[rowI + j + 2];
        let s3 = h[rowI + j + 3];
        for (let m = j1; m < k; m++) {
          const a = v[rowI + m];
          s0 -= a * v[r0 + m];
          s1 -= a * v[r1 + m];
          s2 -= a * v[r2 + m];
          s3 -= a * v[r3 + m];
        }
        v[rowI + j] = s0;
        v[rowI + j + 1] = s1;
        v[rowI + j + 2] = s2;
        v[rowI + j + 3] = s3;
      }
      for (; j < j1; j++) {
        const rowJ = j * k;
        let s = h[rowI + j];
        for (let m = j1; m < k; m++) s -= v[rowI + m] * v[rowJ + m];
        v[rowI + j] = s;
      }
    }
    // inside the block, right to left: the terms with j < m < j1, then the division by the pivot
    for (let j = j1 - 1; j >= j0; j--) {
      const rowJ = j * k;
      let d = v[rowJ + j];
      for (let m = j + 1; m < j1; m++) d -= v[rowJ + m] * v[rowJ + m];
      if (!(d > 0)) throw notPositiveDefinite();
      const vjj = Math.sqrt(d);
      v[rowJ + j] = vjj;
      for (let i = 0; i < j; i++) {
        const rowI = i * k;
        let s = v[rowI + j];
        for (let m = j + 1; m < j1; m++) s -= v[rowI + m] * v[rowJ + m];
        v[rowI + j] = s / vjj;
      }
    }
  }
  return v;
}

/**
 * out [b, b] = (T⁻¹)ᵀ for the upper triangular corner T = v[i0 .. i0+b, i0 .. i0+b] of a row-major
 * [k, k] matrix, in float64: column j of T⁻¹ solved from the bottom, stored as row j of out.
 */
function invertCornerTransposed(v: Float32Array, k: number, i0: number, b: number, out: Float64Array): void {
  out.fill(0, 0, b * b);
  for (let j = 0; j < b; j++) {
    // T x = e_j: x_i = (δ_ij − Σ_{m>i} T_im x_m) / T_ii, for i from j down (x_i = 0 for i > j)
    for (let i = j; i >= 0; i--) {
      const row = (i0 + i) * k + i0;
      let s = i === j ? 1 : 0;
      for (let m = i + 1; m <= j; m++) s -= v[row + m] * out[j * b + m];
      out[j * b + i] = s / v[row + i];
    }
  }
}

/**
 * U = V⁻¹ for upper triangular V: row i of VU = I gives U_i = (e_i − Σ_{m>i} V_im U_m) / V_ii. Rows
 * go in blocks [i0, i1) from the last; the rows m ≥ i1 are applied to the whole block while each is
 * in cache, then the block is finished row by row from its bottom.
 */
function invertUpper(v: Float64Array, k: number, block: number): Float64Array {
  const u = new Float64Array(k * k);
  for (let i1 = k; i1 > 0; i1 -= block) {
    const i0 = Math.max(0, i1 - block);
    for (let m = i1; m < k; m++) {
      const rowM = m * k;
      for (let i = i0; i < i1; i++) {
        const a = v[i * k + m];
        if (a === 0) continue;
        for (let j = m, at = i * k + m; j < k; j++, at++) u[at] -= a * u[rowM + j];
      }
    }
    for (let i = i1 - 1; i >= i0; i--) {
      const rowI = i * k;
      for (let m = i + 1; m < i1; m++) {
        const a = v[rowI + m];
        if (a === 0) continue;
        for (let j = m, at = m * k + m; j < k; j++, at++) u[rowI + j] -= a * u[at];
      }
      const inv = 1 / v[rowI + i];
      for (let j = i + 1; j < k; j++) u[rowI + j] *= inv;
      u[rowI + i] = inv;
    }
  }
  return u;
}

/**
 * `reversedCholesky` in float32 with the bulk on the SIMD product: V upper with H = VVᵀ, as float32
 * (the precision the reference GPTQ runs in; 2× float64's SIMD throughput). Column blocks of `block`
 * from the last: the block's columns of rows 0..j1 get −Σ_{m ≥ j1} v[i][m]·v[j][m] as one product with
 * the block's rows packed transposed (k³/3 multiply-adds over the factorisation: 9.7 G at k = 3072);
 * inside the block, sub-blocks of `sub` columns the same way; in a sub-block, its own rows column by
 * column in float64 arithmetic on the stored values, and the rows above it as one product with the
 * inverse of its corner. Each pivot v[j][j]² = h[j][j] − Σ_{m > j} v[j][m]² is
 * summed in float64 from H itself, so cancellation in the diagonal (where a nearly dependent input
 * shows) is not float32's. With `order`, the factor is of H with rows and columns in that order
 * (the factor of H' with H'[i][j] = h[order[i]][order[j]]), read straight from `h`.
 */
export function reversedCholeskyFloat32(
  h: Float64Array,
  k: number,
  order: Int32Array | null = null,
  block = 64,
  sub = 16,
): Float32Array {
  // arena: V [k, k] at 0 (H, then the factor in place), then a packed panel [k, block]
  const panelAt = k * k;
  // the panel also stages a sub-block's product: [s0, sub] plus T⁻ᵀ [sub, sub]
  const mem = denseArena(panelAt + k * Math.max(block, sub) + sub * sub);
  // plain loops: TypedArray.set between element types takes V8's slow generic path
  if (order)
    for (let i = 0; i < k; i++)
      for (let j = 0, from = order[i] * k, at = i * k; j < k; j++, at++) mem[at] = h[from + order[j]];
  else for (let i = 0; i < k * k; i++) mem[i] = h[i];
  const diagonal = Float64Array.from({ length: k }, (_, i) => {
    const o = order ? order[i] : i;
    return h[o * k + o];
  });
  /** Rows r0..r0+rows of V, columns c0..c0+cols, transposed into the panel: P[t][r] = V[r0 + r][c0 + t]. */
  const pack = (r0: number, rows: number, c0: number, cols: number) => {
    for (let r = 0; r < rows; r++)
      for (let t = 0, from = (r0 + r) * k + c0, to = panelAt + r; t < cols; t++, from++, to += rows)
        mem[to] = mem[from];
  };
  const pivots = new Float64Array(sub);
  const tInv = new Float64Array(sub * sub);
  for (let j1 = k; j1 > 0; j1 -= block) {
    const j0 = Math.max(0, j1 - block);
    if (j1 < k) {
      pack(j0, j1 - j0, j1, k - j1);
      gemmSub(j0, k, j1, k, panelAt, j1 - j0, j1, j1 - j0, k - j1);
    }
    for (let s1 = j1; s1 > j0; s1 -= sub) {
      const s0 = Math.max(j0, s1 - sub);
      if (s1 < j1) {
        pack(s0, s1 - s0, s1, j1 - s1);
        gemmSub(s0, k, s1, k, panelAt, s1 - s0, s1, s1 - s0, j1 - s1);
      }
      // the sub-block's own rows, column by column from the right: pivots (float64 sums) and the
      // entries above them within the sub-block
      for (let j = s1 - 1; j >= s0; j--) {
        const rowJ = j * k;
        let d = diagonal[j];
        for (let m = j + 1; m < k; m++) d -= mem[rowJ + m] * mem[rowJ + m];
        if (!(d > 0)) throw notPositiveDefinite();
        const vjj = Math.sqrt(d);
        mem[rowJ + j] = vjj;
        pivots[j - s0] = vjj;
        for (let i = s0; i < j; i++) {
          const rowI = i * k;
          let s = mem[rowI + j];
          for (let m = j + 1; m < s1; m++) s -= mem[rowI + m] * mem[rowJ + m];
          mem[rowI + j] = s / vjj;
        }
      }
      // every row above: its entries y in the sub-block solve x = T·y for the sub-block's corner T
      // (upper triangular, from the pivot rows), so y = x · T⁻ᵀ: one product with T⁻ᵀ inverted in
      // float64, staged through the panel and copied back
      const sw = s1 - s0;
      if (s0 > 0) {
        invertCornerTransposed(mem, k, s0, sw, tInv);
        const mAt = panelAt + s0 * sw;
        for (let i = 0; i < sw * sw; i++) mem[mAt + i] = -tInv[i];
        mem.fill(0, panelAt, panelAt + s0 * sw);
        gemmSub(panelAt, sw, s0, k, mAt, sw, s0, sw, sw);
        for (let i = 0; i < s0; i++)
          for (let j = 0, at = i * k + s0, from = panelAt + i * sw; j < sw; j++) mem[at + j] = mem[from + j];
      }
    }
  }
  // the upper triangle out (the lower one of a new array is zero), checked on the way: x − x is NaN for ±∞ and NaN
  const v = new Float32Array(k * k);
  let finite = true;
  for (let i = 0; i < k; i++)
    for (let at = i * k + i, end = (i + 1) * k; at < end; at++) {
      const x = mem[at];
      v[at] = x;
      if (x - x !== 0) finite = false;
    }
  if (!finite) throw notPositiveDefinite();
  return v;
}
