/**
 * The streaming export through the kernel pool: each weight's kernels in the workers, a bounded
 * number of weights in flight, written in order — the bytes of the in-memory export and of one
 * thread. And the preview session with a pool and a tight memory budget at once, as the page runs
 * it (and as its streamed export runs one weight per call, several at a time).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { resolveRecipe, type Recipe } from '../../src/core/compress/recipe.ts';
import { inOrder } from '../../src/core/compress/stream-export.ts';
import { PreviewSession } from '../../src/core/compress/session.ts';
import { createNodePool } from '../../src/runtime/pool-node.ts';
import { inMemory, stories, streamed, STREAM_RECIPES } from '../helpers/stream-export.ts';
import { expectSameReports } from '../helpers/reports.ts';

const int4 = (blockSize: number) => resolveRecipe({ steps: [{ method: 'int4', options: { blockSize } }] });

describe('streaming export in the kernel pool', () => {
  const pool = createNodePool(2);
  afterAll(() => pool.close());

  it.each(STREAM_RECIPES)(
    '%s: two workers write the bytes of the in-memory export and of one thread',
    async (_, recipe) => {
      const a = inMemory(recipe);
      const alone = await streamed(recipe);
      const pooled = await streamed(recipe, { pool });
      expect(pooled.data.byteLength).toBeGreaterThan(0);
      expect(Buffer.from(pooled.model).equals(Buffer.from(a.model))).toBe(true);
      expect(Buffer.from(pooled.data).equals(Buffer.from(a.data))).toBe(true);
      expect(Buffer.from(pooled.model).equals(Buffer.from(alone.model))).toBe(true);
      expect(Buffer.from(pooled.data).equals(Buffer.from(alone.data))).toBe(true);
      expect(pooled.result.reports).toEqual(a.result.reports);
      expect(pooled.result.totals).toEqual(a.result.totals);
      expect(pooled.result.warnings).toEqual(a.result.warnings);
      expect(pooled.done.warnings).toEqual(a.warnings);
    },
  );

  it('three weights in flight with two workers: the same bytes', async () => {
    const recipe: Recipe = {
      version: 1,
      steps: [
        { method: 'prune', options: { sparsity: 0.5 } },
        { method: 'int4', options: { blockSize: 32 } },
      ],
    };
    const a = inMemory(recipe);
    const b = await streamed(recipe, { pool, inFlight: 3 });
    expect(Buffer.from(b.data).equals(Buffer.from(a.data))).toBe(true);
    expect(Buffer.from(b.model).equals(Buffer.from(a.model))).toBe(true);
  });

  it('the preview session with a pool and a tight budget: the results of no pool, the memory of its budget', async () => {
    const m = stories();
    const budget = 200_000;
    const plain = new PreviewSession(m, { memoryBudget: budget });
    const pooled = new PreviewSession(m, { memoryBudget: budget, pool });
    const roomy = new PreviewSession(m, { pool });
    for (const keep of ['summary', 'all'] as const) {
      const a = await plain.run(int4(32), { keep, priority: 'l3.w2' });
      const b = await pooled.run(int4(32), { keep, priority: 'l3.w2' });
      expectSameReports(b.reports, a.reports);
      expect(b.totals).toEqual(a.totals);
      expect(b.outcomes.map((o) => o.candidate.name)).toEqual(a.outcomes.map((o) => o.candidate.name));
      b.outcomes.forEach((o, i) =>
        expect(Buffer.from(o.values.buffer).equals(Buffer.from(a.outcomes[i].values.buffer))).toBe(true),
      );
      // what stays between runs is within the budget: half for originals, half for compressed weights
      const held = pooled.memory();
      expect(held.originals).toBeGreaterThan(0);
      expect(held.originals).toBeLessThanOrEqual(budget / 2);
      expect(held.memoised).toBeGreaterThan(0);
      expect(held.memoised).toBeLessThanOrEqual(budget / 2);
    }
    // the next run recomputes what the budget dropped (most of the 35), and finds the rest
    const before = pooled.memory().memoised;
    const again = await pooled.run(int4(32), { keep: 'summary' });
    expect(pooled.lastComputed).toBeGreaterThan(25);
    expect(pooled.lastComputed).toBeLessThan(35);
    expectSameReports(again.reports, (await plain.run(int4(32), { keep: 'summary' })).reports);
    expect(before).toBeLessThanOrEqual(budget / 2);
    // without a budget, a pooled session keeps everything and recomputes nothing
    await roomy.run(int4(32), { keep: 'summary' });
    await roomy.run(int4(32), { keep: 'summary' });
    expect(roomy.lastComputed).toBe(0);
  });

  it("the page's streamed export: runs of one weight each, two at a time in the pool, equal one full run within the budget", async () => {
    const m = stories();
    const budget = 200_000;
    const full = await new PreviewSession(m).run(int4(64));
    const session = new PreviewSession(m, { memoryBudget: budget, pool });
    const names = full.outcomes.map((o) => o.candidate.name);
    const each = inOrder(names.length, 2, (i) => session.run(int4(64), { only: new Set([names[i]]) }));
    const got: string[] = [];
    let i = 0;
    for await (const r of each) {
      // a summary run measures on decoded values, a full run from the kernel's sums: equal to float64 rounding
      expectSameReports(r.reports, [full.reports[i]]);
      expect(
        Buffer.from(r.outcomes[0].values.buffer).equals(Buffer.from(full.outcomes[i].values.buffer)),
      ).toBe(true);
      got.push(r.outcomes[0].candidate.name);
      i++;
    }
    expect(got).toEqual(names);
    expect(session.memory().memoised).toBeLessThanOrEqual(budget / 2);
    expect(session.memory().originals).toBeLessThanOrEqual(budget / 2);
  });
});

describe('inOrder', () => {
  it('hands results out in order, with at most `width` started and not yet handed out', async () => {
    const width = 3;
    let outstanding = 0;
    let most = 0;
    const delays = [30, 5, 20, 1, 15, 2, 25, 3, 10, 4];
    const out: number[] = [];
    const each = inOrder(delays.length, width, async (i) => {
      outstanding++;
      most = Math.max(most, outstanding);
      await new Promise((r) => setTimeout(r, delays[i]));
      return i * 10;
    });
    for await (const v of each) {
      out.push(v);
      outstanding--;
    }
    expect(out).toEqual(delays.map((_, i) => i * 10));
    expect(most).toBe(width);
  });

  it('a failure reaches the reader in its turn; the reader stopping early tells the works to stop', async () => {
    let abandoned = 0;
    const started: number[] = [];
    const each = inOrder(
      6,
      2,
      async (i) => {
        started.push(i);
        if (i === 2) throw new Error('weight 2 failed');
        return i;
      },
      () => abandoned++,
    );
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const v of each) seen.push(v);
      })(),
    ).rejects.toThrow('weight 2 failed');
    expect(seen).toEqual([0, 1]);
    expect(abandoned).toBe(1);
    // never more than two ahead of the reader: weights 4 and 5 were never started
    expect(Math.max(...started)).toBe(3);
  });
});
