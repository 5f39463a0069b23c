/**
 * Wanda (Sun et al. 2023): prune by |W_jc| · ‖X_j‖₂, the weight's magnitude times the norm of the
 * input feature it multiplies, comparing weights within each output channel; no weight update.
 * Sparsity is exact: round(sparsity · K · N) zeros in all, each output taking floor or ceil of
 * sparsity · K by cumulative rounding; ties go to the lower input index. N:M keeps, per output, the N
 * of highest score in every group of M consecutive inputs (earlier index wins a tie; a trailing short
 * group keeps ceil(len · N / M)), as the studio's magnitude N:M does.
 *
 * The comparison group can also be the whole tensor (exactly round(sparsity · K · N) lowest scores,
 * ties in index order): on stories260K's attention projections, whose output channels differ widely
 * in scale, per-output Wanda has a larger layer error than per-tensor magnitude pruning and the
 * per-tensor group a smaller one on every layer (tests/calibrate/stories-layers.test.ts).
 */
import { ModelError } from '../../core/errors.ts';
import type { InputStats } from '../../core/calibrate/stats.ts';
import type { WeightMatrix } from '../types.ts';
import { calibratedDims } from '../calibrated.ts';
import { parsePattern } from '../sparsegpt/kernel.ts';

export interface WandaOptions {
  sparsity: number;
  pattern: 'unstructured' | '2:4' | '4:8' | `${number}:${number}`;
  /** Which weights compete for the unstructured budget: each output's own (Wanda's default) or all. */
  group?: 'output' | 'tensor';
}

export function wandaPrune(
  w: WeightMatrix,
  stats: Pick<InputStats, 'sumSquares' | 'k'>,
  opts: WandaOptions,
): Float32Array {
  const { cols, k, n } = calibratedDims(w, stats.k);
  const nm = parsePattern(opts.pattern);
  const { sparsity } = opts;
  if (!nm && !(sparsity >= 0 && sparsity <= 1))
    throw new ModelError('invalid-argument', `Sparsity must be between 0 and 1, got ${sparsity}.`);
  const norm = Float64Array.from(stats.sumSquares, Math.sqrt);
  // element (k, c) of the weight in its own layout
  const strideK = w.channelAxis === 1 ? cols : 1;
  const strideC = w.channelAxis === 1 ? 1 : cols;
  const out = w.values.slice();
  if (!nm && opts.group === 'tensor') {
    const scores = new Float64Array(k * n);
    for (let j = 0; j < k; j++)
      for (let c = 0; c < n; c++) {
        const at = j * strideK + c * strideC;
        scores[at] = Math.abs(w.values[at]) * norm[j];
      }
    const order = Uint32Array.from({ length: k * n }, (_, i) => i);
    order.sort((a, b) => scores[a] - scores[b] || a - b);
    for (let t = 0, count = Math.round(sparsity * k * n); t < count; t++) out[order[t]] = 0;
    return out;
  }
  const score = new Float64Array(k);
  const order = new Uint32Array(k);
  const total = Math.round(sparsity * k * n);
  for (let c = 0; c < n; c++) {
    for (let j = 0; j < k; j++) {
      score[j] = Math.abs(w.values[j * strideK + c * strideC]) * norm[j];
      order[j] = j;
    }
    if (nm) {
      const [keepN, m] = nm;
      for (let j0 = 0; j0 < k; j0 += m) {
        const len = Math.min(m, k - j0);
        const keep = len === m ? keepN : Math.ceil((len * keepN) / m);
        const group = order.subarray(j0, j0 + len);
        group.sort((a, b) => score[b] - score[a] || a - b);
        for (let t = keep; t < len; t++) out[group[t] * strideK + c * strideC] = 0;
      }
      continue;
    }
    const count = Math.round((total * (c + 1)) / n) - Math.round((total * c) / n);
    if (count <= 0) continue;
    order.sort((a, b) => score[a] - score[b] || a - b);
    for (let t = 0; t < count; t++) out[order[t] * strideK + c * strideC] = 0;
  }
  return out;
}
