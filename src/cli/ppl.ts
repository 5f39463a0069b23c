import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ModelError, isModelError } from '../core/errors.ts';
import { parseModel } from '../core/onnx/model.ts';
import { summarizeInputs } from '../core/summary.ts';
import { evaluatePerplexity } from '../core/eval/perplexity.ts';
import { loadTokenizer, parseIdsText } from '../core/tokenizer.ts';
import { createNodeSession, Tensor } from '../runtime/ort-node.ts';
import { UsageError, integerFlag, readTextFile, type ParsedArgs } from './args.ts';
import { fileIn, modelFileFlag, modelSources, resolveModelPath, type ModelLocation } from './files.ts';
import { contextFromConfig } from '../core/eval/config.ts';
import { pplAgainstBase } from './ppl-compare.ts';
import { checkContext, modelContext } from '../core/eval/context.ts';

/** The context a model was trained for, from a config.json beside it (HF names), if there is one. */
export function configContext(paths: string[]): number | undefined {
  for (const p of paths) {
    const file = existsSync(p) && statSync(p).isDirectory() ? join(p, 'config.json') : p;
    if (!existsSync(file)) continue;
    try {
      const n = contextFromConfig(JSON.parse(readFileSync(file, 'utf8')));
      if (n !== undefined) return n;
    } catch {
      // not a usable config: fall back to the default context
    }
  }
  return undefined;
}

/** The first readable config.json among `paths` (folders or files), as an object; undefined if none. */
export function readConfig(paths: string[]): Record<string, unknown> | undefined {
  for (const p of paths) {
    const file = existsSync(p) && statSync(p).isDirectory() ? join(p, 'config.json') : p;
    if (!existsSync(file) || statSync(file).isDirectory()) continue;
    try {
      const config: unknown = JSON.parse(readFileSync(file, 'utf8'));
      if (typeof config === 'object' && config !== null) return config as Record<string, unknown>;
    } catch {
      // not a usable config: the caller's defaults apply
    }
  }
  return undefined;
}

/** onnxruntime's own errors (an op it lacks, a shape it refuses) are about the model: typed, with what was being done. */
export async function onnxruntime<T>(doing: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (isModelError(e)) throw e;
    throw new ModelError('unsupported', `onnxruntime could not ${doing}: ${(e as Error).message}`);
  }
}

export function readTokenizerJson(path: string): unknown {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, 'tokenizer.json') : path;
  if (!existsSync(file)) throw new ModelError('invalid-argument', `No tokenizer.json at ${path}.`);
  try {
    return JSON.parse(readTextFile(file, '--tokenizer'));
  } catch (e) {
    if (isModelError(e)) throw e;
    throw new ModelError('invalid-argument', `--tokenizer ${file} is not JSON (${(e as Error).message}).`);
  }
}

/**
 * Which text to score: --text with its --tokenizer (by default the model folder's tokenizer.json),
 * or pre-tokenized --ids; anything else is a usage error.
 */
function textSource(
  args: ParsedArgs,
  location: ModelLocation,
): { ids: string } | { text: string; tokenizer: string } {
  const text = args.flags.get('text');
  const ids = args.flags.get('ids');
  const tokenizer = args.flags.get('tokenizer');
  if (typeof ids === 'string') {
    if (typeof text === 'string')
      throw new UsageError('--text and --ids both name a text to score: give one of them.');
    if (typeof tokenizer === 'string')
      throw new UsageError('--tokenizer is only read with --text; the ids in --ids are already tokens.');
    return { ids };
  }
  if (typeof text === 'string') {
    if (typeof tokenizer === 'string') return { text, tokenizer };
    // a model folder carries its tokenizer
    const own = location.folder ? fileIn([location.folder], 'tokenizer.json') : undefined;
    if (own) return { text, tokenizer: own };
    throw new UsageError(
      "--text needs --tokenizer DIR_OR_JSON: a Hugging Face tokenizer.json, or the folder holding one (the model's own folder, say). " +
        'For a model without one, give pre-tokenized ids with --ids FILE instead.',
    );
  }
  throw new UsageError(
    typeof tokenizer === 'string'
      ? 'missing --text FILE: the text to score with that --tokenizer (or --ids FILE, pre-tokenized).'
      : 'nothing to score: give --text FILE with --tokenizer DIR_OR_JSON, or --ids FILE (pre-tokenized ids, one sequence per line, or a JSON array of arrays).',
  );
}

/** A folder given as is; a file's folder. */
function folderOf(path: string): string {
  return existsSync(path) && statSync(path).isDirectory() ? path : dirname(path);
}

/** Without --ctx and without a declared context, windows are this long. */
const DEFAULT_CTX = 512;

export async function pplCommand(args: ParsedArgs, out: (s: string) => void): Promise<number> {
  const location = resolveModelPath(args.positional[0], modelFileFlag(args));
  const path = location.path;
  const source = textSource(args, location);
  const tokenizerPath = 'tokenizer' in source ? source.tokenizer : undefined;
  // flags are checked before the model is read
  const givenCtx = args.flags.has('ctx') ? integerFlag(args, 'ctx', DEFAULT_CTX, 2) : undefined;
  if (givenCtx !== undefined) integerFlag(args, 'stride', 1, 1, givenCtx);
  else integerFlag(args, 'stride', 1, 1);

  const { main, external } = modelSources(path);
  const model = parseModel(main, external);
  const inputs = summarizeInputs(model.graph);
  // the model's context: config.json's (beside the model, or the tokenizer's folder), else its position table
  const config = readConfig([...location.configDirs, ...(tokenizerPath ? [folderOf(tokenizerPath)] : [])]);
  const context = modelContext(model.graph, config);
  if (givenCtx !== undefined) checkContext(givenCtx, context, `--ctx ${givenCtx}`);
  const ctx = givenCtx ?? context?.positions ?? DEFAULT_CTX;
  const stride = integerFlag(args, 'stride', Math.max(1, Math.floor(ctx / 2)), 1, ctx);

  let sequences: number[][];
  if ('ids' in source) {
    sequences = parseIdsText(readTextFile(source.ids, '--ids'));
  } else {
    const tokenizer = loadTokenizer(readTokenizerJson(source.tokenizer));
    sequences = [tokenizer.encode(readTextFile(source.text, '--text'))];
  }
  const basePath = args.flags.get('base');
  if (typeof basePath === 'string')
    return pplAgainstBase(
      path,
      resolveModelPath(basePath).path,
      sequences,
      ctx,
      stride,
      args.flags.has('json'),
      out,
    );

  const session = await onnxruntime('load the model', () =>
    createNodeSession(model.external.size ? path : main.read(0, main.size)),
  );
  try {
    const result = await onnxruntime('run the model', () =>
      evaluatePerplexity(session, Tensor, inputs, sequences, { ctx, stride }),
    );
    if (args.flags.has('json')) {
      out(
        JSON.stringify({
          perplexity: result.perplexity,
          tokens: result.tokens,
          tokensPerSecond: result.tokensPerSecond,
          nll: result.nll,
          ctx,
          stride,
          sequences: sequences.length,
        }) + '\n',
      );
    } else {
      out(
        `perplexity ${result.perplexity.toFixed(4)} over ${result.tokens} tokens ` +
          `(ctx ${ctx}, stride ${stride}, ${sequences.length} sequence${sequences.length > 1 ? 's' : ''}; ` +
          `${Math.round(result.tokensPerSecond)} tokens/s)\n`,
      );
    }
    return 0;
  } finally {
    await session.release();
  }
}
