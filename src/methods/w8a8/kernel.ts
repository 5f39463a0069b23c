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
