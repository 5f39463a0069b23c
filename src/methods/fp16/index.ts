/** float16 weights: the baseline every other method is compared with. Exported as a Cast back to float32. */
import { DataType, float16ToFloat32, float32ToFloat16 } from '../../core/onnx/dtypes.ts';
import { makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { CompressionMethod } from '../types.ts';
import { bytesOf } from '../bytes.ts';

// Round-to-nearest-even to binary16 on the bits: normal halves are built inline (a mantissa carry
// correctly bumps the exponent); subnormals, overflow to ±Infinity and NaN take the general path.
export function castFloat32ToFloat16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < x.length; i++) {
    const b = bits[i];
    const e = ((b >>> 23) & 0xff) - 112;
    if (e <= 0 || e >= 31) {
      out[i] = float32ToFloat16(x[i]);
      continue;
    }
    const m = b & 0x7fffff;
    let h = ((b >>> 16) & 0x8000) | (e << 10) | (m >>> 13);
    const rest = m & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
    out[i] = h;
  }
  return out;
}

// Normal halves widen by re-biasing the exponent on the bits; zeros, subnormals, Inf and NaN take the general path.
export function castFloat16ToFloat32(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < h.length; i++) {
    const v = h[i];
    const e = (v >>> 10) & 0x1f;
    if (e === 0 || e === 31) out[i] = float16ToFloat32(v);
    else bits[i] = ((v & 0x8000) << 16) | ((e + 112) << 23) | ((v & 0x3ff) << 13);
  }
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
