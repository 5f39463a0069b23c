/**
 * What the page's calibration card relies on in core: every MatMul/Gemm weight captured once on the
 * original model (XᵀX included) and cached per calibration set; statistics that give a calibrated
 * recipe exactly what the CLI's non-sequential calibration gives it; the charts' summary; and the
 * check that calibration data overlaps the evaluation text.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { weightCandidates } from '../../src/core/compress/select.ts';
import {
  CalibrationCache,
  calibratableWeights,
  calibrate,
  calibrateWeights,
  calibrationFootprint,
  type CalibrationInput,
  type CalibrationRuntime,
} from '../../src/core/compress/calibration.ts';
import {
  activationSummaries,
  countOutlierFeatures,
  DEFAULT_OUTLIER_THRESHOLD,
} from '../../src/core/calibrate/summary.ts';
import { overlapFraction, textSymbols } from '../../src/core/calibrate/overlap.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';
import { countingRuntime } from '../helpers/calibration.ts';

let model: OnnxModel;
let count: { sessions: number };
let runtime: CalibrationRuntime;
const input = (seed: number): CalibrationInput => ({
  settings: { source: 'generate', samples: 2, length: 16, seed, bos: 1, sequential: false },
});

beforeAll(() => {
  model = parseModel(bytesSource('model.onnx', readFileSync(STORIES_MODEL)));
  ({ runtime, count } = countingRuntime(model));
});

describe('calibrating every weight at once (the page)', () => {
  it('captures every MatMul weight with XᵀX, once per calibration set', async () => {
    const weights = calibratableWeights(model);
    const candidates = weightCandidates(model.graph);
    // every linear weight and the LM head; the embedding table (a Gather) has no activation
    for (const c of candidates)
      expect(weights.includes(c.name), c.name).toBe(c.role === 'linear' || c.role === 'lmHead');
    expect(weights.length).toBeGreaterThan(10);
    const cache = new CalibrationCache();
    count.sessions = 0;
    const stats = await calibrateWeights(model, weights, input(7), runtime, { cache });
    expect(count.sessions).toBe(2); // generate, capture
    expect(Object.keys(stats.layers)).toEqual(weights);
    for (const w of weights) expect(stats.layers[w].xtx, w).not.toBeNull();
    // the footprint the card announces is what the statistics hold
    const distinct = new Set(Object.values(stats.layers));
    let held = 0;
    for (const s of distinct)
      held += s.xtx!.byteLength + s.sumSquares.byteLength + s.absMax.byteLength + s.histogram!.byteLength;
    expect(calibrationFootprint(model, weights)).toEqual({ activations: distinct.size, bytes: held });
    // the same settings again: no model run; another seed: a run
    expect(await calibrateWeights(model, weights, input(7), runtime, { cache })).toBe(stats);
    expect(count.sessions).toBe(2);
    expect(await calibrateWeights(model, weights, input(8), runtime, { cache })).not.toBe(stats);
    expect(count.sessions).toBe(4);
  }, 60_000);

  it('gives a calibrated recipe the weights the CLI computes for it with "sequential": false', async () => {
    const steps = resolveRecipe({
      steps: [
        { method: 'wanda', options: { sparsity: 0.3 } },
        { method: 'gptq', options: { blockSize: 32 } },
      ],
    });
    const page = await calibrateWeights(model, calibratableWeights(model), input(9), runtime);
    const cli = await calibrate(model, steps, input(9), runtime);
    const a = compressModel(model, steps, { calibration: page });
    const b = compressModel(model, steps, { calibration: cli });
    expect(a.outcomes.length).toBe(b.outcomes.length);
    a.outcomes.forEach((o, i) => expect(o.values).toEqual(b.outcomes[i].values));
  }, 60_000);

  it('summarises each activation once, with its range and outlier features', async () => {
    const stats = await calibrateWeights(model, calibratableWeights(model), input(7), runtime);
    const summaries = activationSummaries(stats);
    const inputs = new Set(Object.values(stats.layers).map((s) => s.input));
    expect(summaries.map((s) => s.input)).toEqual([...inputs]);
    // every weight appears once, under the activation it reads
    expect(summaries.flatMap((s) => s.weights).sort()).toEqual(Object.keys(stats.layers).sort());
    expect(summaries.some((s) => s.weights.length === 3)).toBe(true); // a layer's q, k, v
    for (const s of summaries) {
      const layer = stats.layers[s.weights[0]];
      expect([s.min, s.max, s.k, s.rows]).toEqual([layer.min, layer.max, layer.k, layer.rows]);
      expect(s.absMax).toBe(Math.max(...layer.absMax));
      expect(s.absMax).toBe(Math.max(-s.min, s.max));
      expect(countOutlierFeatures(s.featureAbsMax, DEFAULT_OUTLIER_THRESHOLD)).toBe(
        [...layer.absMax].filter((x) => x > DEFAULT_OUTLIER_THRESHOLD).length,
      );
    }
    // structured clone keeps it as it is (the worker posts it to the page)
    expect(structuredClone(summaries)).toEqual(summaries);
  }, 60_000);
});

describe('overlap of calibration and evaluation data', () => {
  const story = readFileSync(STORIES_MODEL.replace('model.onnx', 'README.md'), 'utf8');
  it('is the fraction of calibration spans found in the evaluation data', () => {
    const text = story.repeat(2);
    expect(overlapFraction([textSymbols(text)], [textSymbols(text)], 64)).toBe(1);
    expect(overlapFraction([textSymbols('a'.repeat(200))], [textSymbols('b'.repeat(200))], 64)).toBe(0);
    // the evaluation text holds the second half of the calibration text, after text of its own
    let state = 12345;
    const letter = () => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return String.fromCharCode(97 + ((state >>> 16) % 26));
    };
    const calib = [...Array(400)].map(letter).join('');
    const fresh = [...Array(400)].map(letter).join('');
    const f = overlapFraction([textSymbols(calib)], [textSymbols(fresh + calib.slice(200))], 64);
    // spans starting at 200…336 lie in the shared half
    expect(f).toBe((400 - 64 + 1 - 200) / (400 - 64 + 1));
    // shorter than a span: nothing to compare
    expect(overlapFraction([textSymbols('short')], [textSymbols('short')], 64)).toBe(0);
  });

  it('compares token ids sequence by sequence, never across a sequence break', () => {
    const ids = [...Array(40)].map((_, i) => (i * 13) % 97);
    expect(overlapFraction([ids], [[5, 6], ids], 16)).toBe(1);
    expect(overlapFraction([ids], [ids.slice(0, 20), ids.slice(20)], 16)).toBe(
      (20 - 16 + 1 + (20 - 16 + 1)) / (40 - 16 + 1),
    );
    expect(overlapFraction([ids.map((x) => x + 100)], [ids], 16)).toBe(0);
  });
});
