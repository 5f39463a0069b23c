/** int8 weights: symmetric or asymmetric, per output channel or per tensor, exported as DequantizeLinear. */
import { DataType } from '../../core/onnx/dtypes.ts';
import { bytesOf, makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { CompressionMethod, KernelSplit } from '../types.ts';
import { partMatrix, partShape, placePart } from '../split.ts';
import { dequantizeInt8, quantizeInt8, type Int8Quantized } from './kernel.ts';

export interface Int8Options {
  [key: string]: string | boolean;
  granularity: 'per-channel' | 'per-tensor';
  symmetric: boolean;
}

/** Bytes of the exported tensor: the codes, float32 scales and uint8 zero points. */
export function int8StoredBytes(q: Int8Quantized): number {
  return q.q.byteLength + q.scales.byteLength + (q.zeroPoints?.byteLength ?? 0);
}

/**
 * Per-channel int8 on parts: each part is a range of whole channels (rows of a [C, K] table, columns
 * of a [K, N] weight), so its scales are the whole tensor's. A per-tensor scale needs every weight.
 */
export const int8Split: KernelSplit<Int8Options, Int8Quantized> = {
  partAxis(t, options) {
    return options.granularity === 'per-tensor' ? undefined : { axis: t.channelAxis, unit: 1 };
  },
  allocate(t, options, _state, alloc) {
    const n = t.shape[0] * t.shape[1];
    const channels = t.shape[t.channelAxis];
    const encoding: Int8Quantized = {
      q: options.symmetric ? alloc(Int8Array, n) : alloc(Uint8Array, n),
      scales: alloc(Float32Array, channels),
      zeroPoints: options.symmetric ? null : alloc(Uint8Array, channels),
    };
    return { values: alloc(Float32Array, n), storedBytes: int8StoredBytes(encoding), encoding };
  },
  runPart(t, part, options, _state, out) {
    const [rows, cols] = partShape(t.shape, part);
    const encoding = quantizeInt8(partMatrix(t, part).values, rows, cols, t.channelAxis, options.symmetric);
    placePart(dequantizeInt8(encoding, rows, cols, t.channelAxis), out.values, t.shape, part);
    const whole = out.encoding!;
    placePart(encoding.q, whole.q, t.shape, part);
    whole.scales.set(encoding.scales, part.start);
    if (encoding.zeroPoints) whole.zeroPoints!.set(encoding.zeroPoints, part.start);
  },
};

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
      const encoding = quantizeInt8(t.values, rows, cols, axis, options.symmetric);
      const values = dequantizeInt8(encoding, rows, cols, axis);
      return { values, storedBytes: int8StoredBytes(encoding), encoding };
    });
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
  split: int8Split,
};
