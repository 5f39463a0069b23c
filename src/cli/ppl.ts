import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ModelError } from '../core/errors.ts';
import { parseModel } from '../core/onnx/model.ts';
import { summarizeInputs } from '../core/summary.ts';
import { evaluatePerplexity } from '../core/eval/perplexity.ts';
import { loadTokenizer, parseIdsText } from '../core/tokenizer.ts';
import { createNodeSession, Tensor } from '../runtime/ort-node.ts';
import { numberFlag, parseArgs } from './args.ts';
import { modelSources } from './files.ts';
import { contextFromConfig } from '../core/eval/config.ts';

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

function readTokenizerJson(path: string): unknown {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, 'tokenizer.json') : path;
  if (!existsSync(file)) throw new ModelError('invalid-argument', `No tokenizer.json at ${path}.`);
  return JSON.parse(readFileSync(file, 'utf8'));
}

export async function pplCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const args = parseArgs(argv, ['text', 'tokenizer', 'ids', 'ctx', 'stride']);
  const path = args.positional[0];
  const textPath = args.flags.get('text');
  const idsPath = args.flags.get('ids');
  const tokenizerPath = args.flags.get('tokenizer');
  if (
    !path ||
    !(typeof idsPath === 'string' || (typeof textPath === 'string' && typeof tokenizerPath === 'string'))
  ) {
    throw new ModelError(
      'invalid-argument',
      'usage: compression-studio ppl MODEL.onnx (--text FILE --tokenizer DIR_OR_JSON | --ids FILE) [--ctx N] [--stride N] [--json]',
    );
  }
  const { main, external } = modelSources(path);
  const model = parseModel(main, external);
  const inputs = summarizeInputs(model.graph);

  let sequences: number[][];
  if (typeof idsPath === 'string') {
    sequences = parseIdsText(readFileSync(idsPath, 'utf8'));
  } else {
    const tokenizer = loadTokenizer(readTokenizerJson(tokenizerPath as string));
    sequences = [tokenizer.encode(readFileSync(textPath as string, 'utf8'))];
  }
  const configCtx = configContext([
    dirname(path),
    join(dirname(path), '..'),
    ...(typeof tokenizerPath === 'string' ? [tokenizerPath, dirname(tokenizerPath)] : []),
  ]);
  const ctx = numberFlag(args, 'ctx', configCtx ?? 512);
  const stride = numberFlag(args, 'stride', Math.max(1, Math.floor(ctx / 2)));

  const session = await createNodeSession(external.length ? path : main.read(0, main.size));
  try {
    const result = await evaluatePerplexity(session, Tensor, inputs, sequences, { ctx, stride });
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
