/**
 * Perplexity with the strided sliding window (Hugging Face's method): windows of `ctx` tokens every
 * `stride` tokens; each window scores only the tokens no earlier window scored, so every token after
 * the first of each sequence is scored exactly once, with up to ctx - stride tokens of left context.
 */
import type { InferenceSession } from 'onnxruntime-common';
import { ModelError } from '../errors.ts';
import { float16ToFloat32 } from '../onnx/dtypes.ts';
import { batchFeeds, canBatch, logitsOutputName, type IoSpec, type TensorCtor } from './decoder.ts';
import { yieldToEventLoop } from './yield.ts';

export interface PerplexityOptions {
  ctx: number;
  stride: number;
  signal?: AbortSignal;
  onProgress?: (p: PerplexityProgress) => void;
  /** Windows per run at most (default MAX_BATCH where the model has a batch dimension; 1: one at a time). */
  batch?: number;
}

/** Windows per run at most, tokens per run at most, and the logits one run may return. */
export const MAX_BATCH = 8;
const BATCH_TOKENS = 1024;
const LOGITS_BUDGET = 64 * 2 ** 20;

export interface PerplexityProgress {
  windowsDone: number;
  windowsTotal: number;
  tokensScored: number;
  tokensPerSecond: number;
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean negative log-likelihood per scored token (nats). */
  nll: number;
  tokens: number;
  tokensPerSecond: number;
  seconds: number;
  ctx: number;
  stride: number;
  windows: number;
}

export interface Window {
  seq: number;
  begin: number;
  end: number;
  /** Index in the window of the first target token to score (>= 1). */
  firstTarget: number;
}

export function slidingWindows(lengths: number[], ctx: number, stride: number): Window[] {
  if (!(ctx >= 2) || !(stride >= 1) || stride > ctx) {
    throw new ModelError(
      'invalid-argument',
      `Need ctx >= 2 and 1 <= stride <= ctx (got ctx ${ctx}, stride ${stride}).`,
    );
  }
  const windows: Window[] = [];
  lengths.forEach((len, seq) => {
    let prevEnd = 0;
    for (let begin = 0; begin < len; begin += stride) {
      const end = Math.min(begin + ctx, len);
      const firstTarget = Math.max(prevEnd - begin, 1);
      if (firstTarget < end - begin) windows.push({ seq, begin, end, firstTarget });
      prevEnd = end;
      if (end === len) break;
    }
  });
  return windows;
}

// NLL of targets[t] under softmax(logits[row t]) = logsumexp(row) - row[target], in float64.
export function windowNll(
  logits: Float32Array,
  vocab: number,
  ids: number[],
  firstTarget: number,
): { sum: number; count: number } {
  let sum = 0;
  let count = 0;
  for (let t = firstTarget; t < ids.length; t++) {
    const row = (t - 1) * vocab;
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) if (logits[row + v] > max) max = logits[row + v];
    let z = 0;
    for (let v = 0; v < vocab; v++) z += Math.exp(logits[row + v] - max);
    const target = ids[t];
    if (target < 0 || target >= vocab) {
      throw new ModelError(
        'invalid-argument',
        `Token id ${target} is outside the model's vocabulary of ${vocab}.`,
      );
    }
    sum += Math.log(z) + max - logits[row + target];
    count++;
  }
  return { sum, count };
}

export function logitsAsFloat32(data: unknown): Float32Array {
  if (data instanceof Float32Array) return data;
  if (data instanceof Uint16Array) return Float32Array.from(data, float16ToFloat32);
  if (ArrayBuffer.isView(data)) return Float32Array.from(data as unknown as ArrayLike<number>);
  throw new ModelError('invalid-argument', 'The model returned logits of a type the studio cannot read.');
}

export async function evaluatePerplexity(
  session: InferenceSession,
  Tensor: TensorCtor,
  inputs: IoSpec[],
  sequences: number[][],
  opts: PerplexityOptions,
): Promise<PerplexityResult> {
  const windows = slidingWindows(
    sequences.map((s) => s.length),
    opts.ctx,
    opts.stride,
  );
  if (windows.length === 0)
    throw new ModelError('invalid-argument', 'The text has fewer than two tokens: nothing to score.');
  const fed = inputs.filter((i) => session.inputNames.includes(i.name));
  const outName = logitsOutputName([...session.outputNames]);
  const start = performance.now();
  let sum = 0;
  let tokens = 0;
  // windows of one length go several to a run when the model has a batch dimension (fewer calls, wider
  // matrix products for the threads); the first run, alone, tells the vocabulary the batch is sized by
  let batch = 1;
  const most = canBatch(fed) ? (opts.batch ?? MAX_BATCH) : 1;
  const feedsFor = new Map<string, ReturnType<typeof batchFeeds>>();
  for (let w = 0; w < windows.length;) {
    if (opts.signal?.aborted) throw new ModelError('cancelled', 'Evaluation cancelled.');
    const length = windows[w].end - windows[w].begin;
    let n = 1;
    while (n < batch && w + n < windows.length && windows[w + n].end - windows[w + n].begin === length) n++;
    const key = `${n}x${length}`;
    let fill = feedsFor.get(key);
    if (!fill) {
      fill = batchFeeds(Tensor, fed, n, length);
      feedsFor.set(key, fill);
    }
    const rows = windows.slice(w, w + n).map(({ seq, begin, end }) => sequences[seq].slice(begin, end));
    rows.forEach((ids, b) => fill.setRow(b, ids));
    const out = await session.run(fill.feeds, [outName]);
    const logits = out[outName];
    const vocab = Number(logits.dims[logits.dims.length - 1]);
    const all = logitsAsFloat32(logits.data);
    rows.forEach((ids, b) => {
      const r = windowNll(
        all.subarray(b * length * vocab, (b + 1) * length * vocab),
        vocab,
        ids,
        windows[w + b].firstTarget,
      );
      sum += r.sum;
      tokens += r.count;
    });
    for (const t of Object.values(out)) t.dispose?.();
    w += n;
    if (batch === 1 && most > 1)
      batch = Math.max(
        1,
        Math.min(most, Math.floor(BATCH_TOKENS / length), Math.floor(LOGITS_BUDGET / (length * vocab * 4))),
      );
    const seconds = (performance.now() - start) / 1000;
    opts.onProgress?.({
      windowsDone: w,
      windowsTotal: windows.length,
      tokensScored: tokens,
      tokensPerSecond: tokens / Math.max(seconds, 1e-9),
    });
    await yieldToEventLoop();
  }
  const seconds = (performance.now() - start) / 1000;
  const nll = sum / tokens;
  return {
    perplexity: Math.exp(nll),
    nll,
    tokens,
    tokensPerSecond: tokens / Math.max(seconds, 1e-9),
    seconds,
    ctx: opts.ctx,
    stride: opts.stride,
    windows: windows.length,
  };
}
