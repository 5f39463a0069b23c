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
import { basename, dirname, join, resolve } from 'node:path';
import { ModelError, formatBytes } from '../core/errors.ts';
import { parseModel } from '../core/onnx/model.ts';
import { parseRecipeText, resolveRecipe, type RecipeStep } from '../core/compress/recipe.ts';
import { compressModel, totalsFor, type CompressionResult } from '../core/compress/pipeline.ts';
import { exportCompressed } from '../core/compress/export.ts';
import type { TensorSelector } from '../core/compress/select.ts';
import { UsageError, parseNumber, readTextFile, type ParsedArgs } from './args.ts';
import { getMethod, resolveOptions } from '../methods/registry.ts';
import { modelSources } from './files.ts';

/** Flags that refine one method: given without it they would be ignored, so they are refused. */
const REFINES: Record<string, string[]> = {
  global: ['prune'],
  'per-tensor': ['int8'],
  block: ['int4'],
  format: ['int4'],
  asym: ['int8', 'int4'],
  'per-channel': ['kmeans'],
  dense: ['kmeans'],
};
const METHOD_FLAGS = ['prune', 'nm', 'int8', 'int4', 'kmeans', 'fp16'];
const SELECT_FLAGS = ['include', 'exclude', 'embeddings', 'lm-head'];
const NOTHING_TO_DO =
  'nothing to do: give a method (--int8, --int4, --prune S, --nm N:M, --kmeans K or --fp16) or --recipe FILE.';

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

/** The recipe the shorthand flags describe: pruning first, then the one storage format. */
export function recipeFromFlags(args: ParsedArgs): RecipeStep[] {
  for (const [flag, methods] of Object.entries(REFINES))
    if (args.flags.has(flag) && !methods.some((m) => args.flags.has(m)))
      throw new UsageError(
        `--${flag} applies to ${methods.map((m) => `--${m}`).join(' or ')}, which is not given; add it or drop --${flag}.`,
      );
  if (args.flags.has('prune') && args.flags.has('nm'))
    throw new UsageError('--prune S and --nm N:M are two pruning patterns: choose one.');
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
  const encoders: RecipeStep[] = [];
  if (args.flags.has('int8'))
    encoders.push({
      method: 'int8',
      options: { granularity: args.flags.has('per-tensor') ? 'per-tensor' : 'per-channel', symmetric },
      select,
    });
  if (args.flags.has('int4')) {
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
  if (encoders.length > 1)
    throw new UsageError(
      'Choose one storage format (--int8, --int4, --kmeans or --fp16); write a --recipe to chain more.',
    );
  steps.push(...encoders);
  if (steps.length === 0) throw new UsageError(NOTHING_TO_DO);
  return steps;
}

/** The steps to run: the --recipe file (alone), or the recipe the shorthand flags describe. */
function stepsFromArgs(args: ParsedArgs) {
  const recipePath = args.flags.get('recipe');
  if (args.flags.has('copy')) {
    // --copy: no step, the model is rewritten as it is (byte-identical when nothing needs rewriting)
    const mixed = ['recipe', ...METHOD_FLAGS, ...SELECT_FLAGS, ...Object.keys(REFINES)].find((f) =>
      args.flags.has(f),
    );
    if (mixed)
      throw new UsageError(
        `--copy rewrites the model unchanged: drop --${mixed}, or drop --copy to compress.`,
      );
    return [];
  }
  if (typeof recipePath !== 'string') return resolveRecipe({ steps: recipeFromFlags(args) });
  const mixed = [...METHOD_FLAGS, ...SELECT_FLAGS, ...Object.keys(REFINES)].find((f) => args.flags.has(f));
  if (mixed)
    throw new UsageError(
      `--recipe and --${mixed} can't be combined: put every step, with its select, in the recipe file.`,
    );
  return parseRecipeText(readTextFile(recipePath, '--recipe'));
}

/** Where -o points must be a file in an existing folder: found out before the compression runs, not after. */
function checkOutputPlace(output: string): void {
  const folder = dirname(resolve(output));
  if (!existsSync(folder))
    throw new ModelError('invalid-argument', `-o ${output}: the folder ${folder} does not exist.`);
  if (!statSync(folder).isDirectory())
    throw new ModelError('invalid-argument', `-o ${output}: ${folder} is not a folder.`);
  if (existsSync(output) && statSync(output).isDirectory())
    throw new ModelError('invalid-argument', `-o ${output} is a folder: name the .onnx file to write.`);
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
function checkOutputsAreNotInputs(outputs: string[], inputs: string[]): void {
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
function writeFilesAtomically(files: { path: string; chunks: Uint8Array[] }[]): void {
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
  const path = args.positional[0];
  const output = args.flags.get('output');
  if (typeof output !== 'string')
    throw new UsageError('missing -o OUT.onnx: where to write the compressed model.');
  // the recipe and the output's place are checked before the model is read, so a mistake costs nothing
  const steps = stepsFromArgs(args);
  checkOutputPlace(output);
  const location = `${basename(output)}_data`;
  const dataOutput = join(dirname(resolve(output)), location);
  checkOutputsAreNotInputs(args.flags.has('external-data') ? [output, dataOutput] : [output], [path]);

  const sources = modelSources(path);
  const model = parseModel(sources.main, sources.external);
  // a source with external data is written with external data: its data file is an output too
  const wantExternal = args.flags.has('external-data') || model.external.size > 0;
  const outputs = wantExternal ? [output, dataOutput] : [output];
  checkOutputsAreNotInputs(outputs, sources.inputs());
  const result: CompressionResult = steps.length
    ? compressModel(model, steps)
    : { outcomes: [], reports: [], totals: totalsFor(model, []), warnings: [] };
  const written = exportCompressed(model, result, wantExternal ? { externalData: { location } } : {});
  // files opened while compressing (weights read lazily) are inputs too
  checkOutputsAreNotInputs(outputs, sources.inputs());

  // the data file goes out chunk by chunk, never joined in memory; the .onnx is renamed into place last
  const files = [{ path: output, chunks: [written.model] }];
  let outputBytes = written.model.byteLength;
  if (written.externalData) {
    files.unshift({ path: dataOutput, chunks: written.externalData.chunks });
    outputBytes += written.externalData.size;
  }
  writeFilesAtomically(files);

  if (args.flags.has('json')) {
    out(
      JSON.stringify({
        inputBytes: result.totals.inputBytes,
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
        })),
        warnings: result.warnings,
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
  for (const w of result.warnings) out(`warning: ${w}\n`);
  out(
    `${result.reports.length} tensors, ${fmt(result.totals.bitsPerWeight)} bits/weight; ` +
      `${formatBytes(result.totals.inputBytes)} -> ${formatBytes(outputBytes)} written to ${output}` +
      (written.externalData ? ` (+ ${location})` : '') +
      '\n',
  );
  return 0;
}
