/**
 * The distillation half of the studio's store: the Distil card's run in the training worker (progress,
 * live loss, held-out perplexity, cancel, resume). The recipe's "distill" settings live beside the
 * steps (compress-slice.ts); the trained weights go to the model worker, which previews and exports
 * the rest of the recipe on them. A run is identified by its key: the student (structure + the steps
 * before the first storage format), the settings and the data; a recipe whose key differs is not the
 * one trained (its preview shows the untrained model until Train runs again).
 */
import type { StoreApi } from 'zustand';
import type { RecipeStep } from '../core/compress/recipe.ts';
import type { StructureSettings } from '../core/compress/structure.ts';
import {
  DISTILL_DEFAULTS,
  distillSplit,
  qatStep,
  resolveDistillSettings,
  type DistillSettings,
} from '../core/compress/distill-settings.ts';
import type { StudioState } from './store.ts';
import { DEMO_DIR } from './demo.ts';
import { bosOf, isCalibratedStep } from './calibration-slice.ts';
import {
  calibrationOverlap,
  cancelTraining,
  distillStudent,
  storeTrainedWeights,
  trainStudentInWorker,
  type HeldOutPoint,
  type TrainDone,
  type TrainProgress,
} from './client.ts';

export interface LossPoint {
  step: number;
  loss: number;
  kl: number;
  ce: number;
  lr: number;
}

/** The worker's summary of a finished run (its weights go to the store) and the recipe key it was for. */
export type TrainingDone = Omit<TrainDone, 'weights' | 'backend' | 'gpuProducts'> & {
  key: string;
  /** Where the products ran (the worker's label). */
  backend?: string;
};

export interface TrainingState {
  /** The person's training file ('text' or 'ids'); the demo's training split by default. */
  file?: { name: string; text: string };
  running: boolean;
  /** What the running job is doing before its first step (generating data, loading the teacher). */
  phase?: string;
  startedAt?: number;
  /** Cancel was asked for: the run stops after its current step. */
  stopping?: boolean;
  /** The key of the run the chart shows. */
  key?: string;
  history: LossPoint[];
  evals: HeldOutPoint[];
  tokensPerSecond?: number;
  /** Where the running job's products run ("WASM SIMD", "WebGPU (…)"). */
  backend?: string;
  /** The last run that left weights in the model worker. */
  done?: TrainingDone;
  error?: string;
  /** Fraction of the training data found in the evaluation text; null when they cannot be compared. */
  overlap?: number | null;
}

export interface TrainSlice {
  training: TrainingState;
  setTrainingFile(name: string, text: string): void;
  /** Train (or, with `resume`, continue the cancelled run of the same key). */
  runDistill(resume?: boolean): Promise<void>;
  cancelDistill(reason?: string): void;
  /** A new model: its runs are gone. */
  resetTraining(): void;
  checkTrainingOverlap(): Promise<void>;
}

type Set = StoreApi<StudioState>['setState'];
type Get = StoreApi<StudioState>['getState'];

let trainSeq = 0;
let overlapSeq = 0;

/** The demo's training split: the default training text when the demo model is open. */
export const DEMO_TRAIN_NAME = 'train.txt (demo training split)';

/** The page's settings for a model of context `ctx`: the defaults, windows no longer than the context. */
export function defaultDistill(ctx: number, hasTokenizer: boolean): DistillSettings {
  return {
    ...DISTILL_DEFAULTS,
    seq: Math.min(DISTILL_DEFAULTS.seq, ctx),
    source: hasTokenizer ? 'text' : 'generate',
  };
}

/** What the student is: the structure pass and the steps before the first storage format (with their statistics). */
export function studentKey(s: {
  recipe: RecipeStep[];
  structure: StructureSettings | null;
  calibrationKey?: string;
}): string {
  const prefix = s.recipe.slice(0, distillSplit(s.recipe));
  return JSON.stringify({
    structure: s.structure,
    steps: prefix,
    ...(prefix.some(isCalibratedStep) ? { calibration: s.calibrationKey ?? null } : {}),
  });
}

/** The data a run reads, as far as the page can tell files apart. */
function dataKey(d: DistillSettings, file?: { name: string; text: string }): string {
  return d.source === 'generate'
    ? `generate:${d.samples}:${d.seed}`
    : `${d.source}:${file?.name}:${file?.text.length}`;
}

type KeyInput = Pick<StudioState, 'recipe' | 'distill' | 'training' | 'calibration'> & {
  structure: StructureSettings | null;
};

/** The key a run of the current recipe, settings and data has (undefined when the recipe does not distil). */
export function currentRunKey(s: KeyInput): string | undefined {
  if (!s.distill) return undefined;
  return JSON.stringify([
    studentKey({ ...s, calibrationKey: s.calibration.done?.key }),
    // canonical: a link's settings and the card's compare equal whatever order their fields came in
    resolveDistillSettings(s.distill),
    dataKey(s.distill, s.training.file),
    // QAT trains against one step's options: another block size is another run
    ...(s.distill.qat ? [qatStep(s.recipe) ?? null] : []),
  ]);
}

/** The trained weights the preview and export use: the last run's, when it is this recipe's. */
export function trainedKey(s: KeyInput): string | undefined {
  const key = currentRunKey(s);
  return key !== undefined && s.training.done?.key === key ? key : undefined;
}

/** Why Train cannot start now, or undefined when it can. */
export function trainingProblem(s: {
  summary?: unknown;
  tokenizerJson?: unknown;
  isDemo: boolean;
  ctx: number;
  distill: DistillSettings | null;
  training: TrainingState;
  recipe?: RecipeStep[];
}): string | undefined {
  const d = s.distill;
  if (!s.summary) return 'Open a model first.';
  if (!d) return 'Add distillation to the recipe first.';
  if (s.training.running) return 'Training…';
  if (d.qat && !qatStep(s.recipe ?? []))
    return 'Quantization-aware training needs an int4 or int8 step right after distillation: add one, or turn QAT off.';
  if (d.source === 'text' && !s.tokenizerJson)
    return 'Text needs the model’s tokenizer.json (load it in Quality), or train on generated sequences.';
  if (d.source !== 'generate' && !s.training.file && !(s.isDemo && d.source === 'text'))
    return d.source === 'text' ? 'Choose a text file first.' : 'Choose a file of token ids first.';
  if (d.seq > s.ctx) return `The sequence length is longer than the model's context (${s.ctx}).`;
  return undefined;
}

async function demoTrainText(): Promise<string> {
  const res = await fetch(new URL(`${DEMO_DIR}train.txt`, document.baseURI));
  if (!res.ok) throw new Error(`The demo's training split could not be loaded (${res.status}).`);
  return res.text();
}

const base = (p: string) => p.split('/').pop() ?? p;

export function trainSlice(set: Set, get: Get): TrainSlice {
  const patch = (t: Partial<TrainingState>) => set({ training: { ...get().training, ...t } });
  return {
    training: { running: false, history: [], evals: [] },

    setTrainingFile(name, text) {
      patch({ file: { name, text } });
      void get().checkTrainingOverlap();
    },

    resetTraining() {
      trainSeq++;
      if (get().training.running) void cancelTraining();
      const { ctx, tokenizerJson } = get();
      const d = get().distill;
      // a length the person (or a link) chose stays within the new model's context
      if (d && d.seq > ctx) set({ distill: { ...d, seq: ctx } });
      else if (d && d.source === 'text' && !tokenizerJson) set({ distill: { ...d, source: 'generate' } });
      set({ training: { running: false, history: [], evals: [] } });
      void get().checkTrainingOverlap();
    },

    async runDistill(resume = false) {
      const s = get();
      const problem = trainingProblem(s);
      if (problem || !s.distill || !s.summary) return;
      const seq = ++trainSeq;
      let settings = s.distill;
      const structure = s.structureError ? null : s.structure;
      const previous = s.training;
      patch({
        running: true,
        phase: 'Preparing the student…',
        startedAt: Date.now(),
        stopping: false,
        // no key until the data is known: the stale-run check waits for it
        key: undefined,
        error: undefined,
        ...(resume ? {} : { history: [], evals: [], tokensPerSecond: undefined }),
      });
      try {
        let file = get().training.file;
        if (!file && settings.source === 'text' && get().isDemo) {
          file = { name: DEMO_TRAIN_NAME, text: await demoTrainText() };
          patch({ file });
          void get().checkTrainingOverlap();
        }
        // the recipe as it is now (it may have moved while the demo's text loaded): key and student agree
        const now = get();
        if (!now.distill) throw new Error('Distillation was removed from the recipe.');
        settings = now.distill;
        const key = currentRunKey({ ...now, structure })!;
        if (resume && previous.key !== key)
          throw new Error('The recipe changed since that run: Train again.');
        patch({ key });
        const sKey = studentKey({ recipe: now.recipe, structure, calibrationKey: now.calibration.done?.key });
        const student = await distillStudent(now.recipe, structure, sKey);
        if (seq !== trainSeq) return;
        const { files, summary } = get();
        const main =
          files.find((f) => f.path.endsWith('.onnx') && base(f.path) === summary!.name) ?? files[0];
        const externalData = files
          .filter((f) => f !== main && !/\.(onnx|json|txt|md)$/i.test(f.path))
          .map((f) => ({ path: base(f.path), data: f.file }));
        const onProgress = (p: TrainProgress) => {
          if (seq !== trainSeq) return;
          const t = get().training;
          if (p.kind === 'phase') patch({ phase: p.label });
          else if (p.kind === 'backend') patch({ backend: p.label });
          else if (p.kind === 'step')
            patch({
              phase: undefined,
              history: [
                ...t.history,
                { step: p.step.step, loss: p.step.loss, kl: p.step.kl, ce: p.step.ce, lr: p.step.lr },
              ],
              tokensPerSecond: p.step.tokensPerSecond,
            });
          else patch({ evals: [...t.evals, p.point] });
        };
        const result = await trainStudentInWorker(
          {
            key,
            student,
            teacher: {
              key: `${main.path}:${main.file.size}:${main.file.lastModified}`,
              model: main.file,
              externalData,
            },
            inputs: summary!.inputs,
            settings,
            data: {
              ...(settings.source === 'text' ? { text: file?.text, tokenizerJson: get().tokenizerJson } : {}),
              ...(settings.source === 'ids' ? { idsText: file?.text } : {}),
              bos: bosOf(get().config),
              name: file?.name,
            },
            resume,
            ...(settings.qat ? { qat: qatStep(now.recipe) } : {}),
          },
          onProgress,
        );
        if (seq !== trainSeq) return;
        patch({ phase: 'Applying the trained weights…' });
        await storeTrainedWeights(key, sKey, result.weights);
        if (seq !== trainSeq) return;
        patch({
          running: false,
          stopping: false,
          phase: undefined,
          startedAt: undefined,
          done: {
            key,
            steps: result.steps,
            cancelled: result.cancelled,
            bestStep: result.bestStep,
            bestPerplexity: result.bestPerplexity,
            trainable: result.trainable,
            tokensPerSecond: result.tokensPerSecond,
            backend: result.backend,
          },
        });
        // the preview and the link now read the trained weights
        get().setRecipe(get().recipe);
      } catch (e) {
        if (seq !== trainSeq) return;
        const cancelled = (e as { code?: string }).code === 'cancelled';
        patch({
          running: false,
          stopping: false,
          phase: undefined,
          startedAt: undefined,
          error: cancelled ? 'Cancelled before the first step: nothing was trained.' : (e as Error).message,
        });
      }
    },

    cancelDistill(reason) {
      if (!get().training.running || get().training.stopping) return;
      void cancelTraining();
      patch({ stopping: true, ...(reason ? { error: reason } : {}) });
    },

    async checkTrainingOverlap() {
      const seq = ++overlapSeq;
      const { training: t, distill, evalText, evalIsIds, tokenizerJson } = get();
      if (!distill || distill.source === 'generate' || !t.file || !evalText.trim()) {
        if (t.overlap !== undefined) patch({ overlap: undefined });
        return;
      }
      try {
        const overlap = await calibrationOverlap(
          { text: t.file.text, isIds: distill.source === 'ids' },
          { text: evalText, isIds: evalIsIds },
          tokenizerJson,
        );
        if (seq === overlapSeq) patch({ overlap });
      } catch {
        if (seq === overlapSeq) patch({ overlap: undefined });
      }
    },
  };
}
