/** Magnitude (L1) pruning: unstructured per tensor or with one global threshold, or N:M semi-structured. */
import type { CompressionMethod, KernelSplit } from '../types.ts';
import { partMatrix, partShape, placePart } from '../split.ts';
import { pruneMagnitude, pruneMagnitudeGlobal, pruneNM } from './kernel.ts';

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
 * N:M pruning on ranges of rows: groups run along the reduction axis, so a part holds whole groups
 * (rows in multiples of M for a [K, N] weight, any rows for a [N, K] table). Unstructured pruning
 * ranks the whole tensor (or every tensor) under one threshold and is not split.
 */
export const pruneSplit: KernelSplit<PruneOptions> = {
  partAxis(t, options) {
    const nm = parseNM(options.pattern);
    if (!nm) return undefined;
    return { axis: 0, unit: t.channelAxis === 1 ? nm[1] : 1 };
  },
  allocate(t, _options, _state, alloc) {
    const values = alloc(Float32Array, t.shape[0] * t.shape[1]);
    return { values, storedBytes: values.byteLength };
  },
  runPart(t, part, options, _state, out) {
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
