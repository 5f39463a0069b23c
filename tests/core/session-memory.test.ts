/**
 * The preview session's memory: summary runs keep every report and only the viewed weight's arrays,
 * and what it memoises between runs stays within its budget (the rest is recomputed, to the same
 * numbers).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { PreviewSession } from '../../src/core/compress/session.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';
import { expectSameReports } from '../helpers/reports.ts';

const model = () => parseModel(bytesSource('stories', new Uint8Array(readFileSync(STORIES_MODEL))));
const int4 = (blockSize: number) => resolveRecipe({ steps: [{ method: 'int4', options: { blockSize } }] });

describe('preview session memory', () => {
  it("a summary run reports every weight as a full run does, and hands back only the viewed weight's arrays", async () => {
    const m = model();
    const full = compressModel(m, int4(32));
    const summary = await new PreviewSession(m).run(int4(32), { keep: 'summary', priority: 'l2.wq' });
    expectSameReports(summary.reports, full.reports);
    expect(summary.totals).toEqual(full.totals);
    expect(summary.outcomes.map((o) => o.candidate.name)).toEqual(['l2.wq']);
    const viewed = full.outcomes.find((o) => o.candidate.name === 'l2.wq')!;
    expect(summary.outcomes[0].values).toEqual(viewed.values);
  });

  it('memoises within its budget: a tight budget recomputes the rest, to the same numbers', async () => {
    const m = model();
    // stories260K's largest linear weight is 64 × 172 float32 (44 KB): the budget holds about two of
    // them as float32, and since a summary run memoises int4 encodings (a byte of code per weight and
    // the scales), about half of the 35 weights' encodings
    const tight = new PreviewSession(m, { memoryBudget: 200_000 });
    const roomy = new PreviewSession(m);
    const first = await tight.run(int4(32), { keep: 'summary' });
    await roomy.run(int4(32), { keep: 'summary' });
    expect(tight.lastComputed).toBe(35);
    expect(roomy.lastComputed).toBe(35);
    const again = await tight.run(int4(32), { keep: 'summary' });
    await roomy.run(int4(32), { keep: 'summary' });
    // the roomy session reuses all 35; the tight one kept only what its budget allows
    expect(roomy.lastComputed).toBe(0);
    expect(tight.lastComputed).toBeGreaterThan(5);
    expect(tight.lastComputed).toBeLessThan(35);
    expect(tight.memory().memoised).toBeLessThanOrEqual(100_000);
    expect(again.reports).toEqual(first.reports);
  });

  it('runs one weight alone (`only`), reusing what the full run memoised', async () => {
    const s = new PreviewSession(model());
    const all = await s.run(int4(64));
    const one = await s.run(int4(64), { only: new Set(['l1.w3']) });
    expect(s.lastComputed).toBe(0);
    expect(one.reports).toEqual([all.reports.find((r) => r.name === 'l1.w3')]);
    // a full run afterwards still finds every weight memoised: a run of one adds, it does not replace
    await s.run(int4(64));
    expect(s.lastComputed).toBe(0);
  });

  it('runs of one weight each (as the export streams) memoise no more than the budget', async () => {
    const m = model();
    const tight = new PreviewSession(m, { memoryBudget: 200_000 });
    const names = tight.candidates.filter((c) => c.role === 'linear').map((c) => c.name);
    for (const name of names) {
      const r = await tight.run(int4(32), { only: new Set([name]) });
      expect(r.outcomes.map((o) => o.candidate.name)).toEqual([name]);
    }
    // a full run finds only what the budget kept: nearly everything is computed again
    await tight.run(int4(32));
    expect(tight.lastComputed).toBeGreaterThan(25);
  });
});
