/** The recipe in the URL hash (so a link reproduces it) and, with the evaluation history, in localStorage. */
import type { RecipeStep } from '../core/compress/recipe.ts';
import { resolveRecipe } from '../core/compress/recipe.ts';

const HASH_KEY = 'recipe';
const STORAGE_KEY = 'compression-studio:v1';

export interface HistoryEntry {
  id: string;
  model: string;
  recipe: RecipeStep[];
  label: string;
  perplexity: number;
  bytes: number;
  bitsPerWeight: number;
  at: string;
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

export function describeRecipe(steps: RecipeStep[]): string {
  return steps.map((s) => describeMethod(s) + describeSelect(s)).join(' → ');
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
  return s.method;
}

/** `#recipe=<url-encoded JSON>`: readable in the address bar; read back whole or refused with a reason. */
export function recipeToHash(steps: RecipeStep[]): string {
  return `#${HASH_KEY}=${encodeURIComponent(JSON.stringify({ version: 1, steps }))}`;
}

/**
 * The recipe a link carries: `steps` when it is valid, `error` saying what is wrong when it is not
 * (an unknown method, a bad option), neither when the hash names no recipe.
 */
export function readHashRecipe(hash: string): { steps?: RecipeStep[]; error?: string } {
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
  try {
    resolveRecipe(parsed);
  } catch (e) {
    return { error: `The link's recipe could not be used. ${(e as Error).message}` };
  }
  return { steps: (parsed as { steps: RecipeStep[] }).steps };
}

export function recipeFromHash(hash: string): RecipeStep[] | undefined {
  return readHashRecipe(hash).steps;
}

export interface Stored {
  recipe?: RecipeStep[];
  /** The URL's hash when this state was saved: still the URL's after a reload that came too soon to update it. */
  urlHash?: string;
  history?: HistoryEntry[];
}

/** The share link of a recipe: this page with the recipe in its hash (current even while the URL's own hash waits to be written). */
export function shareLink(recipe: RecipeStep[]): string {
  return `${location.origin}${location.pathname}${location.search}${recipeToHash(recipe)}`;
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
