/** Small real ONNX graphs built in the tests (no fixtures checked in). */
import { DataType, float32ToFloat16 } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import type { TensorProto } from '../../src/core/onnx/proto.ts';

export function seededFloats(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

/** y = gelu-ish(x·W1 + b1)·W2 — two MatMuls with float32 weights, [batch, K] -> [batch, N]. */
export function mlpModel(k = 16, hidden = 32, n = 8): Uint8Array {
  return makeModelBytes({
    nodes: [
      makeNode('MatMul', ['x', 'w1'], ['h0']),
      makeNode('Add', ['h0', 'b1'], ['h1']),
      makeNode('Tanh', ['h1'], ['h2']),
      makeNode('MatMul', ['h2', 'w2'], ['y']),
    ],
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', k])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', n])],
    initializers: [
      floatTensor('w1', [k, hidden], seededFloats(k * hidden, 1, 0.5)),
      floatTensor('b1', [hidden], seededFloats(hidden, 2, 0.1)),
      floatTensor('w2', [hidden, n], seededFloats(hidden * n, 3, 0.5)),
    ],
  });
}

export function float16Tensor(name: string, dims: number[], values: Float32Array): TensorProto {
  const half = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) half[i] = float32ToFloat16(values[i]);
  return { name, dims, data_type: DataType.FLOAT16, raw_data: new Uint8Array(half.buffer) };
}

/** float16 weights cast up inside the graph, as fp16 exports of fp32-input models do. */
export function float16Model(k = 16, n = 8): Uint8Array {
  return makeModelBytes({
    nodes: [makeNode('Cast', ['w16'], ['w'], { to: DataType.FLOAT }), makeNode('MatMul', ['x', 'w'], ['y'])],
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', k])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', n])],
    initializers: [float16Tensor('w16', [k, n], seededFloats(k * n, 7, 2))],
  });
}
