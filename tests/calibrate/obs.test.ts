/**
 * The OBS pass GPTQ and SparseGPT share, on H's reversed Cholesky factor V (no inverse), against the
 * textbook pass written here in float64: the whole U = V⁻¹ (H⁻¹ = UᵀU), one row at a time, every later
 * row updated at once (what the kernels computed before the pass learnt to do without U). The pass
 * and its factor run in float32 on the SIMD product; the float64 factor is the reference.
 */
import { describe, expect, it } from 'vitest';
import {
  reversedCholesky,
  reversedCholeskyFloat32,
  upperCholeskyOfInverse,
} from '../../src/core/calibrate/linalg.ts';
import { runObsPass } from '../../src/core/calibrate/obs.ts';
import { seededFloats } from '../helpers/models.ts';

/** A dense SPD matrix: XᵀX of correlated rows plus a small ridge. */
function spd(k: number, seed: number): Float64Array {
  const rows = 3 * k;
  const x = seededFloats(rows * k, seed);
  const h = new Float64Array(k * k);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < k; i++) {
      const xi = x[r * k + i] + 0.5 * x[r * k + ((i + 1) % k)];
      for (let j = 0; j < k; j++) h[i * k + j] += xi * (x[r * k + j] + 0.5 * x[r * k + ((j + 1) % k)]);
    }
  for (let i = 0; i < k; i++) h[i * k + i] += 0.01 * k;
  return h;
}

/**
 * Rounds each row to a grid whose step is fitted, at the start of every group of `group` rows, from
 * the group's current values (as GPTQ's int4 blocks are): so the pass must hand over rows ahead in
 * the group exactly as the textbook pass has them.
 */
function groupRounding(k: number, n: number, group: number, work: () => ArrayLike<number>) {
  const step = new Float64Array(n);
  return (i: number, w: ArrayLike<number>, q: { [c: number]: number }, live?: ArrayLike<number>) => {
    if (i % group === 0) {
      const all = live ?? work();
      step.fill(0);
      for (let r = i; r < Math.min(k, i + group); r++)
        for (let c = 0; c < n; c++) step[c] = Math.max(step[c], Math.abs(all[r * n + c]) / 7);
    }
    for (let c = 0; c < n; c++) q[c] = step[c] ? Math.round(w[c] / step[c]) * step[c] : 0;
  };
}

function textbookPass(
  work: Float64Array,
  k: number,
  n: number,
  u: Float64Array,
  compressRow: (i: number, w: Float64Array, q: Float64Array) => void,
): void {
  const q = new Float64Array(n);
  for (let i = 0; i < k; i++) {
    const w = work.subarray(i * n, (i + 1) * n);
    compressRow(i, w, q);
    const e = Float64Array.from(w, (x, c) => (x - q[c]) / u[i * k + i]);
    w.set(q);
    for (let j = i + 1; j < k; j++) for (let c = 0; c < n; c++) work[j * n + c] -= u[i * k + j] * e[c];
  }
}

describe('OBS pass on the reversed Cholesky factor', () => {
  it('V is upper triangular with VVᵀ = H, for widths that are not a multiple of the unrolled four', () => {
    for (const k of [1, 6, 37]) {
      const h = spd(k, k);
      for (const block of [1, 5, 64]) {
        const v = reversedCholesky(h, k, block);
        let worst = 0;
        for (let i = 0; i < k; i++)
          for (let j = 0; j < k; j++) {
            if (i > j) expect(v[i * k + j]).toBe(0);
            let s = 0;
            for (let m = 0; m < k; m++) s += v[i * k + m] * v[j * k + m];
            worst = Math.max(worst, Math.abs(s - h[i * k + j]));
          }
        expect(worst).toBeLessThan(1e-10 * Math.max(...h));
      }
    }
  });

  it('the float32 factor on the SIMD product equals the float64 one, across blocks and sub-blocks', () => {
    for (const k of [1, 6, 37, 150]) {
      const h = spd(k, k + 1);
      const reference = reversedCholesky(h, k);
      const scale = Math.max(...reference.map(Math.abs));
      for (const [block, sub] of [
        [64, 8],
        [5, 2],
        [16, 16],
        [1, 1],
      ]) {
        const v = reversedCholeskyFloat32(h, k, null, block, sub);
        let worst = 0;
        for (let i = 0; i < k * k; i++) {
          if (Math.floor(i / k) > i % k) expect(v[i]).toBe(0);
          worst = Math.max(worst, Math.abs(v[i] - reference[i]));
        }
        expect(worst).toBeLessThan(2e-6 * scale);
      }
    }
  });

  it('the float32 factor with an order is the factor of H with rows and columns in that order', () => {
    const k = 70;
    const h = spd(k, 8);
    const order = Int32Array.from({ length: k }, (_, i) => (i * 37) % k);
    const permuted = new Float64Array(k * k);
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) permuted[i * k + j] = h[order[i] * k + order[j]];
    const reference = reversedCholesky(permuted, k);
    const v = reversedCholeskyFloat32(h, k, order);
    let worst = 0;
    for (let i = 0; i < k * k; i++) worst = Math.max(worst, Math.abs(v[i] - reference[i]));
    expect(worst).toBeLessThan(2e-6 * Math.max(...reference.map(Math.abs)));
  });

  it('the float32 factor rejects a matrix that is not positive definite', () => {
    const h = spd(20, 4);
    h[7 * 20 + 7] = -1;
    expect(() => reversedCholeskyFloat32(h, 20)).toThrow(/not positive definite/);
  });

  it('equals the textbook pass on U = V⁻¹, whatever the lazy block, rows ahead in a group included', () => {
    const k = 45;
    const n = 7;
    const h = spd(k, 3);
    const w0 = seededFloats(k * n, 9);
    const reference = Float64Array.from(w0);
    textbookPass(
      reference,
      k,
      n,
      upperCholeskyOfInverse(h, k),
      groupRounding(k, n, 5, () => reference),
    );
    const v = reversedCholeskyFloat32(h, k);
    for (const block of [5, 10, 15, 45, 128]) {
      const work = Float32Array.from(w0);
      const starts: number[] = [];
      runObsPass({
        work,
        k,
        n,
        v,
        block,
        group: 5,
        startBlock: (i1) => starts.push(i1),
        compressRow: groupRounding(k, n, 5, () => work),
      });
      expect(starts).toEqual(Array.from({ length: Math.ceil(k / block) }, (_, b) => b * block));
      let worst = 0;
      for (let i = 0; i < work.length; i++) worst = Math.max(worst, Math.abs(work[i] - reference[i]));
      // float32 against float64: the same grid points, up to float32 rounding of the values
      expect(worst).toBeLessThan(1e-5);
    }
  });

  it('on a mid-size layer (k = 256), float32 loses nothing measurable against the float64 textbook pass', () => {
    const k = 256;
    const n = 48;
    const h = spd(k, 5);
    const w0 = seededFloats(k * n, 17);
    const reference = Float64Array.from(w0);
    textbookPass(
      reference,
      k,
      n,
      upperCholeskyOfInverse(h, k),
      groupRounding(k, n, 32, () => reference),
    );
    const work = Float32Array.from(w0);
    runObsPass({
      work,
      k,
      n,
      v: reversedCholeskyFloat32(h, k),
      block: 128,
      group: 32,
      compressRow: groupRounding(k, n, 32, () => work),
    });
    // the layer objective tr(ΔWᵀ H ΔW) of each result, and how many weights land on another grid point
    const objective = (q: ArrayLike<number>) => {
      let total = 0;
      for (let c = 0; c < n; c++)
        for (let i = 0; i < k; i++) {
          const di = q[i * n + c] - w0[i * n + c];
          for (let j = 0; j < k; j++) total += di * h[i * k + j] * (q[j * n + c] - w0[j * n + c]);
        }
      return total;
    };
    let moved = 0;
    for (let i = 0; i < k * n; i++) if (Math.abs(work[i] - reference[i]) > 1e-4) moved++;
    expect(moved).toBeLessThan(0.01 * k * n);
    expect(Math.abs(objective(work) / objective(reference) - 1)).toBeLessThan(0.01);
  });
});
