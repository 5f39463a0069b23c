/**
 * AWQ on every linear layer of the real stories260K model, calibrated on sequences it generated
 * itself: the layer-wise error ‖XW − XŴ‖²_F on the calibration data is at most round-to-nearest
 * int4's at the same block size (per weight, and per group of weights sharing one scale), and the
 * exported model runs in onnxruntime-node as the preview computes.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { OnnxModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import type { CalibrationStats } from '../../src/core/calibrate/stats.ts';
import { awqInt4, outputError, type AwqKernelOptions } from '../../src/methods/awq/kernel.ts';
import { int4Method } from '../../src/methods/int4/index.ts';
import { gptqInt4 } from '../../src/methods/gptq/kernel.ts';
import type { WeightMatrix } from '../../src/methods/types.ts';
import { calibrateStories } from '../helpers/calibration.ts';
import { denseReference, maxAbs, maxAbsDiff, opTypes, runOutput } from '../helpers/compress.ts';
import { idsInput } from '../helpers/ort.ts';

let weights: WeightMatrix[];
let stats: CalibrationStats;
let model: OnnxModel;
let bytes: Uint8Array;

beforeAll(async () => {
  ({ model, stats, bytes, weights } = await calibrateStories({ count: 6, length: 48, seed: 1 }));
}, 60_000);

const OPTIONS: AwqKernelOptions = {
  blockSize: 32,
  symmetric: true,
  gridPoints: 20,
  quantizer: 'rtn',
  clip: false,
  dampening: 0.01,
  actOrder: true,
};

const rtn = (w: WeightMatrix, symmetric = true) =>
  int4Method.apply([w], { blockSize: 32, symmetric, format: 'matmulnbits' })[0].values;
const error = (w: WeightMatrix, values: Float32Array) => outputError(w, values, stats.layers[w.name].xtx!);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b) / xs.length;

describe('AWQ on stories260K, every linear layer, calibrated on generated sequences', () => {
  for (const symmetric of [true, false])
    it(`each weight's layer error is at most RTN int4 b32's (${symmetric ? 'symmetric' : 'zero points'}), lower on the whole`, () => {
      expect(weights).toHaveLength(35);
      const ratios: number[] = [];
      const alphas: number[] = [];
      for (const w of weights) {
        const [awq] = awqInt4([w], stats.layers[w.name], { ...OPTIONS, symmetric });
        const eRtn = error(w, rtn(w, symmetric));
        const e = error(w, awq.values);
        expect(e, w.name).toBeLessThanOrEqual(eRtn);
        ratios.push(e / eRtn);
        alphas.push(awq.encoding.alpha);
      }
      // the search does pick scales (not α = 0 everywhere), and they pay off
      expect(alphas.filter((a) => a > 0).length).toBeGreaterThan(weights.length / 2);
      expect(mean(ratios)).toBeLessThan(0.95);
    });

  it('weights reading one activation (q/k/v, w1/w3) share a scale whose summed error is at most RTN’s', () => {
    const groups = new Map<string, WeightMatrix[]>();
    for (const w of weights) {
      const input = stats.layers[w.name].input;
      groups.set(input, [...(groups.get(input) ?? []), w]);
    }
    expect(groups.size).toBe(20); // per layer: attention input, wo's, the FFN input, w2's
    for (const group of groups.values()) {
      const out = awqInt4(group, stats.layers[group[0].name], OPTIONS);
      const e = group.reduce((s, w, i) => s + error(w, out[i].values), 0);
      const eRtn = group.reduce((s, w) => s + error(w, rtn(w)), 0);
      expect(e, group.map((w) => w.name).join(',')).toBeLessThanOrEqual(eRtn);
    }
  });

  it('the clip search lowers the layer error of most weights further, and never raises it', () => {
    const ratios = weights.map((w) => {
      const [awq] = awqInt4([w], stats.layers[w.name], OPTIONS);
      const [clipped] = awqInt4([w], stats.layers[w.name], { ...OPTIONS, clip: true });
      expect(clipped.encoding.alpha).toBe(awq.encoding.alpha);
      return error(w, clipped.values) / error(w, awq.values);
    });
    for (const r of ratios) expect(r).toBeLessThanOrEqual(1);
    expect(ratios.filter((r) => r < 1).length).toBeGreaterThan(weights.length / 2);
  });

  it('AWQ then GPTQ (α searched with GPTQ rounding) lowers the layer error further, never above GPTQ alone', () => {
    const ratios = weights.map((w) => {
      const [awq] = awqInt4([w], stats.layers[w.name], OPTIONS);
      const [both] = awqInt4([w], stats.layers[w.name], { ...OPTIONS, quantizer: 'gptq' });
      const gptq = gptqInt4(w, stats.layers[w.name], {
        blockSize: 32,
        symmetric: true,
        dampening: 0.01,
        actOrder: true,
      });
      // α = 0 is GPTQ alone: the searched scale never does worse
      expect(error(w, both.values), w.name).toBeLessThanOrEqual(error(w, gptq.values));
      return error(w, both.values) / error(w, awq.values);
    });
    expect(mean(ratios)).toBeLessThan(0.9);
  });

  for (const scaleGroup of ['weight', 'input'] as const)
    it(`the exported model (${scaleGroup === 'weight' ? 'a Mul by 1/s per weight' : '1/s folded into the RMSNorm weights'}) runs in onnxruntime-node with the preview’s logits`, async () => {
      const result = compressModel(
        model,
        resolveRecipe({ steps: [{ method: 'awq', options: { scaleGroup } }] }),
        {
          calibration: stats,
        },
      );
      expect(result.reports).toHaveLength(35);
      const exported = exportCompressed(model, result).model;
      const ops = opTypes(exported);
      expect(ops.filter((o) => o === 'MatMulNBits')).toHaveLength(35);
      const addedMuls =
        ops.filter((o) => o === 'Mul').length - opTypes(bytes).filter((o) => o === 'Mul').length;
      // shared scales: q/k/v's and w1/w3's 1/s go into rms_att / rms_ffn; wo and w2 (no norm before them) keep a Mul
      expect(addedMuls).toBe(scaleGroup === 'weight' ? 35 : 10);
      const probe = idsInput([1, 300, 40, 50, 7, 99, 120, 3]);
      const got = await runOutput(exported, probe, 'logits');
      const preview = await runOutput(denseReference({ model, result, exported }), probe, 'logits');
      const original = await runOutput(bytes, probe, 'logits');
      expect(maxAbsDiff(got, preview)).toBeLessThan(1e-3 * maxAbs(preview));
      expect(maxAbsDiff(got, original)).toBeGreaterThan(1e-2 * maxAbs(original));
    }, 60_000);
});
