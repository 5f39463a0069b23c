/**
 * float16 and bfloat16 source models: their weights are widened one at a time for the kernels and
 * stored back in their own type (dense results) or decoded to float32 and cast back (encodings), so
 * every reader keeps its type. onnxruntime-node runs the float16 exports and matches the preview.
 */
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { DataType, castFloat16ToFloat32, castFloat32ToFloat16 } from '../../src/core/onnx/dtypes.ts';
import { makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import type { TensorProto } from '../../src/core/onnx/proto.ts';
import { bytesSource, parseModel, readTensorFloat32 } from '../../src/core/onnx/model.ts';
import { concatChunks, writeModel } from '../../src/core/onnx/write.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { exportStreaming, memorySpool, streamOutcomes } from '../../src/core/compress/stream-export.ts';
import { resolveRecipe, type Recipe } from '../../src/core/compress/recipe.ts';
import { float16Tensor, seededFloats } from '../helpers/models.ts';

const K = 64;
const H = 128;
const N = 32;

function bfloat16Tensor(name: string, dims: number[], values: Float32Array): TensorProto {
  const bits = new Uint32Array(values.buffer.slice(0));
  const half = Uint16Array.from(bits, (b) => b >>> 16); // truncation: the source's own values
  return { name, dims, data_type: DataType.BFLOAT16, raw_data: new Uint8Array(half.buffer) };
}

/** y = relu(x · w1) · w2 in `dtype`, the weights stored in `dtype`, with external data. */
function halfModel(dtype: number) {
  const tensor = dtype === DataType.FLOAT16 ? float16Tensor : bfloat16Tensor;
  const bytes = makeModelBytes({
    nodes: [
      makeNode('MatMul', ['x', 'w1'], ['h']),
      makeNode('Relu', ['h'], ['r']),
      makeNode('MatMul', ['r', 'w2'], ['y']),
    ],
    inputs: [valueInfo('x', dtype, ['batch', K])],
    outputs: [valueInfo('y', dtype, ['batch', N])],
    initializers: [
      tensor('w1', [K, H], seededFloats(K * H, 1, 0.5)),
      tensor('w2', [H, N], seededFloats(H * N, 2, 0.5)),
    ],
  });
  const written = writeModel(parseModel(bytesSource('half.onnx', bytes)), {
    externalData: { location: 'half.onnx_data' },
  });
  const data = concatChunks(written.externalData!.chunks);
  return () => parseModel(bytesSource('half.onnx', written.model), [bytesSource('half.onnx_data', data)]);
}

/** w2 writes the graph's output: an LM head to the selector, opted in. */
const ALL = { lmHead: true };

const RECIPES: [string, Recipe][] = [
  ['int8', { version: 1, steps: [{ method: 'int8', select: ALL }] }],
  ['int4 block 32', { version: 1, steps: [{ method: 'int4', options: { blockSize: 32 }, select: ALL }] }],
  ['prune 50 %', { version: 1, steps: [{ method: 'prune', options: { sparsity: 0.5 }, select: ALL }] }],
  ['k-means 16', { version: 1, steps: [{ method: 'kmeans', options: { clusters: 16 }, select: ALL }] }],
];

/** relu(x · w1) · w2 in float64 from the preview's weights. */
function reference(x: Float32Array, rows: number, w1: Float32Array, w2: Float32Array): Float64Array {
  const y = new Float64Array(rows * N);
  for (let b = 0; b < rows; b++) {
    const h = new Float64Array(H);
    for (let k = 0; k < K; k++) for (let j = 0; j < H; j++) h[j] += x[b * K + k] * w1[k * H + j];
    for (let j = 0; j < H; j++) {
      const r = Math.max(0, h[j]);
      for (let n = 0; n < N; n++) y[b * N + n] += r * w2[j * N + n];
    }
  }
  return y;
}

async function streamed(open: () => ReturnType<ReturnType<typeof halfModel>>, recipe: Recipe) {
  const model = open();
  const compression = streamOutcomes(model, resolveRecipe(recipe), { compressAll: compressModel });
  const data: Uint8Array[] = [];
  let onnx = new Uint8Array(0);
  await exportStreaming(model, compression.outcomes, {
    externalData: { location: 'out.onnx_data' },
    spool: memorySpool(),
    sink: { writeData: (b) => void data.push(b.slice()), writeModel: (b) => void (onnx = b.slice()) },
  });
  return { onnx, data: concatChunks(data), reports: compression.result().reports };
}

describe('float16 and bfloat16 source models', () => {
  it.each(RECIPES)(
    'float16, %s: counted at 2 bytes a weight, streamed as exported in memory, run by onnxruntime as previewed',
    async (_, recipe) => {
      const open = halfModel(DataType.FLOAT16);
      const model = open();
      const result = compressModel(model, resolveRecipe(recipe));
      expect(result.reports.map((r) => r.name)).toEqual(['w1', 'w2']);
      for (const r of result.reports) expect(r.originalBytes).toBe(r.params * 2);
      if (recipe.steps[0].method === 'prune')
        for (const r of result.reports) expect(r.storedBytes).toBe(r.params * 2);
      const memory = exportCompressed(model, result, { externalData: { location: 'out.onnx_data' } });
      const stream = await streamed(open, recipe);
      expect(Buffer.from(stream.onnx).equals(Buffer.from(memory.model))).toBe(true);
      expect(Buffer.from(stream.data).equals(Buffer.from(concatChunks(memory.externalData!.chunks)))).toBe(
        true,
      );
      expect(stream.reports).toEqual(result.reports);

      // onnxruntime-node on the embedded export: float16 in and out, as the source
      const embedded = exportCompressed(model, result).model;
      const session = await ort.InferenceSession.create(embedded, { logSeverityLevel: 3 });
      const rows = 3;
      const x = seededFloats(rows * K, 9, 1);
      const xHalf = castFloat16ToFloat32(castFloat32ToFloat16(x)); // the input as float16 holds it
      const out = await session.run({ x: new ort.Tensor('float16', castFloat32ToFloat16(x), [rows, K]) });
      await session.release();
      expect(out.y.type).toBe('float16');
      const got = castFloat16ToFloat32(out.y.data as Uint16Array);
      const [w1, w2] = result.outcomes.map((o) => o.values);
      const want = reference(xHalf, rows, w1, w2);
      const scale = Math.max(...want.map(Math.abs));
      for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThan(0.01 * scale);
    },
  );

  it('bfloat16: a pruned weight is stored as bfloat16 again, exactly the preview; an encoding is cast back to bfloat16', async () => {
    const open = halfModel(DataType.BFLOAT16);
    const model = open();
    const pruned = compressModel(model, resolveRecipe(RECIPES[2][1]));
    const out = parseModel(bytesSource('o.onnx', exportCompressed(model, pruned).model));
    const w1 = out.graph.initializer.find((t) => t.name === 'w1')!;
    expect(w1.data_type).toBe(DataType.BFLOAT16);
    expect(readTensorFloat32(out, w1)).toEqual(pruned.outcomes[0].values);

    const int8 = compressModel(model, resolveRecipe(RECIPES[0][1]));
    const encoded = parseModel(bytesSource('o.onnx', exportCompressed(model, int8).model));
    const casts = encoded.graph.node.filter((n) => n.op_type === 'Cast');
    expect(casts.map((n) => n.output[0]).sort()).toEqual(['w1', 'w2']);
    for (const c of casts) expect(c.attribute?.find((a) => a.name === 'to')?.i).toBe(DataType.BFLOAT16);
    // the cast reads a DequantizeLinear's output, written before it in the node list
    const order = encoded.graph.node.map((n) => n.output[0]);
    for (const c of casts) expect(order.indexOf(c.input[0])).toBeLessThan(order.indexOf(c.output[0]));
    const stream = await streamed(open, RECIPES[0][1]);
    const memory = exportCompressed(model, int8, { externalData: { location: 'out.onnx_data' } });
    expect(Buffer.from(stream.onnx).equals(Buffer.from(memory.model))).toBe(true);
  });
});
