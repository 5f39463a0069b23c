/**
 * Automatic mixed precision. Sensitivity: for every selected weight and every candidate storage
 * (keep, fp16, int8, int4 block N, k-means K, …), the KL divergence from the original when that
 * tensor alone is compressed that way, measured on a short evaluation slice by a caller-given
 * `klOf` (so this module runs no model itself). Plan: a greedy knapsack over each tensor's lower
 * convex hull of (bytes, KL) — the upgrade that removes the most KL per extra byte first — under a
 * budget in bits/weight (or bytes), or until the summed KL falls under a target. The plan is an
 * ordinary recipe: one step per chosen storage, selecting its tensors by exact name.
 */
import { ModelError } from '../errors.ts';
import type { OnnxModel } from '../onnx/model.ts';
import { compressModel } from './pipeline.ts';
import { resolveRecipe, type Recipe, type RecipeStep } from './recipe.ts';
import { selectWeights, weightCandidates, type TensorSelector, type WeightCandidate } from './select.ts';

/** One storage a tensor may get; `step` null keeps it as it is. */
export interface AutoCandidate {
  id: string;
  step: Omit<RecipeStep, 'select'> | null;
}

/** k-means K = 8 stores 4-bit indices as K = 16 does: K = 4 (2 bits) is the step below. */
export const DEFAULT_CANDIDATES = 'keep,fp16,int8,int4b128,int4b64,int4b32,kmeans16,kmeans8,kmeans4';

/**
 * 'keep', 'fp16', 'int8', 'int4b32' (block 16/32/64/128; suffix 'a' asymmetric), 'kmeans16' (K 2…256;
 * suffix 'c' per output channel), comma-separated.
 */
export function parseCandidates(list: string): AutoCandidate[] {
  const ids = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!ids.length) throw new ModelError('invalid-argument', 'The candidate list is empty.');
  const out = ids.map((id): AutoCandidate => {
    if (id === 'keep') return { id, step: null };
    if (id === 'fp16' || id === 'int8') return { id, step: { method: id } };
    let m = /^int4b(16|32|64|128)(a?)$/.exec(id);
    if (m) return { id, step: { method: 'int4', options: { blockSize: Number(m[1]), symmetric: !m[2] } } };
    m = /^kmeans(\d+)(c?)$/.exec(id);
    if (m && Number(m[1]) >= 2 && Number(m[1]) <= 256)
      return { id, step: { method: 'kmeans', options: { clusters: Number(m[1]), perChannel: !!m[2] } } };
    throw new ModelError(
      'invalid-argument',
      `Unknown candidate '${id}': use keep, fp16, int8, int4b16|32|64|128 (suffix a: asymmetric), kmeansK (K 2…256, suffix c: per channel).`,
    );
  });
  if (new Set(ids).size !== ids.length)
    throw new ModelError('invalid-argument', `A candidate is named twice in '${list}'.`);
  return out;
}

/** A selector that picks exactly the tensor `c` (names may hold glob characters: a regular expression). */
export function exactSelector(c: Pick<WeightCandidate, 'name' | 'role'>): TensorSelector {
  return {
    include: [`/^${c.name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$/`],
    ...(c.role === 'embedding' ? { embeddings: true } : {}),
    ...(c.role === 'lmHead' ? { lmHead: true } : {}),
  };
}

export interface SensitivityEntry {
  candidate: string;
  /** Stored bytes of this tensor with this candidate. */
  bytes: number;
  /** Mean KL(original ‖ model with only this tensor compressed) per token of the slice. */
  kl: number;
}

export interface TensorSensitivity {
  name: string;
  role: WeightCandidate['role'];
  params: number;
  entries: SensitivityEntry[];
}

/** Where measured KLs are kept between runs, keyed by (model, tensor, step, text). */
export interface SensitivityCache {
  get(key: string): number | undefined;
  set(key: string, kl: number): void;
}

export interface SensitivityOptions {
  /** The weights to plan (default: the linear weights, as a step without a selector picks them). */
  select?: TensorSelector;
  cache?: SensitivityCache;
  /** Names the model and the evaluation slice in cache keys: e.g. model sha256 + token hash + ctx. */
  cacheKey: string;
  onProgress?: (done: number, total: number, name: string, candidate: string) => void;
  signal?: AbortSignal;
}

/**
 * Every selected tensor × candidate: its bytes (from the pipeline's own accounting) and the KL
 * `klOf` measures on the model with only that tensor compressed. 'keep' costs 4 bytes per weight, KL 0.
 */
export async function measureSensitivity(
  model: OnnxModel,
  candidates: AutoCandidate[],
  klOf: (model: OnnxModel, steps: RecipeStep[]) => Promise<number>,
  opts: SensitivityOptions,
): Promise<TensorSensitivity[]> {
  const tensors = selectWeights(weightCandidates(model.graph), opts.select ?? {});
  if (!tensors.length)
    throw new ModelError(
      'invalid-argument',
      `${model.name} has no weight the plan could choose a precision for.`,
    );
  const total = tensors.length * candidates.filter((c) => c.step).length;
  let done = 0;
  const table: TensorSensitivity[] = [];
  for (const t of tensors) {
    const params = t.shape[0] * t.shape[1];
    const entries: SensitivityEntry[] = [];
    for (const c of candidates) {
      if (!c.step) {
        entries.push({ candidate: c.id, bytes: params * 4, kl: 0 });
        continue;
      }
      if (opts.signal?.aborted) throw new ModelError('cancelled', 'Sensitivity analysis cancelled.');
      const steps: RecipeStep[] = [{ ...c.step, select: exactSelector(t) }];
      const result = compressModel(model, resolveRecipe({ steps }));
      const bytes = result.reports[0].storedBytes;
      const key = `${opts.cacheKey}|${t.name}|${JSON.stringify(c.step)}`;
      let kl = opts.cache?.get(key);
      if (kl === undefined) {
        kl = await klOf(model, steps);
        opts.cache?.set(key, kl);
      }
      entries.push({ candidate: c.id, bytes, kl });
      opts.onProgress?.(++done, total, t.name, c.id);
    }
    table.push({ name: t.name, role: t.role, params, entries });
  }
  return table;
}

/** The candidates worth choosing for one tensor: the lower convex hull of (bytes, KL), cheapest first. */
export function efficientFrontier(entries: SensitivityEntry[]): SensitivityEntry[] {
  const sorted = [...entries].sort((a, b) => a.bytes - b.bytes || a.kl - b.kl);
  const hull: SensitivityEntry[] = [];
  for (const e of sorted) {
    // a point no better than the cheaper last one is dominated
    if (hull.length && e.kl >= hull[hull.length - 1].kl) continue;
    // drop the last point while it lies on or above the segment from the one before to e
    while (hull.length >= 2) {
      const [a, b] = [hull[hull.length - 2], hull[hull.length - 1]];
      const cross = (b.bytes - a.bytes) * (e.kl - a.kl) - (b.kl - a.kl) * (e.bytes - a.bytes);
      if (cross <= 0) hull.pop();
      else break;
    }
    hull.push(e);
  }
  return hull;
}

export interface AutoBudget {
  /** Most bits per weight over the planned tensors. */
  bitsPerWeight?: number;
  /** Most summed per-tensor KL (the plan's predicted KL). */
  kl?: number;
}

export interface AutoChoice {
  name: string;
  candidate: string;
  bytes: number;
  kl: number;
  params: number;
}

export interface AutoPlan {
  choices: AutoChoice[];
  params: number;
  bytes: number;
  bitsPerWeight: number;
  /** Sum of the chosen per-tensor KLs: the plan's own estimate of the model's KL. */
  predictedKl: number;
  recipe: Recipe;
  /** Set when the KL target could not be met even with every tensor at its best candidate. */
  warning?: string;
}

/** Greedy knapsack: every tensor starts at its cheapest hull point and takes the best KL-per-byte upgrades. */
export function planMixedPrecision(
  table: TensorSensitivity[],
  candidates: AutoCandidate[],
  budget: AutoBudget,
): AutoPlan {
  if ((budget.bitsPerWeight === undefined) === (budget.kl === undefined))
    throw new ModelError('invalid-argument', 'Give the plan one budget: bits per weight or a KL target.');
  const hulls = table.map((t) => efficientFrontier(t.entries));
  const at = hulls.map(() => 0);
  const params = table.reduce((s, t) => s + t.params, 0);
  let bytes = hulls.reduce((s, h) => s + h[0].bytes, 0);
  let kl = hulls.reduce((s, h) => s + h[0].kl, 0);
  const maxBytes = budget.bitsPerWeight !== undefined ? (budget.bitsPerWeight * params) / 8 : Infinity;
  if (bytes > maxBytes)
    throw new ModelError(
      'invalid-argument',
      `${budget.bitsPerWeight} bits/weight is below the cheapest candidates (${((bytes * 8) / params).toFixed(3)} bits/weight): add a smaller candidate or raise the budget.`,
    );
  const blocked = new Set<number>();
  for (;;) {
    if (budget.kl !== undefined && kl <= budget.kl) break;
    let best = -1;
    let bestRatio = -Infinity;
    hulls.forEach((h, i) => {
      if (blocked.has(i) || at[i] + 1 >= h.length) return;
      const [a, b] = [h[at[i]], h[at[i] + 1]];
      const ratio = (a.kl - b.kl) / Math.max(b.bytes - a.bytes, 1e-9);
      if (ratio > bestRatio) [best, bestRatio] = [i, ratio];
    });
    if (best < 0) break;
    const [a, b] = [hulls[best][at[best]], hulls[best][at[best] + 1]];
    if (bytes + b.bytes - a.bytes > maxBytes) {
      // later points of this hull cost more still
      blocked.add(best);
      continue;
    }
    at[best]++;
    bytes += b.bytes - a.bytes;
    kl += b.kl - a.kl;
  }
  const choices = table.map((t, i) => ({ name: t.name, params: t.params, ...hulls[i][at[i]] }));
  const roles = new Map(table.map((t) => [t.name, t.role]));
  // grouped in candidate order: one step per chosen storage
  const order = new Map(candidates.map((c, i) => [c.id, i]));
  const assignments = [...choices]
    .sort((a, b) => order.get(a.candidate)! - order.get(b.candidate)!)
    .map((c) => ({
      name: c.name,
      role: roles.get(c.name)!,
      step: candidates.find((x) => x.id === c.candidate)!.step,
    }));
  return {
    choices,
    params,
    bytes,
    bitsPerWeight: (bytes * 8) / params,
    predictedKl: kl,
    recipe: recipeForAssignments(assignments),
    ...(budget.kl !== undefined && kl > budget.kl
      ? {
          warning: `The KL target ${budget.kl} is not reached: every tensor at its most precise candidate still sums to ${kl.toPrecision(3)}.`,
        }
      : {}),
  };
}

/** One tensor's storage in a per-tensor plan: a method with options, or null (kept as it is). */
export interface TensorAssignment {
  name: string;
  role: WeightCandidate['role'];
  step: Omit<RecipeStep, 'select'> | null;
}

/**
 * The ordinary recipe of per-tensor storages: one step per distinct (method, options), in the order
 * each first appears, selecting its tensors by exact name. Kept tensors get no step.
 */
export function recipeForAssignments(assignments: TensorAssignment[]): Recipe {
  const groups = new Map<string, { step: Omit<RecipeStep, 'select'>; pick: TensorSelector[] }>();
  for (const a of assignments) {
    if (!a.step) continue;
    const key = JSON.stringify({ method: a.step.method, options: a.step.options ?? {} });
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { step: a.step, pick: [] }));
    g.pick.push(exactSelector(a));
  }
  const steps: RecipeStep[] = [...groups.values()].map(({ step, pick }) => ({
    ...step,
    select: {
      include: pick.flatMap((s) => s.include ?? []),
      ...(pick.some((s) => s.embeddings) ? { embeddings: true } : {}),
      ...(pick.some((s) => s.lmHead) ? { lmHead: true } : {}),
    },
  }));
  return { version: 1, steps };
}

/**
 * The per-tensor storages a recipe describes, when no tensor is selected by two steps (a plan, the
 * page's per-tensor table, or any one-step recipe); undefined otherwise (prune then int4 gives a
 * tensor two steps: not one storage per tensor). Tensors no step selects are kept.
 */
export function assignmentsOfRecipe(
  steps: RecipeStep[],
  weights: WeightCandidate[],
): TensorAssignment[] | undefined {
  const byName = new Map<string, Omit<RecipeStep, 'select'>>();
  for (const s of steps) {
    for (const w of selectWeights(weights, s.select ?? {})) {
      if (byName.has(w.name)) return undefined;
      byName.set(w.name, { method: s.method, ...(s.options ? { options: s.options } : {}) });
    }
  }
  return weights.map((w) => ({ name: w.name, role: w.role, step: byName.get(w.name) ?? null }));
}
