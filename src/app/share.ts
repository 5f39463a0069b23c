/** The recipe in the URL hash (so a link reproduces it) and, with the evaluation history, in localStorage. */
import type { EvalProtocol } from '../core/eval/compare.ts';
import type { CalibrationSettings, RecipeStep } from '../core/compress/recipe.ts';
import { resolveFullRecipe, resolveRecipe } from '../core/compress/recipe.ts';
import type { StructureSettings } from '../core/compress/structure.ts';
import { distillSplit, type DistillSettings } from '../core/compress/distill-settings.ts';

/** How a shared recipe calibrates (never the data): what the recipe JSON's "calibration" holds. */
export type SharedCalibration = Partial<CalibrationSettings> & Pick<CalibrationSettings, 'source'>;

const HASH_KEY = 'recipe';
const STORAGE_KEY = 'compression-studio:v1';

export interface HistoryEntry {
  id: string;
  model: string;
  recipe: RecipeStep[];
  /** The structured pruning before the steps (entries saved before it existed have none). */
  structure?: StructureSettings | null;
  /** The distillation in the recipe (entries saved before it existed have none). */
  distill?: DistillSettings | null;
  label: string;
  perplexity: number;
  bytes: number;
  bitsPerWeight: number;
  at: string;
  /** Against the original on the same tokens (entries saved before it was measured have none). */
  kl?: number;
  sameTop?: number;
  pplRatio?: number;
  protocol?: EvalProtocol;
}

export const DEFAULT_RECIPE: RecipeStep[] = [{ method: 'int4', options: { blockSize: 32 } }];

/** The step's tensor selection in a few words: recipes that differ only there must look different. */
function describeSelect(s: RecipeStep): string {
  const sel = s.select ?? {};
  const parts: string[] = [];
  if (sel.include?.length) parts.push(`only ${sel.include.join(', ')}`);
  if (sel.exclude?.length) parts.push(`not ${sel.exclude.join(', ')}`);
  if (sel.embeddings) parts.push('+embeddings');
  if (sel.lmHead) parts.push('+LM head');
  return parts.length ? ` [${parts.join('; ')}]` : '';
}

export function describeRecipe(
  steps: RecipeStep[],
  structure?: StructureSettings | null,
  distill?: DistillSettings | null,
): string {
  const parts = steps.map((s) => describeMethod(s) + describeSelect(s));
  if (distill) parts.splice(distillSplit(steps), 0, describeDistill(distill));
  if (structure) parts.unshift(describeStructure(structure));
  return parts.join(' → ');
}

/** "−25% heads, −30% neurons, −1 block (activation, global)": what the structure pass removes. */
export function describeStructure(s: StructureSettings): string {
  const removed: string[] = [];
  if (s.heads) removed.push(`−${Math.round(s.heads * 100)}% heads`);
  if (s.neurons) removed.push(`−${Math.round(s.neurons * 100)}% neurons`);
  if (s.blocks) removed.push(`−${s.blocks} block${s.blocks > 1 ? 's' : ''}`);
  const how = [s.importance !== 'magnitude' ? s.importance : '', s.scope === 'global' ? 'global' : '']
    .filter(Boolean)
    .join(', ');
  return removed.join(', ') + (how ? ` (${how})` : '');
}

/** "distil 100 × 8×128": the training step, in a few words. */
export function describeDistill(d: DistillSettings): string {
  return `distil ${d.steps} × ${d.batch}×${d.seq}${d.qat ? ' QAT' : ''}`;
}

function describeMethod(s: RecipeStep): string {
  const o = s.options ?? {};
  if (s.method === 'int4') return `int4 b${o.blockSize ?? 32}${o.symmetric === false ? ' asym' : ''}`;
  if (s.method === 'int8') return `int8${o.granularity === 'per-tensor' ? ' per-tensor' : ''}`;
  if (s.method === 'prune')
    return o.pattern && o.pattern !== 'unstructured'
      ? `prune ${o.pattern}`
      : `prune ${Math.round(Number(o.sparsity ?? 0.5) * 100)}%${o.scope === 'global' ? ' global' : ''}`;
  if (s.method === 'kmeans') return `k-means ${o.clusters ?? 16}${o.perChannel ? ' per-channel' : ''}`;
  if (s.method === 'gptq')
    return o.bits === '8'
      ? 'GPTQ int8'
      : `GPTQ int4 b${o.blockSize ?? 32}${o.symmetric === false ? ' asym' : ''}`;
  if (s.method === 'sparsegpt' || s.method === 'wanda') {
    const name = s.method === 'wanda' ? 'Wanda' : 'SparseGPT';
    return o.pattern && o.pattern !== 'unstructured'
      ? `${name} ${o.pattern}`
      : `${name} ${Math.round(Number(o.sparsity ?? 0.5) * 100)}%`;
  }
  if (s.method === 'llm-int8') return `LLM.int8 t${o.threshold ?? 6}`;
  if (s.method === 'w8a8') return 'W8A8';
  return s.method;
}

/** The recipe as a file or the CLI reads it: its calibration settings (when it has any) before the steps. */
export function recipeJson(
  steps: RecipeStep[],
  calibration?: SharedCalibration,
  structure?: StructureSettings | null,
  distill?: DistillSettings | null,
): {
  version: 1;
  calibration?: SharedCalibration;
  structure?: StructureSettings;
  distill?: DistillSettings;
  steps: RecipeStep[];
} {
  return {
    version: 1,
    ...(calibration ? { calibration } : {}),
    ...(structure ? { structure } : {}),
    ...(distill ? { distill } : {}),
    steps,
  };
}

/**
 * `#recipe=<url-encoded JSON>`: readable in the address bar; read back whole or refused with a reason.
 * A recipe with calibrated steps carries its calibration settings, as recipe files do.
 */
export function recipeToHash(
  steps: RecipeStep[],
  calibration?: SharedCalibration,
  structure?: StructureSettings | null,
  distill?: DistillSettings | null,
): string {
  return `#${HASH_KEY}=${encodeURIComponent(JSON.stringify(recipeJson(steps, calibration, structure, distill)))}`;
}

/**
 * The recipe a link carries: `steps` when it is valid, `error` saying what is wrong when it is not
 * (an unknown method, a bad option), neither when the hash names no recipe.
 */
export function readHashRecipe(hash: string): {
  steps?: RecipeStep[];
  calibration?: SharedCalibration;
  /** The structured pruning the link carries; links made before it existed have none. */
  structure?: StructureSettings;
  /** The distillation the link carries (its settings; the page trains again). */
  distill?: DistillSettings;
  error?: string;
} {
  let raw: string | null;
  try {
    raw = new URLSearchParams(hash.replace(/^#/, '')).get(HASH_KEY);
  } catch {
    raw = null;
  }
  if (raw === null) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return { error: "The link's recipe is not valid JSON (was the link cut short?)." };
  }
  let calibration: CalibrationSettings | null;
  let structure: StructureSettings | null | undefined;
  let distill: DistillSettings | null | undefined;
  try {
    ({ calibration, structure, distill } = resolveFullRecipe(parsed));
  } catch (e) {
    return { error: `The link's recipe could not be used. ${(e as Error).message}` };
  }
  return {
    steps: (parsed as { steps?: RecipeStep[] }).steps ?? [],
    ...(calibration ? { calibration } : {}),
    ...(structure ? { structure } : {}),
    ...(distill ? { distill } : {}),
  };
}

export function recipeFromHash(hash: string): RecipeStep[] | undefined {
  return readHashRecipe(hash).steps;
}

export interface Stored {
  recipe?: RecipeStep[];
  structure?: StructureSettings | null;
  distill?: DistillSettings | null;
  /** The URL's hash when this state was saved: still the URL's after a reload that came too soon to update it. */
  urlHash?: string;
  history?: HistoryEntry[];
}

/** The share link of a recipe: this page with the recipe in its hash (current even while the URL's own hash waits to be written). */
export function shareLink(
  recipe: RecipeStep[],
  calibration?: SharedCalibration,
  structure?: StructureSettings | null,
  distill?: DistillSettings | null,
): string {
  return `${location.origin}${location.pathname}${location.search}${recipeToHash(recipe, calibration, structure, distill)}`;
}

export function loadStored(): Stored {
  try {
    const s = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? '{}') as Stored;
    if (s.recipe) resolveRecipe({ steps: s.recipe });
    return s;
  } catch {
    return {};
  }
}

export function saveStored(s: Stored): void {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(s));
  } catch {
    // storage full or disabled: the recipe still lives in the URL
  }
}
