/** The studio's one store: every panel reads from here and changes it through its actions. */
import { create } from 'zustand';
import { compressSlice, type CompressState } from './compress-slice.ts';
import { calibrationSlice, type CalibrationSlice } from './calibration-slice.ts';
import { currentRunKey, trainSlice, type TrainSlice } from './train-slice.ts';
import { precisionSlice, type PrecisionSlice } from './precision-slice.ts';
import type { ModelSummary } from '../core/summary.ts';
import type { Histogram } from '../core/stats.ts';
import { parseIdsText } from '../core/tokenizer.ts';
import { evaluationInputProblem } from './eval-input.ts';
import { contextFromConfig } from '../core/eval/config.ts';
import type { ModelBytes } from '../../workers/eval.worker.ts';
import {
  cancelEvaluation,
  evaluatePerplexity,
  openModel,
  tensorHistogram,
  tensorStatistics,
  type EvalResult,
  type PerplexityProgress,
  type Progress,
  type StatisticsRow,
} from './client.ts';

export type PickedFile = { path: string; file: File };

export interface EvalState {
  running: boolean;
  progress?: PerplexityProgress;
  result?: EvalResult;
  error?: string;
}

export interface StudioState extends CompressState, CalibrationSlice, TrainSlice, PrecisionSlice {
  summary?: ModelSummary;
  files: PickedFile[];
  /** Which of the dropped files the open model is: its .onnx and the external data it references. */
  modelFiles?: { main: PickedFile; external: { location: string; file: File }[] };
  /** Parsed config.json / tokenizer.json of the open model, when it came with them. */
  config?: Record<string, unknown>;
  tokenizerJson?: unknown;
  isDemo: boolean;
  loading?: Progress & { fileName: string };
  error?: string;
  selected?: string;
  histogram?: Histogram;
  /** Each weight's statistics by name, as the worker's pool computes them after opening. */
  statistics: Record<string, StatisticsRow>;
  histogramBins: number;
  histogramLog: boolean;
  evalText: string;
  evalTextLabel: string;
  /** The eval text is pre-tokenized ids (one sequence per line), for models without tokenizer.json. */
  evalIsIds: boolean;
  ctx: number;
  stride: number;
  evaluation: EvalState;
  open(
    files: PickedFile[],
    opts?: { isDemo?: boolean; evalText?: string; evalTextLabel?: string },
  ): Promise<void>;
  select(name: string): Promise<void>;
  setBins(bins: number): Promise<void>;
  setLog(log: boolean): void;
  setEvalText(text: string, label: string, isIds?: boolean): void;
  setTokenizer(json: unknown): void;
  setWindow(ctx: number, stride: number): void;
  evaluate(): Promise<void>;
  cancelEvaluate(): void;
}

let openSeq = 0;
/** The newest open that succeeded: the model the worker holds. */
let appliedOpenSeq = 0;
let histSeq = 0;
let evalSeq = 0;

const base = (p: string) => p.split('/').pop() ?? p;

/**
 * The open model as the evaluation worker takes it (the key names the file, so its session is reused): the
 * opened .onnx and only the external-data files it references, by the location it names them (a Hub clone
 * also holds .gitattributes, *.safetensors and other variants' _data files).
 */
export function originalModelBytes(
  summary: ModelSummary,
  files: PickedFile[],
  modelFiles?: StudioState['modelFiles'],
): ModelBytes {
  const main =
    modelFiles?.main ??
    files.find((f) => f.path.endsWith('.onnx') && base(f.path) === summary.name) ??
    files[0];
  const externalData = (modelFiles?.external ?? []).map((e) => ({ path: e.location, data: e.file }));
  return {
    key: `original:${main.path}:${main.file.size}:${main.file.lastModified}`,
    model: main.file,
    externalData,
    inputs: summary.inputs,
  };
}

async function readJson(files: PickedFile[], name: string, path?: string): Promise<unknown> {
  const f = files.find((x) => x.path === path) ?? files.find((x) => base(x.path) === name);
  if (!f) return undefined;
  try {
    return JSON.parse(await f.file.text());
  } catch {
    return undefined;
  }
}

/** The evaluation window: the model's declared context, capped so a browser tab stays responsive. */
/** The window the page starts with: config.json's context, else the position table's rows, else 512 (at most 2048). */
function contextOf(config: Record<string, unknown> | undefined, positions?: number): number {
  return Math.min(contextFromConfig(config) ?? positions ?? 512, 2048);
}

/** Rows the table shows first (its default order: largest first): their statistics are computed first. */
const FIRST_ROWS = 40;

/**
 * The table's statistics, filled in as the worker's pool computes them: the model opened without
 * reading a tensor, its largest rows get numbers first, the rest follow in file order.
 */
function loadStatistics(seq: number, summary: ModelSummary) {
  const priority = [...summary.tensors]
    .sort((a, b) => b.bytes - a.bytes)
    .slice(0, FIRST_ROWS)
    .map((t) => t.name);
  tensorStatistics(priority, (rows) => {
    const now = useStudio.getState().summary;
    if (seq !== appliedOpenSeq || !now || now.name !== summary.name) return;
    // a field of its own: only the table reads it, so a batch re-renders the table, not the studio
    const statistics = { ...useStudio.getState().statistics };
    for (const r of rows) statistics[r.name] = r;
    useStudio.setState({ statistics });
  }).catch(() => {
    // a newer model (or a newer call) stopped it: its own statistics are coming
  });
}

export const useStudio = create<StudioState>((set, get) => ({
  ...(() => {
    const compress = compressSlice(set, get);
    // a shared link's calibration settings fill the card (the link carries no data)
    return {
      ...compress,
      ...calibrationSlice(set, get, compress.linkCalibration),
      ...trainSlice(set, get),
      ...precisionSlice(set, get),
    };
  })(),
  files: [],
  isDemo: false,
  histogramBins: 64,
  histogramLog: false,
  evalText: '',
  evalTextLabel: '',
  evalIsIds: false,
  ctx: 512,
  stride: 256,
  evaluation: { running: false },
  statistics: {},

  async open(files, opts = {}) {
    const seq = ++openSeq;
    const fileName = files.map((f) => f.path).find((p) => p.endsWith('.onnx')) ?? files[0]?.path ?? '';
    set({ loading: { phase: 'reading', done: 0, total: 1, fileName }, error: undefined });
    let finished = false;
    try {
      const { source, ...summary } = await openModel(files, (p) => {
        // progress messages can arrive after the result: never let one resurrect a finished bar
        if (seq === openSeq && !finished) set({ loading: { ...p, fileName } });
      });
      finished = true;
      const config = (await readJson(files, 'config.json', source.config)) as
        Record<string, unknown> | undefined;
      const tokenizerJson = await readJson(files, 'tokenizer.json', source.tokenizer);
      const ctx = contextOf(config, source.positions);
      const byPath = new Map(files.map((f) => [f.path, f]));
      const modelFiles = {
        main: byPath.get(source.main) ?? files[0],
        external: source.external.flatMap((e) => {
          const f = byPath.get(e.path);
          return f ? [{ location: e.location, file: f.file }] : [];
        }),
      };
      // the worker opens files in call order and keeps the last that opened: so does the page, even
      // when a newer open is still running (it may yet fail and leave this model in the worker)
      if (seq < appliedOpenSeq) return;
      appliedOpenSeq = seq;
      // the previous model's evaluations stop silently: the studio cancelled them, not the person
      evalSeq++;
      if (get().evaluation.running) void cancelEvaluation();
      get().abandonCompressedEval();
      set({
        summary,
        files,
        modelFiles,
        config,
        tokenizerJson,
        isDemo: !!opts.isDemo,
        ...(seq === openSeq ? { loading: undefined } : {}),
        selected: undefined,
        histogram: undefined,
        statistics: {},
        ctx,
        stride: Math.max(1, Math.floor(ctx / 2)),
        evaluation: { running: false },
        // the previous model's text (the demo's Shakespeare) means nothing to another model: a model
        // without a tokenizer starts in ids mode, the only input it can score
        ...(opts.evalText !== undefined
          ? { evalText: opts.evalText, evalTextLabel: opts.evalTextLabel ?? '', evalIsIds: false }
          : { evalText: '', evalTextLabel: '', evalIsIds: !tokenizerJson }),
      });
      loadStatistics(seq, summary);
      get().resetCalibration();
      get().resetTraining();
      get().resetPrecision();
      const firstWeight = summary.tensors.find((t) =>
        t.consumers.some((c) => c === 'MatMul' || c === 'Gemm'),
      );
      set({
        preview: undefined,
        overlay: undefined,
        overlayName: firstWeight?.name,
        compressedEval: { running: false },
      });
      if (firstWeight) await get().select(firstWeight.name);
      // the preview needs to know whether the structure pass applies to this model (quick: no model run)
      await get().loadStructure();
      void get().runPreview();
    } catch (e) {
      finished = true;
      if (seq !== openSeq) return;
      // nothing was swapped: the model open before is still the one every panel works on
      const previous = get().summary;
      const still = previous ? ` ${previous.name} is still open.` : '';
      set({ loading: undefined, error: `${(e as Error).message}${still}` });
    }
  },

  async select(name) {
    const seq = ++histSeq;
    set({ selected: name });
    if (get().preview?.reports.some((r) => r.name === name)) void get().showOverlay(name);
    try {
      const histogram = await tensorHistogram(name, get().histogramBins);
      if (seq === histSeq) set({ histogram });
    } catch (e) {
      if (seq === histSeq) set({ histogram: undefined, error: (e as Error).message });
    }
  },

  async setBins(bins) {
    set({ histogramBins: bins });
    const { selected } = get();
    if (selected) await get().select(selected);
  },

  setLog(log) {
    set({ histogramLog: log });
  },

  setEvalText(text, label, isIds = false) {
    set({ evalText: text, evalTextLabel: label, evalIsIds: isIds });
    void get().checkCalibrationOverlap();
  },

  setTokenizer(json) {
    set({ tokenizerJson: json });
    void get().checkCalibrationOverlap();
  },

  setWindow(ctx, stride) {
    set({ ctx, stride });
  },

  async evaluate() {
    const { summary, files, modelFiles, tokenizerJson, evalText, evalIsIds, ctx, stride } = get();
    if (!summary) return;
    const seq = ++evalSeq;
    const missing = evaluationInputProblem(get());
    if (missing) {
      set({ evaluation: { running: false, error: missing } });
      return;
    }
    set({ evaluation: { running: true } });
    try {
      const result = await evaluatePerplexity(
        {
          model: originalModelBytes(summary, files, modelFiles),
          ...(evalIsIds ? { ids: parseIdsText(evalText) } : { text: evalText, tokenizerJson }),
          ctx,
          stride,
        },
        (progress) => {
          if (seq === evalSeq && get().evaluation.running) set({ evaluation: { running: true, progress } });
        },
      );
      if (seq === evalSeq) set({ evaluation: { running: false, result } });
    } catch (e) {
      if (seq !== evalSeq) return;
      const cancelled = (e as { code?: string }).code === 'cancelled';
      set({ evaluation: { running: false, error: cancelled ? 'Cancelled.' : (e as Error).message } });
    }
  },

  cancelEvaluate() {
    if (!get().evaluation.running) return;
    void cancelEvaluation();
  },
}));

// a running distillation whose recipe, settings or data changed trains a model nobody asked for: stop it
useStudio.subscribe((s) => {
  const t = s.training;
  if (!t.running || t.stopping || !t.key) return;
  const now = currentRunKey({ ...s, structure: s.structureError ? null : s.structure });
  if (now !== t.key)
    s.cancelDistill(
      'The recipe changed while training: the run was stopped (its best weights are kept for that recipe).',
    );
});
