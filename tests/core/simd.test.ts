import { describe, expect, it } from 'vitest';
import {
  assignCodesByBins,
  errorSums,
  histogramCounts,
  quantizeColumns,
  quantizeStagedBlock,
  rangeAndZeros,
  stageColumnBlock,
  updateColumnAbsMax,
  updateColumnRanges,
} from '../../src/core/simd/index.ts';
import { KERNELS_WASM_BASE64 } from '../../src/core/simd/kernels-wasm.ts';
import { seededFloats } from '../helpers/models.ts';
// @ts-expect-error: a plain .mjs build script without type declarations
import { assembleKernels } from '../../tools/build-wasm.mjs';

const f = Math.fround;
// column counts that leave every SIMD tail length (mod 4 and mod 16) and one wider than a staging chunk
const SHAPES: [number, number][] = [
  [3, 1],
  [5, 3],
  [7, 4],
  [9, 17],
  [4, 37],
  [130, 600],
  [2, 70_001],
];

describe('WebAssembly SIMD kernels', () => {
  it('the embedded module is the assembled kernels.wat (run `npm run build:wasm` after editing it)', async () => {
    const bytes: Uint8Array = await assembleKernels();
    expect(Buffer.from(bytes).toString('base64')).toBe(KERNELS_WASM_BASE64);
    // Chrome before 114 compiled at most 4 KB synchronously on the main thread (8 MB since)
    expect(bytes.length).toBeLessThan(4096);
  });

  it('column ranges and absolute maxima equal a scalar sweep, NaNs ignored, across staging chunks', () => {
    for (const [rows, cols] of SHAPES) {
      const x = seededFloats(rows * cols, rows * 31 + cols);
      x[Math.floor(x.length / 2)] = NaN;
      const lo = new Float32Array(cols);
      const hi = new Float32Array(cols);
      const m = new Float32Array(cols);
      updateColumnRanges(x, 1, rows, cols, lo, hi); // row 0 left out on purpose
      updateColumnAbsMax(x, 1, rows, cols, m);
      for (let c = 0; c < cols; c++) {
        let a = 0;
        let b = 0;
        let abs = 0;
        for (let r = 1; r < rows; r++) {
          const v = x[r * cols + c];
          if (v < a) a = v;
          if (v > b) b = v;
          if (Math.abs(v) > abs) abs = Math.abs(v);
        }
        expect([lo[c], hi[c], m[c]]).toEqual([a, b, abs]);
      }
    }
  });

  it('quantizeColumns is clamp(trunc(x·inv + offset), 0, max) − bias in float32, for every column', () => {
    for (const [rows, cols] of SHAPES) {
      const x = seededFloats(rows * cols, rows + cols * 7);
      const inv = Float32Array.from(seededFloats(cols, cols), (v) => 1 + 200 * Math.abs(v));
      const offset = Float32Array.from({ length: cols }, (_, c) => (c % 5) + 0.5);
      const max = cols % 2 ? 15 : 255;
      const bias = cols % 2 ? 0 : 128;
      const out = bias ? new Int8Array(rows * cols) : new Uint8Array(rows * cols);
      quantizeColumns(x, out, 0, rows, cols, inv, offset, max, bias);
      for (let r = 0; r < rows; r++)
        for (let c = 0; c < cols; c++) {
          const i = r * cols + c;
          const q = Math.min(max, Math.max(0, Math.trunc(f(f(x[i] * inv[c]) + offset[c])))) - bias;
          if (out[i] !== q) expect([r, c, out[i]]).toEqual([r, c, q]);
        }
    }
  });

  it('a staged block quantizes like quantizeColumns on its rows, and refuses once overwritten', () => {
    const rows = 40;
    const cols = 21;
    const x = seededFloats(rows * cols, 9);
    const block = stageColumnBlock(x, 8, 24, cols);
    const lo = new Float32Array(cols);
    const hi = new Float32Array(cols);
    updateColumnRanges(x, 8, 24, cols, lo, hi);
    expect([Array.from(block.lo), Array.from(block.hi)]).toEqual([Array.from(lo), Array.from(hi)]);
    const stale = stageColumnBlock(x, 8, 24, cols);
    const inv = new Float32Array(cols).fill(7.5);
    const offset = new Float32Array(cols).fill(8.5);
    stale.inv.set(inv);
    stale.offset.set(offset);
    const out = new Uint8Array(rows * cols).fill(99);
    quantizeStagedBlock(stale, out, 15, 0);
    const want = new Uint8Array(rows * cols).fill(99);
    quantizeColumns(x, want, 8, 24, cols, inv, offset, 15, 0);
    expect(Array.from(out)).toEqual(Array.from(want));
    expect(() => quantizeStagedBlock(block, out, 15, 0)).toThrow(/overwritten/);
  });

  it('range and zero count of a flat array: −0 counts as zero, NaN is skipped, any length', () => {
    for (const n of [0, 1, 3, 4, 5, 65_536 * 2 + 7]) {
      const x = seededFloats(n, n + 1);
      if (n > 4) {
        x[1] = 0;
        x[2] = -0;
        x[n - 1] = NaN;
        x[n - 2] = 7;
        x[3] = -9;
      }
      let lo = Infinity;
      let hi = -Infinity;
      let zeros = 0;
      for (const v of x) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        if (v === 0) zeros++;
      }
      expect(rangeAndZeros(x)).toEqual({ lo, hi, zeros });
    }
  });

  it('histogram and bin codes match the float64 binning the codebook table is built for', () => {
    const bins = 64;
    const x = seededFloats(65_536 + 13, 3);
    x[5] = 0;
    x[6] = 0;
    x[7] = NaN;
    x[8] = 0.9; // the top edge, counted in the last bin
    // a range narrower than the data: values outside it (and NaN) are not counted
    const lo = -0.8;
    const hi = 0.9;
    const scale = bins / (hi - lo);
    const binOf = (v: number) => Math.min(bins - 1, Math.floor((v - lo) * scale));
    const expected = new Int32Array(bins);
    for (const v of x) if (v >= lo && v <= hi) expected[binOf(v)]++;
    expect(expected[bins - 1]).toBeGreaterThan(0);
    expect(Array.from(histogramCounts(x, lo, hi, scale, bins))).toEqual(Array.from(expected));

    // codes: three nonzero centroids with midpoints −0.3 and 0.41, zeros on code 1
    const mids = Float64Array.from([-0.3, 0.41, Infinity]);
    const zeroCode = 1;
    const codeOf = (v: number) => {
      if (v === 0) return zeroCode;
      let j = 0;
      while (v > mids[j]) j++;
      return j >= zeroCode ? j + 1 : j;
    };
    const lut = new Uint16Array(bins);
    for (let b = 0; b < bins; b++) {
      const left = lo + b / scale;
      const right = lo + (b + 1) / scale;
      // the bins that a midpoint or zero falls in are left to the exact comparison
      const cut = mids.some((m) => m >= left && m < right) || (left <= 0 && 0 < right);
      lut[b] = cut ? 0xffff : codeOf((left + right) / 2);
    }
    const codes = new Uint8Array(x.length);
    assignCodesByBins(x, codes, lo, hi, scale, lut, mids, zeroCode);
    // values outside [lo, hi] take the exact comparison too; NaN compares below every midpoint
    for (let i = 0; i < x.length; i++)
      if (codes[i] !== codeOf(x[i])) expect([i, x[i], codes[i]]).toEqual([i, x[i], codeOf(x[i])]);
  });

  it('error sums equal a float64 scalar sweep over both arrays, any length', () => {
    for (const n of [0, 3, 8, 65_536 + 5]) {
      const x = seededFloats(n, n + 2);
      const y = Float32Array.from(x, (v, i) => (i % 7 === 0 ? 0 : v + Math.fround(v * v * 0.1)));
      if (n > 4) y[1] = NaN; // a NaN error leaves the maximum alone
      let signal = 0;
      let noise = 0;
      let maxAbs = 0;
      let zeros = 0;
      for (let i = 0; i < n; i++) {
        const e = x[i] - y[i];
        signal += x[i] * x[i];
        noise += e * e;
        if (Math.abs(e) > maxAbs) maxAbs = Math.abs(e);
        if (y[i] === 0) zeros++;
      }
      const got = errorSums(x, y);
      expect(got.maxAbs).toBe(maxAbs);
      expect(got.zeros).toBe(zeros);
      // summed in another order: equal to float64 rounding
      expect(Math.abs(got.signal - signal)).toBeLessThanOrEqual(1e-12 * signal);
      if (n > 4) expect(got.noise).toBeNaN();
      else expect(Math.abs(got.noise - noise)).toBeLessThanOrEqual(1e-12 * noise);
    }
  });
});
