/**
 * The training worker: distils a student (the model as the recipe compressed it so far, sent by the
 * model worker through the page) from its teacher (the original model, run by onnxruntime-web) on the
 * training engine. Its own worker, so previews and evaluations keep answering while it trains. It keeps
 * the last run's state: a cancelled run resumes from it.
 */
import * as Comlink from 'comlink';
import { bytesSource, parseModel } from '../src/core/onnx/model.ts';
import { ModelError, serializeError } from '../src/core/errors.ts';
import { checkTrainable, sessionTeacher, type DistillStep } from '../src/core/train/distill.ts';
import {
  splitTrainingData,
  trainStudent,
  type HeldOutPoint,
  type TrainingData,
  type TrainingState,
} from '../src/core/compress/distill.ts';
import type { DistillSettings } from '../src/core/compress/distill-settings.ts';
import { checkVocabulary } from '../src/core/compress/calibration.ts';
import { generateCalibrationSequences } from '../src/core/calibrate/generate.ts';
import { loadTokenizer, parseIdsText } from '../src/core/tokenizer.ts';
import type { IoSpec } from '../src/core/eval/decoder.ts';
import { createSession, Tensor } from '../src/runtime/ort-web.ts';
import type { InferenceSession } from 'onnxruntime-web';
import type { Result } from './model.worker.ts';
import { useGemmDevice } from '../src/core/train/kernels.ts';
import { WebGpuClient, bridgeBuffers } from '../src/core/train/webgpu-bridge.ts';
import { checkDevice, type DeviceCheck } from '../src/core/train/device-check.ts';
import type { GpuWorkerReply } from './gpu.worker.ts';

/** Where the engine's products run: 'auto' takes WebGPU when a hardware (non-fallback) adapter exists. */
export type TrainBackend = 'wasm' | 'webgpu' | 'auto';
import { resolveRecipe, type RecipeStep } from '../src/core/compress/recipe.ts';
import { FakeQuantizer, withFrozenQuantized } from '../src/core/train/qat.ts';

export type { HeldOutPoint };

export interface TrainRequest {
  /** The run's key (student, settings, data): a resume continues the last run only when it matches. */
  key: string;
  /** The student's ONNX bytes (float weights). */
  student: Uint8Array;
  teacher: {
    key: string;
    model: Uint8Array | File;
    externalData?: { path: string; data: Uint8Array | File }[];
  };
  inputs: IoSpec[];
  settings: DistillSettings;
  data: { text?: string; tokenizerJson?: unknown; idsText?: string; bos: number; name?: string };
  resume: boolean;
  /** Default 'auto'. */
  backend?: TrainBackend;
  /** Quantization-aware training: the recipe's int4/int8 step right after distillation, trained against. */
  qat?: RecipeStep;
}

export type TrainProgress =
  | { kind: 'phase'; label: string }
  | { kind: 'backend'; label: string }
  | { kind: 'step'; step: DistillStep }
  | { kind: 'eval'; point: HeldOutPoint };

export interface TrainDone {
  /** The best-measured weights (transferred). */
  weights: Map<string, Float32Array>;
  /** Steps trained (fewer than the settings' when cancelled). */
  steps: number;
  cancelled: boolean;
  bestStep: number;
  bestPerplexity: number;
  trainable: number;
  tokensPerSecond: number;
  /** Where the products ran, in words ("WASM SIMD", "WebGPU (nvidia ampere)"). */
  backend: string;
  /** Products the GPU ran in this call (0 on wasm). */
  gpuProducts: number;
}

let teacher: { key: string; session: InferenceSession } | undefined;
let last: { key: string; state: TrainingState; data: TrainingData } | undefined;
let controller: AbortController | undefined;

let gpu: Promise<{ client: WebGpuClient; fallback: boolean } | { reason: string }> | undefined;

/** The GPU worker, started once: its client, or why there is none. */
function openGpu() {
  gpu ??= (async () => {
    // no WebGPU in this worker: none in the GPU worker either, so no need to start it
    if (!(navigator as Navigator & { gpu?: unknown }).gpu) return { reason: 'this browser has no WebGPU' };
    let buffers;
    try {
      buffers = bridgeBuffers();
    } catch (e) {
      return { reason: (e as Error).message };
    }
    const worker = new Worker(new URL('./gpu.worker.ts', import.meta.url), { type: 'module', name: 'gpu' });
    const reply = await new Promise<GpuWorkerReply>((resolve) => {
      worker.onmessage = (e: MessageEvent<GpuWorkerReply>) => resolve(e.data);
      worker.onerror = (e) =>
        resolve({ kind: 'opened', ok: false, reason: e.message || 'the GPU worker did not start' });
      worker.postMessage({ kind: 'open', buffers });
    });
    if (!reply.ok) {
      worker.terminate();
      return { reason: reply.reason };
    }
    return {
      client: new WebGpuClient(buffers, worker, `WebGPU (${reply.adapter})`),
      fallback: reply.fallback,
    };
  })();
  return gpu;
}

/** The device a run's products go to (null: wasm) and its name; a ModelError when WebGPU was asked for and is missing. */
async function selectBackend(choice: TrainBackend): Promise<{ device: WebGpuClient | null; label: string }> {
  if (choice === 'wasm') return { device: null, label: 'WASM SIMD' };
  const g = await openGpu();
  if ('reason' in g) {
    if (choice === 'webgpu')
      throw new ModelError('unsupported', `WebGPU training is not available: ${g.reason}.`);
    return { device: null, label: 'WASM SIMD (no WebGPU)' };
  }
  // a software adapter (SwiftShader) is 6–8× slower than the wasm kernels: only when asked for
  if (choice === 'auto' && g.fallback) return { device: null, label: 'WASM SIMD (WebGPU is software only)' };
  return { device: g.client, label: g.client.name };
}

async function bytesOf(x: Uint8Array | File): Promise<Uint8Array> {
  return x instanceof Uint8Array ? x : new Uint8Array(await x.arrayBuffer());
}

async function teacherSession(t: TrainRequest['teacher']): Promise<InferenceSession> {
  if (teacher?.key === t.key) return teacher.session;
  await teacher?.session.release();
  teacher = undefined;
  const externalData = await Promise.all(
    (t.externalData ?? []).map(async (e) => ({ path: e.path, data: await bytesOf(e.data) })),
  );
  try {
    // wasm: the teacher's logits are read back every step, which WebGPU would copy off the GPU anyway
    const { session } = await createSession({
      model: await bytesOf(t.model),
      externalData,
      provider: 'wasm',
    });
    teacher = { key: t.key, session };
    return session;
  } catch (e) {
    throw new ModelError(
      'unsupported',
      `onnxruntime-web could not load the teacher: ${(e as Error).message ?? String(e)}`,
    );
  }
}

const api = {
  async train(req: TrainRequest, onProgress?: (p: TrainProgress) => void): Promise<Result<TrainDone>> {
    controller?.abort();
    const mine = new AbortController();
    controller = mine;
    let backend: Awaited<ReturnType<typeof selectBackend>> | undefined;
    try {
      const student = parseModel(bytesSource('student.onnx', req.student));
      checkTrainable(student);
      const s = req.settings;
      backend = await selectBackend(req.backend ?? 'auto');
      onProgress?.({ kind: 'backend', label: backend.label });
      const productsBefore = backend.device?.products ?? 0;
      useGemmDevice(backend.device);
      onProgress?.({ kind: 'phase', label: 'Loading the teacher…' });
      const session = await teacherSession(req.teacher);
      const resume = req.resume && last?.key === req.key ? last : undefined;
      let data: TrainingData;
      if (resume) data = resume.data;
      else if (s.source === 'generate') {
        const held = Math.max(1, Math.ceil(s.samples / 10));
        onProgress?.({ kind: 'phase', label: `Generating ${s.samples + held} sequences with the teacher…` });
        const all = await generateCalibrationSequences(session, Tensor, req.inputs, {
          count: s.samples + held,
          length: s.seq,
          seed: s.seed,
          bos: req.data.bos,
          signal: mine.signal,
          onProgress: (p) =>
            onProgress?.({
              kind: 'phase',
              label: `Generating sequences with the teacher: ${p.sequencesDone} / ${p.sequencesTotal}`,
            }),
        });
        data = { train: all.slice(0, s.samples), heldOut: all.slice(s.samples) };
      } else {
        const where = req.data.name ?? 'the training data';
        if (s.source === 'ids' && req.data.idsText === undefined)
          throw new ModelError('invalid-argument', 'Choose a file of token ids.');
        if (s.source === 'text' && req.data.text === undefined)
          throw new ModelError('invalid-argument', 'Choose a text file.');
        const sequences =
          s.source === 'ids'
            ? parseIdsText(req.data.idsText!)
            : [loadTokenizer(req.data.tokenizerJson).encode(req.data.text!)];
        checkVocabulary(student, sequences, where);
        data = splitTrainingData(sequences);
      }
      // QAT: every forward pass (training and held-out) reads the step's fake-quantized weights
      const quantizer = req.qat
        ? new FakeQuantizer(student, resolveRecipe({ steps: [req.qat] })[0])
        : undefined;
      const trained = quantizer ? withFrozenQuantized(student, quantizer, s.train) : student;
      onProgress?.({ kind: 'phase', label: 'Measuring the student…' });
      const outcome = await trainStudent(trained, sessionTeacher(session, Tensor, req.inputs), data, s, {
        weightTransform: quantizer?.transform,
        signal: mine.signal,
        resume: resume?.state,
        onStep: (step) => onProgress?.({ kind: 'step', step }),
        onEval: (point) => onProgress?.({ kind: 'eval', point }),
      });
      last = { key: req.key, state: outcome, data };
      // a copy goes to the page: the kept state stays whole for a resume
      const weights = new Map([...outcome.best.weights].map(([k, v]) => [k, Float32Array.from(v)]));
      const history = outcome.history;
      const done: TrainDone = {
        weights,
        steps: outcome.checkpoint.step,
        cancelled: outcome.cancelled,
        bestStep: outcome.best.step,
        bestPerplexity: outcome.best.perplexity,
        trainable: outcome.trainable.length,
        tokensPerSecond: history.length ? history[history.length - 1].tokensPerSecond : 0,
        backend: backend.label,
        gpuProducts: (backend.device?.products ?? 0) - productsBefore,
      };
      return Comlink.transfer(
        { ok: true as const, value: done },
        [...weights.values()].map((w) => w.buffer as ArrayBuffer),
      );
    } catch (e) {
      return { ok: false, error: serializeError(e) };
    } finally {
      if (backend?.device) useGemmDevice(null);
      if (controller === mine) controller = undefined;
    }
  },

  /**
   * The WebGPU products against the wasm kernels on small shapes (device-check.ts), for the Chromium
   * test: a ModelError when WebGPU is missing.
   */
  async checkKernels(): Promise<Result<{ backend: string; checks: DeviceCheck[] }>> {
    try {
      const { device, label } = await selectBackend('webgpu');
      return { ok: true, value: { backend: label, checks: checkDevice(device!) } };
    } catch (e) {
      return { ok: false, error: serializeError(e) };
    }
  },

  /** Stops the running job between steps; the weights measured best so far come back. */
  cancel(): void {
    controller?.abort();
  },
};

export type TrainWorkerApi = typeof api;
Comlink.expose(api);
