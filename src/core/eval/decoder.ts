/**
 * Feeds for the usual decoder-only signatures: input_ids alone; with attention_mask / position_ids /
 * token_type_ids; Hugging Face "with past" and "merged" exports (past_key_values.* fed empty,
 * use_cache_branch false). Only inputs the graph declares are fed.
 */
import type { Tensor as OrtTensor } from 'onnxruntime-common';
import { ModelError } from '../errors.ts';

export interface IoSpec {
  name: string;
  dtype: string;
  shape: (number | string)[];
}

export type TensorCtor = typeof OrtTensor;
export type Feeds = Record<string, OrtTensor>;

export function intTensor(Tensor: TensorCtor, dtype: string, values: number[], dims: number[]): OrtTensor {
  if (dtype === 'int32') return new Tensor('int32', Int32Array.from(values), dims);
  return new Tensor(
    'int64',
    BigInt64Array.from(values, (v) => BigInt(v)),
    dims,
  );
}

export function emptyPast(Tensor: TensorCtor, spec: IoSpec): OrtTensor {
  // [batch, heads, past_len, head_dim]: the symbolic batch is 1, every other symbolic dim (past length) 0.
  const dims = spec.shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : i === 0 ? 1 : 0));
  const size = dims.reduce((a, b) => a * b, 1);
  if (spec.dtype === 'float16') return new Tensor('float16', new Uint16Array(size), dims);
  return new Tensor('float32', new Float32Array(size), dims);
}

export function isPastInput(name: string): boolean {
  return /^past_key_values\.|^past\.|\.past_(key|value)|^past_key|^past_value/.test(name);
}

export function decoderFeeds(Tensor: TensorCtor, inputs: IoSpec[], ids: number[]): Feeds {
  const n = ids.length;
  const feeds: Feeds = {};
  for (const spec of inputs) {
    const { name } = spec;
    if (name === 'input_ids') feeds[name] = intTensor(Tensor, spec.dtype, ids, [1, n]);
    else if (name === 'attention_mask')
      feeds[name] = intTensor(Tensor, spec.dtype, new Array(n).fill(1), [1, n]);
    else if (name === 'position_ids')
      feeds[name] = intTensor(
        Tensor,
        spec.dtype,
        Array.from({ length: n }, (_, i) => i),
        [1, n],
      );
    else if (name === 'token_type_ids')
      feeds[name] = intTensor(Tensor, spec.dtype, new Array(n).fill(0), [1, n]);
    else if (name === 'use_cache_branch') feeds[name] = new Tensor('bool', Uint8Array.of(0), [1]);
    else if (isPastInput(name)) feeds[name] = emptyPast(Tensor, spec);
    else
      throw new ModelError(
        'invalid-argument',
        `The model has an input '${name}' (${spec.dtype}) that a decoder-only language model does not have; ` +
          `perplexity needs input_ids (and optionally attention_mask, position_ids, past_key_values.*, use_cache_branch).`,
      );
  }
  if (!feeds.input_ids) {
    throw new ModelError(
      'invalid-argument',
      `The model has no 'input_ids' input, so it is not a language model the studio can evaluate.`,
    );
  }
  return feeds;
}

/** Inputs that carry one row per sequence, so sequences of one length stack into a batch. */
const PER_TOKEN_INPUTS = new Set(['input_ids', 'attention_mask', 'position_ids', 'token_type_ids']);

/**
 * Whether sequences of one length can run several to a call (perplexity's windows, capture's
 * sequences): the graph reads input_ids and only per-token inputs and a KV cache (fed empty,
 * [batch, heads, 0, head_dim], so its batch follows; no use_cache_branch), none with its batch fixed.
 */
export function canBatch(inputs: readonly IoSpec[]): boolean {
  return (
    inputs.some((i) => i.name === 'input_ids') &&
    inputs.every(
      (i) =>
        (PER_TOKEN_INPUTS.has(i.name) || isPastInput(i.name)) &&
        !(typeof i.shape[0] === 'number' && i.shape[0] > 0),
    )
  );
}

/**
 * Feeds for B windows of L tokens made once and refilled in place (no allocation per run): input_ids
 * [B, L] written row by row with `setRow`, attention_mask ones, position_ids 0…L−1 per row.
 */
export function batchFeeds(
  Tensor: TensorCtor,
  inputs: IoSpec[],
  batch: number,
  length: number,
): { feeds: Feeds; setRow(row: number, ids: ArrayLike<number>): void } {
  const batched = canBatch(inputs);
  if (batch === 1 || batched) {
    const dims = [batch, length];
    const n = batch * length;
    const make = (dtype: string, fill: (i: number) => number) =>
      dtype === 'int32'
        ? new Tensor(
            'int32',
            Int32Array.from({ length: n }, (_, i) => fill(i)),
            dims,
          )
        : new Tensor(
            'int64',
            BigInt64Array.from({ length: n }, (_, i) => BigInt(fill(i))),
            dims,
          );
    const feeds: Feeds = {};
    let ids: Int32Array | BigInt64Array | undefined;
    for (const spec of inputs) {
      if (spec.name === 'input_ids') {
        const t = make(spec.dtype, () => 0);
        ids = t.data as Int32Array | BigInt64Array;
        feeds.input_ids = t;
      } else if (spec.name === 'attention_mask') feeds.attention_mask = make(spec.dtype, () => 1);
      else if (spec.name === 'position_ids') feeds.position_ids = make(spec.dtype, (i) => i % length);
      else if (spec.name === 'token_type_ids') feeds.token_type_ids = make(spec.dtype, () => 0);
      else if (isPastInput(spec.name) && batched) {
        // an empty cache: [batch, heads, 0, head_dim], nothing to stack
        const empty = emptyPast(Tensor, spec);
        feeds[spec.name] = new Tensor(empty.type as 'float32', empty.data as Float32Array, [
          batch,
          ...empty.dims.slice(1),
        ]);
      } else if (batch === 1) return singleFeeds(Tensor, inputs, length);
    }
    if (!ids) decoderFeeds(Tensor, inputs, [0]); // throws the typed 'no input_ids' error
    const target = ids!;
    return {
      feeds,
      setRow(row, values) {
        const at = row * length;
        if (target instanceof Int32Array) for (let i = 0; i < length; i++) target[at + i] = values[i];
        else for (let i = 0; i < length; i++) target[at + i] = BigInt(values[i]);
      },
    };
  }
  throw new ModelError('invalid-argument', 'This model takes one sequence per run: it cannot batch windows.');
}

/** One window per run for models with cache inputs: decoderFeeds rebuilt per window. */
function singleFeeds(Tensor: TensorCtor, inputs: IoSpec[], length: number) {
  const ids = new Array<number>(length).fill(0);
  const state = { feeds: decoderFeeds(Tensor, inputs, ids) };
  return {
    get feeds() {
      return state.feeds;
    },
    setRow(_row: number, values: ArrayLike<number>) {
      state.feeds = decoderFeeds(Tensor, inputs, Array.from(values));
    },
  };
}

/**
 * Feeds for `rows`, sequences of one length, stacked along the batch axis ([rows, length] each):
 * batchFeeds filled once (activation capture's runs; one row is decoderFeeds' feeds).
 */
export function stackedFeeds(
  Tensor: TensorCtor,
  inputs: IoSpec[],
  rows: readonly ArrayLike<number>[],
): Feeds {
  const fill = batchFeeds(Tensor, inputs, rows.length, rows[0].length);
  rows.forEach((ids, b) => fill.setRow(b, ids));
  return fill.feeds;
}

export function logitsOutputName(outputs: string[]): string {
  return outputs.includes('logits') ? 'logits' : outputs[0];
}
