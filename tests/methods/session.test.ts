import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { PreviewSession, overlayHistogram } from '../../src/core/compress/session.ts';
import { ModelError } from '../../src/core/errors.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';

const STORIES = STORIES_MODEL;
const model = () => parseModel(bytesSource('stories', new Uint8Array(readFileSync(STORIES))));

describe('live preview session', () => {
  const recipe = (sparsity: number, block: number) =>
    resolveRecipe({
      steps: [
        { method: 'prune', options: { sparsity, scope: 'global' }, select: { include: ['l0.*', 'l1.*'] } },
        { method: 'int4', options: { blockSize: block } },
      ],
    });

  it('gives the same numbers as the batch pipeline', async () => {
    const m = model();
    const live = await new PreviewSession(m).run(recipe(0.3, 32));
    const batch = compressModel(m, recipe(0.3, 32));
    expect(live.reports).toEqual(batch.reports);
    expect(live.totals).toEqual(batch.totals);
  });

  it('recomputes only the steps and tensors a change affects', async () => {
    const s = new PreviewSession(model());
    await s.run(recipe(0.3, 32));
    expect(s.lastComputed).toBe(14 + 35); // 14 pruned tensors, 35 quantized
    await s.run(recipe(0.3, 64)); // only the last step changed: pruning is reused
    expect(s.lastComputed).toBe(35);
    await s.run(recipe(0.3, 64));
    expect(s.lastComputed).toBe(0);
    await s.run(recipe(0.5, 64)); // the global threshold moved: the 14 pruned tensors and their int4
    expect(s.lastComputed).toBe(28);
  });

  it('computes the tensor being looked at first, and a newer request cancels a stale run', async () => {
    const s = new PreviewSession(model());
    const seen: string[] = [];
    await s.run(recipe(0.2, 16), {
      priority: 'l4.w2',
      onPriority: (o) => seen.push(o.candidate.name),
      onProgress: (done) => done === 1 && seen.push('first-done'),
    });
    expect(seen).toEqual(['l4.w2', 'first-done']);
    let polls = 0;
    await expect(s.run(recipe(0.25, 16), { isStale: () => ++polls > 3 })).rejects.toThrow(ModelError);
  });

  it('overlays original and compressed histograms on one range', () => {
    const h = overlayHistogram(Float32Array.of(-1, 0, 1, 1), Float32Array.of(0, 0, 0, 2), 4);
    expect(h.edges[0]).toBe(-1);
    expect(h.edges[4]).toBe(2);
    expect(h.original.reduce((a, b) => a + b)).toBe(4);
    expect(h.compressed).toEqual([0, 3, 0, 1]);
  });
});
