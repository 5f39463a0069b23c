/**
 * stories260K calibrated the way the calibrated-method tests need it: sequences the model writes
 * itself (never the held-out stories), run through the capture graph of its linear weights.
 */
import { readFileSync } from 'node:fs';
import {
  bytesSource,
  findInitializer,
  parseModel,
  readTensorFloat32,
  type OnnxModel,
} from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { weightCandidates } from '../../src/core/compress/select.ts';
import { captureActivationStats, planCapture } from '../../src/core/calibrate/capture.ts';
import { generateCalibrationSequences } from '../../src/core/calibrate/generate.ts';
import type { CalibrationStats } from '../../src/core/calibrate/stats.ts';
import type { CalibrationRuntime } from '../../src/core/compress/calibration.ts';
import type { WeightMatrix } from '../../src/methods/types.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';
import { STORIES_MODEL } from './fixtures.ts';

export interface StoriesCalibration {
  bytes: Uint8Array;
  model: OnnxModel;
  inputs: ReturnType<typeof summarizeInputs>;
  /** The linear weights (what a step selects by default), in graph order. */
  linear: string[];
  /** Those weights as the kernels see them. */
  weights: WeightMatrix[];
  stats: CalibrationStats;
}

export async function calibrateStories(opts: {
  count: number;
  length: number;
  seed: number;
}): Promise<StoriesCalibration> {
  const bytes = readFileSync(STORIES_MODEL);
  const model = parseModel(bytesSource('model.onnx', bytes));
  const inputs = summarizeInputs(model.graph);
  const session = await createNodeSession(bytes);
  const sequences = await generateCalibrationSequences(session, Tensor, inputs, { ...opts, bos: 1 });
  await session.release();
  const candidates = weightCandidates(model.graph).filter((c) => c.role === 'linear');
  const linear = candidates.map((c) => c.name);
  const weights = candidates.map((c) => ({
    name: c.name,
    shape: c.shape,
    channelAxis: c.channelAxis,
    values: readTensorFloat32(model, findInitializer(model, c.name)),
  }));
  const plan = planCapture(model, linear);
  const capture = await createNodeSession(plan.bytes);
  const stats = await captureActivationStats(capture, Tensor, inputs, plan, sequences);
  await capture.release();
  return { bytes, model, inputs, linear, weights, stats };
}

/**
 * onnxruntime-node for calibrating `model`, counting the sessions it opens (one per generation or
 * capture run): how the cache tests see whether the model ran again.
 */
export function countingRuntime(model: OnnxModel): {
  runtime: CalibrationRuntime;
  count: { sessions: number };
} {
  const count = { sessions: 0 };
  const runtime: CalibrationRuntime = {
    createSession: (bytes) => {
      count.sessions++;
      return createNodeSession(bytes);
    },
    Tensor,
    inputs: summarizeInputs(model.graph),
  };
  return { runtime, count };
}
