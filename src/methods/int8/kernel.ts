/** int8 weight quantization kernels: flat loops over a row-major [rows, cols] matrix. */

export interface Int8Quantized {
  /** Same layout as the input; int8 when symmetric, uint8 with zero points otherwise. */
  q: Int8Array | Uint8Array;
  /** One scale per channel (or one for the tensor). */
  scales: Float32Array;
  zeroPoints: Uint8Array | null;
}

// channel of element (r, c): c when channels are columns, r when they are rows, 0 per tensor.
function channelCount(rows: number, cols: number, channelAxis: 0 | 1 | null): number {
  return channelAxis === null ? 1 : channelAxis === 1 ? cols : rows;
}

/** Per-channel (or per-tensor) range: min and max over each channel's values. */
function channelRanges(
  x: Float32Array,
  rows: number,
  cols: number,
  channelAxis: 0 | 1 | null,
): { lo: Float64Array; hi: Float64Array } {
  const n = channelCount(rows, cols, channelAxis);
  const lo = new Float64Array(n).fill(Infinity);
  const hi = new Float64Array(n).fill(-Infinity);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const ch = channelAxis === 1 ? c : channelAxis === 0 ? r : 0;
      const v = x[base + c];
      if (v < lo[ch]) lo[ch] = v;
      if (v > hi[ch]) hi[ch] = v;
    }
  }
  return { lo, hi };
}

/**
 * Symmetric: q = clamp(round(x / s), -127, 127), s = max|x| / 127.
 * Asymmetric: q = clamp(round(x / s) + z, 0, 255), s = (max - min) / 255 with 0 inside [min, max].
 */
export function quantizeInt8(
  x: Float32Array,
  rows: number,
  cols: number,
  channelAxis: 0 | 1 | null,
  symmetric: boolean,
): Int8Quantized {
  const { lo, hi } = channelRanges(x, rows, cols, channelAxis);
  const channels = lo.length;
  const scales = new Float32Array(channels);
  const inv = new Float64Array(channels);
  const zeroPoints = symmetric ? null : new Uint8Array(channels);
  for (let ch = 0; ch < channels; ch++) {
    const min = Math.min(lo[ch], 0);
    const max = Math.max(hi[ch], 0);
    const s = symmetric ? Math.max(-min, max) / 127 : (max - min) / 255;
    scales[ch] = s;
    // divide by the stored float32 scale so the runtime's dequantization reproduces our preview
    inv[ch] = scales[ch] > 0 ? 1 / scales[ch] : 0;
    if (zeroPoints)
      zeroPoints[ch] = scales[ch] > 0 ? Math.min(255, Math.max(0, Math.round(-min * inv[ch]))) : 0;
  }
  const n = rows * cols;
  if (symmetric) {
    const q = new Int8Array(n);
    for (let r = 0; r < rows; r++) {
      const base = r * cols;
      for (let c = 0; c < cols; c++) {
        const ch = channelAxis === 1 ? c : channelAxis === 0 ? r : 0;
        const v = Math.round(x[base + c] * inv[ch]);
        q[base + c] = v > 127 ? 127 : v < -127 ? -127 : v;
      }
    }
    return { q, scales, zeroPoints };
  }
  const q = new Uint8Array(n);
  const zp = zeroPoints as Uint8Array;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const ch = channelAxis === 1 ? c : channelAxis === 0 ? r : 0;
      const v = Math.round(x[base + c] * inv[ch]) + zp[ch];
      q[base + c] = v > 255 ? 255 : v < 0 ? 0 : v;
    }
  }
  return { q, scales, zeroPoints };
}

/** x' = (q - z) · s, computed in float32 as DequantizeLinear does. */
export function dequantizeInt8(
  quant: Int8Quantized,
  rows: number,
  cols: number,
  channelAxis: 0 | 1 | null,
): Float32Array {
  const out = new Float32Array(rows * cols);
  const { q, scales, zeroPoints } = quant;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const ch = channelAxis === 1 ? c : channelAxis === 0 ? r : 0;
      out[base + c] = (q[base + c] - (zeroPoints ? zeroPoints[ch] : 0)) * scales[ch];
    }
  }
  return out;
}
