/** Magnitude (L1) pruning: unstructured per tensor or with one global threshold, or N:M semi-structured. */
import type { CompressionMethod, KernelSplit } from '../types.ts';
import { partMatrix, partShape, placePart } from '../split.ts';
import {
  applyMagnitudeThreshold,
  binReaching,
  pruneMagnitude,
  pruneMagnitudeGlobal,
  pruneNM,
} from './kernel.ts';
import { absBitsHistogram } from '../../core/simd/index.ts';

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
 * A tensor's magnitude threshold as its parts take it: |w| bits below `bits` go, and of those equal
 * to it, part i zeroes the first `ties[i]` (the tensor's first ties in index order, shared out).
 */
interface PartsThreshold {
  bits: number;
  /** By part, in part order (the parts' starts in `starts`). */
  ties: number[];
  starts: number[];
}

/** Round 0's state: the high 16 bits' bin and the weights below it. */
interface HighBin {
  count: number;
  high: number;
  below: number;
}

/**
 * Pruning on ranges of rows. N:M: groups run along the reduction axis, so a part holds whole groups
 * (rows in multiples of M for a [K, N] weight, any rows for a [N, K] table). Unstructured per tensor:
 * the radix select's two histograms are the sums of the parts' (two survey rounds), and the low
 * histogram's count at the threshold says how many ties each part holds, so the first ties in index
 * order are shared out exactly; then each part applies the threshold. A global threshold ranks every
 * selected tensor together and is not split.
 */
export const pruneSplit: KernelSplit<PruneOptions, unknown, HighBin | PartsThreshold> = {
  partAxis(t, options) {
    const nm = parseNM(options.pattern);
    if (!nm) return options.scope === 'global' ? undefined : { axis: 0, unit: 1 };
    return { axis: 0, unit: t.channelAxis === 1 ? nm[1] : 1 };
  },
  survey: {
    rounds: (_t, options) => (parseNM(options.pattern) ? 0 : 2),
    part(t, part, _options, round, state) {
      const cols = t.shape[1];
      const values = t.values.subarray(part.start * cols, part.end * cols);
      // a copy: the histogram is a view of the SIMD module's memory, which the next call reuses
      const high = round === 0 ? undefined : (state as HighBin).high;
      return absBitsHistogram([values], high).slice();
    },
    combine(t, parts, options, round, answers, state) {
      const sum = (hs: Uint32Array[]) => {
        const total = new Uint32Array(hs[0].length);
        for (const h of hs) for (let b = 0; b < total.length; b++) total[b] += h[b];
        return total;
      };
      const histograms = answers as Uint32Array[];
      const starts = parts.map((p) => p.start);
      if (round === 0) {
        const count = Math.round(options.sparsity * t.shape[0] * t.shape[1]);
        const [high, below] = binReaching(sum(histograms), count, 0);
        return { count, high, below };
      }
      const { count, high, below: belowHigh } = state as HighBin;
      // nothing to prune: magnitudeThreshold's { bits: 0, ties: 0 }
      if (count <= 0) return { bits: 0, ties: parts.map(() => 0), starts };
      const [low, below] = binReaching(sum(histograms), count, belowHigh);
      let left = count - below;
      const ties = histograms.map((h) => {
        const mine = Math.min(left, h[low]);
        left -= mine;
        return mine;
      });
      return { bits: ((high << 16) | low) >>> 0, ties, starts };
    },
  },
  allocate(t, _options, _state, alloc) {
    const values = alloc(Float32Array, t.shape[0] * t.shape[1]);
    return { values, storedBytes: values.byteLength };
  },
  runPart(t, part, options, state, out) {
    if (state) {
      const { bits, ties, starts } = state as PartsThreshold;
      const cols = t.shape[1];
      const from = part.start * cols;
      const to = part.end * cols;
      const mine = ties[starts.indexOf(part.start)];
      applyMagnitudeThreshold(t.values.subarray(from, to), out.values.subarray(from, to), {
        bits,
        ties: mine,
      });
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
