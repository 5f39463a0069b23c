/**
 * Distillation as a step of a recipe: the recipe's "distill" object says how to train (never the data
 * itself), and where it runs is fixed by the steps: after the structure pass and every step up to the
 * first storage format (int8, int4, k-means, fp16, …), so the student is the float model the recipe has
 * pruned or shrunk so far, its pruned zeros stay zero, and the steps after quantize the trained weights.
 * The run itself (`trainStudent`) is the engine's distillation loop (src/core/train/distill.ts) cut at
 * every `evalEvery` steps to measure held-out perplexity, keeping the weights that measured best, so
 * a cancelled run keeps the best weights so far and a resumed one continues where it stopped.
 */
import { ModelError } from '../errors.ts';
import type { OnnxModel } from '../onnx/model.ts';
import {
  batchLoss,
  distill,
  trainableWeights,
  type DistillCheckpoint,
  type DistillStep,
  type Teacher,
} from '../train/distill.ts';
import { TrainGraph, type ForwardOptions } from '../train/graph.ts';
import { HELD_OUT_WINDOWS, type DistillSettings } from './distill-settings.ts';
import { yieldToEventLoop } from '../eval/yield.ts';

/** Training and held-out sequences. */
export interface TrainingData {
  train: number[][];
  heldOut: number[][];
}

/** The last tenth of the tokens (one text) or of the sequences (several) held out, the rest trained on. */
export function splitTrainingData(sequences: number[][]): TrainingData {
  if (sequences.length === 1) {
    const ids = sequences[0];
    const cut = Math.floor(ids.length * 0.9);
    return { train: [ids.slice(0, cut)], heldOut: [ids.slice(cut)] };
  }
  if (sequences.length < 2)
    throw new ModelError(
      'invalid-argument',
      'The training data has no sequence to hold out: give more data.',
    );
  const keep = Math.max(1, Math.ceil(sequences.length * 0.1));
  return {
    train: sequences.slice(0, sequences.length - keep),
    heldOut: sequences.slice(sequences.length - keep),
  };
}

/** Up to `max` consecutive, non-overlapping windows of `seq` tokens from the held-out sequences, in order. */
export function heldOutWindows(
  heldOut: readonly number[][],
  seq: number,
  max = HELD_OUT_WINDOWS,
): number[][] {
  const windows: number[][] = [];
  for (const s of heldOut)
    for (let at = 0; at + seq <= s.length && windows.length < max; at += seq)
      windows.push(s.slice(at, at + seq));
  if (!windows.length)
    throw new ModelError(
      'invalid-argument',
      `The held-out data has no window of ${seq} tokens (the longest sequence has ${Math.max(0, ...heldOut.map((s) => s.length))}): shorten the sequence length or give more data.`,
    );
  return windows;
}

/**
 * exp(mean next-token cross-entropy) of `graph` with `weights` on `windows` (equal lengths), run
 * `batch` windows at a time. The same number onnxruntime gives for the written model on these windows.
 */
export function windowPerplexity(
  graph: TrainGraph,
  weights: ReadonlyMap<string, Float32Array>,
  windows: readonly number[][],
  batch: number,
  forward?: ForwardOptions,
): number {
  for (const [name, w] of weights) graph.params.get(name)?.set(w);
  let ce = 0;
  for (let i = 0; i < windows.length; i += batch) {
    const rows = windows.slice(i, i + batch);
    const r = batchLoss(graph, rows, null, { temperature: 1, alpha: 0, withGrad: false, forward });
    ce += r.ce * rows.length;
  }
  return Math.exp(ce / windows.length);
}

export interface HeldOutPoint {
  step: number;
  perplexity: number;
}

/** Everything a run keeps: what a resumed run continues from, and what a cancelled one leaves. */
export interface TrainingState {
  checkpoint: DistillCheckpoint;
  history: DistillStep[];
  evals: HeldOutPoint[];
  best: { step: number; perplexity: number; weights: Map<string, Float32Array> };
}

export interface TrainingOutcome extends TrainingState {
  cancelled: boolean;
  trainable: string[];
}

export interface TrainOptions {
  signal?: AbortSignal;
  onStep?: (s: DistillStep) => void;
  onEval?: (p: HeldOutPoint) => void;
  /** The state a cancelled run left, with the same student, data and settings: the run continues. */
  resume?: TrainingState;
  /**
   * Quantization-aware training: what every forward pass (training and held-out) reads in place of
   * each weight (src/core/train/qat.ts's fake quantizer); the held-out perplexity is then the quantized
   * model's, and the best weights are the best quantized ones.
   */
  weightTransform?: ForwardOptions['weightTransform'];
}

const copyWeights = (w: ReadonlyMap<string, Float32Array>) =>
  new Map([...w].map(([k, v]) => [k, Float32Array.from(v)]));

/**
 * Distils `student` from `teacher` on `data`: the engine's loop, stopped every `evalEvery` steps to
 * measure held-out perplexity (step 0 too), and resumed from its checkpoint (the same run as one
 * uninterrupted loop). The best-measured weights are kept; `signal` stops between steps, after which
 * the weights reached are measured once more.
 */
export async function trainStudent(
  student: OnnxModel,
  teacher: Teacher | null,
  data: TrainingData,
  settings: DistillSettings,
  opts: TrainOptions = {},
): Promise<TrainingOutcome> {
  const trainable = trainableWeights(student, settings.train);
  if (!trainable.length)
    throw new ModelError(
      'invalid-argument',
      `${student.name} has no float weight to train (selection '${settings.train}').`,
    );
  const windows = heldOutWindows(data.heldOut, settings.seq);
  const evalGraph = new TrainGraph(student, trainable);
  const forward = opts.weightTransform ? { weightTransform: opts.weightTransform } : undefined;
  const measure = (w: ReadonlyMap<string, Float32Array>) =>
    windowPerplexity(evalGraph, w, windows, settings.batch, forward);
  let state: TrainingState;
  if (opts.resume)
    state = { ...opts.resume, history: [...opts.resume.history], evals: [...opts.resume.evals] };
  else {
    const initial = copyWeights(evalGraph.params);
    const perplexity = measure(initial);
    const point = { step: 0, perplexity };
    opts.onEval?.(point);
    state = {
      checkpoint: { step: 0, weights: initial, optimizer: { step: 0, m: new Map(), v: new Map() } },
      history: [],
      evals: [point],
      best: { step: 0, perplexity, weights: initial },
    };
  }
  let cancelled = false;
  while (state.checkpoint.step < settings.steps) {
    if (opts.signal?.aborted) {
      cancelled = true;
      break;
    }
    const from = state.checkpoint.step;
    const stopAt = Math.min(settings.steps, (Math.floor(from / settings.evalEvery) + 1) * settings.evalEvery);
    const chunk = new AbortController();
    const stop = () => chunk.abort();
    opts.signal?.addEventListener('abort', stop);
    let r;
    try {
      r = await distill(student, teacher, data.train, {
        steps: settings.steps,
        batch: settings.batch,
        seq: settings.seq,
        lr: settings.lr,
        temperature: settings.temperature,
        alpha: settings.alpha,
        schedule: settings.schedule,
        weightDecay: settings.weightDecay,
        beta2: settings.beta2,
        gradClip: settings.gradClip,
        train: settings.train,
        seed: settings.seed,
        signal: chunk.signal,
        weightTransform: opts.weightTransform,
        ...(from > 0 ? { resume: state.checkpoint } : {}),
        onStep: (s) => {
          state.history.push(s);
          opts.onStep?.(s);
          if (s.step >= stopAt) chunk.abort();
        },
      });
    } finally {
      opts.signal?.removeEventListener('abort', stop);
    }
    if (r.checkpoint.step === from) {
      // stopped before its first step: nothing new to measure
      cancelled = !!opts.signal?.aborted;
      break;
    }
    state.checkpoint = r.checkpoint;
    const perplexity = measure(r.weights);
    const point = { step: r.checkpoint.step, perplexity };
    state.evals.push(point);
    opts.onEval?.(point);
    if (perplexity < state.best.perplexity)
      state.best = { step: point.step, perplexity, weights: copyWeights(r.weights) };
    await yieldToEventLoop();
  }
  if (opts.signal?.aborted && state.checkpoint.step < settings.steps) cancelled = true;
  return { ...state, cancelled, trainable };
}
