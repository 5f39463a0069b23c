/**
 * Quantization-aware training (src/core/train/qat.ts): the straight-through gradient on a tiny graph
 * against finite differences; on stories260K, short QAT runs against the fp32 teacher for int4
 * (symmetric and asymmetric), int8 per channel (of a 2:4-pruned student) and k-means K=16 — the KD
 * loss on held-out generated sequences falls (and k-means' held-out perplexity beats plain k-means),
 * and onnxruntime-node's logits of the exported file equal the engine's fake-quantized forward pass.
 */
import { describe, expect, it } from 'vitest';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { isModelError } from '../../src/core/errors.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import {
  bytesSource,
  findInitializer,
  parseModel,
  readTensor,
  type OnnxModel,
} from '../../src/core/onnx/model.ts';
import { TrainGraph } from '../../src/core/train/graph.ts';
import { decoderValues, trainableWeights } from '../../src/core/train/distill.ts';
import { FakeQuantizer, qatDistill } from '../../src/core/train/qat.ts';
import type { Palette } from '../../src/methods/kmeans/index.ts';
import { seededFloats } from '../helpers/models.ts';
import {
  ortPerplexity,
  ortLogits,
  prunedStudent,
  STORIES_HELD_OUT,
  storiesTeacher,
  withStoriesTeacher,
  probeKdLoss,
} from '../helpers/train-setup.ts';

function step(s: RecipeStep) {
  return resolveRecipe({ steps: [s] })[0];
}

/** x [2, 16] → MatMul w1 [16, 16] → Tanh → MatMul w2 [16, 4] → Tanh → y: two linear weights, y not logits. */
function tinyModel(): OnnxModel {
  const bytes = makeModelBytes({
    nodes: [
      makeNode('MatMul', ['x', 'w1'], ['h']),
      makeNode('Tanh', ['h'], ['a']),
      makeNode('MatMul', ['a', 'w2'], ['z']),
      makeNode('Tanh', ['z'], ['y']),
    ],
    inputs: [valueInfo('x', DataType.FLOAT, [2, 16])],
    outputs: [valueInfo('y', DataType.FLOAT, [2, 4])],
    initializers: [
      floatTensor(
        'w1',
        [16, 16],
        seededFloats(256, 3).map((v) => v * 0.5),
      ),
      floatTensor('w2', [16, 4], seededFloats(64, 4)),
    ],
  });
  return parseModel(bytesSource('tiny.onnx', bytes));
}

describe('the straight-through estimator', () => {
  it.each([
    ['int4 block 16', { method: 'int4', options: { blockSize: 16 } }],
    ['int8 per channel', { method: 'int8' }],
    ['k-means K=4', { method: 'kmeans', options: { clusters: 4 } }],
  ] as const)(
    '%s: the gradient at the float weights is the gradient at the quantized ones (finite differences)',
    (_label, s) => {
      const model = tinyModel();
      const quantizer = new FakeQuantizer(model, step(s as RecipeStep));
      expect([...quantizer.targets.keys()]).toEqual(['w1', 'w2']);
      const x = { dtype: 'float32' as const, shape: [2, 16], data: seededFloats(32, 5) };
      const r = seededFloats(8, 6); // L = Σ r · y
      const graph = new TrainGraph(model, ['w1', 'w2']);
      const grads = graph.backward(graph.forward({ x }, { weightTransform: quantizer.transform }), { y: r });

      // the weights the forward pass read: the quantizer's values, which differ from the float weights
      const quantized = new Map(
        [...graph.params].map(([name, w]) => [name, Float32Array.from(quantizer.transform(name, w))]),
      );
      for (const [name, w] of graph.params) expect(quantized.get(name)).not.toEqual(w);
      const loss = (weights: Map<string, Float32Array>) => {
        const g = new TrainGraph(model, ['w1', 'w2']);
        for (const [name, w] of weights) g.params.get(name)!.set(w);
        const y = g.forward({ x }, { record: false }).values.get('y')!.data as Float32Array;
        let sum = 0;
        for (let i = 0; i < y.length; i++) sum += r[i] * y[i];
        return sum;
      };
      const eps = 1e-2;
      let checked = 0;
      for (const name of ['w1', 'w2']) {
        const g = grads.get(name)!;
        for (const i of [0, 5, 17, 63]) {
          const plus = new Map([...quantized].map(([n, w]) => [n, Float32Array.from(w)]));
          const minus = new Map([...quantized].map(([n, w]) => [n, Float32Array.from(w)]));
          plus.get(name)![i] += eps;
          minus.get(name)![i] -= eps;
          const fd = (loss(plus) - loss(minus)) / (2 * eps);
          expect(Math.abs(g[i] - fd), `${name}[${i}]: ${g[i]} vs ${fd}`).toBeLessThan(
            2e-3 + 1e-2 * Math.abs(fd),
          );
          if (Math.abs(fd) > 1e-3) checked++;
        }
      }
      // a true derivative of rounding is zero almost everywhere: these gradients are not
      expect(checked).toBeGreaterThan(4);
      // and they are the gradients at the quantized weights, not at the float ones
      const plain = new TrainGraph(model, ['w1', 'w2']);
      const atFloat = plain.backward(plain.forward({ x }), { y: r });
      expect(atFloat.get('w1')).not.toEqual(grads.get('w1'));
    },
  );

  it('k-means: a fixed codebook by default; with refitEvery 1, each new weight version re-fits it by one Lloyd update', () => {
    const model = tinyModel();
    const w = new TrainGraph(model, ['w1']).params.get('w1')!;
    const moved = Float32Array.from(w, (v, i) => v + 0.05 * Math.sin(i));
    const codebookOf = (q: FakeQuantizer) => (q.targets.get('w1')!.result!.encoding as Palette).codebook;
    const fixed = new FakeQuantizer(model, step({ method: 'kmeans', options: { clusters: 4 } }));
    fixed.transform('w1', w);
    const start = Float32Array.from(codebookOf(fixed));
    fixed.transform('w1', moved);
    expect(codebookOf(fixed)).toEqual(start);

    const refit = new FakeQuantizer(model, step({ method: 'kmeans', options: { clusters: 4 } }), {
      refitEvery: 1,
    });
    refit.transform('w1', w);
    // direct Lloyd update: assign the moved weights to the nearest starting centroid, average each cluster
    const sum = new Float64Array(start.length);
    const count = new Float64Array(start.length);
    for (const v of moved) {
      let best = 0;
      for (let j = 1; j < start.length; j++) if (Math.abs(v - start[j]) < Math.abs(v - start[best])) best = j;
      sum[best] += v;
      count[best]++;
    }
    const expected = Float32Array.from(start, (c, j) =>
      count[j] ? Math.fround(sum[j] / count[j]) : c,
    ).sort();
    const q = refit.transform('w1', moved);
    expect(codebookOf(refit)).toEqual(expected);
    // every weight reads the nearest centroid of the re-fitted codebook
    for (let i = 0; i < moved.length; i++) {
      const nearest = Math.min(...Array.from(expected, (c) => Math.abs(moved[i] - c)));
      expect(Math.abs(moved[i] - q[i])).toBeCloseTo(nearest, 6);
    }
  });

  it('refuses a method it cannot train against, and a step that selects nothing', () => {
    const model = tinyModel();
    const errorOf = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e;
      }
      return undefined;
    };
    const prune = errorOf(() => new FakeQuantizer(model, step({ method: 'prune' })));
    expect(isModelError(prune) && prune.code).toBe('invalid-argument');
    expect((prune as Error).message).toMatch(/int4, int8, kmeans/);
    const none = errorOf(
      () => new FakeQuantizer(model, step({ method: 'int8', select: { include: ['nothing'] } })),
    );
    expect(isModelError(none) && none.code).toBe('invalid-recipe');
  });
});

describe('quantization-aware training of stories260K', () => {
  const stories = storiesTeacher();
  const teacherModel = stories.model;
  const pruned = prunedStudent(stories.bytes).model;

  it.each([
    ['int4 block 32', { method: 'int4', options: { blockSize: 32 } }, 20, 'MatMulNBits', teacherModel],
    ['k-means K=16', { method: 'kmeans', options: { clusters: 16 } }, 20, 'BitShift', teacherModel],
    [
      'int4 block 16 asymmetric as DequantizeLinear',
      { method: 'int4', options: { blockSize: 16, symmetric: false, format: 'dequantize' } },
      4,
      'DequantizeLinear',
      teacherModel,
    ],
    ['int8 per channel of a 2:4-pruned student', { method: 'int8' }, 4, 'DequantizeLinear', pruned],
  ] as const)(
    '%s: onnxruntime runs the export as the engine trained it; 20 steps lower the held-out KD loss',
    async (label, s, steps, exportOp, student) => {
      const resolved = step(s as RecipeStep);
      // enough sequences that 20 steps do not just memorise them (the probe is held out)
      await withStoriesTeacher(
        { count: 34, probe: 2, teacher: stories },
        async ({ teacher, train, probe, probeLogits }) => {
          const quantizer = new FakeQuantizer(student, resolved);
          // the KD loss of the fake-quantized student on a probe batch, at the start
          const kdAt = probeKdLoss(student, probe, probeLogits, quantizer.transform);
          const before = kdAt(null);

          const result = await qatDistill(student, teacher, train, quantizer, {
            steps,
            batch: 4,
            seq: 48,
            // from a model this close to its teacher, Adam's first full-size steps only add noise
            lr: 5e-4,
            warmup: 5,
            seed: 1,
          });
          expect(result.history).toHaveLength(steps);
          if (steps >= 20) expect(kdAt(result.weights), label).toBeLessThan(before);

          // the export: the method's own storage format, no float copy of a quantized weight left
          const exported = parseModel(bytesSource('qat.onnx', result.exported));
          expect(exported.graph.node.some((n) => n.op_type === exportOp)).toBe(true);
          const floats = new Set(
            exported.graph.initializer.filter((t) => t.data_type === DataType.FLOAT).map((t) => t.name),
          );
          for (const name of quantizer.targets.keys()) expect(floats.has(name), name).toBe(false);

          // onnxruntime's logits of the export equal the engine's fake-quantized forward of the trained weights
          const ids = STORIES_HELD_OUT[0].slice(0, 40);
          const graph = new TrainGraph(student, trainableWeights(student));
          for (const [name, w] of result.weights) graph.params.get(name)!.set(w);
          const mine = graph.forward(decoderValues(student.graph, [ids]), {
            record: false,
            weightTransform: quantizer.transform,
          });
          const got = mine.values.get('logits')!.data as Float32Array;
          const ref = await ortLogits(result.exported, ids);
          expect(got.length).toBe(ref.length);
          let max = 0;
          let scale = 0;
          for (let i = 0; i < ref.length; i++) {
            max = Math.max(max, Math.abs(ref[i] - got[i]));
            scale = Math.max(scale, Math.abs(ref[i]));
          }
          expect(max).toBeLessThan(1e-4 * Math.max(1, scale));

          for (const outcome of result.compression.outcomes) {
            const name = outcome.candidate.name;
            const w = result.weights.get(name)!;
            const q = quantizer.transform(name, w);
            // what was exported is what the forward pass read
            expect(outcome.values).toEqual(q);
            if (student === pruned) {
              // the 2:4 zeros stay zero, in the float weights and in the quantized ones
              const w0 = readTensor(student, findInitializer(student, name));
              for (let i = 0; i < w.length; i++)
                if (w0[i] === 0) {
                  expect(w[i]).toBe(0);
                  expect(q[i]).toBe(0);
                }
            }
            if (resolved.method === 'kmeans') {
              // the palette written is the trained codebook; every weight is one of its 16 values
              const palette = outcome.encoder!.encoding as Palette;
              const book = readTensor(exported, findInitializer(exported, `${name}_palette_codebook`));
              expect(Float32Array.from(book as Float32Array)).toEqual(palette.codebook);
              expect(palette.codebook.length).toBeLessThanOrEqual(16);
              expect(new Set(q).size).toBeLessThanOrEqual(16);
            }
          }

          if (resolved.method === 'kmeans') {
            // held-out perplexity (ids.txt, never trained on) beats the same clustering without training:
            // 20 small steps recover part of k-means' large loss (int4's smaller one needs the bench's longer runs)
            const plain = exportCompressed(student, compressModel(student, [resolved])).model;
            expect(await ortPerplexity(result.exported)).toBeLessThan(await ortPerplexity(plain));
          }
        },
      );
    },
    600_000,
  );

  it('with only norms training, the quantized weights stay as plain quantization stored them', async () => {
    const resolved = step({ method: 'int8' });
    const ids = STORIES_HELD_OUT[1].slice(0, 33);
    const result = await qatDistill(teacherModel, null, [ids], resolved, {
      steps: 2,
      batch: 1,
      seq: 32,
      lr: 1e-3,
      train: 'norms-biases',
    });
    expect(result.trainable.every((name) => name.includes('rms'))).toBe(true);
    const plain = compressModel(teacherModel, [resolved]);
    for (const outcome of result.compression.outcomes) {
      const same = plain.outcomes.find((o) => o.candidate.name === outcome.candidate.name)!;
      expect(outcome.values).toEqual(same.values);
    }
    // the engine's forward (trained norms, int8 weights) is what onnxruntime computes from the export
    const graph = new TrainGraph(teacherModel, trainableWeights(teacherModel));
    for (const [name, w] of result.weights) graph.params.get(name)!.set(w);
    const quantizer = new FakeQuantizer(teacherModel, resolved);
    const got = graph
      .forward(decoderValues(teacherModel.graph, [ids]), {
        record: false,
        weightTransform: quantizer.transform,
      })
      .values.get('logits')!.data as Float32Array;
    const ref = await ortLogits(result.exported, ids);
    let max = 0;
    for (let i = 0; i < ref.length; i++) max = Math.max(max, Math.abs(ref[i] - got[i]));
    expect(max).toBeLessThan(1e-3);
    expect(result.weights.get('rms_final')).not.toEqual(
      readTensor(teacherModel, findInitializer(teacherModel, 'rms_final')),
    );
  }, 300_000);
});
