/**
 * One mutant through the real path, in process: open (parse) → inspect (summarize) → compress with
 * recipes → export in memory, then the CLI's `compress` writing to an output folder. A run passes
 * when each stage succeeds or throws a ModelError; any other throw is an untyped error. Files beside
 * and outside the model's folder are fingerprinted before and after, so a write anywhere but the
 * output folder is caught.
 */
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, readdirSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isModelError } from '../../src/core/errors.ts';
import { parseModel } from '../../src/core/onnx/model.ts';
import { summarizeModel } from '../../src/core/summary.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { modelSources } from '../../src/cli/files.ts';
import { compressCommand } from '../../src/cli/compress.ts';
import { parseCommandArgs } from '../../src/cli/args.ts';
import { COMPRESS } from '../../src/cli/commands.ts';
import { MAIN_FILE, type SeedModel } from './models.ts';
import { mutate, type Mutant, type MutationEnv } from './mutate.ts';
import { Rng } from './prng.ts';

const ALL = { embeddings: true, lmHead: true };

/** Recipes covering every method and export format (the dequantize ones raise the opset to 21). */
export const RECIPES: Record<string, RecipeStep[]> = {
  int8: [{ method: 'int8', select: ALL }],
  'int8-asym-tensor': [
    { method: 'int8', options: { granularity: 'per-tensor', symmetric: false }, select: ALL },
  ],
  'int4-matmulnbits': [{ method: 'int4', options: { blockSize: 16 }, select: ALL }],
  'int4-matmulnbits-asym': [{ method: 'int4', options: { blockSize: 32, symmetric: false }, select: ALL }],
  'int4-dequantize': [{ method: 'int4', options: { format: 'dequantize' }, select: ALL }],
  'int4-dequantize-asym': [
    { method: 'int4', options: { format: 'dequantize', symmetric: false, blockSize: 16 }, select: ALL },
  ],
  'prune-global': [{ method: 'prune', options: { sparsity: 0.5, scope: 'global' }, select: ALL }],
  'prune-2:4': [{ method: 'prune', options: { pattern: '2:4' }, select: ALL }],
  kmeans: [{ method: 'kmeans', options: { clusters: 4 }, select: ALL }],
  fp16: [{ method: 'fp16', select: ALL }],
  'prune+int4': [
    { method: 'prune', options: { sparsity: 0.3 } },
    { method: 'int4', options: { format: 'dequantize' }, select: ALL },
  ],
};

export type Stage = 'open' | 'inspect' | `compress ${string}` | `write ${string}`;

export interface StageResult {
  stage: Stage;
  /** 'ok', a ModelError's code, or 'untyped'. */
  result: string;
  message?: string;
  /** The first frames of an untyped error's stack: where to look. */
  stack?: string;
}

export interface RunResult {
  stages: StageResult[];
  /** Paths (relative to the run folder) created, changed or removed outside the output folder. */
  outsideWrites: string[];
}

export interface MutantRun extends RunResult {
  model: string;
  seed: number;
  mutations: string[];
  ms: number;
}

interface Fingerprint {
  size: number;
  mtimeMs: number;
  ino: number;
  kind: string;
}

/** lstat of every entry under `dir` but `skip` (no file is opened: a FIFO stays unread). */
export function fingerprint(dir: string, skip?: string): Map<string, Fingerprint> {
  const out = new Map<string, Fingerprint>();
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel))) {
      const path = rel ? `${rel}/${name}` : name;
      if (path === skip) continue;
      const s = lstatSync(join(dir, path));
      const kind = s.isDirectory() ? 'dir' : s.isSymbolicLink() ? 'link' : s.isFIFO() ? 'fifo' : 'file';
      out.set(path, { size: s.size, mtimeMs: s.mtimeMs, ino: s.ino, kind });
      if (kind === 'dir') walk(path);
    }
  };
  walk('');
  return out;
}

export function changedEntries(before: Map<string, Fingerprint>, after: Map<string, Fingerprint>): string[] {
  const changed: string[] = [];
  for (const [path, a] of after) {
    const b = before.get(path);
    if (!b) changed.push(`${path} (created)`);
    else if (
      a.kind !== 'dir' &&
      (a.size !== b.size || a.mtimeMs !== b.mtimeMs || a.ino !== b.ino || a.kind !== b.kind)
    )
      changed.push(`${path} (changed)`);
  }
  for (const path of before.keys()) if (!after.has(path)) changed.push(`${path} (removed)`);
  return changed;
}

function stageResult(stage: Stage, f: () => void): StageResult {
  try {
    f();
    return { stage, result: 'ok' };
  } catch (e) {
    if (isModelError(e)) return { stage, result: e.code, message: e.message };
    const err = e instanceof Error ? e : new Error(String(e));
    const stack = (err.stack ?? '')
      .split('\n')
      .slice(1, 6)
      .map((l) => l.trim())
      .join(' | ');
    return { stage, result: 'untyped', message: `${err.name}: ${err.message}`, stack };
  }
}

/**
 * A fresh run folder: `model/` (the mutant, a sibling file, a symlink leading out, a sub-folder and,
 * when asked, a FIFO), `secret.bin` outside it, the recipe files, and an empty `out/`.
 */
export function prepareRunDir(root: string, isolated: boolean): MutationEnv & { outDir: string } {
  rmSync(root, { recursive: true, force: true });
  const modelDir = join(root, 'model');
  const outDir = join(root, 'out');
  mkdirSync(join(modelDir, 'subdir'), { recursive: true });
  mkdirSync(outDir);
  const outsideFile = join(root, 'secret.bin');
  const filler = new Uint8Array(1 << 16).map((_, i) => (i * 131) & 0xff);
  writeFileSync(outsideFile, filler);
  writeFileSync(join(modelDir, 'sibling.bin'), filler);
  symlinkSync('../secret.bin', join(modelDir, 'link.bin'));
  if (isolated) execFileSync('mkfifo', [join(modelDir, 'fifo')]);
  for (const [name, steps] of Object.entries(RECIPES))
    writeFileSync(join(root, `${name.replace(/[^a-z0-9+-]/gi, '_')}.json`), JSON.stringify({ steps }));
  return { modelDir, outsideFile, isolated, outDir };
}

/** Runs one mutant already written to `env.modelDir`. */
export async function runMutant(
  root: string,
  env: MutationEnv & { outDir: string },
  recipes: { inMemory: string[]; written: string[] },
): Promise<RunResult> {
  const before = fingerprint(root, 'out');
  const stages: StageResult[] = [];
  const path = join(env.modelDir, MAIN_FILE);
  let model: ReturnType<typeof parseModel> | undefined;
  stages.push(
    stageResult('open', () => {
      const { main, external } = modelSources(path);
      model = parseModel(main, external);
    }),
  );
  if (model) {
    const opened = model;
    stages.push(stageResult('inspect', () => void summarizeModel(opened)));
    for (const name of recipes.inMemory) {
      stages.push(
        stageResult(`compress ${name}`, () => {
          const result = compressModel(opened, resolveRecipe({ steps: RECIPES[name] }));
          exportCompressed(opened, result);
        }),
      );
    }
  }
  for (const name of recipes.written) {
    const recipeFile = join(root, `${name.replace(/[^a-z0-9+-]/gi, '_')}.json`);
    const output = join(env.outDir, `${name.replace(/[^a-z0-9+-]/gi, '_')}.onnx`);
    let thrown: unknown;
    let done = false;
    try {
      await compressCommand(
        parseCommandArgs(COMPRESS, [path, '--recipe', recipeFile, '-o', output, '--json']),
        () => {},
      );
      done = true;
    } catch (e) {
      thrown = e;
    }
    stages.push(
      stageResult(`write ${name}`, () => {
        if (!done) throw thrown;
      }),
    );
  }
  return { stages, outsideWrites: changedEntries(before, fingerprint(root, 'out')) };
}

export interface MutantPlan {
  /** Models per index; a weight > 1 makes a model come up more often. */
  models: SeedModel[];
  weights?: number[];
  inMemory: number;
  /** Recipes every mutant also runs in memory (the rewrites most sensitive to damaged nodes). */
  alwaysInMemory?: string[];
  written: number;
  /** Each mutant in its own process (see MutationEnv.isolated). */
  isolated: boolean;
}

/** Mutant `seed`: which model, which mutations, which recipes, all from the one seed. */
export async function runSeed(
  root: string,
  seed: number,
  plan: MutantPlan,
  /** Told which model and mutations before any stage runs (the long runner keeps them in case the run dies). */
  onMutant?: (model: string, mutations: string[]) => void,
): Promise<MutantRun> {
  const rng = new Rng(seed);
  const weights = plan.weights ?? plan.models.map(() => 1);
  let pickAt = rng.next() * weights.reduce((a, b) => a + b, 0);
  let which = 0;
  while (which < plan.models.length - 1 && (pickAt -= weights[which]) >= 0) which++;
  const seedModel = plan.models[which];
  const env = prepareRunDir(root, plan.isolated);
  const mutant: Mutant = mutate(seedModel, rng, env);
  for (const [name, bytes] of Object.entries(mutant.files)) writeFileSync(join(env.modelDir, name), bytes);
  for (const [name, size] of Object.entries(mutant.sparseSizes)) truncateSync(join(env.modelDir, name), size);
  const names = Object.keys(RECIPES);
  const pickRecipes = (n: number) => Array.from({ length: n }, () => rng.pick(names));
  const recipes = {
    inMemory: [...new Set([...(plan.alwaysInMemory ?? []), ...pickRecipes(plan.inMemory)])],
    written: [...new Set(pickRecipes(plan.written))],
  };
  onMutant?.(seedModel.name, mutant.mutations);
  const start = performance.now();
  const result = await runMutant(root, env, recipes);
  return {
    model: seedModel.name,
    seed,
    mutations: mutant.mutations,
    ms: performance.now() - start,
    ...result,
  };
}

export function isUntyped(run: RunResult): boolean {
  return run.stages.some((s) => s.result === 'untyped');
}
