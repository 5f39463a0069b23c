/** Magnitude (L1) pruning: unstructured per tensor or with one global threshold, or N:M semi-structured. */
import type { CompressionMethod, KernelSplit } from '../types.ts';
import { partMatrix, partShape, placePart } from '../split.ts';
import {
  applyMagnitudeThreshold,
  magnitudeThreshold,
  pruneMagnitude,
  pruneMagnitudeGlobal,
  pruneNM,
} from './kernel.ts';

export interface PruneOptions {
  [key: string]: string | number | boolean;
  sparsity: number;
  scope: 'tensor' | 'global';
  pattern: 'unstructured' | '2:4' | '4:8';
}

export function parseNM(pattern: string): [number, number] | null {
  const m = /^(\d+):(\d+)$/.exec(pattern);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/**
 * A tensor's magnitude threshold (|w| bits below `bits` go, then the first `ties` equal to it) and
 * `tieEnd`, the index just past the last of those ties: a part zeroes the ties before it, none after.
 */
interface TensorThreshold {
  bits: number;
  ties: number;
  tieEnd: number;
}

/** Index just past the `ties`-th weight whose |w| has exactly `bits` (0 when there are none to take). */
function tieEnd(x: Float32Array, bits: number, ties: number): number {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0, left = ties; i < u.length && left > 0; i++)
    if ((u[i] & 0x7fffffff) === bits && --left === 0) return i + 1;
  return 0;
}

/**
 * Pruning on ranges of rows. N:M: groups run along the reduction axis, so a part holds whole groups
 * (rows in multiples of M for a [K, N] weight, any rows for a [N, K] table). Unstructured per tensor:
 * the threshold is found once on the whole tensor, then each part applies it, zeroing ties at the
 * threshold only before `tieEnd` (ties go in index order). A global threshold ranks every selected
 * tensor together and is not split.
 */
export const pruneSplit: KernelSplit<PruneOptions, unknown, TensorThreshold | undefined> = {
  partAxis(t, options) {
    const nm = parseNM(options.pattern);
    if (!nm) return options.scope === 'global' ? undefined : { axis: 0, unit: 1 };
    return { axis: 0, unit: t.channelAxis === 1 ? nm[1] : 1 };
  },
  prepare(t, options) {
    if (parseNM(options.pattern)) return undefined;
    const n = t.values.length;
    const threshold = magnitudeThreshold([t.values], Math.round(options.sparsity * n));
    return { ...threshold, tieEnd: tieEnd(t.values, threshold.bits, threshold.ties) };
  },
  allocate(t, _options, _state, alloc) {
    const values = alloc(Float32Array, t.shape[0] * t.shape[1]);
    return { values, storedBytes: values.byteLength };
  },
  runPart(t, part, options, threshold, out) {
    if (threshold) {
      const cols = t.shape[1];
      const from = part.start * cols;
      const to = part.end * cols;
      const mid = Math.max(from, Math.min(to, threshold.tieEnd));
      const { bits } = threshold;
      const apply = (a: number, b: number, ties: number) =>
        applyMagnitudeThreshold(t.values.subarray(a, b), out.values.subarray(a, b), { bits, ties });
      apply(from, mid, mid - from); // every tie here is one of the tensor's first `ties`
      apply(mid, to, 0);
      return;
    }
    const [n, m] = parseNM(options.pattern)!;
    const [rows, cols] = partShape(t.shape, part);
    const pruned = pruneNM(partMatrix(t, part).values, rows, cols, t.channelAxis, n, m);
    placePart(pruned, out.values, t.shape, part);
  },
};

export const pruneMethod: CompressionMethod<PruneOptions> = {
  id: 'prune',
  label: 'Magnitude pruning',
  summary: 'Zero the weights of smallest magnitude: a fraction per tensor or globally, or N of every M.',
  role: 'transform',
  options: [
    {
      key: 'sparsity',
      label: 'Sparsity',
      type: 'number',
      min: 0,
      max: 0.99,
      step: 0.01,
      default: 0.5,
      help: 'Fraction of weights set to zero (unstructured pattern only).',
    },
    {
      key: 'scope',
      label: 'Threshold',
      type: 'select',
      choices: [
        { value: 'tensor', label: 'Per tensor' },
        { value: 'global', label: 'Global (one threshold for all selected tensors)' },
      ],
      default: 'tensor',
    },
    {
      key: 'pattern',
      label: 'Pattern',
      type: 'select',
      choices: [
        { value: 'unstructured', label: 'Unstructured' },
        { value: '2:4', label: '2:4 (2 of every 4 inputs kept)' },
        { value: '4:8', label: '4:8 (4 of every 8 inputs kept)' },
      ],
      default: 'unstructured',
    },
  ],
  apply(tensors, options) {
    const nm = parseNM(options.pattern);
    let pruned: Float32Array[];
    if (nm) {
      pruned = tensors.map((t) => pruneNM(t.values, t.shape[0], t.shape[1], t.channelAxis, nm[0], nm[1]));
    } else if (options.scope === 'global') {
      pruned = pruneMagnitudeGlobal(
        tensors.map((t) => t.values),
        options.sparsity,
      );
    } else {
      pruned = tensors.map((t) => pruneMagnitude(t.values, options.sparsity));
    }
    return pruned.map((values) => ({ values, storedBytes: values.byteLength }));
  },
  split: pruneSplit,
};
