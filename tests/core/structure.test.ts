/**
 * Structured pruning on the real models: the shrunk graph computes what the original computes with
 * the same heads / neurons zeroed (their output-projection rows / down-projection rows set to 0), and
 * dropping a block computes what the original computes with that block's residual contributions
 * zeroed — all in onnxruntime-node, within 1e-4.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { detectStructure, type ModelStructure } from '../../src/core/structure/detect.ts';
import { applyStructuredPruning, type StructurePlan } from '../../src/core/structure/rewrite.ts';
import { ModelError } from '../../src/core/errors.ts';
import { DEMO_MODEL, STORIES_MODEL } from '../helpers/fixtures.ts';
import { zeroed } from '../helpers/structure.ts';
import { mlpModel } from '../helpers/models.ts';
import { HF_LLAMA, hfLlamaModel } from '../helpers/llama-hf.ts';
import { ort, type Feeds } from '../helpers/ort.ts';
import { maxAbs, maxAbsDiff, runOutput } from '../helpers/compress.ts';
import { cacheFeeds, pastInputs, twoSteps } from '../helpers/demo.ts';

function load(path: string): OnnxModel {
  return parseModel(bytesSource(path, new Uint8Array(readFileSync(path))));
}

function headRows(s: ModelStructure, block: number, heads: number[]): number[] {
  const d = s.blocks[block].attention.headDim;
  return heads.flatMap((h) => Array.from({ length: d }, (_, j) => h * d + j));
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const without = (n: number, removed: number[]) => range(n).filter((i) => !removed.includes(i));

const DEMO_IDS = [5, 17, 300, 42, 9, 1000, 77, 3, 250, 8, 64, 1999, 12, 400, 6, 31];
// some zeros in the mask: padding-like positions the model must ignore in both graphs alike
const DEMO_MASK = DEMO_IDS.map((_, i) => (i === 2 || i === 7 || i === 11 ? 0 : 1));

/** The demo's feeds for one model: its KV cache empty, shaped by the heads each block declares. */
const demoFeeds = (bytes: Uint8Array): Feeds => cacheFeeds(bytes, DEMO_IDS, {}, DEMO_MASK);

/**
 * Both models decode a prompt, then two more tokens from their own present.* fed back as the past:
 * the second step's logits and every present agree (the cache's head axis was rewritten with them).
 */
async function expectSameWithCache(a: Uint8Array, b: Uint8Array): Promise<void> {
  const x = await twoSteps(a, DEMO_IDS, [250, 8], DEMO_MASK);
  const y = await twoSteps(b, DEMO_IDS, [250, 8], DEMO_MASK);
  expect(maxAbsDiff(x.second.logits.data as Float32Array, y.second.logits.data as Float32Array)).toBeLessThan(
    1e-4,
  );
  expect(Object.keys(x.second).sort()).toEqual(Object.keys(y.second).sort());
}

function storiesFeeds(): Feeds {
  const ids = [1, 403, 407, 261, 378, 285, 280, 414, 262, 287, 306, 259, 43, 411, 306, 268, 267];
  return { input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]) };
}

async function expectSame(
  a: Uint8Array,
  b: Uint8Array,
  feeds: Feeds | ((bytes: Uint8Array) => Feeds),
): Promise<void> {
  const feedsOf = (bytes: Uint8Array) => (typeof feeds === 'function' ? feeds(bytes) : feeds);
  const x = await runOutput(a, feedsOf(a), 'logits', {});
  const y = await runOutput(b, feedsOf(b), 'logits', {});
  expect(x.length).toBe(y.length);
  expect(maxAbs(x)).toBeGreaterThan(0.1);
  expect(maxAbsDiff(x, y)).toBeLessThan(1e-4);
}

describe('detectStructure', () => {
  it('maps the demo GPT-2: fused c_attn, 6 heads of 32, GELU MLP of 768', () => {
    const s = detectStructure(load(DEMO_MODEL));
    expect(s.width).toBe(192);
    expect(s.blocks).toHaveLength(6);
    const b = s.blocks[3];
    expect(b.attention).toMatchObject({ heads: 6, kvHeads: 6, headDim: 32, fused: true });
    expect(b.attention.q.linear.weight).toBe('transformer.h.3.attn.c_attn.weight');
    expect([b.attention.q.offset, b.attention.k.offset, b.attention.v.offset]).toEqual([0, 192, 384]);
    expect(b.attention.out.weight).toBe('transformer.h.3.attn.c_proj.weight');
    expect(b.attention.splits).toHaveLength(1);
    // Q, K, V head counts and the merge width; the head size (hidden / 6) is computed, not rewritten
    expect(b.attention.counts.map((c) => `${c.unit}:${c.kind}:${c.value}`).sort()).toEqual([
      'heads:count:6',
      'heads:width:192',
      'kvHeads:count:6',
      'kvHeads:count:6',
    ]);
    expect(b.mlp.inputs.map((l) => l.weight)).toEqual(['transformer.h.3.mlp.c_fc.weight']);
    expect(b.mlp.down.weight).toBe('transformer.h.3.mlp.c_proj.weight');
    expect(b.mlp.hidden).toBe(768);
    expect(JSON.parse(JSON.stringify(s))).toEqual(s); // plain data: it can cross postMessage
  });

  it('maps stories260K: separate Q/K/V, 8 query heads on 4 KV heads, SwiGLU of 172', () => {
    const s = detectStructure(load(STORIES_MODEL));
    expect(s.width).toBe(64);
    expect(s.blocks).toHaveLength(5);
    const a = s.blocks[1].attention;
    expect(a).toMatchObject({ heads: 8, kvHeads: 4, headDim: 8, fused: false });
    expect([a.q.linear.weight, a.k.linear.weight, a.v.linear.weight]).toEqual(['l1.wq', 'l1.wk', 'l1.wv']);
    expect(a.groupOf).toEqual([0, 0, 1, 1, 2, 2, 3, 3]);
    expect(a.kvMaps).toHaveLength(2);
    expect(s.blocks[1].mlp.inputs.map((l) => l.weight).sort()).toEqual(['l1.w1', 'l1.w3']);
    expect(s.blocks[1].mlp.hidden).toBe(172);
  });

  it('refuses a graph without transformer blocks, naming what is missing', () => {
    const model = parseModel(bytesSource('mlp.onnx', mlpModel()));
    expect(() => detectStructure(model)).toThrow(ModelError);
    expect(() => detectStructure(model)).toThrow(/mlp\.onnx: no transformer block/);
  });
});

describe('applyStructuredPruning', () => {
  it('demo GPT-2 (fused QKV, attention mask with zeros): heads removed = heads zeroed', async () => {
    const model = load(DEMO_MODEL);
    const s = detectStructure(model);
    const removed = [[1], [0, 5], [], [2, 3, 4], [5], [0, 1, 2, 3, 4]];
    const plan: StructurePlan = { blocks: removed.map((r) => ({ heads: without(6, r) })) };
    const pruned = applyStructuredPruning(model, plan, s);
    const rows: Record<string, number[]> = {};
    removed.forEach((r, i) => (rows[s.blocks[i].attention.out.weight] = headRows(s, i, r)));
    await expectSame(pruned.bytes, zeroed(model, rows), demoFeeds);
    await expectSameWithCache(pruned.bytes, zeroed(model, rows));
    // past_key_values.* and present.* declare each block's new head count
    expect(pastInputs(pruned.bytes).map((p) => p.heads)).toEqual([5, 5, 4, 4, 6, 6, 3, 3, 5, 5, 1, 1]);
    expect(pruned.report.headsAfter).toBe(36 - 12);
    expect(pruned.report.paramsAfter).toBeLessThan(pruned.report.paramsBefore);
    expect(pruned.bytes.byteLength).toBeLessThan(model.fileSize);
    // the pruned model maps again, with its new head counts
    expect(detectStructure(pruned.model).blocks.map((b) => b.attention.heads)).toEqual([5, 4, 6, 3, 5, 1]);
  });

  it('demo GPT-2: MLP neurons removed = neurons zeroed; file and parameters shrink by their weights', async () => {
    const model = load(DEMO_MODEL);
    const s = detectStructure(model);
    const removed = s.blocks.map((_, i) => range(768).filter((j) => (j * 7 + i) % 3 === 0));
    const plan: StructurePlan = { blocks: removed.map((r) => ({ neurons: without(768, r) })) };
    const pruned = applyStructuredPruning(model, plan, s);
    const rows: Record<string, number[]> = {};
    removed.forEach((r, i) => (rows[s.blocks[i].mlp.down.weight] = r));
    await expectSame(pruned.bytes, zeroed(model, rows), demoFeeds);
    const gone = removed.reduce((n, r) => n + r.length * (192 + 1 + 192), 0); // c_fc column + bias, c_proj row
    expect(pruned.report.paramsBefore - pruned.report.paramsAfter).toBe(gone);
    expect(model.fileSize - pruned.bytes.byteLength).toBeGreaterThanOrEqual(gone * 4);
  });

  it('demo GPT-2: dropping a block = zeroing its residual contributions', async () => {
    const model = load(DEMO_MODEL);
    const s = detectStructure(model);
    const pruned = applyStructuredPruning(
      model,
      { blocks: [{}, {}, { drop: true }, {}, { drop: true }, {}] },
      s,
    );
    const whole = [2, 4].flatMap((i) => {
      const b = s.blocks[i];
      return [b.attention.out.weight, b.attention.out.bias!, b.mlp.down.weight, b.mlp.down.bias!];
    });
    await expectSame(pruned.bytes, zeroed(model, {}, whole), demoFeeds);
    // a dropped block's cache passes through: same inputs and outputs, the same next-token logits
    await expectSameWithCache(pruned.bytes, zeroed(model, {}, whole));
    expect(pruned.report.blocksAfter).toBe(4);
    expect(detectStructure(pruned.model).blocks).toHaveLength(4);
    expect(pruned.model.graph.node.length).toBeLessThan(model.graph.node.length);
  });

  it('stories260K (GQA): whole KV groups, neurons and a block removed = zeroed', async () => {
    const model = load(STORIES_MODEL);
    const s = detectStructure(model);
    // KV group g holds query heads 2g, 2g+1
    const removedHeads = [[0, 1], [4, 5, 6, 7], [], [2, 3], [6, 7]];
    const removedNeurons = s.blocks.map((_, i) => range(172).filter((j) => (j + i) % 4 === 0));
    const plan: StructurePlan = {
      blocks: s.blocks.map((_, i) => ({
        heads: without(8, removedHeads[i]),
        neurons: without(172, removedNeurons[i]),
        drop: i === 2,
      })),
    };
    const pruned = applyStructuredPruning(model, plan, s);
    const rows: Record<string, number[]> = {};
    s.blocks.forEach((b, i) => {
      if (i === 2) return;
      rows[b.attention.out.weight] = headRows(s, i, removedHeads[i]);
      rows[b.mlp.down.weight] = removedNeurons[i];
    });
    const dropped = [s.blocks[2].attention.out.weight, s.blocks[2].mlp.down.weight];
    await expectSame(pruned.bytes, zeroed(model, rows, dropped), storiesFeeds());
    const again = detectStructure(pruned.model);
    expect(again.blocks.map((b) => [b.attention.heads, b.attention.kvHeads])).toEqual([
      [6, 3],
      [4, 2],
      [6, 3],
      [6, 3],
    ]);
    expect(again.blocks[1].attention.groupOf).toEqual([0, 0, 1, 1]);
  });

  it('an HF-style Llama export (Concat-built shapes, repeat_kv by Unsqueeze/Expand/Reshape): pruned = zeroed', async () => {
    const bytes = hfLlamaModel();
    const model = parseModel(bytesSource('hf-llama.onnx', bytes));
    const s = detectStructure(model);
    const a = s.blocks[0].attention;
    expect(a).toMatchObject({ heads: 4, kvHeads: 2, headDim: 8, fused: false, groupOf: [0, 0, 1, 1] });
    // Q and K/V head counts, the repeat's expand (2 KV heads) and merge (4 heads), the output width
    expect(a.counts.map((c) => `${c.unit}:${c.kind}:${c.value}`).sort()).toEqual([
      'heads:count:4',
      'heads:count:4',
      'heads:count:4',
      'heads:width:32',
      'kvHeads:count:2',
      'kvHeads:count:2',
      'kvHeads:count:2',
      'kvHeads:count:2',
    ]);
    const removedNeurons = [3, 10, 11, 40, 47];
    const plan: StructurePlan = {
      blocks: [{ heads: [2, 3], neurons: without(HF_LLAMA.hidden, removedNeurons) }, { heads: [0, 1] }],
    };
    const pruned = applyStructuredPruning(model, plan, s);
    const rows = {
      [a.out.weight]: headRows(s, 0, [0, 1]),
      [s.blocks[0].mlp.down.weight]: removedNeurons,
      [s.blocks[1].attention.out.weight]: headRows(s, 1, [2, 3]),
    };
    const ids = [3, 7, 1, 30, 22, 9, 14];
    const feeds = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
    };
    await expectSame(pruned.bytes, zeroed(model, rows), feeds);
    expect(detectStructure(pruned.model).blocks.map((b) => [b.attention.heads, b.attention.kvHeads])).toEqual(
      [
        [2, 1],
        [2, 1],
      ],
    );
  });

  it('refuses a plan that keeps no head, splits a KV group or drops every block', () => {
    const model = load(STORIES_MODEL);
    const s = detectStructure(model);
    expect(() => applyStructuredPruning(model, { blocks: [{ heads: [] }] }, s)).toThrow(
      /keeps no attention heads/,
    );
    expect(() => applyStructuredPruning(model, { blocks: [{ heads: [0, 2, 3] }] }, s)).toThrow(
      /query heads 0, 1 share KV head 0/,
    );
    expect(() => applyStructuredPruning(model, { blocks: s.blocks.map(() => ({ drop: true })) }, s)).toThrow(
      /drops all 5 blocks/,
    );
    expect(() => applyStructuredPruning(model, { blocks: [{ neurons: [172] }] }, s)).toThrow(ModelError);
  });
});
