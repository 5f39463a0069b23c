/**
 * The calibration half of the studio's store: the card's settings, the run in the model worker
 * (progress, cancel), and the statistics' summary the activation charts draw. The statistics
 * themselves stay in the worker, which previews and exports with them.
 */
import type { StoreApi } from 'zustand';
import type { CalibrationSettings, RecipeStep } from '../core/compress/recipe.ts';
import { CALIBRATION_DEFAULTS } from '../core/compress/recipe.ts';
import { DEFAULT_CALIBRATION_LENGTH } from '../core/compress/calibration.ts';
import { getMethod } from '../methods/registry.ts';
import type { StudioState } from './store.ts';
import type { SharedCalibration } from './share.ts';
import {
  calibrateModel,
  calibrationFootprint,
  calibrationOverlap,
  cancelCalibration,
  type CalibrationDone,
  type CalibrationProgress,
} from './client.ts';

export type CalibrationSource = CalibrationSettings['source'];

/** The card's settings: what a run will use (the length and BOS resolved for the open model). */
export interface CalibrationForm {
  source: CalibrationSource;
  samples: number;
  length: number;
  seed: number;
  bos: number;
}

export interface CalibrationState {
  form: CalibrationForm;
  /** The person's calibration file ('ids' or 'text'), kept on the page until a run reads it. */
  file?: { name: string; text: string };
  running: boolean;
  progress?: CalibrationProgress;
  /** Date.now() when the running calibration started, for the elapsed time. */
  startedAt?: number;
  /** The statistics the worker previews and exports with, and how they were made. */
  done?: CalibrationDone & { form: CalibrationForm; fileName?: string; key: string };
  error?: string;
  /** Fraction of the calibration data found in the evaluation text; null when they cannot be compared. */
  overlap?: number | null;
  /** What a run captures on the open model: activations, and the bytes their statistics take. */
  footprint?: { activations: number; bytes: number };
}

export interface CalibrationSlice {
  calibration: CalibrationState;
  setCalibrationForm(form: Partial<CalibrationForm>): void;
  setCalibrationFile(name: string, text: string): void;
  runCalibration(): Promise<void>;
  cancelCalibration(): void;
  /** A new model: its statistics are gone, its context and BOS decide the defaults. */
  resetCalibration(): void;
  checkCalibrationOverlap(): Promise<void>;
}

type Set = StoreApi<StudioState>['setState'];
type Get = StoreApi<StudioState>['getState'];

let calibrationSeq = 0;
let overlapSeq = 0;

export const isCalibratedStep = (s: RecipeStep): boolean => {
  try {
    return !!getMethod(s.method).needs?.length;
  } catch {
    return false;
  }
};

/** The BOS token generated sequences start with: config.json's bos_token_id, else 1 (llama2.c). */
export function bosOf(config: Record<string, unknown> | undefined): number {
  const b = config?.bos_token_id;
  return Number.isInteger(b) && (b as number) >= 0 ? (b as number) : 1;
}

/** Why Run cannot start now, or undefined when it can: shown beside the disabled button. */
export function calibrationProblem(s: {
  summary?: unknown;
  tokenizerJson?: unknown;
  calibration: CalibrationState;
}): string | undefined {
  const c = s.calibration;
  if (!s.summary) return 'Open a model first.';
  if (c.running) return 'Calibrating…';
  if (c.form.source === 'text' && !s.tokenizerJson)
    return 'Text needs the model’s tokenizer.json (load it in Quality), or calibrate on generated sequences.';
  if (c.form.source !== 'generate' && !c.file)
    return c.form.source === 'text' ? 'Choose a text file first.' : 'Choose a file of token ids first.';
  if (!(c.form.samples >= 1) || !(c.form.length >= 2)) return 'Samples ≥ 1 and length ≥ 2.';
  return undefined;
}

/** The settings a recipe file or a share link carries: how the statistics in use were made (never the data). */
export function sharedCalibration(s: {
  recipe: RecipeStep[];
  calibration: CalibrationState;
  /** Activation or Taylor importance is measured on the calibration data too. */
  structure?: { importance: string } | null;
}): SharedCalibration | undefined {
  const measured = !!s.structure && s.structure.importance !== 'magnitude';
  if (!s.recipe.some(isCalibratedStep) && !measured) return undefined;
  const f = s.calibration.done?.form ?? s.calibration.form;
  // the page captures once on the original model: a CLI run of this recipe does the same
  return {
    source: f.source,
    samples: f.samples,
    length: f.length,
    seed: f.seed,
    bos: f.bos,
    sequential: false,
  };
}

const formKey = (f: CalibrationForm, file?: { name: string; text: string }) =>
  JSON.stringify(
    f.source === 'generate'
      ? [f.source, f.samples, f.length, f.seed, f.bos]
      : [f.source, f.samples, f.length, file?.name, file?.text.length],
  );

export function calibrationSlice(set: Set, get: Get, fromLink?: SharedCalibration): CalibrationSlice {
  const patch = (c: Partial<CalibrationState>) => set({ calibration: { ...get().calibration, ...c } });
  return {
    calibration: {
      form: {
        source: fromLink?.source ?? 'generate',
        samples: fromLink?.samples ?? CALIBRATION_DEFAULTS.samples,
        length: fromLink?.length ?? DEFAULT_CALIBRATION_LENGTH,
        seed: fromLink?.seed ?? CALIBRATION_DEFAULTS.seed,
        bos: fromLink?.bos ?? 1,
      },
      running: false,
    },

    setCalibrationForm(form) {
      patch({ form: { ...get().calibration.form, ...form } });
      void get().checkCalibrationOverlap();
    },

    setCalibrationFile(name, text) {
      patch({ file: { name, text } });
      void get().checkCalibrationOverlap();
    },

    resetCalibration() {
      calibrationSeq++;
      const { config, ctx } = get();
      const c = get().calibration;
      set({
        calibration: {
          form: {
            ...c.form,
            // a length the person (or a link) chose stays; the default follows the model's context
            length: Math.min(c.form.length, ctx),
            bos: bosOf(config),
          },
          file: c.file,
          running: false,
        },
      });
      void get().checkCalibrationOverlap();
      const seq = calibrationSeq;
      calibrationFootprint().then(
        (footprint) => seq === calibrationSeq && patch({ footprint }),
        () => undefined, // a model without MatMul weights: Run says so
      );
    },

    async runCalibration() {
      const s = get();
      if (calibrationProblem(s)) return;
      const { form, file } = s.calibration;
      const seq = ++calibrationSeq;
      patch({ running: true, progress: undefined, startedAt: Date.now(), error: undefined });
      try {
        const done = await calibrateModel(
          {
            settings: { ...form, sequential: false },
            ...(form.source === 'ids' ? { idsText: file?.text } : {}),
            ...(form.source === 'text' ? { text: file?.text, tokenizerJson: s.tokenizerJson } : {}),
            dataName: file?.name,
          },
          (progress) => {
            if (seq === calibrationSeq && get().calibration.running) patch({ progress });
          },
        );
        if (seq !== calibrationSeq) return;
        patch({
          running: false,
          progress: undefined,
          done: {
            ...done,
            form,
            fileName: form.source === 'generate' ? undefined : file?.name,
            key: `${formKey(form, file)}#${done.runs}`,
          },
        });
        // steps that waited for statistics (a shared link's GPTQ) preview now, and the link names
        // the settings these statistics came from
        get().setRecipe(get().recipe);
      } catch (e) {
        if (seq !== calibrationSeq) return;
        const cancelled = (e as { code?: string }).code === 'cancelled';
        const kept = get().calibration.done ? ' The previous statistics are still in use.' : '';
        patch({
          running: false,
          progress: undefined,
          error: `${cancelled ? 'Cancelled.' : (e as Error).message}${kept}`,
        });
      }
    },

    cancelCalibration() {
      if (get().calibration.running) void cancelCalibration();
    },

    async checkCalibrationOverlap() {
      const seq = ++overlapSeq;
      const { calibration: c, evalText, evalIsIds, tokenizerJson } = get();
      if (c.form.source === 'generate' || !c.file || !evalText.trim()) {
        if (c.overlap !== undefined) patch({ overlap: undefined });
        return;
      }
      try {
        const overlap = await calibrationOverlap(
          { text: c.file.text, isIds: c.form.source === 'ids' },
          { text: evalText, isIds: evalIsIds },
          tokenizerJson,
        );
        if (seq === overlapSeq) patch({ overlap });
      } catch {
        // unreadable ids or a tokenizer that fails: the run itself will say what is wrong
        if (seq === overlapSeq) patch({ overlap: undefined });
      }
    },
  };
}
