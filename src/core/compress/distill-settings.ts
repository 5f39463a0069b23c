/**
 * A recipe's "distill" object: how to train (never the data itself), and where in the recipe it runs.
 * Kept apart from the training code so the page's main thread reads recipes without loading the engine.
 */
import { ModelError } from '../errors.ts';
import { getMethod } from '../../methods/registry.ts';
import type { TrainSelection } from '../train/distill.ts';
import type { Schedule } from '../train/optim.ts';

/** The weight selections the engine trains (src/core/train/distill.ts's TRAIN_SELECTIONS). */
const TRAIN_SELECTIONS: readonly TrainSelection[] = ['all', 'no-embeddings', 'norms-biases'];
/** The most windows a held-out measurement reads: a few seconds, not a full evaluation. */
export const HELD_OUT_WINDOWS = 16;

/** A recipe's "distill": the training settings and the kind of data (the data travels beside the recipe). */
export interface DistillSettings {
  /** 'text': a text file with the model's tokenizer (the demo: its training split); 'ids': token ids; 'generate': sampled by the teacher. */
  source: 'text' | 'ids' | 'generate';
  /** Sequences the teacher generates ('generate'). */
  samples: number;
  /** Seeds the generated sequences and the choice of training windows. */
  seed: number;
  steps: number;
  batch: number;
  /** Tokens per training window. */
  seq: number;
  lr: number;
  schedule: Schedule;
  temperature: number;
  alpha: number;
  train: TrainSelection;
  weightDecay: number;
  /** AdamW's second-moment decay (PyTorch's 0.999 by default; llama2.c and nanoGPT use 0.95). */
  beta2: number;
  /** Clip the gradients to this global L2 norm before each update (0: no clipping). */
  gradClip: number;
  /** Held-out perplexity every this many steps (and at the end). */
  evalEvery: number;
  /**
   * Quantization-aware training: the step right after distillation (int4 or int8) fake-quantizes the
   * weights in every forward pass (straight-through gradient), so its export is what was trained.
   */
  qat: boolean;
}

export const DISTILL_DEFAULTS: DistillSettings = {
  source: 'text',
  samples: 64,
  seed: 0,
  steps: 100,
  batch: 8,
  seq: 128,
  lr: 1e-3,
  schedule: 'cosine',
  temperature: 2,
  alpha: 0.5,
  train: 'all',
  weightDecay: 0.01,
  beta2: 0.999,
  gradClip: 0,
  evalEvery: 10,
  qat: false,
};

const SCHEDULES: readonly Schedule[] = ['cosine', 'linear', 'constant'];
const SOURCES = ['text', 'ids', 'generate'] as const;
function fail(message: string): never {
  throw new ModelError('invalid-recipe', `Invalid recipe: ${message}`);
}

/** Validate a recipe's "distill" object, defaults filled in. */
export function resolveDistillSettings(value: unknown): DistillSettings {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail('"distill" must be an object, e.g. {"source": "text", "steps": 100, "batch": 8, "seq": 128}.');
  const d = value as Record<string, unknown>;
  const known = Object.keys(DISTILL_DEFAULTS);
  for (const key of Object.keys(d))
    if (!known.includes(key))
      fail(
        `distill has no field '${key}' (fields: ${known.join(', ')}; the data itself is not part of a recipe).`,
      );
  const whole = (key: keyof DistillSettings, min: number, max: number): number => {
    const v = d[key] ?? DISTILL_DEFAULTS[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      fail(`distill.${key} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}.`);
    return v;
  };
  const real = (key: keyof DistillSettings, ok: (n: number) => boolean, what: string): number => {
    const v = d[key] ?? DISTILL_DEFAULTS[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v))
      fail(`distill.${key} must be ${what}, got ${JSON.stringify(v)}.`);
    return v;
  };
  const oneOf = <T extends string>(key: keyof DistillSettings, options: readonly T[]): T => {
    const v = d[key] ?? DISTILL_DEFAULTS[key];
    if (typeof v !== 'string' || !options.includes(v as T))
      fail(`distill.${key} must be one of ${options.join(', ')}, got ${JSON.stringify(v)}.`);
    return v as T;
  };
  const flag = (key: keyof DistillSettings): boolean => {
    const v = d[key] ?? DISTILL_DEFAULTS[key];
    if (typeof v !== 'boolean') fail(`distill.${key} must be true or false, got ${JSON.stringify(v)}.`);
    return v;
  };
  return {
    source: oneOf('source', SOURCES),
    samples: whole('samples', 1, 100_000),
    seed: whole('seed', 0, 2 ** 32 - 1),
    steps: whole('steps', 1, 1_000_000),
    batch: whole('batch', 1, 4096),
    seq: whole('seq', 2, 1_000_000),
    lr: real('lr', (n) => n > 0 && n < 10, 'a positive number below 10'),
    schedule: oneOf('schedule', SCHEDULES),
    temperature: real('temperature', (n) => n > 0 && n <= 100, 'a number in (0, 100]'),
    alpha: real('alpha', (n) => n >= 0 && n <= 1, 'a number from 0 to 1'),
    train: oneOf('train', TRAIN_SELECTIONS),
    weightDecay: real('weightDecay', (n) => n >= 0 && n < 1, 'a number in [0, 1)'),
    beta2: real('beta2', (n) => n > 0 && n < 1, 'a number in (0, 1)'),
    gradClip: real('gradClip', (n) => n >= 0, 'a number ≥ 0 (0: no clipping)'),
    evalEvery: whole('evalEvery', 1, 1_000_000),
    qat: flag('qat'),
  };
}

/**
 * Where distillation runs in a list of steps: before the first step that stores weights in another
 * format (the engine trains float weights). Steps before it make the student; steps from it on
 * compress the trained weights.
 */
export function distillSplit(steps: readonly { method: string }[]): number {
  const i = steps.findIndex((s) => {
    try {
      return getMethod(s.method).role === 'encode';
    } catch {
      return false;
    }
  });
  return i < 0 ? steps.length : i;
}

/**
 * The methods whose step the page trains against (quantization-aware training): their fake quantizer
 * is the method's own kernel, so the pipeline's later pass over the trained weights stores exactly the
 * values the last forward pass read. k-means is trained with a fixed codebook that a fresh k-means of
 * the trained weights would not reproduce: the CLI (`distill --qat`) exports its trained palette.
 */
export const PAGE_QAT_METHODS: readonly string[] = ['int4', 'int8'];

/** The step QAT trains against: the storage step right after distillation, when it is one the page supports. */
export function qatStep<T extends { method: string }>(steps: readonly T[]): T | undefined {
  const step = steps[distillSplit(steps)];
  return step && PAGE_QAT_METHODS.includes(step.method) ? step : undefined;
}
