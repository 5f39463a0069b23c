/**
 * Running the demo model (GPT-2 with a KV cache: input_ids, attention_mask, position_ids,
 * past_key_values.{i}.key/.value in; logits, present.{i}.key/.value out) and its pruned or compressed
 * variants in onnxruntime-node, as Hugging Face runtimes run it.
 */
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { isPastInput } from '../../src/core/eval/decoder.ts';
import { ort, type Feeds } from './ort.ts';

const int64 = (values: number[], dims: number[]) =>
  new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);

/** The past inputs' names and their declared [batch, heads, past, head_dim] (heads may differ per block). */
export function pastInputs(bytes: Uint8Array): { name: string; heads: number; headDim: number }[] {
  const graph = parseModel(bytesSource('model.onnx', bytes)).graph;
  return graph.input
    .filter((v) => isPastInput(v.name))
    .map((v) => {
      const dim = v.type?.tensor_type?.shape?.dim ?? [];
      return { name: v.name, heads: Number(dim[1]?.dim_value), headDim: Number(dim[3]?.dim_value) };
    });
}

/**
 * Feeds for `ids` after `past` (the previous step's present.* by past name; empty caches when absent):
 * `mask` covers past and new tokens (all ones by default); positions continue the past.
 */
export function cacheFeeds(
  bytes: Uint8Array,
  ids: number[],
  past: Record<string, ort.Tensor> = {},
  mask?: number[],
): Feeds {
  const pasts = pastInputs(bytes);
  const pastLen = pasts.length && past[pasts[0].name] ? Number(past[pasts[0].name].dims[2]) : 0;
  const feeds: Feeds = {
    input_ids: int64(ids, [1, ids.length]),
    attention_mask: int64(mask ?? new Array<number>(pastLen + ids.length).fill(1), [1, pastLen + ids.length]),
    position_ids: int64(
      ids.map((_, i) => pastLen + i),
      [1, ids.length],
    ),
  };
  for (const p of pasts)
    feeds[p.name] =
      past[p.name] ?? new ort.Tensor('float32', new Float32Array(0), [1, p.heads, 0, p.headDim]);
  return feeds;
}

/** present.{i}.key/.value of a run, renamed to the past_key_values.{i}.key/.value they feed next. */
export function presentsAsPast(out: Record<string, ort.Tensor>): Record<string, ort.Tensor> {
  const past: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(out))
    if (name.startsWith('present.')) past[name.replace(/^present\./, 'past_key_values.')] = t;
  return past;
}

/** The next token's logits ([vocab]) from a run's logits [1, L, vocab]. */
export function lastLogits(out: Record<string, ort.Tensor>): Float32Array {
  const logits = out.logits.data as Float32Array;
  const vocab = Number(out.logits.dims[2]);
  return logits.slice(logits.length - vocab);
}

export function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/**
 * Greedy decoding without the cache: every step runs the whole sequence again with an empty cache
 * (the studio's perplexity path), so it does not depend on the present.* outputs at all.
 */
export async function greedyWithoutCache(
  bytes: Uint8Array,
  prompt: number[],
  steps: number,
): Promise<number[]> {
  const session = await ort.InferenceSession.create(bytes);
  const tokens = [...prompt];
  try {
    for (let s = 0; s < steps; s++) {
      const out = await session.run(cacheFeeds(bytes, tokens));
      tokens.push(argmax(lastLogits(out)));
    }
  } finally {
    await session.release();
  }
  return tokens;
}

/**
 * Runs `ids` with an empty cache, then `next` with the presents as the past; `mask` (over `ids`)
 * masks the same prompt positions in both steps.
 */
export async function twoSteps(
  bytes: Uint8Array,
  ids: number[],
  next: number[],
  mask: number[] = ids.map(() => 1),
): Promise<{ first: Record<string, ort.Tensor>; second: Record<string, ort.Tensor> }> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const first = await session.run(cacheFeeds(bytes, ids, {}, mask));
    const second = await session.run(
      cacheFeeds(bytes, next, presentsAsPast(first), [...mask, ...next.map(() => 1)]),
    );
    return { first, second };
  } finally {
    await session.release();
  }
}
