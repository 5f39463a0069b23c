/**
 * Running a kernel on parts of one tensor (rows or columns [start, end)), the pieces every method's
 * `split` is built from: the part as a weight matrix of its own, its result written into the whole
 * tensor's arrays, the cut of a tensor into parts, and the in-process run of all parts (what a pool
 * does across workers, here on one thread: the reference the pooled split is tested against).
 */
import type {
  ArrayAllocator,
  CompressionMethod,
  KernelResult,
  OptionValues,
  TensorPart,
  WeightMatrix,
} from './types.ts';
import { ModelError } from '../core/errors.ts';

type ElementArray = Float32Array | Uint16Array | Uint8Array | Int8Array;

/** [rows, cols] of `part` of a [rows, cols] matrix. */
export function partShape(shape: readonly [number, number], part: TensorPart): [number, number] {
  return part.axis === 0 ? [part.end - part.start, shape[1]] : [shape[0], part.end - part.start];
}

/**
 * `part` of `t` as a matrix of its own: a row range is a view of the same memory (no copy); a column
 * range is gathered row by row into a new array.
 */
export function partMatrix(t: WeightMatrix, part: TensorPart): WeightMatrix {
  const [rows, cols] = t.shape;
  const shape = partShape(t.shape, part);
  if (part.axis === 0) return { ...t, shape, values: t.values.subarray(part.start * cols, part.end * cols) };
  const width = shape[1];
  const values = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++)
    values.set(t.values.subarray(r * cols + part.start, r * cols + part.end), r * width);
  return { ...t, shape, values };
}

/** Writes `src`, laid out as `part` of a [rows, cols] matrix, into `dst` laid out as the whole matrix. */
export function placePart<A extends ElementArray>(
  src: A,
  dst: A,
  shape: readonly [number, number],
  part: TensorPart,
): void {
  const [rows, cols] = shape;
  if (part.axis === 0) {
    dst.set(src, part.start * cols);
    return;
  }
  const width = part.end - part.start;
  for (let r = 0; r < rows; r++) dst.set(src.subarray(r * width, (r + 1) * width), r * cols + part.start);
}

/**
 * `count` parts along `axis` of `shape`, as equal as the unit allows: every boundary but the last a
 * multiple of `unit`, no part empty (fewer parts when the tensor has fewer units).
 */
export function cutParts(
  shape: readonly [number, number],
  axis: 0 | 1,
  unit: number,
  count: number,
): TensorPart[] {
  const length = shape[axis];
  const units = Math.ceil(length / unit);
  const n = Math.max(1, Math.min(count, units));
  const parts: TensorPart[] = [];
  for (let i = 0, start = 0; i < n; i++) {
    const end = i === n - 1 ? length : Math.round((units * (i + 1)) / n) * unit;
    parts.push({ axis, start, end });
    start = end;
  }
  return parts;
}

/** Plain memory (the in-process split; a pool allocates shared memory instead). */
export const localArrays: ArrayAllocator = (kind, length) => new kind(length);

/**
 * `method` over `t` in `parts`, one after another on this thread, through the method's split: the
 * reference for a pool's split run (same parts, same arrays) and the way a test checks a split
 * against the whole-tensor kernel.
 */
export function applyInParts(
  method: CompressionMethod,
  t: WeightMatrix,
  options: OptionValues,
  parts: readonly TensorPart[],
  alloc: ArrayAllocator = localArrays,
): KernelResult {
  const split = method.split;
  if (!split?.partAxis(t, options))
    throw new ModelError(
      'unsupported',
      `${method.label} cannot run on parts of a tensor with these options.`,
    );
  let state: unknown;
  const rounds = split.survey?.rounds(t, options) ?? 0;
  for (let round = 0; round < rounds; round++) {
    const answers = parts.map((part) => split.survey!.part(t, part, options, round, state));
    state = split.survey!.combine(t, parts, options, round, answers, state);
  }
  const out = split.allocate(t, options, state, alloc);
  for (const part of parts) split.runPart(t, part, options, state, out);
  return out;
}
