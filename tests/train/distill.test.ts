/**
 * Distillation heals a real compressed model: stories260K pruned 2:4 by magnitude, trained for a few
 * steps on sequences its teacher (the original, in onnxruntime-node) generated, against that teacher's
 * soft labels. The KD loss on a fixed batch falls, held-out perplexity on ids.txt (never trained on)
 * falls, the 2:4 zeros stay, and the written file runs in onnxruntime exactly as the engine computes it.
 */
import { describe, expect, it } from 'vitest';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { TrainGraph } from '../../src/core/train/graph.ts';
import {
  batchLoss,
  decoderValues,
  distill,
  trainableWeights,
  withWeights,
} from '../../src/core/train/distill.ts';
import { maxAbsDiff } from '../helpers/compress.ts';
import {
  ortPerplexity,
  ortLogits,
  prunedStudent,
  STORIES_HELD_OUT,
  storiesTeacher,
  withStoriesTeacher,
} from '../helpers/train-setup.ts';

describe('knowledge distillation of stories260K pruned 2:4', () => {
  it('lowers the KD loss and held-out perplexity, keeps the sparsity, and exports what it trained', async () => {
    const stories = storiesTeacher();
    const { bytes: pruned, model: student } = prunedStudent(stories.bytes);
    await withStoriesTeacher(
      { count: 12, probe: 2, teacher: stories },
      async ({ teacher, train, probe, probeLogits }) => {
        const kdOn = (model: typeof student) =>
          batchLoss(new TrainGraph(model, []), probe, probeLogits, {
            temperature: 2,
            alpha: 0.5,
            withGrad: false,
          });

        const result = await distill(student, teacher, train, {
          steps: 16,
          batch: 4,
          seq: 48,
          lr: 2e-3,
          seed: 1,
        });
        const written = withWeights(student, result.weights);
        const trained = parseModel(bytesSource('distilled.onnx', written));

        const before = kdOn(student);
        const after = kdOn(trained);
        expect(after.loss).toBeLessThan(before.loss * 0.8);
        expect(after.kl).toBeLessThan(before.kl);
        const pplBefore = await ortPerplexity(pruned);
        const pplAfter = await ortPerplexity(written);
        expect(pplAfter).toBeLessThan(pplBefore * 0.8);
        expect(result.history).toHaveLength(16);

        // every weight pruning zeroed is still zero; the rest moved
        for (const name of trainableWeights(student)) {
          const w0 = new TrainGraph(student, [name]).params.get(name)!;
          const w1 = result.weights.get(name)!;
          let zeros = 0;
          for (let i = 0; i < w0.length; i++)
            if (w0[i] === 0) {
              zeros++;
              expect(w1[i], `${name}[${i}]`).toBe(0);
            }
          if (/^l\d\.w/.test(name)) expect(zeros).toBe(w0.length / 2);
        }

        // the written file: onnxruntime computes what the engine computes with the trained weights
        const ids = STORIES_HELD_OUT[0].slice(0, 40);
        const mine = new TrainGraph(trained, []).forward(decoderValues(trained.graph, [ids]), {
          record: false,
        });
        const got = mine.values.get('logits')!.data as Float32Array;
        expect(maxAbsDiff(await ortLogits(written, ids), got)).toBeLessThan(1e-4);
      },
    );
  }, 300_000);
});
