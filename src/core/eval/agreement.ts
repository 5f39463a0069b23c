/**
 * Backend agreement: the same model run by two execution providers (onnxruntime-web's wasm and
 * WebGPU) on the same tokens should give the same logits up to float rounding. People report
 * quantized models that are right on one and wrong on the other (a kernel that reads a layout
 * differently, fp16 accumulation); this measures how far apart the two are: the largest |Δlogit|,
 * KL(first ‖ second) per token and top-1 agreement, and says when that is beyond tolerance.
 *
 * The windows are perplexity.ts' strided windows (compare.ts' ReferenceLogits holds the first
 * backend's logits). Dimension letters: T scored rows of a window, V vocabulary.
 */
import { ModelError } from '../errors.ts';
import {
  fedInputs,
  meanAndError,
  scoredLogits,
  type Estimate,
  type EvalProtocol,
  type LogitsModel,
  type ReferenceLogits,
} from './compare.ts';
import { yieldToEventLoop } from './yield.ts';

/** Per-row figures of two logit matrices of the same rows. */
export interface RowAgreement {
  /** max over the rows and the vocabulary of |a − b| */
  maxAbsLogit: number;
  /** KL(softmax(a) ‖ softmax(b)) per row, in nats */
  kl: Float64Array;
  /** 1 where both rank the same token first (the lowest index among ties) */
  sameTop: Uint8Array;
}

/**
 * a, b [T, V] logits of the same T rows from two backends. KL in float64 through each row's
 * log-sum-exp (the max subtracted first, so large logits do not overflow).
 */
export function logitAgreement(a: Float32Array, b: Float32Array, vocab: number): RowAgreement {
  if (a.length !== b.length || vocab <= 0 || a.length % vocab !== 0)
    throw new ModelError(
      'invalid-argument',
      `The two backends returned different logits: ${a.length} and ${b.length} values for a vocabulary of ${vocab}.`,
    );
  const rows = a.length / vocab;
  const kl = new Float64Array(rows);
  const sameTop = new Uint8Array(rows);
  let maxAbsLogit = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * vocab;
    let maxA = -Infinity;
    let maxB = -Infinity;
    let topA = 0;
    let topB = 0;
    for (let v = 0; v < vocab; v++) {
      const x = a[o + v];
      const y = b[o + v];
      if (x > maxA) [maxA, topA] = [x, v];
      if (y > maxB) [maxB, topB] = [y, v];
      const d = Math.abs(x - y);
      // NaN from either backend must show, not vanish in a comparison
      if (Number.isNaN(d)) maxAbsLogit = NaN;
      else if (d > maxAbsLogit) maxAbsLogit = d; // false once NaN: it stays NaN
    }
    let zA = 0;
    let zB = 0;
    for (let v = 0; v < vocab; v++) {
      zA += Math.exp(a[o + v] - maxA);
      zB += Math.exp(b[o + v] - maxB);
    }
    const lseA = Math.log(zA) + maxA;
    const lseB = Math.log(zB) + maxB;
    let k = 0;
    for (let v = 0; v < vocab; v++) {
      const la = a[o + v] - lseA;
      k += Math.exp(la) * (la - (b[o + v] - lseB));
    }
    // rounding can leave a tiny negative sum for identical rows
    kl[r] = Math.max(0, k);
    sameTop[r] = topA === topB ? 1 : 0;
  }
  return { maxAbsLogit, kl, sameTop };
}

/** How far apart two backends may be before the page warns: float rounding, not a wrong kernel. */
export const AGREEMENT_TOLERANCE = {
  /** largest |Δlogit| anywhere */
  maxAbsLogit: 0.05,
  /** mean KL per token, nats */
  klMean: 1e-4,
  /** share of tokens with the same top-1 */
  sameTop: 0.99,
} as const;

export interface BackendAgreement {
  maxAbsLogit: number;
  kl: { mean: Estimate; max: number };
  sameTop: Estimate;
  tokens: number;
  /** The first backend's protocol (text hash, ctx, stride, provider…) */
  protocol: EvalProtocol;
  /** The second backend (the reference holds the first's logits) */
  other: { provider: string; reason?: string };
  /** What exceeds AGREEMENT_TOLERANCE, in words; empty when the backends agree. */
  warnings: string[];
}

/** The words of each figure beyond tolerance (NaN counts as beyond). */
export function agreementWarnings(
  f: Pick<BackendAgreement, 'maxAbsLogit' | 'kl' | 'sameTop'>,
  tol = AGREEMENT_TOLERANCE,
): string[] {
  const out: string[] = [];
  if (!(f.maxAbsLogit <= tol.maxAbsLogit))
    out.push(`max |Δlogit| ${f.maxAbsLogit.toPrecision(3)} exceeds ${tol.maxAbsLogit}`);
  if (!(f.kl.mean.value <= tol.klMean))
    out.push(`mean KL ${f.kl.mean.value.toExponential(2)} exceeds ${tol.klMean}`);
  if (!(f.sameTop.value >= tol.sameTop))
    out.push(`top-1 agreement ${(f.sameTop.value * 100).toFixed(2)} % is under ${tol.sameTop * 100} %`);
  return out;
}

/**
 * Runs `other` over the reference's windows (the reference holds the first backend's logits) and
 * measures how far its logits are from the reference's. `windowLimit` scores only the first windows.
 */
export async function compareBackends(
  reference: ReferenceLogits,
  other: LogitsModel,
  protocol: Omit<EvalProtocol, 'textHash' | 'tokens' | 'sequences' | 'ctx' | 'stride' | 'windows'>,
  otherInfo: BackendAgreement['other'],
  opts: {
    signal?: AbortSignal;
    windowLimit?: number;
    onProgress?: (done: number, total: number) => void;
  } = {},
): Promise<BackendAgreement> {
  const { fed, outName } = fedInputs(other);
  const windows = Math.min(reference.windows.length, opts.windowLimit ?? Infinity);
  const kls: number[] = [];
  const same: number[] = [];
  let maxAbsLogit = 0;
  for (let w = 0; w < windows; w++) {
    if (opts.signal?.aborted) throw new ModelError('cancelled', 'Backend comparison cancelled.');
    const { firstTarget } = reference.windows[w];
    const ref = await reference.window(w);
    const { logits } = await scoredLogits(other, fed, outName, reference.idsOf(w), firstTarget);
    const rows = logitAgreement(ref.logits, logits, ref.vocab);
    maxAbsLogit = Number.isNaN(rows.maxAbsLogit) ? NaN : Math.max(maxAbsLogit, rows.maxAbsLogit);
    for (let r = 0; r < rows.kl.length; r++) {
      kls.push(rows.kl[r]);
      same.push(rows.sameTop[r]);
    }
    opts.onProgress?.(w + 1, windows);
    await yieldToEventLoop();
  }
  const n = kls.length;
  const p = same.reduce((s, x) => s + x, 0) / Math.max(1, n);
  const figures = {
    maxAbsLogit,
    kl: { mean: meanAndError(kls), max: kls.reduce((m, x) => (x > m || Number.isNaN(x) ? x : m), 0) },
    sameTop: { value: p, uncertainty: n > 1 ? Math.sqrt((p * (1 - p)) / (n - 1)) : 0 },
  };
  return {
    ...figures,
    tokens: n,
    protocol: {
      ...protocol,
      textHash: await reference.textHash(),
      tokens: n,
      sequences: new Set(reference.windows.slice(0, windows).map((x) => x.seq)).size,
      ctx: reference.ctx,
      stride: reference.stride,
      windows,
    },
    other: otherInfo,
    warnings: agreementWarnings(figures),
  };
}
