import { closeSync, existsSync, openSync, readFileSync, realpathSync, writeSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { ModelError, formatBytes } from '../core/errors.ts';
import { parseModel } from '../core/onnx/model.ts';
import { parseRecipeText, resolveRecipe, type RecipeStep } from '../core/compress/recipe.ts';
import { compressModel } from '../core/compress/pipeline.ts';
import { exportCompressed } from '../core/compress/export.ts';
import type { TensorSelector } from '../core/compress/select.ts';
import { numberFlag, parseArgs, type ParsedArgs } from './args.ts';
import { modelSources } from './files.ts';

const USAGE =
  'usage: compression-studio compress MODEL.onnx (--recipe RECIPE.json | --prune S [--global] [--nm N:M] | ' +
  '--int8 [--per-tensor] | --int4 [--block 32] [--format matmulnbits|dequantize] | --kmeans K [--per-channel] [--dense] | --fp16) ' +
  '[--asym] [--include PATTERN] [--exclude PATTERN] [--embeddings] [--lm-head] [--external-data] -o OUT.onnx [--json]';

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

function sameFile(a: string, b: string): boolean {
  if (resolve(a) === resolve(b)) return true;
  return existsSync(b) && realpathSync(a) === realpathSync(b);
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
  if (sameFile(path, output))
    throw new ModelError(
      'invalid-argument',
      `Refusing to overwrite the source model ${path}: choose another -o.`,
    );

  const recipePath = args.flags.get('recipe');
  const steps =
    typeof recipePath === 'string'
      ? parseRecipeText(readFileSync(recipePath, 'utf8'))
      : resolveRecipe({ steps: recipeFromFlags(args) });

  const { main, external } = modelSources(path);
  const model = parseModel(main, external);
  const result = compressModel(model, steps);
  const wantExternal = args.flags.has('external-data') || external.length > 0;
  const location = `${basename(output)}_data`;
  const written = exportCompressed(model, result, wantExternal ? { externalData: { location } } : {});

  // stream the file out piece by piece: the data file is written chunk by chunk, never joined in memory
  const writeAll = (file: string, chunks: Uint8Array[]) => {
    const fd = openSync(file, 'w');
    try {
      for (const c of chunks) writeSync(fd, c);
    } finally {
      closeSync(fd);
    }
  };
  writeAll(output, [written.model]);
  let outputBytes = written.model.byteLength;
  if (written.externalData) {
    writeAll(resolve(output, '..', location), written.externalData.chunks);
    outputBytes += written.externalData.size;
  }

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
