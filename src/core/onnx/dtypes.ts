/** ONNX TensorProto.DataType codes and what the studio can do with each. */
export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  COMPLEX64: 14,
  COMPLEX128: 15,
  BFLOAT16: 16,
  FLOAT8E4M3FN: 17,
  FLOAT8E4M3FNUZ: 18,
  FLOAT8E5M2: 19,
  FLOAT8E5M2FNUZ: 20,
  UINT4: 21,
  INT4: 22,
  FLOAT4E2M1: 23,
} as const;

export type DtypeName =
  | 'float32'
  | 'uint8'
  | 'int8'
  | 'uint16'
  | 'int16'
  | 'int32'
  | 'int64'
  | 'string'
  | 'bool'
  | 'float16'
  | 'float64'
  | 'uint32'
  | 'uint64'
  | 'complex64'
  | 'complex128'
  | 'bfloat16'
  | 'float8e4m3fn'
  | 'float8e4m3fnuz'
  | 'float8e5m2'
  | 'float8e5m2fnuz'
  | 'uint4'
  | 'int4'
  | 'float4e2m1';

interface DtypeInfo {
  name: DtypeName;
  /** Storage bits per element in raw_data (4 for the packed nibble types). */
  bits: number;
  /** Whether the studio decodes values of this type. */
  supported: boolean;
}

const TABLE: Record<number, DtypeInfo> = {
  1: { name: 'float32', bits: 32, supported: true },
  2: { name: 'uint8', bits: 8, supported: true },
  3: { name: 'int8', bits: 8, supported: true },
  4: { name: 'uint16', bits: 16, supported: true },
  5: { name: 'int16', bits: 16, supported: true },
  6: { name: 'int32', bits: 32, supported: true },
  7: { name: 'int64', bits: 64, supported: true },
  8: { name: 'string', bits: 0, supported: false },
  9: { name: 'bool', bits: 8, supported: true },
  10: { name: 'float16', bits: 16, supported: true },
  11: { name: 'float64', bits: 64, supported: true },
  12: { name: 'uint32', bits: 32, supported: true },
  13: { name: 'uint64', bits: 64, supported: true },
  14: { name: 'complex64', bits: 64, supported: false },
  15: { name: 'complex128', bits: 128, supported: false },
  16: { name: 'bfloat16', bits: 16, supported: true },
  17: { name: 'float8e4m3fn', bits: 8, supported: false },
  18: { name: 'float8e4m3fnuz', bits: 8, supported: false },
  19: { name: 'float8e5m2', bits: 8, supported: false },
  20: { name: 'float8e5m2fnuz', bits: 8, supported: false },
  21: { name: 'uint4', bits: 4, supported: true },
  22: { name: 'int4', bits: 4, supported: true },
  23: { name: 'float4e2m1', bits: 4, supported: false },
};

export function dtypeInfo(code: number): DtypeInfo | undefined {
  return TABLE[code];
}

export function dtypeName(code: number): string {
  return TABLE[code]?.name ?? `unknown(${code})`;
}

export function dtypeCode(name: DtypeName): number {
  for (const [code, info] of Object.entries(TABLE)) if (info.name === name) return Number(code);
  throw new Error(`unknown dtype ${name}`);
}

/** Bytes that `count` elements occupy in raw_data (nibble types round up to whole bytes). */
export function rawByteLength(code: number, count: number): number {
  const bits = TABLE[code]?.bits ?? 0;
  return Math.ceil((count * bits) / 8);
}

// IEEE half -> single: rebuild exponent and mantissa, subnormals scaled by 2^-24.
export function float16ToFloat32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

// Single -> half with round-to-nearest-even, overflow to Inf, underflow through subnormals.
export function float32ToFloat16(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

export function bfloat16ToFloat32(b: number): number {
  u32[0] = b << 16;
  return f32[0];
}

// The array casts run as WebAssembly SIMD; the scalar conversions above stay as their reference.
export { castFloat16ToFloat32, castFloat32ToFloat16 } from '../simd/index.ts';
