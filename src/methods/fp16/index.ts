/** float16 weights: the baseline every other method is compared with. Exported as a Cast back to float32. */
import { DataType, castFloat16ToFloat32, castFloat32ToFloat16 } from '../../core/onnx/dtypes.ts';
import { bytesOf, makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { CompressionMethod } from '../types.ts';

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
