/**
 * Mixed precision and backend agreement in the store: per-tensor sensitivity (in the precision
 * worker), the plan under a budget written as an ordinary recipe of per-tensor steps (the same core
 * function as `compress --auto-bits`), edits of one tensor's storage, and the wasm-vs-WebGPU check.
 */
import type { StoreApi } from 'zustand';
import {
  DEFAULT_CANDIDATES,
  assignmentsOfRecipe,
  parseCandidates,
  planMixedPrecision,
  recipeForAssignments,
  type AutoBudget,
} from '../core/compress/auto.ts';
import type { RecipeStep } from '../core/compress/recipe.ts';
import type { WeightCandidate } from '../core/compress/select.ts';
import { parseIdsText } from '../core/tokenizer.ts';
import { evaluationInputProblem } from './eval-input.ts';
import { originalModelBytes, type StudioState } from './store.ts';
import {
  cancelPrecision,
  compareBackendsInWorker,
  exportCompressedModel,
  measureTensorSensitivity,
  weightCandidates,
  type AgreementDone,
  type SensitivityDone,
  type SensitivityProgress,
} from './client.ts';
import { trainedKey } from './train-slice.ts';

export type BudgetKind = 'bits' | 'mb' | 'kl';

export interface PlanSummary {
  bitsPerWeight: number;
  bytes: number;
  params: number;
  predictedKl: number;
  warning?: string;
  /** The budget in words: '≤ 4.5 bits/weight', '≤ 2.0 MB', 'KL ≤ 0.01'. */
  budget: string;
}

export interface PrecisionSlice {
  /** The open model's weights a per-tensor plan can assign (every weight recipes can select). */
  precisionWeights?: WeightCandidate[];
  loadPrecisionWeights(): Promise<void>;
  /** The candidate whose per-tensor KL the chart shows. */
  sensitivityStep: string;
  autoCandidates: string;
  /** Tokens of the evaluation text the sensitivity and the backend check run on. */
  autoTokens: number;
  autoBudget: { kind: BudgetKind; value: number };
  setPrecisionSettings(
    p: Partial<Pick<PrecisionSlice, 'sensitivityStep' | 'autoCandidates' | 'autoTokens' | 'autoBudget'>>,
  ): void;
  sensitivityRun: {
    running: boolean;
    purpose?: 'chart' | 'plan';
    progress?: SensitivityProgress;
    error?: string;
  };
  /** The newest measured table (all candidates measured so far for this model and text). */
  sensitivity?: SensitivityDone;
  planSummary?: PlanSummary;
  runSensitivity(): Promise<void>;
  planPrecision(): Promise<void>;
  cancelSensitivity(): void;
  /** One tensor's storage changed by hand: the recipe is rewritten as per-tensor steps. */
  setTensorStep(name: string, step: Omit<RecipeStep, 'select'> | null): void;
  agreementRun: {
    running: boolean;
    progress?: { done: number; total: number };
    result?: AgreementDone;
    error?: string;
  };
  checkBackends(which: 'compressed' | 'original'): Promise<void>;
  cancelAgreement(): void;
  resetPrecision(): void;
}

type Set = StoreApi<StudioState>['setState'];
type Get = StoreApi<StudioState>['getState'];

let sensitivitySeq = 0;
let agreementSeq = 0;

/** The slice's text as the worker takes it, or the reason there is none. */
function sliceOf(s: StudioState) {
  const problem = evaluationInputProblem(s);
  if (problem) throw new Error(problem);
  return {
    ...(s.evalIsIds
      ? { ids: parseIdsText(s.evalText) }
      : { text: s.evalText, tokenizerJson: s.tokenizerJson }),
    tokens: s.autoTokens,
    ctx: Math.max(2, Math.min(s.ctx, s.autoTokens)),
  };
}

/** Merges a newer table into the kept one: entries of the same tensor and candidate are replaced. */
function mergeTables(old: SensitivityDone | undefined, next: SensitivityDone): SensitivityDone {
  if (!old || old.protocol.textHash !== next.protocol.textHash || old.protocol.ctx !== next.protocol.ctx)
    return next;
  const table = next.table.map((t) => {
    const before = old.table.find((o) => o.name === t.name);
    const fresh = new Set(t.entries.map((e) => e.candidate));
    return {
      ...t,
      entries: [...(before?.entries.filter((e) => !fresh.has(e.candidate)) ?? []), ...t.entries],
    };
  });
  return { ...next, table };
}

export function precisionSlice(set: Set, get: Get): PrecisionSlice {
  const measure = async (purpose: 'chart' | 'plan', candidates: string) => {
    const s = get();
    if (!s.summary) throw new Error('Open a model first.');
    const seq = ++sensitivitySeq;
    set({ sensitivityRun: { running: true, purpose } });
    const original = originalModelBytes(s.summary, s.files, s.modelFiles);
    const done = await measureTensorSensitivity(
      { model: { ...original, name: s.summary.name }, candidates, ...sliceOf(s) },
      (progress) => {
        if (seq === sensitivitySeq && get().sensitivityRun.running)
          set({ sensitivityRun: { running: true, purpose, progress } });
      },
    );
    if (seq !== sensitivitySeq) return undefined;
    const merged = mergeTables(get().sensitivity, done);
    set({ sensitivity: merged, sensitivityRun: { running: false } });
    return merged;
  };
  const failed = (e: unknown) => {
    const cancelled = (e as { code?: string }).code === 'cancelled';
    set({ sensitivityRun: { running: false, error: cancelled ? 'Cancelled.' : (e as Error).message } });
  };

  return {
    sensitivityStep: 'int4b32',
    autoCandidates: DEFAULT_CANDIDATES,
    autoTokens: 256,
    autoBudget: { kind: 'bits', value: 4.5 },
    sensitivityRun: { running: false },
    agreementRun: { running: false },

    async loadPrecisionWeights() {
      const name = get().summary?.name;
      try {
        const weights = await weightCandidates();
        if (get().summary?.name === name) set({ precisionWeights: weights });
      } catch {
        // no model in the worker yet: the table asks again on the next model
      }
    },

    setPrecisionSettings(p) {
      set(p);
    },

    async runSensitivity() {
      try {
        parseCandidates(get().sensitivityStep);
        await measure('chart', get().sensitivityStep);
      } catch (e) {
        failed(e);
      }
    },

    async planPrecision() {
      try {
        const candidates = parseCandidates(get().autoCandidates);
        const done = await measure('plan', get().autoCandidates);
        if (!done) return;
        const table = done.table.map((t) => ({
          ...t,
          entries: t.entries.filter((e) => candidates.some((c) => c.id === e.candidate)),
        }));
        const { kind, value } = get().autoBudget;
        let budget: AutoBudget;
        let words: string;
        if (kind === 'kl') [budget, words] = [{ kl: value }, `KL ≤ ${value}`];
        else if (kind === 'bits') [budget, words] = [{ bitsPerWeight: value }, `≤ ${value} bits/weight`];
        else {
          // the file's bytes outside the planned tensors stay as they are: the rest of the budget is theirs
          const summary = get().summary!;
          const planned = table.reduce((s, t) => s + t.params * 4, 0);
          const params = table.reduce((s, t) => s + t.params, 0);
          const left = value * 1e6 - (summary.totalSize - planned);
          if (left <= 0)
            throw new Error(
              `${value} MB is less than the model's bytes outside the planned weights (${((summary.totalSize - planned) / 1e6).toFixed(2)} MB).`,
            );
          [budget, words] = [{ bitsPerWeight: (left * 8) / params }, `≤ ${value} MB`];
        }
        const plan = planMixedPrecision(table, candidates, budget);
        set({
          planSummary: {
            bitsPerWeight: plan.bitsPerWeight,
            bytes: plan.bytes,
            params: plan.params,
            predictedKl: plan.predictedKl,
            warning: plan.warning,
            budget: words,
          },
          // the plan was measured on the original model: it is the whole recipe
          structure: null,
          distill: null,
        });
        get().setRecipe(plan.recipe.steps);
      } catch (e) {
        failed(e);
      }
    },

    cancelSensitivity() {
      if (get().sensitivityRun.running) void cancelPrecision();
    },

    setTensorStep(name, step) {
      const weights = get().precisionWeights;
      if (!weights) return;
      const assignments = assignmentsOfRecipe(get().recipe, weights);
      if (!assignments) return;
      const next = assignments.map((a) => (a.name === name ? { ...a, step } : a));
      set({ planSummary: undefined });
      get().setRecipe(recipeForAssignments(next).steps);
    },

    async checkBackends(which) {
      const s = get();
      if (!s.summary) return;
      const seq = ++agreementSeq;
      set({ agreementRun: { running: true } });
      try {
        const slice = sliceOf(s);
        let model;
        let label;
        if (which === 'compressed') {
          const structure = s.structureError ? null : s.structure;
          const { bytes } = await exportCompressedModel(s.recipe, structure, trainedKey({ ...s, structure }));
          model = { key: `compressed:${seq}`, model: bytes, inputs: s.summary.inputs };
          label = 'the compressed model';
        } else {
          model = originalModelBytes(s.summary, s.files, s.modelFiles);
          label = s.summary.name;
        }
        if (seq !== agreementSeq) return;
        const result = await compareBackendsInWorker({ model, label, ...slice }, (done, total) => {
          if (seq === agreementSeq && get().agreementRun.running)
            set({ agreementRun: { running: true, progress: { done, total } } });
        });
        if (seq === agreementSeq) set({ agreementRun: { running: false, result } });
      } catch (e) {
        if (seq !== agreementSeq) return;
        const cancelled = (e as { code?: string }).code === 'cancelled';
        set({ agreementRun: { running: false, error: cancelled ? 'Cancelled.' : (e as Error).message } });
      }
    },

    cancelAgreement() {
      if (get().agreementRun.running) void cancelPrecision();
    },

    resetPrecision() {
      sensitivitySeq++;
      agreementSeq++;
      if (get().sensitivityRun.running || get().agreementRun.running) void cancelPrecision();
      set({
        precisionWeights: undefined,
        sensitivity: undefined,
        planSummary: undefined,
        sensitivityRun: { running: false },
        agreementRun: { running: false },
      });
      void get().loadPrecisionWeights();
    },
  };
}
