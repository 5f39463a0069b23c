/**
 * Big tensors split into parts (rows, columns, int4 blocks, N:M groups; k-means after its codebook
 * fit): the parts, in-process and through a pool of 2 workers, give the whole-tensor kernel's result
 * bit for bit — values, encodings and stored bytes — for odd shapes whose parts end mid-block, and a
 * cancel during a split stops its parts without ending the workers.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { getMethod, resolveOptions } from '../../src/methods/registry.ts';
import { applyInParts, cutParts, partMatrix, placePart } from '../../src/methods/split.ts';
import type { OptionValues, WeightMatrix } from '../../src/methods/types.ts';
import { MIN_PART_WEIGHTS } from '../../src/core/compress/kernel-tasks.ts';
import { tensorStats } from '../../src/core/stats.ts';
import { createNodePool } from '../../src/runtime/pool-node.ts';
import { mlpModel, seededFloats } from '../helpers/models.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { compressModel, compressModelInPool } from '../../src/core/compress/pipeline.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { expectSameReports } from '../helpers/reports.ts';

/**
 * Weights with exact zeros every 7th (as after pruning) so k-means' pinned zero code is exercised;
 * `levels`: rounded to a few values (as after quantization), so a magnitude threshold has many ties.
 */
function matrix(rows: number, cols: number, channelAxis: 0 | 1, seed: number, levels = false): WeightMatrix {
  const values = seededFloats(rows * cols, seed, 0.05);
  for (let i = 0; i < values.length; i += 7) values[i] = 0;
  if (levels) for (let i = 0; i < values.length; i++) values[i] = Math.round(values[i] * 60) / 60;
  return { name: 'w', shape: [rows, cols], values, channelAxis };
}

/** Byte-for-byte equality of two kernel results (typed arrays as bytes, wherever their memory lives). */
function expectSameResult(actual: unknown, expected: unknown, path = 'result'): void {
  if (ArrayBuffer.isView(expected)) {
    expect(ArrayBuffer.isView(actual), path).toBe(true);
    const a = actual as ArrayBufferView;
    expect(a.constructor.name, path).toBe(expected.constructor.name);
    const bytes = (v: ArrayBufferView) => Buffer.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    expect(bytes(a).equals(bytes(expected)), path).toBe(true);
    return;
  }
  if (expected !== null && typeof expected === 'object') {
    // `error`: the error sums a whole-tensor int4/int8 kernel measures while encoding; parts do not
    // (the report then measures the values), so only the rest must match byte for byte
    const top = !path.includes('.');
    const keys = (x: object) => Object.keys(x).filter((k) => !top || k !== 'error');
    expect(keys(actual as object).sort(), path).toEqual(keys(expected).sort());
    for (const k of keys(expected))
      expectSameResult(
        (actual as Record<string, unknown>)[k],
        (expected as Record<string, unknown>)[k],
        `${path}.${k}`,
      );
    return;
  }
  expect(actual, path).toBe(expected);
}

const CASES: { label: string; method: string; options: OptionValues; levels?: boolean }[] = [
  { label: 'int8 per-channel symmetric', method: 'int8', options: {} },
  { label: 'int8 per-channel asymmetric', method: 'int8', options: { symmetric: false } },
  { label: 'int4 block 32', method: 'int4', options: { blockSize: 32 } },
  { label: 'int4 block 64 asymmetric', method: 'int4', options: { blockSize: 64, symmetric: false } },
  { label: 'fp16', method: 'fp16', options: {} },
  { label: 'prune 50 %', method: 'prune', options: { sparsity: 0.5 } },
  {
    label: 'prune 45 %, many ties at the threshold',
    method: 'prune',
    options: { sparsity: 0.45 },
    levels: true,
  },
  { label: 'prune 0 %', method: 'prune', options: { sparsity: 0 } },
  { label: 'prune 2:4', method: 'prune', options: { pattern: '2:4' } },
  { label: 'prune 4:8', method: 'prune', options: { pattern: '4:8' } },
  { label: 'k-means K=16', method: 'kmeans', options: { clusters: 16 } },
  { label: 'k-means K=5 without kept zeros', method: 'kmeans', options: { clusters: 5, keepZeros: false } },
];

describe('kernels split into parts', () => {
  // odd sizes: rows not a multiple of any block or group, so the last part ends mid-block
  const shapes: [number, number][] = [
    [1037, 301],
    [301, 1037],
  ];

  describe.each(CASES)('$label', ({ method: id, options: given, levels }) => {
    const method = getMethod(id);
    const options = resolveOptions(method, given);
    it.each([0, 1] as const)(
      'channel axis %i: 2, 3 and 7 parts in-process equal the whole tensor',
      (axis) => {
        for (const [rows, cols] of shapes) {
          const t = matrix(rows, cols, axis, rows + axis, levels);
          const whole = method.apply([t], options)[0];
          const cut = method.split!.partAxis(t, options)!;
          for (const count of [2, 3, 7]) {
            const parts = cutParts(t.shape, cut.axis, cut.unit, count);
            expect(parts.length).toBe(Math.min(count, Math.ceil(t.shape[cut.axis] / cut.unit)));
            for (const p of parts.slice(0, -1)) expect(p.end % cut.unit).toBe(0);
            expectSameResult(applyInParts(method, t, options, parts), whole, `${rows}x${cols} in ${count}`);
          }
        }
      },
    );
  });

  it('methods whose options need the whole tensor say so and are never split', () => {
    const t = matrix(64, 64, 1, 1);
    const whole = (id: string, given: OptionValues) => {
      const method = getMethod(id);
      return method.split?.partAxis(t, resolveOptions(method, given));
    };
    expect(whole('int8', { granularity: 'per-tensor' })).toBeUndefined();
    expect(whole('prune', { sparsity: 0.5, scope: 'global' })).toBeUndefined();
    expect(whole('kmeans', { clusters: 16, perChannel: true })).toBeUndefined();
    expect(() =>
      applyInParts(getMethod('int8'), t, { granularity: 'per-tensor', symmetric: true }, []),
    ).toThrow(/cannot run on parts/);
  });

  it('a part of rows is a view, a part of columns a gathered copy; placing the parts rebuilds the matrix', () => {
    const t = matrix(37, 29, 1, 4);
    const rows = partMatrix(t, { axis: 0, start: 5, end: 9 });
    expect(rows.shape).toEqual([4, 29]);
    expect(rows.values.buffer).toBe(t.values.buffer);
    for (const axis of [0, 1] as const) {
      const rebuilt = new Float32Array(t.values.length);
      for (const part of cutParts(t.shape, axis, 1, 4)) {
        const m = partMatrix(t, part);
        // element (r, c) of the part is element (r, c + start) or (r + start, c) of the whole
        const [, width] = m.shape;
        const at = (r: number, c: number) =>
          axis === 0 ? (r + part.start) * 29 + c : r * 29 + c + part.start;
        expect(m.values[2 * width + 1]).toBe(t.values[at(2, 1)]);
        placePart(m.values, rebuilt, t.shape, part);
      }
      expect(Buffer.from(rebuilt.buffer).equals(Buffer.from(t.values.buffer))).toBe(true);
    }
  });

  it('cutParts: boundaries on the unit, no empty part, fewer parts than units asked', () => {
    expect(cutParts([100, 8], 0, 32, 2)).toEqual([
      { axis: 0, start: 0, end: 64 },
      { axis: 0, start: 64, end: 100 },
    ]);
    expect(cutParts([3, 8], 0, 1, 8).map((p) => p.end)).toEqual([1, 2, 3]);
    expect(cutParts([8, 10], 1, 1, 3).map((p) => [p.start, p.end])).toEqual([
      [0, 3],
      [3, 7],
      [7, 10],
    ]);
  });
});

describe('split kernels through a pool of 2 workers', () => {
  const pool = createNodePool(2);
  afterAll(() => pool.close());

  it.each(CASES)(
    '$label: parts on the workers equal the whole-tensor kernel',
    async ({ method: id, options: given, levels }) => {
      const method = getMethod(id);
      const options = resolveOptions(method, given);
      for (const axis of [0, 1] as const) {
        const t = matrix(1037, 301, axis, 11 + axis, levels);
        const whole = method.apply([t], options)[0];
        const cut = method.split!.partAxis(t, options)!;
        const parts = cutParts(t.shape, cut.axis, cut.unit, 5);
        const pooled = await pool.applyInParts(id, options, t, parts);
        // the result's arrays are shared memory the workers wrote in place
        expect(pooled.values.buffer).toBeInstanceOf(SharedArrayBuffer);
        expectSameResult(pooled, whole, `axis ${axis}`);
      }
    },
  );

  it('apply splits a tensor of more than two parts’ worth of weights by itself, and not a small one', async () => {
    const rows = 1031;
    const cols = Math.ceil((2 * MIN_PART_WEIGHTS + 1000) / rows);
    const t = matrix(rows, cols, 1, 5);
    const options = resolveOptions(getMethod('int4'), { blockSize: 32 });
    const parts = pool.partsOf('int4', options, t)!;
    expect(parts.length).toBeGreaterThan(1);
    const before = pool.pool.busyTimes();
    const [pooled] = await pool.apply('int4', options, [t]);
    expectSameResult(pooled, getMethod('int4').apply([t], options)[0]);
    // both workers took parts of the one tensor
    const after = pool.pool.busyTimes();
    expect(after.length).toBe(2);
    after.forEach((s, i) => expect(s).toBeGreaterThan(before[i] ?? 0));
    expect(pool.partsOf('int4', options, matrix(100, 100, 1, 5))).toBeUndefined();
    expect(pool.partsOf('prune', resolveOptions(getMethod('prune'), { scope: 'global' }), t)).toBeUndefined();
    expect(createNodePool(1).partsOf('int4', options, t)).toBeUndefined();
  });

  it.each([
    [[{ method: 'int4', options: { blockSize: 32 } }]],
    [[{ method: 'int8', options: { symmetric: false } }]],
    [[{ method: 'prune', options: { pattern: '2:4' } }, { method: 'fp16' }]],
    [
      [
        { method: 'prune', options: { sparsity: 0.5 } },
        { method: 'int4', options: { blockSize: 64 } },
      ],
    ],
    [[{ method: 'kmeans', options: { clusters: 16 } }]],
  ] as RecipeStep[][][])(
    'a model with a weight big enough to split exports the same bytes through the pool: %j',
    async (steps) => {
      // w1 [4096, 2100]: over two parts' worth of weights, so the pool splits it
      const model = parseModel(bytesSource('mlp.onnx', mlpModel(4096, 2100, 8)));
      expect(4096 * 2100).toBeGreaterThanOrEqual(2 * MIN_PART_WEIGHTS);
      const recipe = resolveRecipe({ steps });
      const alone = compressModel(model, recipe);
      const pooled = await compressModelInPool(model, recipe, pool);
      // w1 was split: its result is the shared array the parts wrote
      const w1 = pooled.outcomes.find((o) => o.candidate.name === 'w1')!;
      expect(w1.values.buffer).toBeInstanceOf(SharedArrayBuffer);
      // the same reports, the error figures to float64 rounding (whole-tensor kernels sum while encoding)
      expectSameReports(pooled.reports, alone.reports);
      const a = exportCompressed(model, alone).model;
      const b = exportCompressed(model, pooled).model;
      expect(Buffer.from(b).equals(Buffer.from(a))).toBe(true);
    },
  );

  it('a cancel during a split rejects it and drops its queued parts; the workers take the next job', async () => {
    const t = matrix(4096, 2048, 1, 9);
    const options = resolveOptions(getMethod('int4'), { blockSize: 32 });
    const parts = cutParts(t.shape, 0, 32, 16);
    const scope = pool.newScope();
    const outcome = pool.applyInParts('int4', options, t, parts, scope).then(
      () => 'finished',
      (e: { code?: string }) => e.code,
    );
    // cancel once the first part is back: the others are running or queued
    while (pool.pool.pending >= parts.length) await new Promise((r) => setImmediate(r));
    expect(pool.pool.queued).toBeGreaterThan(0);
    pool.cancel(scope);
    // the queued parts are dropped at once; the batches the workers hold answer 'cancelled' at their first check
    expect(pool.pool.queued).toBe(0);
    expect(await outcome).toBe('cancelled');
    const small = seededFloats(1000, 1);
    expect(await pool.stats(small)).toEqual(tensorStats(small));
  });
});
