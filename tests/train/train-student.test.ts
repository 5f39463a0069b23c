/**
 * The page's distillation run (src/core/compress/distill.ts) on stories260K pruned 2:4, its teacher in
 * onnxruntime-node: held-out perplexity measured every N steps, the best weights kept, and the file
 * written with them scores that same perplexity in onnxruntime; a cancelled run, resumed, ends where
 * one uninterrupted run ends.
 */
import { describe, expect, it } from 'vitest';
import { withWeights } from '../../src/core/train/distill.ts';
import {
  heldOutWindows,
  splitTrainingData,
  trainStudent,
  type HeldOutPoint,
} from '../../src/core/compress/distill.ts';
import { DISTILL_DEFAULTS, type DistillSettings } from '../../src/core/compress/distill-settings.ts';
import { compressBytes } from '../helpers/compress.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { FakeQuantizer, withFrozenQuantized } from '../../src/core/train/qat.ts';
import { ortPerplexity, prunedStudent, storiesTeacher, withStoriesTeacher } from '../helpers/train-setup.ts';

const settings: DistillSettings = {
  ...DISTILL_DEFAULTS,
  source: 'generate',
  steps: 6,
  batch: 2,
  seq: 32,
  lr: 2e-3,
  evalEvery: 2,
};

describe('the page’s distillation run', () => {
  it('measures held-out perplexity every N steps, keeps the best, cancels and resumes as one run', async () => {
    const stories = storiesTeacher();
    const { model: student } = prunedStudent(stories.bytes);
    await withStoriesTeacher(
      { count: 12, length: 64, seed: 3, teacher: stories },
      async ({ teacher, generated }) => {
        const data = splitTrainingData(generated);
        expect(data.heldOut).toHaveLength(2);

        const evals: HeldOutPoint[] = [];
        const whole = await trainStudent(student, teacher, data, settings, { onEval: (p) => evals.push(p) });
        expect(whole.cancelled).toBe(false);
        expect(whole.history.map((h) => h.step)).toEqual([1, 2, 3, 4, 5, 6]);
        expect(evals.map((e) => e.step)).toEqual([0, 2, 4, 6]);
        expect(whole.evals).toEqual(evals);
        const best = evals.reduce((a, b) => (b.perplexity < a.perplexity ? b : a));
        expect(whole.best.step).toBe(best.step);
        expect(whole.best.perplexity).toBe(best.perplexity);
        // a few steps at this learning rate heal the pruned model on its held-out windows
        expect(best.perplexity).toBeLessThan(evals[0].perplexity);

        // onnxruntime scores the file written with the kept weights as the run measured them
        const written = withWeights(student, whole.best.weights);
        const ppl = await ortPerplexity(written, heldOutWindows(data.heldOut, 32), { ctx: 32, stride: 32 });
        expect(Math.abs(ppl - whole.best.perplexity) / whole.best.perplexity).toBeLessThan(1e-4);

        // cancelled after step 3: the weights reached are measured, the best so far kept
        const controller = new AbortController();
        const first = await trainStudent(student, teacher, data, settings, {
          signal: controller.signal,
          onStep: (s) => s.step === 3 && controller.abort(),
        });
        expect(first.cancelled).toBe(true);
        expect(first.checkpoint.step).toBe(3);
        expect(first.evals.map((e) => e.step)).toEqual([0, 2, 3]);
        expect(first.best.perplexity).toBe(Math.min(...first.evals.map((e) => e.perplexity)));
        // resumed: the rest of the same run, ending with the uninterrupted run's weights
        const rest = await trainStudent(student, teacher, data, settings, { resume: first });
        expect(rest.cancelled).toBe(false);
        expect(rest.history.map((h) => h.step)).toEqual([1, 2, 3, 4, 5, 6]);
        expect(rest.checkpoint.step).toBe(6);
        for (const [name, w] of whole.checkpoint.weights) {
          const got = rest.checkpoint.weights.get(name)!;
          let max = 0;
          for (let i = 0; i < w.length; i++) max = Math.max(max, Math.abs(w[i] - got[i]));
          expect(max, name).toBeLessThan(1e-6);
        }
        expect(rest.evals.at(-1)!.perplexity).toBeCloseTo(whole.evals.at(-1)!.perplexity, 4);
      },
    );
  });

  it.each([
    ['int4 b32, all weights', { method: 'int4', options: { blockSize: 32 } }, 'all'],
    [
      'int8, norms and biases only (the quantized weights frozen)',
      { method: 'int8', options: {} },
      'norms-biases',
    ],
  ] as const)(
    'QAT (%s): held-out perplexity is the quantized model’s, and the recipe’s own export of the kept weights scores it in onnxruntime',
    async (_label, quant, train) => {
      const stories = storiesTeacher();
      const { bytes: teacherBytes, model: teacherModel } = stories;
      await withStoriesTeacher(
        { count: 12, length: 64, seed: 3, teacher: stories },
        async ({ teacher, generated }) => {
          const data = splitTrainingData(generated);
          const qatSettings: DistillSettings = { ...settings, steps: 4, train, qat: true };
          const [step] = resolveRecipe({ steps: [quant] });
          // as the training worker does: the step's fake quantizer, frozen targets stored quantized
          const quantizer = new FakeQuantizer(teacherModel, step);
          const trained = withFrozenQuantized(teacherModel, quantizer, train);
          const run = await trainStudent(trained, teacher, data, qatSettings, {
            weightTransform: quantizer.transform,
          });
          const windows = heldOutWindows(data.heldOut, 32);
          // int8: no integer-activation fusion, so onnxruntime computes the stored weights' float product
          const ortPpl = (bytes: Uint8Array) => ortPerplexity(bytes, windows, { ctx: 32, stride: 32 });
          // step 0 is the plain quantized model (what the recipe without training exports)
          const plain = await ortPpl(compressBytes(teacherBytes, [quant]).exported);
          expect(Math.abs(plain - run.evals[0].perplexity) / plain).toBeLessThan(1e-4);
          // the page's export: the kept float weights written into the student, then the recipe's step
          const exported = compressBytes(withWeights(teacherModel, run.best.weights), [quant]).exported;
          const ppl = await ortPpl(exported);
          expect(Math.abs(ppl - run.best.perplexity) / run.best.perplexity).toBeLessThan(1e-4);
          expect(run.evals.length).toBe(3);
        },
      );
    },
  );

  it('held-out data too short for one window is a clear error', () => {
    expect(() => heldOutWindows([[1, 2, 3]], 32)).toThrow(/no window of 32 tokens/);
    expect(() => splitTrainingData([])).toThrow(/no sequence to hold out/);
  });
});
