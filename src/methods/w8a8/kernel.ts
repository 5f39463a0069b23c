/**
 * Static activation quantization (W8A8) kernels: the activation scale and zero point a MatMul input
 * gets from its calibrated range, and the fake-quantization onnxruntime's QuantizeLinear →
 * DequantizeLinear pair computes with them (the reference the export is checked against).
 */
import { ModelError } from '../../core/errors.ts';

export interface ActivationQuantization {
  /** float32 scale (stored as such in the exported file). */
  scale: number;
  /** uint8 zero point when asymmetric; 0 (int8) when symmetric. */
  zeroPoint: number;
  /** int8 with zero point 0 when true; uint8 with a zero point otherwise. */
  symmetric: boolean;
}

/**
 * The scale and zero point covering [min, max] (widened to hold 0, so 0 is exact, as ONNX's
 * quantizers do). A constant-zero activation gets scale 1, since QuantizeLinear divides by it.
 */
export function activationQuantization(min: number, max: number, symmetric: boolean): ActivationQuantization {
  if (!Number.isFinite(min) || !Number.isFinite(max) || min > max)
    throw new ModelError(
      'invalid-argument',
      `An activation range [${min}, ${max}] can't be quantized: calibrate on at least one token.`,
    );
  const lo = Math.min(0, min);
  const hi = Math.max(0, max);
  if (symmetric) {
    const scale = Math.fround(Math.max(-lo, hi) / 127);
    return { scale: scale > 0 ? scale : 1, zeroPoint: 0, symmetric };
  }
  const scale = Math.fround((hi - lo) / 255);
  if (!(scale > 0)) return { scale: 1, zeroPoint: 0, symmetric };
  const zeroPoint = Math.min(255, Math.max(0, roundHalfToEven(-lo / scale)));
  return { scale, zeroPoint, symmetric };
}

/** Rounding as ONNX's QuantizeLinear does it: halves go to the even integer. */
export function roundHalfToEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * x after QuantizeLinear then DequantizeLinear with `q`, in float32 as onnxruntime computes it:
 * saturate(round(x / scale) + zeroPoint) − zeroPoint, times scale.
 */
export function fakeQuantizeActivation(x: Float32Array, q: ActivationQuantization): Float32Array {
  const [lo, hi] = q.symmetric ? [-128, 127] : [0, 255];
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const code = roundHalfToEven(Math.fround(x[i] / q.scale)) + q.zeroPoint;
    out[i] = ((code < lo ? lo : code > hi ? hi : code) - q.zeroPoint) * q.scale;
  }
  return out;
}

/** Which part of the calibrated distribution the 256 activation codes cover. */
export type ActivationRange = 'minmax' | 'percentile' | 'mse';

/** A value histogram's bins in increasing value order, each with its count and value interval. */
interface Bin {
  lo: number;
  hi: number;
  count: number;
}

const BITS = new Uint32Array(1);
const AS_FLOAT = new Float32Array(BITS.buffer);
function floatOfBits(bits: number): number {
  BITS[0] = bits >>> 0;
  return AS_FLOAT[0];
}

/**
 * The occupied bins of a histogram keyed by float32 bits >>> `shift` (see InputStats.histogram),
 * sorted by value: negative bins (sign bit set) from the most negative, then the non-negative ones.
 * Bins of NaN / infinity never occur (capture refuses non-finite activations).
 */
function sortedBins(histogram: Uint32Array, shift: number): Bin[] {
  const half = histogram.length / 2;
  const negative: Bin[] = [];
  const positive: Bin[] = [];
  for (let b = 0; b < histogram.length; b++) {
    const count = histogram[b];
    if (!count) continue;
    const near = floatOfBits(b << shift);
    const far = floatOfBits(((b + 1) << shift) - 1);
    if (b >= half) negative.push({ lo: far, hi: near, count });
    else positive.push({ lo: near, hi: far, count });
  }
  negative.reverse();
  return [...negative, ...positive];
}

/** The value below which `fraction` of the histogram lies, interpolated within its bin. */
function quantile(bins: readonly Bin[], total: number, fraction: number): number {
  const target = fraction * total;
  let seen = 0;
  for (const b of bins) {
    if (seen + b.count >= target) return b.lo + ((target - seen) / b.count) * (b.hi - b.lo);
    seen += b.count;
  }
  return bins[bins.length - 1].hi;
}

/**
 * Expected squared error of quantizing the histogram's values into [lo, hi] with 256 codes: rounding
 * noise (step² / 12) for a value inside, its distance to the range for a value clipped outside.
 */
function quantizationError(bins: readonly Bin[], lo: number, hi: number, symmetric: boolean): number {
  const q = activationQuantization(lo, hi, symmetric);
  const top = (symmetric ? 127 : 255 - q.zeroPoint) * q.scale;
  const bottom = (symmetric ? -128 : -q.zeroPoint) * q.scale;
  const noise = (q.scale * q.scale) / 12;
  let err = 0;
  for (const b of bins) {
    const v = (b.lo + b.hi) / 2;
    const d = v > top ? v - top : v < bottom ? bottom - v : 0;
    err += b.count * (d > 0 ? d * d : noise);
  }
  return err;
}

/**
 * The activation interval to quantize: the calibrated [min, max]; or the 0.01 % and 99.99 %
 * quantiles ('percentile', clipping rare outliers for a finer step); or the clipping of [min, max]
 * that minimises the expected squared error on the calibrated distribution ('mse', searched over
 * 100 shrink factors). Both need the value histogram.
 */
export function activationInterval(
  stats: { min: number; max: number; histogram?: Uint32Array },
  range: ActivationRange,
  symmetric: boolean,
  shift: number,
): [number, number] {
  if (range === 'minmax') return [stats.min, stats.max];
  if (!stats.histogram)
    throw new ModelError(
      'invalid-argument',
      `A ${range} activation range needs the calibration's value histogram, which these statistics lack: calibrate again.`,
    );
  const bins = sortedBins(stats.histogram, shift);
  const total = bins.reduce((s, b) => s + b.count, 0);
  if (!total) return [stats.min, stats.max];
  if (range === 'percentile')
    return [
      Math.max(stats.min, quantile(bins, total, 1e-4)),
      Math.min(stats.max, quantile(bins, total, 1 - 1e-4)),
    ];
  let best: [number, number] = [stats.min, stats.max];
  let bestErr = quantizationError(bins, stats.min, stats.max, symmetric);
  for (let i = 1; i < 100; i++) {
    const shrink = 1 - i / 100;
    const lo = stats.min * shrink;
    const hi = stats.max * shrink;
    const err = quantizationError(bins, lo, hi, symmetric);
    if (err < bestErr) [best, bestErr] = [[lo, hi], err];
  }
  return best;
}
