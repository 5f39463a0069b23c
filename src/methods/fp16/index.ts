/** float16 weights: the baseline every other method is compared with. Exported as a Cast back to float32. */
import { DataType, float16ToFloat32, float32ToFloat16 } from '../../core/onnx/dtypes.ts';
import { makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { CompressionMethod } from '../types.ts';
import { bytesOf } from '../bytes.ts';

// round-to-nearest-even to binary16; values beyond ±65504 become ±Infinity, as in every fp16 export
export function castFloat32ToFloat16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = float32ToFloat16(x[i]);
  return out;
}

export function castFloat16ToFloat32(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) out[i] = float16ToFloat32(h[i]);
  return out;
}

export const fp16Method: CompressionMethod<Record<string, never>, Uint16Array> = {
  id: 'fp16',
  label: 'float16',
  summary: 'Store weights as IEEE half floats: half the size, almost no error.',
  role: 'encode',
  options: [],
  apply(tensors) {
    return tensors.map((t) => {
      const half = castFloat32ToFloat16(t.values);
      return { values: castFloat16ToFloat32(half), storedBytes: half.byteLength, encoding: half };
    });
  },
  rewrite(t, half, editor) {
    const stored = editor.uniqueName(`${t.name}_fp16`);
    editor.removeInitializer(t.name);
    editor.setInitializer(rawTensor(stored, DataType.FLOAT16, [...t.shape], bytesOf(half)));
    editor.addDecodeNodes(
      makeNode(
        'Cast',
        [stored],
        [t.name],
        { to: DataType.FLOAT },
        { name: editor.uniqueName(`${t.name}_Cast`) },
      ),
    );
  },
};
