import { describe, expect, it } from 'vitest';
import {
  magnitudeThreshold,
  pruneMagnitude,
  pruneMagnitudeGlobal,
  pruneNM,
} from '../../src/methods/prune/kernel.ts';
import { dequantizeInt8, quantizeInt8 } from '../../src/methods/int8/kernel.ts';
import {
  dequantizeInt4Blockwise,
  packMatMulNBits,
  quantizeInt4Blockwise,
} from '../../src/methods/int4/kernel.ts';
import { kmeans1d } from '../../src/methods/kmeans/kernel.ts';
import { buildPalette, decodePalette } from '../../src/methods/kmeans/index.ts';
import { seededFloats } from '../helpers/models.ts';

function zeros(x: Float32Array): number {
  let n = 0;
  for (const v of x) if (v === 0) n++;
  return n;
}

describe('magnitude pruning', () => {
  it('zeroes exactly round(s·n) weights, the smallest in magnitude', () => {
    const x = seededFloats(10_000, 7);
    for (const s of [0.1, 0.3333, 0.5, 0.9]) {
      const y = pruneMagnitude(x, s);
      expect(zeros(y)).toBe(Math.round(s * x.length));
      // every kept weight is at least as large as every pruned one
      let maxPruned = 0;
      let minKept = Infinity;
      for (let i = 0; i < x.length; i++) {
        if (y[i] === 0) maxPruned = Math.max(maxPruned, Math.abs(x[i]));
        else {
          minKept = Math.min(minKept, Math.abs(x[i]));
          expect(y[i]).toBe(x[i]);
        }
      }
      expect(maxPruned).toBeLessThanOrEqual(minKept);
    }
  });

  it('breaks ties in index order, so sparsity is exact even when every weight is equal', () => {
    for (const n of [101, 70_001]) {
      // the longer one carries its ties across a staging chunk of the SIMD sweep
      const x = new Float32Array(n).fill(0.25);
      for (let i = 0; i < x.length; i += 2) x[i] = -0.25;
      const y = pruneMagnitude(x, 0.3);
      const k = Math.round(0.3 * n);
      expect(zeros(y)).toBe(k);
      expect(y.subarray(0, k).every((v) => v === 0)).toBe(true);
      expect(y[k]).toBe(x[k]);
    }
  });

  it('agrees with a sort-based reference on the threshold', () => {
    const x = seededFloats(5000, 3);
    const k = 1234;
    const sorted = Array.from(x, Math.abs).sort((a, b) => a - b);
    const t = magnitudeThreshold([x], k);
    const bits = new Uint32Array(Float32Array.of(sorted[k - 1]).buffer)[0];
    expect(t.bits).toBe(bits);
  });

  it('global pruning uses one threshold across tensors', () => {
    const a = seededFloats(3000, 1, 1);
    const b = seededFloats(1000, 2, 0.1); // small weights: pruned much harder under one threshold
    const [pa, pb] = pruneMagnitudeGlobal([a, b], 0.4);
    expect(zeros(pa) + zeros(pb)).toBe(Math.round(0.4 * 4000));
    expect(zeros(pb) / 1000).toBeGreaterThan(zeros(pa) / 3000);
  });

  it('N:M keeps the N largest of every M consecutive inputs (along K of a [K, N] weight)', () => {
    const rows = 16;
    const cols = 6;
    const x = seededFloats(rows * cols, 9);
    const y = pruneNM(x, rows, cols, 1, 2, 4);
    for (let c = 0; c < cols; c++) {
      for (let k0 = 0; k0 < rows; k0 += 4) {
        const group = [0, 1, 2, 3].map((j) => (k0 + j) * cols + c);
        const kept = group.filter((i) => y[i] !== 0);
        expect(kept.length).toBe(2);
        const minKept = Math.min(...kept.map((i) => Math.abs(x[i])));
        for (const i of group) if (y[i] === 0) expect(Math.abs(x[i])).toBeLessThanOrEqual(minKept);
      }
    }
    // against the definition (rank = larger |w| in the group + equal |w| at earlier rows; keep rank < N,
    // a short last group keeping ceil(len·N/M)) with ties, short groups, SIMD tails and staging chunks
    for (const [r, c, n, m, levels] of [
      [18, 7, 2, 4, 5],
      [16, 9, 4, 8, 3],
      [8, 70_001, 2, 4, 0],
    ]) {
      const w = seededFloats(r * c, r + c);
      if (levels) for (let i = 0; i < w.length; i++) w[i] = Math.round(w[i] * levels) / levels;
      const got = pruneNM(w, r, c, 1, n, m);
      for (let k0 = 0; k0 < r; k0 += m) {
        const len = Math.min(m, r - k0);
        const keep = len === m ? n : Math.ceil((len * n) / m);
        for (let col = 0; col < c; col++)
          for (let i = 0; i < len; i++) {
            const a = Math.abs(w[(k0 + i) * c + col]);
            let rank = 0;
            for (let j = 0; j < len; j++) {
              const b = Math.abs(w[(k0 + j) * c + col]);
              if (b > a || (b === a && j < i)) rank++;
            }
            const want = rank < keep ? w[(k0 + i) * c + col] : 0;
            if (got[(k0 + i) * c + col] !== want)
              expect([k0 + i, col, got[(k0 + i) * c + col]]).toEqual([k0 + i, col, want]);
          }
      }
    }
    // channels along rows (a Gemm transB / Gather layout): groups run along each row
    const z = pruneNM(x, rows, cols, 0, 2, 4);
    for (let r = 0; r < rows; r++) {
      const row = Array.from(z.subarray(r * cols, r * cols + 4));
      expect(row.filter((v) => v !== 0).length).toBe(2);
    }
  });
});

describe('int8 quantization', () => {
  it('per-channel symmetric: |error| ≤ scale/2 and the largest weight of each channel is exact', () => {
    const rows = 32;
    const cols = 8;
    const x = seededFloats(rows * cols, 4);
    const q = quantizeInt8(x, rows, cols, 1, true);
    expect(q.scales.length).toBe(cols);
    const y = dequantizeInt8(q, rows, cols, 1);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c;
        expect(Math.abs(x[i] - y[i])).toBeLessThanOrEqual(q.scales[c] / 2 + 1e-7);
        expect(Math.abs(q.q[i])).toBeLessThanOrEqual(127);
      }
  });

  it('asymmetric keeps zero exactly representable', () => {
    const x = Float32Array.from([0, 0.5, 1, 2, 3, 0]);
    const q = quantizeInt8(x, 1, 6, null, false);
    const y = dequantizeInt8(q, 1, 6, null);
    expect(y[0]).toBe(0);
    expect(y[5]).toBe(0);
    expect(Math.abs(y[4] - 3)).toBeLessThan(3 / 255);
  });
});

describe('int4 block-wise quantization', () => {
  it('matches the MatMulNBits definition: codes in 0..15, scale per (column, block), zero point 8', () => {
    const k = 40; // not a multiple of the block: the last block is padded
    const n = 3;
    const x = seededFloats(k * n, 5);
    const q = quantizeInt4Blockwise(x, k, n, 1, 16, true);
    expect(q.blocksPerChannel).toBe(3);
    const y = dequantizeInt4Blockwise(q, k, n, 1);
    for (let kk = 0; kk < k; kk++)
      for (let c = 0; c < n; c++) {
        const b = Math.floor(kk / 16);
        const code = q.codes[kk * n + c];
        expect(code).toBeGreaterThanOrEqual(0);
        expect(code).toBeLessThanOrEqual(15);
        expect(y[kk * n + c]).toBeCloseTo((code - 8) * q.scales[c * 3 + b], 6);
        // round to nearest, except the side opposite the extreme, which clips at +7 (onnxruntime's scheme)
        const s = Math.abs(q.scales[c * 3 + b]);
        const bound = code === 15 ? s : s / 2;
        expect(Math.abs(y[kk * n + c] - x[kk * n + c])).toBeLessThanOrEqual(bound + 1e-6);
      }
    // the value of largest magnitude in each block maps to code 0 (-8 · scale) exactly
    const block = Array.from({ length: 16 }, (_, kk) => x[kk * n]);
    const extreme = block.reduce((m, v) => (Math.abs(v) > Math.abs(m) ? v : m), 0);
    expect(y[block.indexOf(extreme) * n]).toBeCloseTo(extreme, 6);
    // MatMulNBits packs column-major: byte j of column c holds K-rows 2j (low nibble) and 2j+1 (high)
    const packed = packMatMulNBits(q, k, n, 1);
    expect(packed.length).toBe(n * 3 * 8);
    expect(packed[0] & 15).toBe(q.codes[0]);
    expect(packed[0] >> 4).toBe(q.codes[n]);
    expect(packed[24] & 15).toBe(q.codes[1]); // column 1 starts after 3 blocks × 8 bytes
    expect(packed[23] & 15).toBe(8); // padding past K = 40 holds the zero point
  });
});

describe('k-means weight sharing', () => {
  function checkLloydFixedPoint(x: Float32Array, codes: Uint8Array, book: Float32Array) {
    // every weight sits at its nearest centroid, and every centroid is the mean of its weights
    const sum = new Float64Array(book.length);
    const cnt = new Float64Array(book.length);
    for (let i = 0; i < x.length; i++) {
      const d = Math.abs(x[i] - book[codes[i]]);
      for (let j = 0; j < book.length; j++) expect(d).toBeLessThanOrEqual(Math.abs(x[i] - book[j]) + 1e-6);
      sum[codes[i]] += x[i];
      cnt[codes[i]]++;
    }
    for (let j = 0; j < book.length; j++) if (cnt[j]) expect(book[j]).toBeCloseTo(sum[j] / cnt[j], 5);
  }

  it('gives at most K values, at a Lloyd fixed point, on small and histogram-sized tensors', () => {
    for (const n of [5000, 300_000]) {
      const x = seededFloats(n, 11);
      for (let i = 0; i < n; i++) x[i] = x[i] ** 3; // a peaked, weight-like distribution
      const codes = new Uint8Array(n);
      const book = kmeans1d(x, codes, { clusters: 8, keepZeros: true, restarts: 2, seed: 1 });
      expect(book.length).toBeLessThanOrEqual(8);
      if (n === 5000) checkLloydFixedPoint(x, codes, book);
      const distinct = new Set(Array.from(codes, (c) => book[c]));
      expect(distinct.size).toBeLessThanOrEqual(8);
    }
  });

  it('keeps pruned zeros as zeros, on exact and histogram-sized tensors', () => {
    for (const n of [4000, 40_000]) {
      const x = pruneMagnitude(seededFloats(n, 2), 0.5);
      const codes = new Uint8Array(x.length);
      const book = kmeans1d(x, codes, { clusters: 4, keepZeros: true, restarts: 1, seed: 1 });
      let z = 0;
      for (let i = 0; i < x.length; i++) {
        if (book[codes[i]] === 0) z++;
        if (x[i] === 0) expect(book[codes[i]]).toBe(0);
      }
      expect(z).toBe(n / 2);
    }
  });

  it('per-channel codebooks: at most K distinct values in each output channel', () => {
    const rows = 64;
    const cols = 5;
    const values = seededFloats(rows * cols, 8);
    const t = { name: 'w', shape: [rows, cols] as [number, number], values, channelAxis: 1 as const };
    const p = buildPalette(t, { clusters: 4, perChannel: true, keepZeros: true, export: 'palette' });
    expect(p.books).toBe(cols);
    const y = decodePalette(t, p);
    for (let c = 0; c < cols; c++) {
      const col = new Set(Array.from({ length: rows }, (_, r) => y[r * cols + c]));
      expect(col.size).toBeLessThanOrEqual(4);
    }
  });
});

describe('float16 casts', () => {
  it('the fast array casts agree bit for bit with the scalar IEEE conversions', async () => {
    const { castFloat16ToFloat32, castFloat32ToFloat16, float16ToFloat32, float32ToFloat16 } =
      await import('../../src/core/onnx/dtypes.ts');
    const every = castFloat16ToFloat32(Uint16Array.from({ length: 65536 }, (_, i) => i));
    for (let i = 0; i < 65536; i++) {
      const want = float16ToFloat32(i);
      expect(Number.isNaN(want) ? Number.isNaN(every[i]) : Object.is(every[i], want)).toBe(true);
    }
    const xs = new Float32Array(200_003); // past a staging chunk, not a whole SIMD step
    const bits = new Uint32Array(xs.buffer);
    let s = 1;
    for (let i = 0; i < bits.length; i++) bits[i] = s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    // exact halfway cases between two halves, both parities
    for (let i = 0; i < 1000; i++) bits[i] = (((i % 30) + 103) << 23) | 0x1000 | ((i & 1) << 13);
    const h = castFloat32ToFloat16(xs);
    let mismatches = 0;
    let nans = 0;
    for (let i = 0; i < xs.length; i++) {
      if (!Number.isNaN(xs[i])) {
        if (h[i] !== float32ToFloat16(xs[i])) mismatches++;
      } else if ((h[i] & 0x7c00) !== 0x7c00 || (h[i] & 0x3ff) === 0 || h[i] >> 15 !== bits[i] >>> 31)
        mismatches++; // NaN stays a NaN of the same sign
      else nans++;
    }
    expect(mismatches).toBe(0);
    expect(nans).toBeGreaterThan(100);
  });
});
