/**
 * Structured pruning as a recipe runs it: a model-level pass before the per-weight steps (they then
 * quantize the smaller weights). The recipe's "structure" object says how much to remove and by which
 * importance; activation importance first runs the calibration sequences through a capture graph of
 * the output and down projections (onnxruntime injected, as for the calibrated methods); Taylor
 * importance runs them forward and backward through the training engine (onnxruntime only generates
 * them when the settings ask for generated sequences).
 */
import { ModelError } from '../errors.ts';
import type { OnnxModel } from '../onnx/model.ts';
import { captureActivationStats, planCapture } from '../calibrate/capture.ts';
import {
  activationImportance,
  activationTargets,
  applyStructuredPruning,
  captureBlockInfluence,
  planBoundaryCapture,
  detectStructure,
  IMPORTANCE_KINDS,
  magnitudeImportance,
  planPruning,
  taylorImportance,
  type ImportanceKind,
  type ModelStructure,
  type PruneRequest,
  type PrunedModel,
  type StructureImportance,
  type StructurePlan,
} from '../structure/index.ts';
import {
  calibrationSequences,
  type CalibrateOptions,
  type CalibrationInput,
  type CalibrationRuntime,
} from './calibration.ts';

/** A recipe's "structure": what to remove, and how importance is measured. */
export interface StructureSettings extends PruneRequest {
  importance: ImportanceKind;
}

function fail(message: string): never {
  throw new ModelError('invalid-recipe', `Invalid recipe: ${message}`);
}

/** Validate a recipe's "structure" object, defaults filled in. */
export function resolveStructureSettings(value: unknown): StructureSettings {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail('"structure" must be an object, e.g. {"heads": 0.25, "neurons": 0.3, "blocks": 1}.');
  const s = value as Record<string, unknown>;
  const known = ['heads', 'neurons', 'blocks', 'importance', 'scope', 'multiple'];
  for (const key of Object.keys(s))
    if (!known.includes(key)) fail(`structure has no field '${key}' (fields: ${known.join(', ')}).`);
  for (const key of ['heads', 'neurons'] as const) {
    const v = s[key];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v >= 1))
      fail(
        `structure.${key} is the share to remove, from 0 to below 1 (one per block stays), got ${JSON.stringify(v)}.`,
      );
  }
  for (const key of ['blocks', 'multiple'] as const) {
    const v = s[key];
    if (
      v !== undefined &&
      (typeof v !== 'number' || !Number.isInteger(v) || v < (key === 'blocks' ? 0 : 1) || v > 1e6)
    )
      fail(
        `structure.${key} must be a whole number${key === 'multiple' ? ' ≥ 1' : ''}, got ${JSON.stringify(v)}.`,
      );
  }
  const importance = s.importance ?? 'magnitude';
  if (typeof importance !== 'string' || !IMPORTANCE_KINDS.includes(importance as ImportanceKind))
    fail(
      `structure.importance must be one of ${IMPORTANCE_KINDS.join(', ')}, got ${JSON.stringify(importance)}.`,
    );
  const scope = s.scope ?? 'layer';
  if (scope !== 'layer' && scope !== 'global')
    fail(`structure.scope must be layer or global, got ${JSON.stringify(scope)}.`);
  if (!s.heads && !s.neurons && !s.blocks) fail('structure removes nothing: give heads, neurons or blocks.');
  return {
    ...(s.heads ? { heads: s.heads as number } : {}),
    ...(s.neurons ? { neurons: s.neurons as number } : {}),
    ...(s.blocks ? { blocks: s.blocks as number } : {}),
    importance: importance as ImportanceKind,
    scope,
    ...(s.multiple !== undefined ? { multiple: s.multiple as number } : {}),
  };
}

/**
 * Activation importance from the calibration sequences: the output and down projections' input
 * statistics (heads, neurons), and each block's influence on the residual stream (blocks).
 */
export async function captureActivationImportance(
  model: OnnxModel,
  structure: ModelStructure,
  input: CalibrationInput,
  runtime: CalibrationRuntime,
  opts: CalibrateOptions = {},
): Promise<StructureImportance> {
  const sequences = await calibrationSequences(model, input, runtime, opts);
  const plan = planCapture(model, activationTargets(structure), { hessian: false });
  const session = await runtime.createSession(plan.bytes);
  let stats;
  try {
    stats = await captureActivationStats(session, runtime.Tensor, runtime.inputs, plan, sequences, {
      signal: opts.signal,
      onProgress: (p) =>
        opts.onProgress?.({ phase: 'capture', done: p.sequencesDone, total: p.sequencesTotal }),
    });
  } finally {
    await session.release();
  }
  const boundaries = planBoundaryCapture(model, structure);
  const streams = await runtime.createSession(boundaries.bytes);
  try {
    const influence = await captureBlockInfluence(
      streams,
      runtime.Tensor,
      runtime.inputs,
      boundaries,
      structure.width,
      sequences,
      opts.signal,
    );
    return activationImportance(model, structure, stats, influence);
  } finally {
    await streams.release();
  }
}

/** Taylor importance from the calibration sequences: the LM loss's gradients in the training engine. */
export async function captureTaylorImportance(
  model: OnnxModel,
  structure: ModelStructure,
  input: CalibrationInput,
  runtime: CalibrationRuntime,
  opts: CalibrateOptions = {},
): Promise<StructureImportance> {
  const sequences = await calibrationSequences(model, input, runtime, opts);
  return taylorImportance(model, structure, sequences, {
    signal: opts.signal,
    onProgress: (done, total) => opts.onProgress?.({ phase: 'gradients', done, total }),
  });
}

export interface StructureResult extends PrunedModel {
  structure: ModelStructure;
  importance: StructureImportance;
  plan: StructurePlan;
}

/**
 * The model with the settings' heads, neurons and blocks removed. Activation and Taylor importance
 * need `calibration` (the sequences' settings or data, and onnxruntime to run or generate them).
 */
export async function pruneStructure(
  model: OnnxModel,
  settings: StructureSettings,
  calibration?: { input: CalibrationInput; runtime: CalibrationRuntime },
  opts: CalibrateOptions = {},
): Promise<StructureResult> {
  const structure = detectStructure(model);
  let importance: StructureImportance;
  if (settings.importance !== 'magnitude') {
    if (!calibration)
      throw new ModelError(
        'needs-calibration',
        `${settings.importance === 'taylor' ? 'Taylor' : 'Activation'} importance needs calibration data: give --calib-generate N, --calib-ids F or --calib-text F --tokenizer D.`,
      );
    const capture = settings.importance === 'taylor' ? captureTaylorImportance : captureActivationImportance;
    importance = await capture(model, structure, calibration.input, calibration.runtime, opts);
  } else importance = magnitudeImportance(model, structure);
  return pruneWithImportance(model, settings, structure, importance);
}

/** The model with the settings' heads, neurons and blocks removed by scores measured before (the page's). */
export function pruneWithImportance(
  model: OnnxModel,
  settings: PruneRequest,
  structure: ModelStructure,
  importance: StructureImportance,
): StructureResult {
  const plan = planPruning(structure, importance, settings);
  return { ...applyStructuredPruning(model, plan, structure), structure, importance, plan };
}
