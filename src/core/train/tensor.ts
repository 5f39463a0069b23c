/**
 * The training engine's values: a shape and a flat typed array. Float tensors are float32 (float16
 * and double widen/narrow to it), every integer type is held as float64 (exact up to 2^53: shapes,
 * indices, axes), booleans as bytes. Movement ops (Transpose, Slice, Expand, broadcasting) are index
 * maps from output position to input position: forward gathers through the map, backward
 * scatter-adds through it, so each such op's forward and backward are one pair of loops.
 */
import { ModelError } from '../errors.ts';

export type DType = 'float32' | 'int64' | 'bool';
export type Data = Float32Array | Float64Array | Uint8Array;

export interface Value {
  dtype: DType;
  shape: number[];
  data: Data;
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Recycled float arrays. A training step allocates hundreds of activation and gradient arrays of a few
 * MB each; fresh ones cost page faults and garbage collection (measured: a fresh 3 MB array made an
 * elementwise product 3× slower than writing into a reused one). Ops take their float outputs here
 * (zeroed, like `new Float32Array`); the graph gives back what a finished step no longer uses
 * (TrainGraph.release, and the intermediate gradients at the end of backward). Only arrays handed out
 * by `floats` and not yet given back can be recycled (`lent`), so giving back an array twice, or one
 * that never came from here (a weight, a constant, a caller's array), does nothing.
 */
const free = new Map<number, Float32Array[]>();
const lent = new WeakSet<Float32Array>();
/** Floats kept for reuse at most (1 GiB): beyond it given-back arrays are left to the collector. */
const POOL_MAX_FLOATS = 1 << 28;
let pooledFloats = 0;

/** A zeroed float32 array of n elements, recycled when one of that length was given back. */
export function floats(n: number): Float32Array {
  const list = free.get(n);
  const reused = list?.pop();
  if (reused) {
    pooledFloats -= n;
    reused.fill(0);
    lent.add(reused);
    return reused;
  }
  const fresh = new Float32Array(n);
  // small arrays are cheap to allocate: not worth tracking
  if (n >= 4096) lent.add(fresh);
  return fresh;
}

/** Gives back an array from `floats` that nothing reads any more (others are ignored). */
export function recycle(a: Float32Array): void {
  if (!lent.has(a)) return;
  lent.delete(a);
  if (pooledFloats + a.length > POOL_MAX_FLOATS) return;
  let list = free.get(a.length);
  if (!list) free.set(a.length, (list = []));
  list.push(a);
  pooledFloats += a.length;
}

export function alloc(dtype: DType, n: number): Data {
  return dtype === 'float32' ? floats(n) : dtype === 'int64' ? new Float64Array(n) : new Uint8Array(n);
}

export function floatValue(shape: number[], data: Float32Array): Value {
  return { dtype: 'float32', shape, data };
}

export function intValue(shape: number[], data: ArrayLike<number>): Value {
  return { dtype: 'int64', shape, data: Float64Array.from(data) };
}

/** Row-major strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = acc;
    acc *= shape[d];
  }
  return s;
}

/** numpy broadcasting of two shapes; a ModelError naming the node when they do not broadcast. */
export function broadcastShapes(shapes: readonly (readonly number[])[], where: string): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    const off = rank - s.length;
    for (let d = 0; d < s.length; d++) {
      const a = out[off + d];
      const b = s[d];
      if (a === b || b === 1) continue;
      if (a === 1) out[off + d] = b;
      else
        throw new ModelError(
          'invalid-argument',
          `${where}: shapes ${shapes.map((x) => `[${x.join(', ')}]`).join(' and ')} do not broadcast.`,
        );
    }
  }
  return out;
}

/**
 * map[o] = inOffset + Σ_d idx_d(o) · inStrides[d] for every flat position o of `outShape`: the input
 * element each output element reads. Strides of 0 broadcast, permuted strides transpose, scaled
 * strides and an offset slice.
 */
export function stridedMap(
  outShape: readonly number[],
  inStrides: readonly number[],
  inOffset = 0,
): Int32Array {
  const n = sizeOf(outShape);
  const map = new Int32Array(n);
  const r = outShape.length;
  if (r === 0) {
    map[0] = inOffset;
    return map;
  }
  const inner = outShape[r - 1];
  const innerStride = inStrides[r - 1];
  const idx = new Array<number>(r).fill(0);
  let base = inOffset;
  for (let o = 0; o < n; o += inner) {
    for (let j = 0; j < inner; j++) map[o + j] = base + j * innerStride;
    for (let d = r - 2; d >= 0; d--) {
      idx[d]++;
      base += inStrides[d];
      if (idx[d] < outShape[d]) break;
      base -= inStrides[d] * idx[d];
      idx[d] = 0;
    }
  }
  return map;
}

/** The strides that read `inShape` broadcast to `outShape` (0 on broadcast dimensions). */
export function broadcastStrides(outShape: readonly number[], inShape: readonly number[]): number[] {
  const r = outShape.length;
  const off = r - inShape.length;
  const own = stridesOf(inShape);
  const s = new Array<number>(r).fill(0);
  for (let d = off; d < r; d++) if (inShape[d - off] !== 1) s[d] = own[d - off];
  return s;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** x broadcast to `outShape` as a fresh (or, when the shape already matches, the same) array. */
export function expandData(x: Value, outShape: readonly number[]): Data {
  if (sameShape(x.shape, outShape)) return x.data;
  const n = sizeOf(outShape);
  const out = alloc(x.dtype, n);
  if (x.data.length === 1) {
    out.fill(x.data[0]);
    return out;
  }
  const map = stridedMap(outShape, broadcastStrides(outShape, x.shape));
  for (let i = 0; i < n; i++) out[i] = x.data[map[i]];
  return out;
}

/** The gradient of a broadcast: g [outShape] summed back onto `inShape`. */
export function unbroadcast(
  g: Float32Array,
  outShape: readonly number[],
  inShape: readonly number[],
): Float32Array {
  if (sameShape(inShape, outShape)) return g;
  const m = sizeOf(inShape);
  const out = floats(m);
  if (m === 1) {
    let s = 0;
    for (let i = 0; i < g.length; i++) s += g[i];
    out[0] = s;
    return out;
  }
  const map = stridedMap(outShape, broadcastStrides(outShape, inShape));
  for (let i = 0; i < g.length; i++) out[map[i]] += g[i];
  return out;
}

/** out[o] = x[map[o]]. */
export function gatherMap(x: Data, map: Int32Array, dtype: DType): Data {
  const out = alloc(dtype, map.length);
  for (let i = 0; i < map.length; i++) out[i] = x[map[i]];
  return out;
}

/** The adjoint of gatherMap: dx[map[o]] += g[o]. */
export function scatterMap(g: Float32Array, map: Int32Array, n: number): Float32Array {
  const out = floats(n);
  for (let i = 0; i < map.length; i++) out[map[i]] += g[i];
  return out;
}

/** Normalizes a possibly negative axis of a rank-r tensor, or throws naming the node. */
export function normAxis(axis: number, rank: number, where: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!(a >= 0 && a < rank))
    throw new ModelError('invalid-argument', `${where}: axis ${axis} is out of range for rank ${rank}.`);
  return a;
}
