/** Structured-pruning references: the original model with units zeroed (or scaled) instead of removed. */
import { readTensorFloat32, type OnnxModel } from '../../src/core/onnx/model.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { rawTensor, writeModel } from '../../src/core/onnx/write.ts';

/** The model with rows (dims[0] indices) of some weights, and whole tensors, multiplied by `factor`. */
export function scaledRows(
  model: OnnxModel,
  rows: Record<string, number[]>,
  factor: number,
  whole: string[] = [],
): Uint8Array {
  const initializer = model.graph.initializer.map((t) => {
    if (!(t.name in rows) && !whole.includes(t.name)) return t;
    const v = readTensorFloat32(model, t).slice();
    if (whole.includes(t.name)) for (let i = 0; i < v.length; i++) v[i] *= factor;
    else {
      const cols = t.dims.length === 2 ? Number(t.dims[1]) : 1;
      for (const r of rows[t.name]) for (let i = r * cols; i < (r + 1) * cols; i++) v[i] *= factor;
    }
    return rawTensor(t.name, DataType.FLOAT, t.dims.map(Number), new Uint8Array(v.buffer));
  });
  return writeModel(model, { graph: { ...model.graph, initializer } }).model;
}

/** The model with rows (dims[0] indices) of some weights and whole biases set to zero. */
export function zeroed(model: OnnxModel, rows: Record<string, number[]>, whole: string[] = []): Uint8Array {
  return scaledRows(model, rows, 0, whole);
}
