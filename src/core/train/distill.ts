/**
 * Knowledge distillation on the training engine: the student (the model as a recipe has compressed
 * it: pruned, shrunk) runs forward and backward through its own graph (graph.ts); the teacher (the
 * original model) only supplies logits, from whatever runs it (onnxruntime in the CLI and the page).
 * AdamW with warm-up and cosine/linear decay; pruned zeros stay zero. Pure TypeScript, no DOM, no
 * Node APIs: the CLI runs it on the main thread, a worker can run it the same way (progress through
 * `onStep`, cancel through `signal`).
 *
 * Measured with the CLI (2-core machine, load average ~14; AdamW lr 1e-3, cosine, T 2, α 0.5, all
 * weights, zeros kept; held-out perplexity ctx 128, stride 64): the demo model pruned 2:4 (64.52)
 * → 47.11 after 120 steps of 8 × 128 tokens of its training split (fp32: 46.32; ~49 tokens/s with the
 * teacher); stories260K pruned 2:4 (114.4 on ids.txt) → 13.9 after 60 steps of 8 × 128 tokens of
 * teacher-generated sequences (fp32: 3.66 by the same protocol; ~228 tokens/s).
 */
import type { InferenceSession } from 'onnxruntime-common';
import { ModelError } from '../errors.ts';
import { seededUniform } from '../calibrate/generate.ts';
import {
  decoderFeeds,
  isPastInput,
  logitsOutputName,
  type IoSpec,
  type TensorCtor,
} from '../eval/decoder.ts';
import { yieldToEventLoop } from '../eval/yield.ts';
import { DataType } from '../onnx/dtypes.ts';
import type { OnnxModel } from '../onnx/model.ts';
import type { GraphProto, TensorProto } from '../onnx/proto.ts';
import { rawTensor, writeModel } from '../onnx/write.ts';
import { TrainGraph, type ForwardOptions } from './graph.ts';
import { kdLoss, type KdLoss } from './loss.ts';
import { pinWeights, unpinWeights } from './kernels.ts';
import { AdamW, clipGradNorm, learningRate, type AdamWState, type Schedule } from './optim.ts';
import type { Value } from './tensor.ts';

/** Which weights train: every float weight, all but embedding tables, or only norms and biases (1-D). */
export type TrainSelection = 'all' | 'no-embeddings' | 'norms-biases';
export const TRAIN_SELECTIONS: readonly TrainSelection[] = ['all', 'no-embeddings', 'norms-biases'];

/** Ops of a compressed storage format: their weights are integers the engine does not train. */
const QUANTIZED_OPS = new Set([
  'DequantizeLinear',
  'QuantizeLinear',
  'DynamicQuantizeLinear',
  'MatMulNBits',
  'MatMulInteger',
  'QLinearMatMul',
  'GatherBlockQuantized',
  'BitShift',
]);

/**
 * Readers through which a float initializer is a weight (not a table a Slice reads, like RoPE's).
 * Transpose: a tied output head is the embedding table transposed into a MatMul (the demo GPT-2).
 */
const WEIGHT_READERS = new Set([
  'MatMul',
  'Gemm',
  'Gather',
  'LayerNormalization',
  'Add',
  'Mul',
  'Sub',
  'Transpose',
]);

/**
 * Refuses a student whose weights are stored quantized (int4 MatMulNBits, int8 DequantizeLinear,
 * k-means palettes): distillation trains float weights, so it comes before quantization in a recipe.
 */
export function checkTrainable(model: OnnxModel): void {
  const quantized = [
    ...new Set(model.graph.node.map((n) => n.op_type).filter((op) => QUANTIZED_OPS.has(op))),
  ];
  if (quantized.length)
    throw new ModelError(
      'unsupported',
      `${model.name} stores its weights quantized (${quantized.join(', ')}); distillation trains float weights. ` +
        'Distil the float (pruned or shrunk) model first, then quantize the result.',
    );
}

/** The float weights `selection` trains, in initializer order. */
export function trainableWeights(model: OnnxModel, selection: TrainSelection = 'all'): string[] {
  const readers = new Map<string, { op: string; position: number }[]>();
  for (const node of model.graph.node)
    node.input.forEach((name, position) => {
      if (!name) return;
      let list = readers.get(name);
      if (!list) readers.set(name, (list = []));
      list.push({ op: node.op_type, position });
    });
  const names: string[] = [];
  for (const t of model.graph.initializer) {
    if (t.data_type !== DataType.FLOAT) continue;
    const count = t.dims.reduce((p, d) => p * Number(d), 1);
    if (count < 2) continue;
    const users = readers.get(t.name) ?? [];
    if (!users.length || !users.every((u) => WEIGHT_READERS.has(u.op))) continue;
    const embedding = users.some((u) => u.op === 'Gather' && u.position === 0);
    if (users.some((u) => u.op === 'Gather' && u.position !== 0)) continue;
    if (selection === 'no-embeddings' && embedding) continue;
    if (selection === 'norms-biases' && t.dims.length !== 1) continue;
    names.push(t.name);
  }
  return names;
}

/** Logits [rows.length, L, V] of the teacher for equal-length rows of token ids. */
export type Teacher = (rows: number[][]) => Promise<Float32Array>;

/** A teacher run by an onnxruntime session (node or web), one row at a time (any batch signature works). */
export function sessionTeacher(session: InferenceSession, Tensor: TensorCtor, inputs: IoSpec[]): Teacher {
  const fed = inputs.filter((i) => session.inputNames.includes(i.name));
  const outName = logitsOutputName([...session.outputNames]);
  return async (rows) => {
    const parts: Float32Array[] = [];
    for (const ids of rows) {
      const out = await session.run(decoderFeeds(Tensor, fed, ids), [outName]);
      const t = out[outName];
      if (t.type !== 'float32')
        throw new ModelError(
          'unsupported-dtype',
          `The teacher's logits are ${t.type}; distillation needs float32.`,
        );
      parts.push(Float32Array.from(t.data as Float32Array));
      t.dispose?.();
    }
    const all = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return all;
  };
}

/**
 * The engine's feeds for a [B, L] batch of ids: input_ids, and attention_mask / position_ids if the
 * graph has them; a KV cache's past_key_values.* empty ([B, heads, 0, head_dim]: training sees whole
 * sequences, as perplexity does; the present.* outputs are then just this step's keys and values).
 */
export function decoderValues(graph: GraphProto, rows: number[][]): Record<string, Value> {
  const B = rows.length;
  const L = rows[0].length;
  const feeds: Record<string, Value> = {};
  const initializers = new Set(graph.initializer.map((t) => t.name));
  for (const input of graph.input) {
    if (initializers.has(input.name)) continue;
    const shape = [B, L];
    if (input.name === 'input_ids')
      feeds[input.name] = { dtype: 'int64', shape, data: Float64Array.from(rows.flat()) };
    else if (input.name === 'attention_mask')
      feeds[input.name] = { dtype: 'int64', shape, data: new Float64Array(B * L).fill(1) };
    else if (input.name === 'position_ids')
      feeds[input.name] = {
        dtype: 'int64',
        shape,
        data: Float64Array.from({ length: B * L }, (_, i) => i % L),
      };
    else if (isPastInput(input.name) && input.type?.tensor_type?.elem_type === DataType.FLOAT) {
      // symbolic batch -> B, the past length -> 0, the declared heads and head size as they are
      const dims = input.type.tensor_type.shape?.dim ?? [];
      const shape = dims.map((d, i) => (d.dim_value && !d.dim_param ? Number(d.dim_value) : i === 0 ? B : 0));
      if (shape.length !== 4 || shape[2] !== 0)
        throw new ModelError(
          'unsupported',
          `The training engine feeds the KV cache '${input.name}' empty as [batch, heads, 0, head_dim]; ` +
            `its declared shape [${dims.map((d) => d.dim_param || d.dim_value).join(', ')}] is not that layout.`,
        );
      feeds[input.name] = { dtype: 'float32', shape, data: new Float32Array(0) };
    } else
      throw new ModelError(
        'unsupported',
        `The training engine feeds input_ids, attention_mask, position_ids and an empty KV cache; the model also has '${input.name}'.`,
      );
  }
  return feeds;
}

/** Whether the graph takes a whole batch at once (a symbolic or >1 batch dimension) or one row at a time. */
export function takesBatches(graph: GraphProto): boolean {
  const ids = graph.input.find((i) => i.name === 'input_ids');
  const d0 = ids?.type?.tensor_type?.shape?.dim?.[0];
  return !(d0 && d0.dim_value === 1);
}

export interface BatchLoss extends KdLoss {
  /** Gradients of the trainable weights (when asked for). */
  grads?: Map<string, Float32Array>;
}

/**
 * The KD loss of the student on `rows` (equal lengths) against `teacherLogits` ([B, L, V], or null for
 * plain next-token loss), with the weights' gradients when `withGrad`. Rows run together when the
 * graph takes batches, else one by one with gradients accumulated (same loss, same gradient).
 */
export function batchLoss(
  graph: TrainGraph,
  rows: number[][],
  teacherLogits: Float32Array | null,
  opts: { temperature: number; alpha: number; withGrad: boolean; forward?: ForwardOptions },
): BatchLoss {
  const g = graph.model.graph;
  const logitsName = logitsOutputName(g.output.map((o) => o.name));
  const groups = takesBatches(g) ? [rows] : rows.map((r) => [r]);
  const B = rows.length;
  const grads = opts.withGrad ? new Map<string, Float32Array>() : undefined;
  let loss = 0;
  let kl = 0;
  let ce = 0;
  let grad = new Float32Array(0);
  let row0 = 0;
  for (const group of groups) {
    const fwd = graph.forward(decoderValues(g, group), { ...opts.forward, record: opts.withGrad });
    const logits = fwd.values.get(logitsName);
    if (!logits || !(logits.data instanceof Float32Array))
      throw new ModelError(
        'invalid-argument',
        `${graph.model.name}: no float logits output '${logitsName}'.`,
      );
    const L = group[0].length;
    const V = logits.shape[logits.shape.length - 1];
    if (logits.data.length !== group.length * L * V)
      throw new ModelError(
        'unsupported',
        `${graph.model.name}: logits of shape [${logits.shape.join(', ')}] are not one row per token; distillation needs [batch, seq, vocab].`,
      );
    if (grad.length === 0) grad = new Float32Array(B * L * V);
    const teacher = teacherLogits
      ? teacherLogits.subarray(row0 * L * V, (row0 + group.length) * L * V)
      : null;
    const part = kdLoss(logits.data, teacher, group.flat(), group.length, L, V, opts);
    const share = group.length / B;
    loss += part.loss * share;
    kl += part.kl * share;
    ce += part.ce * share;
    if (share !== 1) for (let i = 0; i < part.grad.length; i++) part.grad[i] *= share;
    grad.set(part.grad, row0 * L * V);
    if (grads) graph.backward(fwd, { [logitsName]: part.grad }, grads);
    graph.release(fwd);
    row0 += group.length;
  }
  return { loss, kl, ce, grad, grads };
}

export interface DistillOptions {
  steps: number;
  batch: number;
  /** Tokens per training row (L). */
  seq: number;
  lr: number;
  temperature?: number;
  alpha?: number;
  schedule?: Schedule;
  /** Warm-up steps (default min(20, steps/10)). */
  warmup?: number;
  weightDecay?: number;
  /** AdamW's second-moment decay (default 0.999, PyTorch's; llama2.c and nanoGPT train with 0.95). */
  beta2?: number;
  /**
   * Clip the weights' gradients to this global L2 norm before each update, as torch.nn.utils.clip_grad_norm_
   * (0 or absent: no clipping; llama2.c and nanoGPT use 1).
   */
  gradClip?: number;
  train?: TrainSelection;
  /** Seeds the choice of training windows. */
  seed?: number;
  /** Keep the zeros of pruned weights (tensors ≥ 10 % exact zeros) at zero (default true). */
  keepSparsity?: boolean;
  signal?: AbortSignal;
  /** After each step, with the weights as that step left them (read them there: the next step changes them). */
  onStep?: (s: DistillStep, weights: ReadonlyMap<string, Float32Array>) => void;
  /** QAT: what the forward pass reads in place of each weight (straight-through gradient). */
  weightTransform?: ForwardOptions['weightTransform'];
  /** Continue a run from its checkpoint (same data, seed and options): the result equals one uninterrupted run. */
  resume?: DistillCheckpoint;
  /** QAT with learned scales (LSQ): parameters of the weight transform that train beside the weights. */
  transformParams?: TransformParams;
}

/**
 * Parameters of the weight transform (LSQ's scales), trained by their own AdamW group: the same
 * schedule times `lrScale`, no weight decay. After each backward pass `backward` turns the gradients
 * the engine returns (those of what the forward pass read, ∂L/∂transform(w)) into the weights' own, in
 * place, and returns the parameters' gradients.
 */
export interface TransformParams {
  params: Map<string, Float32Array>;
  lrScale: number;
  backward(
    grads: Map<string, Float32Array>,
    weights: ReadonlyMap<string, Float32Array>,
  ): Map<string, Float32Array>;
  /** After each update (keep scales valid). */
  afterStep(): void;
}

/** Everything a run needs to continue: the step reached, the weights and AdamW's moments. */
export interface DistillCheckpoint {
  step: number;
  weights: Map<string, Float32Array>;
  optimizer: AdamWState;
  /** The transform's parameters and their optimizer (QAT with learned scales). */
  transform?: { params: Map<string, Float32Array>; optimizer: AdamWState };
}

export interface DistillStep {
  step: number;
  steps: number;
  loss: number;
  kl: number;
  ce: number;
  lr: number;
  /** Training tokens per second so far (student forward + backward, teacher, update). */
  tokensPerSecond: number;
}

export interface DistillResult {
  weights: Map<string, Float32Array>;
  /** True when `signal` stopped the run between steps: the weights are those of the last step done. */
  cancelled: boolean;
  checkpoint: DistillCheckpoint;
  trainable: string[];
  history: DistillStep[];
  tokensPerSecond: number;
  seconds: number;
}

/** Windows of `seq` tokens drawn uniformly from every position of `data` where one fits. */
export function windowSampler(data: readonly number[][], seq: number, seed: number): () => number[] {
  const starts: number[] = [];
  const fits = data.filter((s) => s.length >= seq);
  if (!fits.length)
    throw new ModelError(
      'invalid-argument',
      `No training sequence has ${seq} tokens (the longest has ${Math.max(0, ...data.map((s) => s.length))}): shorten --seq or give more data.`,
    );
  let total = 0;
  for (const s of fits) starts.push((total += s.length - seq + 1));
  const uniform = seededUniform(seed);
  return () => {
    const k = Math.floor(uniform() * total);
    let i = 0;
    while (starts[i] <= k) i++;
    const begin = k - (i ? starts[i - 1] : 0);
    return fits[i].slice(begin, begin + seq);
  };
}

/** Masks of the weights a pruning step sparsified (≥ 10 % exact zeros): 1 where a weight may move. */
export function sparsityMasks(params: Map<string, Float32Array>): Map<string, Uint8Array> {
  const masks = new Map<string, Uint8Array>();
  for (const [name, w] of params) {
    let zeros = 0;
    for (let i = 0; i < w.length; i++) if (w[i] === 0) zeros++;
    if (w.length >= 16 && zeros >= 0.1 * w.length)
      masks.set(
        name,
        Uint8Array.from(w, (v) => (v === 0 ? 0 : 1)),
      );
  }
  return masks;
}

export async function distill(
  student: OnnxModel,
  teacher: Teacher | null,
  data: readonly number[][],
  opts: DistillOptions,
): Promise<DistillResult> {
  checkTrainable(student);
  const { steps, batch, seq, lr } = opts;
  for (const [name, v, min] of [
    ['steps', steps, 1],
    ['batch', batch, 1],
    ['seq', seq, 2],
  ] as const)
    if (!Number.isInteger(v) || v < min)
      throw new ModelError('invalid-argument', `${name} must be a whole number ≥ ${min}, got ${v}.`);
  if (!(lr > 0)) throw new ModelError('invalid-argument', `The learning rate must be positive, got ${lr}.`);
  const temperature = opts.temperature ?? 2;
  const alpha = opts.alpha ?? 0.5;
  const trainable = trainableWeights(student, opts.train ?? 'all');
  if (!trainable.length)
    throw new ModelError(
      'invalid-argument',
      `${student.name} has no float weight to train (selection '${opts.train}').`,
    );
  const graph = new TrainGraph(student, trainable);
  const masks = opts.keepSparsity === false ? undefined : sparsityMasks(graph.params);
  const sample = windowSampler(data, seq, opts.seed ?? 0);
  const optimizer = new AdamW({ weightDecay: opts.weightDecay, beta2: opts.beta2 });
  const extra = opts.transformParams;
  const extraOptimizer = new AdamW({ weightDecay: 0 });
  let first = 0;
  if (opts.resume) {
    first = opts.resume.step;
    for (const [name, w] of opts.resume.weights) graph.params.get(name)?.set(w);
    optimizer.load(opts.resume.optimizer);
    if (extra && opts.resume.transform) {
      for (const [name, p] of opts.resume.transform.params) extra.params.get(name)?.set(p);
      extraOptimizer.load(opts.resume.transform.optimizer);
    }
    // the windows the first steps drew, drawn again so the run continues on the same data
    for (let i = 0; i < first * batch; i++) sample();
  }
  const schedule = {
    lr,
    steps,
    warmup: opts.warmup ?? Math.min(20, Math.floor(steps / 10)),
    schedule: opts.schedule ?? 'cosine',
  };
  const rank = (name: string) => graph.shapes.get(name)!.length;
  const history: DistillStep[] = [];
  const start = performance.now();
  let tokens = 0;
  let cancelled = false;
  let s = first;
  for (; s < steps; s++) {
    if (opts.signal?.aborted) {
      cancelled = true;
      break;
    }
    const rows = Array.from({ length: batch }, sample);
    const teacherLogits = teacher ? await teacher(rows) : null;
    // the weights stay on the GPU (when the products run there) for the whole step, then may change
    pinWeights(graph.params.values());
    let r: BatchLoss;
    try {
      r = batchLoss(graph, rows, teacherLogits, {
        temperature,
        alpha,
        withGrad: true,
        forward: { weightTransform: opts.weightTransform },
      });
    } finally {
      unpinWeights();
    }
    const rate = learningRate(s, schedule);
    const extraGrads = extra?.backward(r.grads!, graph.params);
    if (opts.gradClip) clipGradNorm(r.grads!, opts.gradClip);
    optimizer.step(graph.params, r.grads!, rate, rank, masks);
    if (extra) {
      extraOptimizer.step(extra.params, extraGrads!, rate * extra.lrScale, () => 1);
      extra.afterStep();
    }
    tokens += batch * seq;
    const step: DistillStep = {
      step: s + 1,
      steps,
      loss: r.loss,
      kl: r.kl,
      ce: r.ce,
      lr: rate,
      tokensPerSecond: tokens / ((performance.now() - start) / 1000),
    };
    history.push(step);
    opts.onStep?.(step, graph.params);
    await yieldToEventLoop();
  }
  const seconds = (performance.now() - start) / 1000;
  return {
    weights: graph.params,
    cancelled,
    checkpoint: {
      step: s,
      weights: graph.params,
      optimizer: optimizer.snapshot(),
      ...(extra
        ? {
            transform: {
              params: new Map([...extra.params].map(([k, v]) => [k, Float32Array.from(v)])),
              optimizer: extraOptimizer.snapshot(),
            },
          }
        : {}),
    },
    trainable,
    history,
    tokensPerSecond: tokens / Math.max(seconds, 1e-9),
    seconds,
  };
}

/** The model with `weights` (name → float32 values, same shapes) in place of its initializers: same graph, same names. */
export function withWeights(model: OnnxModel, weights: Map<string, Float32Array>): Uint8Array {
  const initializer: TensorProto[] = model.graph.initializer.map((t) => {
    const w = weights.get(t.name);
    if (!w) return t;
    const bytes = new Uint8Array(w.buffer.slice(w.byteOffset, w.byteOffset + w.byteLength));
    return rawTensor(t.name, DataType.FLOAT, t.dims.map(Number), bytes);
  });
  return writeModel(model, { graph: { ...model.graph, initializer } }).model;
}
