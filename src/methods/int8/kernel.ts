/**
 * int8 weight quantization kernels: flat loops over a row-major [rows, cols] matrix, specialised by
 * where the channels run so the inner loop is a straight walk through memory.
 */

import {
  decodeColumns,
  decodeRowBlocks,
  quantizeColumns,
  quantizeRowBlocks,
  quantizeStagedRows,
  stageRows,
  updateColumnAbsMax,
  updateColumnRanges,
  updateRowBlockRanges,
  type ErrorSums,
} from '../../core/simd/index.ts';

export interface Int8Quantized {
  /** Same layout as the input; int8 when symmetric, uint8 with zero points otherwise. */
  q: Int8Array | Uint8Array;
  /** One scale per channel (or one for the tensor). */
  scales: Float32Array;
  zeroPoints: Uint8Array | null;
}

/** Floats per call when a whole tensor has one scale: a chunk the kernels stage in one go. */
const FLAT_CHUNK = 1 << 16;

/** lo[ch], hi[ch] = min, max over each channel; channels are columns (axis 1) or one (null). */
function channelRanges(
  x: Float32Array,
  rows: number,
  cols: number,
  channelAxis: 1 | null,
  symmetric: boolean,
): { lo: Float32Array; hi: Float32Array } {
  const n = channelAxis === 1 ? cols : 1;
  const lo = new Float32Array(n);
  const hi = new Float32Array(n);
  if (channelAxis === 1 && symmetric) {
    // a symmetric scale only needs max |x|: one array to update instead of two
    updateColumnAbsMax(x, 0, rows, cols, hi);
    for (let c = 0; c < cols; c++) lo[c] = -hi[c];
  } else if (channelAxis === 1) {
    updateColumnRanges(x, 0, rows, cols, lo, hi);
  } else {
    // one range for the tensor: the flat array a chunk at a time, each chunk one block of one row
    for (let s = 0, n = rows * cols; s < n; s += FLAT_CHUNK) {
      const m = Math.min(FLAT_CHUNK, n - s);
      updateRowBlockRanges(x.subarray(s, s + m), 0, 1, m, m, lo, hi);
    }
  }
  return { lo, hi }; // both start at 0, so the range always holds zero
}

/**
 * Symmetric: q = round(x / s), s = max|x| / 127, so |q| ≤ 127.
 * Asymmetric: q = clamp(round(x / s) + z, 0, 255), s = (max − min) / 255 with 0 inside [min, max].
 * With `error`, the error of q against x (what dequantizeInt8 would decode) is added to it in the
 * same pass: a report then needs no decoded copy.
 */
export function quantizeInt8(
  x: Float32Array,
  rows: number,
  cols: number,
  channelAxis: 0 | 1 | null,
  symmetric: boolean,
  error?: ErrorSums,
): Int8Quantized {
  if (channelAxis === 0) return quantizeInt8Rows(x, rows, cols, symmetric, error);
  const { lo, hi } = channelRanges(x, rows, cols, channelAxis, symmetric);
  const channels = lo.length;
  const scales = new Float32Array(channels);
  const inv = new Float32Array(channels);
  const zp = new Float32Array(channels);
  const zeroPoints = symmetric ? null : new Uint8Array(channels);
  for (let ch = 0; ch < channels; ch++) {
    inv[ch] = channelScale(lo[ch], hi[ch], ch, scales, zeroPoints);
    zp[ch] = zeroPoints ? zeroPoints[ch] : 0;
  }
  const n = rows * cols;
  const q = symmetric ? new Int8Array(n) : new Uint8Array(n);
  if (channelAxis === 1) {
    // round(x / s) as floor(x / s + z + 0.5): symmetric codes are shifted by 128 into the unsigned range
    const offset = symmetric ? new Float32Array(channels).fill(128.5) : zp.map((z) => z + 0.5);
    // the error kernel reads a symmetric code's byte xor 128 (code + 128), so its zero point is 128
    const errors = error && {
      scale: scales,
      zero: symmetric ? new Float32Array(channels).fill(128) : zp,
      qxor: symmetric ? 128 : 0,
      sums: error,
    };
    quantizeColumns(x, q, 0, rows, cols, inv, offset, 255, symmetric ? 128 : 0, errors);
    return { q, scales, zeroPoints };
  }
  // one scale for the whole tensor: the row kernel (see quantizeInt8Rows) over the flat array, a
  // chunk at a time, each chunk one block of one row
  const invs = new Float64Array(inv);
  const zeros = new Float64Array(zp);
  const [clampLo, clampHi] = codeClamp(symmetric);
  const errors = error && { scale: scales, sums: error };
  for (let s = 0; s < n; s += FLAT_CHUNK) {
    const m = Math.min(FLAT_CHUNK, n - s);
    const part = [x.subarray(s, s + m), q.subarray(s, s + m)] as const;
    quantizeRowBlocks(part[0], part[1], 0, 1, m, m, invs, zeros, clampLo, clampHi, errors);
  }
  return { q, scales, zeroPoints };
}

/**
 * Scale (and zero point) of channel ch from its range [lo, hi] ∋ 0, into scales[ch] (and
 * zeroPoints[ch]); returns 1/scale as the float32 the codes are computed with.
 */
function channelScale(
  lo: number,
  hi: number,
  ch: number,
  scales: Float32Array,
  zeroPoints: Uint8Array | null,
): number {
  scales[ch] = zeroPoints ? (hi - lo) / 255 : Math.max(-lo, hi) / 127;
  // divide by the stored float32 scale so the runtime's dequantization reproduces our preview
  const inv = scales[ch] > 0 ? Math.fround(1 / scales[ch]) : 0;
  if (zeroPoints) zeroPoints[ch] = scales[ch] > 0 ? Math.min(255, Math.max(0, Math.round(-lo * inv))) : 0;
  return inv;
}

/**
 * The code kernel's clamp: asymmetric codes to 0..255; a symmetric code is stored unclamped, as an
 * Int8Array store of Math.round(x / s) always was (|x / s| ≤ 127 but for float rounding).
 */
const codeClamp = (symmetric: boolean) => (symmetric ? [-Infinity, Infinity] : [0, 255]);

/**
 * Channels on the rows (axis 0): WebAssembly SIMD along the rows, a chunk of rows staged once for
 * their ranges and codes, with the scalar rounding the row path always had (round(x · inv) with
 * x · inv in float64, ties up, + z), so codes stay what they were byte for byte.
 */
function quantizeInt8Rows(
  x: Float32Array,
  rows: number,
  cols: number,
  symmetric: boolean,
  error?: ErrorSums,
): Int8Quantized {
  const scales = new Float32Array(rows);
  const zeroPoints = symmetric ? null : new Uint8Array(rows);
  const q = symmetric ? new Int8Array(rows * cols) : new Uint8Array(rows * cols);
  if (cols === 0) return { q, scales, zeroPoints };
  const [clampLo, clampHi] = codeClamp(symmetric);
  const step = Math.max(1, Math.floor(FLAT_CHUNK / cols));
  for (let r0 = 0; r0 < rows; r0 += step) {
    const staged = stageRows(x, r0, Math.min(rows, r0 + step), cols, cols);
    const { lo, hi, inv, zero, scale } = staged;
    for (let j = 0; j < lo.length; j++) {
      inv[j] = channelScale(lo[j], hi[j], r0 + j, scales, zeroPoints);
      zero[j] = zeroPoints ? zeroPoints[r0 + j] : 0;
      scale[j] = scales[r0 + j];
    }
    quantizeStagedRows(staged, q, clampLo, clampHi, error);
  }
  return { q, scales, zeroPoints };
}

/** x' = (q − z) · s, computed in float32 as DequantizeLinear does. */
export function dequantizeInt8(
  quant: Int8Quantized,
  rows: number,
  cols: number,
  channelAxis: 0 | 1 | null,
): Float32Array {
  const out = new Float32Array(rows * cols);
  const { q, scales } = quant;
  // zero points as floats, one per channel, as the decode kernels take them
  const zp = quant.zeroPoints ? new Float32Array(quant.zeroPoints) : new Float32Array(scales.length);
  // WebAssembly SIMD, the same float32 products: int8 two's complement is read as code + 128
  const signed = q instanceof Int8Array;
  if (signed) for (let c = 0; c < zp.length; c++) zp[c] += 128;
  const qxor = signed ? 128 : 0;
  if (channelAxis === 1) decodeColumns(q, out, 0, rows, cols, scales, zp, qxor);
  else if (channelAxis === 0) decodeRowBlocks(q, out, 0, rows, cols, cols, scales, zp, qxor);
  else
    // one scale for the whole tensor: a chunk at a time, each one block of one row
    for (let s = 0; s < out.length; s += FLAT_CHUNK) {
      const m = Math.min(FLAT_CHUNK, out.length - s);
      decodeRowBlocks(q.subarray(s, s + m), out.subarray(s, s + m), 0, 1, m, m, scales, zp, qxor);
    }
  return out;
}
