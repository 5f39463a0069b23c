/** int8 weights: symmetric or asymmetric, per output channel or per tensor, exported as DequantizeLinear. */
import { DataType } from '../../core/onnx/dtypes.ts';
import { bytesOf, makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { CompressionMethod } from '../types.ts';
import { dequantizeInt8, quantizeInt8, type Int8Quantized } from './kernel.ts';
import { noErrorSums } from '../../core/simd/index.ts';
import { withLazyValues } from '../lazy-values.ts';

export interface Int8Options {
  [key: string]: string | boolean;
  granularity: 'per-channel' | 'per-tensor';
  symmetric: boolean;
}

/** Bytes of the exported tensor: the codes, float32 scales and uint8 zero points. */
export function int8StoredBytes(q: Int8Quantized): number {
  return q.q.byteLength + q.scales.byteLength + (q.zeroPoints?.byteLength ?? 0);
}

export const int8Method: CompressionMethod<Int8Options, Int8Quantized> = {
  id: 'int8',
  label: 'int8 weights',
  summary: 'Round weights to 8-bit integers with a scale per output channel (or per tensor).',
  role: 'encode',
  options: [
    {
      key: 'granularity',
      label: 'Scale granularity',
      type: 'select',
      choices: [
        { value: 'per-channel', label: 'Per output channel' },
        { value: 'per-tensor', label: 'Per tensor' },
      ],
      default: 'per-channel',
    },
    {
      key: 'symmetric',
      label: 'Symmetric',
      type: 'boolean',
      default: true,
      help: 'Symmetric: int8 with zero point 0. Asymmetric: uint8 with a zero point per scale.',
    },
  ],
  apply(tensors, options) {
    return tensors.map((t) => {
      const axis = options.granularity === 'per-tensor' ? null : t.channelAxis;
      const [rows, cols] = t.shape;
      // the error against the input measured while encoding: the decode waits until values are read
      const error = noErrorSums();
      const encoding = quantizeInt8(t.values, rows, cols, axis, options.symmetric, error);
      return withLazyValues({ storedBytes: int8StoredBytes(encoding), encoding, error }, () =>
        dequantizeInt8(encoding, rows, cols, axis),
      );
    });
  },
  decode(encoding, t, options) {
    const axis = options.granularity === 'per-tensor' ? null : t.channelAxis;
    return dequantizeInt8(encoding, t.shape[0], t.shape[1], axis);
  },
  rewrite(t, encoding, editor, options) {
    const perTensor = options.granularity === 'per-tensor';
    const scaleDims = perTensor ? [] : [encoding.scales.length];
    const qName = editor.uniqueName(`${t.name}_quantized`);
    const scaleName = editor.uniqueName(`${t.name}_scale`);
    const inputs = [qName, scaleName];
    editor.removeInitializer(t.name);
    const qType = encoding.zeroPoints ? DataType.UINT8 : DataType.INT8;
    editor.setInitializer(rawTensor(qName, qType, [...t.shape], bytesOf(encoding.q)));
    editor.setInitializer(rawTensor(scaleName, DataType.FLOAT, scaleDims, bytesOf(encoding.scales)));
    if (encoding.zeroPoints) {
      const zpName = editor.uniqueName(`${t.name}_zero_point`);
      editor.setInitializer(rawTensor(zpName, DataType.UINT8, scaleDims, bytesOf(encoding.zeroPoints)));
      inputs.push(zpName);
    }
    editor.requireOpset('', 13);
    const attrs: Record<string, number> = perTensor ? {} : { axis: t.channelAxis };
    editor.addDecodeNodes(
      makeNode('DequantizeLinear', inputs, [t.name], attrs, {
        name: editor.uniqueName(`${t.name}_DequantizeLinear`),
      }),
    );
  },
};
