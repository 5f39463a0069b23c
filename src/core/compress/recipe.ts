/**
 * A recipe: an ordered list of steps, each a method with options and a tensor selector. Steps
 * compose in order (prune, then quantize). Recipes are plain JSON, so they travel in files, URLs
 * and the CLI unchanged.
 */
import { ModelError } from '../errors.ts';
import { getMethod, resolveOptions } from '../../methods/registry.ts';
import type { OptionValues } from '../../methods/types.ts';
import { patternToRegExp, type TensorSelector } from './select.ts';
import { resolveStructureSettings, type StructureSettings } from './structure.ts';
import { resolveDistillSettings, type DistillSettings } from './distill-settings.ts';

export interface RecipeStep {
  method: string;
  options?: Record<string, number | string | boolean>;
  select?: TensorSelector;
}

/**
 * How to calibrate, not the data itself: where the sequences come from and how many of how long.
 * 'generate' samples them from the model (seeded, temperature 1, from BOS), so the recipe alone
 * reproduces them; 'ids' and 'text' name only the kind of data, which is given beside the recipe
 * (the CLI's --calib-ids / --calib-text), cut into `samples` windows of `length` tokens.
 */
export interface CalibrationSettings {
  source: 'generate' | 'ids' | 'text';
  /** Sequences (N): generated, or the most windows taken from the data. */
  samples: number;
  /** Tokens per sequence (L); absent: min(128, the model's context). */
  length?: number;
  /** The generator's seed ('generate'). */
  seed: number;
  /** The token generated sequences start with; absent: config.json's bos_token_id, else 1 (llama2.c). */
  bos?: number;
  /**
   * Capture each group of layers on the model whose earlier layers are already compressed (as GPTQ
   * and SparseGPT are run), instead of once on the original model.
   */
  sequential: boolean;
}

export const CALIBRATION_DEFAULTS = { samples: 32, seed: 0, sequential: true } as const;
/** The most sequences and tokens per sequence a recipe may ask for: beyond, a typo more than a wish. */
export const CALIBRATION_LIMITS = { samples: 100_000, length: 1_000_000 } as const;

export interface Recipe {
  version?: 1;
  calibration?: Partial<CalibrationSettings>;
  /** Structured pruning, run on the whole model before the steps (which then see the smaller weights). */
  structure?: Partial<StructureSettings>;
  /** Knowledge distillation of the model as compressed before the first storage-format step (distill-settings.ts). */
  distill?: Partial<DistillSettings>;
  steps: RecipeStep[];
}

/** A recipe with every option resolved: its steps, and its calibration settings when it has any. */
export interface ResolvedRecipe {
  steps: ResolvedStep[];
  calibration: CalibrationSettings | null;
  /** Heads, neurons and blocks to remove first, when the recipe has a "structure". */
  structure?: StructureSettings | null;
  /** How to distil, when the recipe trains (after the steps before its first storage format). */
  distill?: DistillSettings | null;
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

function wholeNumber(c: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = c[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    fail(`calibration.${key} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}.`);
  return v;
}

/** Validate a recipe's "calibration" object, defaults filled in (the length stays open: it depends on the model). */
export function resolveCalibrationSettings(value: unknown): CalibrationSettings {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail('"calibration" must be an object, e.g. {"source": "generate", "samples": 32, "length": 128}.');
  const c = value as Record<string, unknown>;
  const known = ['source', 'samples', 'length', 'seed', 'bos', 'sequential'];
  for (const key of Object.keys(c))
    if (!known.includes(key))
      fail(
        `calibration has no field '${key}' (fields: ${known.join(', ')}; the data itself is not part of a recipe).`,
      );
  const sources = ['generate', 'ids', 'text'];
  if (typeof c.source !== 'string' || !sources.includes(c.source))
    fail(`calibration.source must be one of ${sources.join(', ')}, got ${JSON.stringify(c.source)}.`);
  if (c.sequential !== undefined && typeof c.sequential !== 'boolean')
    fail('calibration.sequential must be true or false.');
  const length = wholeNumber(c, 'length', 2, CALIBRATION_LIMITS.length);
  const bos = wholeNumber(c, 'bos', 0, 2 ** 31 - 1);
  return {
    source: c.source as CalibrationSettings['source'],
    samples: wholeNumber(c, 'samples', 1, CALIBRATION_LIMITS.samples) ?? CALIBRATION_DEFAULTS.samples,
    ...(length !== undefined ? { length } : {}),
    seed: wholeNumber(c, 'seed', 0, 2 ** 32 - 1) ?? CALIBRATION_DEFAULTS.seed,
    ...(bos !== undefined ? { bos } : {}),
    sequential: (c.sequential as boolean | undefined) ?? CALIBRATION_DEFAULTS.sequential,
  };
}

/** Validate a parsed JSON recipe and resolve every step's options (defaults filled in). */
export function resolveRecipe(value: unknown): ResolvedStep[] {
  return resolveFullRecipe(value).steps;
}

/** As resolveRecipe, with the recipe's calibration settings (validated) beside the steps. */
export function resolveFullRecipe(value: unknown): ResolvedRecipe {
  if (typeof value !== 'object' || value === null) fail('expected a JSON object with a "steps" list.');
  const r = value as Record<string, unknown>;
  const calibration = r.calibration === undefined ? null : resolveCalibrationSettings(r.calibration);
  if (r.version !== undefined && r.version !== 1)
    fail(`version ${String(r.version)} is not supported (expected 1).`);
  const structure = r.structure === undefined ? null : resolveStructureSettings(r.structure);
  const distill = r.distill === undefined ? null : resolveDistillSettings(r.distill);
  // a recipe that only prunes structure (or only distils) may leave its steps out
  const rawSteps = r.steps === undefined && (structure || distill) ? [] : r.steps;
  if (!Array.isArray(rawSteps)) fail('"steps" must be a list.');
  if (rawSteps.length === 0 && !structure && !distill) fail('"steps" is empty: add at least one method.');
  const steps = rawSteps.map((raw: unknown, i: number): ResolvedStep => {
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
  return { steps, calibration, structure, ...(distill ? { distill } : {}) };
}

export function parseRecipeText(text: string): ResolvedStep[] {
  return parseFullRecipeText(text).steps;
}

export function parseFullRecipeText(text: string): ResolvedRecipe {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`not JSON (${(e as Error).message}).`);
  }
  return resolveFullRecipe(json);
}
