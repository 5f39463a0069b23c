/**
 * Activation capture: a copy of the graph in which the activation input of every selected MatMul /
 * Gemm weight is also a graph output, run sequence by sequence, each sequence's activations folded
 * into per-weight statistics and dropped, so memory stays at one sequence's activations plus the
 * statistics. The caller creates the session (onnxruntime-node or -web) from `planCapture`'s bytes.
 */
import type { InferenceSession } from 'onnxruntime-common';
import { isModelError, ModelError } from '../errors.ts';
import { DataType, float16ToFloat32 } from '../onnx/dtypes.ts';
import { int64Tensor, makeNode } from '../onnx/build.ts';
import { writeModel } from '../onnx/write.ts';
import type { OnnxModel } from '../onnx/model.ts';
import type { NodeProto, TensorProto, ValueInfoProto } from '../onnx/proto.ts';
import { canBatch, stackedFeeds, type IoSpec, type TensorCtor } from '../eval/decoder.ts';
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
  /** The graph outputs carrying this run's XᵀX (its upper triangle's blocks), when the Hessian was asked for. */
  gramBlocks: GramBlock[] | null;
  /** Input features (the weight's reduction length). */
  k: number;
}

/** One block XᵀX[r0 .. r0+rows, c0 .. c0+cols] of a Gram matrix, on or above the diagonal, as a graph output. */
export interface GramBlock {
  output: string;
  r0: number;
  c0: number;
  rows: number;
  cols: number;
}

/**
 * Features per Gram block. XᵀX costs rows·k² multiply-adds, more than the model itself for a wide
 * activation (the demo's MLP input, k = 768: 590 k per token against the model's 3 M for all six
 * layers), and it is symmetric: cut into b column blocks, only the b(b+1)/2 blocks on and above the
 * diagonal are computed (k = 768 in four: 10 of 16), the rest mirrored in float64 afterwards.
 */
const GRAM_BLOCK = 192;

export interface CapturePlan {
  targets: CaptureTarget[];
  /** Distinct capture outputs, one per activation however many weights read it. */
  outputs: string[];
  /**
   * The capture model, serialised: the nodes the captured activations depend on (and the MatMuls
   * reading them), plus an Identity → output per activation; the model's own outputs are dropped.
   */
  bytes: Uint8Array;
}

function intAttr(node: NodeProto, name: string): number {
  const a = node.attribute?.find((x) => x.name === name);
  return a?.i !== undefined ? Number(a.i) : 0;
}

/** The activation `weight` is multiplied with, and its feature count, from the weight's consumers. */
export function findActivation(model: OnnxModel, weight: string): { input: string; k: number } {
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

export interface PlanOptions {
  /**
   * Also compute XᵀX for these weights (GPTQ, SparseGPT need it; k² doubles each); default all. The
   * capture graph computes it per run with a Gemm (XᵀX of the [rows, k] activation), so onnxruntime's
   * threaded kernels do the k²·rows multiply-adds.
   */
  hessian?: boolean | ((weight: string) => boolean);
}

/** The capture model for `weights`: the graph up to the activations, each activation an output. */
export function planCapture(
  model: OnnxModel,
  weights: readonly string[],
  opts: PlanOptions = {},
): CapturePlan {
  if (!weights.length) throw new ModelError('invalid-argument', 'No weights selected to calibrate.');
  const taken = new Set<string>();
  for (const n of model.graph.node) for (const o of n.output) taken.add(o);
  for (const v of [...model.graph.input, ...model.graph.output, ...model.graph.initializer])
    taken.add(v.name);
  const fresh = (base: string) => {
    let name = base;
    for (let i = 1; taken.has(name); i++) name = `${base}_${i}`;
    taken.add(name);
    return name;
  };
  const wantHessian = opts.hessian ?? true;
  const outputOf = new Map<string, string>();
  const gramOf = new Map<string, GramBlock[]>();
  const nodes: NodeProto[] = [];
  const initializers: TensorProto[] = [];
  const outputs: ValueInfoProto[] = [];
  const targets: CaptureTarget[] = [];
  const floatOutput = (name: string): ValueInfoProto => ({
    name,
    type: { tensor_type: { elem_type: DataType.FLOAT } },
  });
  for (const weight of new Set(weights)) {
    const { input, k } = findActivation(model, weight);
    let output = outputOf.get(input);
    if (!output) {
      output = fresh(`${input}__calibration`);
      outputOf.set(input, output);
      // an Identity gives the activation a name of its own, so graph inputs and outputs can be captured too
      nodes.push(makeNode('Identity', [input], [output], {}, { name: output }));
      outputs.push(floatOutput(output));
    }
    let gramBlocks: GramBlock[] | null = null;
    if (typeof wantHessian === 'function' ? wantHessian(weight) : wantHessian) {
      gramBlocks = gramOf.get(input) ?? null;
      if (!gramBlocks) {
        gramBlocks = [];
        gramOf.set(input, gramBlocks);
        const shape = fresh(`${input}__rows_shape`);
        const rows = fresh(`${input}__rows`);
        initializers.push(int64Tensor(shape, [2], [-1, k]));
        nodes.push(makeNode('Reshape', [output, shape], [rows], {}, { name: rows }));
        // column blocks [b0, b1) of the [rows, k] activation; one block: the activation itself
        const cuts: { b0: number; b1: number; name: string }[] = [];
        const parts = Math.max(1, Math.round(k / GRAM_BLOCK));
        for (let p = 0; p < parts; p++) {
          const b0 = Math.round((p * k) / parts);
          const b1 = Math.round(((p + 1) * k) / parts);
          if (parts === 1) {
            cuts.push({ b0, b1, name: rows });
            continue;
          }
          const name = fresh(`${input}__cols_${p}`);
          const starts = fresh(`${name}_starts`);
          const ends = fresh(`${name}_ends`);
          const axes = fresh(`${name}_axes`);
          initializers.push(int64Tensor(starts, [1], [b0]), int64Tensor(ends, [1], [b1]));
          initializers.push(int64Tensor(axes, [1], [1]));
          nodes.push(makeNode('Slice', [rows, starts, ends, axes], [name], {}, { name }));
          cuts.push({ b0, b1, name });
        }
        for (let p = 0; p < cuts.length; p++)
          for (let q = p; q < cuts.length; q++) {
            const gram = fresh(parts === 1 ? `${input}__xtx` : `${input}__xtx_${p}_${q}`);
            nodes.push(makeNode('Gemm', [cuts[p].name, cuts[q].name], [gram], { transA: 1 }, { name: gram }));
            outputs.push(floatOutput(gram));
            gramBlocks.push({
              output: gram,
              r0: cuts[p].b0,
              c0: cuts[q].b0,
              rows: cuts[p].b1 - cuts[p].b0,
              cols: cuts[q].b1 - cuts[q].b0,
            });
          }
      }
    }
    targets.push({ weight, input, output, gramBlocks, k });
  }
  const all = [...model.graph.node, ...nodes];
  const kept = upstreamNodes(all, [
    ...outputs.map((o) => o.name),
    // the nodes that multiply the captured activations by the weights stay, so a probe can check X·W
    ...all.filter((n) => n.input.some((x) => targets.some((t) => t.weight === x))).flatMap((n) => n.output),
  ]);
  const graph = {
    ...model.graph,
    node: kept ?? all,
    // without the model's own outputs (logits) when the graph could be cut: layers after the last
    // captured activation, and the LM head, need not run (sequential calibration captures each layer
    // group in turn, so on average half the model and the head are skipped)
    output: kept ? outputs : [...model.graph.output, ...outputs],
    initializer: [...model.graph.initializer, ...initializers],
  };
  return {
    targets,
    outputs: [...outputOf.values(), ...[...gramOf.values()].flat().map((b) => b.output)],
    bytes: writeModel(model, { graph }).model,
  };
}

/**
 * The nodes (in graph order) that the tensors `wanted` depend on, or null when the graph has nodes
 * with subgraphs (If, Loop, Scan), whose reads of outer names do not appear in their inputs.
 */
function upstreamNodes(nodes: readonly NodeProto[], wanted: readonly string[]): NodeProto[] | null {
  if (nodes.some((n) => n.attribute?.some((a) => a.g || a.graphs?.length))) return null;
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => n.output.forEach((o) => producer.set(o, i)));
  const keep = new Uint8Array(nodes.length);
  const stack = [...wanted];
  while (stack.length) {
    const i = producer.get(stack.pop()!);
    if (i === undefined || keep[i]) continue;
    keep[i] = 1;
    for (const x of nodes[i].input) if (x) stack.push(x);
  }
  return nodes.filter((_, i) => keep[i]);
}

export interface CaptureOptions {
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
 * Tokens per capture run when sequences are batched: each run's XᵀX (a Gemm over all its rows) is
 * added into the float64 statistics once per batch rather than once per sequence (k² adds each time,
 * as many as the Gemm's multiply-adds over k rows), and onnxruntime multiplies fewer, larger matrices.
 */
const BATCH_TOKENS = 1024;

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
  const byOutput = new Map<string, InputStats>();
  const gramOutput = new Map<string, GramBlock[]>();
  const layers: Record<string, InputStats> = {};
  for (const t of plan.targets) {
    let stats = byOutput.get(t.output);
    if (!stats) {
      stats = emptyInputStats(t.input, t.k, false);
      byOutput.set(t.output, stats);
    }
    if (t.gramBlocks && !stats.xtx) {
      stats.xtx = new Float64Array(t.k * t.k);
      gramOutput.set(t.output, t.gramBlocks);
    }
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
  let batching = canBatch(fed);
  for (let s = 0; s < sequences.length;) {
    if (opts.signal?.aborted) throw new ModelError('cancelled', 'Activation capture cancelled.');
    // consecutive sequences of one length run as one batch when the graph takes one
    let count = 1;
    const len = sequences[s].length;
    if (batching)
      while (
        s + count < sequences.length &&
        sequences[s + count].length === len &&
        (count + 1) * len <= BATCH_TOKENS
      )
        count++;
    const group = sequences.slice(s, s + count);
    let out: Awaited<ReturnType<InferenceSession['run']>>;
    try {
      out = await session.run(stackedFeeds(Tensor, fed, group), plan.outputs);
    } catch (e) {
      if (isModelError(e)) throw e;
      if (count > 1) {
        // a graph that fixes its batch at 1 inside (a Reshape to [1, …]): go one sequence at a time
        batching = false;
        continue;
      }
      // e.g. a token id outside the vocabulary: onnxruntime's message, as the error of this input
      throw new ModelError(
        'invalid-argument',
        `The model could not run calibration sequence ${s + 1}: ${(e as Error).message ?? String(e)}`,
      );
    }
    for (const [name, stats] of byOutput) {
      const x = activationAsFloat32(out[name].data, stats.input);
      if (x.length % stats.k !== 0)
        throw new ModelError(
          'invalid-argument',
          `Activation '${stats.input}' has ${x.length} values, not a whole number of rows of ${stats.k}.`,
        );
      const gram = gramOutput.get(name);
      accumulateInputStats(
        stats,
        x,
        x.length / stats.k,
        gram?.map((b) => ({ ...b, data: activationAsFloat32(out[b.output].data, b.output) })),
      );
    }
    for (const t of Object.values(out)) t.dispose?.();
    s += count;
    tokens += count * len;
    const seconds = (performance.now() - start) / 1000;
    opts.onProgress?.({
      sequencesDone: s,
      sequencesTotal: sequences.length,
      tokens,
      tokensPerSecond: tokens / Math.max(seconds, 1e-9),
    });
    await yieldToEventLoop();
  }
  for (const stats of byOutput.values()) finishInputStats(stats);
  return { version: 1, sequences: sequences.length, tokens, layers };
}
