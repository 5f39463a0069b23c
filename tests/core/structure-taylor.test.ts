/**
 * Taylor (gradient) importance: each head's, neuron's and block's score is |∂L/∂ξ| of a gate ξ on
 * its output, checked against central finite differences of the next-token loss that onnxruntime
 * computes on the model with that unit's output rows scaled by 1 ± ε; on the demo model it ranks
 * units differently from weight magnitude, and the model it prunes runs.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import {
  applyStructuredPruning,
  detectStructure,
  magnitudeImportance,
  planPruning,
  rowDots,
  taylorImportance,
  taylorTargets,
} from '../../src/core/structure/index.ts';
import { pruneStructure } from '../../src/core/compress/structure.ts';
import { parseIdsText, loadTokenizer } from '../../src/core/tokenizer.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';
import { DEMO_DIR, DEMO_MODEL, STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';
import { pastInputs } from '../helpers/demo.ts';
import { scaledRows } from '../helpers/structure.ts';
import { ort } from '../helpers/ort.ts';
import { seededFloats } from '../helpers/models.ts';

const load = (p: string): OnnxModel => parseModel(bytesSource(p, new Uint8Array(readFileSync(p))));

/** Mean next-token cross-entropy of `ids` under the model `bytes`, by onnxruntime, in float64. */
async function lossOf(bytes: Uint8Array, ids: number[]): Promise<number> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const feeds: Record<string, ort.Tensor> = {};
    const int64 = (v: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), [1, v.length]);
    for (const name of session.inputNames)
      feeds[name] =
        name === 'input_ids'
          ? int64(ids)
          : name === 'position_ids'
            ? int64(ids.map((_, i) => i))
            : int64(ids.map(() => 1));
    // the demo's KV cache: empty, [1, heads, 0, head_dim] as each (pruned) block declares it
    for (const p of pastInputs(bytes))
      feeds[p.name] = new ort.Tensor('float32', new Float32Array(0), [1, p.heads, 0, p.headDim]);
    const logits = (await session.run(feeds)).logits.data as Float32Array;
    const V = logits.length / ids.length;
    let loss = 0;
    for (let t = 0; t + 1 < ids.length; t++) {
      let max = -Infinity;
      for (let v = 0; v < V; v++) max = Math.max(max, logits[t * V + v]);
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(logits[t * V + v] - max);
      loss -= logits[t * V + ids[t + 1]] - max - Math.log(z);
    }
    return loss / (ids.length - 1);
  } finally {
    await session.release();
  }
}

/** (L(1 + ε) − L(1 − ε)) / 2ε with the given rows (and whole tensors) scaled by the gate. */
async function gateDerivative(
  model: OnnxModel,
  ids: number[],
  rows: Record<string, number[]>,
  whole: string[] = [],
  eps = 1e-2,
): Promise<number> {
  const up = await lossOf(scaledRows(model, rows, 1 + eps, whole), ids);
  const down = await lossOf(scaledRows(model, rows, 1 - eps, whole), ids);
  return (up - down) / (2 * eps);
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

/** Spearman-free rank check: the order of the units by score. */
const order = (v: number[]) =>
  v
    .map((x, i) => [x, i])
    .sort((a, b) => a[0] - b[0])
    .map((p) => p[1]);

describe('taylorImportance', () => {
  it('rowDots is Σ_c w[r, c]·g[r, c] per row', () => {
    const w = seededFloats(12, 1);
    const g = seededFloats(12, 2);
    const out = rowDots(w, g, 3, 4);
    for (let r = 0; r < 3; r++) {
      let s = 0;
      for (let c = 0; c < 4; c++) s += w[r * 4 + c] * g[r * 4 + c];
      expect(out[r]).toBeCloseTo(s, 12);
    }
  });

  it('equals |∂L/∂gate| by finite differences on stories260K (GQA heads, SwiGLU neurons, blocks)', async () => {
    const model = load(STORIES_MODEL);
    const s = detectStructure(model);
    const ids = parseIdsText(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8'))[0].slice(0, 24);
    const imp = await taylorImportance(model, s, [ids]);
    expect(imp.kind).toBe('taylor');
    expect(imp.heads.map((h) => h.length)).toEqual(s.blocks.map((b) => b.attention.heads));
    expect(imp.neurons.map((n) => n.length)).toEqual(s.blocks.map((b) => b.mlp.hidden));
    // measured agreement is ~0.1 %: the central difference's ε² error and float32 logits
    const close = (fd: number, score: number) =>
      expect(Math.abs(Math.abs(fd) - score)).toBeLessThan(0.01 * score + 5e-5);
    // heads: the rows of the output projection its output features feed
    for (const [b, h] of [
      [0, 0],
      [2, 5],
      [4, 7],
    ]) {
      const att = s.blocks[b].attention;
      const d = att.headDim;
      const fd = await gateDerivative(model, ids, { [att.out.weight]: range(h * d, (h + 1) * d) });
      close(fd, imp.heads[b][h]);
    }
    // the largest-scored neurons (well above the finite differences' noise) and one more
    for (const b of [1, 3]) {
      const n = imp.neurons[b];
      const top = n.indexOf(Math.max(...n));
      for (const j of [top, (top + 50) % n.length]) {
        const fd = await gateDerivative(model, ids, { [s.blocks[b].mlp.down.weight]: [j] });
        close(fd, n[j]);
      }
    }
    // a block: both sublayers' contributions to the residual stream scaled together
    const block = s.blocks[2];
    const whole = taylorTargets({ ...s, blocks: [block] });
    const fd = await gateDerivative(model, ids, {}, whole);
    close(fd, imp.blocks[2]);
  });

  it('is the mean over sequences of each sequence’s |gradient|, so opposite signs do not cancel', async () => {
    const model = load(STORIES_MODEL);
    const s = detectStructure(model);
    const seqs = parseIdsText(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8')).map((q) => q.slice(0, 16));
    const one = await Promise.all([0, 1].map((i) => taylorImportance(model, s, [seqs[i]])));
    const both = await taylorImportance(model, s, seqs.slice(0, 2));
    for (let b = 0; b < s.blocks.length; b++)
      for (let h = 0; h < s.blocks[b].attention.heads; h++)
        expect(both.heads[b][h]).toBeCloseTo((one[0].heads[b][h] + one[1].heads[b][h]) / 2, 6);
  });

  it('on the demo model ranks heads and neurons differently from magnitude; the pruned model runs', async () => {
    const model = load(DEMO_MODEL);
    const s = detectStructure(model);
    const tokenizer = loadTokenizer(JSON.parse(readFileSync(join(DEMO_DIR, 'tokenizer.json'), 'utf8')));
    const text = tokenizer.encode(readFileSync(join(DEMO_DIR, 'train.txt'), 'utf8').slice(0, 20_000));
    const seqs = [0, 1, 2].map((i) => text.slice(i * 1000, i * 1000 + 48));
    const taylor = await taylorImportance(model, s, seqs);
    const magnitude = magnitudeImportance(model, s);
    for (const v of [...taylor.heads.flat(), ...taylor.neurons.flat(), ...taylor.blocks])
      expect(Number.isFinite(v) && v >= 0).toBe(true);
    const differs = (a: number[][], b: number[][]) =>
      a.filter((x, i) => order(x).join() !== order(b[i]).join()).length;
    expect(differs(taylor.heads, magnitude.heads)).toBeGreaterThan(0);
    expect(differs(taylor.neurons, magnitude.neurons)).toBe(s.blocks.length);
    const request = { heads: 0.25, neurons: 0.25 };
    const plan = planPruning(s, taylor, request);
    const byMagnitude = planPruning(s, magnitude, request);
    expect(JSON.stringify(plan.blocks)).not.toBe(JSON.stringify(byMagnitude.blocks));
    const pruned = applyStructuredPruning(model, plan, s);
    expect(pruned.report.paramsAfter).toBeLessThan(pruned.report.paramsBefore);
    const loss = await lossOf(pruned.bytes, seqs[0]);
    expect(Number.isFinite(loss)).toBe(true);
    // the pruned model still predicts: far below the uniform guess's loss, ln(vocabulary)
    expect(loss).toBeLessThan(Math.log(tokenizer.vocabSize) * 0.8);
  });

  it('runs in pruneStructure on generated calibration sequences, with progress; refuses without data; cancels', async () => {
    const model = load(STORIES_MODEL);
    const runtime = { createSession: createNodeSession, Tensor, inputs: summarizeInputs(model.graph) };
    const settings = {
      source: 'generate' as const,
      samples: 3,
      length: 16,
      seed: 0,
      bos: 1,
      sequential: false,
    };
    const phases: string[] = [];
    const r = await pruneStructure(
      model,
      { heads: 0.25, neurons: 0.25, importance: 'taylor', scope: 'layer' },
      { input: { settings }, runtime },
      { onProgress: (p) => phases.push(`${p.phase} ${p.done}/${p.total}`) },
    );
    expect(r.importance.kind).toBe('taylor');
    expect(phases).toContain('gradients 3/3');
    expect(r.report.headsAfter).toBeLessThan(r.report.headsBefore);
    await expect(
      pruneStructure(model, { heads: 0.25, importance: 'taylor', scope: 'layer' }),
    ).rejects.toMatchObject({ code: 'needs-calibration' });
    const controller = new AbortController();
    controller.abort();
    await expect(
      taylorImportance(model, detectStructure(model), [[1, 2, 3]], { signal: controller.signal }),
    ).rejects.toMatchObject({ code: 'cancelled' });
    await expect(taylorImportance(model, detectStructure(model), [[1]])).rejects.toMatchObject({
      code: 'needs-calibration',
    });
  });
});
