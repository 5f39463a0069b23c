/**
 * Running a recipe over a model's weights: each step's kernel over the tensors its selector picks,
 * in order, then per-tensor error and size against the original. Nothing here touches the source
 * model; export reads the outcomes.
 */
import { ModelError } from '../errors.ts';
import { readTensorFloat32, type OnnxModel } from '../onnx/model.ts';
import { findWeight } from '../onnx/graphs.ts';
import { getMethod } from '../../methods/registry.ts';
import type { CompressionMethod, KernelResult, OptionValues, WeightMatrix } from '../../methods/types.ts';
import type { CalibrationStats } from '../calibrate/stats.ts';
import { missingCalibrationMessage } from '../../methods/calibrated.ts';
import { errorStats, errorStatsFromSums, type ErrorStats } from './metrics.ts';
import type { ErrorSums } from '../simd/index.ts';
import { valuesPending, withLazyValues } from '../../methods/lazy-values.ts';
import type { ResolvedStep } from './recipe.ts';
import { KernelPool, poolable, ranksTogether } from './kernel-tasks.ts';
import {
  requireSelection,
  selectWeights,
  weightCandidates,
  type WeightCandidate,
  type WeightRole,
} from './select.ts';

export interface TensorOutcome {
  candidate: WeightCandidate;
  original: Float32Array;
  values: Float32Array;
  /** Method ids applied, in order. */
  methods: string[];
  /** The storage format chosen by the last encode step, if any (dropped if a transform came after). */
  encoder: { method: string; options: OptionValues; encoding: unknown } | null;
  storedBytes: number;
  /** Outlier input features the last encode step kept in float (llm-int8), for the report. */
  outlierChannels?: number[];
  /**
   * Error sums of `values` against `original`, when the kernel that made them measured them on the
   * original (a first step that encodes): the report then reads no decoded values, and `values` may
   * be decoded only when read (lazy-values.ts).
   */
  error?: ErrorSums;
}

export interface TensorReport extends ErrorStats {
  name: string;
  shape: [number, number];
  role: WeightRole;
  /** e.g. "prune+int4" */
  method: string;
  params: number;
  originalBytes: number;
  storedBytes: number;
  bitsPerWeight: number;
  /** Input features kept in float as activation outliers (llm-int8), ascending. */
  outlierChannels?: number[];
}

export interface CompressionTotals {
  /** Size of the source model file(s). */
  inputBytes: number;
  /** Expected size of the export: the source with each compressed tensor's bytes swapped. */
  estimatedOutputBytes: number;
  tensors: number;
  params: number;
  originalWeightBytes: number;
  storedWeightBytes: number;
  bitsPerWeight: number;
  sparsity: number;
}

export interface CompressionResult {
  outcomes: TensorOutcome[];
  reports: TensorReport[];
  totals: CompressionTotals;
  warnings: string[];
}

export interface CompressOptions {
  onProgress?: (done: number, total: number, label: string) => void;
  /** Checked between steps; throw to stop (the worker throws a 'cancelled' ModelError). */
  checkCancelled?: () => void;
  /**
   * Activation statistics for the steps whose method declares `needs` (see calibration.ts, which
   * captures them); without them such a step is a 'needs-calibration' error.
   */
  calibration?: CalibrationStats;
  /**
   * Compress only these weights (sequential calibration runs the recipe one group of layers at a
   * time); every other weight is left out of the result.
   */
  only?: ReadonlySet<string>;
}

export function asMatrix(c: WeightCandidate, values: Float32Array): WeightMatrix {
  return { name: c.name, shape: c.shape, values, channelAxis: c.channelAxis };
}

/** Bytes per weight as the source stores it: 2 for float16 / bfloat16 weights, else 4 (float32). */
export function sourceBytesPerWeight(c: WeightCandidate): number {
  return c.dataType === undefined ? 4 : 2;
}

export function initialOutcome(c: WeightCandidate, original: Float32Array): TensorOutcome {
  return {
    candidate: c,
    original,
    values: original,
    methods: [],
    encoder: null,
    storedBytes: original.length * sourceBytesPerWeight(c),
  };
}

/**
 * The tensor after one more step: an encode step sets its storage format, a transform leaves it dense
 * float32 (dropping an earlier encoding, whose decoded values it worked on).
 */
export function nextOutcome(
  from: TensorOutcome,
  method: CompressionMethod,
  options: OptionValues,
  r: KernelResult,
): TensorOutcome {
  // the kernel's error sums are against its input: the original's only when the input was it
  const onOriginal = !valuesPending(from) && from.values === from.original;
  const next: Omit<TensorOutcome, 'values'> = {
    candidate: from.candidate,
    original: from.original,
    methods: [...from.methods, method.id],
    encoder: method.role === 'encode' ? { method: method.id, options, encoding: r.encoding } : null,
    // a transform's dense result is stored in the source's type (float16 stays float16)
    storedBytes:
      method.role === 'transform'
        ? (r.storedBytes / 4) * sourceBytesPerWeight(from.candidate)
        : r.storedBytes,
    ...(r.outlierChannels ? { outlierChannels: r.outlierChannels } : {}),
    ...(r.error && onOriginal ? { error: r.error } : {}),
  };
  // values still to be decoded stay so: read through the result, which decodes them once
  return valuesPending(r) ? withLazyValues(next, () => r.values) : { ...next, values: r.values };
}

export function reportFor(o: TensorOutcome): TensorReport {
  const stats = o.error ? errorStatsFromSums(o.error, o.original.length) : errorStats(o.original, o.values);
  return reportWith(o, stats);
}

/** The report of an outcome whose error was measured already (where its values were made: a kernel worker). */
export function reportWith(o: TensorOutcome, stats: ErrorStats): TensorReport {
  const params = o.candidate.shape[0] * o.candidate.shape[1];
  return {
    name: o.candidate.name,
    shape: o.candidate.shape,
    role: o.candidate.role,
    method: o.methods.join('+'),
    params,
    originalBytes: params * sourceBytesPerWeight(o.candidate),
    storedBytes: o.storedBytes,
    bitsPerWeight: (o.storedBytes * 8) / params,
    ...stats,
    ...(o.outlierChannels ? { outlierChannels: o.outlierChannels } : {}),
  };
}

export function totalsFor(model: OnnxModel, reports: readonly TensorReport[]): CompressionTotals {
  let params = 0;
  let originalWeightBytes = 0;
  let storedWeightBytes = 0;
  let zeros = 0;
  for (const r of reports) {
    params += r.params;
    originalWeightBytes += r.originalBytes;
    storedWeightBytes += r.storedBytes;
    zeros += r.sparsity * r.params;
  }
  let inputBytes = model.fileSize;
  for (const f of model.external.values()) inputBytes += f.size;
  return {
    inputBytes,
    estimatedOutputBytes: inputBytes - originalWeightBytes + storedWeightBytes,
    tensors: reports.length,
    params,
    originalWeightBytes,
    storedWeightBytes,
    bitsPerWeight: params ? (storedWeightBytes * 8) / params : 32,
    sparsity: params ? zeros / params : 0,
  };
}

/** The recipe's steps, each with the tensors it picks and their state before it (shared by both drivers). */
interface StepRun {
  method: CompressionMethod;
  inputs: TensorOutcome[];
  options: OptionValues;
}

/**
 * The one loop behind compressModel and compressModelInPool: per step, the tensors it selects in
 * their state so far, `kernel` over them, and the warnings a step order deserves.
 */
function* recipeSteps(
  model: OnnxModel,
  steps: readonly ResolvedStep[],
  options: CompressOptions,
  outcomes: Map<string, TensorOutcome>,
  warnings: string[],
): Generator<StepRun, WeightCandidate[], KernelResult[]> {
  const candidates = weightCandidates(model.graph);
  for (const step of steps) {
    const method = getMethod(step.method);
    if (method.needs?.length && !options.calibration)
      throw new ModelError('needs-calibration', missingCalibrationMessage(method.id));
  }
  const only = options.only;
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i];
    options.checkCancelled?.();
    const method = getMethod(step.method);
    const selected = selectWeights(candidates, step.select);
    const picked = only ? selected.filter((c) => only.has(c.name)) : selected;
    if (!picked.length) {
      warnings.push(`Step ${i + 1} (${method.id}) selected no tensors.`);
      continue;
    }
    options.onProgress?.(i, steps.length, method.label);
    const inputs = picked.map(
      (c) =>
        outcomes.get(c.name) ?? initialOutcome(c, readTensorFloat32(model, findWeight(model, c.name).tensor)),
    );
    const results = yield { method, inputs, options: step.options };
    results.forEach((r, j) => {
      const o = inputs[j];
      if (method.role === 'transform' && o.encoder)
        warnings.push(
          `${o.candidate.name}: ${method.id} after ${o.encoder.method} works on the decoded weights and stores them as float32 again.`,
        );
      if (method.role === 'encode' && o.encoder)
        warnings.push(
          `${o.candidate.name}: ${method.id} re-encodes weights already encoded by ${o.encoder.method}.`,
        );
      outcomes.set(o.candidate.name, nextOutcome(o, method, step.options, r));
    });
  }
  options.onProgress?.(steps.length, steps.length, 'done');
  return candidates;
}

function finish(
  model: OnnxModel,
  candidates: WeightCandidate[],
  outcomes: Map<string, TensorOutcome>,
  warnings: string[],
): CompressionResult {
  requireSelection(model, candidates.length, outcomes.size);
  // in the model's order, as the page's preview session lists them: a recipe whose steps pick tensors
  // out of order (a per-tensor plan) then exports the same file from the page and the CLI
  const order = new Map(candidates.map((c, i) => [c.name, i]));
  const list = [...outcomes.values()].sort(
    (a, b) => order.get(a.candidate.name)! - order.get(b.candidate.name)!,
  );
  const reports = list.map(reportFor);
  return { outcomes: list, reports, totals: totalsFor(model, reports), warnings };
}

export function compressModel(
  model: OnnxModel,
  steps: readonly ResolvedStep[],
  options: CompressOptions = {},
): CompressionResult {
  const outcomes = new Map<string, TensorOutcome>();
  const warnings: string[] = [];
  const run = recipeSteps(model, steps, options, outcomes, warnings);
  let next = run.next();
  while (!next.done) {
    const { method, inputs, options: stepOptions } = next.value;
    next = run.next(
      method.apply(
        inputs.map((o) => asMatrix(o.candidate, o.values)),
        stepOptions,
        method.needs?.length ? options.calibration : undefined,
      ),
    );
  }
  return finish(model, next.value, outcomes, warnings);
}

/**
 * compressModel with each step's tensors spread over a kernel pool (one task per tensor; a global
 * threshold's tensors go together); calibrated steps run here. The result equals compressModel's.
 */
export async function compressModelInPool(
  model: OnnxModel,
  steps: readonly ResolvedStep[],
  pool: KernelPool,
  options: CompressOptions = {},
): Promise<CompressionResult> {
  const outcomes = new Map<string, TensorOutcome>();
  const warnings: string[] = [];
  const run = recipeSteps(model, steps, options, outcomes, warnings);
  let next = run.next();
  const scope = pool.newScope();
  try {
    while (!next.done) {
      const { method, inputs, options: stepOptions } = next.value;
      let results: KernelResult[];
      if (!poolable(method))
        results = method.apply(
          inputs.map((o) => asMatrix(o.candidate, o.values)),
          stepOptions,
          options.calibration,
        );
      // the pool's inputs in shared memory: one copy here instead of a clone per task (a copy on each
      // side of the message); a tensor split into parts must be shared anyway
      else if (ranksTogether(method.id, stepOptions))
        results = await pool.apply(
          method.id,
          stepOptions,
          inputs.map((o) => asMatrix(o.candidate, pool.share(o.values))),
          scope,
        );
      else
        results = (
          await Promise.all(
            inputs.map((o) =>
              pool.apply(method.id, stepOptions, [asMatrix(o.candidate, pool.share(o.values))], scope),
            ),
          )
        ).flat();
      next = run.next(results);
    }
  } catch (e) {
    pool.cancel(scope);
    throw e;
  }
  return finish(model, next.value, outcomes, warnings);
}
