/**
 * Text generation for the page's "Try it" box: greedy or sampled (temperature, top-k, seeded)
 * decoding over an onnxruntime session, one token at a time, yielded as it comes.
 *
 * A model with a KV cache (inputs `past_key_values.{i}.key/value`, outputs `present.{i}.key/value`,
 * merged decoders with `use_cache_branch` too) reads the prompt once, then one new token per step
 * with the previous step's `present.*` as its past. A model without one reruns the whole prefix each
 * step, the last `ctx` tokens of it (the model reads no more positions). With a cache, a sequence
 * that reaches `ctx` is re-read from its last ctx/2 tokens, then continues with the cache.
 * onnxruntime is injected (web in the page's worker, node in tests).
 */
import type { InferenceSession, Tensor as OrtTensor } from 'onnxruntime-common';
import { isModelError, ModelError } from '../errors.ts';
import { float16ToFloat32 } from '../onnx/dtypes.ts';
import { seededUniform, sampleFromLogits } from '../calibrate/generate.ts';
import {
  emptyPast,
  intTensor,
  isPastInput,
  logitsOutputName,
  type IoSpec,
  type TensorCtor,
} from './decoder.ts';
import { yieldToEventLoop } from './yield.ts';

export interface Sampling {
  /** Softmax temperature, > 0. */
  temperature: number;
  /** Only the k most likely tokens are drawn from (0: all). */
  topK: number;
  seed: number;
}

export interface GenerateOptions {
  maxNewTokens: number;
  /** Sampled decoding; greedy (argmax, lowest id on ties) when absent. */
  sampling?: Sampling;
  /** The most positions the model reads (config.json's context, or the position table's rows). */
  ctx: number;
  /** Tokens that end the text (generation_config / config eos_token_id). */
  eosTokenIds?: number[];
  /** Stops before the next step; the tokens so far stay generated. */
  signal?: AbortSignal;
  /** Use the KV cache when the model has one (default true); false reruns the prefix, for comparison. */
  useCache?: boolean;
}

export interface GeneratedToken {
  token: number;
  /** Tokens generated so far, this one included. */
  count: number;
  /**
   * Generated tokens per second of this generation's own work (the prompt's read included; time the
   * caller spends between tokens — another model's turn when two generate side by side — is not).
   */
  tokensPerSecond: number;
}

export interface GenerationSummary {
  tokens: number[];
  /** Why it ended. */
  stop: 'length' | 'eos' | 'cancelled';
  /** Whether the KV cache was used. */
  cached: boolean;
  /** Prompt tokens dropped from the front because the prompt was longer than ctx − 1. */
  promptTruncated: number;
  /** Seconds of this generation's own work (see GeneratedToken.tokensPerSecond). */
  seconds: number;
  tokensPerSecond: number;
}

/** How a session takes its KV cache: each past input and the output that becomes it next step. */
export interface CacheLayout {
  pairs: { past: IoSpec; present: string }[];
  /** Merged decoders: false on the first run (no past), true after. */
  useCacheBranch: boolean;
}

/** `past_key_values.0.key` → `present.0.key` (Hugging Face / Optimum naming; also `past.0.key`). */
function presentName(past: string): string {
  return past.replace(/^past_key_values\./, 'present.').replace(/^past\./, 'present.');
}

/** The model's KV cache, or undefined when some past input has no matching present output. */
export function cacheLayout(inputs: IoSpec[], outputs: readonly string[]): CacheLayout | undefined {
  const past = inputs.filter((i) => isPastInput(i.name));
  if (!past.length) return undefined;
  const pairs = past.map((p) => ({ past: p, present: presentName(p.name) }));
  if (pairs.some((p) => p.present === p.past.name || !outputs.includes(p.present))) return undefined;
  return { pairs, useCacheBranch: inputs.some((i) => i.name === 'use_cache_branch') };
}

/** Index of the largest value; the lowest index on ties (so two runtimes agree on equal logits). */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let v = 1; v < row.length; v++) if (row[v] > row[best]) best = v;
  return best;
}

/** row [V] with every value below the k-th largest set to −∞ (k ≤ 0 or ≥ V: unchanged). */
export function topKFilter(row: ArrayLike<number>, k: number): Float64Array {
  const out = Float64Array.from(row);
  if (k <= 0 || k >= out.length) return out;
  const kth = Float64Array.from(row).sort().reverse()[k - 1];
  for (let v = 0; v < out.length; v++) if (out[v] < kth) out[v] = -Infinity;
  return out;
}

function checkOptions(prompt: number[], opts: GenerateOptions): void {
  if (!prompt.length)
    throw new ModelError('invalid-argument', 'Generation needs a prompt of at least one token.');
  const bad = prompt.find((t) => !Number.isInteger(t) || t < 0);
  if (bad !== undefined)
    throw new ModelError('invalid-argument', `The prompt holds '${bad}', not a token id.`);
  if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 1 || opts.maxNewTokens > 4096)
    throw new ModelError(
      'invalid-argument',
      `Max new tokens must be a whole number from 1 to 4096, got ${opts.maxNewTokens}.`,
    );
  if (!Number.isInteger(opts.ctx) || opts.ctx < 2)
    throw new ModelError('invalid-argument', `The context must be at least 2 positions, got ${opts.ctx}.`);
  const s = opts.sampling;
  if (s) {
    if (!(s.temperature > 0) || !Number.isFinite(s.temperature))
      throw new ModelError(
        'invalid-argument',
        `Temperature must be a positive number, got ${s.temperature}.`,
      );
    if (!Number.isInteger(s.topK) || s.topK < 0)
      throw new ModelError('invalid-argument', `Top-k must be a whole number ≥ 0 (0: all), got ${s.topK}.`);
    if (!Number.isInteger(s.seed))
      throw new ModelError('invalid-argument', `The seed must be a whole number.`);
  }
}

/** The last row of logits [1, S, V] (or [1, V]) as float32. */
function lastRow(logits: OrtTensor): Float32Array {
  const vocab = Number(logits.dims[logits.dims.length - 1]);
  const data = logits.data;
  const at = data.length - vocab;
  if (!(vocab > 0) || at < 0)
    throw new ModelError(
      'invalid-argument',
      `The model's logits (shape [${logits.dims.join(', ')}]) have no vocabulary axis.`,
    );
  return data instanceof Uint16Array
    ? Float32Array.from(data.subarray(at), float16ToFloat32)
    : Float32Array.from((data as Float32Array).subarray(at));
}

/**
 * Feeds for one run: `ids` [n] new tokens at positions past … past + n − 1, the cache (`past`, by
 * input name) or empty pasts, and the masks/positions the graph declares.
 */
function stepFeeds(
  Tensor: TensorCtor,
  inputs: IoSpec[],
  ids: number[],
  pastLength: number,
  past: Map<string, OrtTensor> | undefined,
): Record<string, OrtTensor> {
  const n = ids.length;
  const total = pastLength + n;
  const feeds: Record<string, OrtTensor> = {};
  for (const spec of inputs) {
    const { name, dtype } = spec;
    if (name === 'input_ids') feeds[name] = intTensor(Tensor, dtype, ids, [1, n]);
    else if (name === 'attention_mask')
      feeds[name] = intTensor(Tensor, dtype, new Array(total).fill(1), [1, total]);
    else if (name === 'position_ids')
      feeds[name] = intTensor(
        Tensor,
        dtype,
        Array.from({ length: n }, (_, i) => pastLength + i),
        [1, n],
      );
    else if (name === 'token_type_ids') feeds[name] = intTensor(Tensor, dtype, new Array(n).fill(0), [1, n]);
    else if (name === 'use_cache_branch') feeds[name] = new Tensor('bool', Uint8Array.of(past ? 1 : 0), [1]);
    else if (isPastInput(name)) feeds[name] = past?.get(name) ?? emptyPast(Tensor, spec);
    else
      throw new ModelError(
        'invalid-argument',
        `The model has an input '${name}' (${dtype}) that a decoder-only language model does not have; ` +
          `generation feeds input_ids (and attention_mask, position_ids, past_key_values.*, use_cache_branch).`,
      );
  }
  if (!feeds.input_ids)
    throw new ModelError(
      'invalid-argument',
      `The model has no 'input_ids' input: it is not a language model.`,
    );
  return feeds;
}

/**
 * Generates up to `maxNewTokens` tokens after `prompt`, yielding each as it is chosen, and returns
 * the summary. prompt: [P] token ids (the last ctx − 1 are read when longer).
 */
export async function* generateTokens(
  session: InferenceSession,
  Tensor: TensorCtor,
  inputs: IoSpec[],
  prompt: number[],
  opts: GenerateOptions,
): AsyncGenerator<GeneratedToken, GenerationSummary> {
  checkOptions(prompt, opts);
  const fed = inputs.filter((i) => session.inputNames.includes(i.name));
  const outName = logitsOutputName([...session.outputNames]);
  const layout = opts.useCache === false ? undefined : cacheLayout(fed, session.outputNames);
  const eos = new Set(opts.eosTokenIds ?? []);
  const uniform = opts.sampling ? seededUniform(opts.sampling.seed) : undefined;
  const { ctx } = opts;
  const promptTruncated = Math.max(0, prompt.length - (ctx - 1));
  const sequence = prompt.slice(promptTruncated);
  const generated: number[] = [];
  // with a cache: the cache by past input name, and how many positions it holds
  let past: Map<string, OrtTensor> | undefined;
  let pastLength = 0;
  let busyMs = 0;
  const rate = () => generated.length / Math.max(busyMs / 1000, 1e-9);
  let stop: GenerationSummary['stop'] = 'length';
  const release = (m: Map<string, OrtTensor> | undefined) => m?.forEach((t) => t.dispose?.());
  try {
    while (generated.length < opts.maxNewTokens) {
      const started = performance.now();
      if (opts.signal?.aborted) {
        stop = 'cancelled';
        break;
      }
      let ids: number[];
      if (layout) {
        if (!past) ids = sequence.slice();
        else if (pastLength + 1 > ctx) {
          // the cache is full: re-read the last ctx/2 tokens, then go on with the cache
          release(past);
          past = undefined;
          pastLength = 0;
          ids = sequence.slice(-Math.floor(ctx / 2));
        } else ids = sequence.slice(-1);
      } else ids = sequence.slice(-ctx);
      const wanted = [outName, ...(layout?.pairs.map((p) => p.present) ?? [])];
      let out: Record<string, OrtTensor>;
      try {
        out = await session.run(stepFeeds(Tensor, fed, ids, pastLength, past), wanted);
      } catch (e) {
        if (isModelError(e)) throw e;
        throw new ModelError(
          'invalid-argument',
          `The model could not run on the prompt (an id outside its vocabulary?): ${(e as Error).message ?? String(e)}`,
        );
      }
      const row = lastRow(out[outName]);
      out[outName].dispose?.();
      if (layout) {
        release(past);
        past = new Map(layout.pairs.map((p) => [p.past.name, out[p.present]]));
        pastLength += ids.length;
      }
      const token = opts.sampling
        ? sampleFromLogits(topKFilter(row, opts.sampling.topK), opts.sampling.temperature, uniform!())
        : argmax(row);
      generated.push(token);
      sequence.push(token);
      busyMs += performance.now() - started;
      yield { token, count: generated.length, tokensPerSecond: rate() };
      if (eos.has(token)) {
        stop = 'eos';
        break;
      }
      // a Stop message (or a UI event) gets its turn between tokens
      await yieldToEventLoop();
    }
  } finally {
    release(past);
  }
  const seconds = busyMs / 1000;
  return {
    tokens: generated,
    stop,
    cached: !!layout,
    promptTruncated,
    seconds,
    tokensPerSecond: generated.length / Math.max(seconds, 1e-9),
  };
}

/** Runs generateTokens to its end; `onToken` sees each token as it comes. */
export async function generate(
  session: InferenceSession,
  Tensor: TensorCtor,
  inputs: IoSpec[],
  prompt: number[],
  opts: GenerateOptions & { onToken?: (t: GeneratedToken) => void },
): Promise<GenerationSummary> {
  const it = generateTokens(session, Tensor, inputs, prompt, opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
    opts.onToken?.(r.value);
  }
}
