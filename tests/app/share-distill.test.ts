/**
 * The recipe's "distill" in share links, recipe files, labels and the page's run keys: the settings
 * travel (never the data), a bad value is refused naming it, distillation sits before the first
 * storage format, and a trained run belongs to one student, settings and data.
 */
import { describe, expect, it } from 'vitest';
import { describeRecipe, readHashRecipe, recipeJson, recipeToHash } from '../../src/app/share.ts';
import { resolveFullRecipe } from '../../src/core/compress/recipe.ts';
import {
  DISTILL_DEFAULTS,
  distillSplit,
  qatStep,
  resolveDistillSettings,
  type DistillSettings,
} from '../../src/core/compress/distill-settings.ts';
import type { StructureSettings } from '../../src/core/compress/structure.ts';
import {
  currentRunKey,
  defaultDistill,
  studentKey,
  trainedKey,
  trainingProblem,
} from '../../src/app/train-slice.ts';
import type { CalibrationState } from '../../src/app/calibration-slice.ts';
import type { TrainingState } from '../../src/app/train-slice.ts';

const prune = { method: 'prune', options: { pattern: '2:4' } };
const int4 = { method: 'int4', options: { blockSize: 32 } };
const structure: StructureSettings = { neurons: 0.25, importance: 'magnitude', scope: 'layer' };
const distill: DistillSettings = { ...DISTILL_DEFAULTS, steps: 40, batch: 2, seq: 32, lr: 0.002 };

describe('distillation in share links and recipe files', () => {
  it('a link carries the distillation settings and reads them back as the CLI resolves them', () => {
    const hash = recipeToHash([prune, int4], undefined, structure, distill);
    expect(readHashRecipe(hash)).toEqual({ steps: [prune, int4], structure, distill });
    expect(resolveFullRecipe(recipeJson([prune, int4], undefined, structure, distill)).distill).toEqual(
      distill,
    );
    // the data itself is no part of a recipe
    expect(decodeURIComponent(hash)).not.toMatch(/train\.txt|"text":/);
  });

  it('a link without distill (made before it existed) is unchanged; a distill-only recipe needs no steps', () => {
    const old = '#recipe=' + encodeURIComponent(JSON.stringify({ version: 1, steps: [int4] }));
    expect(recipeToHash([int4])).toBe(old);
    expect(readHashRecipe(old)).toEqual({ steps: [int4] });
    const only = '#recipe=' + encodeURIComponent(JSON.stringify({ version: 1, distill: { steps: 5 } }));
    expect(readHashRecipe(only)).toEqual({ steps: [], distill: { ...DISTILL_DEFAULTS, steps: 5 } });
  });

  it('a bad setting is refused naming the field and the allowed values', () => {
    expect(() => resolveDistillSettings({ steps: 0 })).toThrow(
      /distill\.steps must be a whole number from 1/,
    );
    expect(() => resolveDistillSettings({ alpha: 1.5 })).toThrow(
      /distill\.alpha must be a number from 0 to 1/,
    );
    expect(() => resolveDistillSettings({ schedule: 'step' })).toThrow(/cosine, linear, constant/);
    expect(() => resolveDistillSettings({ train: 'heads' })).toThrow(/all, no-embeddings, norms-biases/);
    expect(() => resolveDistillSettings({ data: 'train.txt' })).toThrow(/distill has no field 'data'/);
    expect(() => resolveDistillSettings([])).toThrow(/"distill" must be an object/);
    const bad = '#recipe=' + encodeURIComponent(JSON.stringify({ steps: [int4], distill: { lr: -1 } }));
    expect(readHashRecipe(bad).error).toMatch(/distill\.lr must be a positive number/);
    expect(resolveDistillSettings({})).toEqual(DISTILL_DEFAULTS);
  });

  it('distillation runs before the first storage format, and labels show where', () => {
    expect(distillSplit([prune, int4])).toBe(1);
    expect(distillSplit([prune])).toBe(1);
    expect(distillSplit([int4, prune])).toBe(0);
    expect(distillSplit([])).toBe(0);
    expect(describeRecipe([prune, int4], structure, distill)).toBe(
      '−25% neurons → prune 2:4 → distil 40 × 2×32 → int4 b32',
    );
    expect(describeRecipe([prune, int4], null, null)).toBe('prune 2:4 → int4 b32');
  });

  it('the page defaults fit the model: windows within the context, generated data without a tokenizer', () => {
    expect(defaultDistill(64, true)).toMatchObject({
      seq: 64,
      source: 'text',
      steps: 100,
      temperature: 2,
      alpha: 0.5,
    });
    expect(defaultDistill(1024, false)).toMatchObject({ seq: 128, source: 'generate' });
  });
});

describe('which trained weights a recipe uses', () => {
  const calibration = { form: {}, running: false } as unknown as CalibrationState;
  const done = (key: string): TrainingState => ({
    running: false,
    history: [],
    evals: [],
    file: { name: 'train.txt', text: 'abc' },
    done: {
      key,
      steps: 4,
      cancelled: false,
      bestStep: 4,
      bestPerplexity: 9,
      trainable: 10,
      tokensPerSecond: 1,
    },
  });
  const state = (
    over: Partial<{
      recipe: (typeof prune)[];
      structure: StructureSettings | null;
      distill: DistillSettings | null;
    }>,
  ) => ({
    recipe: [prune, int4],
    structure,
    distill,
    calibration,
    training: {
      running: false,
      history: [],
      evals: [],
      file: { name: 'train.txt', text: 'abc' },
    } as TrainingState,
    ...over,
  });

  it('the steps after distillation do not change the student; the steps before, the settings and the data do', () => {
    const key = currentRunKey(state({}))!;
    expect(key).toBeDefined();
    const trained = { ...state({}), training: done(key) };
    expect(trainedKey(trained)).toBe(key);
    // int4 → int8 after distillation: the same trained weights, quantized otherwise
    expect(trainedKey({ ...trained, recipe: [prune, { method: 'int8', options: {} }] })).toBe(key);
    // another pruning, another structure, other settings, other data: not this run's weights
    expect(
      trainedKey({ ...trained, recipe: [{ method: 'prune', options: { sparsity: 0.5 } }, int4] }),
    ).toBeUndefined();
    expect(trainedKey({ ...trained, structure: null })).toBeUndefined();
    expect(trainedKey({ ...trained, distill: { ...distill, steps: 41 } })).toBeUndefined();
    expect(
      trainedKey({ ...trained, training: { ...done(key), file: { name: 'other.txt', text: 'abc' } } }),
    ).toBeUndefined();
    expect(trainedKey({ ...trained, distill: null })).toBeUndefined();
    // the same settings in another field order (a link's) are the same run
    const reordered = Object.fromEntries(Object.entries(distill).reverse()) as unknown as DistillSettings;
    expect(trainedKey({ ...trained, distill: reordered })).toBe(key);
    expect(studentKey({ recipe: [prune, int4], structure })).toBe(studentKey({ recipe: [prune], structure }));
  });

  it('QAT trains against the step after distillation: its options are part of the run, and it needs int4 or int8 there', () => {
    const qat = { ...distill, qat: true };
    const key = currentRunKey(state({ distill: qat }))!;
    expect(key).not.toBe(currentRunKey(state({})));
    const trained = { ...state({ distill: qat }), training: done(key) };
    expect(trainedKey(trained)).toBe(key);
    // another block size is another fake quantizer: not this run's weights (without QAT it would be)
    const b64 = { method: 'int4', options: { blockSize: 64 } };
    expect(trainedKey({ ...trained, recipe: [prune, b64] })).toBeUndefined();
    expect(qatStep([prune, int4])).toBe(int4);
    expect(qatStep([prune, { method: 'int8', options: {} }])?.method).toBe('int8');
    expect(qatStep([prune, { method: 'kmeans', options: {} }])).toBeUndefined();
    expect(qatStep([prune])).toBeUndefined();
    const base = {
      summary: {},
      tokenizerJson: {},
      isDemo: true,
      ctx: 128,
      distill: qat,
      training: { running: false, history: [], evals: [] } as TrainingState,
    };
    expect(trainingProblem({ ...base, recipe: [prune, int4] })).toBeUndefined();
    expect(trainingProblem({ ...base, recipe: [prune] })).toMatch(
      /needs an int4 or int8 step right after distillation/,
    );
    // the link and the label carry it; a bad value is refused naming it
    expect(readHashRecipe(recipeToHash([prune, int4], undefined, null, qat)).distill).toEqual(qat);
    expect(describeRecipe([prune, int4], null, qat)).toBe('prune 2:4 → distil 40 × 2×32 QAT → int4 b32');
    expect(resolveDistillSettings({}).qat).toBe(false);
    expect(() => resolveDistillSettings({ qat: 'yes' })).toThrow(/distill\.qat must be true or false/);
  });

  it('Train says why it cannot start: no tokenizer for text, no file, a window longer than the context', () => {
    const base = {
      summary: {},
      tokenizerJson: {},
      isDemo: false,
      ctx: 128,
      distill,
      training: { running: false, history: [], evals: [] } as TrainingState,
    };
    expect(trainingProblem({ ...base, distill: null })).toMatch(/Add distillation/);
    expect(trainingProblem(base)).toMatch(/Choose a text file/);
    // the demo trains on its own training split by default
    expect(trainingProblem({ ...base, isDemo: true })).toBeUndefined();
    expect(trainingProblem({ ...base, isDemo: true, tokenizerJson: undefined })).toMatch(/tokenizer\.json/);
    expect(trainingProblem({ ...base, distill: { ...distill, source: 'generate' } })).toBeUndefined();
    expect(trainingProblem({ ...base, distill: { ...distill, source: 'generate', seq: 256 } })).toMatch(
      /longer than the model's context \(128\)/,
    );
    expect(trainingProblem({ ...base, isDemo: true, training: { ...base.training, running: true } })).toBe(
      'Training…',
    );
  });
});
