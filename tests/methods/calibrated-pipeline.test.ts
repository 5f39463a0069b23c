/**
 * The calibration step of the recipe pipeline on stories260K: statistics are captured once per
 * (model, calibration set) and reused, and the live preview gives the calibrated methods exactly the
 * weights compressModel gives them. onnxruntime-node is real; the runtime only counts its sessions.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { PreviewSession } from '../../src/core/compress/session.ts';
import {
  CalibrationCache,
  calibrate,
  calibrationTargets,
  type CalibrationInput,
  type CalibrationRuntime,
} from '../../src/core/compress/calibration.ts';
import { isModelError } from '../../src/core/errors.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';
import { countingRuntime } from '../helpers/calibration.ts';

let model: OnnxModel;
let count: { sessions: number };
let runtime: CalibrationRuntime;
const input = (seed: number, sequential = false): CalibrationInput => ({
  settings: { source: 'generate', samples: 2, length: 16, seed, bos: 1, sequential },
});

beforeAll(() => {
  model = parseModel(bytesSource('model.onnx', readFileSync(STORIES_MODEL)));
  ({ runtime, count } = countingRuntime(model));
});

describe('calibration cache', () => {
  it('runs the model once per calibration set: a second recipe on the same weights reuses the statistics', async () => {
    const cache = new CalibrationCache();
    const gptq = resolveRecipe({ steps: [{ method: 'gptq' }] });
    count.sessions = 0;
    const first = await calibrate(model, gptq, input(3), runtime, { cache });
    expect(count.sessions).toBe(2); // one to generate the sequences, one to capture
    expect(Object.keys(first.layers)).toEqual(calibrationTargets(model, gptq).weights);

    // another option (a slider move), and Wanda on a subset: XᵀX and norms are already there
    const again = await calibrate(
      model,
      resolveRecipe({ steps: [{ method: 'gptq', options: { blockSize: 64 } }] }),
      input(3),
      runtime,
      { cache },
    );
    const wanda = await calibrate(
      model,
      resolveRecipe({ steps: [{ method: 'wanda', select: { include: ['l0.*'] } }] }),
      input(3),
      runtime,
      { cache },
    );
    expect(count.sessions).toBe(2);
    expect(again).toBe(first);
    expect(wanda).toBe(first);

    // another seed is another calibration set
    const other = await calibrate(model, gptq, input(4), runtime, { cache });
    expect(count.sessions).toBe(4);
    expect(other).not.toBe(first);
    // without a cache the model runs again
    await calibrate(model, gptq, input(3), runtime);
    expect(count.sessions).toBe(6);
  }, 60_000);

  it('sequential statistics serve only the recipe they were captured for, and reuse the sequences', async () => {
    const cache = new CalibrationCache();
    const sparse = (sparsity: number) =>
      resolveRecipe({
        steps: [{ method: 'sparsegpt', options: { sparsity }, select: { include: ['l0.*'] } }],
      });
    count.sessions = 0;
    const a = await calibrate(model, sparse(0.5), input(3, true), runtime, { cache });
    const groups = count.sessions - 1; // after the generation session, one capture per layer group
    expect(groups).toBe(4); // layer 0: q/k/v, wo, w1/w3, w2
    expect(await calibrate(model, sparse(0.5), input(3, true), runtime, { cache })).toBe(a);
    expect(count.sessions).toBe(1 + groups);
    // another sparsity changes what later groups see: captured again, on the cached sequences
    const b = await calibrate(model, sparse(0.3), input(3, true), runtime, { cache });
    expect(b).not.toBe(a);
    expect(count.sessions).toBe(1 + 2 * groups);
  }, 60_000);
});

describe('PreviewSession with calibration statistics', () => {
  it('previews calibrated steps exactly as compressModel computes them, and refuses them without statistics', async () => {
    const steps = resolveRecipe({
      steps: [
        { method: 'wanda', options: { sparsity: 0.4 }, select: { include: ['l1.*'] } },
        { method: 'gptq', select: { include: ['l1.*'] } },
      ],
    });
    const stats = await calibrate(model, steps, input(5), runtime);
    const preview = new PreviewSession(model);
    const previewed = await preview.run(steps, { calibration: stats });
    const compressed = compressModel(model, steps, { calibration: stats });
    expect(previewed.outcomes.map((o) => o.candidate.name)).toEqual(
      compressed.outcomes.map((o) => o.candidate.name),
    );
    previewed.outcomes.forEach((o, i) => {
      expect(o.methods).toEqual(['wanda', 'gptq']);
      expect(o.values).toEqual(compressed.outcomes[i].values);
    });

    // other statistics are not served from the memo of the first ones
    const other = await calibrate(model, steps, input(6), runtime);
    const again = await preview.run(steps, { calibration: other });
    expect(preview.lastComputed).toBe(2 * 7);
    expect(again.outcomes[0].values).not.toEqual(previewed.outcomes[0].values);

    let caught: unknown;
    try {
      await preview.run(steps);
    } catch (e) {
      caught = e;
    }
    expect(isModelError(caught) && caught.code).toBe('needs-calibration');
  }, 60_000);
});
