/**
 * The comparison against the original (KL, same top, RMS Δp, PPL ratio and their standard errors)
 * checked against a direct float64 computation over logits onnxruntime-node returns
 * (tests/helpers/kl-direct.ts), on a small slice of stories260K with its int4 export.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ReferenceLogits,
  compareWithReference,
  percentile,
  tokensHash,
  type ComparisonResult,
} from '../../src/core/eval/compare.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { isModelError } from '../../src/core/errors.ts';
import { EXACT_WEIGHT_ONLY, NODE_RUNTIME } from '../../src/runtime/ort-node.ts';
import { compressBytes } from '../helpers/compress.ts';
import { ort, tempDir } from '../helpers/ort.ts';
import { runCli } from '../helpers/cli.ts';
import { STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';
import { tinyDecoder } from '../helpers/decoders.ts';
import { directComparison } from '../helpers/kl-direct.ts';

const original = new Uint8Array(readFileSync(STORIES_MODEL));
const int4 = compressBytes(original, [{ method: 'int4', options: { blockSize: 32 } }]).exported;
// a small slice: two stories cut to 90 and 70 tokens, windows of 48 every 24
const sequences = parseIdsText(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8'))
  .slice(0, 2)
  .map((s, i) => s.slice(0, i === 0 ? 90 : 70));
const CTX = 48;
const STRIDE = 24;

async function session(bytes: Uint8Array) {
  return ort.InferenceSession.create(bytes, { extra: EXACT_WEIGHT_ONLY });
}

/** The direct float64 computation (tests/helpers/kl-direct.ts) on this file's slice. */
const direct = (baseBytes: Uint8Array, compressedBytes: Uint8Array) =>
  directComparison(baseBytes, compressedBytes, sequences, CTX, STRIDE);

async function studio(baseBytes: Uint8Array, compressedBytes: Uint8Array, budgetBytes?: number) {
  const base = await session(baseBytes);
  const q = await session(compressedBytes);
  const inputs = summarizeInputs(parseModel(bytesSource('m.onnx', original)).graph);
  try {
    const reference = new ReferenceLogits(
      { session: base, Tensor: ort.Tensor, inputs },
      sequences,
      CTX,
      STRIDE,
      budgetBytes,
    );
    const first = await compareWithReference(
      reference,
      { session: q, Tensor: ort.Tensor, inputs },
      NODE_RUNTIME,
    );
    const runsAfterFirst = reference.runs;
    const second = await compareWithReference(
      reference,
      { session: q, Tensor: ort.Tensor, inputs },
      NODE_RUNTIME,
    );
    return { first, second, runsAfterFirst, runs: reference.runs, windows: reference.windows.length };
  } finally {
    await base.release();
    await q.release();
  }
}

function expectClose(actual: number, expected: number, rel = 1e-6, abs = 1e-9) {
  expect(Math.abs(actual - expected)).toBeLessThanOrEqual(abs + rel * Math.abs(expected));
}

describe('compressed model against its original (stories260K int4 b32, onnxruntime-node)', () => {
  it('every figure equals a direct float64 computation over the same logits', async () => {
    const want = await direct(original, int4);
    const { first: r } = await studio(original, int4);
    expect(r.protocol.tokens).toBe(want.n);
    expect(want.n).toBe(89 + 69);
    expectClose(r.perplexity.value, want.ppl);
    expectClose(r.perplexity.uncertainty, want.pplSe);
    expectClose(r.basePerplexity.value, want.basePpl);
    expectClose(r.ratio.value, want.ratio);
    expectClose(r.ratio.uncertainty, want.ratioSe);
    expectClose(r.kl.mean.value, want.kl, 1e-5);
    expectClose(r.kl.mean.uncertainty, want.klSe, 1e-5);
    expectClose(r.kl.median, want.median, 1e-5);
    expectClose(r.kl.p99, want.p99, 1e-5);
    expectClose(r.kl.max, want.max, 1e-5);
    expect(r.sameTop.value).toBe(want.same);
    expectClose(r.sameTop.uncertainty, want.sameSe);
    expectClose(r.rmsDeltaP.value, want.rms, 1e-6);
    expectClose(r.rmsDeltaP.uncertainty, want.rmsSe, 1e-5);
    // int4 moves the distribution: the figures are not those of identical models
    expect(r.kl.mean.value).toBeGreaterThan(1e-3);
    expect(r.sameTop.value).toBeLessThan(1);
    expect(r.kl.p99).toBeGreaterThanOrEqual(r.kl.median);
    expect(r.kl.p999).toBeLessThanOrEqual(r.kl.max);
  });

  it('the original against itself: KL 0, same top 1, ratio 1', async () => {
    const { first: r } = await studio(original, original);
    expect(r.kl.max).toBeLessThan(1e-9);
    expect(r.sameTop.value).toBe(1);
    expect(r.ratio.value).toBeCloseTo(1, 12);
    expect(r.rmsDeltaP.value).toBeLessThan(1e-9);
  });

  it("computes the original's logits once per text; past the byte budget windows are recomputed, with the same figures", async () => {
    const cached = await studio(original, int4);
    expect(cached.runsAfterFirst).toBe(cached.windows);
    expect(cached.runs).toBe(cached.windows); // the second comparison ran only the compressed model
    expect(cached.second.kl.mean.value).toBe(cached.first.kl.mean.value);
    const uncached = await studio(original, int4, 0);
    expect(uncached.runs).toBe(2 * uncached.windows);
    expect(uncached.first.kl.mean.value).toBe(cached.first.kl.mean.value);
  });

  it('every figure carries its protocol', async () => {
    const { first: r } = await studio(original, int4);
    const p = r.protocol;
    expect(p.textHash).toBe(await tokensHash(sequences));
    expect(p.textHash).toMatch(/^[0-9a-f]{64}$/);
    expect(p.textHash).not.toBe(await tokensHash([sequences[0]]));
    expect({ ctx: p.ctx, stride: p.stride, sequences: p.sequences }).toEqual({
      ctx: CTX,
      stride: STRIDE,
      sequences: 2,
    });
    expect(p.provider).toMatch(/cpu/);
    expect(p.onnxruntime).toBe(ort.env.versions.node);
    expect(p.threads).toBeDefined();
  });

  it('models with different vocabularies are refused with a typed error', async () => {
    const other = await session(tinyDecoder({}));
    const base = await session(original);
    const inputs = summarizeInputs(parseModel(bytesSource('m.onnx', original)).graph);
    try {
      const reference = new ReferenceLogits(
        { session: base, Tensor: ort.Tensor, inputs },
        [[1, 2, 3, 4]],
        4,
        4,
      );
      const err = await compareWithReference(
        reference,
        {
          session: other,
          Tensor: ort.Tensor,
          inputs: summarizeInputs(parseModel(bytesSource('t.onnx', tinyDecoder({}))).graph),
        },
        NODE_RUNTIME,
      ).catch((e: unknown) => e);
      expect(isModelError(err)).toBe(true);
      expect((err as Error).message).toMatch(/vocabulary/);
    } finally {
      await other.release();
      await base.release();
    }
  });

  it("percentile interpolates as llama.cpp's", () => {
    const x = [0, 1, 2, 3, 10];
    expect(percentile(x, 0.5)).toBe(2);
    expect(percentile(x, 0.9)).toBeCloseTo(3 + 0.6 * 7, 12);
    expect(percentile(x, 1)).toBe(10);
  });
});

describe('ppl COMPRESSED --base ORIGINAL', () => {
  it('prints the comparison, and --json carries every figure with its protocol', async () => {
    const dir = tempDir();
    const q = join(dir, 'int4.onnx');
    const ids = join(dir, 'ids.txt');
    writeFileSync(q, int4);
    writeFileSync(ids, sequences.map((s) => s.join(' ')).join('\n'));
    const args = [
      'ppl',
      q,
      '--base',
      STORIES_MODEL,
      '--ids',
      ids,
      '--ctx',
      `${CTX}`,
      '--stride',
      `${STRIDE}`,
    ];
    const text = await runCli(args);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/mean KL divergence\s+\d+\.\d+ ± \d+\.\d+/);
    expect(text.out).toMatch(/same top/);
    expect(text.out).toMatch(/protocol: text sha256 [0-9a-f]{12}, 158 tokens scored/);
    const json = await runCli([...args, '--json']);
    const r = JSON.parse(json.out) as ComparisonResult;
    const want = await direct(original, int4);
    expectClose(r.kl.mean.value, want.kl, 1e-5);
    expect(r.sameTop.value).toBe(want.same);
    expect(r.protocol).toMatchObject({
      tokens: 158,
      ctx: CTX,
      stride: STRIDE,
      onnxruntime: ort.env.versions.node,
    });
  });
});
