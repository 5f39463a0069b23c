import {
  closeSync,
  openSync,
  readFileSync,
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
import { numberFlag, parseArgs, type ParsedArgs } from './args.ts';
import { modelSources } from './files.ts';

const USAGE =
  'usage: compression-studio compress MODEL.onnx (--recipe RECIPE.json | --prune S [--global] [--nm N:M] | ' +
  '--int8 [--per-tensor] | --int4 [--block 32] [--format matmulnbits|dequantize] | --kmeans K [--per-channel] [--dense] | --fp16) ' +
  '[--asym] [--include PATTERN] [--exclude PATTERN] [--embeddings] [--lm-head] [--external-data] [--copy] -o OUT.onnx [--json]';

/** The recipe the shorthand flags describe: pruning first, then the one storage format. */
export function recipeFromFlags(args: ParsedArgs): RecipeStep[] {
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
  if (args.flags.has('prune') || typeof nm === 'string') {
    const options: RecipeStep['options'] = {};
    if (typeof nm === 'string') options.pattern = nm;
    else {
      options.sparsity = numberFlag(args, 'prune', 0.5);
      options.scope = args.flags.has('global') ? 'global' : 'tensor';
    }
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
    const format = args.flags.get('format');
    encoders.push({
      method: 'int4',
      options: {
        blockSize: numberFlag(args, 'block', 32),
        symmetric,
        format: format === 'dequantize' || format === 'dq' ? 'dequantize' : 'matmulnbits',
      },
      select,
    });
  }
  if (args.flags.has('kmeans'))
    encoders.push({
      method: 'kmeans',
      options: {
        clusters: numberFlag(args, 'kmeans', 16),
        perChannel: args.flags.has('per-channel'),
        export: args.flags.has('dense') ? 'dense' : 'palette',
      },
      select,
    });
  if (args.flags.has('fp16')) encoders.push({ method: 'fp16', select });
  if (encoders.length > 1)
    throw new ModelError(
      'invalid-argument',
      'Choose one storage format (--int8, --int4, --kmeans or --fp16); write a --recipe to chain more.',
    );
  steps.push(...encoders);
  return steps;
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

/** The output's folder must exist and be a folder, and the output must not be one, before any work. */
function checkOutputPath(output: string): void {
  const dir = dirname(resolve(output));
  let st;
  try {
    st = statSync(dir);
  } catch {
    throw new ModelError('invalid-argument', `The output folder ${dir} does not exist: create it first.`);
  }
  if (!st.isDirectory())
    throw new ModelError('invalid-argument', `${dir} is not a folder: -o needs a folder to write into.`);
  try {
    if (statSync(output).isDirectory())
      throw new ModelError('invalid-argument', `${output} is a folder: -o names the .onnx file to write.`);
  } catch (e) {
    if (e instanceof ModelError) throw e;
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

export async function compressCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const args = parseArgs(argv, [
    'recipe',
    'o',
    'output',
    'prune',
    'nm',
    'block',
    'format',
    'kmeans',
    'include',
    'exclude',
  ]);
  const path = args.positional[0];
  const output = args.flags.get('o') ?? args.flags.get('output');
  if (!path || typeof output !== 'string') throw new ModelError('invalid-argument', USAGE);
  checkOutputPath(output);
  const location = `${basename(output)}_data`;
  const dataOutput = join(dirname(resolve(output)), location);
  checkOutputsAreNotInputs(args.flags.has('external-data') ? [output, dataOutput] : [output], [path]);

  const recipePath = args.flags.get('recipe');
  // --copy: no step, the model is rewritten as it is (byte-identical when it has no external data)
  if (args.flags.has('copy') && (typeof recipePath === 'string' || recipeFromFlags(args).length > 0))
    throw new ModelError(
      'invalid-argument',
      '--copy rewrites the model unchanged: drop --recipe and the method flags, or drop --copy.',
    );
  const steps = args.flags.has('copy')
    ? []
    : typeof recipePath === 'string'
      ? parseRecipeText(readFileSync(recipePath, 'utf8'))
      : resolveRecipe({ steps: recipeFromFlags(args) });

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
