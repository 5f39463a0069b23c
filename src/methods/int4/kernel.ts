/**
 * int4 block-wise quantization along the reduction axis, as onnxruntime's MatMulNBits quantizer does it.
 * Codes are kept unpacked, channel-major and zero-padded to whole blocks: codes[c * kPad + k] in 0..15.
 */

import {
  decodeColumns,
  decodeRowBlocks,
  quantizeStagedBlock,
  quantizeStagedRows,
  stageColumnBlock,
  stagedBlockErrors,
  stageRows,
  type ErrorSums,
  type StagedColumnBlock,
  type StagedRows,
} from '../../core/simd/index.ts';
import { checkCancelled } from '../../core/cancel.ts';

export interface Int4Quantized {
  channels: number;
  /** Length of the reduction axis (K). */
  k: number;
  blockSize: number;
  blocksPerChannel: number;
  /** 4-bit codes 0..15, one byte each, in the matrix's own [rows, cols] layout. */
  codes: Uint8Array;
  /** [channels, blocksPerChannel] */
  scales: Float32Array;
  /** [channels, blocksPerChannel]; null when symmetric (the implicit zero point is 8). */
  zeroPoints: Uint8Array | null;
}

/** Per-block scale (and zero point) from the block's range; returns 1/scale for the quantize loop. */
function blockScale(
  lo: number,
  hi: number,
  at: number,
  scales: Float32Array,
  zeroPoints: Uint8Array | null,
): number {
  if (!zeroPoints) {
    scales[at] = (-lo > hi ? lo : hi) / -8;
  } else {
    scales[at] = (hi - lo) / 15;
    zeroPoints[at] = scales[at] !== 0 ? Math.min(15, Math.max(0, Math.round(-lo / scales[at]))) : 8;
  }
  return scales[at] !== 0 ? 1 / scales[at] : 0;
}

/**
 * Scales (and zero points) of a staged block for every column, into the block's own `scale` and
 * `zero` (contiguous: the caller moves them to their [channels, blocks] places a tile at a time), and
 * the 1/scale and offset the code loop takes: code = floor(x / s + z + 0.5), where x / s + z ≥ −0.5 by
 * construction, so only the top needs a clamp. The same float arithmetic as blockScale. A function of
 * its own, called per block, so V8 keeps it optimised: as a loop inside the per-tensor function it ran
 * 5× slower whenever a garbage collection had dropped its on-stack-replaced code.
 */
function blockScales(block: StagedColumnBlock, symmetric: boolean): void {
  const { lo, hi, inv, offset, scale, zero, cols } = block;
  for (let c = 0; c < cols; c++) {
    const l = lo[c];
    const h = hi[c];
    let s: number;
    let z = 8;
    if (symmetric) s = Math.fround((-l > h ? l : h) / -8);
    else {
      s = Math.fround((h - l) / 15);
      if (s !== 0) z = Math.min(15, Math.max(0, Math.round(-l / s)));
    }
    scale[c] = s;
    zero[c] = z;
    inv[c] = s !== 0 ? 1 / s : 0;
    offset[c] = z + 0.5;
  }
}

/**
 * blockScale for every block of staged rows: scales (and zero points) into their places from `at` on,
 * 1/scale, zero point and scale into the staging for the code kernel. A function of its own, called per
 * chunk, so V8 keeps it optimised (see blockScales).
 */
function rowBlockScales(
  staged: StagedRows,
  at: number,
  scales: Float32Array,
  zeroPoints: Uint8Array | null,
): void {
  const { lo, hi, inv, zero, scale } = staged;
  for (let j = 0; j < lo.length; j++) {
    inv[j] = blockScale(lo[j], hi[j], at + j, scales, zeroPoints);
    zero[j] = zeroPoints ? zeroPoints[at + j] : 8;
    scale[j] = scales[at + j];
  }
}

/** Floats of a [C, K] table quantized per step along its rows: a chunk the kernels stage in one go. */
const ROW_CHUNK_FLOATS = 1 << 16;

/** Blocks whose per-column scales are gathered before they go to their strided [channels, blocks] places. */
const SCALE_TILE_BLOCKS = 16;

/**
 * Scales (and zero points) of blocks b0..b0+n−1, gathered as rows [n, cols], into [channels, blocks]:
 * n consecutive values per column. Written straight from each block, every column's scale went to a
 * different cache line (a stride of `blocks` floats): the quantizer took 3–13 % longer that way.
 */
function scatterScaleTile(
  tileScales: Float32Array,
  tileZeros: Uint8Array | null,
  b0: number,
  n: number,
  cols: number,
  blocks: number,
  scales: Float32Array,
  zeroPoints: Uint8Array | null,
): void {
  for (let c = 0; c < cols; c++)
    for (let j = 0, at = c * blocks + b0; j < n; j++, at++) scales[at] = tileScales[j * cols + c];
  if (tileZeros && zeroPoints)
    for (let c = 0; c < cols; c++)
      for (let j = 0, at = c * blocks + b0; j < n; j++, at++) zeroPoints[at] = tileZeros[j * cols + c];
}

/**
 * Symmetric: s = m / −8 where m is the block's value of largest magnitude, code = min(round(x / s), 7) + 8.
 * Asymmetric: s = (max − min) / 15 with 0 inside [min, max], z = round(−min / s), code = clamp(round(x / s) + z, 0, 15).
 * Blocks run along the reduction axis: down the columns of a [K, N] MatMul weight (channelAxis 1),
 * along the rows of a [C, K] table (channelAxis 0).
 * With `error`, the error of the codes against x (what dequantizeInt4Blockwise would decode) is added
 * to it in the same pass, while each block is still in cache: a report then needs no decoded copy.
 */
export function quantizeInt4Blockwise(
  x: Float32Array,
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
  blockSize: number,
  symmetric: boolean,
  error?: ErrorSums,
): Int4Quantized {
  const channels = channelAxis === 1 ? cols : rows;
  const k = channelAxis === 1 ? rows : cols;
  const blocks = Math.ceil(k / blockSize);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(channels * blocks);
  const zeroPoints = symmetric ? null : new Uint8Array(channels * blocks);
  if (channelAxis === 0) {
    // blocks along the rows, a chunk of rows at a time staged once (WebAssembly SIMD): their ranges,
    // the scales here, then the codes with the scalar rounding bit for bit; a cancel is seen between
    const step = Math.max(1, Math.floor(ROW_CHUNK_FLOATS / Math.max(1, cols)));
    for (let r0 = 0; r0 < rows; r0 += step) {
      checkCancelled();
      const staged = stageRows(x, r0, Math.min(rows, r0 + step), cols, blockSize);
      rowBlockScales(staged, r0 * blocks, scales, zeroPoints);
      quantizeStagedRows(staged, codes, 0, 15, error);
    }
    return { channels, k, blockSize, blocksPerChannel: blocks, codes, scales, zeroPoints };
  }
  const tileScales = new Float32Array(Math.min(blocks, SCALE_TILE_BLOCKS) * cols);
  const tileZeros = zeroPoints && new Uint8Array(tileScales.length);
  for (let b = 0; b < blocks; b++) {
    checkCancelled();
    const block = stageColumnBlock(x, b * blockSize, Math.min(k, (b + 1) * blockSize), cols);
    blockScales(block, symmetric);
    const row = b % SCALE_TILE_BLOCKS;
    tileScales.set(block.scale, row * cols);
    tileZeros?.set(block.zero, row * cols);
    quantizeStagedBlock(block, codes, 15, 0);
    if (error) stagedBlockErrors(block, error);
    if (row === SCALE_TILE_BLOCKS - 1 || b === blocks - 1)
      scatterScaleTile(tileScales, tileZeros, b - row, row + 1, cols, blocks, scales, zeroPoints);
  }
  return { channels, k, blockSize, blocksPerChannel: blocks, codes, scales, zeroPoints };
}

/** x' = (code − z) · s, in float32 (an exact small integer times a float32 rounds once). */
export function dequantizeInt4Blockwise(
  quant: Int4Quantized,
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
): Float32Array {
  const { blockSize, blocksPerChannel: blocks, codes, scales, zeroPoints } = quant;
  const out = new Float32Array(rows * cols);
  if (channelAxis === 0) {
    // blocks along the rows: WebAssembly SIMD, the same float32 products
    const zero = zeroPoints ? new Float32Array(zeroPoints) : new Float32Array(scales.length).fill(8);
    decodeRowBlocks(codes, out, 0, rows, cols, blockSize, scales, zero, 0);
    return out;
  }
  // blocks run down the columns: each block's per-column scale and zero point gathered once, then
  // its rows decoded four columns at a time (WebAssembly SIMD, the same float32 products)
  const s = new Float32Array(cols);
  const z = new Float32Array(cols).fill(8);
  for (let b = 0; b < blocks; b++) {
    for (let c = 0, at = b; c < cols; c++, at += blocks) {
      s[c] = scales[at];
      if (zeroPoints) z[c] = zeroPoints[at];
    }
    decodeColumns(codes, out, b * blockSize, Math.min(rows, (b + 1) * blockSize), cols, s, z, 0);
  }
  return out;
}

/** Whether this platform's typed arrays are little-endian (every engine the studio runs on). */
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

/**
 * MatMulNBits' B: [N, blocks, blockSize / 2] bytes, the first of each pair of codes in the low nibble;
 * channel c's codes run along the reduction axis, zero-padded (code z: 8 symmetric, 0 asymmetric, as
 * onnxruntime's quantizer pads) to whole blocks. Packed straight from the codes' own layout in one
 * pass, with no channel-major copy of the codes (tests/methods/int4-fused.test.ts checks it against that
 * two-pass definition byte for byte).
 */
export function packMatMulNBits(
  quant: Int4Quantized,
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
): Uint8Array {
  const { channels, blockSize, blocksPerChannel: blocks, codes } = quant;
  const k = channelAxis === 1 ? rows : cols;
  const pad = quant.zeroPoints ? 0 : 8;
  const rowBytes = (blocks * blockSize) / 2;
  const out = new Uint8Array(channels * rowBytes);
  if (channelAxis === 0) {
    // codes are channel-major already: pair them up along each row, the last pair padded
    for (let c = 0; c < channels; c++) {
      const from = c * cols;
      const to = c * rowBytes;
      const pairs = k >> 1;
      for (let j = 0; j < pairs; j++) out[to + j] = codes[from + 2 * j] | (codes[from + 2 * j + 1] << 4);
      if (k & 1) out[to + pairs] = codes[from + k - 1] | (pad << 4);
      out.fill(pad | (pad << 4), to + ((k + 1) >> 1), to + rowBytes);
    }
    return out;
  }
  // [K, N] codes: column c of each row pair (2j, 2j + 1) gives out[c][j]
  const fullRows = k - (k % 8);
  let c0 = 0;
  if (LITTLE_ENDIAN && cols % 4 === 0 && rowBytes % 4 === 0 && codes.byteOffset % 4 === 0)
    c0 = packColumnsByWords(codes, cols, fullRows, rowBytes, out);
  // what the word loop left: every row of every column when it could not run (c0 = 0), else the rows past fullRows
  for (let c = 0; c < cols; c++) {
    const to = c * rowBytes;
    for (let r = c < c0 ? fullRows : 0; r < k; r += 2) {
      const hi = r + 1 < k ? codes[(r + 1) * cols + c] : pad;
      out[to + (r >> 1)] = codes[r * cols + c] | (hi << 4);
    }
    out.fill(pad | (pad << 4), to + ((k + 1) >> 1), to + rowBytes);
  }
  return out;
}

/**
 * The bulk of packMatMulNBits for [K, N] codes (N a multiple of 4): rows 0..fullRows−1 (a multiple of 8)
 * of every column, four columns and eight rows at a time through 32-bit words. A word of row r holds
 * four columns' codes; (row 2j) | (row 2j+1) << 4 packs four columns' byte j at once (codes are ≤ 15),
 * and four such words j..j+3 transposed as a 4 × 4 byte matrix give each column's bytes j..j+3 as one
 * word. Returns the columns done (all of them).
 */
function packColumnsByWords(
  codes: Uint8Array,
  cols: number,
  fullRows: number,
  rowBytes: number,
  out: Uint8Array,
): number {
  const words = new Uint32Array(codes.buffer, codes.byteOffset, codes.length >> 2);
  const out32 = new Uint32Array(out.buffer, out.byteOffset, out.length >> 2);
  const stride = cols >> 2; // words per row
  const outStride = rowBytes >> 2; // words per channel
  // tiles of 128 rows, every column of one before the next: the tile's rows are read in order while
  // they stay in cache, and each column gets a whole 64-byte line of output per tile (a column at a
  // time down all rows read one line of every row per column: 1.8–3× the CPU time)
  for (let r0 = 0; r0 < fullRows; r0 += PACK_TILE_ROWS) {
    const r1 = Math.min(fullRows, r0 + PACK_TILE_ROWS);
    for (let w = 0; w < stride; w++) packWordColumns(words, out32, stride, outStride, w, r0, r1);
  }
  return cols;
}

const PACK_TILE_ROWS = 128;

/** Rows r0..r1−1 (multiples of 8) of columns 4w..4w+3, into words (4w + t) · outStride + r / 8 of out32. */
function packWordColumns(
  words: Uint32Array,
  out32: Uint32Array,
  stride: number,
  outStride: number,
  w: number,
  r0: number,
  r1: number,
): void {
  for (
    let r = r0, i = r0 * stride + w, o = 4 * w * outStride + (r0 >> 3);
    r < r1;
    r += 8, i += 8 * stride, o++
  ) {
    const p0 = words[i] | (words[i + stride] << 4);
    const p1 = words[i + 2 * stride] | (words[i + 3 * stride] << 4);
    const p2 = words[i + 4 * stride] | (words[i + 5 * stride] << 4);
    const p3 = words[i + 6 * stride] | (words[i + 7 * stride] << 4);
    // byte t of p_j is column t's byte j: transpose
    out32[o] = (p0 & 0xff) | ((p1 & 0xff) << 8) | ((p2 & 0xff) << 16) | (p3 << 24);
    out32[o + outStride] = ((p0 >>> 8) & 0xff) | (p1 & 0xff00) | ((p2 & 0xff00) << 8) | ((p3 & 0xff00) << 16);
    out32[o + 2 * outStride] =
      ((p0 >>> 16) & 0xff) | ((p1 >>> 8) & 0xff00) | (p2 & 0xff0000) | ((p3 & 0xff0000) << 8);
    out32[o + 3 * outStride] =
      (p0 >>> 24) | ((p1 >>> 16) & 0xff00) | ((p2 >>> 8) & 0xff0000) | (p3 & 0xff000000);
  }
}

/** MatMulNBits' zero points: per channel, ceil(blocks / 2) bytes, two 4-bit zero points per byte. */
export function packZeroPointsMatMulNBits(quant: Int4Quantized): Uint8Array {
  const { channels, blocksPerChannel: blocks, zeroPoints } = quant;
  if (!zeroPoints) throw new Error('symmetric quantization has no zero points');
  const perChannel = Math.ceil(blocks / 2);
  const out = new Uint8Array(channels * perChannel);
  for (let c = 0; c < channels; c++) {
    for (let b = 0; b < blocks; b++) {
      out[c * perChannel + (b >> 1)] |= zeroPoints[c * blocks + b] << ((b & 1) * 4);
    }
  }
  return out;
}

/**
 * Blocked DequantizeLinear (opset 21) wants the weight in its own layout as int4 (symmetric, value =
 * code - 8) or uint4 (asymmetric), two per byte, first element in the low nibble.
 */
export function packInt4Natural(quant: Int4Quantized): Uint8Array {
  // int4 two's complement of (code − 8) is code ^ 8 in the low 4 bits
  return packNibbles(quant.codes, quant.zeroPoints ? 0 : 8);
}

/** Scales (or zero points) for blocked DequantizeLinear: the weight's shape with the reduction axis cut to blocks. */
export function blockedScaleLayout<T extends Float32Array | Uint8Array>(
  perChannelBlocks: T,
  channels: number,
  blocks: number,
  channelAxis: 0 | 1,
): T {
  if (channelAxis === 0) return perChannelBlocks; // [channels, blocks] already
  const out = new (perChannelBlocks.constructor as { new (n: number): T })(channels * blocks);
  for (let c = 0; c < channels; c++)
    for (let b = 0; b < blocks; b++) out[b * channels + c] = perChannelBlocks[c * blocks + b];
  return out;
}

/** 4-bit values (each xor'ed with `xor`) packed two per byte in flat order, the first in the low nibble. */
export function packNibbles(values: Uint8Array, xor = 0): Uint8Array {
  const n = values.length;
  const out = new Uint8Array((n + 1) >> 1);
  let i = 0;
  if (LITTLE_ENDIAN && values.byteOffset % 4 === 0) {
    // eight values (two words) at a time: w | w >>> 4 puts values 2j and 2j + 1 of a word in its
    // byte 2j (each is ≤ 15 once masked), and two such bytes per word make half an output word
    const words = new Uint32Array(values.buffer, values.byteOffset, n >> 2);
    const out32 = new Uint32Array(out.buffer, 0, out.length >> 2);
    const x = (xor & 15) * 0x01010101;
    for (let m = 0; m < n >> 3; m++) {
      const a = (words[2 * m] ^ x) & 0x0f0f0f0f;
      const b = (words[2 * m + 1] ^ x) & 0x0f0f0f0f;
      const pa = a | (a >>> 4);
      const pb = b | (b >>> 4);
      out32[m] = (pa & 0xff) | ((pa >>> 8) & 0xff00) | ((pb & 0xff) << 16) | ((pb & 0xff0000) << 8);
    }
    i = (n >> 3) << 3;
  }
  for (; i < n; i++) out[i >> 1] |= ((values[i] ^ xor) & 15) << ((i & 1) * 4);
  return out;
}
