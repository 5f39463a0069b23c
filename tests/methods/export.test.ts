/**
 * Every method's export, judged by onnxruntime-node: the exported model's outputs must equal those of
 * the source graph with the studio's own decoded weights put in as plain float32 (the preview). Tolerance:
 * max |Δ| ≤ 1e-4 · (1 + max |reference|), room for the runtime's different summation order in
 * MatMulNBits; everything else matches to float rounding.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { findInitializer, readTensorFloat32 } from '../../src/core/onnx/model.ts';
import type { RecipeStep } from '../../src/core/compress/recipe.ts';
import { decodeModelProto } from '../../src/core/onnx/proto.ts';
import { seededFloats } from '../helpers/models.ts';
import { floatInput, idsInput } from '../helpers/ort.ts';
import {
  compressBytes,
  denseReference,
  exportedModel,
  maxAbs,
  maxAbsDiff,
  opTypes,
  runOutput,
} from '../helpers/compress.ts';
import { STORIES_DIR } from '../helpers/fixtures.ts';

const STORIES = STORIES_DIR;
const storiesBytes = new Uint8Array(readFileSync(join(STORIES, 'model.onnx')));
const storiesIds = readFileSync(join(STORIES, 'ids.txt'), 'utf8')
  .trim()
  .split('\n')[0]
  .split(/\s+/)
  .slice(0, 48)
  .map(Number);

/** x[b,64] → MatMul W1[64,96] → Tanh → MatMul W2[96,40] → Gemm(W3[24,40], transB) → y[b,24]. */
function mlp(): Uint8Array {
  return makeModelBytes({
    nodes: [
      makeNode('MatMul', ['x', 'w1'], ['h1'], {}, { name: 'mm1' }),
      makeNode('Tanh', ['h1'], ['a1']),
      makeNode('MatMul', ['a1', 'w2'], ['h2'], {}, { name: 'mm2' }),
      makeNode('Gemm', ['h2', 'w3', 'b3'], ['y'], { transB: 1 }),
    ],
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', 64])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', 24])],
    initializers: [
      floatTensor('w1', [64, 96], seededFloats(64 * 96, 1, 0.3)),
      floatTensor('w2', [96, 40], seededFloats(96 * 40, 2, 0.3)),
      floatTensor('w3', [24, 40], seededFloats(24 * 40, 3, 0.3)),
      floatTensor('b3', [24], seededFloats(24, 4, 0.1)),
    ],
  });
}

const CASES: { name: string; steps: RecipeStep[]; ops: string[] }[] = [
  { name: 'fp16', steps: [{ method: 'fp16' }], ops: ['Cast'] },
  { name: 'int8 per-channel symmetric', steps: [{ method: 'int8' }], ops: ['DequantizeLinear'] },
  {
    name: 'int8 per-tensor asymmetric',
    steps: [{ method: 'int8', options: { granularity: 'per-tensor', symmetric: false } }],
    ops: ['DequantizeLinear'],
  },
  { name: 'int4 b32 MatMulNBits', steps: [{ method: 'int4' }], ops: ['MatMulNBits'] },
  {
    name: 'int4 b16 asymmetric MatMulNBits',
    steps: [{ method: 'int4', options: { blockSize: 16, symmetric: false } }],
    ops: ['MatMulNBits'],
  },
  {
    name: 'int4 b64 DequantizeLinear (opset 21)',
    steps: [{ method: 'int4', options: { blockSize: 64, format: 'dequantize' } }],
    ops: ['DequantizeLinear'],
  },
  {
    name: 'int4 b32 asymmetric DequantizeLinear',
    steps: [{ method: 'int4', options: { format: 'dequantize', symmetric: false } }],
    ops: ['DequantizeLinear'],
  },
  { name: 'prune 30% per tensor', steps: [{ method: 'prune', options: { sparsity: 0.3 } }], ops: [] },
  { name: 'prune 2:4', steps: [{ method: 'prune', options: { pattern: '2:4' } }], ops: [] },
  {
    name: 'k-means 16 palette',
    steps: [{ method: 'kmeans', options: { clusters: 16 } }],
    ops: ['BitShift', 'Gather'],
  },
  {
    name: 'k-means 4 per-channel palette',
    steps: [{ method: 'kmeans', options: { clusters: 4, perChannel: true } }],
    ops: ['BitShift', 'Gather', 'Add'],
  },
  {
    name: 'k-means 200 palette (8-bit indices)',
    steps: [{ method: 'kmeans', options: { clusters: 200 } }],
    ops: ['Gather'],
  },
  { name: 'k-means 16 dense', steps: [{ method: 'kmeans', options: { export: 'dense' } }], ops: [] },
  {
    name: 'prune 50% global then int4',
    steps: [
      { method: 'prune', options: { sparsity: 0.5, scope: 'global' } },
      { method: 'int4', options: { blockSize: 16 } },
    ],
    ops: ['MatMulNBits'],
  },
  {
    name: 'prune 2:4 then k-means 8',
    steps: [
      { method: 'prune', options: { pattern: '2:4' } },
      { method: 'kmeans', options: { clusters: 8 } },
    ],
    ops: ['Gather'],
  },
];

async function expectMatchesPreview(
  source: Uint8Array,
  steps: RecipeStep[],
  feeds: Parameters<typeof runOutput>[1],
  output: string,
) {
  const c = compressBytes(source, steps);
  const got = await runOutput(c.exported, feeds, output);
  const want = await runOutput(denseReference(c), feeds, output);
  expect(got.length).toBe(want.length);
  expect(maxAbsDiff(got, want)).toBeLessThanOrEqual(1e-4 * (1 + maxAbs(want)));
  return c;
}

describe('exports run in onnxruntime-node and compute with the previewed weights', () => {
  for (const { name, steps, ops } of CASES) {
    it(`${name} — small MLP (MatMul, Gemm transB, K not a multiple of the block)`, async () => {
      // the MLP's last layer (Gemm, transB) produces the graph output, so it counts as the LM head
      const withHead = steps.map((s) => ({ ...s, select: { lmHead: true } }));
      const c = await expectMatchesPreview(mlp(), withHead, { x: floatInput([3, 64], 5) }, 'y');
      const types = opTypes(c.exported);
      for (const op of ops) expect(types).toContain(op);
      expect(c.result.reports.map((r) => r.name).sort()).toEqual(['w1', 'w2', 'w3']);
      const g = decodeModelProto(c.exported).graph!;
      expect(g.input.map((i) => i.name)).toEqual(['x']);
      expect(g.output.map((o) => o.name)).toEqual(['y']);
    });

    it(`${name} — stories260K (real Llama LM) with its embedding/LM head included`, async () => {
      const withEmbeddings = steps.map((s) => ({ ...s, select: { embeddings: true } }));
      const c = await expectMatchesPreview(storiesBytes, withEmbeddings, idsInput(storiesIds), 'logits');
      expect(c.result.reports.some((r) => r.name === 'emb')).toBe(true);
    });
  }

  it('with onnxruntime’s default options DequantizeLinear→MatMul is fused to MatMulNBits with int8 activations: close, not exact', async () => {
    const c = compressBytes(storiesBytes, [{ method: 'int8' }]);
    const feeds = idsInput(storiesIds);
    const exact = await runOutput(c.exported, feeds, 'logits');
    const fused = await runOutput(c.exported, feeds, 'logits', {});
    const diff = maxAbsDiff(exact, fused);
    expect(diff).toBeGreaterThan(0);
    expect(diff).toBeLessThan(0.05 * maxAbs(exact));
  });

  it('MatMulNBits follows onnxruntime’s layout: B [N, blocks, blob], scales [N·blocks], attributes K N bits block_size', () => {
    const c = compressBytes(mlp(), [{ method: 'int4', options: { blockSize: 32, symmetric: false } }]);
    const g = decodeModelProto(c.exported).graph!;
    const node = g.node.find((n) => n.op_type === 'MatMulNBits' && n.output[0] === 'h2')!;
    expect(node.domain).toBe('com.microsoft');
    expect(node.name).toBe('mm2_Q4');
    const attrs = Object.fromEntries(node.attribute!.map((a) => [a.name, Number(a.i)]));
    expect(attrs).toEqual({ K: 96, N: 40, bits: 4, block_size: 32 });
    expect(node.input).toEqual(['a1', 'w2_Q4', 'w2_scales', 'w2_zero_points']);
    const dims = (name: string) => g.initializer.find((t) => t.name === name)!.dims.map(Number);
    expect(dims('w2_Q4')).toEqual([40, 3, 16]);
    expect(dims('w2_scales')).toEqual([120]);
    expect(dims('w2_zero_points')).toEqual([40 * 2]);
    expect(decodeModelProto(c.exported).opset_import).toContainEqual({ domain: 'com.microsoft', version: 1 });
  });

  it('blocked int4 DequantizeLinear raises the opset to 21 and rewrites ReduceMean axes (stories260K uses opset 17)', () => {
    const c = compressBytes(storiesBytes, [{ method: 'int4', options: { format: 'dequantize' } }]);
    const proto = decodeModelProto(c.exported);
    expect(proto.opset_import.find((o) => !o.domain)?.version).toBe(21);
    const reduce = proto.graph!.node.filter((n) => n.op_type === 'ReduceMean');
    expect(reduce.length).toBeGreaterThan(0);
    for (const n of reduce) {
      expect(n.input.length).toBe(2);
      expect(n.attribute?.some((a) => a.name === 'axes')).toBe(false);
    }
    const dq = proto.graph!.node.find((n) => n.op_type === 'DequantizeLinear')!;
    const q = proto.graph!.initializer.find((t) => t.name === dq.input[0])!;
    expect(q.data_type).toBe(DataType.INT4);
  });
});

describe('sizes and patterns of exported weights', () => {
  function exportedWeightBytes(c: ReturnType<typeof compressBytes>): { before: number; after: number } {
    const before = c.result.totals.originalWeightBytes;
    const names = new Set(c.model.graph.initializer.map((t) => t.name));
    const proto = decodeModelProto(c.exported);
    // bytes of every initializer that is new or changed, i.e. what the compressed weights became
    let after = 0;
    for (const t of proto.graph!.initializer) {
      const isNew = !names.has(t.name) || c.result.reports.some((r) => r.name === t.name);
      if (isNew) after += t.raw_data?.byteLength ?? 0;
    }
    return { before, after };
  }

  it('int8 per-channel stores ≤ 0.30× and int4 block 32 ≤ 0.19× the fp32 bytes of the quantized weights', () => {
    const int8 = exportedWeightBytes(compressBytes(storiesBytes, [{ method: 'int8' }]));
    const int4 = exportedWeightBytes(
      compressBytes(storiesBytes, [{ method: 'int4', options: { blockSize: 32 } }]),
    );
    expect(int8.after / int8.before).toBeLessThanOrEqual(0.3);
    expect(int4.after / int4.before).toBeLessThanOrEqual(0.19);
    expect(int4.after / int4.before).toBeGreaterThan(0.12); // 4 bits plus scales, not nothing
  });

  it('pruning reaches the exact target sparsity per tensor and globally, read back from the exported file', () => {
    const per = compressBytes(storiesBytes, [{ method: 'prune', options: { sparsity: 0.37 } }]);
    const out = exportedModel(per.exported);
    for (const r of per.result.reports) {
      const w = readTensorFloat32(out, findInitializer(out, r.name));
      expect(w.filter((v) => v === 0).length).toBe(Math.round(0.37 * w.length));
    }
    const glob = compressBytes(storiesBytes, [
      { method: 'prune', options: { sparsity: 0.37, scope: 'global' } },
    ]);
    const gout = exportedModel(glob.exported);
    let zeros = 0;
    let total = 0;
    for (const r of glob.result.reports) {
      const w = readTensorFloat32(gout, findInitializer(gout, r.name));
      zeros += w.filter((v) => v === 0).length;
      total += w.length;
    }
    expect(zeros).toBe(Math.round(0.37 * total));
  });

  it('2:4 and 4:8 patterns hold in every group along the input dimension of every exported weight', () => {
    for (const [n, m] of [
      [2, 4],
      [4, 8],
    ]) {
      const c = compressBytes(storiesBytes, [{ method: 'prune', options: { pattern: `${n}:${m}` } }]);
      const out = exportedModel(c.exported);
      for (const r of c.result.reports) {
        const [rows, cols] = r.shape;
        const w = readTensorFloat32(out, findInitializer(out, r.name));
        for (let col = 0; col < cols; col++)
          for (let k0 = 0; k0 + m <= rows; k0 += m) {
            let kept = 0;
            for (let j = 0; j < m; j++) if (w[(k0 + j) * cols + col] !== 0) kept++;
            expect(kept).toBeLessThanOrEqual(n);
          }
      }
    }
  });

  it('k-means output has at most K distinct values per codebook, and pruned zeros survive it', () => {
    const c = compressBytes(storiesBytes, [
      { method: 'prune', options: { sparsity: 0.5 } },
      { method: 'kmeans', options: { clusters: 8 } },
    ]);
    for (const o of c.result.outcomes) {
      expect(new Set(o.values).size).toBeLessThanOrEqual(8);
      expect(o.values.filter((v) => v === 0).length).toBe(Math.round(0.5 * o.values.length));
    }
    const report = c.result.reports[0];
    // 3-bit palettes pack into 4-bit indices: bits per weight states that, codebook included
    expect(report.bitsPerWeight).toBeCloseTo(4 + (8 * 32) / report.params, 6);
  });
});
