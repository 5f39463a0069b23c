/**
 * The figures of a compressed model against its original computed directly, as the independent side of
 * the tests of src/core/eval/compare.ts and of the bench's rows: the strided loop written out, every
 * scored row's full softmax of both models in float64 over the logits onnxruntime-node returns, and
 * each statistic from its textbook formula (standard error = sample sd / sqrt(n), llama.cpp's
 * percentile by linear interpolation). Nothing here calls the studio's evaluation code.
 */
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';
import { ort } from './ort.ts';

export interface DirectComparison {
  /** tokens scored */
  n: number;
  ppl: number;
  pplSe: number;
  basePpl: number;
  ratio: number;
  ratioSe: number;
  kl: number;
  klSe: number;
  median: number;
  p99: number;
  max: number;
  same: number;
  sameSe: number;
  rms: number;
  rmsSe: number;
}

/**
 * `compressedBytes` against `baseBytes` on `sequences` (token ids), windows of `ctx` every `stride`
 * tokens, each token scored once: in the first window from its second token, in later ones past the
 * previous window's end. The models take `input_ids` [1, T] and return `logits` [1, T, V].
 */
export async function directComparison(
  baseBytes: Uint8Array,
  compressedBytes: Uint8Array,
  sequences: readonly number[][],
  ctx: number,
  stride: number,
): Promise<DirectComparison> {
  const open = (bytes: Uint8Array) => ort.InferenceSession.create(bytes, { extra: EXACT_WEIGHT_ONLY });
  const [p, q] = [await open(baseBytes), await open(compressedBytes)];
  const kl: number[] = [];
  const nllP: number[] = [];
  const nllQ: number[] = [];
  const same: number[] = [];
  const dp: number[] = [];
  const logSoftmax = (row: number[]) => {
    const m = Math.max(...row);
    const z = Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0)) + m;
    return row.map((x) => x - z);
  };
  const argmax = (row: number[]) => row.indexOf(Math.max(...row));
  try {
    for (const ids of sequences) {
      let prevEnd = 0;
      for (let begin = 0; begin < ids.length; begin += stride) {
        const end = Math.min(begin + ctx, ids.length);
        const win = ids.slice(begin, end);
        const feeds = {
          input_ids: new ort.Tensor('int64', BigInt64Array.from(win.map(BigInt)), [1, win.length]),
        };
        const lp = (await p.run(feeds)).logits;
        const lq = (await q.run(feeds)).logits;
        const V = lp.dims[2];
        for (let t = Math.max(prevEnd - begin, 1); t < win.length; t++) {
          const rp = Array.from((lp.data as Float32Array).subarray((t - 1) * V, t * V));
          const rq = Array.from((lq.data as Float32Array).subarray((t - 1) * V, t * V));
          const a = logSoftmax(rp);
          const b = logSoftmax(rq);
          kl.push(a.reduce((s, x, v) => s + Math.exp(x) * (x - b[v]), 0));
          nllP.push(-a[win[t]]);
          nllQ.push(-b[win[t]]);
          same.push(argmax(rp) === argmax(rq) ? 1 : 0);
          dp.push(Math.exp(b[win[t]]) - Math.exp(a[win[t]]));
        }
        prevEnd = end;
        if (end === ids.length) break;
      }
    }
  } finally {
    await p.release();
    await q.release();
  }
  const n = kl.length;
  const mean = (x: number[]) => x.reduce((s, v) => s + v, 0) / x.length;
  const se = (x: number[]) => {
    const m = mean(x);
    return Math.sqrt(x.reduce((s, v) => s + (v - m) ** 2, 0) / (x.length - 1) / x.length);
  };
  const diff = nllQ.map((v, i) => v - nllP[i]);
  const dp2 = dp.map((v) => v * v);
  const sorted = [...kl].sort((a, b) => a - b);
  const at = (f: number) => {
    const x = f * (n - 1);
    const lo = Math.floor(x);
    return lo + 1 < n ? sorted[lo] + (x - lo) * (sorted[lo + 1] - sorted[lo]) : sorted[lo];
  };
  const sameShare = mean(same);
  return {
    n,
    ppl: Math.exp(mean(nllQ)),
    pplSe: Math.exp(mean(nllQ)) * se(nllQ),
    basePpl: Math.exp(mean(nllP)),
    ratio: Math.exp(mean(diff)),
    ratioSe: Math.exp(mean(diff)) * se(diff),
    kl: mean(kl),
    klSe: se(kl),
    median: n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    p99: at(0.99),
    max: sorted[n - 1],
    same: sameShare,
    sameSe: Math.sqrt((sameShare * (1 - sameShare)) / (n - 1)),
    rms: Math.sqrt(mean(dp2)),
    rmsSe: se(dp2) / (2 * Math.sqrt(mean(dp2))),
  };
}
