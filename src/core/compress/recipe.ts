/**
 * A recipe: an ordered list of steps, each a method with options and a tensor selector. Steps
 * compose in order (prune, then quantize). Recipes are plain JSON, so they travel in files, URLs
 * and the CLI unchanged.
 */
import { ModelError } from '../errors.ts';
import { getMethod, resolveOptions } from '../../methods/registry.ts';
import type { OptionValues } from '../../methods/types.ts';
import { patternToRegExp, type TensorSelector } from './select.ts';

export interface RecipeStep {
  method: string;
  options?: Record<string, number | string | boolean>;
  select?: TensorSelector;
}

export interface Recipe {
  version?: 1;
  steps: RecipeStep[];
}

/** A step with every option resolved against its method's schema. */
export interface ResolvedStep {
  method: string;
  options: OptionValues;
  select: TensorSelector;
}

function fail(message: string): never {
  throw new ModelError('invalid-recipe', `Invalid recipe: ${message}`);
}

function checkSelector(value: unknown, where: string): TensorSelector {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail(`${where}.select must be an object.`);
  const s = value as Record<string, unknown>;
  const known = ['include', 'exclude', 'embeddings', 'lmHead'];
  for (const key of Object.keys(s))
    if (!known.includes(key)) fail(`${where}.select has no field '${key}' (fields: ${known.join(', ')}).`);
  for (const key of ['include', 'exclude'] as const) {
    const list = s[key];
    if (list === undefined) continue;
    if (!Array.isArray(list) || list.some((p) => typeof p !== 'string'))
      fail(`${where}.select.${key} must be a list of name patterns.`);
    for (const p of list as string[]) {
      try {
        patternToRegExp(p);
      } catch (e) {
        fail(`${where}.select.${key}: '${p}' is not a valid pattern (${(e as Error).message}).`);
      }
    }
  }
  for (const key of ['embeddings', 'lmHead'] as const)
    if (s[key] !== undefined && typeof s[key] !== 'boolean')
      fail(`${where}.select.${key} must be true or false.`);
  return s as TensorSelector;
}

/** Validate a parsed JSON recipe and resolve every step's options (defaults filled in). */
export function resolveRecipe(value: unknown): ResolvedStep[] {
  if (typeof value !== 'object' || value === null) fail('expected a JSON object with a "steps" list.');
  const r = value as Record<string, unknown>;
  if (r.version !== undefined && r.version !== 1)
    fail(`version ${String(r.version)} is not supported (expected 1).`);
  if (!Array.isArray(r.steps)) fail('"steps" must be a list.');
  if (r.steps.length === 0) fail('"steps" is empty: add at least one method.');
  return r.steps.map((raw: unknown, i: number) => {
    const where = `steps[${i}]`;
    if (typeof raw !== 'object' || raw === null) fail(`${where} must be an object.`);
    const step = raw as Record<string, unknown>;
    if (typeof step.method !== 'string') fail(`${where}.method must name a method.`);
    let method;
    try {
      method = getMethod(step.method);
    } catch (e) {
      fail(`${where}: ${(e as Error).message}`);
    }
    const options = step.options ?? {};
    if (typeof options !== 'object' || options === null || Array.isArray(options))
      fail(`${where}.options must be an object.`);
    let resolved: OptionValues;
    try {
      resolved = resolveOptions(method, options as Record<string, unknown>);
    } catch (e) {
      fail(`${where}: ${(e as Error).message}`);
    }
    return { method: method.id, options: resolved, select: checkSelector(step.select, where) };
  });
}

export function parseRecipeText(text: string): ResolvedStep[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`not JSON (${(e as Error).message}).`);
  }
  return resolveRecipe(json);
}
