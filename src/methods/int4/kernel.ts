/**
 * int4 block-wise quantization along the reduction axis, as onnxruntime's MatMulNBits quantizer does it.
 * Codes are kept unpacked, channel-major and zero-padded to whole blocks: codes[c * kPad + k] in 0..15.
 */

export interface Int4Quantized {
  channels: number;
  /** Length of the reduction axis (K). */
  k: number;
  blockSize: number;
  blocksPerChannel: number;
  /** Unpacked 4-bit codes, [channels, blocksPerChannel * blockSize]. */
  codes: Uint8Array;
  /** [channels, blocksPerChannel] */
  scales: Float32Array;
  /** [channels, blocksPerChannel]; null when symmetric (the implicit zero point is 8). */
  zeroPoints: Uint8Array | null;
}

/**
 * Symmetric: s = m / -8 where m is the block's value of largest magnitude, code = clamp(round(x / s), -8, 7) + 8.
 * Asymmetric: s = (max - min) / 15 with 0 inside [min, max], z = round(-min / s), code = clamp(round(x / s) + z, 0, 15).
 * Element (k, c) of the matrix is x[k * strideK + c * strideC].
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
  const strideK = channelAxis === 1 ? cols : 1;
  const strideC = channelAxis === 1 ? 1 : cols;
  const blocks = Math.ceil(k / blockSize);
  const kPad = blocks * blockSize;
  const codes = new Uint8Array(channels * kPad).fill(symmetric ? 8 : 0);
  const scales = new Float32Array(channels * blocks);
  const zeroPoints = symmetric ? null : new Uint8Array(channels * blocks);
  const lo = new Float64Array(channels);
  const hi = new Float64Array(channels);
  const inv = new Float64Array(channels);
  const zp = new Float64Array(channels);
  for (let b = 0; b < blocks; b++) {
    const k0 = b * blockSize;
    const k1 = Math.min(k, k0 + blockSize);
    lo.fill(0);
    hi.fill(0);
    // walk the block in memory order: k outer, channel inner when channels are columns
    for (let kk = k0; kk < k1; kk++) {
      const rowBase = kk * strideK;
      for (let c = 0; c < channels; c++) {
        const v = x[rowBase + c * strideC];
        if (v < lo[c]) lo[c] = v;
        if (v > hi[c]) hi[c] = v;
      }
    }
    for (let c = 0; c < channels; c++) {
      const at = c * blocks + b;
      if (symmetric) {
        const m = -lo[c] > hi[c] ? lo[c] : hi[c];
        scales[at] = m / -8;
        zp[c] = 8;
      } else {
        scales[at] = (hi[c] - lo[c]) / 15;
        zp[c] = scales[at] !== 0 ? Math.min(15, Math.max(0, Math.round(-lo[c] / scales[at]))) : 8;
        (zeroPoints as Uint8Array)[at] = zp[c];
      }
      inv[c] = scales[at] !== 0 ? 1 / scales[at] : 0;
    }
    for (let kk = k0; kk < k1; kk++) {
      const rowBase = kk * strideK;
      for (let c = 0; c < channels; c++) {
        const q = Math.round(x[rowBase + c * strideC] * inv[c]) + zp[c];
        codes[c * kPad + kk] = q > 15 ? 15 : q < 0 ? 0 : q;
      }
    }
  }
  return { channels, k, blockSize, blocksPerChannel: blocks, codes, scales, zeroPoints };
}

/** x' = (code - z) · s, in float32, back in the matrix's own layout. */
export function dequantizeInt4Blockwise(
  quant: Int4Quantized,
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
): Float32Array {
  const { channels, k, blockSize, blocksPerChannel: blocks, codes, scales, zeroPoints } = quant;
  const strideK = channelAxis === 1 ? cols : 1;
  const strideC = channelAxis === 1 ? 1 : cols;
  const kPad = blocks * blockSize;
  const out = new Float32Array(rows * cols);
  for (let kk = 0; kk < k; kk++) {
    const b = (kk / blockSize) | 0;
    for (let c = 0; c < channels; c++) {
      const at = c * blocks + b;
      const z = zeroPoints ? zeroPoints[at] : 8;
      out[kk * strideK + c * strideC] = (codes[c * kPad + kk] - z) * scales[at];
    }
  }
  return out;
}

/** MatMulNBits' B: [N, blocks, blockSize / 2] bytes, the first of each pair of codes in the low nibble. */
export function packMatMulNBits(quant: Int4Quantized): Uint8Array {
  const { codes } = quant;
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
export function packInt4Natural(
  quant: Int4Quantized,
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
): Uint8Array {
  const { blockSize, blocksPerChannel: blocks, codes, zeroPoints } = quant;
  const kPad = blocks * blockSize;
  const n = rows * cols;
  const out = new Uint8Array((n + 1) >> 1);
  // int4 two's complement of (code - 8) is code ^ 8 in the low 4 bits
  const flip = zeroPoints ? 0 : 8;
  for (let r = 0; r < rows; r++) {
    for (let col = 0; col < cols; col++) {
      const i = r * cols + col;
      const c = channelAxis === 1 ? col : r;
      const kk = channelAxis === 1 ? r : col;
      const nibble = codes[c * kPad + kk] ^ flip;
      out[i >> 1] |= nibble << ((i & 1) * 4);
    }
  }
  return out;
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

/** Uint4 zero points packed two per byte in flat order (DequantizeLinear opset 21). */
export function packNibbles(values: Uint8Array): Uint8Array {
  const out = new Uint8Array((values.length + 1) >> 1);
  for (let i = 0; i < values.length; i++) out[i >> 1] |= (values[i] & 15) << ((i & 1) * 4);
  return out;
}
