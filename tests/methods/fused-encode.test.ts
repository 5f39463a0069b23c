/**
 * The int4 / int8 export paths that skip a pass over the weights, each against the straightforward
 * reference it replaces: error sums measured while quantizing against errorSums over the decoded
 * tensor; MatMulNBits packed in one pass against the channel-major transpose then nibble pairs;
 * values decoded lazily against the eager decode. Shapes with rows that are not a multiple of the
 * block, columns that are not a multiple of 4 (the SIMD tails) and all-zero blocks (scale 0).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import {
  dequantizeInt4Blockwise,
  packMatMulNBits,
  packNibbles,
  quantizeInt4Blockwise,
  type Int4Quantized,
} from '../../src/methods/int4/kernel.ts';
import { dequantizeInt8, quantizeInt8 } from '../../src/methods/int8/kernel.ts';
import { errorSums, noErrorSums, type ErrorSums } from '../../src/core/simd/index.ts';
import { int4Method } from '../../src/methods/int4/index.ts';
import { int8Method } from '../../src/methods/int8/index.ts';
import { valuesPending, withLazyValues, withoutPendingValues } from '../../src/methods/lazy-values.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { errorStats } from '../../src/core/compress/metrics.ts';
import { seededFloats } from '../helpers/models.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';
import { SUMS_WASM_BASE64 } from '../../src/core/simd/sums-wasm.ts';
// @ts-expect-error: a plain .mjs build script without type declarations
import { assembleKernels } from '../../tools/build-wasm.mjs';

const SHAPES: [number, number][] = [
  [1, 1],
  [7, 3],
  [8, 4],
  [16, 16],
  [31, 5],
  [33, 12],
  [40, 17],
  [64, 8],
  [100, 36],
  [129, 64],
];

/** seeded values with one all-zero stretch (a block whose scale is 0) and a few exact zeros */
function weights(rows: number, cols: number, seed: number): Float32Array {
  const x = seededFloats(rows * cols, seed);
  x.fill(0, Math.floor(x.length / 3), Math.floor(x.length / 3) + Math.min(40, x.length >> 2));
  for (let i = 0; i < x.length; i += 13) x[i] = 0;
  return x;
}

/** MatMulNBits' B by its definition: codes transposed channel-major, padded with z, then paired into bytes. */
function packReference(q: Int4Quantized, rows: number, cols: number, channelAxis: 0 | 1): Buffer {
  const kPad = q.blocksPerChannel * q.blockSize;
  const channelMajor = new Uint8Array(q.channels * kPad).fill(q.zeroPoints ? 0 : 8);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const code = q.codes[r * cols + c];
      if (channelAxis === 1) channelMajor[c * kPad + r] = code;
      else channelMajor[r * kPad + c] = code;
    }
  const out = Buffer.alloc(channelMajor.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = channelMajor[2 * i] | (channelMajor[2 * i + 1] << 4);
  return out;
}

/** Fused sums against errorSums over the decoded tensor: same max and zeros, sums to float64 rounding. */
function expectSums(got: ErrorSums, x: Float32Array, decoded: Float32Array): void {
  const want = errorSums(x, decoded);
  expect(got.zeros).toBe(want.zeros);
  expect(got.maxAbs).toBe(want.maxAbs);
  expect(Math.abs(got.signal - want.signal)).toBeLessThanOrEqual(1e-12 * want.signal);
  expect(Math.abs(got.noise - want.noise)).toBeLessThanOrEqual(1e-12 * want.noise);
}

describe('int4 error sums measured while quantizing', () => {
  it('the embedded module is the assembled sums.wat (run `npm run build:wasm` after editing it)', async () => {
    const bytes: Uint8Array = await assembleKernels('src/core/simd/sums.wat');
    expect(Buffer.from(bytes).toString('base64')).toBe(SUMS_WASM_BASE64);
    expect(bytes.length).toBeLessThan(4096); // compiled synchronously, as kernels.wat
  });

  it('equal errorSums over the decoded tensor, both channel axes, symmetric and not', () => {
    for (const [rows, cols] of SHAPES)
      for (const blockSize of [16, 32, 128])
        for (const symmetric of [true, false])
          for (const axis of [0, 1] as const) {
            const x = weights(rows, cols, rows * 7 + cols);
            const sums = noErrorSums();
            const q = quantizeInt4Blockwise(x, rows, cols, axis, blockSize, symmetric, sums);
            // the same codes as without the sums
            expect(q).toEqual(quantizeInt4Blockwise(x, rows, cols, axis, blockSize, symmetric));
            expectSums(sums, x, dequantizeInt4Blockwise(q, rows, cols, axis));
            expect(sums.zeros).toBeGreaterThan(0);
          }
  });

  it('on a staged block wider than the kernels stage in one go (2 × 70,001 columns)', () => {
    const x = weights(40, 70_001, 3);
    const sums = noErrorSums();
    const q = quantizeInt4Blockwise(x, 40, 70_001, 1, 32, false, sums);
    expectSums(sums, x, dequantizeInt4Blockwise(q, 40, 70_001, 1));
  });
});

describe('int8 error sums measured while quantizing', () => {
  it('equal errorSums over the decoded tensor, per channel (both axes) and per tensor', () => {
    for (const [rows, cols] of SHAPES)
      for (const symmetric of [true, false])
        for (const axis of [0, 1, null] as const) {
          const x = weights(rows, cols, rows * 5 + cols);
          const sums = noErrorSums();
          const q = quantizeInt8(x, rows, cols, axis, symmetric, sums);
          expect(q).toEqual(quantizeInt8(x, rows, cols, axis, symmetric));
          expectSums(sums, x, dequantizeInt8(q, rows, cols, axis));
        }
  });

  it('across the staging chunks of a tall [K, N] weight', () => {
    const x = weights(3000, 70, 9); // 210,000 values: four chunks of 65,536
    for (const symmetric of [true, false]) {
      const sums = noErrorSums();
      const q = quantizeInt8(x, 3000, 70, 1, symmetric, sums);
      expectSums(sums, x, dequantizeInt8(q, 3000, 70, 1));
    }
  });
});

describe('MatMulNBits packing in one pass', () => {
  it('is byte for byte the channel-major transpose then nibble pairs, padded with z', () => {
    for (const [rows, cols] of [...SHAPES, [200, 100] as [number, number], [47, 4] as [number, number]])
      for (const blockSize of [16, 32, 64])
        for (const symmetric of [true, false])
          for (const axis of [0, 1] as const) {
            const x = weights(rows, cols, rows + cols * 3);
            const q = quantizeInt4Blockwise(x, rows, cols, axis, blockSize, symmetric);
            const want = packReference(q, rows, cols, axis);
            // Buffer.equals: toEqual walks typed arrays element by element, seconds over these shapes
            expect(Buffer.from(packMatMulNBits(q, rows, cols, axis)).equals(want)).toBe(true);
            // codes that do not start on a 4-byte boundary take the byte loop, to the same bytes
            const shifted = new Uint8Array(q.codes.length + 1).subarray(1);
            shifted.set(q.codes);
            expect(
              Buffer.from(packMatMulNBits({ ...q, codes: shifted }, rows, cols, axis)).equals(want),
            ).toBe(true);
          }
  });
});

/** Bit patterns, so −0 and NaN payloads count too. */
const bitsOf = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

describe('nibble packing in the weight’s own layout (DequantizeLinear int4 / uint4)', () => {
  it('is the flat pairing, first value in the low nibble, for every length and alignment', () => {
    for (const n of [0, 1, 7, 8, 9, 16, 31, 64, 1001])
      for (const xor of [0, 8])
        for (const offset of [0, 1, 4]) {
          const values = new Uint8Array(n + offset).subarray(offset);
          for (let i = 0; i < n; i++) values[i] = (i * 7 + n) % 16;
          const want = Buffer.alloc((n + 1) >> 1);
          for (let i = 0; i < n; i++) want[i >> 1] |= ((values[i] ^ xor) & 15) << ((i & 1) * 4);
          expect(Buffer.from(packNibbles(values, xor)).equals(want)).toBe(true);
        }
  });
});

describe('decodes of [K, N] weights (WebAssembly SIMD)', () => {
  it('are fround((code − z) · s) bit for bit, int4 and int8, symmetric and not', () => {
    for (const [rows, cols] of [...SHAPES, [70_000, 3] as [number, number]])
      for (const symmetric of [true, false]) {
        const x = weights(rows, cols, rows * 3 + cols);
        const q4 = quantizeInt4Blockwise(x, rows, cols, 1, 16, symmetric);
        const want4 = new Float32Array(rows * cols);
        for (let r = 0; r < rows; r++)
          for (let c = 0; c < cols; c++) {
            const at = c * q4.blocksPerChannel + Math.floor(r / 16);
            const z = q4.zeroPoints ? q4.zeroPoints[at] : 8;
            want4[r * cols + c] = Math.fround((q4.codes[r * cols + c] - z) * q4.scales[at]);
          }
        expect(bitsOf(dequantizeInt4Blockwise(q4, rows, cols, 1)).equals(bitsOf(want4))).toBe(true);
        const q8 = quantizeInt8(x, rows, cols, 1, symmetric);
        const want8 = new Float32Array(rows * cols);
        for (let i = 0; i < want8.length; i++) {
          const c = i % cols;
          want8[i] = Math.fround((q8.q[i] - (q8.zeroPoints ? q8.zeroPoints[c] : 0)) * q8.scales[c]);
        }
        expect(bitsOf(dequantizeInt8(q8, rows, cols, 1)).equals(bitsOf(want8))).toBe(true);
      }
  });
});

describe('values decoded when read', () => {
  it('int4 and int8 results hold their error sums and decode their values once, on first read', () => {
    const x = weights(96, 20, 4);
    const t = { name: 'w', shape: [96, 20] as [number, number], values: x, channelAxis: 1 as const };
    const int4 = int4Method.apply([t], { blockSize: 32, symmetric: false, format: 'matmulnbits' })[0];
    const int8 = int8Method.apply([t], { granularity: 'per-channel', symmetric: true })[0];
    for (const [r, decode] of [
      [int4, () => dequantizeInt4Blockwise(int4.encoding!, 96, 20, 1)],
      [int8, () => dequantizeInt8(int8.encoding!, 96, 20, 1)],
    ] as const) {
      expect(valuesPending(r)).toBe(true);
      const decoded = decode();
      expectSums(r.error!, x, decoded);
      expect(r.values).toEqual(decoded);
      expect(valuesPending(r)).toBe(false);
      expect(r.values).toBe(r.values); // kept, not decoded again
    }
  });

  it('a result posted without its pending values is not decoded; a write replaces them', () => {
    let decodes = 0;
    const r = withLazyValues({ storedBytes: 4, encoding: new Uint8Array(3) }, () => {
      decodes++;
      return new Float32Array(3).fill(1);
    });
    const posted = structuredClone(withoutPendingValues(r));
    expect(decodes).toBe(0);
    expect('values' in posted).toBe(false);
    expect(posted.encoding).toEqual(new Uint8Array(3));
    expect({ ...r }.values).toEqual(new Float32Array(3).fill(1)); // a spread reads (and decodes) them
    expect(decodes).toBe(1);
    expect(withoutPendingValues(r)).toBe(r);
    const other = withLazyValues({ storedBytes: 4 }, () => {
      decodes++;
      return new Float32Array(1);
    });
    other.values = Float32Array.of(7);
    expect(other.values).toEqual(Float32Array.of(7));
    expect(decodes).toBe(1);
  });

  it('reports from the sums equal reports measured on the decoded weights (stories260K, int4 and int8)', () => {
    const model = parseModel(bytesSource('stories', new Uint8Array(readFileSync(STORIES_MODEL))));
    for (const step of [
      { method: 'int4', options: { blockSize: 32, symmetric: true } },
      { method: 'int8', options: { symmetric: false } },
    ]) {
      const result = compressModel(model, resolveRecipe({ steps: [step] }));
      expect(result.outcomes.length).toBeGreaterThan(0);
      result.reports.forEach((report, i) => {
        const o = result.outcomes[i];
        expect(o.error).toBeDefined();
        const direct = errorStats(o.original, o.values);
        expect(report.maxAbsError).toBe(direct.maxAbsError);
        expect(report.sparsity).toBe(direct.sparsity);
        expect(report.mse).toBeCloseTo(direct.mse, 15);
        expect(Math.abs(report.snrDb - direct.snrDb)).toBeLessThan(1e-9);
      });
    }
  });
});
