/**
 * The page's streamed export after a preview (`previewOutcomes` over the preview session, as the
 * model worker runs it): the encodings a summary preview memoised are written as they are — no
 * kernel runs again for them — and the bytes equal an export with no preview before it and the
 * in-memory export. The kernels are counted at the real pool (every task a worker ran), not mocked.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { resolveRecipe, type Recipe } from '../../src/core/compress/recipe.ts';
import { PreviewSession } from '../../src/core/compress/session.ts';
import { KernelPool } from '../../src/core/compress/kernel-tasks.ts';
import { exportStreaming, memorySpool, previewOutcomes } from '../../src/core/compress/stream-export.ts';
import { concatChunks } from '../../src/core/onnx/write.ts';
import { WorkerPool } from '../../src/core/pool/worker-pool.ts';
import type { OnnxModel } from '../../src/core/onnx/model.ts';
import { createNodePool } from '../../src/runtime/pool-node.ts';
import { inMemory, location, stories, STREAM_RECIPES } from '../helpers/stream-export.ts';
import type { Int4Quantized } from '../../src/methods/int4/kernel.ts';
import { ModelError } from '../../src/core/errors.ts';
import { expectSameReports } from '../helpers/reports.ts';

/** The worker pool under `kernels`, counting the tasks it hands to workers (its own `run`, wrapped). */
function counted(pool: WorkerPool): { runs: () => number } {
  let runs = 0;
  const run = pool.run.bind(pool);
  pool.run = <T>(payload: unknown, transfer?: Transferable[], scope?: number): Promise<T> => {
    if ((payload as { kind?: string }).kind === 'apply') runs++;
    return run<T>(payload, transfer, scope);
  };
  return { runs: () => runs };
}

async function exportThrough(
  session: PreviewSession,
  model: OnnxModel,
  recipe: Recipe,
  pool: KernelPool,
  checkCancelled?: () => void,
) {
  const streamed = previewOutcomes(session, model, resolveRecipe(recipe), { pool });
  const data: Uint8Array[] = [];
  let onnx = new Uint8Array(0);
  await exportStreaming(model, streamed.outcomes, {
    externalData: { location },
    spool: memorySpool(),
    sink: {
      writeData: (b) => void data.push(b.slice()),
      writeModel: (b) => void (onnx = b.slice()),
    },
    ...(checkCancelled ? { checkCancelled } : {}),
  });
  return { model: onnx, data: concatChunks(data), result: streamed.result() };
}

/** int4 block 32 as MatMulNBits: the page's default recipe. */
const INT4 = STREAM_RECIPES[0][1];

/**
 * Recipes whose encodings are written without their values (int4 both ways, int8 with the
 * embedding, k-means palettes, fp16), after a transform, and a global pruning.
 */
const RECIPES: [string, Recipe][] = [
  [
    'prune 50 % → int8',
    {
      version: 1,
      steps: [{ method: 'prune', options: { sparsity: 0.5 } }, { method: 'int8' }],
    },
  ],
  [
    'int4 block 64 as DequantizeLinear, asymmetric',
    {
      version: 1,
      steps: [{ method: 'int4', options: { blockSize: 64, symmetric: false, format: 'dequantize' } }],
    },
  ],
  ...STREAM_RECIPES,
];

describe("the page's export after a preview", () => {
  const kernels = createNodePool(2);
  const tasks = counted(kernels.pool);
  afterAll(() => kernels.close());

  it.each(RECIPES)(
    '%s: reuses the encodings the preview memoised, and writes the bytes of an export without preview',
    async (_, recipe) => {
      const steps = resolveRecipe(recipe);
      const reference = inMemory(recipe);

      // no preview: the export runs every weight's kernels in the pool
      const fresh = stories();
      const cold = new PreviewSession(fresh, { pool: kernels });
      const before = tasks.runs();
      const plain = await exportThrough(cold, fresh, recipe, kernels);
      const kernelsWithout = tasks.runs() - before;
      expect(kernelsWithout).toBeGreaterThanOrEqual(reference.result.outcomes.length);

      // a summary preview as the page runs it, then the export: no kernel runs again
      const model = stories();
      const session = new PreviewSession(model, { pool: kernels });
      const viewed = reference.result.outcomes[3].candidate.name;
      const preview = await session.run(steps, { keep: 'summary', priority: viewed });
      expect(preview.outcomes.map((o) => o.candidate.name)).toEqual([viewed]);
      const mark = tasks.runs();
      const reused = await exportThrough(session, model, recipe, kernels);
      expect(tasks.runs() - mark).toBe(0);

      expect(Buffer.from(reused.data).equals(Buffer.from(plain.data))).toBe(true);
      expect(Buffer.from(reused.model).equals(Buffer.from(plain.model))).toBe(true);
      expect(Buffer.from(reused.data).equals(Buffer.from(reference.data))).toBe(true);
      expect(Buffer.from(reused.model).equals(Buffer.from(reference.model))).toBe(true);
      // the preview measured its reports on the decoded values, the plain export from the kernels' sums
      expectSameReports(reused.result.reports, reference.result.reports);
      expectSameReports(plain.result.reports, reference.result.reports);
      expect(reused.result.totals).toEqual(reference.result.totals);
    },
  );

  it('an encoding evicted by the budget is computed again in the pool: the same bytes, a few kernels', async () => {
    const recipe = INT4;
    const reference = inMemory(recipe);
    const model = stories();
    // the budget keeps about half of the 35 weights' int4 encodings
    const session = new PreviewSession(model, { pool: kernels, memoryBudget: 200_000 });
    await session.run(resolveRecipe(recipe), { keep: 'summary' });
    const memoised = session.memory().memoised;
    expect(memoised).toBeGreaterThan(0);
    expect(memoised).toBeLessThanOrEqual(100_000);
    const mark = tasks.runs();
    const out = await exportThrough(session, model, recipe, kernels);
    const ran = tasks.runs() - mark;
    expect(ran).toBeGreaterThan(0);
    expect(ran).toBeLessThan(35);
    expect(Buffer.from(out.data).equals(Buffer.from(reference.data))).toBe(true);
    expect(Buffer.from(out.model).equals(Buffer.from(reference.model))).toBe(true);
    // the export cached no originals: each weight was read once
    expect(session.memory().originals).toBe(0);
  });

  it('counts what it really holds: int4 codes and scales after a summary, the decoded values too after a full run', async () => {
    const recipe = INT4;
    const steps = resolveRecipe(recipe);
    const reference = inMemory(recipe).result.outcomes;
    const encoded = reference.reduce((n, o) => {
      const q = o.encoder!.encoding as Int4Quantized;
      return n + q.codes.byteLength + q.scales.byteLength;
    }, 0);
    const decoded = reference.reduce((n, o) => n + o.values.byteLength, 0);
    const summary = new PreviewSession(stories(), { pool: kernels });
    await summary.run(steps, { keep: 'summary' });
    expect(summary.memory().memoised).toBe(encoded);
    const full = new PreviewSession(stories(), { pool: kernels });
    await full.run(steps);
    expect(full.memory().memoised).toBe(encoded + decoded);
  });

  it('a cancelled export stops; the next one writes the same bytes, reusing the preview', async () => {
    const recipe = INT4;
    const reference = inMemory(recipe);
    const model = stories();
    const session = new PreviewSession(model, { pool: kernels });
    await session.run(resolveRecipe(recipe), { keep: 'summary' });
    let checks = 0;
    const stop = () => {
      if (++checks > 5) throw new ModelError('cancelled', 'Export cancelled.');
    };
    await expect(exportThrough(session, model, recipe, kernels, stop)).rejects.toThrow(/cancelled/);
    const mark = tasks.runs();
    const again = await exportThrough(session, model, recipe, kernels);
    expect(tasks.runs() - mark).toBe(0);
    expect(Buffer.from(again.data).equals(Buffer.from(reference.data))).toBe(true);
    expect(Buffer.from(again.model).equals(Buffer.from(reference.model))).toBe(true);
  });

  it('a pool widened with lent workers: the same bytes, and closing it ends only the lent ones', async () => {
    const recipe = INT4;
    const reference = inMemory(recipe);
    const lent = createNodePool(1);
    const lentTasks = counted(lent.pool);
    const wide = kernels.widened(lent.pool);
    expect(wide.size).toBe(3);
    const model = stories();
    const out = await exportThrough(new PreviewSession(model, { pool: kernels }), model, recipe, wide);
    expect(lentTasks.runs()).toBeGreaterThan(0);
    expect(Buffer.from(out.data).equals(Buffer.from(reference.data))).toBe(true);
    expect(Buffer.from(out.model).equals(Buffer.from(reference.model))).toBe(true);
    wide.close();
    await expect(lent.pool.run({ kind: 'stats', values: new Float32Array(4) })).rejects.toThrow(/closed/);
    // the page's own pool still works
    const stats = await kernels.stats(new Float32Array([1, 2, 3, 4]));
    expect(stats.max).toBe(4);
  });
});
