/**
 * `compress MODEL --auto-bits B | --auto-kl K [--candidates …] -o OUT`: per-tensor sensitivity (KL of
 * compressing one tensor alone, on a short slice, against the original), a mixed-precision plan
 * under the budget, and the model compressed with it. The plan is an ordinary recipe (printed with
 * --json, written with --save-recipe) that `compress --recipe` reproduces.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ModelError } from '../core/errors.ts';
import { parseModel, type OnnxModel } from '../core/onnx/model.ts';
import { summarizeInputs } from '../core/summary.ts';
import { loadTokenizer, parseIdsText } from '../core/tokenizer.ts';
import { compressModel } from '../core/compress/pipeline.ts';
import { exportCompressed } from '../core/compress/export.ts';
import { resolveRecipe } from '../core/compress/recipe.ts';
import {
  DEFAULT_CANDIDATES,
  measureSensitivity,
  parseCandidates,
  planMixedPrecision,
  type SensitivityCache,
  type TensorSensitivity,
} from '../core/compress/auto.ts';
import { ReferenceLogits } from '../core/eval/compare.ts';
import { firstTokens, trialKl } from '../core/compress/sensitivity.ts';
import { generateCalibrationSequences } from '../core/calibrate/generate.ts';
import { createNodeSession, NODE_RUNTIME, Tensor } from '../runtime/ort-node.ts';
import { UsageError, integerFlag, readTextFile, type ParsedArgs } from './args.ts';
import { modelSources } from './files.ts';
import { configContext, onnxruntime, readConfig, readTokenizerJson } from './ppl.ts';
import { checkOutputPlace, checkOutputsAreNotInputs, writeFilesAtomically } from './compress.ts';

function numberFlag(args: ParsedArgs, flag: string, min: number, max: number): number | undefined {
  const v = args.flags.get(flag);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isFinite(n) || n < min || n > max)
    throw new UsageError(`--${flag} must be a number from ${min} to ${max}, got ${JSON.stringify(v)}.`);
  return n;
}

interface FileCache extends SensitivityCache {
  samples(key: string): number[][] | undefined;
  keepSamples(key: string, sequences: number[][]): void;
}

/** A JSON file of measured KLs (and sampled slices), read once and written after each new entry. */
function fileCache(path: string): FileCache {
  let data: Record<string, unknown> = {};
  try {
    if (existsSync(path)) data = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch {
    data = {}; // an unreadable cache is rebuilt
  }
  const put = (k: string, v: unknown) => {
    data[k] = v;
    writeFileSync(path, JSON.stringify(data));
  };
  return {
    get: (k) => (typeof data[k] === 'number' ? data[k] : undefined),
    set: put,
    samples: (k) => (Array.isArray(data[k]) ? (data[k] as number[][]) : undefined),
    keepSamples: put,
  };
}

/** The sensitivity slice: --auto-ids, --auto-text with --auto-tokenizer, else sequences the model samples from BOS. */
async function sliceSequences(
  args: ParsedArgs,
  path: string,
  model: OnnxModel,
  session: Awaited<ReturnType<typeof createNodeSession>>,
  ctx: number,
  tokens: number,
  modelHash: string,
  cache: FileCache,
): Promise<{ sequences: number[][]; source: string }> {
  const ids = args.flags.get('auto-ids');
  const text = args.flags.get('auto-text');
  const tokenizer = args.flags.get('auto-tokenizer');
  let sequences: number[][];
  let source: string;
  if (typeof ids === 'string') {
    if (typeof text === 'string') throw new UsageError('--auto-ids and --auto-text: give one of them.');
    sequences = parseIdsText(readTextFile(ids, '--auto-ids'));
    source = ids;
  } else if (typeof text === 'string') {
    if (typeof tokenizer !== 'string')
      throw new UsageError(
        '--auto-text needs --auto-tokenizer DIR_OR_JSON (a tokenizer.json or its folder).',
      );
    sequences = [loadTokenizer(readTokenizerJson(tokenizer)).encode(readTextFile(text, '--auto-text'))];
    source = text;
  } else {
    // no text: the model's own samples from BOS (seed 0), as calibration does for a model without a
    // tokenizer; kept in the cache beside the KLs, since sampling token by token is the slow part
    const config = readConfig([dirname(path), join(dirname(path), '..')]);
    const bos = Number.isInteger(config?.bos_token_id) ? (config!.bos_token_id as number) : 1;
    const length = Math.min(ctx, 256);
    const count = Math.max(1, Math.ceil(tokens / length));
    const key = `samples|${modelHash}|${bos}|${length}|${count}|0`;
    const kept = cache.samples(key);
    sequences =
      kept ??
      (await generateCalibrationSequences(session, Tensor, summarizeInputs(model.graph), {
        count,
        length,
        seed: 0,
        bos,
      }));
    if (!kept) cache.keepSamples(key, sequences);
    source = `${count} sequences × ${length} tokens sampled from BOS ${bos}, seed 0`;
  }
  return { sequences: firstTokens(sequences, tokens), source };
}

function sensitivityLines(table: TensorSensitivity[], candidate: string): string[] {
  const rows = table
    .map((t) => ({ name: t.name, kl: t.entries.find((e) => e.candidate === candidate)?.kl ?? NaN }))
    .sort((a, b) => b.kl - a.kl);
  const max = Math.max(...rows.map((r) => r.kl), 1e-12);
  return rows.map(
    (r) =>
      `  ${r.name.padEnd(44)} ${r.kl.toExponential(2).padStart(9)} ${'#'.repeat(Math.round((r.kl / max) * 30))}`,
  );
}

export async function autoCompressCommand(args: ParsedArgs, out: (s: string) => void): Promise<number> {
  const path = args.positional[0];
  const output = args.flags.get('output');
  if (typeof output !== 'string')
    throw new UsageError('missing -o OUT.onnx: where to write the compressed model.');
  const bits = numberFlag(args, 'auto-bits', 0.5, 32);
  const klTarget = numberFlag(args, 'auto-kl', 0, 100);
  if ((bits === undefined) === (klTarget === undefined))
    throw new UsageError('give one budget: --auto-bits B (bits per weight) or --auto-kl K (summed KL).');
  const candidates = parseCandidates(
    typeof args.flags.get('candidates') === 'string'
      ? (args.flags.get('candidates') as string)
      : DEFAULT_CANDIDATES,
  );
  const tokens = integerFlag(args, 'auto-tokens', 1024, 2);
  checkOutputPlace(output);
  checkOutputsAreNotInputs([output], [path]);

  const { main, external } = modelSources(path);
  const model = parseModel(main, external);
  if (model.external.size)
    throw new ModelError(
      'unsupported',
      '--auto-bits and --auto-kl read models without external data for now.',
    );
  const source = main.read(0, main.size);
  const inputs = summarizeInputs(model.graph);
  const ctx = Math.min(configContext([dirname(path), join(dirname(path), '..')]) ?? 512, 512);
  const base = await onnxruntime('load the model', () => createNodeSession(source));
  try {
    const modelHash = createHash('sha256').update(source).digest('hex');
    const cachePath = args.flags.get('sensitivity-cache');
    const cache = fileCache(
      typeof cachePath === 'string' ? cachePath : join(tmpdir(), 'compression-studio-sensitivity.json'),
    );
    const slice = await sliceSequences(args, path, model, base, ctx, tokens, modelHash, cache);
    const reference = new ReferenceLogits({ session: base, Tensor, inputs }, slice.sequences, ctx, ctx);
    const klOf = trialKl(reference, {
      load: (bytes) => onnxruntime('load a trial model', () => createNodeSession(bytes)),
      Tensor,
      inputs,
      runtime: NODE_RUNTIME,
    });
    let last = 0;
    const table = await measureSensitivity(model, candidates, klOf, {
      cache,
      cacheKey: `${modelHash}|${await reference.textHash()}|${ctx}`,
      onProgress: (done, total) => {
        if (done === total || done - last >= Math.max(1, Math.round(total / 10))) {
          last = done;
          process.stderr.write(`sensitivity: ${done}/${total}\n`);
        }
      },
    });
    const plan = planMixedPrecision(table, candidates, { bitsPerWeight: bits, kl: klTarget });
    const steps = resolveRecipe(plan.recipe);
    const result = compressModel(model, steps);
    const written = exportCompressed(model, result);
    writeFilesAtomically([{ path: output, chunks: [written.model] }]);
    const savePath = args.flags.get('save-recipe');
    if (typeof savePath === 'string') writeFileSync(savePath, JSON.stringify(plan.recipe, null, 2) + '\n');
    const protocol = {
      text: slice.source,
      textHash: await reference.textHash(),
      tokens: reference.tokens,
      ctx,
      stride: ctx,
    };
    if (args.flags.has('json')) {
      out(
        JSON.stringify({
          budget: bits !== undefined ? { bitsPerWeight: bits } : { kl: klTarget },
          plan: {
            bitsPerWeight: plan.bitsPerWeight,
            bytes: plan.bytes,
            params: plan.params,
            predictedKl: plan.predictedKl,
            choices: plan.choices,
          },
          recipe: plan.recipe,
          sensitivity: table,
          protocol,
          outputBytes: written.model.byteLength,
          bitsPerWeight: result.totals.bitsPerWeight,
          warnings: [...(plan.warning ? [plan.warning] : []), ...result.warnings],
        }) + '\n',
      );
      return 0;
    }
    const ref = candidates.find((c) => c.id === 'int4b32') ?? candidates.find((c) => c.step);
    out(
      `sensitivity (KL of compressing one tensor with ${ref?.id}, ${protocol.tokens} tokens, ctx ${ctx}; text sha256 ${protocol.textHash.slice(0, 12)}):\n`,
    );
    if (ref) out(sensitivityLines(table, ref.id).join('\n') + '\n');
    out('plan:\n');
    for (const c of plan.choices)
      out(
        `  ${c.name.padEnd(44)} ${c.candidate.padEnd(10)} ${((c.bytes * 8) / c.params).toFixed(2).padStart(6)} bits  KL ${c.kl.toExponential(2)}\n`,
      );
    if (plan.warning) out(`warning: ${plan.warning}\n`);
    out(
      `${plan.bitsPerWeight.toFixed(3)} bits/weight over ${plan.choices.length} tensors, predicted KL ${plan.predictedKl.toFixed(5)}; ` +
        `written to ${output}${typeof savePath === 'string' ? `, recipe to ${savePath}` : ''}\n`,
    );
    return 0;
  } finally {
    await base.release();
  }
}
