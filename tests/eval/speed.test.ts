/**
 * The forward-pass speed protocol the page's Evaluate shows before and after compression: warm-up
 * runs untimed, then the median of the timed runs over the same one-sequence input. Asserts what was
 * run and how the figure is derived, never how fast anything is.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import type { InferenceSession } from 'onnxruntime-common';
import { measureSpeed } from '../../src/core/eval/speed.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';
import { STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';

describe('measureSpeed', () => {
  it('runs warm-up + timed runs on the same [1, T] input; tokens/s is T over the median run', async () => {
    const bytes = new Uint8Array(readFileSync(STORIES_MODEL));
    const inputs = summarizeInputs(parseModel(bytesSource('m.onnx', bytes)).graph);
    const ids = parseIdsText(readFileSync(`${STORIES_DIR}/ids.txt`, 'utf8'))[0].slice(0, 40);
    const session = await createNodeSession(bytes);
    const shapes: string[] = [];
    // the real session, its runs counted
    const counted = new Proxy(session, {
      get(target, key) {
        if (key === 'run')
          return (feeds: Record<string, { dims: readonly number[] }>) => {
            shapes.push(JSON.stringify(feeds.input_ids.dims));
            return target.run(feeds as never);
          };
        const v = Reflect.get(target, key);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as InferenceSession;
    try {
      const r = await measureSpeed(counted, Tensor, inputs, ids, { warmup: 2, runs: 3 });
      expect(shapes).toEqual(Array(5).fill('[1,40]'));
      expect(r).toMatchObject({ tokens: 40, runs: 3, warmup: 2 });
      expect(r.medianMs).toBeGreaterThan(0);
      expect(r.tokensPerSecond).toBeCloseTo(40 / (r.medianMs / 1000), 6);
      await expect(measureSpeed(session, Tensor, inputs, [])).rejects.toMatchObject({
        code: 'invalid-argument',
      });
      const controller = new AbortController();
      controller.abort();
      await expect(
        measureSpeed(session, Tensor, inputs, ids, { signal: controller.signal }),
      ).rejects.toMatchObject({ code: 'cancelled' });
    } finally {
      await session.release();
    }
  });
});
