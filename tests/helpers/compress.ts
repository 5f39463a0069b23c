/** Compress a model in memory, export it, and build the dense reference the export must reproduce. */
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { rawTensor, writeModel } from '../../src/core/onnx/write.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { compressModel, type CompressionResult } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { decodeModelProto } from '../../src/core/onnx/proto.ts';
import { ort, type Feeds } from './ort.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';

export interface Compressed {
  model: OnnxModel;
  result: CompressionResult;
  exported: Uint8Array;
}

export function compressBytes(bytes: Uint8Array, steps: RecipeStep[]): Compressed {
  const model = parseModel(bytesSource('model.onnx', bytes));
  const result = compressModel(model, resolveRecipe({ steps }));
  return { model, result, exported: exportCompressed(model, result).model };
}

/** The source graph with each compressed weight replaced by the studio's preview values, as float32. */
export function denseReference(c: Compressed): Uint8Array {
  const replaced = new Map(c.result.outcomes.map((o) => [o.candidate.name, o.values]));
  const initializer = c.model.graph.initializer.map((t) => {
    const v = replaced.get(t.name);
    return v ? rawTensor(t.name, DataType.FLOAT, t.dims.map(Number), new Uint8Array(v.buffer.slice(0))) : t;
  });
  return writeModel(c.model, { graph: { ...c.model.graph, initializer } }).model;
}

/** Run with the studio's session options (weight-only graphs computed exactly), or onnxruntime's defaults. */
export async function runOutput(
  bytes: Uint8Array,
  feeds: Feeds,
  output: string,
  options: ort.InferenceSession.SessionOptions = { extra: EXACT_WEIGHT_ONLY },
): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes, options);
  try {
    return (await session.run(feeds))[output].data as Float32Array;
  } finally {
    await session.release();
  }
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function maxAbs(a: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

export function opTypes(bytes: Uint8Array): string[] {
  return decodeModelProto(bytes).graph?.node.map((n) => n.op_type) ?? [];
}

export function exportedModel(bytes: Uint8Array): OnnxModel {
  return parseModel(bytesSource('exported.onnx', bytes));
}
