/**
 * Capture in batches: sequences of one length run through the capture graph together (the demo model
 * takes a batch), and the statistics equal the ones computed here, in float64, from each sequence run
 * on its own. A graph that fixes its batch at 1 inside falls back to one sequence at a time.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, int64Tensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { captureActivationStats, planCapture } from '../../src/core/calibrate/capture.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';
import { decoderFeeds } from '../../src/core/eval/decoder.ts';
import { DEMO_DIR, DEMO_MODEL } from '../helpers/fixtures.ts';
import { seededFloats } from '../helpers/models.ts';

/** Σ xᵢxⱼ, Σ x², max |x| and the range of `weight`'s activation, each sequence run alone ([1, length]). */
async function direct(model: OnnxModel, weight: string, sequences: number[][]) {
  const plan = planCapture(model, [weight], { hessian: false });
  const session = await createNodeSession(plan.bytes);
  const { output, k } = plan.targets[0];
  const xtx = new Float64Array(k * k);
  const sumSquares = new Float64Array(k);
  const absMax = new Float32Array(k);
  let lo = Infinity;
  let hi = -Infinity;
  for (const ids of sequences) {
    const fed = summarizeInputs(model.graph).filter((i) => session.inputNames.includes(i.name));
    const out = await session.run(decoderFeeds(Tensor, fed, ids));
    const x = out[output].data as Float32Array;
    for (let r = 0; r < ids.length; r++)
      for (let i = 0; i < k; i++) {
        const v = x[r * k + i];
        sumSquares[i] += v * v;
        absMax[i] = Math.max(absMax[i], Math.abs(v));
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
        for (let j = 0; j < k; j++) xtx[i * k + j] += v * x[r * k + j];
      }
  }
  await session.release();
  return { xtx, sumSquares, absMax, lo, hi };
}

function expectStatsClose(
  got: { xtx: Float64Array | null; sumSquares: Float64Array; absMax: Float32Array; min: number; max: number },
  want: Awaited<ReturnType<typeof direct>>,
): void {
  const rel = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    let worst = 0;
    for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1 + Math.abs(b[i])));
    return worst;
  };
  // onnxruntime's float32 Gemm over a batch against float64 sums of single runs
  expect(rel(got.xtx!, want.xtx)).toBeLessThan(1e-5);
  expect(rel(got.sumSquares, want.sumSquares)).toBeLessThan(1e-5);
  expect(rel(got.absMax, want.absMax)).toBeLessThan(1e-5);
  expect(Math.abs(got.min - want.lo)).toBeLessThan(1e-5 * (1 + Math.abs(want.lo)));
  expect(Math.abs(got.max - want.hi)).toBeLessThan(1e-5 * (1 + Math.abs(want.hi)));
}

/** Captures the statistics of `weights` through a real session, noting the sequences-done count of each progress report. */
async function captureWithProgress(model: OnnxModel, weights: string[], sequences: number[][]) {
  const plan = planCapture(model, weights);
  const session = await createNodeSession(plan.bytes);
  const seen: number[] = [];
  try {
    const stats = await captureActivationStats(
      session,
      Tensor,
      summarizeInputs(model.graph),
      plan,
      sequences,
      {
        onProgress: (p) => seen.push(p.sequencesDone),
      },
    );
    return { stats, seen };
  } finally {
    await session.release();
  }
}

describe('batched activation capture', () => {
  it('on the demo model: runs sequences of one length together, statistics as from single runs', async () => {
    const dir = DEMO_DIR;
    const model = parseModel(bytesSource('model.onnx', readFileSync(DEMO_MODEL)));
    const ids: number[] = JSON.parse(readFileSync(join(dir, 'heldout_ids.json'), 'utf8')).slice(0, 400);
    // three of 24 tokens (one batch), then two of 17 (another)
    const sequences = [0, 1, 2].map((i) => ids.slice(i * 24, (i + 1) * 24));
    sequences.push(ids.slice(100, 117), ids.slice(200, 217));
    const weight = 'transformer.h.1.mlp.c_proj.weight';
    const { stats, seen } = await captureWithProgress(model, [weight], sequences);
    expect(seen).toEqual([3, 5]);
    expect(stats.tokens).toBe(3 * 24 + 2 * 17);
    const s = stats.layers[weight];
    expect(s.rows).toBe(3 * 24 + 2 * 17);
    expectStatsClose(s, await direct(model, weight, sequences));
  });

  it('a graph whose batch is fixed at 1 inside is run one sequence at a time', async () => {
    // input_ids [batch, seq] → embedding → Reshape to [1, 6, 8] (batch 1 only) → MatMul
    const k = 8;
    const model = parseModel(
      bytesSource(
        'fixed.onnx',
        makeModelBytes({
          nodes: [
            makeNode('Gather', ['emb', 'input_ids'], ['e']),
            makeNode('Reshape', ['e', 'shape'], ['h']),
            makeNode('MatMul', ['h', 'w'], ['y']),
          ],
          inputs: [valueInfo('input_ids', DataType.INT64, ['batch', 'seq'])],
          outputs: [valueInfo('y', DataType.FLOAT, [1, 6, 3])],
          initializers: [
            floatTensor('emb', [10, k], seededFloats(10 * k, 1)),
            int64Tensor('shape', [3], [1, 6, k]),
            floatTensor('w', [k, 3], seededFloats(k * 3, 2)),
          ],
        }),
      ),
    );
    const sequences = [
      [1, 2, 3, 4, 5, 6],
      [6, 5, 4, 3, 2, 1],
      [0, 9, 0, 9, 0, 9],
    ];
    const { stats, seen } = await captureWithProgress(model, ['w'], sequences);
    expect(seen).toEqual([1, 2, 3]);
    expect(stats.layers.w.rows).toBe(18);
    expectStatsClose(stats.layers.w, await direct(model, 'w', sequences));
  });
});
