/** int8 weights: symmetric or asymmetric, per output channel or per tensor, exported as DequantizeLinear. */
import { DataType } from '../../core/onnx/dtypes.ts';
import { bytesOf, makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { CompressionMethod, KernelSplit } from '../types.ts';
import { partMatrix, partShape, placePart } from '../split.ts';
import { dequantizeInt8, quantizeInt8, type Int8Quantized } from './kernel.ts';
import {
  noErrorSums,
  quantizeColumns,
  updateColumnAbsMax,
  updateColumnRanges,
} from '../../core/simd/index.ts';
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

/** Column ranges of a [K, N] weight (min and max from 0, as the kernel takes them), for its row parts. */
interface ColumnRanges {
  lo: Float32Array;
  hi: Float32Array;
}

/**
 * Per-channel int8 on parts. A [C, K] table's rows are whole channels: each part is the kernel on its
 * rows. A [K, N] weight's channels are columns that run through every row: each part finds its rows'
 * column ranges first (a survey round; the whole tensor's are their minima and maxima), then each part
 * quantizes and decodes its rows in place with the whole tensor's scales. A per-tensor scale needs
 * every weight and is not split.
 */
export const int8Split: KernelSplit<Int8Options, Int8Quantized, ColumnRanges | undefined> = {
  partAxis(_t, options) {
    return options.granularity === 'per-tensor' ? undefined : { axis: 0, unit: 1 };
  },
  survey: {
    rounds: (t) => (t.channelAxis === 1 ? 1 : 0),
    part(t, part, options): ColumnRanges {
      const cols = t.shape[1];
      const lo = new Float32Array(cols);
      const hi = new Float32Array(cols);
      if (options.symmetric) {
        updateColumnAbsMax(t.values, part.start, part.end, cols, hi);
        for (let c = 0; c < cols; c++) lo[c] = -hi[c];
      } else updateColumnRanges(t.values, part.start, part.end, cols, lo, hi);
      return { lo, hi };
    },
    combine(t, _parts, _options, _round, answers) {
      const whole = answers[0] as ColumnRanges;
      for (const { lo, hi } of answers.slice(1) as ColumnRanges[])
        for (let c = 0; c < t.shape[1]; c++) {
          // Math.min and max order −0 below +0 as the kernel's SIMD min and max do (no NaN: skipped)
          whole.lo[c] = Math.min(whole.lo[c], lo[c]);
          whole.hi[c] = Math.max(whole.hi[c], hi[c]);
        }
      return whole;
    },
  },
  allocate(t, options, _state, alloc) {
    const n = t.shape[0] * t.shape[1];
    const channels = t.shape[t.channelAxis === 1 ? 1 : 0];
    const encoding: Int8Quantized = {
      q: options.symmetric ? alloc(Int8Array, n) : alloc(Uint8Array, n),
      scales: alloc(Float32Array, channels),
      zeroPoints: options.symmetric ? null : alloc(Uint8Array, channels),
    };
    return { values: alloc(Float32Array, n), storedBytes: int8StoredBytes(encoding), encoding };
  },
  runPart(t, part, options, ranges, out) {
    const whole = out.encoding!;
    const [rows, cols] = partShape(t.shape, part);
    if (!ranges) {
      // rows are channels: the kernel on the part's rows, its codes, scales and values put in place
      const q = quantizeInt8(partMatrix(t, part).values, rows, cols, 0, options.symmetric);
      placePart(dequantizeInt8(q, rows, cols, 0), out.values, t.shape, part);
      placePart(q.q, whole.q, t.shape, part);
      whole.scales.set(q.scales, part.start);
      if (q.zeroPoints) whole.zeroPoints!.set(q.zeroPoints, part.start);
      return;
    }
    // the scales are the kernel's own for a two-row matrix holding each column's extremes (every part
    // derives the same ones), so they cannot drift from the whole-tensor kernel's
    const anchors = new Float32Array(2 * cols);
    anchors.set(ranges.lo);
    anchors.set(ranges.hi, cols);
    const { scales, zeroPoints } = quantizeInt8(anchors, 2, cols, 1, options.symmetric);
    if (part.start === 0) {
      whole.scales.set(scales);
      if (zeroPoints) whole.zeroPoints!.set(zeroPoints);
    }
    // codes straight into the whole tensor's array: round(x / s) + z as quantizeInt8 computes it
    const inv = scales.map((s) => (s > 0 ? 1 / s : 0));
    const offset = zeroPoints ? Float32Array.from(zeroPoints, (z) => z + 0.5) : scales.map(() => 128.5);
    quantizeColumns(t.values, whole.q, part.start, part.end, cols, inv, offset, 255, zeroPoints ? 0 : 128);
    const from = part.start * cols;
    const codes = whole.q.subarray(from, part.end * cols);
    out.values.set(dequantizeInt8({ q: codes, scales, zeroPoints }, rows, cols, 1), from);
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
  split: int8Split,
};
