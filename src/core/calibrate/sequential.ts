/**
 * Sequential calibration, as GPTQ and SparseGPT are run on real models: weights are compressed in
 * graph order, one group at a time (the weights that read the same activation, e.g. a layer's q/k/v),
 * and each group's statistics are captured on the model whose earlier groups are already
 * compressed, so every layer learns to make up for the error of the layers before it.
 */
import type { InferenceSession } from 'onnxruntime-common';
import { ModelError } from '../errors.ts';
import { DataType } from '../onnx/dtypes.ts';
import { bytesOf } from '../onnx/build.ts';
import { rawTensor } from '../onnx/write.ts';
import type { OnnxModel } from '../onnx/model.ts';
import type { IoSpec, TensorCtor } from '../eval/decoder.ts';
import { captureActivationStats, planCapture, type PlanOptions } from './capture.ts';
import type { CalibrationStats } from './stats.ts';

export interface CalibrationRuntime {
  createSession(bytes: Uint8Array): Promise<InferenceSession>;
  Tensor: TensorCtor;
  inputs: IoSpec[];
}

/** New values (same layout as the initializer) for every weight of the group. */
export type CompressGroup = (
  group: readonly string[],
  stats: CalibrationStats,
) => Map<string, Float32Array> | Promise<Map<string, Float32Array>>;

export interface SequentialOptions extends PlanOptions {
  signal?: AbortSignal;
  onProgress?: (p: { groupsDone: number; groupsTotal: number; group: readonly string[] }) => void;
}

export interface SequentialResult {
  values: Map<string, Float32Array>;
  /** Each weight's statistics as captured for it (on the partly compressed model). */
  stats: CalibrationStats;
}

/** `weights` grouped by the activation they read, groups in the order the graph computes them. */
export function calibrationGroups(model: OnnxModel, weights: readonly string[]): string[][] {
  const plan = planCapture(model, weights, { hessian: false });
  const firstReader = new Map<string, number>();
  model.graph.node.forEach((node, i) => {
    for (const x of node.input) if (!firstReader.has(x)) firstReader.set(x, i);
  });
  const byInput = new Map<string, string[]>();
  for (const t of plan.targets) {
    if (!byInput.has(t.input)) byInput.set(t.input, []);
    byInput.get(t.input)!.push(t.weight);
  }
  return [...byInput.entries()]
    .sort(([a], [b]) => (firstReader.get(a) ?? 0) - (firstReader.get(b) ?? 0))
    .map(([, group]) => group);
}

export async function calibrateSequentially(
  model: OnnxModel,
  weights: readonly string[],
  sequences: readonly number[][],
  runtime: CalibrationRuntime,
  compress: CompressGroup,
  opts: SequentialOptions = {},
): Promise<SequentialResult> {
  const groups = calibrationGroups(model, weights);
  const values = new Map<string, Float32Array>();
  const stats: CalibrationStats = { version: 1, sequences: sequences.length, tokens: 0, layers: {} };
  let current = model;
  for (let g = 0; g < groups.length; g++) {
    if (opts.signal?.aborted) throw new ModelError('cancelled', 'Calibration cancelled.');
    const group = groups[g];
    const plan = planCapture(current, group, opts);
    const session = await runtime.createSession(plan.bytes);
    let captured: CalibrationStats;
    try {
      captured = await captureActivationStats(session, runtime.Tensor, runtime.inputs, plan, sequences, {
        signal: opts.signal,
      });
    } finally {
      await session.release();
    }
    stats.tokens = captured.tokens;
    Object.assign(stats.layers, captured.layers);
    const fresh = await compress(group, captured);
    for (const name of group) {
      const v = fresh.get(name);
      if (!v) throw new ModelError('invalid-argument', `The compress step returned no values for '${name}'.`);
      values.set(name, v);
    }
    // the next groups see this group compressed
    const replaced = current.graph.initializer.map((t) => {
      const v = fresh.get(t.name);
      return v ? rawTensor(t.name, DataType.FLOAT, t.dims.map(Number), bytesOf(v)) : t;
    });
    current = { ...current, graph: { ...current.graph, initializer: replaced } };
    opts.onProgress?.({ groupsDone: g + 1, groupsTotal: groups.length, group });
  }
  return { values, stats };
}
