/**
 * Sequential calibration on stories260K: groups of weights in graph order, each group's statistics
 * captured on the model with the earlier groups already compressed.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  bytesSource,
  findInitializer,
  parseModel,
  readTensorFloat32,
  type OnnxModel,
} from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { rawTensor } from '../../src/core/onnx/write.ts';
import { bytesOf } from '../../src/core/onnx/build.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { captureActivationStats, planCapture } from '../../src/core/calibrate/capture.ts';
import { calibrateSequentially, calibrationGroups } from '../../src/core/calibrate/sequential.ts';
import type { CalibrationStats } from '../../src/core/calibrate/stats.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';
import { isModelError } from '../../src/core/errors.ts';
import { STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';

let model: OnnxModel;
const runtime = () => ({ createSession: createNodeSession, Tensor, inputs: summarizeInputs(model.graph) });
const sequences = () =>
  parseIdsText(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8'))
    .slice(0, 2)
    .map((s) => s.slice(0, 32));
const LAYER0 = ['l0.wq', 'l0.wk', 'l0.wv', 'l0.wo', 'l0.w1', 'l0.w3', 'l0.w2'];
const original = (name: string) => readTensorFloat32(model, findInitializer(model, name));
/** A stand-in compression with a visible effect downstream: every weight halved. */
const halve = (group: readonly string[]) => new Map(group.map((g) => [g, original(g).map((v) => v / 2)]));

async function oneShot(m: OnnxModel, weights: string[]): Promise<CalibrationStats> {
  const plan = planCapture(m, weights);
  const session = await createNodeSession(plan.bytes);
  try {
    return await captureActivationStats(session, Tensor, summarizeInputs(m.graph), plan, sequences());
  } finally {
    await session.release();
  }
}

function maxRelDiff(a: Float64Array, b: Float64Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / (1 + Math.abs(b[i])));
  return worst;
}

beforeAll(() => {
  model = parseModel(bytesSource('model.onnx', readFileSync(STORIES_MODEL)));
});

describe('sequential calibration', () => {
  it('groups weights by the activation they read, in graph order', () => {
    expect(calibrationGroups(model, [...LAYER0].reverse())).toEqual([
      ['l0.wv', 'l0.wk', 'l0.wq'],
      ['l0.wo'],
      ['l0.w3', 'l0.w1'],
      ['l0.w2'],
    ]);
  });

  it('captures each group on the model with the earlier groups compressed', async () => {
    const groupsSeen: string[][] = [];
    const result = await calibrateSequentially(model, LAYER0, sequences(), runtime(), halve, {
      onProgress: (p) => groupsSeen.push([...p.group]),
    });
    expect(groupsSeen.length).toBe(4);
    expect([...result.values.keys()].sort()).toEqual([...LAYER0].sort());
    // the first group sees the original model
    const plain = await oneShot(model, LAYER0);
    expect(maxRelDiff(result.stats.layers['l0.wq'].xtx!, plain.layers['l0.wq'].xtx!)).toBeLessThan(1e-6);
    // the last group sees q/k/v, o, w1/w3 halved: the same as a one-shot capture on that model
    const halved = new Map(
      ['l0.wq', 'l0.wk', 'l0.wv', 'l0.wo', 'l0.w1', 'l0.w3'].map((g) => [g, original(g).map((v) => v / 2)]),
    );
    const initializer = model.graph.initializer.map((t) => {
      const v = halved.get(t.name);
      return v ? rawTensor(t.name, DataType.FLOAT, t.dims.map(Number), bytesOf(v)) : t;
    });
    const partly = await oneShot({ ...model, graph: { ...model.graph, initializer } }, ['l0.w2']);
    const seq = result.stats.layers['l0.w2'].xtx!;
    expect(maxRelDiff(seq, partly.layers['l0.w2'].xtx!)).toBeLessThan(1e-6);
    expect(maxRelDiff(seq, plain.layers['l0.w2'].xtx!)).toBeGreaterThan(1e-2);
  });

  it('stops with a typed error on cancel or when the compress step leaves a weight out', async () => {
    const ctrl = new AbortController();
    ctrl.abort();
    for (const run of [
      () => calibrateSequentially(model, LAYER0, sequences(), runtime(), halve, { signal: ctrl.signal }),
      () => calibrateSequentially(model, LAYER0, sequences(), runtime(), () => new Map()),
    ]) {
      try {
        await run();
        expect.unreachable();
      } catch (e) {
        expect(isModelError(e)).toBe(true);
      }
    }
  });
});
