/**
 * The distillation loop's options on stories260K, a few tiny steps each: which weights train, cancel,
 * the learning-rate schedules, and the straight-through weight transform QAT will use.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { TrainGraph } from '../../src/core/train/graph.ts';
import { batchLoss, distill, trainableWeights, windowSampler } from '../../src/core/train/distill.ts';
import { clipGradNorm, learningRate } from '../../src/core/train/optim.ts';
import { STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';

const model = parseModel(bytesSource('stories260K.onnx', new Uint8Array(readFileSync(STORIES_MODEL))));
// the ids are only a convenient token source here: these tests measure no perplexity
const data = parseIdsText(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8'));

describe('distillation options', () => {
  it("'norms-biases' moves only the 1-D weights; 'no-embeddings' leaves the (tied) embedding", async () => {
    const original = new TrainGraph(model, trainableWeights(model)).params;
    const norms = await distill(model, null, data, {
      steps: 2,
      batch: 1,
      seq: 16,
      lr: 1e-2,
      train: 'norms-biases',
    });
    expect(norms.trainable.sort()).toEqual(
      trainableWeights(model)
        .filter((n) => /rms/.test(n))
        .sort(),
    );
    for (const name of norms.trainable) expect(norms.weights.get(name)).not.toEqual(original.get(name));
    const noEmb = await distill(model, null, data, {
      steps: 1,
      batch: 1,
      seq: 16,
      lr: 1e-2,
      train: 'no-embeddings',
    });
    expect(noEmb.trainable).not.toContain('emb');
    expect(noEmb.trainable).toContain('l0.wq');
  });

  it('a cancel between steps keeps the weights so far; resuming from them equals an uninterrupted run', async () => {
    const opts = { steps: 4, batch: 1, seq: 8, lr: 1e-2, warmup: 1, seed: 3 };
    const whole = await distill(model, null, data, opts);
    expect(whole.cancelled).toBe(false);
    const controller = new AbortController();
    const part = await distill(model, null, data, {
      ...opts,
      signal: controller.signal,
      onStep: (s) => {
        if (s.step === 2) controller.abort();
      },
    });
    expect(part.cancelled).toBe(true);
    expect(part.history).toHaveLength(2);
    expect(part.checkpoint.step).toBe(2);
    const rest = await distill(model, null, data, { ...opts, resume: part.checkpoint });
    expect(rest.history.map((h) => h.step)).toEqual([3, 4]);
    expect(rest.history.map((h) => h.loss)).toEqual(whole.history.slice(2).map((h) => h.loss));
    for (const [name, w] of whole.weights) expect(rest.weights.get(name), name).toEqual(w);
  });

  it('gradient clipping scales all gradients to one global norm, as torch.nn.utils.clip_grad_norm_', async () => {
    const grads = () =>
      new Map([
        ['a', Float32Array.from([3, -4])],
        ['b', Float32Array.from([12, 0, 0])],
      ]);
    // ‖g‖ = sqrt(9 + 16 + 144) = 13: a bound above leaves them, a bound below scales them by 6.5 / (13 + 1e-6)
    const loose = grads();
    expect(clipGradNorm(loose, 20)).toBeCloseTo(13, 12);
    expect([...loose.get('a')!, ...loose.get('b')!]).toEqual([3, -4, 12, 0, 0]);
    const tight = grads();
    expect(clipGradNorm(tight, 6.5)).toBeCloseTo(13, 12);
    const scale = 6.5 / (13 + 1e-6);
    [...tight.get('a')!, ...tight.get('b')!].forEach((g, i) =>
      expect(g).toBeCloseTo([3, -4, 12, 0, 0][i] * scale, 6),
    );
    // in the loop: a bound no gradient reaches changes nothing; a tight one changes the path (Adam's
    // first step is the gradients' sign whatever their scale: the difference shows from the second)
    const opts = { steps: 3, batch: 1, seq: 8, lr: 1e-2, warmup: 1, seed: 1 };
    const plain = await distill(model, null, data, opts);
    const roomy = await distill(model, null, data, { ...opts, gradClip: 1e9 });
    const clipped = await distill(model, null, data, { ...opts, gradClip: 1e-3 });
    expect(roomy.history.map((h) => h.loss)).toEqual(plain.history.map((h) => h.loss));
    expect(clipped.history[0].loss).toBe(plain.history[0].loss);
    expect(clipped.history[2].loss).not.toBe(plain.history[2].loss);
    const beta = await distill(model, null, data, { ...opts, beta2: 0.95 });
    expect(beta.history[2].loss).not.toBe(plain.history[2].loss);
  });

  it('warm-up, then cosine or linear decay to zero, or constant', () => {
    const o = { lr: 1, steps: 110, warmup: 10 };
    expect(learningRate(0, { ...o, schedule: 'cosine' })).toBeCloseTo(0.1);
    expect(learningRate(9, { ...o, schedule: 'cosine' })).toBeCloseTo(1);
    expect(learningRate(60, { ...o, schedule: 'cosine' })).toBeCloseTo(0.5);
    expect(learningRate(60, { ...o, schedule: 'linear' })).toBeCloseTo(0.5);
    expect(learningRate(85, { ...o, schedule: 'cosine' })).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI * 0.75)));
    expect(learningRate(110, { ...o, schedule: 'linear' })).toBeCloseTo(0);
    expect(learningRate(100, { ...o, schedule: 'constant' })).toBe(1);
  });

  it('training windows come only from sequences long enough, and a too-long --seq is a typed error', () => {
    const sample = windowSampler(
      [
        [1, 2, 3],
        [4, 5, 6, 7, 8, 9],
      ],
      4,
      0,
    );
    for (let i = 0; i < 20; i++) {
      const w = sample();
      expect(w).toHaveLength(4);
      expect(w[0]).toBeGreaterThanOrEqual(4);
    }
    expect(() => windowSampler([[1, 2]], 4, 0)).toThrow(/No training sequence has 4 tokens/);
  });

  it('a weight transform (QAT fake quantization) is what the forward reads; its gradient passes straight through', () => {
    const names = ['l0.wq', 'l2.w1'];
    const graph = new TrainGraph(model, names);
    const round = (_name: string, w: Float32Array) => w.map((v) => Math.round(v * 16) / 16);
    const rows = [data[0].slice(0, 12)];
    const opts = { temperature: 2, alpha: 0, withGrad: true };
    const fake = batchLoss(graph, rows, null, { ...opts, forward: { weightTransform: round } });
    // the same graph with the rounded weights stored: same loss, same gradients
    const stored = new TrainGraph(model, names);
    for (const n of names) stored.params.set(n, round(n, stored.params.get(n)!));
    const direct = batchLoss(stored, rows, null, opts);
    expect(fake.loss).toBeCloseTo(direct.loss, 6);
    expect(fake.loss).not.toBeCloseTo(batchLoss(graph, rows, null, opts).loss, 4);
    for (const n of names) expect(fake.grads!.get(n)).toEqual(direct.grads!.get(n));
  });
});
