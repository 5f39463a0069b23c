/**
 * A compressed model measured against its original on the same tokens, as llama.cpp's
 * `llama-perplexity --kl-divergence` does: perplexity of both and their ratio, KL(original ‖
 * compressed) per scored token (mean with median, 90 %, 99 %, 99.9 % and max), top-1 agreement
 * ("same top") and RMS Δp (the change in the probability of the correct token). Every mean carries
 * its standard error (±), computed as llama.cpp computes it: sqrt(var / (n − 1)) over the per-token
 * values; derived figures propagate it (PPL = exp(mean NLL) ± PPL·se; RMS = sqrt(mean Δp²) ±
 * se(Δp²) / (2·RMS); same top ± sqrt(p(1 − p)/(n − 1))).
 *
 * The windows are perplexity.ts' strided windows, so a token is scored once with the same context in
 * both models. The original's logits of the scored rows are computed once per text and kept (up to a
 * byte budget; windows past it are recomputed when asked for), so one `ReferenceLogits` serves every
 * compressed model compared against it. Dimension letters: T scored rows of a window, V vocabulary.
 */
import type { InferenceSession } from 'onnxruntime-common';
import { ModelError } from '../errors.ts';
import { decoderFeeds, logitsOutputName, type IoSpec, type TensorCtor } from './decoder.ts';
import { logitsAsFloat32, slidingWindows, type Window } from './perplexity.ts';
import { yieldToEventLoop } from './yield.ts';

/** A session that can be fed the decoder inputs it declares. */
export interface LogitsModel {
  session: InferenceSession;
  Tensor: TensorCtor;
  inputs: IoSpec[];
}

/** Where and how the figures were computed: the protocol every comparison carries. */
export interface RuntimeProtocol {
  /** e.g. 'cpu (onnxruntime-node)', 'wasm', 'webgpu' */
  provider: string;
  /** intra-op threads; 'default' when onnxruntime chose them */
  threads: number | string;
  /** onnxruntime version */
  onnxruntime: string;
}

export interface EvalProtocol extends RuntimeProtocol {
  /** sha256 of the scored token ids (int32 little endian, sequences in order, each preceded by its length) */
  textHash: string;
  tokens: number;
  sequences: number;
  ctx: number;
  stride: number;
  windows: number;
}

/** A mean and its uncertainty (one standard error). */
export interface Estimate {
  value: number;
  uncertainty: number;
}

export interface ComparisonResult {
  /** perplexity of the compressed model */
  perplexity: Estimate;
  /** perplexity of the original on the same tokens */
  basePerplexity: Estimate;
  /** PPL(compressed) / PPL(original) */
  ratio: Estimate;
  /** mean ln(PPL(compressed)/PPL(original)) = mean NLL difference per token */
  lnRatio: Estimate;
  kl: {
    mean: Estimate;
    median: number;
    p90: number;
    p99: number;
    p999: number;
    max: number;
    min: number;
  };
  /** share of tokens where both models rank the same token first */
  sameTop: Estimate;
  /** sqrt(mean (p_compressed(correct) − p_original(correct))²) */
  rmsDeltaP: Estimate;
  protocol: EvalProtocol;
  seconds: number;
}

export interface CompareProgress {
  windowsDone: number;
  windowsTotal: number;
  tokensScored: number;
}

export interface CompareOptions {
  signal?: AbortSignal;
  onProgress?: (p: CompareProgress) => void;
}

/** The original's logits of one window's scored rows, [T, V], with each row's log-sum-exp (float64). */
export interface ReferenceWindow {
  logits: Float32Array;
  logSumExp: Float64Array;
  vocab: number;
}

/** Logits of the scored rows of one window: rows firstTarget − 1 … n − 2 predict tokens firstTarget … n − 1. */
export async function scoredLogits(
  model: LogitsModel,
  fed: IoSpec[],
  outName: string,
  ids: number[],
  firstTarget: number,
): Promise<{ logits: Float32Array; vocab: number }> {
  const out = await model.session.run(decoderFeeds(model.Tensor, fed, ids), [outName]);
  try {
    const t = out[outName];
    const vocab = Number(t.dims[t.dims.length - 1]);
    const all = logitsAsFloat32(t.data);
    // a copy: the scored rows outlive the output tensor
    return { logits: all.slice((firstTarget - 1) * vocab, (ids.length - 1) * vocab), vocab };
  } finally {
    for (const t of Object.values(out)) t.dispose?.();
  }
}

/** The inputs the session declares and its logits output. */
export function fedInputs(model: LogitsModel): { fed: IoSpec[]; outName: string } {
  return {
    fed: model.inputs.filter((i) => model.session.inputNames.includes(i.name)),
    outName: logitsOutputName([...model.session.outputNames]),
  };
}

// logsumexp of row r of x [T, V], in float64
function rowLogSumExp(x: Float32Array, vocab: number, r: number): number {
  const o = r * vocab;
  let max = -Infinity;
  for (let v = 0; v < vocab; v++) if (x[o + v] > max) max = x[o + v];
  let z = 0;
  for (let v = 0; v < vocab; v++) z += Math.exp(x[o + v] - max);
  return Math.log(z) + max;
}

/** SHA-256 of the token ids, hex: names the text a figure was computed on without the text itself. */
export async function tokensHash(sequences: number[][]): Promise<string> {
  const total = sequences.reduce((s, q) => s + q.length + 1, 0);
  const words = new Int32Array(total);
  let o = 0;
  for (const q of sequences) {
    words[o++] = q.length;
    words.set(q, o);
    o += q.length;
  }
  const bytes = new Uint8Array(words.buffer);
  // int32 little endian on every platform the studio runs on; swap on a big-endian host
  if (new Uint8Array(Int32Array.of(1).buffer)[0] !== 1)
    for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
  const digest = await globalThis.crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The original model's logits over the text, window by window, computed once: windows are kept while
 * their bytes fit `budgetBytes` (default 512 MiB) and recomputed on demand past it.
 */
export class ReferenceLogits {
  readonly windows: Window[];
  readonly tokens: number;
  private readonly cache = new Map<number, ReferenceWindow>();
  private cachedBytes = 0;
  private readonly fed: IoSpec[];
  private readonly outName: string;
  private hash?: Promise<string>;
  /** How many windows the original model ran (a test reads it to see the cache at work). */
  runs = 0;

  constructor(
    readonly base: LogitsModel,
    readonly sequences: number[][],
    readonly ctx: number,
    readonly stride: number,
    readonly budgetBytes = 512 * 2 ** 20,
  ) {
    this.windows = slidingWindows(
      sequences.map((s) => s.length),
      ctx,
      stride,
    );
    if (this.windows.length === 0)
      throw new ModelError('invalid-argument', 'The text has fewer than two tokens: nothing to score.');
    this.tokens = this.windows.reduce((s, w) => s + (w.end - w.begin - w.firstTarget), 0);
    ({ fed: this.fed, outName: this.outName } = fedInputs(base));
  }

  textHash(): Promise<string> {
    this.hash ??= tokensHash(this.sequences);
    return this.hash;
  }

  idsOf(w: number): number[] {
    const { seq, begin, end } = this.windows[w];
    return this.sequences[seq].slice(begin, end);
  }

  async window(w: number): Promise<ReferenceWindow> {
    const hit = this.cache.get(w);
    if (hit) return hit;
    const { firstTarget } = this.windows[w];
    const ids = this.idsOf(w);
    const { logits, vocab } = await scoredLogits(this.base, this.fed, this.outName, ids, firstTarget);
    this.runs++;
    const rows = ids.length - firstTarget;
    const logSumExp = new Float64Array(rows);
    for (let r = 0; r < rows; r++) logSumExp[r] = rowLogSumExp(logits, vocab, r);
    const ref = { logits, logSumExp, vocab };
    const bytes = logits.byteLength + logSumExp.byteLength;
    if (this.cachedBytes + bytes <= this.budgetBytes) {
      this.cache.set(w, ref);
      this.cachedBytes += bytes;
    }
    return ref;
  }
}

/** Per-token figures of one comparison, in scoring order. */
export interface TokenFigures {
  nll: Float64Array;
  baseNll: Float64Array;
  kl: Float64Array;
  sameTop: Uint8Array;
  deltaP: Float64Array;
}

/**
 * Adds the figures of one window's scored rows to `into` at `offset`: ref and logits [T, V] (T = rows),
 * targets [T] the correct tokens. Returns the number of rows.
 */
export function compareRows(
  ref: ReferenceWindow,
  logits: Float32Array,
  targets: ArrayLike<number>,
  into: TokenFigures,
  offset: number,
): number {
  const V = ref.vocab;
  const rows = targets.length;
  if (logits.length !== rows * V)
    throw new ModelError(
      'invalid-argument',
      `The two models disagree on the vocabulary: ${V} logits per token in the original, ${logits.length / rows} in the compressed model.`,
    );
  for (let r = 0; r < rows; r++) {
    const o = r * V;
    const target = targets[r];
    if (target < 0 || target >= V)
      throw new ModelError(
        'invalid-argument',
        `Token id ${target} is outside the model's vocabulary of ${V}.`,
      );
    const lseQ = rowLogSumExp(logits, V, r);
    const lseP = ref.logSumExp[r];
    let kl = 0;
    let topP = 0;
    let topQ = 0;
    for (let v = 0; v < V; v++) {
      const lp = ref.logits[o + v] - lseP;
      const lq = logits[o + v] - lseQ;
      kl += Math.exp(lp) * (lp - lq);
      if (ref.logits[o + v] > ref.logits[o + topP]) topP = v;
      if (logits[o + v] > logits[o + topQ]) topQ = v;
    }
    const nllP = lseP - ref.logits[o + target];
    const nllQ = lseQ - logits[o + target];
    const i = offset + r;
    into.nll[i] = nllQ;
    into.baseNll[i] = nllP;
    into.kl[i] = kl;
    into.sameTop[i] = topP === topQ ? 1 : 0;
    into.deltaP[i] = Math.exp(-nllQ) - Math.exp(-nllP);
  }
  return rows;
}

/** Mean and standard error sqrt(var/(n − 1)) (llama.cpp's), two-pass in float64. */
export function meanAndError(x: ArrayLike<number>, n = x.length): Estimate {
  if (n === 0) return { value: NaN, uncertainty: NaN };
  let s = 0;
  for (let i = 0; i < n; i++) s += x[i];
  const mean = s / n;
  if (n < 2) return { value: mean, uncertainty: 0 };
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (x[i] - mean) ** 2;
  return { value: mean, uncertainty: Math.sqrt(ss / n / (n - 1)) };
}

/** llama.cpp's percentile: linear interpolation between the sorted values at fraction·(n − 1). */
export function percentile(sorted: ArrayLike<number>, fraction: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  if (fraction <= 0) return sorted[0];
  if (fraction >= 1) return sorted[n - 1];
  const p = fraction * (n - 1);
  const i = Math.floor(p);
  const f = p - i;
  return (1 - f) * sorted[i] + f * sorted[Math.min(i + 1, n - 1)];
}

/** The summary figures of per-token values. */
export function summarizeFigures(
  t: TokenFigures,
  n = t.kl.length,
): Omit<ComparisonResult, 'protocol' | 'seconds'> {
  const nll = meanAndError(t.nll, n);
  const base = meanAndError(t.baseNll, n);
  const diff = new Float64Array(n);
  const dp2 = new Float64Array(n);
  let same = 0;
  for (let i = 0; i < n; i++) {
    diff[i] = t.nll[i] - t.baseNll[i];
    dp2[i] = t.deltaP[i] ** 2;
    same += t.sameTop[i];
  }
  const lnRatio = meanAndError(diff);
  const ms = meanAndError(dp2);
  const rms = Math.sqrt(ms.value);
  const p = same / n;
  const sorted = t.kl.slice(0, n).sort();
  const ppl = Math.exp(nll.value);
  const basePpl = Math.exp(base.value);
  const ratio = Math.exp(lnRatio.value);
  return {
    perplexity: { value: ppl, uncertainty: ppl * nll.uncertainty },
    basePerplexity: { value: basePpl, uncertainty: basePpl * base.uncertainty },
    ratio: { value: ratio, uncertainty: ratio * lnRatio.uncertainty },
    lnRatio,
    kl: {
      mean: meanAndError(sorted),
      median: percentile(sorted, 0.5),
      p90: percentile(sorted, 0.9),
      p99: percentile(sorted, 0.99),
      p999: percentile(sorted, 0.999),
      max: sorted[n - 1],
      min: sorted[0],
    },
    sameTop: { value: p, uncertainty: n > 1 ? Math.sqrt((p * (1 - p)) / (n - 1)) : 0 },
    rmsDeltaP: { value: rms, uncertainty: rms > 0 ? ms.uncertainty / (2 * rms) : 0 },
  };
}

/**
 * Runs `compressed` over the reference's windows and compares it token by token with the original.
 * `windowLimit` scores only the first windows (the sensitivity pass's short slice).
 */
export async function compareWithReference(
  reference: ReferenceLogits,
  compressed: LogitsModel,
  runtime: RuntimeProtocol,
  opts: CompareOptions & { windowLimit?: number } = {},
): Promise<ComparisonResult> {
  const start = performance.now();
  const { fed, outName } = fedInputs(compressed);
  const windows = Math.min(reference.windows.length, opts.windowLimit ?? Infinity);
  const tokens = reference.windows
    .slice(0, windows)
    .reduce((s, w) => s + (w.end - w.begin - w.firstTarget), 0);
  const figures: TokenFigures = {
    nll: new Float64Array(tokens),
    baseNll: new Float64Array(tokens),
    kl: new Float64Array(tokens),
    sameTop: new Uint8Array(tokens),
    deltaP: new Float64Array(tokens),
  };
  let done = 0;
  for (let w = 0; w < windows; w++) {
    if (opts.signal?.aborted) throw new ModelError('cancelled', 'Evaluation cancelled.');
    const { firstTarget } = reference.windows[w];
    const ids = reference.idsOf(w);
    const ref = await reference.window(w);
    const { logits } = await scoredLogits(compressed, fed, outName, ids, firstTarget);
    done += compareRows(ref, logits, ids.slice(firstTarget), figures, done);
    opts.onProgress?.({ windowsDone: w + 1, windowsTotal: windows, tokensScored: done });
    await yieldToEventLoop();
  }
  const sequences = new Set(reference.windows.slice(0, windows).map((w) => w.seq)).size;
  return {
    ...summarizeFigures(figures, done),
    protocol: {
      textHash: await reference.textHash(),
      tokens: done,
      sequences,
      ctx: reference.ctx,
      stride: reference.stride,
      windows,
      ...runtime,
    },
    seconds: (performance.now() - start) / 1000,
  };
}

/** One line naming the protocol, for tables and logs. */
export function protocolLine(p: EvalProtocol): string {
  return (
    `text sha256 ${p.textHash.slice(0, 12)}, ${p.tokens} tokens scored (${p.sequences} sequence${p.sequences === 1 ? '' : 's'}), ` +
    `ctx ${p.ctx}, stride ${p.stride}, ${p.provider}, threads ${p.threads}, onnxruntime ${p.onnxruntime}`
  );
}

/** "1.234 ± 0.005", with `digits` decimals. */
export function formatEstimate(e: Estimate, digits = 4): string {
  return `${e.value.toFixed(digits)} ± ${e.uncertainty.toFixed(digits)}`;
}
