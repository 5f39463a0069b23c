/**
 * Importance measures against direct computations on the real weights, and the plans chosen from
 * them: shares per layer or global, KV groups kept whole, neuron multiples, blocks dropped, and the
 * requests that cannot be met refused with typed errors.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  bytesSource,
  findInitializer,
  parseModel,
  readTensorFloat32,
  type OnnxModel,
} from '../../src/core/onnx/model.ts';
import {
  activationImportance,
  activationTargets,
  captureBlockInfluence,
  detectStructure,
  planBoundaryCapture,
  rowCosineSum,
  magnitudeImportance,
  planPruning,
} from '../../src/core/structure/index.ts';
import { emptyInputStats, type CalibrationStats } from '../../src/core/calibrate/stats.ts';
import { ModelError } from '../../src/core/errors.ts';
import { DEMO_MODEL, STORIES_MODEL } from '../helpers/fixtures.ts';
import { zeroed } from '../helpers/structure.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';

const load = (p: string): OnnxModel => parseModel(bytesSource(p, new Uint8Array(readFileSync(p))));

/** Frobenius norm of rows [r0, r1) × columns [c0, c1) of a named [rows, cols] weight. */
function sliceNorm(model: OnnxModel, name: string, r0: number, r1: number, c0: number, c1: number): number {
  const t = findInitializer(model, name);
  const w = readTensorFloat32(model, t);
  const cols = Number(t.dims[1]);
  let s = 0;
  for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) s += w[r * cols + c] ** 2;
  return Math.sqrt(s);
}

describe('importance', () => {
  it('magnitude: a head is ‖its V columns‖·‖its output rows‖, a neuron ‖up‖·‖gate‖·‖down‖ (stories260K)', () => {
    const model = load(STORIES_MODEL);
    const s = detectStructure(model);
    const imp = magnitudeImportance(model, s);
    // block 2, query head 5 reads KV head 2: V columns 16..24, output rows 40..48
    const head = sliceNorm(model, 'l2.wv', 0, 64, 16, 24) * sliceNorm(model, 'l2.wo', 40, 48, 0, 64);
    expect(imp.heads[2][5]).toBeCloseTo(head, 5);
    const j = 101;
    const neuron =
      sliceNorm(model, 'l2.w1', 0, 64, j, j + 1) *
      sliceNorm(model, 'l2.w3', 0, 64, j, j + 1) *
      sliceNorm(model, 'l2.w2', j, j + 1, 0, 64);
    expect(imp.neurons[2][j]).toBeCloseTo(neuron, 6);
    const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
    expect(imp.blocks[2]).toBeCloseTo(sum(imp.heads[2]) + sum(imp.neurons[2]), 6);
  });

  it("activation: Σ rms(x_j)·‖W_o[j,:]‖ over a head's features, rms(x_j)·‖W_down[j,:]‖ per neuron", () => {
    const model = load(DEMO_MODEL);
    const s = detectStructure(model);
    // statistics by hand: feature j of every captured input has mean square (j % 5 + 1)
    const layers: CalibrationStats['layers'] = {};
    for (const w of activationTargets(s)) {
      const k = Number(findInitializer(model, w).dims[0]);
      const st = emptyInputStats('x', k, false);
      st.rows = 10;
      for (let f = 0; f < k; f++) st.sumSquares[f] = 10 * ((f % 5) + 1);
      layers[w] = st;
    }
    const imp = activationImportance(model, s, { version: 1, sequences: 1, tokens: 10, layers });
    const o = 'transformer.h.1.attn.c_proj.weight';
    let head = 0;
    for (let f = 64; f < 96; f++) head += Math.sqrt((f % 5) + 1) * sliceNorm(model, o, f, f + 1, 0, 192);
    expect(imp.heads[1][2]).toBeCloseTo(head, 4);
    const down = 'transformer.h.1.mlp.c_proj.weight';
    expect(imp.neurons[1][7]).toBeCloseTo(Math.sqrt(3) * sliceNorm(model, down, 7, 8, 0, 192), 5);
    // without statistics for a weight it is a needs-calibration error
    const missing = { ...layers };
    delete missing[o];
    expect(() =>
      activationImportance(model, s, { version: 1, sequences: 1, tokens: 10, layers: missing }),
    ).toThrow(expect.objectContaining({ code: 'needs-calibration' }));
  });

  it('block influence: 1 − cos(stream in, stream out); a block that adds nothing scores 0 and is dropped first', async () => {
    // the cosine sum against a direct computation on two rows of width 3
    const a = Float32Array.of(1, 0, 0, 1, 2, 2);
    const b = Float32Array.of(0, 1, 0, 2, 4, 4);
    const r = rowCosineSum(a, b, 3);
    expect(r.rows).toBe(2);
    expect(r.sum).toBeCloseTo(0 + 1, 6);
    // stories260K with block 2's residual contributions zeroed: its output is its input
    const original = load(STORIES_MODEL);
    const s = detectStructure(original);
    const b2 = s.blocks[2];
    const bytes = zeroed(original, {}, [b2.attention.out.weight, b2.mlp.down.weight]);
    const model = parseModel(bytesSource('zeroed.onnx', bytes));
    const plan = planBoundaryCapture(model, s);
    expect(plan.outputs).toHaveLength(6);
    const session = await createNodeSession(plan.bytes);
    const sequences = [
      [1, 403, 407, 261, 378, 285, 280, 414],
      [1, 30, 41, 290, 7, 5],
    ];
    const influence = await captureBlockInfluence(
      session,
      Tensor,
      summarizeInputs(model.graph),
      plan,
      64,
      sequences,
    );
    await session.release();
    expect(influence[2]).toBeCloseTo(0, 6);
    for (const i of [0, 1, 3, 4]) expect(influence[i]).toBeGreaterThan(1e-3);
    // the plan drops the block that changes nothing
    const layers: CalibrationStats['layers'] = {};
    for (const w of activationTargets(s)) {
      const st = emptyInputStats('x', Number(findInitializer(model, w).dims[0]), false);
      st.rows = 1;
      st.sumSquares.fill(1);
      layers[w] = st;
    }
    const imp = activationImportance(model, s, { version: 1, sequences: 1, tokens: 1, layers }, influence);
    expect(imp.blocks).toEqual(influence);
    expect(planPruning(s, imp, { blocks: 1 }).blocks.map((p) => p.drop === true)).toEqual([
      false,
      false,
      true,
      false,
      false,
    ]);
  });
});

describe('planPruning', () => {
  const demo = load(DEMO_MODEL);
  const demoS = detectStructure(demo);
  const demoImp = magnitudeImportance(demo, demoS);
  const stories = load(STORIES_MODEL);
  const storiesS = detectStructure(stories);
  const storiesImp = magnitudeImportance(stories, storiesS);

  it('per layer: each block loses its least important heads and neurons', () => {
    const plan = planPruning(demoS, demoImp, { heads: 0.34, neurons: 0.5 });
    plan.blocks.forEach((b, i) => {
      expect(b.heads).toHaveLength(4);
      expect(b.neurons).toHaveLength(384);
      const removed = [0, 1, 2, 3, 4, 5].filter((h) => !b.heads!.includes(h));
      const keptMin = Math.min(...b.heads!.map((h) => demoImp.heads[i][h]));
      for (const h of removed) expect(demoImp.heads[i][h]).toBeLessThanOrEqual(keptMin);
    });
  });

  it('GQA: heads go in KV groups; neurons kept round to the multiple', () => {
    const plan = planPruning(storiesS, storiesImp, { heads: 0.5, neurons: 0.3, multiple: 8 });
    for (const b of plan.blocks) {
      expect(b.heads).toHaveLength(4);
      for (let g = 0; g < 4; g++) expect(b.heads!.includes(2 * g)).toBe(b.heads!.includes(2 * g + 1));
      expect(b.neurons!.length % 8).toBe(0);
      expect(b.neurons).toHaveLength(120); // 172 × 0.7 = 120.4 → 120
    }
  });

  it('global: one ranking, yet every block keeps a KV group; blocks dropped are the least important', () => {
    const plan = planPruning(storiesS, storiesImp, { heads: 0.9, scope: 'global' });
    expect(plan.blocks.every((b) => b.heads!.length >= 2)).toBe(true);
    const removedGroups = plan.blocks.reduce((n, b) => n + (8 - b.heads!.length) / 2, 0);
    expect(removedGroups).toBe(15); // round(0.9 × 20) = 18 asked, 5 blocks must keep one each
    const dropped = planPruning(storiesS, storiesImp, { blocks: 2 });
    const order = storiesImp.blocks.map((s, i) => [s, i]).sort((a, b) => a[0] - b[0]);
    expect(dropped.blocks.flatMap((b, i) => (b.drop ? [i] : []))).toEqual([order[0][1], order[1][1]].sort());
  });

  it('refuses requests that would remove everything or are malformed', () => {
    expect(() => planPruning(demoS, demoImp, { heads: 1 })).toThrow(ModelError);
    expect(() => planPruning(demoS, demoImp, { heads: 1 })).toThrow(/at least one stays/);
    expect(() => planPruning(demoS, demoImp, { neurons: -0.1 })).toThrow(ModelError);
    expect(() => planPruning(demoS, demoImp, { blocks: 6 })).toThrow(/0 to 5/);
    expect(() => planPruning(demoS, demoImp, { neurons: 0.5, multiple: 0 })).toThrow(ModelError);
    expect(() => planPruning(demoS, storiesImp, { heads: 0.5 })).toThrow(/another model/);
  });
});
