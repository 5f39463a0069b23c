/**
 * The calibration kernels (src/core/simd/dense.wat) against plain loops: the dense float32 product
 * against a float64 triple loop, on blocks of bigger matrices (row strides wider than the block) and
 * every tile shape the kernel has (two rows by 16, 4 or 1 columns, and an odd last row); the
 * activation statistics against a scalar sweep.
 */
import { describe, expect, it } from 'vitest';
import { accumulateActivationStats, denseArena, gemmSub } from '../../src/core/simd/dense.ts';
import { DENSE_WASM_BASE64 } from '../../src/core/simd/dense-wasm.ts';
import { seededFloats } from '../helpers/models.ts';
// @ts-expect-error: a plain .mjs build script without type declarations
import { assembleKernels } from '../../tools/build-wasm.mjs';

describe('dense float32 product', () => {
  it('the embedded module is the assembled dense.wat (run `npm run build:wasm` after editing it)', async () => {
    const bytes: Uint8Array = await assembleKernels('src/core/simd/dense.wat');
    expect(Buffer.from(bytes).toString('base64')).toBe(DENSE_WASM_BASE64);
  });

  // [m, n, p]: rows (odd and even), columns leaving every tail (16s, 4s, singles), sums from 1 up
  const SHAPES: [number, number, number][] = [
    [1, 1, 1],
    [2, 16, 1],
    [3, 5, 2],
    [7, 37, 9],
    [8, 64, 33],
    [33, 23, 128],
    [64, 100, 200],
  ];
  for (const [m, n, p] of SHAPES)
    it(`C[${m}, ${n}] −= A[${m}, ${p}] · B[${p}, ${n}] equals a float64 triple loop, on blocks of wider rows`, () => {
      // each matrix sits in a wider one (stride = width + 3), after a few floats of other data
      const ldc = n + 3;
      const lda = p + 3;
      const ldb = n + 5;
      const c = 7;
      const a = c + m * ldc + 1;
      const b = a + m * lda + 2;
      const end = b + p * ldb;
      const init = seededFloats(end + 8, m * 1000 + n * 10 + p);
      const mem = denseArena(end + 8);
      mem.set(init);
      gemmSub(c, ldc, a, lda, b, ldb, m, n, p);
      let worst = 0;
      for (let i = 0; i < end + 8; i++) {
        const row = Math.floor((i - c) / ldc);
        const col = (i - c) % ldc;
        const inC = i >= c && row < m && col < n;
        if (!inC) {
          // nothing outside C's block is written
          expect(mem[i]).toBe(init[i]);
          continue;
        }
        let want = init[i];
        for (let t = 0; t < p; t++) want -= init[a + row * lda + t] * init[b + t * ldb + col];
        worst = Math.max(worst, Math.abs(mem[i] - want));
      }
      // float32 sums of p products of numbers below 1
      expect(worst).toBeLessThan(4e-7 * (p + 1));
    });

  it('with stride 1 and p = 1, A is a column: a rank-one update', () => {
    const m = 5;
    const n = 9;
    const mem = denseArena(128);
    const col = Float32Array.from([1, 2, 3, 4, 5]);
    const row = seededFloats(n, 3);
    mem.fill(0, 0, 128);
    mem.set(col, 0);
    mem.set(row, 8);
    gemmSub(20, n, 0, 1, 8, n, m, n, 1);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) expect(mem[20 + i * n + j]).toBe(Math.fround(-col[i] * row[j]));
  });

  // [rows, k]: feature tails of 0–3 after the groups of four, and one more than a staging chunk
  for (const [rows, k] of [
    [1, 1],
    [5, 3],
    [7, 4],
    [9, 37],
    [64, 192],
    [350_000, 3],
  ] as const)
    it(`activation statistics of [${rows}, ${k}] equal a scalar sweep, added to what was there`, () => {
      const x = seededFloats(rows * k, rows + k, 3);
      x[0] = -0;
      const sumSquares = Float64Array.from({ length: k }, (_, j) => j * 0.25);
      const absMax = Float32Array.from({ length: k }, (_, j) => (j % 3 === 0 ? 2.5 : 0));
      const range = Float32Array.of(-2.75, 0.5);
      const histogram = new Uint32Array(1 << 13).fill(1);
      const want = {
        sumSquares: Float64Array.from(sumSquares),
        absMax: Float32Array.from(absMax),
        lo: -2.75,
        hi: 0.5,
        histogram: Uint32Array.from(histogram),
      };
      const bits = new Uint32Array(x.buffer);
      for (let r = 0; r < rows; r++)
        for (let j = 0; j < k; j++) {
          const v = x[r * k + j];
          want.sumSquares[j] += v * v;
          want.absMax[j] = Math.max(want.absMax[j], Math.abs(v));
          want.lo = Math.min(want.lo, v);
          want.hi = Math.max(want.hi, v);
          want.histogram[bits[r * k + j] >>> 19]++;
        }
      accumulateActivationStats(x, rows, k, sumSquares, absMax, range, histogram);
      expect(sumSquares).toEqual(want.sumSquares);
      expect(absMax).toEqual(want.absMax);
      expect([range[0], range[1]]).toEqual([want.lo, want.hi]);
      expect(histogram).toEqual(want.histogram);
    });

  it('a NaN or infinite activation shows in the sums of squares; without a histogram the rest still adds up', () => {
    const x = Float32Array.of(1, 2, NaN, 4, Infinity, 6);
    const sumSquares = new Float64Array(3);
    const absMax = new Float32Array(3);
    const range = Float32Array.of(Infinity, -Infinity);
    accumulateActivationStats(x, 2, 3, sumSquares, absMax, range, undefined);
    expect(sumSquares[0]).toBe(17);
    expect(sumSquares[1]).toBe(Infinity);
    expect(sumSquares[2]).toBeNaN();
    expect(absMax[0]).toBe(4);
  });
});
