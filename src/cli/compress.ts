import {
  closeSync,
  existsSync,
  openSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { ModelError, formatBytes } from '../core/errors.ts';
import { parseModel } from '../core/onnx/model.ts';
import {
  CALIBRATION_DEFAULTS,
  parseFullRecipeText,
  resolveCalibrationSettings,
  resolveRecipe,
  type CalibrationSettings,
  type RecipeStep,
  type ResolvedRecipe,
} from '../core/compress/recipe.ts';
import {
  DEFAULT_CALIBRATION_LENGTH,
  calibrate,
  calibratedMethods,
  checkVocabulary,
  type CalibrationProgress,
} from '../core/compress/calibration.ts';
import type { CalibrationStats } from '../core/calibrate/stats.ts';
import type { ResolvedStep } from '../core/compress/recipe.ts';
import type { CalibrationInput, CalibrationRuntime } from '../core/compress/calibration.ts';
import type { OnnxModel } from '../core/onnx/model.ts';
import { summarizeInputs } from '../core/summary.ts';
import { loadTokenizer, parseIdsText } from '../core/tokenizer.ts';
import { createNodeSession, Tensor } from '../runtime/ort-node.ts';
import { readConfig, readTokenizerJson } from './ppl.ts';
import {
  compressModel,
  compressModelInPool,
  totalsFor,
  type CompressionResult,
} from '../core/compress/pipeline.ts';
import { createNodePool, defaultWorkerCount } from '../runtime/pool-node.ts';
import { exportCompressed } from '../core/compress/export.ts';
import { exportStreaming, streamOutcomes } from '../core/compress/stream-export.ts';
import { fileSpool, streamFilesAtomically } from './stream-out.ts';
import {
  pruneStructure,
  resolveStructureSettings,
  type StructureSettings,
} from '../core/compress/structure.ts';
import type { StructureReport } from '../core/structure/rewrite.ts';
import type { TensorSelector } from '../core/compress/select.ts';
import { UsageError, integerFlag, parseNumber, readTextFile, type ParsedArgs } from './args.ts';
import { getMethod, resolveOptions } from '../methods/registry.ts';
import { DEFAULT_OUTLIER_THRESHOLD } from '../methods/llm-int8/index.ts';
import { modelFileFlag, modelSources, resolveModelPath } from './files.ts';
import { folderOutputModel, isFolderOutput, makeFolderOutput, writeFolderExtras } from './folder-out.ts';
import { packageVersion } from './main.ts';
import { checkContext, modelContext } from '../core/eval/context.ts';

/** Flags that refine one method: given without it they would be ignored, so they are refused. */
const REFINES: Record<string, string[]> = {
  global: ['prune'],
  'per-tensor': ['int8'],
  block: ['int4', 'gptq', 'awq'],
  format: ['int4', 'gptq', 'awq'],
  asym: ['int8', 'int4', 'gptq', 'awq'],
  'per-channel': ['kmeans'],
  dense: ['kmeans'],
  'outlier-threshold': ['llm-int8'],
};
const METHOD_FLAGS = [
  'prune',
  'nm',
  'int8',
  'int4',
  'kmeans',
  'fp16',
  'gptq',
  'sparsegpt',
  'wanda',
  'llm-int8',
  'w8a8',
  'awq',
];
const SELECT_FLAGS = ['include', 'exclude', 'embeddings', 'lm-head'];
/** Structured pruning: what to remove, then how to choose it. */
const STRUCTURE_FLAGS = ['heads', 'neurons', 'blocks'];
const STRUCTURE_REFINES = ['importance', 'structure-scope', 'multiple'];
/** Where calibration data comes from; at most one. */
const CALIB_SOURCES = ['calib-generate', 'calib-ids', 'calib-text'];
/** Mixed precision planned from sensitivities (src/cli/auto.ts): any of these routes there. */
const AUTO_FLAGS = [
  'auto-bits',
  'auto-kl',
  'candidates',
  'auto-ids',
  'auto-text',
  'auto-tokenizer',
  'auto-tokens',
  'sensitivity-cache',
  'save-recipe',
];
/** Flags that refine the calibration data: given without a source (or a recipe that names one) they are refused. */
const CALIB_REFINES: Record<string, string[]> = {
  'calib-seed': ['calib-generate'],
  'calib-bos': ['calib-generate'],
  'calib-samples': ['calib-ids', 'calib-text'],
  tokenizer: ['calib-text'],
  'calib-len': CALIB_SOURCES,
};
const NOTHING_TO_DO =
  'nothing to do: give a method (--int8, --int4, --prune S, --nm N:M, --kmeans K, --fp16, --gptq, ' +
  '--sparsegpt S, --wanda S, --awq, --llm-int8 or --w8a8), structured pruning (--heads F, --neurons F, ' +
  '--blocks N) or --recipe FILE.';
const HOW_TO_CALIBRATE = 'give --calib-generate N, --calib-ids F or --calib-text F --tokenizer D';

/**
 * A numeric flag that sets a method option (`--block` → int4.blockSize), checked against the method's
 * own schema so the flag and the recipe accept exactly the same values.
 */
function methodNumber(
  args: ParsedArgs,
  flag: string,
  methodId: string,
  key: string,
  fallback: number,
): number {
  const raw = args.flags.get(flag);
  if (raw === undefined) return fallback;
  const method = getMethod(methodId);
  const spec = method.options.find((o) => o.key === key);
  const allowed =
    spec?.type === 'number'
      ? spec.choices
        ? `one of ${spec.choices.join(', ')}`
        : `${spec.step >= 1 ? 'a whole number' : 'a number'} from ${spec.min} to ${spec.max}`
      : 'a number';
  const n = typeof raw === 'string' ? parseNumber(raw) : undefined;
  if (n === undefined) throw new UsageError(`--${flag} must be ${allowed}, got '${raw}'.`);
  try {
    resolveOptions(method, { [key]: n });
  } catch (e) {
    throw new UsageError(`--${flag} ${raw}: ${(e as Error).message}`);
  }
  return n;
}

/** The structured pruning the flags ask for (--heads, --neurons, --blocks and their refinements), or null. */
export function structureFromFlags(args: ParsedArgs): StructureSettings | null {
  const given = STRUCTURE_FLAGS.filter((f) => args.flags.has(f));
  if (!given.length) {
    const stray = STRUCTURE_REFINES.find((f) => args.flags.has(f));
    if (stray)
      throw new UsageError(
        `--${stray} applies to --heads, --neurons or --blocks, which is not given; add one or drop --${stray}.`,
      );
    return null;
  }
  const share = (flag: string) => {
    const raw = args.flags.get(flag);
    if (raw === undefined) return undefined;
    const n = typeof raw === 'string' ? parseNumber(raw) : undefined;
    if (n === undefined || n < 0 || n >= 1)
      throw new UsageError(
        `--${flag} is the share to remove, from 0 to below 1 (one per block stays), got '${raw}'.`,
      );
    return n;
  };
  const settings: Record<string, unknown> = {
    heads: share('heads'),
    neurons: share('neurons'),
    blocks: args.flags.has('blocks') ? integerFlag(args, 'blocks', 0, 0, 1_000_000) : undefined,
    importance: args.flags.get('importance'),
    scope: args.flags.get('structure-scope'),
    multiple: args.flags.has('multiple') ? integerFlag(args, 'multiple', 1, 1, 1_000_000) : undefined,
  };
  for (const key of Object.keys(settings)) if (settings[key] === undefined) delete settings[key];
  try {
    return resolveStructureSettings(settings);
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^Invalid recipe: structure\.?/, '--'));
  }
}

/** The recipe the shorthand flags describe: pruning first, then the one storage format. */
export function recipeFromFlags(args: ParsedArgs, structure = false): RecipeStep[] {
  for (const [flag, methods] of Object.entries(REFINES))
    if (args.flags.has(flag) && !methods.some((m) => args.flags.has(m)))
      throw new UsageError(
        `--${flag} applies to ${methods.map((m) => `--${m}`).join(' or ')}, which is not given; add it or drop --${flag}.`,
      );
  const pruners = ['prune', 'nm', 'sparsegpt', 'wanda'].filter((f) => args.flags.has(f));
  if (pruners.length > 1)
    throw new UsageError(
      `${pruners.map((f) => `--${f}`).join(' and ')} are each a pruning step: choose one (a --recipe chains more).`,
    );
  const select: TensorSelector = {};
  const include = args.flags.get('include');
  const exclude = args.flags.get('exclude');
  if (typeof include === 'string') select.include = include.split(',');
  if (typeof exclude === 'string') select.exclude = exclude.split(',');
  if (args.flags.has('embeddings')) select.embeddings = true;
  if (args.flags.has('lm-head')) select.lmHead = true;
  const symmetric = !args.flags.has('asym');
  const steps: RecipeStep[] = [];
  const nm = args.flags.get('nm');
  if (typeof nm === 'string') {
    const patterns = ['2:4', '4:8'];
    if (!patterns.includes(nm)) throw new UsageError(`--nm must be ${patterns.join(' or ')}, got '${nm}'.`);
    steps.push({ method: 'prune', options: { pattern: nm }, select });
  } else if (args.flags.has('prune')) {
    const options: RecipeStep['options'] = {
      sparsity: methodNumber(args, 'prune', 'prune', 'sparsity', 0.5),
      scope: args.flags.has('global') ? 'global' : 'tensor',
    };
    steps.push({ method: 'prune', options, select });
  }
  for (const flag of ['sparsegpt', 'wanda']) {
    const raw = args.flags.get(flag);
    if (typeof raw !== 'string') continue;
    if (raw.includes(':')) {
      const patterns = ['2:4', '4:8'];
      if (!patterns.includes(raw))
        throw new UsageError(
          `--${flag} takes a sparsity (0…0.99) or ${patterns.join(' or ')}, got '${raw}'.`,
        );
      steps.push({ method: flag, options: { pattern: raw }, select });
    } else {
      steps.push({
        method: flag,
        options: { sparsity: methodNumber(args, flag, flag, 'sparsity', 0.5) },
        select,
      });
    }
  }
  const encoders: RecipeStep[] = [];
  if (args.flags.has('awq')) {
    // --awq: int4 block-wise on activation-aware scales; with --gptq, GPTQ rounds the scaled weights
    const other = ['int8', 'kmeans', 'fp16', 'per-tensor'].find((f) => args.flags.has(f));
    if (other) throw new UsageError(`--awq quantizes to int4 block-wise: it can't go with --${other}.`);
    const format = args.flags.get('format') ?? 'matmulnbits';
    if (format !== 'matmulnbits' && format !== 'dequantize' && format !== 'dq')
      throw new UsageError(`--format must be matmulnbits or dequantize, got '${format}'.`);
    encoders.push({
      method: 'awq',
      options: {
        blockSize: methodNumber(args, 'block', 'awq', 'blockSize', 32),
        symmetric,
        format: format === 'matmulnbits' ? 'matmulnbits' : 'dequantize',
        quantizer: args.flags.has('gptq') ? 'gptq' : 'rtn',
      },
      select,
    });
  } else if (args.flags.has('gptq')) {
    // --gptq chooses how int4 / int8 codes are picked: int4 unless --int8 says otherwise
    const other = ['kmeans', 'fp16', 'per-tensor'].find((f) => args.flags.has(f));
    if (other)
      throw new UsageError(
        `--gptq quantizes to int4 (block-wise) or int8 (--int8, per channel): it can't go with --${other}.`,
      );
    const int8 = args.flags.has('int8');
    if (int8 && args.flags.has('int4'))
      throw new UsageError('--gptq quantizes to int4 or, with --int8, to int8: give one of --int4, --int8.');
    if (int8 && (args.flags.has('block') || args.flags.has('format')))
      throw new UsageError('--gptq --int8 is per output channel: drop --block / --format.');
    const format = args.flags.get('format') ?? 'matmulnbits';
    if (format !== 'matmulnbits' && format !== 'dequantize' && format !== 'dq')
      throw new UsageError(`--format must be matmulnbits or dequantize, got '${format}'.`);
    encoders.push({
      method: 'gptq',
      options: {
        bits: int8 ? '8' : '4',
        blockSize: methodNumber(args, 'block', 'gptq', 'blockSize', 32),
        symmetric,
        format: format === 'matmulnbits' ? 'matmulnbits' : 'dequantize',
      },
      select,
    });
  } else if (args.flags.has('int8'))
    encoders.push({
      method: 'int8',
      options: { granularity: args.flags.has('per-tensor') ? 'per-tensor' : 'per-channel', symmetric },
      select,
    });
  if (args.flags.has('int4') && !args.flags.has('gptq') && !args.flags.has('awq')) {
    const format = args.flags.get('format') ?? 'matmulnbits';
    if (format !== 'matmulnbits' && format !== 'dequantize' && format !== 'dq')
      throw new UsageError(`--format must be matmulnbits or dequantize, got '${format}'.`);
    encoders.push({
      method: 'int4',
      options: {
        blockSize: methodNumber(args, 'block', 'int4', 'blockSize', 32),
        symmetric,
        format: format === 'matmulnbits' ? 'matmulnbits' : 'dequantize',
      },
      select,
    });
  }
  if (args.flags.has('kmeans'))
    encoders.push({
      method: 'kmeans',
      options: {
        clusters: methodNumber(args, 'kmeans', 'kmeans', 'clusters', 16),
        perChannel: args.flags.has('per-channel'),
        export: args.flags.has('dense') ? 'dense' : 'palette',
      },
      select,
    });
  if (args.flags.has('fp16')) encoders.push({ method: 'fp16', select });
  if (args.flags.has('llm-int8'))
    encoders.push({
      method: 'llm-int8',
      options: {
        threshold: methodNumber(
          args,
          'outlier-threshold',
          'llm-int8',
          'threshold',
          DEFAULT_OUTLIER_THRESHOLD,
        ),
      },
      select,
    });
  // int8 weights and activations: a storage format of its own, after any pruning step
  if (args.flags.has('w8a8')) encoders.push({ method: 'w8a8', select });
  if (encoders.length > 1)
    throw new UsageError(
      'Choose one storage format (--int8, --int4, --kmeans, --fp16, --gptq, --awq, --llm-int8 or --w8a8); write a --recipe to chain more.',
    );
  steps.push(...encoders);
  if (steps.length === 0 && !structure) throw new UsageError(NOTHING_TO_DO);
  const selector = SELECT_FLAGS.find((f) => args.flags.has(f));
  if (steps.length === 0 && selector)
    throw new UsageError(`--${selector} selects the tensors of a method step, and none is given.`);
  return steps;
}

/** The steps to run: the --recipe file (alone), or the recipe the shorthand flags describe. */
function recipeFromArgs(args: ParsedArgs): ResolvedRecipe {
  const recipePath = args.flags.get('recipe');
  if (args.flags.has('copy')) {
    // --copy: no step, the model is rewritten as it is (byte-identical when nothing needs rewriting)
    const mixed = [
      'recipe',
      ...METHOD_FLAGS,
      ...SELECT_FLAGS,
      ...Object.keys(REFINES),
      ...CALIB_SOURCES,
      ...Object.keys(CALIB_REFINES),
      ...STRUCTURE_FLAGS,
      ...STRUCTURE_REFINES,
    ].find((f) => args.flags.has(f));
    if (mixed)
      throw new UsageError(
        `--copy rewrites the model unchanged: drop --${mixed}, or drop --copy to compress.`,
      );
    return { steps: [], calibration: null, structure: null };
  }
  if (typeof recipePath !== 'string') {
    const structure = structureFromFlags(args);
    const steps = recipeFromFlags(args, structure !== null);
    return { steps: steps.length ? resolveRecipe({ steps }) : [], calibration: null, structure };
  }
  const mixed = [
    ...METHOD_FLAGS,
    ...SELECT_FLAGS,
    ...Object.keys(REFINES),
    ...STRUCTURE_FLAGS,
    ...STRUCTURE_REFINES,
  ].find((f) => args.flags.has(f));
  if (mixed)
    throw new UsageError(
      `--recipe and --${mixed} can't be combined: put every step, with its select, in the recipe file.`,
    );
  return parseFullRecipeText(readTextFile(recipePath, '--recipe'));
}

/** A whole-number calibration flag, or undefined when it is not given. */
function optionalInteger(args: ParsedArgs, flag: string, min: number, max: number): number | undefined {
  return args.flags.has(flag) ? integerFlag(args, flag, 0, min, max) : undefined;
}

/** What the calibration flags ask for, checked against each other; the files are read later. */
interface CalibrationRequest {
  /** The recipe's settings overlaid with the flags' (the length may still depend on the model). */
  settings: CalibrationSettings;
  ids?: string;
  text?: { file: string; tokenizer: string };
}

/**
 * The calibration the command asks for: the flags' source and sizes over the recipe's settings, or
 * null when neither names any. A calibrated step without any, or calibration flags without a
 * calibrated step, is a usage error, found before the model is read.
 */
function calibrationFromArgs(args: ParsedArgs, recipe: ResolvedRecipe): CalibrationRequest | null {
  const given = CALIB_SOURCES.filter((f) => args.flags.has(f));
  if (given.length > 1)
    throw new UsageError(
      `${given.map((f) => `--${f}`).join(' and ')} are two sources of calibration data: choose one.`,
    );
  const flagSource = given[0]?.replace('calib-', '') as CalibrationSettings['source'] | undefined;
  const source = flagSource ?? recipe.calibration?.source;
  for (const [flag, sources] of Object.entries(CALIB_REFINES))
    if (args.flags.has(flag) && !(source && sources.includes(`calib-${source}`)))
      throw new UsageError(
        `--${flag} applies to ${sources.map((s) => `--${s}`).join(' or ')}, which is not given; add it or drop --${flag}.`,
      );
  const methods = calibratedMethods(recipe.steps);
  const importance = recipe.structure?.importance;
  if (importance === 'activation' || importance === 'taylor') methods.unshift(`${importance} importance`);
  if (!methods.length) {
    if (given.length)
      throw new UsageError(
        `--${given[0]} gives calibration data, and no step needs it: add --gptq, --awq, --sparsegpt S, --wanda S, --llm-int8, --w8a8 or --importance activation|taylor.`,
      );
    return null;
  }
  if (!source)
    throw new UsageError(
      `${methods.join(' and ')} need${methods.length > 1 ? '' : 's'} calibration data: ${HOW_TO_CALIBRATE}.`,
    );
  if (args.flags.has('calib-text') && !args.flags.has('tokenizer'))
    throw new UsageError(
      '--calib-text needs --tokenizer DIR_OR_JSON: a Hugging Face tokenizer.json, or the folder holding one. ' +
        'For a model without one, give --calib-ids FILE or --calib-generate N.',
    );
  const base = recipe.calibration?.source === source ? recipe.calibration : null;
  const settings = resolveCalibrationSettings({
    source,
    samples:
      optionalInteger(args, 'calib-generate', 1, 100_000) ??
      optionalInteger(args, 'calib-samples', 1, 100_000) ??
      base?.samples ??
      (source === 'generate' ? CALIBRATION_DEFAULTS.samples : 128),
    length: optionalInteger(args, 'calib-len', 2, 1_000_000) ?? base?.length,
    seed: optionalInteger(args, 'calib-seed', 0, 2 ** 32 - 1) ?? base?.seed,
    bos: optionalInteger(args, 'calib-bos', 0, 2 ** 31 - 1) ?? base?.bos,
    sequential: base?.sequential,
  });
  const ids = args.flags.get('calib-ids');
  const text = args.flags.get('calib-text');
  const tokenizer = args.flags.get('tokenizer');
  if (source === 'ids' && typeof ids !== 'string')
    throw new UsageError(`the recipe calibrates on token ids: give them with --calib-ids FILE.`);
  if (source === 'text' && typeof text !== 'string')
    throw new UsageError(
      `the recipe calibrates on text: give it with --calib-text FILE --tokenizer DIR_OR_JSON.`,
    );
  return {
    settings,
    ...(typeof ids === 'string' ? { ids } : {}),
    ...(typeof text === 'string' && typeof tokenizer === 'string' ? { text: { file: text, tokenizer } } : {}),
  };
}

/** Calibration progress on stderr, about every tenth of each phase, so a log stays short. */
function progressPrinter(captured: string): (p: CalibrationProgress) => void {
  const start = performance.now();
  let last = '';
  return (p) => {
    const tenth = Math.floor((p.done * 10) / p.total);
    const key = `${p.phase}:${tenth}`;
    if (key === last && p.done !== p.total) return;
    last = key;
    const what =
      p.phase === 'generate'
        ? 'generating sequences'
        : p.phase === 'gradients'
          ? 'gradients for Taylor importance (training engine)'
          : `capturing activations, ${captured}`;
    const seconds = ((performance.now() - start) / 1000).toFixed(1);
    process.stderr.write(`calibration: ${what} ${p.done}/${p.total} (${seconds} s)\n`);
  };
}

/** The calibration the request describes, with onnxruntime-node to run it on `model`. */
function calibrationSetup(
  path: string,
  model: OnnxModel,
  request: CalibrationRequest,
): { input: CalibrationInput; runtime: CalibrationRuntime } {
  const folders = [dirname(path), join(dirname(path), '..')];
  const config = readConfig(folders);
  // config.json's context, else the position table's: a longer window would fail inside onnxruntime
  const context = modelContext(model.graph, config);
  const bosFromConfig = config?.bos_token_id;
  if (request.settings.length !== undefined)
    checkContext(request.settings.length, context, `--calib-len ${request.settings.length}`);
  const settings = {
    ...request.settings,
    length:
      request.settings.length ??
      Math.min(DEFAULT_CALIBRATION_LENGTH, context?.positions ?? DEFAULT_CALIBRATION_LENGTH),
    // llama2.c models (stories260K) start at 1 and ship no config
    bos: request.settings.bos ?? (Number.isInteger(bosFromConfig) ? (bosFromConfig as number) : 1),
  };
  let data: number[][] | undefined;
  if (request.ids !== undefined) {
    data = parseIdsText(readTextFile(request.ids, '--calib-ids'));
    checkVocabulary(model, data, `--calib-ids ${request.ids}`);
  } else if (request.text) {
    const tokenizer = loadTokenizer(readTokenizerJson(request.text.tokenizer));
    data = [tokenizer.encode(readTextFile(request.text.file, '--calib-text'))];
    checkVocabulary(model, data, `--calib-text ${request.text.file}`);
  }
  const runtime = {
    createSession: async (bytes: Uint8Array) => {
      try {
        return await createNodeSession(bytes);
      } catch (e) {
        throw new ModelError(
          'unsupported',
          `onnxruntime could not load the model for calibration: ${(e as Error).message}`,
        );
      }
    },
    Tensor,
    inputs: summarizeInputs(model.graph),
  };
  return { input: { settings, data }, runtime };
}

/** The recipe's kernels over `workers` threads (the page's pool over worker_threads); one: in this thread. */
async function compressSteps(
  model: OnnxModel,
  steps: readonly ResolvedStep[],
  calibration: CalibrationStats | undefined,
  workers: number,
): Promise<CompressionResult> {
  if (workers <= 1) return compressModel(model, steps, { calibration });
  const pool = createNodePool(workers);
  try {
    return await compressModelInPool(model, steps, pool, { calibration });
  } finally {
    pool.close();
  }
}

/** Runs the calibration the request describes on onnxruntime-node: the statistics compressModel needs. */
async function runCalibration(
  path: string,
  model: OnnxModel,
  steps: Parameters<typeof calibrate>[1],
  request: CalibrationRequest,
): Promise<CalibrationStats> {
  const { input, runtime } = calibrationSetup(path, model, request);
  // sequential calibration counts layer groups; one capture on the original model counts sequences
  const captured = input.settings.sequential ? 'layer groups' : 'sequences';
  return calibrate(model, steps, input, runtime, { onProgress: progressPrinter(captured) });
}

function structureLine(r: StructureReport): string {
  return (
    `structure: heads ${r.headsBefore} -> ${r.headsAfter}, MLP neurons ${r.neuronsBefore} -> ${r.neuronsAfter}, ` +
    `blocks ${r.blocksBefore} -> ${r.blocksAfter}, parameters ${r.paramsBefore} -> ${r.paramsAfter}\n`
  );
}

/** Where -o points must be a file in an existing folder: found out before the compression runs, not after. */
export function checkOutputPlace(output: string): void {
  const folder = dirname(resolve(output));
  if (!existsSync(folder))
    throw new ModelError('invalid-argument', `-o ${output}: the folder ${folder} does not exist.`);
  if (!statSync(folder).isDirectory())
    throw new ModelError('invalid-argument', `-o ${output}: ${folder} is not a folder.`);
  if (existsSync(output) && statSync(output).isDirectory())
    throw new ModelError(
      'invalid-argument',
      `-o ${output} is a folder: name the .onnx file to write. (To write a model folder, end -o with /.)`,
    );
}

/** A file's identity (device + inode), or undefined when nothing is there. */
function fileIdentity(path: string): string | undefined {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** The path with symlinks resolved as far as it exists (an output file usually does not yet). */
function realPath(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    try {
      return join(realpathSync(dirname(resolve(path))), basename(path));
    } catch {
      return resolve(path);
    }
  }
}

/**
 * Refuses any output that is one of the inputs: the same path, the same real path (a symlink) or
 * the same file (a hard link: same device and inode), for the .onnx and its data file alike.
 */
export function checkOutputsAreNotInputs(outputs: string[], inputs: string[]): void {
  for (const output of outputs) {
    const id = fileIdentity(output);
    const real = realPath(output);
    for (const input of inputs) {
      const same =
        resolve(output) === resolve(input) ||
        real === realPath(input) ||
        (id !== undefined && id === fileIdentity(input));
      if (same)
        throw new ModelError(
          'invalid-argument',
          `Refusing to overwrite the source model: ${output} is ${resolve(output) === resolve(input) ? '' : 'the same file as '}` +
            `${input}, which compress reads and never writes. Choose another -o.`,
        );
    }
  }
}

/**
 * Writes each file to a temporary file in its folder, then renames them over their names: a
 * failure leaves no half-written output, and an existing file is replaced, never written through.
 */
export function writeFilesAtomically(files: { path: string; chunks: Uint8Array[] }[]): void {
  const temps: string[] = [];
  try {
    const staged = files.map(({ path, chunks }) => {
      const temp = join(
        dirname(resolve(path)),
        `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
      );
      temps.push(temp);
      const fd = openSync(temp, 'wx'); // exclusive: never follows or reuses an existing file
      try {
        for (const c of chunks) for (let at = 0; at < c.byteLength;) at += writeSync(fd, c, at);
      } finally {
        closeSync(fd);
      }
      return { temp, path };
    });
    for (const { temp, path } of staged) renameSync(temp, path);
  } catch (e) {
    for (const t of temps) rmSync(t, { force: true });
    if (e instanceof ModelError) throw e;
    const err = e as NodeJS.ErrnoException;
    throw new ModelError(
      'invalid-argument',
      `Could not write the output: ${err.code ?? ''} ${err.message}`.trim(),
    );
  }
}

function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : x > 0 ? 'inf' : '-inf';
}

export async function compressCommand(args: ParsedArgs, out: (s: string) => void): Promise<number> {
  // --auto-bits / --auto-kl: the recipe is planned from measured sensitivities (src/cli/auto.ts)
  if (AUTO_FLAGS.some((f) => args.flags.has(f))) {
    const mixed = [
      'recipe',
      'copy',
      'external-data',
      ...METHOD_FLAGS,
      ...SELECT_FLAGS,
      ...Object.keys(REFINES),
      ...STRUCTURE_FLAGS,
      ...STRUCTURE_REFINES,
      ...CALIB_SOURCES,
      ...Object.keys(CALIB_REFINES),
    ].find((f) => args.flags.has(f));
    if (mixed)
      throw new UsageError(
        `--${mixed} can't be combined with --auto-bits/--auto-kl, which plan every linear weight's storage themselves; ` +
          'to change the plan, save it with --save-recipe, edit it and run --recipe.',
      );
    return (await import('./auto.ts')).autoCompressCommand(args, out);
  }
  const given = args.flags.get('output');
  if (typeof given !== 'string')
    throw new UsageError('missing -o OUT.onnx: where to write the compressed model.');
  // the recipe and the output's place are checked before the model is read, so a mistake costs nothing
  const recipe = recipeFromArgs(args);
  if (recipe.distill)
    throw new ModelError(
      'invalid-recipe',
      'This recipe distils (its "distill" object, made in the page): compress writes no trained weights. ' +
        'Run compress with the steps before the first storage format, then `distill TEACHER STUDENT`, then compress the result with the rest.',
    );
  const steps = recipe.steps;
  const calibrationRequest = calibrationFromArgs(args, recipe);
  // -o DIR/ writes a transformers.js folder: onnx/model_q4.onnx (…), config, tokenizer, a model card
  const folderOut = isFolderOutput(given) ? resolve(given) : undefined;
  const output = folderOut ? folderOutputModel(given, steps) : given;
  if (!folderOut) checkOutputPlace(output);
  const modelLocation = resolveModelPath(args.positional[0], modelFileFlag(args));
  const path = modelLocation.path;
  const location = `${basename(output)}_data`;
  const dataOutput = join(dirname(resolve(output)), location);
  checkOutputsAreNotInputs(args.flags.has('external-data') ? [output, dataOutput] : [output], [path]);

  const sources = modelSources(path);
  const source = parseModel(sources.main, sources.external);
  const inputBytes = totalsFor(source, []).inputBytes;
  // structured pruning first: the steps (and their calibration) then work on the smaller model
  const pruned = recipe.structure
    ? await pruneStructure(
        source,
        recipe.structure,
        calibrationRequest && recipe.structure.importance !== 'magnitude'
          ? calibrationSetup(path, source, calibrationRequest)
          : undefined,
        { onProgress: progressPrinter('sequences for head/neuron importance') },
      )
    : null;
  const model = pruned?.model ?? source;
  // a source with external data is written with external data: its data file is an output too
  const wantExternal = args.flags.has('external-data') || model.external.size > 0;
  const outputs = wantExternal ? [output, dataOutput] : [output];
  checkOutputsAreNotInputs(outputs, sources.inputs());
  const calibration =
    calibrationRequest && calibratedMethods(steps).length
      ? await runCalibration(path, model, steps, calibrationRequest)
      : undefined;
  // checked before any work, whichever path the export takes
  const workers = integerFlag(args, 'workers', defaultWorkerCount(), 1, 256);
  let result: CompressionResult;
  let exportWarnings: string[];
  let outputBytes: number;
  let external: boolean;
  if (wantExternal) {
    // with external data the export streams: one weight at a time read, compressed, parked in a
    // spool; then the data file written tensor by tensor and the small .onnx last
    if (folderOut) makeFolderOutput(output);
    // each weight's kernels in the pool, one weight more in flight than it has workers (written in order)
    const pool = steps.length && workers > 1 ? createNodePool(workers) : undefined;
    const spool = fileSpool(output);
    try {
      const streamed = steps.length
        ? streamOutcomes(model, steps, {
            calibration,
            compressAll: (m, s) => compressModel(m, s, { calibration }),
            ...(pool ? { pool } : {}),
          })
        : {
            outcomes: [],
            result: () => ({ outcomes: [], reports: [], totals: totalsFor(model, []), warnings: [] }),
          };
      const done = await streamFilesAtomically(output, dataOutput, (sink) =>
        exportStreaming(model, streamed.outcomes, { externalData: { location }, spool, sink }),
      );
      result = streamed.result();
      exportWarnings = done.warnings;
      outputBytes = done.modelBytes + done.dataBytes;
    } finally {
      spool.close();
      pool?.close();
    }
    external = true;
    checkOutputsAreNotInputs(outputs, sources.inputs());
  } else {
    result = steps.length
      ? await compressSteps(model, steps, calibration, workers)
      : { outcomes: [], reports: [], totals: totalsFor(model, []), warnings: [] };
    const written = exportCompressed(model, result);
    exportWarnings = written.warnings;
    // files opened while compressing (weights read lazily) are inputs too
    checkOutputsAreNotInputs(outputs, sources.inputs());
    outputBytes = written.model.byteLength;
    external = false;
    if (folderOut) makeFolderOutput(output);
    writeFilesAtomically([{ path: output, chunks: [written.model] }]);
  }
  // what the recipe asked and what the export wrote differ (a format fallen back to another): say so
  const warnings = [...result.warnings, ...exportWarnings];
  const extras = folderOut
    ? writeFolderExtras(folderOut, modelLocation.configDirs, {
        source: modelLocation.folder ? basename(resolve(modelLocation.folder)) : basename(path),
        modelFile: basename(output),
        recipe,
        inputBytes,
        outputBytes,
        bitsPerWeight: result.totals.bitsPerWeight,
        tensors: result.reports.length,
        warnings,
        version: packageVersion(),
      })
    : [];

  if (args.flags.has('json')) {
    out(
      JSON.stringify({
        inputBytes,
        outputBytes,
        bitsPerWeight: result.totals.bitsPerWeight,
        sparsity: result.totals.sparsity,
        tensors: result.reports.map((r) => ({
          name: r.name,
          method: r.method,
          bitsPerWeight: r.bitsPerWeight,
          sparsity: r.sparsity,
          mse: r.mse,
          snrDb: Number.isFinite(r.snrDb) ? r.snrDb : null,
          maxAbsError: r.maxAbsError,
          ...(r.outlierChannels ? { outlierChannels: r.outlierChannels } : {}),
        })),
        warnings,
        ...(calibration
          ? { calibration: { sequences: calibration.sequences, tokens: calibration.tokens } }
          : {}),
        ...(pruned ? { structure: { ...pruned.report, importance: pruned.importance.kind } } : {}),
        ...(folderOut
          ? { folder: { path: folderOut, model: relative(folderOut, output), files: extras } }
          : {}),
      }) + '\n',
    );
    return 0;
  }
  out(
    `${'tensor'.padEnd(44)} ${'method'.padEnd(12)} ${'bits'.padStart(6)} ${'sparsity'.padStart(8)} ${'SNR dB'.padStart(7)}\n`,
  );
  for (const r of result.reports) {
    out(
      `${r.name.padEnd(44)} ${r.method.padEnd(12)} ${fmt(r.bitsPerWeight).padStart(6)} ${fmt(r.sparsity * 100, 1).padStart(7)}% ${fmt(r.snrDb, 1).padStart(7)}\n`,
    );
  }
  for (const w of warnings) out(`warning: ${w}\n`);
  if (pruned) out(structureLine(pruned.report));
  out(
    `${result.reports.length} tensors, ${fmt(result.totals.bitsPerWeight)} bits/weight; ` +
      `${formatBytes(inputBytes)} -> ${formatBytes(outputBytes)} written to ${output}` +
      (external ? ` (+ ${location})` : '') +
      '\n',
  );
  if (folderOut) out(`folder ${folderOut}: ${relative(folderOut, output)}, ${extras.join(', ')}\n`);
  return 0;
}
