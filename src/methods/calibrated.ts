/**
 * The contract of a data-aware method: a CompressionMethod whose kernel also reads activation
 * statistics, and which declares which ones, so the orchestrator can capture them once (for every
 * step that needs them) before running the steps. Kernels stay pure functions of weights,
 * statistics and options.
 */
import type { CalibrationStats, InputStats } from '../core/calibrate/stats.ts';
import { ModelError } from '../core/errors.ts';
import type { CompressionMethod, KernelResult, OptionValues, StatisticNeed, WeightMatrix } from './types.ts';

export type { StatisticNeed };

export interface CalibratedMethod<O extends OptionValues = OptionValues, E = unknown> extends Omit<
  CompressionMethod<O, E>,
  'apply'
> {
  needs: readonly StatisticNeed[];
  apply(tensors: readonly WeightMatrix[], options: O, calibration: CalibrationStats): KernelResult<E>[];
}

/**
 * A weight's layout in the terms calibration uses: K input features (what the statistics count) and
 * N outputs, whichever axis holds them; every feature count the statistics carry must be K.
 */
export function calibratedDims(
  w: WeightMatrix,
  ...featureCounts: number[]
): { rows: number; cols: number; k: number; n: number } {
  const [rows, cols] = w.shape;
  const k = w.channelAxis === 1 ? rows : cols;
  const n = w.channelAxis === 1 ? cols : rows;
  if (featureCounts.some((c) => c !== k))
    throw new ModelError(
      'invalid-argument',
      `Calibration statistics for '${w.name}' have ${featureCounts[0]} input features but the weight has ${k}.`,
    );
  return { rows, cols, k, n };
}

/** What a calibrated method called without statistics says (the UI and the CLI say how to get them). */
export function missingCalibrationMessage(methodId: string): string {
  return `${methodId} needs calibration data (activation statistics from running text through the model), and none was given.`;
}

/** The statistics of `weight`, checked for what the method needs. */
export function statsFor(
  calibration: CalibrationStats | undefined,
  weight: WeightMatrix,
  methodId: string,
  needs: readonly StatisticNeed[],
): InputStats {
  // a caller that ignores `needs` (an older preview loop) gets a typed error, not a TypeError
  if (!calibration) throw new ModelError('needs-calibration', missingCalibrationMessage(methodId));
  const stats = calibration.layers[weight.name];
  if (!stats)
    throw new ModelError(
      'invalid-argument',
      `${methodId} needs calibration statistics for '${weight.name}', and the calibration run did not capture it.`,
    );
  if (needs.includes('hessian') && !stats.xtx)
    throw new ModelError(
      'invalid-argument',
      `${methodId} needs XᵀX for '${weight.name}', which this calibration run did not accumulate.`,
    );
  return stats;
}

export const DAMPENING_OPTION = {
  key: 'dampening',
  label: 'Dampening',
  type: 'number',
  min: 0,
  max: 1,
  step: 0.001,
  default: 0.01,
  help: 'Added to the Hessian’s diagonal, as a fraction of its mean; raise it if the Hessian is singular.',
} as const;
