/**
 * Magnitude pruning kernels. Unstructured pruning zeroes exactly `count` weights of smallest |w|
 * found by a two-pass radix select on the bits of |w| (for non-negative floats the bit pattern
 * orders like the value), so no copy is sorted; ties at the threshold go in index order. The sweeps
 * over the weights run as WebAssembly SIMD.
 */

import { absBitsHistogram, applyAbsBitsThreshold, pruneNMColumns } from '../../core/simd/index.ts';

/**
 * The exact threshold for zeroing `count` of the smallest |w| across `tensors`: every |w| with bits
 * below `bits` goes, and then the first `ties` whose bits equal it (in tensor order, then index order).
 */
export function magnitudeThreshold(
  tensors: readonly Float32Array[],
  count: number,
): { bits: number; ties: number } {
  if (count <= 0) return { bits: 0, ties: 0 };
  // pass 1: histogram of the high 16 bits of |w|
  const [hb, belowHigh] = binReaching(absBitsHistogram(tensors), count, 0);
  // pass 2: histogram of the low 16 bits inside that high bin
  const [lb, below] = binReaching(absBitsHistogram(tensors, hb), count, belowHigh);
  return { bits: ((hb << 16) | lb) >>> 0, ties: count - below };
}

/**
 * The bin where `below` plus the running count of `histogram` reaches `count`, and the count before
 * it: one pass of the radix select (histograms of parts of a tensor add up to the tensor's).
 */
export function binReaching(histogram: Uint32Array, count: number, below: number): [number, number] {
  let b = 0;
  while (below + histogram[b] < count) below += histogram[b++];
  return [b, below];
}

/** w = 0 where |w| < threshold, and for the first `ties` with |w| = threshold; returns ties left over. */
export function applyMagnitudeThreshold(
  x: Float32Array,
  out: Float32Array,
  threshold: { bits: number; ties: number },
): number {
  return applyAbsBitsThreshold(x, out, threshold.bits, threshold.ties);
}

/** Unstructured L1 pruning of one tensor to round(sparsity · n) zeros. */
export function pruneMagnitude(x: Float32Array, sparsity: number): Float32Array {
  const out = new Float32Array(x.length);
  applyMagnitudeThreshold(x, out, magnitudeThreshold([x], Math.round(sparsity * x.length)));
  return out;
}

/** One global threshold: round(sparsity · total) zeros over all tensors together. */
export function pruneMagnitudeGlobal(xs: readonly Float32Array[], sparsity: number): Float32Array[] {
  const total = xs.reduce((s, x) => s + x.length, 0);
  const threshold = magnitudeThreshold(xs, Math.round(sparsity * total));
  return xs.map((x) => {
    const out = new Float32Array(x.length);
    threshold.ties = applyMagnitudeThreshold(x, out, threshold);
    return out;
  });
}

/**
 * N:M semi-structured pruning: in every group of M consecutive weights along the reduction axis keep
 * the N of largest |w| (earlier index wins a tie). A trailing group shorter than M keeps
 * ceil(len · N / M). Element (k, c) is x[k * strideK + c * strideC].
 */
export function pruneNM(
  x: Float32Array,
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
  n: number,
  m: number,
): Float32Array {
  const out = x.slice();
  const k = channelAxis === 1 ? rows : cols;
  const channels = channelAxis === 1 ? cols : rows;
  const strideK = channelAxis === 1 ? cols : 1;
  const strideC = channelAxis === 1 ? 1 : cols;
  // SIMD takes the whole groups of the columns up to a multiple of 4 ([K, N] layout); the loop below
  // does the rest: a short last group, the last columns, and [N, K] tables
  const simdChannels = channelAxis === 1 ? pruneNMColumns(x, out, rows, cols, n, m) : 0;
  const simdK = simdChannels > 0 ? k - (k % m) : 0;
  const idx = new Int32Array(m);
  const mag = new Float64Array(m);
  for (let k0 = 0; k0 < k; k0 += m) {
    const len = Math.min(m, k - k0);
    const keep = len === m ? n : Math.ceil((len * n) / m);
    for (let c = k0 < simdK ? simdChannels : 0; c < channels; c++) {
      // insertion sort of the group by |w| descending, stable so earlier indices win ties
      for (let j = 0; j < len; j++) {
        const at = (k0 + j) * strideK + c * strideC;
        const a = Math.abs(x[at]);
        let p = j;
        while (p > 0 && mag[p - 1] < a) {
          mag[p] = mag[p - 1];
          idx[p] = idx[p - 1];
          p--;
        }
        mag[p] = a;
        idx[p] = at;
      }
      for (let j = keep; j < len; j++) out[idx[j]] = 0;
    }
  }
  return out;
}
