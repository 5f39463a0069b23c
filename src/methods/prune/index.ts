/** Magnitude (L1) pruning: unstructured per tensor or with one global threshold, or N:M semi-structured. */
import type { CompressionMethod } from '../types.ts';
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
};
