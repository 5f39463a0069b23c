/**
 * The engine's fusions (src/core/train/fuse.ts): GPT-2's gelu_new as the exporter writes it (nine
 * elementwise nodes) and its attention weights (Div, Where with the mask, Softmax) each become one
 * node; the fused graph computes what onnxruntime computes from the unfused file, its weight gradients
 * equal finite differences, and a subgraph whose inner value is read elsewhere is left as it is.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import type { NodeProto } from '../../src/core/onnx/proto.ts';
import { planFusions } from '../../src/core/train/fuse.ts';
import { TrainGraph, tensorValue } from '../../src/core/train/graph.ts';
import { sizeOf } from '../../src/core/train/tensor.ts';
import { DEMO_MODEL, STORIES_MODEL } from '../helpers/fixtures.ts';
import { seededFloats } from '../helpers/models.ts';
import { ort } from '../helpers/ort.ts';

const scalar = (name: string, v: number) =>
  makeNode('Constant', [], [name], { value: floatTensor(name, [], [v]) });

/** x [2,3,4] · w1 [4,6] → gelu_new written out as HF's GPT-2 export writes it → · w2 [6,5] = y. */
function geluMlp(extraOutput = false): Uint8Array {
  const nodes: NodeProto[] = [
    makeNode('MatMul', ['x', 'w1'], ['h']),
    makeNode('Mul', ['h', 'h'], ['m0']),
    makeNode('Mul', ['h', 'm0'], ['m1']),
    scalar('c1', 0.044715),
    makeNode('Mul', ['c1', 'm1'], ['m2']),
    makeNode('Add', ['h', 'm2'], ['a1']),
    scalar('c2', 0.7978845834732056),
    makeNode('Mul', ['c2', 'a1'], ['u']),
    makeNode('Tanh', ['u'], ['t']),
    scalar('c3', 1),
    makeNode('Add', ['c3', 't'], ['a2']),
    makeNode('Mul', ['h', 'a2'], ['m4']),
    scalar('c4', 0.5),
    makeNode('Mul', ['c4', 'm4'], ['g']),
    makeNode('MatMul', ['g', 'w2'], ['y']),
  ];
  return makeModelBytes({
    nodes,
    inputs: [valueInfo('x', DataType.FLOAT, [2, 3, 4])],
    outputs: [
      valueInfo('y', DataType.FLOAT, [2, 3, 5]),
      ...(extraOutput ? [valueInfo('t', DataType.FLOAT, [2, 3, 6])] : []),
    ],
    initializers: [
      floatTensor('w1', [4, 6], seededFloats(24, 11, 1.5)),
      floatTensor('w2', [6, 5], seededFloats(30, 12)),
    ],
  });
}

function plan(bytes: Uint8Array) {
  const model = parseModel(bytesSource('gelu.onnx', bytes));
  // one-element constants: Constant nodes and initializers (stories260K's attention scale)
  const constants = new Map([
    ...model.graph.node
      .filter((n) => n.op_type === 'Constant')
      .map((n) => [n.output[0], tensorValue(model, n.attribute![0].t!).data[0]] as const),
    ...model.graph.initializer
      .filter((t) => t.data_type === DataType.FLOAT && t.dims.reduce((p, d) => p * Number(d), 1) === 1)
      .map((t) => [t.name, tensorValue(model, t).data[0]] as const),
  ]);
  return planFusions(model.graph.node, new Set(model.graph.output.map((o) => o.name)), (name) =>
    constants.get(name),
  );
}

/**
 * The fused graph's y for input x (seeded floats of `shape`) against onnxruntime on the unfused file
 * (within `tolerance`), and the gradient of L = Σ r·y for every entry of each of `weights` against
 * central finite differences. Returns the engine's y.
 */
async function checkAgainstOrtAndDifferences(
  bytes: Uint8Array,
  shape: number[],
  weights: string[],
  seeds: { x: number; r: number },
  tolerance: number,
): Promise<Float32Array> {
  const model = parseModel(bytesSource('fused.onnx', bytes));
  const x = seededFloats(sizeOf(shape), seeds.x, 2);
  const session = await ort.InferenceSession.create(bytes);
  let reference: Float32Array;
  try {
    reference = (await session.run({ x: new ort.Tensor('float32', x, shape) })).y.data as Float32Array;
  } finally {
    await session.release();
  }
  const graph = new TrainGraph(model, weights);
  const feeds = { x: { dtype: 'float32' as const, shape, data: x } };
  const fwd = graph.forward(feeds);
  const y = fwd.values.get('y')!.data as Float32Array;
  let maxDiff = 0;
  for (let i = 0; i < y.length; i++) maxDiff = Math.max(maxDiff, Math.abs(y[i] - reference[i]));
  expect(maxDiff).toBeLessThan(tolerance);
  const r = seededFloats(y.length, seeds.r);
  const grads = graph.backward(fwd, { y: r });
  const loss = () => {
    const out = graph.forward(feeds, { record: false }).values.get('y')!.data;
    let s = 0;
    for (let i = 0; i < r.length; i++) s += r[i] * out[i];
    return s;
  };
  const h = 1e-2;
  for (const name of weights) {
    const w = graph.params.get(name)!;
    const g = grads.get(name)!;
    for (let i = 0; i < w.length; i++) {
      const keep = w[i];
      w[i] = keep + h;
      const plus = loss();
      w[i] = keep - h;
      const minus = loss();
      w[i] = keep;
      expect(Math.abs((plus - minus) / (2 * h) - g[i]), `${name}[${i}]`).toBeLessThan(2e-3);
    }
  }
  return y;
}

describe('GELU (tanh form) fusion', () => {
  it('replaces the nine nodes by one that reads the graph constants', () => {
    const planned = plan(geluMlp());
    const fused = planned.filter((p) => p.op);
    expect(fused.map((p) => [p.node.op_type, p.node.input, p.node.output])).toEqual([
      ['GeluTanh (fused)', ['h'], ['g']],
    ]);
    // the two MatMuls and the four Constants stay; Mul ×6, Add ×2 and Tanh are gone
    expect(planned.map((p) => p.node.op_type).filter((t) => t !== 'Constant')).toEqual([
      'MatMul',
      'GeluTanh (fused)',
      'MatMul',
    ]);
  });

  it('leaves the subgraph alone when an inner value is also read elsewhere', () => {
    expect(plan(geluMlp(true)).some((p) => p.op)).toBe(false);
  });

  it('the fused graph equals onnxruntime on the unfused file, and its gradients equal finite differences', async () => {
    await checkAgainstOrtAndDifferences(geluMlp(), [2, 3, 4], ['w1', 'w2'], { x: 13, r: 14 }, 1e-5);
  });
});

/** s = x·w [2,2,3,3]; softmax(where(mask, finfo.min, s / 2)) with a [2,1,3,3] causal-and-padding mask. */
function attentionWeights(fillIsTrue = true, extraOutput = false): Uint8Array {
  const causal = [0, 1, 1, 0, 0, 1, 0, 0, 0];
  // the second batch row also masks its first key (padding); its first query row is then all masked
  const mask = [...causal, ...causal.map((m, i) => (i % 3 === 0 ? 1 : m))];
  const nodes: NodeProto[] = [
    makeNode('Mul', ['x', 'w'], ['s']),
    scalar('c', 2),
    makeNode('Div', ['s', 'c'], ['d']),
    makeNode('Constant', [], ['m'], {
      value: { name: 'm', dims: [2, 1, 3, 3], data_type: DataType.BOOL, int32_data: mask },
    }),
    scalar('fill', -3.4028234663852886e38),
    makeNode('Where', fillIsTrue ? ['m', 'fill', 'd'] : ['m', 'd', 'fill'], ['z']),
    makeNode('Softmax', ['z'], ['y'], { axis: -1 }),
  ];
  return makeModelBytes({
    nodes,
    inputs: [valueInfo('x', DataType.FLOAT, [2, 2, 3, 3])],
    outputs: [
      valueInfo('y', DataType.FLOAT, [2, 2, 3, 3]),
      ...(extraOutput ? [valueInfo('d', DataType.FLOAT, [2, 2, 3, 3])] : []),
    ],
    initializers: [floatTensor('w', [3], seededFloats(3, 21, 2))],
  });
}

describe('attention weights (Div, Where, Softmax) fusion', () => {
  it('becomes one node reading the scores and the mask, unless an inner value is read elsewhere', () => {
    const fused = plan(attentionWeights()).filter((p) => p.op);
    expect(fused.map((p) => [p.node.op_type, p.node.input, p.node.output])).toEqual([
      ['MaskedSoftmax (fused)', ['s', 'm'], ['y']],
    ]);
    expect(plan(attentionWeights(true, true)).some((p) => p.op)).toBe(false);
  });

  it.each([true, false])(
    'equals onnxruntime on the unfused file and finite differences (fill on the %s side)',
    async (fillIsTrue) => {
      await checkAgainstOrtAndDifferences(
        attentionWeights(fillIsTrue),
        [2, 2, 3, 3],
        ['w'],
        { x: 22, r: 23 },
        1e-6,
      );
    },
  );
});

/** s = x·w [2,2,3,3]; softmax(s·c + m) (or s / c + m) with an additive causal [3,3] mask of −1e9. */
function additiveAttention(div = false, maskFirst = false, extraOutput = false): Uint8Array {
  const mask = [0, -1e9, -1e9, 0, 0, -1e9, 0, 0, 0];
  const nodes: NodeProto[] = [
    makeNode('Mul', ['x', 'w'], ['s']),
    scalar('c', div ? 2.8284271247461903 : 0.35355338),
    makeNode(div ? 'Div' : 'Mul', div ? ['s', 'c'] : ['c', 's'], ['d']),
    makeNode('Add', maskFirst ? ['m', 'd'] : ['d', 'm'], ['z']),
    makeNode('Softmax', ['z'], ['y'], { axis: -1 }),
  ];
  return makeModelBytes({
    nodes,
    inputs: [valueInfo('x', DataType.FLOAT, [2, 2, 3, 3])],
    outputs: [
      valueInfo('y', DataType.FLOAT, [2, 2, 3, 3]),
      ...(extraOutput ? [valueInfo('z', DataType.FLOAT, [2, 2, 3, 3])] : []),
    ],
    initializers: [floatTensor('w', [3], seededFloats(3, 31, 2)), floatTensor('m', [3, 3], mask)],
  });
}

describe('attention weights with an additive mask (Mul or Div, Add, Softmax) fusion', () => {
  it('becomes one node reading the scores and the mask, unless an inner value is read elsewhere', () => {
    for (const [div, maskFirst] of [
      [false, false],
      [true, true],
    ]) {
      const fused = plan(additiveAttention(div, maskFirst)).filter((p) => p.op);
      expect(fused.map((p) => [p.node.op_type, p.node.input, p.node.output])).toEqual([
        ['ScaledMaskSoftmax (fused)', ['s', 'm'], ['y']],
      ]);
    }
    expect(plan(additiveAttention(false, false, true)).some((p) => p.op)).toBe(false);
  });

  it.each([
    [false, false],
    [true, true],
  ])(
    'equals onnxruntime on the unfused file and finite differences (div %s, mask first %s)',
    async (div, first) => {
      const y = await checkAgainstOrtAndDifferences(
        additiveAttention(div, first),
        [2, 2, 3, 3],
        ['w'],
        { x: 22, r: 23 },
        1e-6,
      );
      // the masked (causal) half is exactly 0, as onnxruntime's
      expect(y[1]).toBe(0);
    },
  );

  it('fuses every layer of stories260K', () => {
    const bytes = new Uint8Array(readFileSync(STORIES_MODEL));
    const fused = plan(bytes).filter((p) => p.op);
    expect(fused.map((p) => p.node.op_type)).toEqual(Array(5).fill('ScaledMaskSoftmax (fused)'));
  });
});

describe('fusions on the demo model', () => {
  it('fuse every layer: six GELUs and six attention softmaxes', () => {
    const bytes = new Uint8Array(readFileSync(DEMO_MODEL));
    const fused = plan(bytes).filter((p) => p.op);
    const count = (type: string) => fused.filter((p) => p.node.op_type === type).length;
    expect([count('GeluTanh (fused)'), count('MaskedSoftmax (fused)')]).toEqual([6, 6]);
  });
});
