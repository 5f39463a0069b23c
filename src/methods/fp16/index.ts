/** float16 weights: the baseline every other method is compared with. Exported as a Cast back to float32. */
import { DataType, castFloat16ToFloat32, castFloat32ToFloat16 } from '../../core/onnx/dtypes.ts';
import { bytesOf, makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { CompressionMethod, KernelSplit } from '../types.ts';

/** float16 on ranges of rows: elementwise, written straight into the whole tensor's arrays. */
export const fp16Split: KernelSplit<Record<string, never>, Uint16Array> = {
  partAxis() {
    return { axis: 0, unit: 1 };
  },
  allocate(t, _options, _state, alloc) {
    const n = t.shape[0] * t.shape[1];
    return { values: alloc(Float32Array, n), storedBytes: n * 2, encoding: alloc(Uint16Array, n) };
  },
  runPart(t, part, _options, _state, out) {
    const from = part.start * t.shape[1];
    const to = part.end * t.shape[1];
    const half = castFloat32ToFloat16(t.values.subarray(from, to), out.encoding!.subarray(from, to));
    castFloat16ToFloat32(half, out.values.subarray(from, to));
  },
};

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
  split: fp16Split,
};
