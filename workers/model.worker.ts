/** The model worker: owns the parsed model; the page gets summaries and histograms, never the weights. */
import * as Comlink from 'comlink';
import { parseModel, readTensorFloat32, type OnnxModel } from '../src/core/onnx/model.ts';
import { findWeight, graphIndex } from '../src/core/onnx/graphs.ts';
import { summarizeModel, tensorRowStats, type ModelSummary } from '../src/core/summary.ts';
import { histogram, tensorStats, type Histogram, type TensorStats } from '../src/core/stats.ts';
import { yieldToEventLoop } from '../src/core/eval/yield.ts';
import { pickModelFiles, type DroppedFile } from '../src/core/files.ts';
import { positionTableContext } from '../src/core/eval/context.ts';
import { ModelError, serializeError, type SerializedError } from '../src/core/errors.ts';
import { blobSource } from './blob-source.ts';
import { PreviewSession, overlayHistogram } from '../src/core/compress/session.ts';
import { resolveFullRecipe, type RecipeStep } from '../src/core/compress/recipe.ts';
import { exportCompressed } from '../src/core/compress/export.ts';
import {
  reportFor,
  totalsFor,
  type CompressionResult,
  type CompressionTotals,
  type TensorOutcome,
  type TensorReport,
} from '../src/core/compress/pipeline.ts';
import { exportStreaming, isCrossTensor, previewOutcomes } from '../src/core/compress/stream-export.ts';
import { folderSink, opfsSpool } from './export-files.ts';
import { selectWeights, type WeightCandidate } from '../src/core/compress/select.ts';
import {
  CalibrationCache,
  calibratableWeights,
  calibrateWeights,
  calibrationFootprint,
  checkVocabulary,
  type CalibrationProgress,
} from '../src/core/compress/calibration.ts';
import type { CalibrationSettings } from '../src/core/compress/recipe.ts';
import type { CalibrationStats } from '../src/core/calibrate/stats.ts';
import { activationSummaries, type ActivationSummary } from '../src/core/calibrate/summary.ts';
import {
  IDS_OVERLAP_SPAN,
  TEXT_OVERLAP_SPAN,
  overlapFraction,
  textSymbols,
} from '../src/core/calibrate/overlap.ts';
import { summarizeInputs } from '../src/core/summary.ts';
import { loadTokenizer, parseIdsText } from '../src/core/tokenizer.ts';
import { createSession, Tensor } from '../src/runtime/ort-web.ts';
import { createPagePool, widenForExport } from '../src/runtime/pool-web.ts';
import { StatsHub } from '../src/core/stats-hub.ts';
import { DataType } from '../src/core/onnx/dtypes.ts';
import type { KernelPool } from '../src/core/compress/kernel-tasks.ts';
import {
  captureTaylorImportance,
  pruneWithImportance,
  type StructureSettings,
} from '../src/core/compress/structure.ts';
import type { CalibrationInput } from '../src/core/compress/calibration.ts';
import {
  activationImportance,
  detectStructure,
  magnitudeImportance,
  parameterCount,
  type ImportanceKind,
  type ModelStructure,
  type StructureImportance,
} from '../src/core/structure/index.ts';
import type { StructureReport } from '../src/core/structure/rewrite.ts';
import { bytesSource } from '../src/core/onnx/model.ts';
import { distillSplit } from '../src/core/compress/distill-settings.ts';
import { checkTrainable, withWeights } from '../src/core/train/distill.ts';

export interface Progress {
  phase: 'reading' | 'parsing' | 'statistics';
  done: number;
  total: number;
}

/** One row's statistics as statistics() sends them (or why its values cannot be read). */
export type StatisticsRow = { name: string } & (TensorStats | { error: string });

export type Result<T> = { ok: true; value: T } | { ok: false; error: SerializedError };

/**
 * The kernel workers (one per core, capped): previews and exports run their weight-only kernels there,
 * so this worker stays free to answer the page and a newer slider position cancels the older kernels.
 */
let pool: KernelPool | undefined | null;
function kernelPool(): KernelPool | undefined {
  if (pool === undefined) pool = createPagePool() ?? null;
  return pool ?? undefined;
}

let current: OnnxModel | undefined;
let statisticsRun = 0;
/** A statistics run (statistics()) is going on. */
let statisticsBusy = false;
/**
 * The weights the first preview after opening reads, offered to the statistics run going on at the
 * same time (each weight read once, not twice): set while that preview runs.
 */
let statsHub: StatsHub | undefined;
/** Stored types whose tensorStats(readTensor) equals tensorStats of the float32 a preview reads. */
const FLOAT_STORED = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16]);
let session: PreviewSession | undefined;
let lastPreview:
  | {
      key: string;
      result: CompressionResult;
      /** One weight's outcome under the previewed recipe (the result keeps only the viewed one's). */
      outcomeOf?: (name: string) => Promise<TensorOutcome | undefined>;
    }
  | undefined;
/**
 * Bytes of weight arrays a preview session keeps between slider moves, counted as the arrays really
 * held: originals (PREVIEW_ORIGINALS_BUDGET of it) and memoised compressed weights (the rest). A
 * summary preview memoises encodings, not decoded float32 (int4: 1.1 bytes a weight), so the 768 MiB
 * for them hold every int4 encoding of a 2.7 GB float32 model (0.62 GB), which the export then writes
 * without running a kernel again. A model larger than this previews one weight at a time and
 * recomputes what it could not keep, instead of holding several copies of itself.
 */
const PREVIEW_MEMORY_BUDGET = 1024 * 2 ** 20;
/** Originals help a slider move only when the model's weights fit: a big model reads them again anyway. */
const PREVIEW_ORIGINALS_BUDGET = 256 * 2 ** 20;
const sessionOptions = () => ({
  pool: kernelPool(),
  memoryBudget: PREVIEW_MEMORY_BUDGET,
  originalsBudget: PREVIEW_ORIGINALS_BUDGET,
});
let latestPreview = 0;
/** The streamed export running now (exportFiles), for cancelExport. */
let exportController: AbortController | undefined;

/** What the page's Structure section shows: the blocks the model maps to, and their importance. */
export interface StructureInfo {
  /** The measure the heat map shows. */
  importance: ImportanceKind;
  blocks: number;
  /** Query heads and MLP neurons per block (before pruning). */
  heads: number[];
  neurons: number[];
  params: number;
  /** [block][head] importance, each block scaled to its own maximum (a heat map's cells). */
  headImportance: number[][];
  /** Per block: the MLP neurons' importance, min / mean / max over the block's maximum. */
  neuronSummary: { min: number; mean: number; max: number }[];
}

/** The open model's structure (or why it has none), found once per model. */
let structureInfo: Result<StructureInfo> | undefined;
/**
 * The structure pre-pass of the current settings: the pruned model and the preview session over it.
 * The same core function as the CLI's (pruneStructure), so an export equals the CLI's output.
 */
let pruned:
  | { key: string; report: StructureReport; bytes: number; model: OnnxModel; session: PreviewSession }
  | undefined;

/**
 * Importance measured on the open model, per measure: magnitude from the weights; activation from the
 * page's calibration statistics (a block scores the sum of its units: the block influence the CLI
 * also captures needs a capture the page's calibration does not run); taylor from the calibration's
 * sequences run forward and backward through the training engine (importanceFor's `taylor`, asked
 * for by the Structure card, with progress and cancel). Each remembers the calibration it used.
 */
let importances = new Map<ImportanceKind, { generation: number; value: StructureImportance }>();
/** The input of the newest calibration that finished: Taylor importance reads its sequences from the cache. */
let calibrationInput: CalibrationInput | undefined;
let importanceController: AbortController | undefined;

/** Scores of `kind` on the open model, measured already (taylor) or measured now (magnitude, activation). */
function importanceFor(kind: ImportanceKind, structure: ModelStructure): StructureImportance {
  if (!current) throw noModel();
  const generation = kind === 'magnitude' ? 0 : calibrationGeneration;
  const known = importances.get(kind);
  if (known && known.generation === generation) return known.value;
  if (kind !== 'magnitude' && !calibration)
    throw new ModelError(
      'needs-calibration',
      `${kind === 'taylor' ? 'Taylor' : 'Activation'} importance needs calibration: run the Calibration card first.`,
    );
  if (kind === 'taylor')
    throw new ModelError(
      'needs-calibration',
      'Taylor importance is measured on the calibration sequences: choose taylor in the Structure card to measure it.',
    );
  const value =
    kind === 'activation'
      ? activationImportance(current, structure, calibration!)
      : magnitudeImportance(current, structure);
  importances.set(kind, { generation, value });
  return value;
}

function infoOf(model: OnnxModel, importance: StructureImportance): StructureInfo {
  return {
    importance: importance.kind,
    blocks: importance.heads.length,
    heads: importance.heads.map((h) => h.length),
    neurons: importance.neurons.map((n) => n.length),
    params: parameterCount(model.graph),
    headImportance: importance.heads.map(scaled),
    neuronSummary: importance.neurons.map((n) => {
      const v = scaled(n);
      return {
        min: Math.min(...v),
        mean: v.reduce((a, b) => a + b, 0) / Math.max(1, v.length),
        max: Math.max(...v),
      };
    }),
  };
}

async function prunedSession(structure: StructureSettings): Promise<NonNullable<typeof pruned>> {
  if (!current) throw noModel();
  const found = detectStructure(current);
  const importance = importanceFor(structure.importance, found);
  const key = `${JSON.stringify(structure)}#${structure.importance === 'magnitude' ? 0 : calibrationGeneration}`;
  if (pruned?.key === key) return pruned;
  const result = pruneWithImportance(current, structure, found, importance);
  pruned = {
    key,
    report: result.report,
    bytes: result.bytes.byteLength,
    model: result.model,
    session: new PreviewSession(result.model, sessionOptions()),
  };
  return pruned;
}

/** The student of the distilling recipe last asked for: the model the training worker trains. */
let student: { key: string; model: OnnxModel } | undefined;
/** Trained models by run key (the newest few), each with its preview session for the steps after it. */
const trained = new Map<string, { model: OnnxModel; bytes: Uint8Array; session: PreviewSession }>();
const KEPT_TRAINED = 3;

/** A run's trained model, or the typed error the page shows when it is gone (a new model was opened). */
function trainedModel(key: string) {
  const t = trained.get(key);
  if (!t)
    throw new ModelError(
      'needs-training',
      'The trained weights of this recipe are gone (another model was opened): run Train in the Distil card again.',
    );
  return t;
}

/** A result with no compressed tensor: the trained model as it is. */
function unchanged(model: OnnxModel): CompressionResult {
  return { outcomes: [], reports: [], totals: totalsFor(model, []), warnings: [] };
}

/**
 * The result the preview shows for a trained model with no step after distillation: the outcomes of
 * the steps before it, their values replaced by the trained weights (stored as float32).
 */
function trainedResult(model: OnnxModel, before: CompressionResult): CompressionResult {
  const outcomes = before.outcomes.map((o) => {
    const values = readTensorFloat32(model, findWeight(model, o.candidate.name).tensor);
    return {
      ...o,
      values,
      methods: [...o.methods, 'distill'],
      encoder: null,
      storedBytes: values.byteLength,
    };
  });
  const reports = outcomes.map(reportFor);
  return { outcomes, reports, totals: totalsFor(model, reports), warnings: [] };
}

/** Totals measured from the open model's own size: the structure pass is part of the compression. */
function fromSource(totals: CompressionTotals): CompressionTotals {
  return current ? { ...totals, inputBytes: totalsFor(current, []).inputBytes } : totals;
}

function scaled(values: ArrayLike<number>): number[] {
  let max = 0;
  for (let i = 0; i < values.length; i++) max = Math.max(max, values[i]);
  return Array.from(values, (v) => (max > 0 ? v / max : 0));
}

/** Calibration results per (model, calibration set): a second run of the same settings reads them. */
const calibrationCache = new CalibrationCache();
/** The statistics the preview and export read: the newest calibration that finished on this model. */
let calibration: CalibrationStats | undefined;
/** Bumped whenever `calibration` changes: a preview computed with other statistics is not reused. */
let calibrationGeneration = 0;
let calibrationController: AbortController | undefined;
/** Calibrations that ran the model (cache hits do not count): the page shows it, tests assert on it. */
let calibrationRuns = 0;

/** What the page asks to calibrate on: the settings (length and BOS resolved) and the user's data. */
export interface CalibrationRequest {
  settings: CalibrationSettings & { length: number; bos: number };
  /** The 'ids' source: pre-tokenized ids, one sequence per line. */
  idsText?: string;
  /** The 'text' source: text, and the tokenizer.json that turns it into ids. */
  text?: string;
  tokenizerJson?: unknown;
  /** The file the data came from, named in errors. */
  dataName?: string;
}

export interface CalibrationDone {
  activations: ActivationSummary[];
  sequences: number;
  tokens: number;
  /** Calibrations of this session that ran the model; unchanged when this one came from the cache. */
  runs: number;
  fromCache: boolean;
  millis: number;
}

/** One side of an overlap check: text, or pre-tokenized ids as the person typed them. */
export interface OverlapSide {
  text: string;
  isIds: boolean;
}

/** Typed like every other error the page shows (the buttons that lead here need an open model). */
const noModel = () => new ModelError('invalid-argument', 'No model is open: open an .onnx file first.');

function wrap<T>(fn: () => T): Result<T> {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    return { ok: false, error: serializeError(e) };
  }
}

async function wrapAsync<T>(fn: () => Promise<T>): Promise<Result<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (e) {
    return { ok: false, error: serializeError(e) };
  }
}

export interface Overlay {
  name: string;
  edges: number[];
  original: number[];
  compressed: number[];
  report?: TensorReport;
}

export interface PreviewResult {
  totals: CompressionTotals;
  reports: TensorReport[];
  selected?: Overlay;
  /** Tensors recomputed by this preview (the rest were reused). */
  computed: number;
  millis: number;
  /** What the structure pre-pass removed, and the pruned (not yet compressed) model's size. */
  structure?: StructureReport & { prunedBytes: number };
}

/** Whether a preview's result holds every weight's arrays (a summary keeps only the viewed one's). */
function complete(result: CompressionResult): boolean {
  return result.outcomes.length === result.reports.length;
}

function overlayFor(result: CompressionResult | undefined, name: string, bins: number): Overlay | undefined {
  const o = result?.outcomes.find((x) => x.candidate.name === name);
  if (!o) return undefined;
  return {
    name,
    ...overlayHistogram(o.original, o.values, bins),
    report: result?.reports.find((r) => r.name === name),
  };
}

/** An opened model: its summary, and which of the dropped files it is made of. */
export type OpenedModel = ModelSummary & {
  source: {
    /** The dropped path of the .onnx that was opened. */
    main: string;
    /** The external-data files it references: dropped path, and the location the model names it by. */
    external: { path: string; location: string }[];
    config?: string;
    tokenizer?: string;
    /** Rows of its learned position table, when it has one (bounds the context without a config). */
    positions?: number;
  };
};

const api = {
  open(files: { path: string; file: File }[], onProgress?: (p: Progress) => void): Result<OpenedModel> {
    // everything is parsed into locals and swapped in only on success: a file that fails to open
    // leaves the previous model fully working (preview, export, histograms)
    return wrap(() => {
      const dropped: DroppedFile<File>[] = files.map((f) => ({
        path: f.path,
        size: f.file.size,
        file: f.file,
      }));
      const picked = pickModelFiles(dropped);
      const name = picked.main.path.split('/').pop() ?? picked.main.path;
      const main = blobSource(name, picked.main.file, (done, total) =>
        onProgress?.({ phase: 'reading', done, total }),
      );
      const external = picked.external.map((f) => blobSource(f.location, f.file));
      onProgress?.({ phase: 'parsing', done: 0, total: 1 });
      const model = parseModel(main, external);
      // no tensor is read here: statistics() fills the rows' statistics afterwards, in the pool,
      // the rows on screen first
      const summary = summarizeModel(model, undefined, undefined, false);
      // parsing opened exactly the external-data files the model references: only those go to onnxruntime
      const referenced = new Set(model.external.keys());
      const positions = positionTableContext(model.graph)?.positions;
      const opened: OpenedModel = {
        ...summary,
        source: {
          main: picked.main.path,
          external: picked.external
            .filter((f) => referenced.has(f.location))
            .map((f) => ({ path: f.path, location: f.location })),
          ...(picked.config ? { config: picked.config.path } : {}),
          ...(picked.tokenizer ? { tokenizer: picked.tokenizer.path } : {}),
          ...(positions ? { positions } : {}),
        },
      };
      const nextSession = new PreviewSession(model, {
        ...sessionOptions(),
        // only this model's session: the pruned and trained ones read other values under the same names
        onRead: (name, values) => {
          if (current === model) statsHub?.offer(name, values);
        },
      });
      current = model;
      session = nextSession;
      lastPreview = undefined;
      structureInfo = undefined;
      pruned = undefined;
      student = undefined;
      trained.clear();
      importances = new Map();
      calibrationInput = undefined;
      importanceController?.abort();
      // the previous model's statistics mean nothing to this one; its running calibration stops
      calibration = undefined;
      calibrationGeneration++;
      calibrationController?.abort();
      // a preview of the previous model still running answers 'cancelled' rather than mixing models
      latestPreview++;
      return opened;
    });
  },

  /**
   * Every weight's min/max/mean/std/zeros, computed after opening (the table shows its rows at once):
   * the `priority` rows (what the page shows first) and then the rest in file order, read one tensor
   * at a time and summed up in the kernel pool, sent to `onRows` in batches. A newer call or another
   * model stops it ('cancelled').
   */
  async statistics(priority: string[], onRows: (rows: StatisticsRow[]) => void): Promise<Result<number>> {
    const run = ++statisticsRun;
    statisticsBusy = true;
    return wrapAsync(async () => {
      const model = current;
      if (!model) throw noModel();
      const weights = graphIndex(model.graph).weights();
      const byName = new Map(weights.map((w) => [w.name, w]));
      const first = priority.filter((n) => byName.has(n));
      const early = new Set(first);
      const order = [...first, ...weights.map((w) => w.name).filter((n) => !early.has(n))];
      const kernels = kernelPool();
      let batch: StatisticsRow[] = [];
      let sentAt = performance.now();
      const send = () => {
        if (batch.length && run === statisticsRun && model === current) onRows(batch);
        batch = [];
        sentAt = performance.now();
      };
      const push = (row: StatisticsRow) => {
        batch.push(row);
        // the rows on screen in one batch as soon as they are all known, then a few updates a second
        if (early.delete(row.name) && !early.size) send();
        else if (batch.length >= 256 || performance.now() - sentAt > 250) send();
      };
      const running = new Set<Promise<void>>();
      // the weights a running first preview reads anyway come from its reads (statsHub), as it goes;
      // the others are read here (and those the preview ended without reading, afterwards)
      const fromPreview: Promise<void>[] = [];
      const missed: string[] = [];
      const readAll = async (names: string[], share: boolean) => {
        for (const name of names) {
          if (run !== statisticsRun || model !== current)
            throw new ModelError('cancelled', 'Statistics of a model no longer open.');
          const hub = share && model === current ? statsHub : undefined;
          if (hub?.covers(name)) {
            const row = hub.when(name).then((st) => (st ? push({ name, ...st }) : void missed.push(name)));
            fromPreview.push(row);
            continue;
          }
          hub?.drop(name);
          // values read into a buffer of their own are handed over (moved, no copy; freed in the kernel
          // worker when summed); a view on the model's bytes goes as a copy of its own
          const stats = tensorRowStats(model, byName.get(name)!.tensor, (v, owned) =>
            kernels ? kernels.stats(v, 0, owned) : tensorStats(v),
          );
          const job = Promise.resolve(stats).then(
            (row) => push({ name, ...row }),
            (e: Error) => void batch.push({ name, error: e.message }),
          );
          running.add(job);
          void job.finally(() => running.delete(job));
          if (running.size >= (kernels?.size ?? 1) * 2) await Promise.race(running);
          if (!kernels) await yieldToEventLoop();
        }
        await Promise.all(running);
      };
      await readAll(order, true);
      await Promise.all(fromPreview);
      await readAll(missed, false);
      send();
      return order.length;
    }).finally(() => {
      if (run === statisticsRun) statisticsBusy = false;
    });
  },

  histogram(name: string, bins: number): Result<Histogram> {
    return wrap(() => {
      if (!current) throw noModel();
      return histogram(readTensorFloat32(current, findWeight(current, name).tensor), bins);
    });
  },

  /** The weight matrices recipes can select, with their roles. */
  candidates(): Result<WeightCandidate[]> {
    return wrap(() => {
      if (!session) throw noModel();
      return session.candidates;
    });
  },

  /**
   * Runs the recipe on the open model. A newer call makes this one stale: it stops at the next
   * tensor and answers 'cancelled'. The selected tensor is computed first and sent to `onSelected`.
   */
  async preview(
    steps: RecipeStep[],
    structure: StructureSettings | null,
    selected: string | undefined,
    bins: number,
    onSelected?: (o: Overlay) => void,
    onProgress?: (done: number, total: number) => void,
    trainedKey?: string,
  ): Promise<Result<PreviewResult>> {
    const seq = ++latestPreview;
    return wrapAsync(async () => {
      if (!session || !current) throw noModel();
      const t0 = performance.now();
      const all = resolveFullRecipe({ steps, ...(structure ? { structure } : {}), distill: {} }).steps;
      const structured = structure ? await prunedSession(structure) : undefined;
      // with trained weights, the steps after distillation compress them; without, the whole recipe previews untrained
      const taught = trainedKey ? trainedModel(trainedKey) : undefined;
      const resolved = taught ? all.slice(distillSplit(all)) : all;
      if (seq !== latestPreview) throw new ModelError('cancelled', 'Preview superseded.');
      // the statistics were captured on the original weights: a pruned model's calibrated steps have none
      const withStats = {
        calibration: structured ? undefined : calibration,
        generation: calibrationGeneration,
      };
      const target = taught?.session ?? structured?.session ?? session;
      // the first preview after opening computes every weight and no slider moves yet: a worker per
      // core for it (the page's pool and workers lent for this run, ended after it), as an export has;
      // later runs (slider moves) keep a core free for rendering
      const own = kernelPool();
      const widened = own && !lastPreview && target === session ? widenForExport(own) : undefined;
      const lent = widened !== own ? widened : undefined;
      // the statistics run still going after opening takes the weights this preview reads from it
      const hub =
        !lastPreview && target === session && statisticsBusy
          ? new StatsHub(
              // the weights the recipe selects (others the statistics run reads at once, not after the preview)
              resolved
                .flatMap((step) => selectWeights(target.candidates, step.select))
                .filter((c) => FLOAT_STORED.has(findWeight(current!, c.name).tensor.data_type))
                .map((c) => c.name),
            )
          : undefined;
      if (hub) statsHub = hub;
      let early: Overlay | undefined;
      const run = async () => {
        if (taught && !resolved.length) {
          // nothing after distillation: each weight the steps before it touched, trained, against the original
          const prefix = all.slice(0, distillSplit(all));
          const base = structured?.session ?? session!;
          const before = prefix.length
            ? await base.run(prefix, { calibration: withStats.calibration })
            : unchanged(taught.model);
          return trainedResult(taught.model, before);
        }
        return target.run(resolved, {
          calibration: withStats.calibration,
          priority: selected,
          isStale: () => seq !== latestPreview,
          // a few progress messages, not one per tensor
          onProgress: (done, total) => {
            if (done === total || done % Math.max(1, Math.ceil(total / 20)) === 0) onProgress?.(done, total);
          },
          onPriority: (o) => {
            early = { name: o.candidate.name, ...overlayHistogram(o.original, o.values, bins) };
            onSelected?.(early);
          },
          // reports of every weight, arrays of the viewed one (and what the memory budget keeps)
          keep: 'summary',
          ...(lent ? { pool: lent } : {}),
        });
      };
      let result: CompressionResult;
      try {
        result = await run();
      } finally {
        lent?.close();
        hub?.end();
        if (statsHub === hub) statsHub = undefined;
      }
      lastPreview = {
        key: `${JSON.stringify(resolved)}#${JSON.stringify(structure)}#${withStats.generation}#${trainedKey ?? ''}`,
        result,
        outcomeOf: async (name) =>
          (
            await target.run(resolved, {
              calibration: withStats.calibration,
              only: new Set([name]),
              priority: name,
              keep: 'summary',
            })
          ).outcomes[0],
      };
      // the histogram sent early is this run's: add the report rather than histogram the tensor again
      const report = result.reports.find((r) => r.name === early?.name);
      return {
        totals: structured || taught ? fromSource(result.totals) : result.totals,
        reports: result.reports,
        selected: early ? { ...early, report } : selected ? overlayFor(result, selected, bins) : undefined,
        computed: target.lastComputed,
        millis: performance.now() - t0,
        ...(structured ? { structure: { ...structured.report, prunedBytes: structured.bytes } } : {}),
      };
    });
  },

  /** The open model's blocks, heads and neurons with their magnitude importance, or why it has none. */
  structure(): Result<StructureInfo> {
    if (!current)
      return wrap(() => {
        throw noModel();
      });
    const model = current;
    structureInfo ??= wrap(() => infoOf(model, importanceFor('magnitude', detectStructure(model))));
    return structureInfo;
  },

  /**
   * The student of a distilling recipe: the structure pass and the steps before the first storage
   * format, written as a float model (ONNX bytes, transferred), for the training worker. Refused
   * (typed) when its weights cannot train (a quantized source model).
   */
  async distillStudent(
    steps: RecipeStep[],
    structure: StructureSettings | null,
    key: string,
  ): Promise<Result<Uint8Array>> {
    return wrapAsync(async () => {
      if (!session || !current) throw noModel();
      const all = resolveFullRecipe({ steps, ...(structure ? { structure } : {}), distill: {} }).steps;
      const prefix = all.slice(0, distillSplit(all));
      const structured = structure ? await prunedSession(structure) : undefined;
      const base = structured?.model ?? current;
      const target = structured?.session ?? session;
      const result = prefix.length
        ? await target.run(prefix, { calibration: structured ? undefined : calibration })
        : unchanged(base);
      const bytes = exportCompressed(base, result).model;
      const model = parseModel(bytesSource(base.name, bytes));
      checkTrainable(model);
      student = { key, model };
      const copy = bytes.slice();
      return Comlink.transfer(copy, [copy.buffer as ArrayBuffer]);
    });
  },

  /** Keeps a run's trained weights: the student of `studentKey` with them, and a preview session over it. */
  setTrained(req: { key: string; studentKey: string; weights: Map<string, Float32Array> }): Result<void> {
    return wrap(() => {
      if (!student || student.key !== req.studentKey)
        throw new ModelError('cancelled', 'The recipe changed while training: its weights were not kept.');
      const bytes = withWeights(student.model, req.weights);
      const model = parseModel(bytesSource(student.model.name, bytes));
      trained.delete(req.key);
      trained.set(req.key, {
        model,
        bytes,
        session: new PreviewSession(model, sessionOptions()),
      });
      while (trained.size > KEPT_TRAINED) trained.delete(trained.keys().next().value!);
    });
  },

  /**
   * The open model's heads and neurons scored by `kind` (the heat map's cells), measuring it when
   * needed: Taylor importance runs each calibration sequence forward and backward through the
   * training engine here, in the worker, reporting each sequence done; cancelImportance stops it.
   */
  async structureImportance(
    kind: ImportanceKind,
    onProgress?: (done: number, total: number) => void,
  ): Promise<Result<StructureInfo>> {
    importanceController?.abort();
    const mine = new AbortController();
    importanceController = mine;
    return wrapAsync(async () => {
      try {
        const model = current;
        if (!model) throw noModel();
        const found = detectStructure(model);
        if (kind === 'taylor') {
          const known = importances.get('taylor');
          if (!known || known.generation !== calibrationGeneration) {
            if (!calibration || !calibrationInput)
              throw new ModelError(
                'needs-calibration',
                'Taylor importance needs calibration: run the Calibration card first.',
              );
            const generation = calibrationGeneration;
            const value = await captureTaylorImportance(
              model,
              found,
              calibrationInput,
              {
                // the sequences come from the calibration's cache; generating them again would need this
                createSession: async (bytes: Uint8Array) =>
                  (await createSession({ model: bytes, provider: 'wasm' })).session,
                Tensor,
                inputs: summarizeInputs(model.graph),
              },
              {
                signal: mine.signal,
                cache: calibrationCache,
                onProgress: (p) => {
                  if (p.phase === 'gradients') onProgress?.(p.done, p.total);
                },
              },
            );
            if (model !== current) throw new ModelError('cancelled', 'Another model was opened.');
            importances.set('taylor', { generation, value });
          }
        }
        return infoOf(model, importanceFor(kind, found));
      } finally {
        if (importanceController === mine) importanceController = undefined;
      }
    });
  },

  /** Stops a running Taylor importance at its next sequence. */
  cancelImportance(): void {
    importanceController?.abort();
  },

  async overlay(name: string, bins: number): Promise<Result<Overlay | undefined>> {
    return wrapAsync(async () => {
      const known = overlayFor(lastPreview?.result, name, bins);
      if (known || !lastPreview?.outcomeOf || !lastPreview.result.reports.some((r) => r.name === name))
        return known;
      // the preview kept only the viewed weight's arrays: this one is computed again (memoised if it fits)
      const o = await lastPreview.outcomeOf(name);
      return o
        ? {
            name,
            ...overlayHistogram(o.original, o.values, bins),
            report: lastPreview.result.reports.find((r) => r.name === name),
          }
        : undefined;
    });
  },

  /** The compressed model as ONNX bytes (transferred, not copied), from the recipe's preview. */
  async exportModel(
    steps: RecipeStep[],
    structure: StructureSettings | null = null,
    trainedKey?: string,
  ): Promise<Result<{ bytes: Uint8Array; totals: CompressionTotals; warnings: string[] }>> {
    return wrapAsync(async () => {
      if (!session || !current) throw noModel();
      const all = resolveFullRecipe({ steps, ...(structure ? { structure } : {}), distill: {} }).steps;
      if (trainedKey) {
        // the trained model, with the steps after distillation (quantization) applied to its weights
        const t = trainedModel(trainedKey);
        const rest = all.slice(distillSplit(all));
        const key = `${JSON.stringify(rest)}#${JSON.stringify(structure)}#${calibrationGeneration}#${trainedKey}`;
        const result = !rest.length
          ? unchanged(t.model)
          : lastPreview?.key === key && complete(lastPreview.result)
            ? lastPreview.result
            : await t.session.run(rest);
        const written = rest.length ? exportCompressed(t.model, result) : undefined;
        const bytes = written ? written.model : t.bytes.slice();
        const warnings = [...result.warnings, ...(written?.warnings ?? [])];
        return Comlink.transfer(
          {
            bytes,
            totals: fromSource({ ...result.totals, estimatedOutputBytes: bytes.byteLength }),
            warnings,
          },
          [bytes.buffer as ArrayBuffer],
        );
      }
      const resolved = all;
      const structured = structure ? await prunedSession(structure) : undefined;
      const target = structured?.session ?? session;
      const key = `${JSON.stringify(resolved)}#${JSON.stringify(structure)}#${calibrationGeneration}#`;
      const result =
        lastPreview?.key === key && complete(lastPreview.result)
          ? lastPreview.result
          : // the encodings the preview memoised are written as they are (no kernel runs again for them)
            await target.run(resolved, {
              calibration: structured ? undefined : calibration,
              keep: 'encodings',
            });
      const written = exportCompressed(structured?.model ?? current, result);
      const totals = structured ? fromSource(result.totals) : result.totals;
      // a format the export fell back from (int4 MatMulNBits → DequantizeLinear) goes into the report
      const warnings = [...result.warnings, ...written.warnings];
      return Comlink.transfer({ bytes: written.model, totals, warnings }, [
        written.model.buffer as ArrayBuffer,
      ]);
    });
  },

  /**
   * The compressed model streamed into `dir` as `names.model` + `names.data` (external data): one
   * weight at a time compressed (memoised ones reused), parked in a spool on disk, then the data file
   * written tensor by tensor and the .onnx last. Byte-identical to `exportModel` with external data.
   */
  async exportFiles(
    steps: RecipeStep[],
    structure: StructureSettings | null,
    trainedKey: string | undefined,
    dir: FileSystemDirectoryHandle,
    names: { model: string; data: string },
    onProgress?: (done: number, total: number) => void,
  ): Promise<
    Result<{ modelBytes: number; dataBytes: number; totals: CompressionTotals; warnings: string[] }>
  > {
    /** Workers lent to this export (ended when it ends, whatever the outcome). */
    let lent: KernelPool | undefined;
    // one export at a time: a newer one (or cancelExport) stops this one at its next tensor
    exportController?.abort();
    const mine = new AbortController();
    exportController = mine;
    const checkCancelled = () => {
      if (mine.signal.aborted) throw new ModelError('cancelled', 'Export cancelled.');
    };
    return wrapAsync(async () => {
      if (!session || !current) throw noModel();
      const all = resolveFullRecipe({ steps, ...(structure ? { structure } : {}), distill: {} }).steps;
      let base: OnnxModel;
      let outcomes: AsyncIterable<TensorOutcome> | Iterable<TensorOutcome>;
      let result: () => CompressionResult;
      if (trainedKey || structure || all.some(isCrossTensor) || !all.length) {
        // trained or structure-pruned weights live in memory already; a cross-tensor step sees all at once
        const t = trainedKey ? trainedModel(trainedKey) : undefined;
        const structured = !t && structure ? await prunedSession(structure) : undefined;
        const resolved = t ? all.slice(distillSplit(all)) : all;
        base = t?.model ?? structured?.model ?? current;
        const target = t?.session ?? structured?.session ?? session;
        const full = resolved.length
          ? await target.run(resolved, { calibration: t || structured ? undefined : calibration })
          : unchanged(base);
        outcomes = full.outcomes;
        result = () => (structured ? { ...full, totals: fromSource(full.totals) } : full);
      } else {
        // one weight at a time, in the order a full preview returns them (exportModel's order),
        // reusing the encodings the preview memoised; every core while exporting (no slider to keep
        // smooth): the page's pool and workers lent for it, one weight more in flight than workers
        base = current;
        const own = kernelPool();
        const pool = own && widenForExport(own);
        if (pool && pool !== own) lent = pool;
        const streamed = previewOutcomes(session, current, all, {
          ...(calibration ? { calibration } : {}),
          ...(pool ? { pool } : {}),
          ...(onProgress ? { onProgress } : {}),
        });
        outcomes = streamed.outcomes;
        result = streamed.result;
      }
      const spool = await opfsSpool();
      const sink = await folderSink(dir, names);
      try {
        const done = await exportStreaming(base, outcomes, {
          externalData: { location: names.data },
          spool,
          sink,
          checkCancelled,
        });
        await sink.close();
        const r = result();
        return {
          modelBytes: done.modelBytes,
          dataBytes: done.dataBytes,
          totals: { ...r.totals, estimatedOutputBytes: done.modelBytes + done.dataBytes },
          warnings: [...r.warnings, ...done.warnings],
        };
      } catch (e) {
        await sink.abort();
        throw e;
      } finally {
        await spool.close();
      }
    }).finally(() => {
      // the lent workers end (a kernel still running there stops with them: they hold no model)
      lent?.close();
      if (exportController === mine) exportController = undefined;
    });
  },

  /** Stops the running streamed export at its next tensor; its files are removed (the sink aborts). */
  cancelExport(): void {
    exportController?.abort();
  },
};

/** The calibration's sequences: generated by the model ('generate', none here), or the user's ids/text. */
function calibrationData(model: OnnxModel, req: CalibrationRequest): number[][] | undefined {
  const where = req.dataName ?? 'the calibration data';
  if (req.settings.source === 'ids') {
    if (req.idsText === undefined) throw new ModelError('needs-calibration', 'Choose a file of token ids.');
    const ids = parseIdsText(req.idsText);
    checkVocabulary(model, ids, where);
    return ids;
  }
  if (req.settings.source === 'text') {
    if (req.text === undefined) throw new ModelError('needs-calibration', 'Choose a text file.');
    const ids = [loadTokenizer(req.tokenizerJson).encode(req.text)];
    checkVocabulary(model, ids, where);
    return ids;
  }
  return undefined;
}

function symbolsOf(side: OverlapSide, tokenizerJson: unknown, asIds: boolean): ArrayLike<number>[] {
  if (side.isIds) return parseIdsText(side.text);
  return asIds ? [loadTokenizer(tokenizerJson).encode(side.text)] : [textSymbols(side.text)];
}

const calibrationApi = {
  /**
   * Captures activation statistics of every MatMul/Gemm weight on the calibration set, with
   * onnxruntime-web (one capture on the original model, XᵀX included), and makes them the ones the
   * preview and export read. Cancelled, failed, or overtaken by another model: the statistics the
   * page had before stay in use.
   */
  async calibrate(
    req: CalibrationRequest,
    onProgress?: (p: CalibrationProgress) => void,
  ): Promise<Result<CalibrationDone>> {
    calibrationController?.abort();
    const mine = new AbortController();
    calibrationController = mine;
    return wrapAsync(async () => {
      try {
        const model = current;
        if (!model) throw noModel();
        const t0 = performance.now();
        const data = calibrationData(model, req);
        const inputs = summarizeInputs(model.graph);
        let ran = false;
        const runtime = {
          async createSession(bytes: Uint8Array) {
            ran = true;
            try {
              // wasm: capture reads every activation back, which WebGPU would copy off the GPU anyway
              return (await createSession({ model: bytes, provider: 'wasm' })).session;
            } catch (e) {
              throw new ModelError(
                'unsupported',
                `onnxruntime-web could not load the model for calibration: ${(e as Error).message ?? String(e)}`,
              );
            }
          },
          Tensor,
          inputs,
        };
        const stats = await calibrateWeights(
          model,
          calibratableWeights(model),
          { settings: req.settings, data },
          runtime,
          {
            signal: mine.signal,
            onProgress,
            cache: calibrationCache,
          },
        );
        if (mine.signal.aborted || model !== current)
          throw new ModelError('cancelled', 'Calibration cancelled.');
        if (ran) calibrationRuns++;
        calibrationInput = { settings: req.settings, data };
        if (stats !== calibration) {
          calibration = stats;
          // a preview made with other statistics is not this export's
          calibrationGeneration++;
        }
        return {
          activations: activationSummaries(stats),
          sequences: stats.sequences,
          tokens: stats.tokens,
          runs: calibrationRuns,
          fromCache: !ran,
          millis: performance.now() - t0,
        };
      } finally {
        if (calibrationController === mine) calibrationController = undefined;
      }
    });
  },

  /** How many activations a calibration captures on the open model, and the bytes its statistics take. */
  calibrationFootprint(): Result<{ activations: number; bytes: number }> {
    return wrap(() => {
      if (!current) throw noModel();
      return calibrationFootprint(current, calibratableWeights(current));
    });
  },

  /** Stops the running calibration at its next sequence (or generated token). */
  cancelCalibration(): void {
    calibrationController?.abort();
  },

  /**
   * The fraction of the calibration data's spans (64 characters, or 16 tokens) found in the
   * evaluation data. Text meets ids through the tokenizer; without one they are not compared (null).
   */
  calibrationOverlap(
    calib: OverlapSide,
    evaluation: OverlapSide,
    tokenizerJson?: unknown,
  ): Result<number | null> {
    return wrap(() => {
      const asIds = calib.isIds || evaluation.isIds;
      if (asIds && !(calib.isIds && evaluation.isIds) && !tokenizerJson) return null;
      return overlapFraction(
        symbolsOf(calib, tokenizerJson, asIds),
        symbolsOf(evaluation, tokenizerJson, asIds),
        asIds ? IDS_OVERLAP_SPAN : TEXT_OVERLAP_SPAN,
      );
    });
  },
};

export type ModelWorkerApi = typeof api & typeof calibrationApi;
Comlink.expose({ ...api, ...calibrationApi });
