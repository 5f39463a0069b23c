/**
 * The one batching rule perplexity and activation capture share (canBatch) and the stacked feeds
 * capture runs (stackedFeeds): read from the real demo model's inputs and from hand-written
 * signatures, and compared value by value with decoderFeeds of each sequence alone.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { canBatch, decoderFeeds, stackedFeeds, type IoSpec } from '../../src/core/eval/decoder.ts';
import { isModelError } from '../../src/core/errors.ts';
import { Tensor } from '../../src/runtime/ort-node.ts';
import { DEMO_MODEL } from '../helpers/fixtures.ts';

const ids = (batch: number | string): IoSpec => ({
  name: 'input_ids',
  dtype: 'int64',
  shape: [batch, 'seq'],
});
const past = (batch: number | string): IoSpec => ({
  name: 'past_key_values.0.key',
  dtype: 'float32',
  shape: [batch, 2, 'past', 4],
});

describe('canBatch', () => {
  it('takes the demo model (input_ids, attention_mask, position_ids and an empty KV cache) in batches', () => {
    const inputs = summarizeInputs(parseModel(bytesSource('model.onnx', readFileSync(DEMO_MODEL))).graph);
    expect(inputs.some((i) => i.name.startsWith('past_key_values.'))).toBe(true);
    expect(canBatch(inputs)).toBe(true);
  });

  it('refuses a fixed batch, a cache branch, an unknown input or no input_ids', () => {
    expect(canBatch([ids('batch')])).toBe(true);
    expect(canBatch([ids('batch'), past('batch')])).toBe(true);
    expect(canBatch([ids(1)])).toBe(false);
    expect(canBatch([ids('batch'), past(1)])).toBe(false);
    expect(canBatch([ids('batch'), { name: 'attention_mask', dtype: 'int64', shape: [1, 'seq'] }])).toBe(
      false,
    );
    expect(
      canBatch([ids('batch'), past('batch'), { name: 'use_cache_branch', dtype: 'bool', shape: [1] }]),
    ).toBe(false);
    expect(canBatch([ids('batch'), { name: 'pixel_values', dtype: 'float32', shape: ['batch', 3] }])).toBe(
      false,
    );
    expect(canBatch([{ name: 'attention_mask', dtype: 'int64', shape: ['batch', 'seq'] }])).toBe(false);
  });
});

describe('stackedFeeds', () => {
  const inputs: IoSpec[] = [
    ids('batch'),
    { name: 'attention_mask', dtype: 'int32', shape: ['batch', 'seq'] },
    { name: 'position_ids', dtype: 'int64', shape: ['batch', 'seq'] },
    past('batch'),
  ];
  const rows = [
    [5, 1, 7],
    [2, 9, 4],
  ];

  it('stacks each sequence’s decoderFeeds along the batch axis, the cache empty at the batch’s size', () => {
    const feeds = stackedFeeds(Tensor, inputs, rows);
    const alone = rows.map((r) => decoderFeeds(Tensor, inputs, r));
    for (const name of ['input_ids', 'attention_mask', 'position_ids']) {
      expect(feeds[name].dims).toEqual([2, 3]);
      expect(feeds[name].type).toBe(alone[0][name].type);
      expect(Array.from(feeds[name].data as ArrayLike<unknown>)).toEqual(
        alone.flatMap((f) => Array.from(f[name].data as ArrayLike<unknown>)),
      );
    }
    expect(feeds['past_key_values.0.key'].dims).toEqual([2, 2, 0, 4]);
    expect(feeds['past_key_values.0.key'].size).toBe(0);
  });

  it('one row is decoderFeeds’ feeds, also for a graph that cannot batch (a cache branch)', () => {
    const merged = [...inputs, { name: 'use_cache_branch', dtype: 'bool', shape: [1] }];
    const one = stackedFeeds(Tensor, merged, [rows[0]]);
    const want = decoderFeeds(Tensor, merged, rows[0]);
    expect(Object.keys(one).sort()).toEqual(Object.keys(want).sort());
    for (const name of Object.keys(want)) {
      expect(one[name].dims).toEqual(want[name].dims);
      expect(Array.from(one[name].data as ArrayLike<unknown>)).toEqual(
        Array.from(want[name].data as ArrayLike<unknown>),
      );
    }
  });

  it('several rows of a graph that cannot batch are a typed error', () => {
    let caught: unknown;
    try {
      stackedFeeds(Tensor, [ids(1)], rows);
    } catch (e) {
      caught = e;
    }
    expect(isModelError(caught) && caught.code).toBe('invalid-argument');
  });
});
