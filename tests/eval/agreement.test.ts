/**
 * Backend agreement (max |Δlogit|, KL, top-1) against a direct float64 computation on small arrays,
 * and compareBackends on real onnxruntime-node sessions of stories260K: a model against itself agrees
 * exactly; against its int4 export the KL equals compare.ts' own figure on the same windows and the
 * page's warning fires.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AGREEMENT_TOLERANCE,
  agreementWarnings,
  compareBackends,
  logitAgreement,
} from '../../src/core/eval/agreement.ts';
import { ReferenceLogits, compareWithReference } from '../../src/core/eval/compare.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { isModelError } from '../../src/core/errors.ts';
import { createNodeSession, NODE_RUNTIME, Tensor } from '../../src/runtime/ort-node.ts';
import { compressBytes } from '../helpers/compress.ts';
import { STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';

/** Seeded logits in [−scale, scale]. */
function logits(n: number, seed: number, scale = 4): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return ((s / 2 ** 32) * 2 - 1) * scale;
  });
}

/** The textbook formulas, row by row: softmax by exp / sum, KL = Σ p ln(p / q), the first argmax. */
function direct(a: Float32Array, b: Float32Array, vocab: number) {
  const rows = a.length / vocab;
  let maxAbs = 0;
  const kl: number[] = [];
  const same: number[] = [];
  for (let r = 0; r < rows; r++) {
    const x = [...a.subarray(r * vocab, (r + 1) * vocab)];
    const y = [...b.subarray(r * vocab, (r + 1) * vocab)];
    const zx = x.reduce((s, v) => s + Math.exp(v), 0);
    const zy = y.reduce((s, v) => s + Math.exp(v), 0);
    const p = x.map((v) => Math.exp(v) / zx);
    const q = y.map((v) => Math.exp(v) / zy);
    kl.push(p.reduce((s, pv, i) => s + pv * Math.log(pv / q[i]), 0));
    same.push(x.indexOf(Math.max(...x)) === y.indexOf(Math.max(...y)) ? 1 : 0);
    for (let i = 0; i < vocab; i++) maxAbs = Math.max(maxAbs, Math.abs(x[i] - y[i]));
  }
  return { maxAbs, kl, same };
}

describe('logitAgreement', () => {
  it('equals the direct computation on small arrays', () => {
    for (const [rows, vocab, seed] of [
      [1, 5, 1],
      [3, 7, 2],
      [6, 32, 3],
    ]) {
      const a = logits(rows * vocab, seed);
      // b: a perturbed copy, with one row's top swapped so top-1 disagrees somewhere
      const b = a.map((v, i) => v + logits(rows * vocab, seed + 100, 0.3)[i]);
      const top = a.subarray(0, vocab).indexOf(Math.max(...a.subarray(0, vocab)));
      b[(top + 1) % vocab] = b[top] + 1;
      const got = logitAgreement(a, b, vocab);
      const want = direct(a, b, vocab);
      expect(got.maxAbsLogit).toBeCloseTo(want.maxAbs, 6);
      expect(got.kl.length).toBe(rows);
      for (let r = 0; r < rows; r++) expect(got.kl[r]).toBeCloseTo(want.kl[r], 10);
      expect([...got.sameTop]).toEqual(want.same);
      expect(got.sameTop[0]).toBe(0);
    }
  });

  it('identical rows agree exactly; large logits do not overflow; NaN shows', () => {
    const a = logits(40, 9, 80);
    const same = logitAgreement(a, a.slice(), 10);
    expect(same.maxAbsLogit).toBe(0);
    expect([...same.kl].every((k) => k === 0)).toBe(true);
    expect([...same.sameTop].every((x) => x === 1)).toBe(true);
    const shifted = logitAgreement(
      a,
      a.map((v) => v + 500),
      10,
    ); // softmax is shift-invariant
    expect(shifted.maxAbsLogit).toBeCloseTo(500, 3);
    for (const k of shifted.kl) expect(k).toBeLessThan(1e-9);
    const bad = a.slice();
    bad[3] = NaN;
    expect(logitAgreement(a, bad, 10).maxAbsLogit).toBeNaN();
  });

  it('refuses mismatched shapes with a typed error', () => {
    let err: unknown;
    try {
      logitAgreement(new Float32Array(10), new Float32Array(12), 5);
    } catch (e) {
      err = e;
    }
    expect(isModelError(err)).toBe(true);
  });

  it('warns for each figure beyond tolerance, and for NaN', () => {
    const ok = {
      maxAbsLogit: 1e-5,
      kl: { mean: { value: 1e-9, uncertainty: 0 }, max: 1e-8 },
      sameTop: { value: 1, uncertainty: 0 },
    };
    expect(agreementWarnings(ok)).toEqual([]);
    expect(agreementWarnings({ ...ok, maxAbsLogit: AGREEMENT_TOLERANCE.maxAbsLogit * 2 })).toHaveLength(1);
    expect(agreementWarnings({ ...ok, maxAbsLogit: NaN })).toHaveLength(1);
    expect(
      agreementWarnings({
        ...ok,
        kl: { mean: { value: 0.1, uncertainty: 0 }, max: 1 },
        sameTop: { value: 0.5, uncertainty: 0 },
      }),
    ).toHaveLength(2);
  });
});

describe('compareBackends on onnxruntime-node sessions (stories260K)', () => {
  const original = new Uint8Array(readFileSync(STORIES_MODEL));
  const inputs = summarizeInputs(parseModel(bytesSource('model.onnx', original)).graph);
  const sequences = parseIdsText(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8'))
    .slice(0, 2)
    .map((s) => s.slice(0, 60));

  it('a model against itself agrees exactly; against its int4 export the KL is compare.ts’ and the warning fires', async () => {
    const base = await createNodeSession(original);
    const again = await createNodeSession(original);
    const int4 = await createNodeSession(
      compressBytes(original, [{ method: 'int4', options: { blockSize: 32 } }]).exported,
    );
    try {
      const reference = new ReferenceLogits({ session: base, Tensor, inputs }, sequences, 32, 32);
      const self = await compareBackends(reference, { session: again, Tensor, inputs }, NODE_RUNTIME, {
        provider: 'cpu (second session)',
      });
      expect(self.maxAbsLogit).toBe(0);
      expect(self.kl.mean.value).toBe(0);
      expect(self.sameTop.value).toBe(1);
      expect(self.warnings).toEqual([]);
      expect(self.tokens).toBe(reference.tokens);
      expect(self.protocol.textHash).toBe(await reference.textHash());

      const lossy = await compareBackends(reference, { session: int4, Tensor, inputs }, NODE_RUNTIME, {
        provider: 'int4',
      });
      const versus = await compareWithReference(reference, { session: int4, Tensor, inputs }, NODE_RUNTIME);
      expect(lossy.kl.mean.value).toBeCloseTo(versus.kl.mean.value, 10);
      expect(lossy.kl.max).toBeCloseTo(versus.kl.max, 10);
      expect(lossy.sameTop.value).toBeCloseTo(versus.sameTop.value, 12);
      expect(lossy.maxAbsLogit).toBeGreaterThan(AGREEMENT_TOLERANCE.maxAbsLogit);
      expect(lossy.warnings.length).toBeGreaterThan(0);
    } finally {
      await Promise.all([base.release(), again.release(), int4.release()]);
    }
  });
});
