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

export function logitsOutputName(outputs: string[]): string {
  return outputs.includes('logits') ? 'logits' : outputs[0];
}
