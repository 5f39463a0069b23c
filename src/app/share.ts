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

export function describeRecipe(steps: RecipeStep[]): string {
  return steps
    .map((s) => {
      const o = s.options ?? {};
      if (s.method === 'int4') return `int4 b${o.blockSize ?? 32}${o.symmetric === false ? ' asym' : ''}`;
      if (s.method === 'int8') return `int8${o.granularity === 'per-tensor' ? ' per-tensor' : ''}`;
      if (s.method === 'prune')
        return o.pattern && o.pattern !== 'unstructured'
          ? `prune ${o.pattern}`
          : `prune ${Math.round(Number(o.sparsity ?? 0.5) * 100)}%${o.scope === 'global' ? ' global' : ''}`;
      if (s.method === 'kmeans') return `k-means ${o.clusters ?? 16}${o.perChannel ? ' per-channel' : ''}`;
      return s.method;
    })
    .join(' → ');
}

/** `#recipe=<url-encoded JSON>`: readable in the address bar, valid or ignored when read back. */
export function recipeToHash(steps: RecipeStep[]): string {
  return `#${HASH_KEY}=${encodeURIComponent(JSON.stringify({ version: 1, steps }))}`;
}

export function recipeFromHash(hash: string): RecipeStep[] | undefined {
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  const raw = params.get(HASH_KEY);
  if (!raw) return undefined;
  try {
    const parsed = JSON.parse(raw) as { steps: RecipeStep[] };
    resolveRecipe(parsed); // only a valid recipe is taken
    return parsed.steps;
  } catch {
    return undefined;
  }
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
