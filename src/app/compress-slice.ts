/** The compression half of the studio's store: recipe, live preview, compressed evaluation, export, history. */
import type { StoreApi } from 'zustand';
import type { RecipeStep } from '../core/compress/recipe.ts';
import type { StructureSettings } from '../core/compress/structure.ts';
import type { ImportanceKind } from '../core/structure/importance.ts';
import { originalModelBytes, type EvalState, type StudioState } from './store.ts';
import { evaluationInputProblem } from './eval-input.ts';
import {
  cancelEvaluation,
  evaluatePerplexity,
  exportCompressedModel,
  exportCompressedFiles,
  cancelExportFiles,
  previewOverlay,
  previewRecipe,
  modelStructure,
  structureImportance,
  cancelStructureImportance,
  type Overlay,
  type StructureInfo,
  type PreviewResult,
} from './client.ts';
import { parseIdsText } from '../core/tokenizer.ts';
import {
  DEFAULT_RECIPE,
  describeRecipe,
  loadStored,
  readHashRecipe,
  recipeToHash,
  saveStored,
  recipeJson,
  type HistoryEntry,
  type SharedCalibration,
  type Stored,
} from './share.ts';
import { isCalibratedStep, sharedCalibration } from './calibration-slice.ts';
import type { DistillSettings } from '../core/compress/distill-settings.ts';
import { trainedKey } from './train-slice.ts';
import type { ModelBytes } from '../../workers/eval.worker.ts';

export interface CompressState {
  recipe: RecipeStep[];
  /** Heads, neurons and blocks removed before the recipe's steps (the recipe JSON's "structure"), or none. */
  structure: StructureSettings | null;
  /** The open model's blocks and importance, or the typed error saying why it cannot be mapped. */
  structureInfo?: StructureInfo;
  structureError?: string;
  setStructure(structure: StructureSettings | null): void;
  /** Knowledge distillation in the recipe (after the steps before its first storage format), or none. */
  distill: DistillSettings | null;
  setDistill(distill: DistillSettings | null): void;
  loadStructure(): Promise<void>;
  /** Taylor importance being measured in the worker: sequences done of total. */
  importanceRun?: { kind: ImportanceKind; done: number; total: number };
  importanceError?: string;
  /** Scores heads and neurons by `kind` (measuring Taylor importance first), then prunes by it. */
  chooseImportance(kind: ImportanceKind): Promise<void>;
  cancelImportance(): void;
  /** Why the recipe in the page's link was not used (an unknown method, a bad option). */
  recipeNotice?: string;
  /** The calibration settings the page's link carried, for the calibration card. */
  linkCalibration?: SharedCalibration;
  dismissRecipeNotice(): void;
  preview?: PreviewResult;
  previewing: boolean;
  previewProgress?: { done: number; total: number };
  previewError?: string;
  overlay?: Overlay;
  overlayName?: string;
  compressedEval: EvalState & { bytes?: number };
  history: HistoryEntry[];
  exporting: boolean;
  exportMessage?: string;
  setRecipe(recipe: RecipeStep[]): void;
  runPreview(): Promise<void>;
  showOverlay(name: string): Promise<void>;
  evaluateCompressed(): Promise<void>;
  cancelCompressedEval(): void;
  /** Drops a running compressed evaluation without a message (a new model was opened). */
  abandonCompressedEval(): void;
  exportCompressed(): Promise<void>;
  cancelExport(): void;
  restoreRecipe(entry: HistoryEntry): void;
  clearHistory(): void;
}

type Set = StoreApi<StudioState>['setState'];
type Get = StoreApi<StudioState>['getState'];

let previewSeq = 0;
let exportSeq = 0;
let compressedEvalSeq = 0;

function initialRecipe(stored: Stored): {
  recipe: RecipeStep[];
  structure: StructureSettings | null;
  distill: DistillSettings | null;
  notice?: string;
  calibration?: SharedCalibration;
} {
  const hash = typeof location !== 'undefined' ? location.hash : '';
  // the hash a reload found unchanged since the last save (the write waits for the recipe to rest)
  // yields to the newer stored recipe; any other hash, such as a shared link, wins
  const stale = stored.recipe !== undefined && stored.urlHash === hash;
  const fromHash = stale ? {} : readHashRecipe(hash);
  if (fromHash.steps)
    return {
      recipe: fromHash.steps,
      structure: fromHash.structure ?? null,
      distill: fromHash.distill ?? null,
      calibration: fromHash.calibration,
    };
  const recipe = stored.recipe ?? DEFAULT_RECIPE;
  const structure = stored.recipe ? (stored.structure ?? null) : null;
  const distill = stored.recipe ? (stored.distill ?? null) : null;
  // a reload: the stored recipe wins, and the hash still names how it was calibrated
  const calibration = stale ? readHashRecipe(hash).calibration : undefined;
  // a link that named a recipe the studio cannot use says so, rather than silently loading another
  const notice = fromHash.error
    ? `${fromHash.error} Loaded ${stored.recipe ? 'your last recipe' : 'the default recipe'} (${describeRecipe(recipe)}) instead.`
    : undefined;
  // the address bar shows the recipe in use from the start, ready to share
  const own = recipeToHash(recipe, calibration, structure, distill);
  if (typeof location !== 'undefined' && (stored.recipe || notice) && hash !== own)
    window.history.replaceState(null, '', own);
  return { recipe, structure, distill, notice, calibration };
}

let pendingPersist: (() => void) | null = null;
let persistTimer: ReturnType<typeof setTimeout> | undefined;

/** Writes the pending URL hash and localStorage state now (also when the page goes away: nothing is lost). */
function flushPersist(): void {
  clearTimeout(persistTimer);
  pendingPersist?.();
  pendingPersist = null;
}
if (typeof addEventListener !== 'undefined') addEventListener('pagehide', flushPersist);

/**
 * The recipe goes into the URL hash and, with the history, into localStorage once it rests for
 * 300 ms: a slider drag changes it many times a second, and both writes are synchronous main-thread
 * work (replaceState alone measured ~6 ms a call in Chromium).
 */
function persist(get: Get): void {
  const { recipe, structure, distill, history } = get();
  const calibration = sharedCalibration(get());
  pendingPersist = () => {
    if (typeof location === 'undefined') return saveStored({ recipe, structure, distill, history });
    saveStored({ recipe, structure, distill, history, urlHash: location.hash });
    const hash = recipeToHash(recipe, calibration, structure, distill);
    if (location.hash !== hash) window.history.replaceState(null, '', hash);
  };
  clearTimeout(persistTimer);
  persistTimer = setTimeout(flushPersist, 300);
}

/** Save a Blob: the File System Access API streams it to disk where the browser has it, a download link otherwise. */
async function saveBlob(blob: Blob, name: string): Promise<'saved' | 'downloaded' | 'aborted'> {
  const picker = (window as { showSaveFilePicker?: (o: unknown) => Promise<FileSystemFileHandle> })
    .showSaveFilePicker;
  if (picker && !navigator.webdriver) {
    try {
      const handle = await picker({ suggestedName: name });
      const writable = await handle.createWritable();
      await blob.stream().pipeTo(writable);
      return 'saved';
    } catch (e) {
      if ((e as Error).name === 'AbortError') return 'aborted';
    }
  }
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return 'downloaded';
}

/** protobuf's limit on one message (src/core/onnx/model.ts), not imported: it would pull the ONNX codec into the page. */
const MAX_PROTOBUF_BYTES = 2 ** 31 - 1;

/** The browser's folder picker (File System Access API), where it has one. */
type DirectoryPicker = (o: { mode: 'readwrite' }) => Promise<FileSystemDirectoryHandle>;

/**
 * Streams the compressed model with external data (`NAME.compressed.onnx` + `…onnx_data`) to disk:
 * into a folder the person picks where the browser can (File System Access API), else into the
 * origin-private file system, from where each file downloads straight from disk (a File backed by
 * it, never a copy in memory). Returns the message the Export card shows.
 */
async function exportExternalFiles(
  get: Get,
  modelName: string,
  structure: StructureSettings | null,
  trained: string | undefined,
  cancelled: () => boolean,
): Promise<string> {
  const { recipe } = get();
  const base = modelName.replace(/\.onnx$/i, '');
  const names = { model: `${base}.compressed.onnx`, data: `${base}.compressed.onnx_data` };
  const picker = (window as { showDirectoryPicker?: DirectoryPicker }).showDirectoryPicker;
  let dir: FileSystemDirectoryHandle;
  let download = false;
  if (picker && !navigator.webdriver) {
    try {
      dir = await picker({ mode: 'readwrite' });
    } catch (e) {
      if ((e as Error).name === 'AbortError') return 'Export cancelled.';
      throw e;
    }
  } else {
    dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('exports', { create: true });
    // the previous export's files go first (their downloads have long read them)
    for (const name of [names.model, names.data]) await dir.removeEntry(name).catch(() => {});
    download = true;
  }
  const { modelBytes, dataBytes, totals, warnings } = await exportCompressedFiles(
    recipe,
    structure,
    trained,
    dir,
    names,
  );
  if (cancelled()) return 'Export cancelled.';
  if (download)
    for (const name of [names.data, names.model])
      await saveBlob(await (await dir.getFileHandle(name)).getFile(), name);
  const report = {
    model: modelName,
    recipe: recipeJson(recipe, sharedCalibration(get()), structure, get().distill),
    ...(get().preview?.structure ? { structure: get().preview?.structure } : {}),
    ...(trained ? { distill: distillReport(get()) } : {}),
    inputBytes: totals.inputBytes,
    outputBytes: modelBytes + dataBytes,
    externalData: names.data,
    bitsPerWeight: totals.bitsPerWeight,
    sparsity: totals.sparsity,
    tensors: get().preview?.reports ?? [],
    warnings,
  };
  const reportBlob = new Blob([JSON.stringify(report, null, 2)], { type: 'application/json' });
  if (download) await saveBlob(reportBlob, `${base}.report.json`);
  else {
    const writable = await (
      await dir.getFileHandle(`${base}.report.json`, { create: true })
    ).createWritable();
    await reportBlob.stream().pipeTo(writable);
  }
  return (
    `Exported ${((modelBytes + dataBytes) / 1e6).toFixed(2)} MB (${names.model} + ${names.data}) and its report.` +
    warnings.map((w) => ` Warning: ${w}`).join('')
  );
}

export function compressSlice(set: Set, get: Get): CompressState {
  const stored: Stored = typeof localStorage !== 'undefined' ? loadStored() : {};
  const initial = initialRecipe(stored);
  // a link pasted into this tab changes only the hash: apply its recipe, or say why it cannot be
  // (the studio's own replaceState writes fire no hashchange)
  if (typeof addEventListener !== 'undefined')
    addEventListener('hashchange', () => {
      const { steps, calibration, structure, distill, error } = readHashRecipe(location.hash);
      if (steps) {
        set({ recipeNotice: undefined, structure: structure ?? null, distill: distill ?? null });
        // the link's settings go to the calibration card; the person runs it (the link has no data)
        if (calibration) get().setCalibrationForm(calibration);
        get().setRecipe(steps);
      } else if (error)
        set({ recipeNotice: `${error} Kept the current recipe (${describeRecipe(get().recipe)}).` });
    });
  return {
    recipe: initial.recipe,
    structure: initial.structure,
    distill: initial.distill,
    recipeNotice: initial.notice,
    linkCalibration: initial.calibration,
    dismissRecipeNotice() {
      set({ recipeNotice: undefined });
    },
    previewing: false,
    compressedEval: { running: false },
    history: stored.history ?? [],
    exporting: false,

    setStructure(structure) {
      set({ structure, compressedEval: { running: false } });
      persist(get);
      void get().runPreview();
    },

    setDistill(distill) {
      set({ distill, compressedEval: { running: false } });
      persist(get);
      void get().runPreview();
      void get().checkTrainingOverlap();
    },

    async loadStructure() {
      const name = get().summary?.name;
      set({
        structureInfo: undefined,
        structureError: undefined,
        importanceRun: undefined,
        importanceError: undefined,
      });
      try {
        const info = await modelStructure();
        if (get().summary?.name === name) set({ structureInfo: info });
      } catch (e) {
        if (get().summary?.name === name) set({ structureError: (e as Error).message });
      }
    },

    async chooseImportance(kind) {
      const name = get().summary?.name;
      set({ importanceRun: { kind, done: 0, total: 0 }, importanceError: undefined });
      try {
        const info = await structureImportance(kind, (done, total) => {
          if (get().importanceRun?.kind === kind) set({ importanceRun: { kind, done, total } });
        });
        if (get().summary?.name !== name) return;
        set({ structureInfo: info, importanceRun: undefined });
        const s = get().structure;
        if (s && s.importance !== kind) get().setStructure({ ...s, importance: kind });
      } catch (e) {
        if (get().summary?.name === name)
          set({ importanceRun: undefined, importanceError: (e as Error).message });
      }
    },

    cancelImportance() {
      void cancelStructureImportance();
    },

    setRecipe(recipe) {
      set({ recipe, compressedEval: { running: false } });
      persist(get);
      void get().runPreview();
    },

    async runPreview() {
      const { summary, recipe, selected, histogramBins } = get();
      if (!summary) return;
      // a model the structure pass cannot map previews its steps alone (the section says why)
      const structure = get().structureError ? null : get().structure;
      const seq = ++previewSeq;
      set({ previewing: true, previewProgress: undefined });
      let overlaid = false;
      try {
        const preview = await previewRecipe(
          recipe,
          structure,
          get().overlayName ?? selected,
          histogramBins,
          (overlay) => {
            // the tensor being looked at arrives first, before the totals
            if (seq !== previewSeq) return;
            overlaid = true;
            set({ overlay, overlayName: overlay.name });
          },
          (done, total) => {
            if (seq === previewSeq && get().previewing) set({ previewProgress: { done, total } });
          },
          trainedKey({ ...get(), structure }),
        );
        if (seq !== previewSeq) return;
        set({
          preview,
          previewing: false,
          previewError: undefined,
          // the early answer already drew this histogram: only the stats line needs the final report
          ...(preview.selected && !overlaid
            ? { overlay: preview.selected, overlayName: preview.selected.name }
            : {}),
        });
        if (!get().overlayName && preview.reports[0]) await get().showOverlay(preview.reports[0].name);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (seq !== previewSeq || code === 'cancelled') return;
        const calibrated = get()
          .recipe.filter(isCalibratedStep)
          .map((x) => x.method);
        set({
          previewing: false,
          previewError:
            code === 'needs-calibration' && calibrated.length && trainedKey({ ...get(), structure })
              ? `${[...new Set(calibrated)].join(', ')} after distillation: the page's activation statistics are of the untrained weights, so distil first and calibrate in the CLI (compress → distill → compress), or use a plain storage format (int4, int8, k-means) after distillation.`
              : code === 'needs-calibration' && structure && calibrated.length
                ? `${[...new Set(calibrated)].join(', ')} after structured pruning: the page's activation statistics are of the unpruned weights, so use the CLI for this recipe (or set the Structure sliders to 0).`
                : code === 'needs-calibration' && calibrated.length
                  ? `${[...new Set(calibrated)].join(', ')} need${calibrated.length > 1 ? '' : 's'} activation statistics: run Calibrate (Calibration card) first.`
                  : (e as Error).message,
        });
      }
    },

    async showOverlay(name) {
      set({ overlayName: name });
      try {
        const overlay = await previewOverlay(name, get().histogramBins);
        if (get().overlayName === name && overlay) set({ overlay });
      } catch (e) {
        // a newer preview stopped this weight's kernel (its own overlay follows), or another weight is
        // shown by now: nothing to say; anything else is said, and the other panels keep working
        if ((e as { code?: string }).code === 'cancelled' || get().overlayName !== name) return;
        set({ overlay: undefined, error: (e as Error).message });
      }
    },

    async evaluateCompressed() {
      const { summary, recipe, tokenizerJson, evalText, evalIsIds, ctx, stride, files } = get();
      if (!summary) return;
      const seq = ++compressedEvalSeq;
      // said once, here, instead of the worker failing on the original and then on the compressed model
      const missing = evaluationInputProblem(get());
      if (missing) {
        set({ compressedEval: { running: false, error: missing } });
        return;
      }
      set({ compressedEval: { running: true } });
      try {
        // one evaluation at a time in the worker: let a running one on the original finish first
        while (get().evaluation.running) await new Promise((r) => setTimeout(r, 200));
        if (seq !== compressedEvalSeq) return;
        if (!get().evaluation.result) await get().evaluate();
        if (seq !== compressedEvalSeq) return;
        // the reason is shown once, in the Quality panel, not repeated by a second run that fails alike
        if (get().evaluation.error) {
          set({
            compressedEval: {
              running: false,
              error:
                'The original model could not be evaluated (see Quality), so there is nothing to compare.',
            },
          });
          return;
        }
        const structure = get().structureError ? null : get().structure;
        const { model, bytes, totals } = await compressedModel(get());
        if (seq !== compressedEvalSeq) return;
        const result = await evaluatePerplexity(
          {
            model,
            ...(evalIsIds ? { ids: parseIdsText(evalText) } : { text: evalText, tokenizerJson }),
            ctx,
            stride,
            // measured against the original on the same tokens: KL, same top, PPL ratio
            base: originalModelBytes(summary, files, get().modelFiles),
          },
          (progress) => {
            if (seq === compressedEvalSeq) set({ compressedEval: { running: true, progress } });
          },
        );
        if (seq !== compressedEvalSeq) return;
        const entry: HistoryEntry = {
          id: `${Date.now().toString(36)}-${seq}`,
          model: summary.name,
          recipe,
          ...(structure ? { structure } : {}),
          ...(get().distill ? { distill: get().distill } : {}),
          label: describeRecipe(recipe, structure, get().distill),
          perplexity: result.perplexity,
          bytes: bytes.byteLength,
          bitsPerWeight: totals.bitsPerWeight,
          at: new Date().toISOString(),
          ...(result.versus
            ? {
                kl: result.versus.kl.mean.value,
                sameTop: result.versus.sameTop.value,
                pplRatio: result.versus.ratio.value,
                protocol: result.versus.protocol,
              }
            : {}),
        };
        set({
          compressedEval: { running: false, result, bytes: bytes.byteLength },
          history: [
            ...get().history.filter((h) => h.label !== entry.label || h.model !== entry.model),
            entry,
          ],
        });
        persist(get);
      } catch (e) {
        if (seq !== compressedEvalSeq) return;
        const cancelled = (e as { code?: string }).code === 'cancelled';
        set({ compressedEval: { running: false, error: cancelled ? 'Cancelled.' : (e as Error).message } });
      }
    },

    cancelCompressedEval() {
      if (get().compressedEval.running) void cancelEvaluation();
    },

    abandonCompressedEval() {
      compressedEvalSeq++;
      if (get().compressedEval.running) {
        void cancelEvaluation();
        set({ compressedEval: { running: false } });
      }
    },

    async exportCompressed() {
      const { summary, recipe } = get();
      if (!summary) return;
      const seq = ++exportSeq;
      set({ exporting: true, exportMessage: 'Building the compressed model…' });
      try {
        const structure = get().structureError ? null : get().structure;
        const trained = trainedFor(get(), structure);
        // a model with external data (or one that would pass protobuf's 2 GiB) streams to disk
        const external =
          (get().modelFiles?.external.length ?? 0) > 0 ||
          (get().preview?.totals.estimatedOutputBytes ?? 0) > MAX_PROTOBUF_BYTES;
        if (external) {
          const message = await exportExternalFiles(
            get,
            summary.name,
            structure,
            trained,
            () => seq !== exportSeq,
          );
          if (seq === exportSeq) set({ exporting: false, exportMessage: message });
          return;
        }
        const { bytes, totals, warnings } = await exportCompressedModel(recipe, structure, trained);
        if (seq !== exportSeq) return; // cancelled: nothing is saved
        const base = summary.name.replace(/\.onnx$/i, '');
        const how = await saveBlob(
          new Blob([bytes as BlobPart], { type: 'application/octet-stream' }),
          `${base}.compressed.onnx`,
        );
        const report = {
          model: summary.name,
          recipe: recipeJson(recipe, sharedCalibration(get()), structure, get().distill),
          ...(get().preview?.structure ? { structure: get().preview?.structure } : {}),
          ...(trained ? { distill: distillReport(get()) } : {}),
          inputBytes: totals.inputBytes,
          outputBytes: bytes.byteLength,
          bitsPerWeight: totals.bitsPerWeight,
          sparsity: totals.sparsity,
          perplexity: {
            original: get().evaluation.result?.perplexity ?? null,
            compressed: get().compressedEval.result?.perplexity ?? null,
            protocol: get().evaluation.result?.protocol ?? null,
            // the compressed model against the original on the same tokens, with the full protocol
            versusOriginal: get().compressedEval.result?.versus ?? null,
          },
          tensors: get().preview?.reports ?? [],
          warnings,
        };
        if (how !== 'aborted')
          await saveBlob(
            new Blob([JSON.stringify(report, null, 2)], { type: 'application/json' }),
            `${base}.report.json`,
          );
        set({
          exporting: false,
          exportMessage:
            how === 'aborted'
              ? 'Export cancelled.'
              : `Exported ${(bytes.byteLength / 1e6).toFixed(2)} MB and its report.` +
                warnings.map((w) => ` Warning: ${w}`).join(''),
        });
      } catch (e) {
        if (seq === exportSeq)
          set({ exporting: false, exportMessage: `Export failed: ${(e as Error).message}` });
      }
    },

    cancelExport() {
      exportSeq++;
      // the worker stops too (not only the page ignoring its answer): its lent kernel workers end
      cancelExportFiles();
      set({ exporting: false, exportMessage: 'Export cancelled.' });
    },

    restoreRecipe(entry) {
      set({ structure: entry.structure ?? null, distill: entry.distill ?? null });
      get().setRecipe(entry.recipe);
    },

    clearHistory() {
      set({ history: [] });
      persist(get);
    },
  };
}

/**
 * The trained weights an export or evaluation of the current recipe uses; a distilling recipe that has
 * not been trained (or whose student, settings or data changed since) is refused with what to do.
 */
function trainedFor(s: StudioState, structure: StructureSettings | null): string | undefined {
  if (!s.distill) return undefined;
  const key = trainedKey({ ...s, structure });
  if (!key)
    throw new Error(
      s.training.running
        ? 'Distillation is still training: wait for it (or Cancel to keep the best weights so far).'
        : 'This recipe distils, and its student, settings or data changed since the last run (or it never ran): press Train in the Distil card, or remove distillation.',
    );
  return key;
}

/**
 * The current recipe's compressed model as the workers take it (built in the model worker), keyed so
 * a worker reuses its session while the recipe, structure, calibration and training stay the same.
 */
export async function compressedModel(s: StudioState) {
  const { summary, recipe } = s;
  if (!summary) throw new Error('Open a model first.');
  const structure = s.structureError ? null : s.structure;
  const trained = trainedFor(s, structure);
  const { bytes, totals, warnings } = await exportCompressedModel(recipe, structure, trained);
  const model: ModelBytes = {
    // the same recipe on other statistics is another model; so is the same recipe on another file
    // of the same name (every Hub folder's onnx/model.onnx): the original's key names the file
    key: `compressed:${JSON.stringify(recipe)}:${JSON.stringify(structure)}:${originalModelBytes(summary, s.files, s.modelFiles).key}:${s.calibration.done?.key ?? ''}:${trained ?? ''}`,
    model: bytes,
    inputs: summary.inputs,
  };
  return { model, bytes, totals, warnings, trained, structure };
}

/** The report's account of the training: the settings, the held-out perplexity and the loss curve (never the weights). */
function distillReport(s: StudioState) {
  const t = s.training;
  return {
    settings: s.distill,
    data: s.distill?.source === 'generate' ? 'generated by the teacher' : (t.file?.name ?? null),
    steps: t.done?.steps ?? null,
    cancelled: t.done?.cancelled ?? false,
    best: t.done ? { step: t.done.bestStep, perplexity: t.done.bestPerplexity } : null,
    heldOut: t.evals,
    trainableWeights: t.done?.trainable ?? null,
    tokensPerSecond: t.done?.tokensPerSecond ?? null,
    loss: t.history,
  };
}
