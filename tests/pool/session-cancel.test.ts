/**
 * A preview whose kernels are cancelled while they run (a newer recipe, a closed pool) rejects with
 * 'cancelled' and leaves nothing behind: no rejection that nobody handles (in the page that surfaced as
 * an uncaught error of the model worker), and the session still previews afterwards.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { PreviewSession } from '../../src/core/compress/session.ts';
import { createNodePool } from '../../src/runtime/pool-node.ts';
import { DEMO_MODEL } from '../helpers/fixtures.ts';

const model = parseModel(bytesSource('model.onnx', new Uint8Array(readFileSync(DEMO_MODEL))));
const pool = createNodePool(2);
afterAll(() => pool.close());

describe('a preview cancelled while its kernels run', () => {
  it('rejects with cancelled, leaves no unhandled rejection, and the next run works', async () => {
    const unhandled: unknown[] = [];
    const listen = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', listen);
    try {
      const recipe = resolveRecipe({ steps: [{ method: 'int4', options: { blockSize: 32 } }] });
      const session = new PreviewSession(model, { pool });
      // summary runs send each weight's kernel with its error measured in the worker: cancel them all
      // as soon as the first answers, while the others run or wait
      const run = session.run(recipe, {
        keep: 'summary',
        onProgress: (done) => done === 1 && pool.pool.cancel(),
      });
      await expect(run).rejects.toMatchObject({ code: 'cancelled' });
      // a few turns for any rejection left behind to be reported
      for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 20));
      expect(unhandled).toEqual([]);
      const again = await session.run(recipe, { keep: 'summary' });
      expect(again.reports.length).toBeGreaterThan(1);
    } finally {
      process.off('unhandledRejection', listen);
    }
  });
});
