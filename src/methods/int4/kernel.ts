/**
 * int4 block-wise quantization along the reduction axis, as onnxruntime's MatMulNBits quantizer does it.
 * Codes are kept unpacked, channel-major and zero-padded to whole blocks: codes[c * kPad + k] in 0..15.
 */

import { quantizeStagedBlock, stageColumnBlock, type StagedColumnBlock } from '../../core/simd/index.ts';
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
 * Scales (and zero points) of block b for every column, and the 1/scale and offset the code loop
 * takes: code = floor(x / s + z + 0.5), where x / s + z ≥ −0.5 by construction, so only the top needs
 * a clamp. A function of its own, called per block, so V8 keeps it optimised: as a loop inside the
 * per-tensor function it ran 5× slower whenever a garbage collection had dropped its on-stack-replaced code.
 */
function blockScales(
  block: StagedColumnBlock,
  b: number,
  blocks: number,
  scales: Float32Array,
  zeroPoints: Uint8Array | null,
): void {
  const { lo, hi, inv, offset, cols } = block;
  for (let c = 0, at = b; c < cols; c++, at += blocks) {
    inv[c] = blockScale(lo[c], hi[c], at, scales, zeroPoints);
    offset[c] = (zeroPoints ? zeroPoints[at] : 8) + 0.5;
  }
}

/**
 * Symmetric: s = m / −8 where m is the block's value of largest magnitude, code = min(round(x / s), 7) + 8.
 * Asymmetric: s = (max − min) / 15 with 0 inside [min, max], z = round(−min / s), code = clamp(round(x / s) + z, 0, 15).
 * Blocks run along the reduction axis: down the columns of a [K, N] MatMul weight (channelAxis 1),
 * along the rows of a [C, K] table (channelAxis 0).
 */
export function quantizeInt4Blockwise(
  x: Float32Array,
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
  blockSize: number,
  symmetric: boolean,
): Int4Quantized {
  const channels = channelAxis === 1 ? cols : rows;
  const k = channelAxis === 1 ? rows : cols;
  const blocks = Math.ceil(k / blockSize);
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(channels * blocks);
  const zeroPoints = symmetric ? null : new Uint8Array(channels * blocks);
  if (channelAxis === 0) {
    for (let c = 0; c < channels; c++) {
      checkCancelled();
      for (let b = 0; b < blocks; b++) {
        const start = c * cols + b * blockSize;
        const end = c * cols + Math.min(k, (b + 1) * blockSize);
        let lo = 0;
        let hi = 0;
        for (let i = start; i < end; i++) {
          const v = x[i];
          if (v < lo) lo = v;
          else if (v > hi) hi = v;
        }
        const inv = blockScale(lo, hi, c * blocks + b, scales, zeroPoints);
        const z = zeroPoints ? zeroPoints[c * blocks + b] : 8;
        for (let i = start; i < end; i++) {
          const q = Math.round(x[i] * inv) + z;
          codes[i] = q > 15 ? 15 : q < 0 ? 0 : q;
        }
      }
    }
    return { channels, k, blockSize, blocksPerChannel: blocks, codes, scales, zeroPoints };
  }
  for (let b = 0; b < blocks; b++) {
    checkCancelled();
    const block = stageColumnBlock(x, b * blockSize, Math.min(k, (b + 1) * blockSize), cols);
    blockScales(block, b, blocks, scales, zeroPoints);
    quantizeStagedBlock(block, codes, 15, 0);
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
    for (let r = 0; r < rows; r++)
      for (let b = 0; b < blocks; b++) {
        const at = r * blocks + b;
        const s = scales[at];
        const z = zeroPoints ? zeroPoints[at] : 8;
        for (
          let i = r * cols + b * blockSize, end = r * cols + Math.min(cols, (b + 1) * blockSize);
          i < end;
          i++
        )
          out[i] = (codes[i] - z) * s;
      }
    return out;
  }
  // blocks run down the columns: gather each block's per-column scale and zero point once
  const s = new Float32Array(cols);
  const z = new Float32Array(cols).fill(8);
  for (let r = 0; r < rows; r++) {
    if (r % blockSize === 0) {
      for (let c = 0, at = r / blockSize; c < cols; c++, at += blocks) {
        s[c] = scales[at];
        if (zeroPoints) z[c] = zeroPoints[at];
      }
    }
    for (let c = 0, i = r * cols; c < cols; c++, i++) out[i] = (codes[i] - z[c]) * s[c];
  }
  return out;
}

/** Codes of channel c in reduction order, zero-padded (code z) to whole blocks: [channels, blocks · blockSize]. */
function channelMajorCodes(quant: Int4Quantized, rows: number, cols: number, channelAxis: 0 | 1): Uint8Array {
  const { channels, k, blockSize, blocksPerChannel: blocks, codes } = quant;
  const kPad = blocks * blockSize;
  const out = new Uint8Array(channels * kPad).fill(quant.zeroPoints ? 0 : 8);
  if (channelAxis === 0) {
    for (let c = 0; c < channels; c++) out.set(codes.subarray(c * cols, c * cols + k), c * kPad);
  } else {
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * kPad + r] = codes[r * cols + c];
  }
  return out;
}

/** MatMulNBits' B: [N, blocks, blockSize / 2] bytes, the first of each pair of codes in the low nibble. */
export function packMatMulNBits(
  quant: Int4Quantized,
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
): Uint8Array {
  const codes = channelMajorCodes(quant, rows, cols, channelAxis);
  const out = new Uint8Array(codes.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = codes[2 * i] | (codes[2 * i + 1] << 4);
  return out;
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
  const out = new Uint8Array((values.length + 1) >> 1);
  for (let i = 0; i < values.length; i++) out[i >> 1] |= ((values[i] ^ xor) & 15) << ((i & 1) * 4);
  return out;
}
