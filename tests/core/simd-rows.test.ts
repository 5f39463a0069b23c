/**
 * The row path of int8 (one scale per row, or per tensor) and int4 (blocks along the rows of a [C, K]
 * table) in WebAssembly SIMD (src/core/simd/rows.wat) against the scalar loops it replaced, written
 * out here as the reference: codes, scales, zero points and decoded values byte for byte, error sums
 * against the scalar addCodeErrors. Shapes whose rows are not a multiple of 4 (the SIMD tails) and blocks with a
 * remainder, all-zero rows, exact .5 ties of both signs, NaN, tiny rows whose 1/scale overflows
 * float32 to ∞, and tensors staged in more than one chunk.
 */
import { describe, expect, it } from 'vitest';
import { dequantizeInt8, quantizeInt8 } from '../../src/methods/int8/kernel.ts';
import { dequantizeInt4Blockwise, quantizeInt4Blockwise } from '../../src/methods/int4/kernel.ts';
import {
  addCodeErrors,
  noErrorSums,
  quantizeRowBlocks,
  updateRowBlockRanges,
  type ErrorSums,
} from '../../src/core/simd/index.ts';
import { ROWS_WASM_BASE64 } from '../../src/core/simd/rows-wasm.ts';
import { seededFloats } from '../helpers/models.ts';
// @ts-expect-error: a plain .mjs build script without type declarations
import { assembleKernels } from '../../tools/build-wasm.mjs';

/** The scalar int8 quantizer for channels on rows (axis 0) or one scale (null), as it was before rows.wat. */
function int8Reference(x: Float32Array, rows: number, cols: number, axis: 0 | null, symmetric: boolean) {
  const channels = axis === 0 ? rows : 1;
  const run = axis === 0 ? cols : rows * cols;
  const scales = new Float32Array(channels);
  const inv = new Float32Array(channels);
  const zp = new Float32Array(channels);
  const zeroPoints = symmetric ? null : new Uint8Array(channels);
  const q = symmetric ? new Int8Array(rows * cols) : new Uint8Array(rows * cols);
  const sums = noErrorSums();
  for (let ch = 0; ch < channels; ch++) {
    let lo = 0;
    let hi = 0;
    for (let i = ch * run; i < (ch + 1) * run; i++) {
      if (x[i] < lo) lo = x[i];
      else if (x[i] > hi) hi = x[i];
    }
    scales[ch] = symmetric ? Math.max(-lo, hi) / 127 : (hi - lo) / 255;
    inv[ch] = scales[ch] > 0 ? 1 / scales[ch] : 0;
    if (zeroPoints) {
      zeroPoints[ch] = scales[ch] > 0 ? Math.min(255, Math.max(0, Math.round(-lo * inv[ch]))) : 0;
      zp[ch] = zeroPoints[ch];
    }
    for (let i = ch * run; i < (ch + 1) * run; i++) {
      const v = Math.round(x[i] * inv[ch]) + zp[ch];
      q[i] = symmetric ? v : v > 255 ? 255 : v < 0 ? 0 : v;
    }
    addCodeErrors(x, q, ch * run, (ch + 1) * run, scales[ch], zp[ch], sums);
  }
  return { q, scales, zeroPoints, sums };
}

/** The scalar int4 quantizer for blocks along the rows, as it was before rows.wat. */
function int4Reference(x: Float32Array, rows: number, cols: number, blockSize: number, symmetric: boolean) {
  const blocks = Math.ceil(cols / blockSize);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * blocks);
  const zeroPoints = symmetric ? null : new Uint8Array(rows * blocks);
  const sums = noErrorSums();
  for (let r = 0; r < rows; r++)
    for (let b = 0; b < blocks; b++) {
      const at = r * blocks + b;
      const start = r * cols + b * blockSize;
      const end = r * cols + Math.min(cols, (b + 1) * blockSize);
      let lo = 0;
      let hi = 0;
      for (let i = start; i < end; i++) {
        if (x[i] < lo) lo = x[i];
        else if (x[i] > hi) hi = x[i];
      }
      let z = 8;
      if (!zeroPoints) scales[at] = (-lo > hi ? lo : hi) / -8;
      else {
        scales[at] = (hi - lo) / 15;
        z = scales[at] !== 0 ? Math.min(15, Math.max(0, Math.round(-lo / scales[at]))) : 8;
        zeroPoints[at] = z;
      }
      const inv = scales[at] !== 0 ? 1 / scales[at] : 0;
      for (let i = start; i < end; i++) {
        const q = Math.round(x[i] * inv) + z;
        codes[i] = q > 15 ? 15 : q < 0 ? 0 : q;
      }
      addCodeErrors(x, codes, start, end, scales[at], z, sums);
    }
  return { codes, scales, zeroPoints, sums };
}

/** The scalar decode of codes in runs of `run` along the flat array, run j with scale[j] and zero point z[j]. */
function decodeReference(
  codes: Uint8Array | Int8Array,
  run: number,
  perRow: number,
  cols: number,
  scales: Float32Array,
  zeroPoints: Uint8Array | null,
  implicitZero: number,
): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) {
    const j = Math.floor(i / cols) * perRow + Math.floor((i % cols) / run);
    out[i] = (codes[i] - (zeroPoints ? zeroPoints[j] : implicitZero)) * scales[j];
  }
  return out;
}

const bytes = (a: ArrayBufferView | null) => a && Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Byte-for-byte equality, as the first differing byte (−1: none), so a failure says where. */
function firstDifference(a: ArrayBufferView | null, b: ArrayBufferView | null): number {
  const [x, y] = [bytes(a), bytes(b)];
  if (!x || !y) return x === y ? -1 : 0;
  if (x.equals(y)) return -1;
  let i = 0;
  while (i < x.length && x[i] === y[i]) i++;
  return i;
}

/** Same max and zeros (NaN as NaN), Σ x² and Σ e² to float64 rounding: only the order of the sums differs. */
function expectSums(got: ErrorSums, want: ErrorSums): void {
  expect(got.zeros).toBe(want.zeros);
  expect(got.maxAbs).toBe(want.maxAbs);
  for (const key of ['signal', 'noise'] as const) {
    if (Number.isNaN(want[key])) expect(got[key]).toBeNaN();
    else expect(Math.abs(got[key] - want[key])).toBeLessThanOrEqual(1e-12 * want[key]);
  }
}

type Kind = 'seeded' | 'zero rows' | 'ties' | 'nan' | 'tiny';

/**
 * Test matrices: seeded values in [−1, 1), or with every other row zero, NaN, ~1e-38, or (ties) halves
 * of integers in [−top, top] with ±top at every fourth column, so every block's symmetric scale is
 * top / 127 (int8, top 127) or top / 8 (int4, top 8) = 1 and x · inv hits .5 exactly, of both signs.
 */
function matrix(rows: number, cols: number, kind: Kind, seed: number, top = 8): Float32Array {
  const x = seededFloats(rows * cols, seed);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      if (kind === 'zero rows' && r % 2 === 0) x[i] = 0;
      if (kind === 'ties') x[i] = c % 4 === 0 ? (r % 2 ? top : -top) : Math.round(x[i] * 2 * top) / 2;
      if (kind === 'nan' && i % 7 === 3) x[i] = NaN;
      if (kind === 'tiny') x[i] *= 1e-38;
    }
  return x;
}

const SHAPES: [number, number][] = [
  [1, 1],
  [3, 5],
  [7, 13],
  [4, 32],
  [9, 67],
  [33, 31],
];
const KINDS: Kind[] = ['seeded', 'zero rows', 'ties', 'nan', 'tiny'];

describe('row-wise quantizers in WebAssembly SIMD (rows.wat)', () => {
  it('the embedded module is the assembled rows.wat (run `npm run build:wasm` after editing it)', async () => {
    const assembled: Uint8Array = await assembleKernels('src/core/simd/rows.wat');
    expect(Buffer.from(assembled).toString('base64')).toBe(ROWS_WASM_BASE64);
    expect(assembled.length).toBeLessThan(4096); // compiled synchronously, as kernels.wat
  });

  it('int8 per row and per tensor: the scalar codes, scales, zero points and decodes byte for byte', () => {
    let ties = 0;
    for (const [rows, cols] of SHAPES)
      for (const kind of KINDS)
        for (const axis of [0, null] as const)
          for (const symmetric of [true, false]) {
            const x = matrix(rows, cols, kind, rows * 31 + cols, 127);
            const want = int8Reference(x, rows, cols, axis, symmetric);
            const sums = noErrorSums();
            const got = quantizeInt8(x, rows, cols, axis, symmetric, sums);
            expect(firstDifference(got.q, want.q)).toBe(-1);
            expect(firstDifference(got.scales, want.scales)).toBe(-1);
            expect(firstDifference(got.zeroPoints, want.zeroPoints)).toBe(-1);
            expectSums(sums, want.sums);
            const [run, width] = axis === 0 ? [cols, cols] : [rows * cols, rows * cols];
            const decoded = decodeReference(want.q, run, 1, width, want.scales, want.zeroPoints, 0);
            expect(firstDifference(dequantizeInt8(got, rows, cols, axis), decoded)).toBe(-1);
            if (kind === 'ties' && symmetric && axis === 0) {
              expect(Array.from(want.scales)).toEqual(Array(rows).fill(1));
              for (const v of x) if (Math.abs(v % 1) === 0.5) ties++;
            }
          }
    expect(ties).toBeGreaterThan(0); // the tie case did produce exact .5 products
  });

  it('int4 blocks along the rows: the scalar codes, scales, zero points and decodes byte for byte', () => {
    let ties = 0;
    for (const [rows, cols] of SHAPES)
      for (const kind of KINDS)
        for (const blockSize of [4, 16, 32])
          for (const symmetric of [true, false]) {
            const x = matrix(rows, cols, kind, rows * 17 + cols);
            const want = int4Reference(x, rows, cols, blockSize, symmetric);
            const sums = noErrorSums();
            const got = quantizeInt4Blockwise(x, rows, cols, 0, blockSize, symmetric, sums);
            expect(firstDifference(got.codes, want.codes)).toBe(-1);
            expect(firstDifference(got.scales, want.scales)).toBe(-1);
            expect(firstDifference(got.zeroPoints, want.zeroPoints)).toBe(-1);
            expectSums(sums, want.sums);
            const perRow = Math.ceil(cols / blockSize);
            const decoded = decodeReference(
              want.codes,
              blockSize,
              perRow,
              cols,
              want.scales,
              want.zeroPoints,
              8,
            );
            expect(firstDifference(dequantizeInt4Blockwise(got, rows, cols, 0), decoded)).toBe(-1);
            if (kind === 'ties' && symmetric) {
              expect(Array.from(want.scales, Math.abs)).toEqual(Array(want.scales.length).fill(1));
              for (const v of x) if (Math.abs(v % 1) === 0.5) ties++;
            }
          }
    expect(ties).toBeGreaterThan(0);
  });

  it('staged over several chunks: int8 and int4 on a [700, 193] table, int8 per tensor on 200,000 weights', () => {
    const x = matrix(700, 193, 'seeded', 5);
    for (const symmetric of [true, false]) {
      const want8 = int8Reference(x, 700, 193, 0, symmetric);
      const sums8 = noErrorSums();
      const got8 = quantizeInt8(x, 700, 193, 0, symmetric, sums8);
      expect(firstDifference(got8.q, want8.q)).toBe(-1);
      expectSums(sums8, want8.sums);
      const decoded8 = decodeReference(want8.q, 193, 1, 193, want8.scales, want8.zeroPoints, 0);
      expect(firstDifference(dequantizeInt8(got8, 700, 193, 0), decoded8)).toBe(-1);
      const want4 = int4Reference(x, 700, 193, 32, symmetric);
      const sums4 = noErrorSums();
      const got4 = quantizeInt4Blockwise(x, 700, 193, 0, 32, symmetric, sums4);
      expect(firstDifference(got4.codes, want4.codes)).toBe(-1);
      expect(firstDifference(got4.scales, want4.scales)).toBe(-1);
      expectSums(sums4, want4.sums);
      const decoded4 = decodeReference(want4.codes, 32, 7, 193, want4.scales, want4.zeroPoints, 8);
      expect(firstDifference(dequantizeInt4Blockwise(got4, 700, 193, 0), decoded4)).toBe(-1);
      const flat = matrix(1, 200_000, 'seeded', 6);
      const wantFlat = int8Reference(flat, 1, 200_000, null, symmetric);
      const sumsFlat = noErrorSums();
      expect(firstDifference(quantizeInt8(flat, 1, 200_000, null, symmetric, sumsFlat).q, wantFlat.q)).toBe(
        -1,
      );
      expectSums(sumsFlat, wantFlat.sums);
    }
  });

  it('block ranges and codes of a row range r0..r1 leave the other rows alone', () => {
    const [rows, cols, block] = [6, 10, 4];
    const x = matrix(rows, cols, 'seeded', 9);
    const per = Math.ceil(cols / block);
    const lo = new Float32Array(rows * per).fill(-100);
    const hi = new Float32Array(rows * per).fill(-100);
    updateRowBlockRanges(x, 2, 4, cols, block, lo, hi);
    for (let r = 0; r < rows; r++)
      for (let b = 0; b < per; b++) {
        const values = Array.from(
          x.subarray(r * cols + b * block, r * cols + Math.min(cols, (b + 1) * block)),
        );
        const inside = r >= 2 && r < 4;
        // a range starts from what lo / hi held: -100 stays the minimum, the maximum is the block's
        expect(lo[r * per + b]).toBe(-100);
        expect(hi[r * per + b]).toBe(inside ? Math.max(-100, ...values) : -100);
      }
    const out = new Uint8Array(rows * cols).fill(99);
    const inv = new Float64Array(rows * per).fill(4);
    const zero = new Float64Array(rows * per).fill(8);
    quantizeRowBlocks(x, out, 2, 4, cols, block, inv, zero, 0, 15);
    for (let i = 0; i < out.length; i++) {
      const inside = i >= 2 * cols && i < 4 * cols;
      expect(out[i]).toBe(inside ? Math.min(15, Math.max(0, Math.round(x[i] * 4) + 8)) : 99);
    }
  });
});
