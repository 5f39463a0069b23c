/**
 * The compressors' hot loops as WebAssembly SIMD (kernels.wat), behind plain typed-array functions.
 * Every call stages its input in the module's memory in chunks small enough to stay in cache (or one
 * block of rows), runs one kernel per chunk and copies the results out, so callers never see wasm
 * pointers and the module's memory is bounded by a chunk, not by the tensor. WebAssembly SIMD is in
 * every engine that runs onnxruntime-web (which ships SIMD builds only), so there is no scalar fallback
 * to keep in step. The loops here are plain `for` loops on purpose: a callback created per call costs
 * V8 a fresh warm-up each time, which showed as 2× on small tensors.
 */

import { KERNELS_WASM_BASE64 } from './kernels-wasm.ts';
import { SUMS_WASM_BASE64 } from './sums-wasm.ts';
import { ROWS_WASM_BASE64 } from './rows-wasm.ts';
import { instantiateBase64 } from './instantiate.ts';

interface Kernels {
  memory: WebAssembly.Memory;
  column_ranges(x: number, rows: number, cols: number, lo: number, hi: number): void;
  column_abs_max(x: number, rows: number, cols: number, m: number): void;
  quantize_columns(
    x: number,
    out: number,
    rows: number,
    cols: number,
    inv: number,
    offset: number,
    max: number,
    bias: number,
  ): void;
  decode_columns(
    q: number,
    out: number,
    rows: number,
    cols: number,
    scale: number,
    zero: number,
    qxor: number,
  ): void;
  flat_range(x: number, n: number, res: number): void;
  histogram(
    x: number,
    n: number,
    lo: number,
    hi: number,
    scale: number,
    count: number,
    bins: number,
    scratch: number,
  ): void;
  error_stats(x: number, y: number, n: number, res: number): void;
  assign_codes(
    x: number,
    n: number,
    out: number,
    lo: number,
    hi: number,
    scale: number,
    lut: number,
    bins: number,
    mids: number,
    zeroCode: number,
    scratch: number,
  ): void;
  abs_high_histogram(x: number, n: number, count: number): void;
  abs_low_histogram(x: number, n: number, high: number, count: number): void;
  apply_threshold(x: number, n: number, t: number, ties: number): number;
  prune_nm_columns(
    x: number,
    out: number,
    rows: number,
    cols: number,
    rowLen: number,
    n: number,
    m: number,
  ): void;
  float32_to_float16(x: number, n: number, h: number): void;
  float16_to_float32(h: number, n: number, x: number): void;
}

/** Floats staged per kernel call: 256 KiB, inside a core's L2 next to the outputs. */
const CHUNK_FLOATS = 1 << 16;

/** sums.wat: reads the kernels' memory (rows, codes or chunks a staging left there). */
interface SumKernels {
  column_code_errors(
    x: number,
    q: number,
    rows: number,
    cols: number,
    scale: number,
    zero: number,
    qxor: number,
    res: number,
  ): void;
  moments(x: number, n: number, res: number): void;
}

/** rows.wat: the row-wise quantizers (channels along the rows), on the kernels' memory. */
interface RowKernels {
  row_block_ranges(x: number, rows: number, cols: number, block: number, lo: number, hi: number): void;
  row_block_quantize(
    x: number,
    out: number,
    rows: number,
    cols: number,
    block: number,
    inv: number,
    zero: number,
    scale: number,
    lo: number,
    hi: number,
    signed: number,
    res: number,
  ): void;
  row_block_decode(
    q: number,
    out: number,
    rows: number,
    cols: number,
    block: number,
    scale: number,
    zero: number,
    qxor: number,
  ): void;
}

let kernels: Kernels | null = null;
let sumKernels: SumKernels | null = null;
let rowKernels: RowKernels | null = null;
/** Bumped by every call that lays out scratch memory, so a stale StagedColumnBlock is caught rather than read. */
let generation = 0;

function instance(): Kernels {
  if (!kernels) {
    // a few KB: synchronous compilation works on any thread, even on the main thread of Chrome
    // before 114, which refused more than 4 KB there (a test keeps the module under that)
    kernels = instantiateBase64<Kernels>(KERNELS_WASM_BASE64);
  }
  return kernels;
}

function sumInstance(): SumKernels {
  if (!sumKernels)
    sumKernels = instantiateBase64<SumKernels>(SUMS_WASM_BASE64, { env: { memory: instance().memory } });
  return sumKernels;
}

function rowInstance(): RowKernels {
  if (!rowKernels)
    rowKernels = instantiateBase64<RowKernels>(ROWS_WASM_BASE64, { env: { memory: instance().memory } });
  return rowKernels;
}

/**
 * What a tensor's error statistics are made of (see errorSums): Σ x², Σ (x − x')², max |x − x'| (NaN
 * ignored) and the count of exact zeros in x', accumulated in float64. The quantizers produce them
 * while encoding, so a report needs no decoded copy of the tensor.
 */
export interface ErrorSums {
  signal: number;
  noise: number;
  maxAbs: number;
  zeros: number;
}

export const noErrorSums = (): ErrorSums => ({ signal: 0, noise: 0, maxAbs: 0, zeros: 0 });

/**
 * Adds the error of codes[start..end) against x[start..end) to `sums`, each decoded with one scale
 * and zero point as the methods' decodes do: fround((code − zero) · scale), the sums in float64. The
 * scalar form of the error sums the kernels fuse into their encodes (sums.wat for columns, rows.wat
 * for rows), kept as the reference the tests hold them to.
 */
export function addCodeErrors(
  x: Float32Array,
  codes: Uint8Array | Int8Array,
  start: number,
  end: number,
  scale: number,
  zero: number,
  sums: ErrorSums,
): void {
  let { signal, noise, maxAbs, zeros } = sums;
  for (let i = start; i < end; i++) {
    const v = x[i];
    const d = Math.fround((codes[i] - zero) * scale);
    const e = Math.abs(v - d);
    signal += v * v;
    noise += e * e;
    if (maxAbs < e) maxAbs = e;
    if (d === 0) zeros++;
  }
  sums.signal = signal;
  sums.noise = noise;
  sums.maxAbs = maxAbs;
  sums.zeros = zeros;
}

/** Adds the float64[4] sums at wasm byte offset `at` into `sums` (max taken, NaN ignored as pmax does). */
function addWasmSums(k: Kernels, at: number, sums: ErrorSums): void {
  const [signal, noise, maxAbs, zeros] = new Float64Array(k.memory.buffer, at, 4);
  sums.signal += signal;
  sums.noise += noise;
  if (sums.maxAbs < maxAbs) sums.maxAbs = maxAbs;
  sums.zeros += zeros;
}

/** Byte offsets (16-aligned, from 0) for scratch regions of the given sizes, growing memory to fit. */
function reserve(k: Kernels, ...sizes: number[]): number[] {
  generation++;
  const offsets: number[] = [];
  let end = 0;
  for (const size of sizes) {
    offsets.push(end);
    end += Math.ceil(size / 16) * 16;
  }
  const missing = end - k.memory.buffer.byteLength;
  if (missing > 0) k.memory.grow(Math.ceil(missing / 65536));
  return offsets;
}

const f32 = (k: Kernels, at: number, n: number) => new Float32Array(k.memory.buffer, at, n);
const u8 = (k: Kernels, at: number, n: number) => new Uint8Array(k.memory.buffer, at, n);

/** Elements per call rounded up to whole SIMD steps; the staged tail past n is zero. */
const padded = (n: number) => Math.ceil(n / 4) * 4;

const rowsPerChunk = (cols: number) => Math.max(1, Math.floor(CHUNK_FLOATS / Math.max(1, cols)));

/** lo[c] = min(lo[c], x[r][c]), hi[c] = max(hi[c], x[r][c]) over rows r0..r1−1; NaNs are ignored. */
export function updateColumnRanges(
  x: Float32Array,
  r0: number,
  r1: number,
  cols: number,
  lo: Float32Array,
  hi: Float32Array,
): void {
  const k = instance();
  const chunkRows = Math.min(r1 - r0, rowsPerChunk(cols));
  const [at, loAt, hiAt] = reserve(k, chunkRows * cols * 4, cols * 4, cols * 4);
  f32(k, loAt, cols).set(lo.subarray(0, cols));
  f32(k, hiAt, cols).set(hi.subarray(0, cols));
  for (let r = r0, step = rowsPerChunk(cols); r < r1; r += step) {
    const rows = Math.min(step, r1 - r);
    f32(k, at, rows * cols).set(x.subarray(r * cols, (r + rows) * cols));
    k.column_ranges(at, rows, cols, loAt, hiAt);
  }
  lo.set(f32(k, loAt, cols));
  hi.set(f32(k, hiAt, cols));
}

/** m[c] = max(m[c], |x[r][c]|) over rows r0..r1−1: what a symmetric scale needs. */
export function updateColumnAbsMax(
  x: Float32Array,
  r0: number,
  r1: number,
  cols: number,
  m: Float32Array,
): void {
  const k = instance();
  const chunkRows = Math.min(r1 - r0, rowsPerChunk(cols));
  const [at, mAt] = reserve(k, chunkRows * cols * 4, cols * 4);
  f32(k, mAt, cols).set(m.subarray(0, cols));
  for (let r = r0, step = rowsPerChunk(cols); r < r1; r += step) {
    const rows = Math.min(step, r1 - r);
    f32(k, at, rows * cols).set(x.subarray(r * cols, (r + rows) * cols));
    k.column_abs_max(at, rows, cols, mAt);
  }
  m.set(f32(k, mAt, cols));
}

/**
 * out[r][c] = clamp(trunc(x[r][c] · inv[c] + offset[c]), 0, max) − bias for rows r0..r1−1, in float32
 * arithmetic: round to nearest of x / s plus a zero point when offset = z + 0.5. Written as bytes, so a
 * bias of 128 into an Int8Array gives code − 128.
 */
export function quantizeColumns(
  x: Float32Array,
  out: Uint8Array | Int8Array,
  r0: number,
  r1: number,
  cols: number,
  inv: Float32Array,
  offset: Float32Array,
  max: number,
  bias: number,
  error?: CodeErrors,
): void {
  const k = instance();
  const chunkRows = Math.min(r1 - r0, rowsPerChunk(cols));
  const [at, outAt, invAt, offAt, scaleAt, zeroAt, resAt] = reserve(
    k,
    chunkRows * cols * 4,
    chunkRows * cols,
    cols * 4,
    cols * 4,
    error ? cols * 4 : 0,
    error ? cols * 4 : 0,
    32,
  );
  f32(k, invAt, cols).set(inv.subarray(0, cols));
  f32(k, offAt, cols).set(offset.subarray(0, cols));
  if (error) {
    f32(k, scaleAt, cols).set(error.scale.subarray(0, cols));
    f32(k, zeroAt, cols).set(error.zero.subarray(0, cols));
  }
  const bytes = new Uint8Array(out.buffer, out.byteOffset, out.length);
  for (let r = r0, step = rowsPerChunk(cols); r < r1; r += step) {
    const rows = Math.min(step, r1 - r);
    f32(k, at, rows * cols).set(x.subarray(r * cols, (r + rows) * cols));
    k.quantize_columns(at, outAt, rows, cols, invAt, offAt, max, bias);
    bytes.set(u8(k, outAt, rows * cols), r * cols);
    if (error) {
      new Float64Array(k.memory.buffer, resAt, 4).fill(0);
      sumInstance().column_code_errors(at, outAt, rows, cols, scaleAt, zeroAt, error.qxor, resAt);
      addWasmSums(k, resAt, error.sums);
    }
  }
}

/**
 * out[r][c] = ((q[r][c] xor qxor) − zero[c]) · scale[c] in float32 for rows r0..r1−1 of a [·, cols]
 * matrix of byte codes: the int4 / int8 decodes (a small integer times a float32 rounds once, so this
 * is the scalar fround((code − z) · s) bit for bit). An Int8Array's two's complement is read with
 * qxor 128, as code + 128.
 */
export function decodeColumns(
  q: Uint8Array | Int8Array,
  out: Float32Array,
  r0: number,
  r1: number,
  cols: number,
  scale: Float32Array,
  zero: Float32Array,
  qxor: number,
): void {
  const k = instance();
  const step = rowsPerChunk(cols);
  const chunkRows = Math.min(r1 - r0, step);
  const [qAt, outAt, scaleAt, zeroAt] = reserve(
    k,
    chunkRows * cols,
    chunkRows * cols * 4,
    cols * 4,
    cols * 4,
  );
  f32(k, scaleAt, cols).set(scale.subarray(0, cols));
  f32(k, zeroAt, cols).set(zero.subarray(0, cols));
  const bytes = new Uint8Array(q.buffer, q.byteOffset, q.length);
  for (let r = r0; r < r1; r += step) {
    const rows = Math.min(step, r1 - r);
    u8(k, qAt, rows * cols).set(bytes.subarray(r * cols, (r + rows) * cols));
    k.decode_columns(qAt, outAt, rows, cols, scaleAt, zeroAt, qxor);
    out.set(f32(k, outAt, rows * cols), r * cols);
  }
}

/**
 * The error of codes against the values they encode, accumulated into `sums` while quantizing: the
 * decoded value is ((code xor qxor) − zero[c]) · scale[c] in float32, as the method's decode computes it.
 */
export interface CodeErrors {
  scale: Float32Array;
  zero: Float32Array;
  /** 128 for int8 two's complement codes (stored as code − 128), else 0. */
  qxor: number;
  sums: ErrorSums;
}

/**
 * Rows r0..r1−1 of a [·, cols] matrix staged in wasm memory with their column ranges (from 0, so they
 * hold zero) and room for the caller's per-column 1/scale and offset. The arrays are views into wasm
 * memory: valid until the next call into this module, which quantizeStagedBlock checks.
 */
export interface StagedColumnBlock {
  r0: number;
  rows: number;
  cols: number;
  lo: Float32Array;
  hi: Float32Array;
  inv: Float32Array;
  offset: Float32Array;
  /** Per-column scale and zero point of the decode, for `stagedBlockErrors` (the caller fills them in). */
  scale: Float32Array;
  zero: Float32Array;
  /** wasm byte offsets: staged rows, codes, inv, offset, scale, zero, error sums */
  at: [number, number, number, number, number, number, number];
  generation: number;
}

export function stageColumnBlock(x: Float32Array, r0: number, r1: number, cols: number): StagedColumnBlock {
  const k = instance();
  const rows = r1 - r0;
  const [at, outAt, loAt, hiAt, invAt, offAt, scaleAt, zeroAt, resAt] = reserve(
    k,
    rows * cols * 4,
    rows * cols,
    ...Array<number>(6).fill(cols * 4),
    32,
  );
  f32(k, at, rows * cols).set(x.subarray(r0 * cols, r1 * cols));
  const lo = f32(k, loAt, cols).fill(0);
  const hi = f32(k, hiAt, cols).fill(0);
  k.column_ranges(at, rows, cols, loAt, hiAt);
  const inv = f32(k, invAt, cols);
  const offset = f32(k, offAt, cols);
  const scale = f32(k, scaleAt, cols);
  const zero = f32(k, zeroAt, cols);
  return {
    r0,
    rows,
    cols,
    lo,
    hi,
    inv,
    offset,
    scale,
    zero,
    at: [at, outAt, invAt, offAt, scaleAt, zeroAt, resAt],
    generation,
  };
}

/** quantizeColumns on a staged block (with the inv/offset its caller filled in), into out's rows r0… */
export function quantizeStagedBlock(
  block: StagedColumnBlock,
  out: Uint8Array | Int8Array,
  max: number,
  bias: number,
): void {
  if (block.generation !== generation) throw new Error('staged block was overwritten by a later staging');
  const k = instance();
  const [at, outAt, invAt, offAt] = block.at;
  const n = block.rows * block.cols;
  k.quantize_columns(at, outAt, block.rows, block.cols, invAt, offAt, max, bias);
  new Uint8Array(out.buffer, out.byteOffset, out.length).set(u8(k, outAt, n), block.r0 * block.cols);
}

/**
 * Adds to `sums` the error of a quantized staged block (after quantizeStagedBlock) against its rows:
 * decoded values ((code xor qxor) − zero[c]) · scale[c] in float32, with the block's `scale` and `zero`.
 */
export function stagedBlockErrors(block: StagedColumnBlock, sums: ErrorSums, qxor = 0): void {
  if (block.generation !== generation) throw new Error('staged block was overwritten by a later staging');
  const k = instance();
  const [at, outAt, , , scaleAt, zeroAt, resAt] = block.at;
  new Float64Array(k.memory.buffer, resAt, 4).fill(0);
  sumInstance().column_code_errors(at, outAt, block.rows, block.cols, scaleAt, zeroAt, qxor, resAt);
  addWasmSums(k, resAt, sums);
}

/** Stages x[start..start+n) at byte offset `at`; returns n, clipped to x's end and one chunk. */
function stageChunk(k: Kernels, x: Float32Array, start: number, at: number): number {
  const n = Math.min(CHUNK_FLOATS, x.length - start);
  f32(k, at, n).set(x.subarray(start, start + n));
  return n;
}

/** Smallest and largest value of x (NaNs ignored; +∞/−∞ when x is empty or all NaN) and its count of exact zeros. */
export function rangeAndZeros(x: Float32Array): { lo: number; hi: number; zeros: number } {
  const k = instance();
  const [resAt, at] = reserve(k, 16, Math.min(x.length, CHUNK_FLOATS) * 4);
  f32(k, resAt, 2).set([Infinity, -Infinity]);
  new Int32Array(k.memory.buffer, resAt + 8, 1)[0] = 0;
  for (let s = 0; s < x.length; s += CHUNK_FLOATS) k.flat_range(at, stageChunk(k, x, s, at), resAt);
  const [lo, hi] = f32(k, resAt, 2);
  return { lo, hi, zeros: new Int32Array(k.memory.buffer, resAt + 8, 1)[0] };
}

/**
 * count[b] = how many x in [lo, hi] fall in bin b = min(floor((x − lo) · scale), bins − 1), computed in
 * float64; NaN and values outside [lo, hi] are not counted.
 */
export function histogramCounts(
  x: Float32Array,
  lo: number,
  hi: number,
  scale: number,
  bins: number,
): Int32Array {
  const k = instance();
  const chunk = Math.min(x.length, CHUNK_FLOATS);
  const [countAt, at, scratchAt] = reserve(k, (bins + 1) * 4, chunk * 4, chunk * 4);
  new Int32Array(k.memory.buffer, countAt, bins + 1).fill(0);
  for (let s = 0; s < x.length; s += CHUNK_FLOATS)
    k.histogram(at, stageChunk(k, x, s, at), lo, hi, scale, countAt, bins, scratchAt);
  return new Int32Array(k.memory.buffer, countAt, bins).slice();
}

/**
 * codes[i] = code of x[i] under the same binning: lut[bin] where a bin lies wholly between two
 * midpoints, else (lut 0xffff, and for NaN or values outside [lo, hi]) the first j with x ≤ mids[j]
 * (mids ascending, the last +∞), shifted past zeroCode when zeros have their own code (zeroCode ≥ 0),
 * and zeroCode for exact zeros.
 */
export function assignCodesByBins(
  x: Float32Array,
  codes: Uint8Array,
  lo: number,
  hi: number,
  scale: number,
  lut: Uint16Array,
  mids: Float64Array,
  zeroCode: number,
): void {
  const k = instance();
  const chunk = Math.min(x.length, CHUNK_FLOATS);
  const bins = lut.length;
  const [lutAt, midsAt, at, outAt, scratchAt] = reserve(
    k,
    (bins + 1) * 2,
    mids.length * 8,
    chunk * 4,
    chunk,
    chunk * 4,
  );
  const staged = new Uint16Array(k.memory.buffer, lutAt, bins + 1);
  staged.set(lut);
  staged[bins] = 0xffff;
  new Float64Array(k.memory.buffer, midsAt, mids.length).set(mids);
  for (let s = 0; s < x.length; s += CHUNK_FLOATS) {
    const n = stageChunk(k, x, s, at);
    k.assign_codes(at, n, outAt, lo, hi, scale, lutAt, bins, midsAt, zeroCode, scratchAt);
    codes.set(u8(k, outAt, n), s);
  }
}

/**
 * Smallest and largest value (NaN ignored; +∞/−∞ when x is empty or all NaN), count of exact zeros,
 * mean and Σ (x − mean)² of x, in float64, in one staging of each chunk: two sweeps over the chunk
 * while it is in cache (its sum, then its squares about its own mean), the chunks merged by Chan et
 * al.'s pairwise update, as stable as Welford's one-value-at-a-time update and a fraction of its cost.
 */
export function moments(x: Float32Array): {
  lo: number;
  hi: number;
  zeros: number;
  mean: number;
  m2: number;
} {
  const k = instance();
  const sums = sumInstance();
  const [resAt, at] = reserve(k, 40, Math.min(x.length, CHUNK_FLOATS) * 4);
  let lo = Infinity;
  let hi = -Infinity;
  let zeros = 0;
  let count = 0;
  let mean = 0;
  let m2 = 0;
  for (let s = 0; s < x.length; s += CHUNK_FLOATS) {
    const n = stageChunk(k, x, s, at);
    sums.moments(at, n, resAt);
    const [cLo, cHi, cZeros, cSum, cM2] = new Float64Array(k.memory.buffer, resAt, 5);
    if (cLo < lo) lo = cLo;
    if (cHi > hi) hi = cHi;
    zeros += cZeros;
    const cMean = cSum / n;
    const total = count + n;
    const delta = cMean - mean;
    mean += (delta * n) / total;
    m2 += cM2 + ((delta * delta * count) / total) * n;
    count = total;
  }
  return { lo, hi, zeros, mean, m2 };
}

/**
 * Σ x², Σ (x − y)², max |x − y| (NaN ignored) and the count of exact zeros in y, accumulated in
 * float64: everything the preview's error statistics need, in one sweep over both arrays.
 */
export function errorSums(x: Float32Array, y: Float32Array): ErrorSums {
  const k = instance();
  const chunk = padded(Math.min(x.length, CHUNK_FLOATS));
  const [resAt, xAt, yAt] = reserve(k, 32, chunk * 4, chunk * 4);
  new Float64Array(k.memory.buffer, resAt, 4).fill(0);
  let padding = 0;
  for (let s = 0; s < x.length; s += CHUNK_FLOATS) {
    const n = Math.min(CHUNK_FLOATS, x.length - s);
    const p = padded(n);
    f32(k, xAt, p)
      .fill(0, n)
      .set(x.subarray(s, s + n));
    f32(k, yAt, p)
      .fill(0, n)
      .set(y.subarray(s, s + n));
    padding += p - n;
    k.error_stats(xAt, yAt, p, resAt);
  }
  const [signal, noise, maxAbs, zeros] = new Float64Array(k.memory.buffer, resAt, 4);
  return { signal, noise, maxAbs, zeros: zeros - padding };
}

const RADIX_BINS = 1 << 16;

/**
 * count[b] = how many x (over all of xs) have b as the high 16 bits of |x|'s bit pattern, or (with
 * `high` given) as the low 16 bits among those whose high 16 bits are `high`: the two passes of a radix
 * select on |x|. The counts are a view into wasm memory, valid until the next call into this module.
 */
export function absBitsHistogram(xs: readonly Float32Array[], high?: number): Uint32Array {
  const k = instance();
  const longest = xs.reduce((m, x) => Math.max(m, x.length), 0);
  const [countAt, at] = reserve(k, RADIX_BINS * 4, Math.min(longest, CHUNK_FLOATS) * 4);
  const counts = new Uint32Array(k.memory.buffer, countAt, RADIX_BINS).fill(0);
  for (const x of xs)
    for (let s = 0; s < x.length; s += CHUNK_FLOATS) {
      const n = stageChunk(k, x, s, at);
      if (high === undefined) k.abs_high_histogram(at, n, countAt);
      else k.abs_low_histogram(at, n, high, countAt);
    }
  return counts;
}

/**
 * out = x with 0 where |x|'s bits are below `bits`, and for the first `ties` (index order) whose bits
 * equal it; returns the ties left for the next tensor.
 */
export function applyAbsBitsThreshold(
  x: Float32Array,
  out: Float32Array,
  bits: number,
  ties: number,
): number {
  const k = instance();
  const [at] = reserve(k, Math.min(x.length, CHUNK_FLOATS) * 4);
  for (let s = 0; s < x.length; s += CHUNK_FLOATS) {
    const n = stageChunk(k, x, s, at);
    ties = k.apply_threshold(at, n, bits | 0, ties);
    out.set(f32(k, at, n), s);
  }
  return ties;
}

/**
 * N:M pruning along the rows of a row-major [rows, cols] matrix, for the whole groups of m rows and
 * the columns up to a multiple of 4: out gets each kept weight, 0 for the pruned (out's other
 * entries are left to the caller). Keeps the n largest |w| of each group, earlier rows winning ties.
 * Returns the columns done.
 */
export function pruneNMColumns(
  x: Float32Array,
  out: Float32Array,
  rows: number,
  cols: number,
  n: number,
  m: number,
): number {
  const vecCols = cols & ~3;
  const wholeRows = rows - (rows % m);
  if (vecCols === 0 || wholeRows === 0) return 0;
  const k = instance();
  const step = Math.max(m, rowsPerChunk(cols) - (rowsPerChunk(cols) % m));
  const chunkRows = Math.min(wholeRows, step);
  const [at, outAt] = reserve(k, chunkRows * cols * 4, chunkRows * cols * 4);
  for (let r = 0; r < wholeRows; r += step) {
    const rowsHere = Math.min(step, wholeRows - r);
    f32(k, at, rowsHere * cols).set(x.subarray(r * cols, (r + rowsHere) * cols));
    k.prune_nm_columns(at, outAt, rowsHere, vecCols, cols, n, m);
    const done = f32(k, outAt, rowsHere * cols);
    for (let i = 0; i < rowsHere; i++) out.set(done.subarray(i * cols, i * cols + vecCols), (r + i) * cols);
  }
  return vecCols;
}

type HalfOrFloatArray = Float32Array | Uint16Array;

/** out = kernel(src) elementwise, through zero-padded staged chunks (the fp16 casts). */
function castInChunks(
  src: HalfOrFloatArray,
  out: HalfOrFloatArray,
  kernel: 'float32_to_float16' | 'float16_to_float32',
): void {
  const k = instance();
  const chunk = padded(Math.min(src.length, CHUNK_FLOATS));
  const [srcAt, outAt] = reserve(k, chunk * src.BYTES_PER_ELEMENT, chunk * out.BYTES_PER_ELEMENT);
  const view = (like: HalfOrFloatArray, at: number, n: number) =>
    new (like.constructor as new (b: ArrayBufferLike, at: number, n: number) => HalfOrFloatArray)(
      k.memory.buffer,
      at,
      n,
    );
  for (let s = 0; s < src.length; s += CHUNK_FLOATS) {
    const n = Math.min(CHUNK_FLOATS, src.length - s);
    const staged = view(src, srcAt, padded(n));
    staged.set(src.subarray(s, s + n));
    staged.fill(0, n);
    k[kernel](srcAt, padded(n), outAt);
    out.set(view(out, outAt, n), s);
  }
}

/**
 * IEEE half bits of each float, round to nearest even; NaN stays NaN (quiet, sign kept). `out`: where
 * to write them (x.length halves; a split kernel's slice of the whole result), a new array by default.
 */
export function castFloat32ToFloat16(
  x: Float32Array,
  out: Uint16Array = new Uint16Array(x.length),
): Uint16Array {
  castInChunks(x, out, 'float32_to_float16');
  return out;
}

/** Floats of IEEE half bits (exact: every half is a float), into `out` (h.length floats) when given. */
export function castFloat16ToFloat32(
  h: Uint16Array,
  out: Float32Array = new Float32Array(h.length),
): Float32Array {
  castInChunks(h, out, 'float16_to_float32');
  return out;
}

/** Blocks along a row of `cols` columns cut into blocks of `block` (the last one shorter). */
const blocksPerRow = (cols: number, block: number) => Math.ceil(cols / block);

/**
 * For rows r0..r1−1 of a row-major [·, cols] matrix cut along each row into blocks of `block` columns
 * (the last of a row shorter; B = ceil(cols / block) per row): lo[r·B + b] = min(lo[r·B + b], x in
 * block b of row r), hi likewise with max, NaN ignored and a value replacing only a strictly smaller
 * (larger) one, as the scalar `if (v < lo) lo = v; else if (v > hi) hi = v` does. WebAssembly SIMD
 * along the row (rows.wat): the channels-on-rows counterpart of updateColumnRanges.
 */
export function updateRowBlockRanges(
  x: Float32Array,
  r0: number,
  r1: number,
  cols: number,
  block: number,
  lo: Float32Array,
  hi: Float32Array,
): void {
  if (r1 <= r0 || cols === 0) return;
  const k = instance();
  const rk = rowInstance();
  const per = blocksPerRow(cols, block);
  const step = rowsPerChunk(cols);
  const chunkRows = Math.min(r1 - r0, step);
  const [at, loAt, hiAt] = reserve(k, chunkRows * cols * 4, chunkRows * per * 4, chunkRows * per * 4);
  for (let r = r0; r < r1; r += step) {
    const rows = Math.min(step, r1 - r);
    const n = rows * per;
    f32(k, at, rows * cols).set(x.subarray(r * cols, (r + rows) * cols));
    f32(k, loAt, n).set(lo.subarray(r * per, r * per + n));
    f32(k, hiAt, n).set(hi.subarray(r * per, r * per + n));
    rk.row_block_ranges(at, rows, cols, block, loAt, hiAt);
    lo.set(f32(k, loAt, n), r * per);
    hi.set(f32(k, hiAt, n), r * per);
  }
}

/**
 * Codes of rows r0..r1−1 of a row-major [·, cols] matrix in blocks of `block` along each row, block j
 * (r·B + b, as updateRowBlockRanges) with float64 1/scale inv[j] and zero point zero[j]:
 * code = clamp(Math.round(x · inv) + z, lo, hi), x · inv in float64, written as bytes (the low 8 bits,
 * as an Int8Array store of an unclamped signed code is: lo = −∞, hi = +∞), NaN and ±∞ as 0. The scalar
 * row loops' arithmetic bit for bit, in WebAssembly SIMD (rows.wat). With `error`, the error of each
 * code against x, decoded as fround((code − zero[j]) · scale[j]) with the code read back signed when
 * `signed`, is added to error.sums in the same pass.
 */
export function quantizeRowBlocks(
  x: Float32Array,
  out: Uint8Array | Int8Array,
  r0: number,
  r1: number,
  cols: number,
  block: number,
  inv: Float64Array,
  zero: Float64Array,
  lo: number,
  hi: number,
  error?: { scale: Float32Array; sums: ErrorSums },
): void {
  if (r1 <= r0 || cols === 0) return;
  const k = instance();
  const per = blocksPerRow(cols, block);
  const step = rowsPerChunk(cols);
  const chunkRows = Math.min(r1 - r0, step);
  const [invAt, zeroAt, at, outAt, scaleAt, resAt] = reserve(
    k,
    chunkRows * per * 8,
    chunkRows * per * 8,
    chunkRows * cols * 4,
    chunkRows * cols,
    error ? chunkRows * per * 4 : 0,
    32,
  );
  for (let r = r0; r < r1; r += step) {
    const rows = Math.min(step, r1 - r);
    const n = rows * per;
    f32(k, at, rows * cols).set(x.subarray(r * cols, (r + rows) * cols));
    new Float64Array(k.memory.buffer, invAt, n).set(inv.subarray(r * per, r * per + n));
    new Float64Array(k.memory.buffer, zeroAt, n).set(zero.subarray(r * per, r * per + n));
    if (error) f32(k, scaleAt, n).set(error.scale.subarray(r * per, r * per + n));
    quantizeRowsAt(
      k,
      [at, outAt, invAt, zeroAt, scaleAt, resAt],
      rows,
      cols,
      block,
      lo,
      hi,
      out,
      r,
      error?.sums,
    );
  }
}

/**
 * rows.wat's row_block_quantize over rows staged at `at` (offsets: rows, codes, inv, zero, scale,
 * error sums), its codes copied into out's rows from `outRow` on, its error sums added to `sums`.
 */
function quantizeRowsAt(
  k: Kernels,
  [at, outAt, invAt, zeroAt, scaleAt, resAt]: readonly number[],
  rows: number,
  cols: number,
  block: number,
  lo: number,
  hi: number,
  out: Uint8Array | Int8Array,
  outRow: number,
  sums?: ErrorSums,
): void {
  if (sums) new Float64Array(k.memory.buffer, resAt, 4).fill(0);
  const signed = out instanceof Int8Array ? 1 : 0;
  rowInstance().row_block_quantize(
    at,
    outAt,
    rows,
    cols,
    block,
    invAt,
    zeroAt,
    scaleAt,
    lo,
    hi,
    signed,
    sums ? resAt : 0,
  );
  new Uint8Array(out.buffer, out.byteOffset, out.length).set(u8(k, outAt, rows * cols), outRow * cols);
  if (sums) addWasmSums(k, resAt, sums);
}

/**
 * Rows r0..r1−1 of a row-major [·, cols] matrix staged in wasm memory once for both row kernels: their
 * block ranges (from 0, so they hold zero; [rows, B] as updateRowBlockRanges) and room for the
 * caller's per-block 1/scale, zero point and scale, which quantizeStagedRows then reads where they
 * are. One staging instead of two (ranges, then codes) and no copies of the per-block arrays. The
 * arrays are views into wasm memory: valid until the next call into this module, which
 * quantizeStagedRows checks.
 */
export interface StagedRows {
  r0: number;
  rows: number;
  cols: number;
  block: number;
  lo: Float32Array;
  hi: Float32Array;
  inv: Float64Array;
  zero: Float64Array;
  scale: Float32Array;
  /** wasm byte offsets: staged rows, codes, inv, zero, scale, error sums */
  at: [number, number, number, number, number, number];
  generation: number;
}

export function stageRows(x: Float32Array, r0: number, r1: number, cols: number, block: number): StagedRows {
  const k = instance();
  const rows = r1 - r0;
  const n = rows * blocksPerRow(cols, block);
  const [invAt, zeroAt, at, outAt, loAt, hiAt, scaleAt, resAt] = reserve(
    k,
    n * 8,
    n * 8,
    rows * cols * 4,
    rows * cols,
    n * 4,
    n * 4,
    n * 4,
    32,
  );
  f32(k, at, rows * cols).set(x.subarray(r0 * cols, r1 * cols));
  const lo = f32(k, loAt, n).fill(0);
  const hi = f32(k, hiAt, n).fill(0);
  if (rows > 0 && cols > 0) rowInstance().row_block_ranges(at, rows, cols, block, loAt, hiAt);
  return {
    r0,
    rows,
    cols,
    block,
    lo,
    hi,
    inv: new Float64Array(k.memory.buffer, invAt, n),
    zero: new Float64Array(k.memory.buffer, zeroAt, n),
    scale: f32(k, scaleAt, n),
    at: [at, outAt, invAt, zeroAt, scaleAt, resAt],
    generation,
  };
}

/**
 * quantizeRowBlocks on staged rows, with the inv, zero (and, for `sums`, scale) their caller filled
 * in, into out's rows r0…; the error sums added to `sums` when given.
 */
export function quantizeStagedRows(
  staged: StagedRows,
  out: Uint8Array | Int8Array,
  lo: number,
  hi: number,
  sums?: ErrorSums,
): void {
  if (staged.generation !== generation) throw new Error('staged rows were overwritten by a later staging');
  const { rows, cols, block, r0 } = staged;
  if (rows === 0 || cols === 0) return;
  quantizeRowsAt(instance(), staged.at, rows, cols, block, lo, hi, out, r0, sums);
}

/**
 * out = ((q xor qxor) − zero[j]) · scale[j] in float32 for rows r0..r1−1 of a [·, cols] matrix of
 * byte codes in blocks of `block` along each row, block j = r·B + b as updateRowBlockRanges: the row
 * path's decodes, bit for bit the scalar fround((code − z) · s) (see decodeColumns; an Int8Array's
 * two's complement is read with qxor 128 and zero[j] + 128).
 */
export function decodeRowBlocks(
  q: Uint8Array | Int8Array,
  out: Float32Array,
  r0: number,
  r1: number,
  cols: number,
  block: number,
  scale: Float32Array,
  zero: Float32Array,
  qxor: number,
): void {
  if (r1 <= r0 || cols === 0) return;
  const k = instance();
  const rk = rowInstance();
  const per = blocksPerRow(cols, block);
  const step = rowsPerChunk(cols);
  const chunkRows = Math.min(r1 - r0, step);
  const [qAt, outAt, scaleAt, zeroAt] = reserve(
    k,
    chunkRows * cols,
    chunkRows * cols * 4,
    chunkRows * per * 4,
    chunkRows * per * 4,
  );
  const bytes = new Uint8Array(q.buffer, q.byteOffset, q.length);
  for (let r = r0; r < r1; r += step) {
    const rows = Math.min(step, r1 - r);
    const n = rows * per;
    u8(k, qAt, rows * cols).set(bytes.subarray(r * cols, (r + rows) * cols));
    f32(k, scaleAt, n).set(scale.subarray(r * per, r * per + n));
    f32(k, zeroAt, n).set(zero.subarray(r * per, r * per + n));
    rk.row_block_decode(qAt, outAt, rows, cols, block, scaleAt, zeroAt, qxor);
    out.set(f32(k, outAt, rows * cols), r * cols);
  }
}
