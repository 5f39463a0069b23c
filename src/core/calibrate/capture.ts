/**
 * Activation capture: a copy of the graph in which the activation input of every selected MatMul /
 * Gemm weight is also a graph output, run sequence by sequence, each sequence's activations folded
 * into per-weight statistics and dropped, so memory stays at one sequence's activations plus the
 * statistics. The caller creates the session (onnxruntime-node or -web) from `planCapture`'s bytes.
 */
import type { InferenceSession } from 'onnxruntime-common';
import { ModelError } from '../errors.ts';
import { DataType, float16ToFloat32 } from '../onnx/dtypes.ts';
import { makeNode } from '../onnx/build.ts';
import { writeModel } from '../onnx/write.ts';
import type { OnnxModel } from '../onnx/model.ts';
import type { NodeProto, ValueInfoProto } from '../onnx/proto.ts';
import { decoderFeeds, type IoSpec, type TensorCtor } from '../eval/decoder.ts';
import { yieldToEventLoop } from '../eval/yield.ts';
import {
  accumulateInputStats,
  emptyInputStats,
  finishInputStats,
  type CalibrationStats,
  type InputStats,
} from './stats.ts';

export interface CaptureTarget {
  weight: string;
  /** The activation tensor the weight multiplies. */
  input: string;
  /** The graph output that carries it in the capture model. */
  output: string;
  /** Input features (the weight's reduction length). */
  k: number;
}

export interface CapturePlan {
  targets: CaptureTarget[];
  /** Distinct capture outputs, one per activation however many weights read it. */
  outputs: string[];
  /** The capture model, serialised (the original graph plus Identity → output per activation). */
  bytes: Uint8Array;
}

function intAttr(node: NodeProto, name: string): number {
  const a = node.attribute?.find((x) => x.name === name);
  return a?.i !== undefined ? Number(a.i) : 0;
}

/** The activation `weight` is multiplied with, and its feature count, from the weight's consumers. */
function findActivation(model: OnnxModel, weight: string): { input: string; k: number } {
  const { graph } = model;
  const init = graph.initializer.find((t) => t.name === weight);
  if (!init || init.dims.length !== 2)
    throw new ModelError(
      'invalid-argument',
      `${model.name} has no 2-D weight named '${weight}' to calibrate.`,
    );
  const [d0, d1] = init.dims.map(Number);
  const uses: { input: string; k: number }[] = [];
  for (const node of graph.node) {
    if (node.domain) continue;
    if (node.op_type === 'MatMul' && node.input[1] === weight) uses.push({ input: node.input[0], k: d0 });
    else if (node.op_type === 'Gemm' && node.input[1] === weight) {
      if (intAttr(node, 'transA'))
        throw new ModelError(
          'unsupported',
          `'${weight}' feeds a Gemm with transA=1; calibration reads activations as [rows, K] only.`,
        );
      uses.push({ input: node.input[0], k: intAttr(node, 'transB') ? d1 : d0 });
    } else if (node.op_type === 'Transpose' && node.input[0] === weight) {
      // a weight stored [N, K] and transposed for a MatMul
      for (const m of graph.node)
        if (m.op_type === 'MatMul' && !m.domain && m.input[1] === node.output[0])
          uses.push({ input: m.input[0], k: d1 });
    }
  }
  if (!uses.length)
    throw new ModelError(
      'invalid-argument',
      `'${weight}' is not the weight of a MatMul or Gemm, so it has no activations to calibrate on.`,
    );
  if (uses.some((u) => u.input !== uses[0].input))
    throw new ModelError(
      'unsupported',
      `'${weight}' multiplies several different activations (${[...new Set(uses.map((u) => u.input))].join(', ')}); ` +
        `calibrating a shared weight is not supported.`,
    );
  return uses[0];
}

/** The capture model for `weights`: every graph node unchanged, each activation also an output. */
export function planCapture(model: OnnxModel, weights: readonly string[]): CapturePlan {
  if (!weights.length) throw new ModelError('invalid-argument', 'No weights selected to calibrate.');
  const taken = new Set<string>();
  for (const n of model.graph.node) for (const o of n.output) taken.add(o);
  for (const v of [...model.graph.input, ...model.graph.output, ...model.graph.initializer])
    taken.add(v.name);
  const outputOf = new Map<string, string>();
  const nodes: NodeProto[] = [];
  const outputs: ValueInfoProto[] = [];
  const targets: CaptureTarget[] = [];
  for (const weight of new Set(weights)) {
    const { input, k } = findActivation(model, weight);
    let output = outputOf.get(input);
    if (!output) {
      output = `${input}__calibration`;
      for (let i = 1; taken.has(output); i++) output = `${input}__calibration_${i}`;
      taken.add(output);
      outputOf.set(input, output);
      // an Identity gives the activation a name of its own, so graph inputs and outputs can be captured too
      nodes.push(makeNode('Identity', [input], [output], {}, { name: output }));
      outputs.push({ name: output, type: { tensor_type: { elem_type: DataType.FLOAT } } });
    }
    targets.push({ weight, input, output, k });
  }
  const graph = {
    ...model.graph,
    node: [...model.graph.node, ...nodes],
    output: [...model.graph.output, ...outputs],
  };
  return { targets, outputs: [...outputOf.values()], bytes: writeModel(model, { graph }).model };
}

export interface CaptureOptions {
  /** Accumulate XᵀX (k² doubles per activation) for these weights; default all (GPTQ, SparseGPT need it). */
  hessian?: boolean | ((weight: string) => boolean);
  signal?: AbortSignal;
  onProgress?: (p: CaptureProgress) => void;
}

export interface CaptureProgress {
  sequencesDone: number;
  sequencesTotal: number;
  tokens: number;
  tokensPerSecond: number;
}

function activationAsFloat32(data: unknown, name: string): Float32Array {
  if (data instanceof Float32Array) return data;
  if (data instanceof Uint16Array) return Float32Array.from(data, float16ToFloat32);
  throw new ModelError(
    'unsupported',
    `Activation '${name}' is not float32 or float16; it cannot be calibrated.`,
  );
}

/**
 * Runs `sequences` through the capture session and returns the statistics of every planned weight.
 * `session` must be created from `plan.bytes`.
 */
export async function captureActivationStats(
  session: InferenceSession,
  Tensor: TensorCtor,
  inputs: IoSpec[],
  plan: CapturePlan,
  sequences: readonly number[][],
  opts: CaptureOptions = {},
): Promise<CalibrationStats> {
  if (!sequences.length) throw new ModelError('invalid-argument', 'No calibration sequences to run.');
  for (const o of plan.outputs)
    if (!session.outputNames.includes(o))
      throw new ModelError(
        'invalid-argument',
        `The session was not created from this capture plan (no output '${o}').`,
      );
  const wantHessian = opts.hessian ?? true;
  const byOutput = new Map<string, InputStats>();
  const layers: Record<string, InputStats> = {};
  for (const t of plan.targets) {
    const withXtx = typeof wantHessian === 'function' ? wantHessian(t.weight) : wantHessian;
    let stats = byOutput.get(t.output);
    if (!stats) {
      stats = emptyInputStats(t.input, t.k, withXtx);
      byOutput.set(t.output, stats);
    } else if (withXtx && !stats.xtx) stats.xtx = new Float64Array(t.k * t.k);
    if (stats.k !== t.k)
      throw new ModelError(
        'invalid-argument',
        `Weights reading '${t.input}' disagree on its width (${stats.k}, ${t.k}).`,
      );
    layers[t.weight] = stats;
  }
  const fed = inputs.filter((i) => session.inputNames.includes(i.name));
  const start = performance.now();
  let tokens = 0;
  for (let s = 0; s < sequences.length; s++) {
    if (opts.signal?.aborted) throw new ModelError('cancelled', 'Activation capture cancelled.');
    const out = await session.run(decoderFeeds(Tensor, fed, sequences[s]), plan.outputs);
    for (const [name, stats] of byOutput) {
      const x = activationAsFloat32(out[name].data, stats.input);
      if (x.length % stats.k !== 0)
        throw new ModelError(
          'invalid-argument',
          `Activation '${stats.input}' has ${x.length} values, not a whole number of rows of ${stats.k}.`,
        );
      accumulateInputStats(stats, x, x.length / stats.k);
    }
    for (const t of Object.values(out)) t.dispose?.();
    tokens += sequences[s].length;
    const seconds = (performance.now() - start) / 1000;
    opts.onProgress?.({
      sequencesDone: s + 1,
      sequencesTotal: sequences.length,
      tokens,
      tokensPerSecond: tokens / Math.max(seconds, 1e-9),
    });
    await yieldToEventLoop();
  }
  for (const stats of byOutput.values()) finishInputStats(stats);
  return { version: 1, sequences: sequences.length, tokens, layers };
}
