/**
 * What the page charts about calibrated activations, without the heavy parts (XᵀX, histograms): one
 * entry per captured activation (the weights that read it share it), small enough to post to the page.
 */
import type { CalibrationStats } from './stats.ts';

/** LLM.int8's outlier threshold: input features whose max |x| exceeds it are outliers. */
export const DEFAULT_OUTLIER_THRESHOLD = 6;

export interface ActivationSummary {
  /** The graph tensor captured (a MatMul/Gemm's activation input). */
  input: string;
  /** The weights that multiply it, in the statistics' order. */
  weights: string[];
  /** Input features. */
  k: number;
  /** Activation rows (tokens) seen. */
  rows: number;
  min: number;
  max: number;
  /** max |x| over every feature. */
  absMax: number;
  /** max |x| per input feature, [k]: the page counts outliers for any threshold from it. */
  featureAbsMax: Float32Array;
}

/** One summary per distinct activation, in the order its first weight appears in `stats.layers`. */
export function activationSummaries(stats: CalibrationStats): ActivationSummary[] {
  const byInput = new Map<string, ActivationSummary>();
  for (const [weight, s] of Object.entries(stats.layers)) {
    const known = byInput.get(s.input);
    if (known) {
      known.weights.push(weight);
      continue;
    }
    let absMax = 0;
    for (let i = 0; i < s.absMax.length; i++) if (s.absMax[i] > absMax) absMax = s.absMax[i];
    byInput.set(s.input, {
      input: s.input,
      weights: [weight],
      k: s.k,
      rows: s.rows,
      min: s.min,
      max: s.max,
      absMax,
      featureAbsMax: Float32Array.from(s.absMax),
    });
  }
  return [...byInput.values()];
}

/** Input features whose max |x| exceeds `threshold` (LLM.int8's outlier features). */
export function countOutlierFeatures(featureAbsMax: ArrayLike<number>, threshold: number): number {
  let n = 0;
  for (let i = 0; i < featureAbsMax.length; i++) if (featureAbsMax[i] > threshold) n++;
  return n;
}
