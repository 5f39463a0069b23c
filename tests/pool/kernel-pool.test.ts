/**
 * The kernel pool (worker_threads here, Web Workers on the page): the demo model's weights compressed
 * through 2 workers equal the single-thread path bit for bit — values, encodings, reports and the
 * exported bytes — and a cancel stops a running kernel without ending its worker.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { serialize } from 'node:v8';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { compressModel, compressModelInPool } from '../../src/core/compress/pipeline.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { PreviewSession } from '../../src/core/compress/session.ts';
import { runKernelTask } from '../../src/core/compress/kernel-tasks.ts';
import { setCancelScope } from '../../src/core/cancel.ts';
import { tensorStats, histogram } from '../../src/core/stats.ts';
import { createNodePool } from '../../src/runtime/pool-node.ts';
import { DEMO_MODEL } from '../helpers/fixtures.ts';
import { expectSameReports } from '../helpers/reports.ts';
import { seededFloats } from '../helpers/models.ts';

const DEMO = DEMO_MODEL;
const model = parseModel(bytesSource('model.onnx', new Uint8Array(readFileSync(DEMO))));

const RECIPES: RecipeStep[][] = [
  [{ method: 'int4', options: { blockSize: 32 } }],
  [
    { method: 'prune', options: { sparsity: 0.5 } },
    { method: 'int4', options: { blockSize: 64 } },
  ],
  [
    { method: 'prune', options: { sparsity: 0.3, scope: 'global' } },
    { method: 'kmeans', options: { clusters: 16 } },
  ],
  [{ method: 'int8' }],
  [{ method: 'prune', options: { pattern: '2:4' } }, { method: 'fp16' }],
  [{ method: 'kmeans', options: { clusters: 8, perChannel: true } }],
];

describe('kernel pool', () => {
  const pool = createNodePool(2);
  afterAll(() => pool.close());

  it.each(RECIPES.map((r) => [r.map((s) => s.method).join(' → '), r] as const))(
    '%s: two workers give the single-thread result bit for bit',
    async (_label, steps) => {
      const resolved = resolveRecipe({ steps });
      const alone = compressModel(model, resolved);
      const pooled = await compressModelInPool(model, resolved, pool);
      expect(pooled.outcomes.map((o) => o.candidate.name)).toEqual(
        alone.outcomes.map((o) => o.candidate.name),
      );
      pooled.outcomes.forEach((o, i) => {
        expect(Buffer.from(o.values.buffer).equals(Buffer.from(alone.outcomes[i].values.buffer))).toBe(true);
        // typed arrays compared as bytes (a deep toEqual walks millions of elements one by one)
        expect(serialize(o.encoder).equals(serialize(alone.outcomes[i].encoder))).toBe(true);
      });
      expect(pooled.reports).toEqual(alone.reports);
      expect(pooled.warnings).toEqual(alone.warnings);
      const a = exportCompressed(model, alone).model;
      const b = exportCompressed(model, pooled).model;
      expect(Buffer.from(b).equals(Buffer.from(a))).toBe(true);
    },
  );

  it('the preview session with a pool equals the one without, and memoises the same way', async () => {
    const steps = resolveRecipe({
      steps: [
        { method: 'prune', options: { sparsity: 0.4 } },
        { method: 'int4', options: { blockSize: 32 } },
      ],
    });
    const plain = new PreviewSession(model);
    const pooled = new PreviewSession(model, { pool });
    const first = await plain.run(steps);
    const seen: string[] = [];
    const priority = first.outcomes[3].candidate.name;
    const second = await pooled.run(steps, { priority, onPriority: (o) => seen.push(o.candidate.name) });
    expect(seen).toEqual([priority]);
    expectSameReports(second.reports, first.reports);
    second.outcomes.forEach((o, i) =>
      expect(Buffer.from(o.values.buffer).equals(Buffer.from(first.outcomes[i].values.buffer))).toBe(true),
    );
    // a slider on the last step recomputes only that step, in both
    const moved = resolveRecipe({
      steps: [
        { method: 'prune', options: { sparsity: 0.4 } },
        { method: 'int4', options: { blockSize: 64 } },
      ],
    });
    const p1 = await plain.run(moved);
    const p2 = await pooled.run(moved);
    expect(pooled.lastComputed).toBe(plain.lastComputed);
    expect(pooled.lastComputed).toBe(p1.outcomes.length);
    expectSameReports(p2.reports, p1.reports);
  });

  it('statistics and histograms from the pool equal the in-thread ones', async () => {
    const values = seededFloats(50_000, 7, 0.3);
    expect(await pool.stats(values)).toEqual(tensorStats(values));
    expect(await pool.histogram(values, 64)).toEqual(histogram(values, 64));
  });

  it('a cancelled kernel stops at its next check; the worker takes the next job', async () => {
    // one 4 M-weight tensor, k-means per channel: many Lloyd runs, each checking the flag
    const big = {
      name: 'w',
      shape: [2048, 2048] as [number, number],
      values: seededFloats(2048 * 2048, 3),
      channelAxis: 1 as const,
    };
    const scope = pool.pool.newScope();
    const running = pool.apply(
      'kmeans',
      { clusters: 16, perChannel: true, keepZeros: true, export: 'palette' },
      [big],
      scope,
    );
    const outcome = running.then(
      () => 'finished',
      (e: { code?: string }) => e.code,
    );
    await new Promise((r) => setTimeout(r, 200));
    pool.cancel(scope);
    expect(await outcome).toBe('cancelled');
    // the same pool (its workers alive) answers the next job of another scope
    const small = seededFloats(1000, 1);
    expect(await pool.stats(small)).toEqual(tensorStats(small));
  });

  it('a kernel sees a cancel through the shared flag (checkCancelled in its loops)', () => {
    const cells = new Int32Array(new SharedArrayBuffer(8));
    setCancelScope(cells, 1, 0);
    try {
      Atomics.add(cells, 1, 1); // cancelled before the kernel's first channel
      const t = {
        name: 'w',
        shape: [64, 64] as [number, number],
        values: seededFloats(4096, 2),
        channelAxis: 1 as const,
      };
      expect(() =>
        runKernelTask({
          kind: 'apply',
          method: 'int4',
          options: { blockSize: 32, symmetric: true, format: 'matmulnbits' },
          tensors: [t],
        }),
      ).toThrow(/cancelled/);
    } finally {
      setCancelScope(undefined, 0, 0);
    }
  });
});
