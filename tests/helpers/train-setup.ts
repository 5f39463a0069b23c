/**
 * The setup the training tests (distillation, QAT, LSQ) share: stories260K as the teacher, run by
 * onnxruntime-node; its 2:4-pruned copy as a student; sequences the teacher generated, the last few
 * held out as a probe with the teacher's logits on them; the held-out ids.txt (never trained on);
 * and onnxruntime's logits and perplexity of a written file.
 *
 *   await withStoriesTeacher({ count: 12, probe: 2 }, async ({ teacher, train, probe, probeLogits }) => { … });
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateCalibrationSequences } from '../../src/core/calibrate/generate.ts';
import type { IoSpec } from '../../src/core/eval/decoder.ts';
import { evaluatePerplexity } from '../../src/core/eval/perplexity.ts';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { batchLoss, sessionTeacher, trainableWeights, type Teacher } from '../../src/core/train/distill.ts';
import { TrainGraph, type ForwardOptions } from '../../src/core/train/graph.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';
import { compressBytes } from './compress.ts';
import { STORIES_DIR, STORIES_MODEL } from './fixtures.ts';
import { idsInput, ort } from './ort.ts';

/** stories260K's held-out token ids (tests/fixtures/stories260K/ids.txt): never trained on. */
export const STORIES_HELD_OUT: number[][] = parseIdsText(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8'));

export interface LoadedModel {
  bytes: Uint8Array;
  model: OnnxModel;
}

/** stories260K as it is stored: the teacher. */
export function storiesTeacher(): LoadedModel {
  const bytes = new Uint8Array(readFileSync(STORIES_MODEL));
  return { bytes, model: parseModel(bytesSource('stories260K.onnx', bytes)) };
}

/** `teacherBytes` pruned 2:4 by magnitude and exported: a student with something to heal. */
export function prunedStudent(teacherBytes: Uint8Array): LoadedModel {
  const bytes = compressBytes(teacherBytes, [{ method: 'prune', options: { pattern: '2:4' } }]).exported;
  return { bytes, model: parseModel(bytesSource('pruned.onnx', bytes)) };
}

export interface TeacherSetup {
  session: ort.InferenceSession;
  inputs: IoSpec[];
  teacher: Teacher;
  /** Every generated sequence, the probe's included. */
  generated: number[][];
  /** The generated sequences but the last `probe`. */
  train: number[][];
  /** The last `probe` generated sequences, never trained on. */
  probe: number[][];
  /** The teacher's logits on `probe` (empty without a probe). */
  probeLogits: Float32Array;
}

export interface TeacherSetupOptions {
  /** Sequences generated in all, the probe's included. */
  count: number;
  /** How many of them (the last) are held out as the probe; default 0. */
  probe?: number;
  /** Tokens per sequence; default 48. */
  length?: number;
  /** Sampling seed; default 5. */
  seed?: number;
  /** The teacher; default stories260K (storiesTeacher()). */
  teacher?: LoadedModel;
}

/**
 * Opens an onnxruntime session of the teacher, generates `count` sequences with it (BOS 1), splits
 * them into train and probe, computes the probe's soft labels, runs `body`, and releases the session.
 */
export async function withStoriesTeacher<T>(
  opts: TeacherSetupOptions,
  body: (setup: TeacherSetup) => Promise<T>,
): Promise<T> {
  const { bytes, model } = opts.teacher ?? storiesTeacher();
  const session = await ort.InferenceSession.create(bytes);
  try {
    const inputs = summarizeInputs(model.graph);
    const generated = await generateCalibrationSequences(session, ort.Tensor, inputs, {
      count: opts.count,
      length: opts.length ?? 48,
      seed: opts.seed ?? 5,
      bos: 1,
    });
    const held = opts.probe ?? 0;
    const train = generated.slice(0, generated.length - held);
    const probe = generated.slice(generated.length - held);
    const teacher = sessionTeacher(session, ort.Tensor, inputs);
    const probeLogits = held ? await teacher(probe) : new Float32Array(0);
    return await body({ session, inputs, teacher, generated, train, probe, probeLogits });
  } finally {
    await session.release();
  }
}

/**
 * onnxruntime-node's perplexity of a written file on `sequences` (default STORIES_HELD_OUT, ctx 64,
 * stride 32), its quantized products computed exactly (EXACT_WEIGHT_ONLY).
 */
export async function ortPerplexity(
  bytes: Uint8Array,
  sequences: number[][] = STORIES_HELD_OUT,
  protocol: { ctx: number; stride: number } = { ctx: 64, stride: 32 },
): Promise<number> {
  const session = await ort.InferenceSession.create(bytes, { extra: EXACT_WEIGHT_ONLY });
  try {
    const model = parseModel(bytesSource('m.onnx', bytes));
    return (await evaluatePerplexity(session, ort.Tensor, summarizeInputs(model.graph), sequences, protocol))
      .perplexity;
  } finally {
    await session.release();
  }
}

/** onnxruntime-node's logits [1, ids.length, vocab] of a written file for one sequence. */
export async function ortLogits(bytes: Uint8Array, ids: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes, { extra: EXACT_WEIGHT_ONLY });
  try {
    return (await session.run(idsInput(ids))).logits.data as Float32Array;
  } finally {
    await session.release();
  }
}

/**
 * The KD loss (T 2, α 0.5) of `model` on the probe against the teacher's logits, with `weights` set
 * (null: the model's own) and each weight read through `weightTransform` (fake quantization) when given.
 */
export function probeKdLoss(
  model: OnnxModel,
  probe: number[][],
  probeLogits: Float32Array,
  weightTransform?: ForwardOptions['weightTransform'],
): (weights: ReadonlyMap<string, Float32Array> | null) => number {
  return (weights) => {
    const graph = new TrainGraph(model, trainableWeights(model));
    if (weights) for (const [name, w] of weights) graph.params.get(name)!.set(w);
    return batchLoss(graph, probe, probeLogits, {
      temperature: 2,
      alpha: 0.5,
      withGrad: false,
      ...(weightTransform ? { forward: { weightTransform } } : {}),
    }).loss;
  };
}
