/**
 * Forward-pass speed, measured by one protocol on both sides of a before/after comparison: one
 * sequence of T tokens (the first `ctx` tokens of the evaluation data), `warmup` untimed runs (the
 * runtime allocates and tunes on the first), then `runs` timed runs; tokens/s = T / the median run's
 * seconds (the median, not the mean: a shared machine's stalls hit single runs). Perplexity's own
 * tokens/s also counts its windows' log-softmax and bookkeeping; this is the runtime's forward alone.
 * onnxruntime is injected (web in the page's worker, node in tests and the CLI).
 */
import type { InferenceSession } from 'onnxruntime-common';
import { ModelError } from '../errors.ts';
import { decoderFeeds, type IoSpec, type TensorCtor } from './decoder.ts';
import { yieldToEventLoop } from './yield.ts';

export interface SpeedOptions {
  /** Untimed runs first (default 2). */
  warmup?: number;
  /** Timed runs (default 5). */
  runs?: number;
  signal?: AbortSignal;
}

export interface SpeedResult {
  tokensPerSecond: number;
  /** Tokens per run (T). */
  tokens: number;
  runs: number;
  warmup: number;
  /** The median run, milliseconds. */
  medianMs: number;
}

/** ids: [T] token ids, run as one sequence [1, T]. */
export async function measureSpeed(
  session: InferenceSession,
  Tensor: TensorCtor,
  inputs: IoSpec[],
  ids: number[],
  opts: SpeedOptions = {},
): Promise<SpeedResult> {
  const warmup = opts.warmup ?? 2;
  const runs = opts.runs ?? 5;
  if (!ids.length)
    throw new ModelError('invalid-argument', 'Measuring speed needs at least one token of evaluation data.');
  if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(warmup) || warmup < 0)
    throw new ModelError('invalid-argument', `Need runs ≥ 1 and warmup ≥ 0 (got ${runs}, ${warmup}).`);
  const feeds = decoderFeeds(
    Tensor,
    inputs.filter((i) => session.inputNames.includes(i.name)),
    ids,
  );
  const times: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    if (opts.signal?.aborted) throw new ModelError('cancelled', 'Speed measurement cancelled.');
    const t0 = performance.now();
    const out = await session.run(feeds);
    const ms = performance.now() - t0;
    for (const t of Object.values(out)) t.dispose?.();
    if (i >= warmup) times.push(ms);
    await yieldToEventLoop();
  }
  times.sort((a, b) => a - b);
  const medianMs =
    times.length % 2
      ? times[(times.length - 1) / 2]
      : (times[times.length / 2 - 1] + times[times.length / 2]) / 2;
  return {
    tokensPerSecond: ids.length / (Math.max(medianMs, 1e-6) / 1000),
    tokens: ids.length,
    runs,
    warmup,
    medianMs,
  };
}
