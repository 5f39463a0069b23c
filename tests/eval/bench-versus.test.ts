/**
 * The figures `npm run bench` prints for every quality row against the original (perplexity, KL with
 * its 99 % and max, same top, PPL ratio, with the protocol), as tools/bench/perplexity.ts computes
 * them: checked against the direct float64 computation of tests/helpers/kl-direct.ts on the same
 * logits, for two rows measured against one reference (its logits computed once), and the table cells
 * read back to the same numbers.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { tokensHash } from '../../src/core/eval/compare.ts';
import {
  openReference,
  versusCells,
  versusProtocol,
  VERSUS_HEADER,
  type VersusOriginal,
} from '../../tools/bench/perplexity.ts';
import { compressBytes } from '../helpers/compress.ts';
import { STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';
import { directComparison, type DirectComparison } from '../helpers/kl-direct.ts';

const original = new Uint8Array(readFileSync(STORIES_MODEL));
const model = parseModel(bytesSource('model.onnx', original));
// two stories cut to 80 and 60 tokens, windows of 40 every 20
const sequences = parseIdsText(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8'))
  .slice(0, 2)
  .map((s, i) => s.slice(0, i === 0 ? 80 : 60));
const CTX = 40;
const STRIDE = 20;
const ROWS = {
  'int4 block 32': compressBytes(original, [{ method: 'int4', options: { blockSize: 32 } }]).exported,
  'prune 2:4': compressBytes(original, [{ method: 'prune', options: { pattern: '2:4' } }]).exported,
};

function expectClose(actual: number, expected: number, rel: number, abs = 1e-9) {
  expect(Math.abs(actual - expected)).toBeLessThanOrEqual(abs + rel * Math.abs(expected));
}

/** The numbers in a row's cells under VERSUS_HEADER: KL, its se, KL 99 %, same top %, its se %. */
function cellNumbers(cells: string): number[] {
  return [...cells.matchAll(/-?\d+\.\d+/g)].map((m) => Number(m[0]));
}

describe("the bench's figures against the original (stories260K, onnxruntime-node)", () => {
  it('every row equals a direct float64 computation over the same logits, and its cells say so', async () => {
    const reference = await openReference(original, model, sequences, CTX, STRIDE);
    const measured: { versus: VersusOriginal; want: DirectComparison }[] = [];
    try {
      for (const [label, bytes] of Object.entries(ROWS)) {
        const r = await reference.measure(bytes, model);
        const want = await directComparison(original, bytes, sequences, CTX, STRIDE);
        expect(want.n, label).toBe(79 + 59);
        expect(r.tokens, label).toBe(want.n);
        expectClose(r.perplexity, want.ppl, 1e-6);
        const v = r.versus;
        expectClose(v.kl.value, want.kl, 1e-5);
        expectClose(v.kl.uncertainty, want.klSe, 1e-5);
        expectClose(v.klP99, want.p99, 1e-5);
        expectClose(v.klMax, want.max, 1e-5);
        expect(v.sameTop.value, label).toBe(want.same);
        expectClose(v.sameTop.uncertainty, want.sameSe, 1e-9);
        expectClose(v.ratio.value, want.ratio, 1e-6);
        expectClose(v.ratio.uncertainty, want.ratioSe, 1e-6);
        // the compressed rows do move the distribution: these are not identical models' figures
        expect(v.kl.value).toBeGreaterThan(1e-3);
        expect(v.sameTop.value).toBeLessThan(1);
        // the table's cells, read back, are the direct figures to their printed precision
        const [kl, klSe, p99, same, sameSe] = cellNumbers(versusCells(v));
        expect(Math.abs(kl - want.kl)).toBeLessThanOrEqual(0.5e-5 + 1e-6);
        expect(Math.abs(klSe - want.klSe)).toBeLessThanOrEqual(0.5e-5 + 1e-6);
        expect(Math.abs(p99 - want.p99)).toBeLessThanOrEqual(0.5e-4 + 1e-6);
        expect(Math.abs(same - want.same * 100)).toBeLessThanOrEqual(0.005 + 1e-9);
        expect(Math.abs(sameSe - want.sameSe * 100)).toBeLessThanOrEqual(0.005 + 1e-9);
        measured.push({ versus: v, want });
      }
    } finally {
      await reference.close();
    }
    // the two rows differ (2:4 pruning moves stories260K much further than int4)
    expect(measured[1].want.kl).toBeGreaterThan(measured[0].want.kl);
    expect(VERSUS_HEADER.split('|').filter((c) => c.trim())).toHaveLength(3);
    // the protocol under the table: the scored tokens' hash, their count, the window
    const line = versusProtocol(measured);
    const hash = await tokensHash(sequences);
    expect(measured[0].versus.protocol).toMatchObject({
      textHash: hash,
      ctx: CTX,
      stride: STRIDE,
      sequences: 2,
    });
    expect(line).toContain(`text sha256 ${hash.slice(0, 12)}, ${79 + 59} tokens scored (2 sequences)`);
    expect(line).toContain(`ctx ${CTX}, stride ${STRIDE}`);
    expect(line).toMatch(/onnxruntime \d+\.\d+/);
  });
});
