/**
 * Learned step sizes (LSQ) for quantization-aware training (src/core/train/lsq.ts, qat.ts
 * `learnScales`): the scale and weight gradients against central finite differences of a direct
 * reference (LSQ's straight-through surrogate, round's offset held fixed) on small shapes with clipped
 * elements; the export (MatMulNBits, blocked DequantizeLinear, int8 DequantizeLinear) holds the learned
 * scales and onnxruntime-node computes what the engine's forward pass read, on a tiny model and on
 * stories260K; a short LSQ run lowers the KD loss; options that cannot go together are refused.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateCalibrationSequences } from '../../src/core/calibrate/generate.ts';
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
import { summarizeInputs } from '../../src/core/summary.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { TrainGraph } from '../../src/core/train/graph.ts';
import { decoderValues, sessionTeacher, trainableWeights } from '../../src/core/train/distill.ts';
import { int4Groups, int8Groups, lsqBackward, lsqLevels, type LsqGroups } from '../../src/core/train/lsq.ts';
import { FakeQuantizer, qatDistill } from '../../src/core/train/qat.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';
import { STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';
import { seededFloats } from '../helpers/models.ts';
import { ort } from '../helpers/ort.ts';
import { probeKdLoss } from '../helpers/train-setup.ts';

function step(s: RecipeStep) {
  return resolveRecipe({ steps: [s] })[0];
}

function errorOf(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}

/**
 * The direct reference: Σ G_i · s_g · (clip(w_i / s_g, Qn, Qp) + r_i), r_i = round(c_i) − c_i at the
 * base point held fixed (LSQ's straight-through estimator on round, as `x + (round(x) − x).detach()`),
 * in float64. At the base point it is Σ G_i · ŵ_i; its derivatives are LSQ's gradients.
 */
function surrogate(
  w: Float64Array,
  s: Float64Array,
  groups: LsqGroups,
  G: Float32Array,
  offset: Float64Array,
): number {
  let sum = 0;
  for (let i = 0; i < w.length; i++) {
    const g = groups.groupOf[i];
    const c = Math.min(groups.hi[g], Math.max(groups.lo[g], w[i] / s[g]));
    sum += G[i] * s[g] * (c + offset[i]);
  }
  return sum;
}

describe('LSQ gradients', () => {
  const cases: [string, LsqGroups, number][] = [
    // [rows, cols] = [24, 3] MatMul weight, blocks of 8 down the columns, symmetric: [−8, 7]
    ['int4 symmetric, blocks of 8', int4Groups(24, 3, 1, 8, null), 0.06],
    // a [3, 20] table (channels on rows), blocks of 8 (the last one short), zero points
    [
      'int4 asymmetric, blocks of 8 along rows',
      int4Groups(
        3,
        20,
        0,
        8,
        Uint8Array.from({ length: 9 }, (_, i) => 3 + i),
      ),
      0.07,
    ],
    ['int8 symmetric per column', int8Groups(12, 4, 1, null), 0.004],
    ['int8 asymmetric per tensor', int8Groups(12, 4, null, Uint8Array.of(200)), 0.005],
  ];
  it.each(cases)('%s: ∂/∂s and ∂/∂w equal finite differences of the direct reference', (_l, groups, s0) => {
    const n = groups.groupOf.length;
    const scales = Float32Array.from({ length: groups.lo.length }, (_, g) => s0 * (1 + 0.1 * Math.sin(g)));
    // weights up to ±0.6: many beyond the range of their scale (clipped), on both sides
    const w = seededFloats(n, 11, 0.6);
    const G = seededFloats(n, 12);
    const q = lsqLevels(w, groups, scales);
    const base = Float64Array.from(w);
    const s64 = Float64Array.from(scales);
    const offset = new Float64Array(n);
    let clipped = 0;
    for (let i = 0; i < n; i++) {
      const g = groups.groupOf[i];
      const v = w[i] / scales[g];
      const c = Math.min(groups.hi[g], Math.max(groups.lo[g], v));
      offset[i] = Math.round(c) - c;
      // the forward levels are the reference's round(clip(v))
      expect(q[i], `q[${i}]`).toBe(Math.round(c) + 0);
      if (v < groups.lo[g] || v > groups.hi[g]) clipped++;
    }
    expect(clipped).toBeGreaterThan(n / 10);
    expect(clipped).toBeLessThan(n);

    const gradW = Float32Array.from(G);
    const gradS = lsqBackward(w, groups, scales, gradW);
    for (let g = 0; g < scales.length; g++) {
      const eps = 1e-7 * Math.abs(s64[g]);
      const plus = Float64Array.from(s64);
      const minus = Float64Array.from(s64);
      plus[g] += eps;
      minus[g] -= eps;
      const fd =
        (surrogate(base, plus, groups, G, offset) - surrogate(base, minus, groups, G, offset)) / (2 * eps);
      // lsqBackward returns g · ∂/∂s with LSQ's gradient scale g
      const got = gradS[g] / groups.gradScale[g];
      expect(Math.abs(got - fd), `scale ${g}: ${got} vs ${fd}`).toBeLessThan(1e-4 * (1 + Math.abs(fd)));
    }
    let inside = 0;
    for (let i = 0; i < n; i++) {
      const eps = 1e-6;
      const plus = Float64Array.from(base);
      const minus = Float64Array.from(base);
      plus[i] += eps;
      minus[i] -= eps;
      const fd =
        (surrogate(plus, s64, groups, G, offset) - surrogate(minus, s64, groups, G, offset)) / (2 * eps);
      expect(Math.abs(gradW[i] - fd), `w[${i}]`).toBeLessThan(1e-4 * (1 + Math.abs(fd)));
      if (gradW[i] !== 0) inside++;
    }
    // clipped weights get no gradient, the others get G
    expect(inside).toBe(n - clipped);
    // the gradient scale is 1 / sqrt(n · Qp)
    const perScale = n / scales.length;
    const qp =
      groups.hi[0] - groups.lo[0] === 15 ? (groups.lo[0] === -8 ? 7 : 15) : groups.lo[0] === -128 ? 127 : 255;
    if (Number.isInteger(perScale)) expect(groups.gradScale[0]).toBeCloseTo(1 / Math.sqrt(perScale * qp), 6);
  });
});

describe('LSQ at the bounds', () => {
  it("the kernel's symmetric int4 scale puts a block's largest weight at −8: it keeps its gradient", () => {
    // one block of 16 (a [16, 1] weight), the largest magnitude 0.8 positive: s = 0.8 / −8 = −0.1
    const w = Float32Array.from({ length: 16 }, (_, i) => (i === 3 ? 0.8 : 0.03 * (i - 8)));
    const groups = int4Groups(16, 1, 1, 16, null);
    const scales = Float32Array.of(-0.1);
    expect(lsqLevels(w, groups, scales)[3]).toBe(-8);
    const grad = new Float32Array(16).fill(1);
    const gradS = lsqBackward(w, groups, scales, grad);
    expect(grad[3]).toBe(1);
    // beyond the bound it is clipped: no weight gradient, and it adds Qn (−8) to the scale's instead of round(v) − v = 0
    const beyond = Float32Array.from(w);
    beyond[3] = 0.9;
    const grad2 = new Float32Array(16).fill(1);
    const gradS2 = lsqBackward(beyond, groups, scales, grad2);
    expect(grad2[3]).toBe(0);
    expect((gradS2[0] - gradS[0]) / groups.gradScale[0]).toBeCloseTo(-8, 5);
  });
});

/** x [2, 32] → MatMul w1 [32, 16] → Tanh → Gemm(transB) w2 [4, 16] → Tanh → y: both channel layouts, y not logits. */
function tinyModel(): OnnxModel {
  const bytes = makeModelBytes({
    nodes: [
      makeNode('MatMul', ['x', 'w1'], ['h']),
      makeNode('Tanh', ['h'], ['a']),
      makeNode('Gemm', ['a', 'w2'], ['z'], { transB: 1 }),
      makeNode('Tanh', ['z'], ['y']),
    ],
    inputs: [valueInfo('x', DataType.FLOAT, [2, 32])],
    outputs: [valueInfo('y', DataType.FLOAT, [2, 4])],
    initializers: [
      floatTensor('w1', [32, 16], seededFloats(512, 3, 0.4)),
      floatTensor('w2', [4, 16], seededFloats(64, 4)),
    ],
  });
  return parseModel(bytesSource('tiny.onnx', bytes));
}

describe('the export of learned scales', () => {
  it.each([
    ['int4 block 16, MatMulNBits', { method: 'int4', options: { blockSize: 16 } }, 'MatMulNBits'],
    [
      'int4 block 16 asymmetric, DequantizeLinear',
      { method: 'int4', options: { blockSize: 16, symmetric: false, format: 'dequantize' } },
      'DequantizeLinear',
    ],
    ['int8 per channel', { method: 'int8' }, 'DequantizeLinear'],
    [
      'int8 asymmetric per tensor',
      { method: 'int8', options: { symmetric: false, granularity: 'per-tensor' } },
      'DequantizeLinear',
    ],
  ] as const)(
    '%s: a tiny model exported with moved scales is the engine forward in onnxruntime',
    async (_l, s, op) => {
      const model = tinyModel();
      const quantizer = new FakeQuantizer(model, step(s as RecipeStep), { learnScales: true });
      const params = quantizer.transformParams()!;
      expect([...params.params.keys()]).toEqual(['w1', 'w2']);
      const graph = new TrainGraph(model, ['w1', 'w2']);
      // scales and weights as training would leave them: every scale moved (some shrink: more clipping)
      for (const p of params.params.values()) for (let g = 0; g < p.length; g++) p[g] *= 0.7 + 0.05 * (g % 9);
      for (const w of graph.params.values()) for (let i = 0; i < w.length; i++) w[i] += 0.01 * Math.sin(i);
      const x = { dtype: 'float32' as const, shape: [2, 32], data: seededFloats(64, 5) };
      const got = graph
        .forward({ x }, { record: false, weightTransform: quantizer.transform })
        .values.get('y')!.data as Float32Array;
      const { exported } = quantizer.exportModel(model, graph.params);
      const file = parseModel(bytesSource('lsq.onnx', exported));
      expect(file.graph.node.some((n) => n.op_type === op)).toBe(true);
      // the file stores the learned scales, not the kernel's own scales of these weights
      const scaleTensors = file.graph.initializer.filter(
        (t) => t.data_type === DataType.FLOAT && /scale/.test(t.name),
      );
      const stored = scaleTensors.map((t) => Float32Array.from(readTensor(file, t) as Float32Array));
      const learned = [...params.params.values()];
      expect(stored.map((a) => [...a].sort())).toEqual(learned.map((a) => [...a].sort()));
      const session = await ort.InferenceSession.create(exported, { extra: EXACT_WEIGHT_ONLY });
      try {
        const out = await session.run({ x: new ort.Tensor('float32', x.data, [2, 32]) });
        const ref = out.y.data as Float32Array;
        for (let i = 0; i < ref.length; i++) expect(Math.abs(ref[i] - got[i])).toBeLessThan(1e-5);
      } finally {
        await session.release();
      }
    },
  );

  it('refuses learned scales with k-means, and a scale learning rate without them', () => {
    const model = tinyModel();
    const kmeans = errorOf(() => new FakeQuantizer(model, step({ method: 'kmeans' }), { learnScales: true }));
    expect(isModelError(kmeans) && kmeans.code).toBe('invalid-argument');
    expect((kmeans as Error).message).toMatch(/int4 and int8/);
    const lr = errorOf(() => new FakeQuantizer(model, step({ method: 'int4' }), { scaleLr: 0.1 }));
    expect(isModelError(lr) && lr.code).toBe('invalid-argument');
    const zero = errorOf(
      () => new FakeQuantizer(model, step({ method: 'int4' }), { learnScales: true, scaleLr: 0 }),
    );
    expect(isModelError(zero) && zero.code).toBe('invalid-argument');
  });
});

const heldOut = parseIdsText(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8'));

describe('LSQ on stories260K', () => {
  const teacherBytes = new Uint8Array(readFileSync(STORIES_MODEL));
  const model = parseModel(bytesSource('stories260K.onnx', teacherBytes));

  it('a run resumed from its checkpoint ends with the scales and weights of one uninterrupted run', async () => {
    const resolved = step({ method: 'int4', options: { blockSize: 32 } });
    const data = [heldOut[2].slice(0, 200)];
    const opts = { steps: 2, batch: 1, seq: 16, lr: 1e-3, warmup: 1, seed: 3 };
    const scalesOf = (q: FakeQuantizer) => q.transformParams()!.params;
    const whole = new FakeQuantizer(model, resolved, { learnScales: true });
    const once = await qatDistill(model, null, data, whole, opts);
    const stop = new AbortController();
    const first = await qatDistill(model, null, data, resolved, {
      ...opts,
      learnScales: true,
      signal: stop.signal,
      onStep: () => stop.abort(),
    });
    expect(first.checkpoint.step).toBe(1);
    const resumed = new FakeQuantizer(model, resolved, { learnScales: true });
    const second = await qatDistill(model, null, data, resumed, { ...opts, resume: first.checkpoint });
    expect(second.weights).toEqual(once.weights);
    expect(scalesOf(resumed)).toEqual(scalesOf(whole));
    expect(second.exported).toEqual(once.exported);
  }, 300_000);

  it.each([
    ['int4 block 32 (MatMulNBits)', { method: 'int4', options: { blockSize: 32 } }, 20],
    ['int8 asymmetric per channel', { method: 'int8', options: { symmetric: false } }, 3],
  ] as const)(
    '%s: the scales train, the KD loss falls, and onnxruntime runs the export as the engine trained it',
    async (label, s, steps) => {
      const session = await ort.InferenceSession.create(teacherBytes);
      try {
        const inputs = summarizeInputs(model.graph);
        const generated = await generateCalibrationSequences(session, ort.Tensor, inputs, {
          count: 34,
          length: 48,
          seed: 5,
          bos: 1,
        });
        const train = generated.slice(0, 32);
        const probe = generated.slice(32);
        const teacher = sessionTeacher(session, ort.Tensor, inputs);
        const probeLogits = await teacher(probe);
        const quantizer = new FakeQuantizer(model, step(s as RecipeStep), { learnScales: true });
        const initial = new Map(
          [...quantizer.transformParams()!.params].map(([k, v]) => [k, Float32Array.from(v)]),
        );
        const kdAt = probeKdLoss(model, probe, probeLogits, quantizer.transform);
        const before = kdAt(null);
        const result = await qatDistill(model, teacher, train, quantizer, {
          steps,
          batch: 4,
          seq: 48,
          lr: 5e-4,
          warmup: 5,
          seed: 1,
        });
        if (steps >= 20) expect(kdAt(result.weights), label).toBeLessThan(before);
        // every weight's scales moved, and stayed away from 0 with their sign
        let moved = 0;
        for (const [name, p] of quantizer.transformParams()!.params) {
          const p0 = initial.get(name)!;
          if (p.some((v, g) => v !== p0[g])) moved++;
          for (let g = 0; g < p.length; g++) expect(Math.sign(p[g])).toBe(Math.sign(p0[g]));
        }
        expect(moved).toBe(initial.size);
        // the checkpoint carries the scales and their optimizer (a resumed run continues them)
        expect(result.checkpoint.transform?.params.size).toBe(initial.size);

        const ids = heldOut[0].slice(0, 40);
        const graph = new TrainGraph(model, trainableWeights(model));
        for (const [name, w] of result.weights) graph.params.get(name)!.set(w);
        const got = graph
          .forward(decoderValues(model.graph, [ids]), {
            record: false,
            weightTransform: quantizer.transform,
          })
          .values.get('logits')!.data as Float32Array;
        const ortSession = await ort.InferenceSession.create(result.exported, { extra: EXACT_WEIGHT_ONLY });
        let ref: Float32Array;
        try {
          const out = await ortSession.run({
            input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
          });
          ref = out.logits.data as Float32Array;
        } finally {
          await ortSession.release();
        }
        expect(got.length).toBe(ref.length);
        let max = 0;
        for (let i = 0; i < ref.length; i++) max = Math.max(max, Math.abs(ref[i] - got[i]));
        expect(max).toBeLessThan(1e-4);
        // the exported scales are the learned ones
        if (s.method === 'int4') {
          const [name, learned] = [...quantizer.transformParams()!.params][0];
          const file = parseModel(bytesSource('lsq.onnx', result.exported));
          const stored = readTensor(file, findInitializer(file, `${name}_scales`));
          expect(Float32Array.from(stored as Float32Array)).toEqual(learned);
        }
      } finally {
        await session.release();
      }
    },
    600_000,
  );
});
