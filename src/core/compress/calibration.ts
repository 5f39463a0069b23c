/**
 * Calibration as the recipe pipeline needs it: find the steps whose method declares `needs`, get the
 * calibration sequences (sampled from the model, or cut from the user's tokens), and capture the
 * statistics those steps read — once, for the union of the weights they select — into one
 * CalibrationStats that compressModel then passes to the kernels. This is the async half of a
 * calibrated compression; compressModel stays synchronous and pure. onnxruntime is injected (the
 * CLI gives onnxruntime-node, a worker onnxruntime-web), so nothing here loads it.
 */
import { isModelError, ModelError } from '../errors.ts';
import type { OnnxModel } from '../onnx/model.ts';
import { writeModel } from '../onnx/write.ts';
import { getMethod } from '../../methods/registry.ts';
import { captureActivationStats, findActivation, planCapture } from '../calibrate/capture.ts';
import { generateCalibrationSequences } from '../calibrate/generate.ts';
import { calibrateSequentially, type CalibrationRuntime } from '../calibrate/sequential.ts';
import { HISTOGRAM_SHIFT, type CalibrationStats } from '../calibrate/stats.ts';
import { compressModel } from './pipeline.ts';
import type { CalibrationSettings, ResolvedStep } from './recipe.ts';
import { selectWeights, weightCandidates } from './select.ts';
import { noCacheView } from './merged.ts';

export type { CalibrationRuntime };

/** Tokens per calibration sequence when the settings name none, capped by the model's context. */
export const DEFAULT_CALIBRATION_LENGTH = 128;

/** The ids of the methods in `steps` that need calibration statistics, in step order, once each. */
export function calibratedMethods(steps: readonly ResolvedStep[]): string[] {
  return [...new Set(steps.filter((s) => getMethod(s.method).needs?.length).map((s) => s.method))];
}

export interface CalibrationTargets {
  /** Every weight a calibrated step selects, in the model's order. */
  weights: string[];
  /** Those whose steps read XᵀX (GPTQ, SparseGPT); the others get per-feature statistics only. */
  hessian: Set<string>;
}

/** The weights the calibrated steps select, and which of them need XᵀX. */
export function calibrationTargets(model: OnnxModel, steps: readonly ResolvedStep[]): CalibrationTargets {
  const candidates = weightCandidates(model.graph);
  const selected = new Set<string>();
  const hessian = new Set<string>();
  for (const step of steps) {
    const needs = getMethod(step.method).needs ?? [];
    if (!needs.length) continue;
    for (const c of selectWeights(candidates, step.select)) {
      selected.add(c.name);
      if (needs.includes('hessian')) hessian.add(c.name);
    }
  }
  return { weights: candidates.map((c) => c.name).filter((n) => selected.has(n)), hessian };
}

/**
 * The user's token sequences cut into at most `samples` windows of `length` tokens, in order (a
 * sequence's last, shorter window kept when it has at least 2 tokens: one token has no context).
 */
export function calibrationWindows(
  sequences: readonly number[][],
  samples: number,
  length: number,
): number[][] {
  const windows: number[][] = [];
  for (const seq of sequences)
    for (let at = 0; at < seq.length && windows.length < samples; at += length) {
      const w = seq.slice(at, at + length);
      if (w.length >= 2) windows.push(w);
    }
  if (!windows.length)
    throw new ModelError(
      'invalid-argument',
      'The calibration data holds no sequence of at least 2 tokens: give more text or ids.',
    );
  return windows;
}

export interface CalibrationProgress {
  /** gradients: Taylor importance's forward and backward passes in the training engine. */
  phase: 'generate' | 'capture' | 'gradients';
  done: number;
  total: number;
}

export interface CalibrateOptions {
  signal?: AbortSignal;
  onProgress?: (p: CalibrationProgress) => void;
  /** Reuse sequences and statistics computed before for the same model and calibration set. */
  cache?: CalibrationCache;
}

/** FNV-1a over the token ids and sequence breaks: the identity of the user's calibration data. */
function dataFingerprint(data: readonly number[][]): string {
  let h = 0x811c9dc5;
  const mix = (x: number) => {
    h ^= x & 0xffff;
    h = Math.imul(h, 0x01000193);
    h ^= x >>> 16;
    h = Math.imul(h, 0x01000193);
  };
  for (const seq of data) {
    for (const id of seq) mix(id);
    mix(0xffffffff); // a break between sequences: [1 2][3] is not [1][2 3]
  }
  return `${data.length}:${(h >>> 0).toString(16)}`;
}

/** The calibration set: what determines the sequences (not whether capture is sequential). */
function sequencesKey(input: CalibrationInput): string {
  const { source, samples, length, seed, bos } = input.settings;
  return JSON.stringify(
    source === 'generate'
      ? [source, samples, length, seed, bos]
      : [source, samples, length, input.data ? dataFingerprint(input.data) : null],
  );
}

/**
 * Calibration results per (model, calibration set), so a slider move or a second export does not
 * run the model again. Statistics captured once on the original model serve any recipe whose
 * calibrated steps select a subset of their weights (XᵀX where needed); sequential statistics
 * depend on the whole recipe (each group was captured after the earlier ones were compressed), so
 * they are reused for the same recipe only. Models are held weakly: a closed model frees its entries.
 */
export class CalibrationCache {
  private readonly sequences = new WeakMap<OnnxModel, Map<string, number[][]>>();
  private readonly stats = new WeakMap<
    OnnxModel,
    { set: string; recipe: string | null; stats: CalibrationStats }[]
  >();

  getSequences(model: OnnxModel, set: string): number[][] | undefined {
    return this.sequences.get(model)?.get(set);
  }

  setSequences(model: OnnxModel, set: string, sequences: number[][]): void {
    let m = this.sequences.get(model);
    if (!m) this.sequences.set(model, (m = new Map()));
    m.set(set, sequences);
  }

  /** Statistics for `set` that serve `targets`; `recipe` is the recipe's key for sequential statistics, else null. */
  getStats(
    model: OnnxModel,
    set: string,
    recipe: string | null,
    targets: CalibrationTargets,
  ): CalibrationStats | undefined {
    for (const e of this.stats.get(model) ?? []) {
      if (e.set !== set || e.recipe !== recipe) continue;
      const covers = targets.weights.every((w) => {
        const layer = e.stats.layers[w];
        return layer && (!targets.hessian.has(w) || layer.xtx);
      });
      if (covers) return e.stats;
    }
    return undefined;
  }

  setStats(model: OnnxModel, set: string, recipe: string | null, stats: CalibrationStats): void {
    let list = this.stats.get(model);
    if (!list) this.stats.set(model, (list = []));
    list.push({ set, recipe, stats });
    // XᵀX is k² doubles per layer: keep only the newest few calibrations of a model
    if (list.length > 4) list.shift();
  }
}

/** What calibration runs on: the settings, with the length resolved and the data when the source is not 'generate'. */
export interface CalibrationInput {
  settings: CalibrationSettings & { length: number; bos: number };
  /** The user's tokens ('ids', 'text'): cut into windows of settings.length. */
  data?: readonly number[][];
}

/** The calibration sequences the settings describe: generated from the model, or windows of the data. */
export async function calibrationSequences(
  model: OnnxModel,
  input: CalibrationInput,
  runtime: CalibrationRuntime,
  opts: CalibrateOptions = {},
): Promise<number[][]> {
  const set = sequencesKey(input);
  const cached = opts.cache?.getSequences(model, set);
  if (cached) return cached;
  const sequences = await freshSequences(model, input, runtime, opts);
  opts.cache?.setSequences(model, set, sequences);
  return sequences;
}

async function freshSequences(
  model: OnnxModel,
  input: CalibrationInput,
  runtime: CalibrationRuntime,
  opts: CalibrateOptions,
): Promise<number[][]> {
  const { settings } = input;
  if (settings.source !== 'generate') {
    if (!input.data)
      throw new ModelError(
        'needs-calibration',
        `The calibration source is '${settings.source}', and no calibration ${settings.source === 'ids' ? 'ids' : 'text'} were given.`,
      );
    return calibrationWindows(input.data, settings.samples, settings.length);
  }
  const session = await runtime.createSession(writeModel(model).model);
  try {
    return await generateCalibrationSequences(session, runtime.Tensor, runtime.inputs, {
      count: settings.samples,
      length: settings.length,
      seed: settings.seed,
      bos: settings.bos,
      signal: opts.signal,
      onProgress: (p) =>
        opts.onProgress?.({ phase: 'generate', done: p.sequencesDone, total: p.sequencesTotal }),
    });
  } finally {
    await session.release();
  }
}

/**
 * The statistics every calibrated step of `steps` reads, captured on `sequences`. Sequential (the
 * default in recipes): layer groups in graph order, each captured on the model whose earlier groups
 * the recipe has already compressed, so compressModel with these statistics gives exactly the
 * weights the capture saw. Otherwise one capture on the original model.
 */
export async function captureForRecipe(
  model: OnnxModel,
  steps: readonly ResolvedStep[],
  sequences: readonly number[][],
  runtime: CalibrationRuntime,
  opts: CalibrateOptions & { sequential: boolean },
): Promise<CalibrationStats> {
  const targets = calibrationTargets(model, steps);
  if (!targets.weights.length)
    throw new ModelError(
      'invalid-recipe',
      `The calibrated steps (${calibratedMethods(steps).join(', ')}) select no weights in ${model.name}.`,
    );
  const hessian = (w: string) => targets.hessian.has(w);
  if (opts.sequential) {
    const { stats } = await calibrateSequentially(
      model,
      targets.weights,
      sequences,
      runtime,
      (group, captured) => {
        // the whole recipe on this group, so later groups see these layers as they will be exported
        const result = compressModel(model, steps, { calibration: captured, only: new Set(group) });
        return new Map(result.outcomes.map((o) => [o.candidate.name, o.values]));
      },
      {
        hessian,
        signal: opts.signal,
        onProgress: (p) => opts.onProgress?.({ phase: 'capture', done: p.groupsDone, total: p.groupsTotal }),
      },
    );
    return stats;
  }
  return captureOnce(model, targets.weights, hessian, sequences, runtime, opts);
}

/** One capture of `weights` on the original model (the non-sequential calibration). */
async function captureOnce(
  model: OnnxModel,
  weights: readonly string[],
  hessian: (weight: string) => boolean,
  sequences: readonly number[][],
  runtime: CalibrationRuntime,
  opts: CalibrateOptions,
): Promise<CalibrationStats> {
  const plan = planCapture(model, weights, { hessian });
  const session = await runtime.createSession(plan.bytes);
  try {
    return await captureActivationStats(session, runtime.Tensor, runtime.inputs, plan, sequences, {
      signal: opts.signal,
      onProgress: (p) =>
        opts.onProgress?.({ phase: 'capture', done: p.sequencesDone, total: p.sequencesTotal }),
    });
  } finally {
    await session.release();
  }
}

/**
 * Every weight whose activations calibration can capture: the 2-D weights of a MatMul or Gemm (embeddings
 * and the LM head included, so a step that opts them in finds their statistics), in the model's order.
 */
export function calibratableWeights(source: OnnxModel): string[] {
  // a merged decoder's weights are captured where they run: in its no-cache branch
  const model = noCacheView(source);
  return weightCandidates(model.graph)
    .filter((c) => {
      try {
        findActivation(model, c.name);
        return true;
      } catch (e) {
        if (isModelError(e)) return false; // a Gather table, a weight shared by two activations…
        throw e;
      }
    })
    .map((c) => c.name);
}

/**
 * What `calibrateWeights` keeps for `weights`: one statistics object per distinct activation, and its
 * bytes (XᵀX, k² float64s, dominates: a 3072-wide MLP input holds 75 MB), so the page can say so first.
 */
export function calibrationFootprint(
  source: OnnxModel,
  weights: readonly string[],
): { activations: number; bytes: number } {
  const model = noCacheView(source);
  const widths = new Map<string, number>();
  for (const w of weights) {
    const { input, k } = findActivation(model, w);
    widths.set(input, k);
  }
  let bytes = 0;
  // XᵀX and Σx² in float64, max |x| in float32, the histogram's uint32 counts
  for (const k of widths.values()) bytes += k * k * 8 + k * 8 + k * 4 + 2 ** (32 - HISTOGRAM_SHIFT) * 4;
  return { activations: widths.size, bytes };
}

/**
 * Statistics for `weights` (XᵀX for all), captured once on the original model: what the studio's page
 * computes before any calibrated step exists, so every step added later — and every slider move — reads
 * them without running the model again. Cached per (model, calibration set) like `calibrate`.
 */
export async function calibrateWeights(
  model: OnnxModel,
  weights: readonly string[],
  input: CalibrationInput,
  runtime: CalibrationRuntime,
  opts: CalibrateOptions = {},
): Promise<CalibrationStats> {
  if (!weights.length)
    throw new ModelError(
      'unsupported',
      `${model.name} has no MatMul or Gemm weight whose activations could be captured.`,
    );
  const set = sequencesKey(input);
  const targets: CalibrationTargets = { weights: [...weights], hessian: new Set(weights) };
  const cached = opts.cache?.getStats(model, set, null, targets);
  if (cached) return cached;
  const view = noCacheView(model);
  const sequences = await calibrationSequences(view, input, runtime, opts);
  const stats = await captureOnce(view, weights, () => true, sequences, runtime, opts);
  opts.cache?.setStats(model, set, null, stats);
  return stats;
}

/** Sequences, then statistics: everything a calibrated recipe needs before compressModel. */
export async function calibrate(
  model: OnnxModel,
  steps: readonly ResolvedStep[],
  input: CalibrationInput,
  runtime: CalibrationRuntime,
  opts: CalibrateOptions = {},
): Promise<CalibrationStats> {
  const { cache } = opts;
  const set = sequencesKey(input);
  const sequential = input.settings.sequential;
  const recipe = sequential ? JSON.stringify(steps) : null;
  const cached = cache?.getStats(model, set, recipe, calibrationTargets(model, steps));
  if (cached) return cached;
  // a merged decoder runs its no-cache branch: captured as a plain graph, the weights named as in the model
  const view = noCacheView(model);
  const sequences = await calibrationSequences(view, input, runtime, opts);
  const stats = await captureForRecipe(view, steps, sequences, runtime, { ...opts, sequential });
  cache?.setStats(model, set, recipe, stats);
  return stats;
}

/**
 * Refuses token ids the model's embedding table has no row for, naming where they came from (before
 * onnxruntime meets them, whose own message names no file). Models whose embedding is not a weight
 * matrix the studio recognises are left to onnxruntime's check.
 */
export function checkVocabulary(model: OnnxModel, sequences: readonly number[][], where: string): void {
  const embedding = weightCandidates(model.graph).find((c) => c.role === 'embedding');
  if (!embedding) return;
  // a Gather table is [vocab, dim]
  const vocab = embedding.shape[0];
  for (let s = 0; s < sequences.length; s++) {
    const bad = sequences[s].find((id) => id >= vocab);
    if (bad !== undefined)
      throw new ModelError(
        'invalid-argument',
        `${where}: token id ${bad} (sequence ${s + 1}) is outside the model's vocabulary of ${vocab} tokens.`,
      );
  }
}
