/**
 * The precision worker: per-tensor sensitivity (the KL of compressing one tensor alone, the data of
 * the mixed-precision plan) and backend agreement (the same model on wasm and on WebGPU). It parses
 * its own copy of the original model, so the model worker's preview never waits on it. Both runs stop
 * at the next trial or window on cancel; measured KLs are cached per (model, tensor, step, text, ctx).
 */
import * as Comlink from 'comlink';
import type { InferenceSession } from 'onnxruntime-web';
import {
  createSession,
  ORT_WEB_VERSION,
  Tensor,
  webGpuAdapter,
  type RuntimeInfo,
} from '../src/runtime/ort-web.ts';
import { bytesSource, parseModel, type OnnxModel } from '../src/core/onnx/model.ts';
import { ModelError, serializeError } from '../src/core/errors.ts';
import { measureSensitivity, parseCandidates, type TensorSensitivity } from '../src/core/compress/auto.ts';
import { firstTokens, trialKl } from '../src/core/compress/sensitivity.ts';
import { ReferenceLogits, tokensHash } from '../src/core/eval/compare.ts';
import { compareBackends, type BackendAgreement } from '../src/core/eval/agreement.ts';
import { loadTokenizer } from '../src/core/tokenizer.ts';
import type { ModelBytes } from './eval.worker.ts';
import type { Result } from './model.worker.ts';

export interface SliceRequest {
  /** The text with the model's tokenizer, or pre-tokenized ids. */
  text?: string;
  tokenizerJson?: unknown;
  ids?: number[][];
  /** The slice: the first `tokens` tokens of the text, scored in windows of `ctx` (stride ctx). */
  tokens: number;
  ctx: number;
}

export interface SensitivityRequest extends SliceRequest {
  model: ModelBytes & { name: string };
  /** Candidate ids (auto.ts' grammar): 'keep,int8,int4b32,…' */
  candidates: string;
}

export interface SensitivityProgress {
  done: number;
  total: number;
  name: string;
  candidate: string;
}

export interface SensitivityDone {
  table: TensorSensitivity[];
  protocol: { textHash: string; tokens: number; ctx: number; provider: string; onnxruntime: string };
  /** Trials answered from the cache (no model run). */
  cached: number;
}

export interface AgreementRequest extends SliceRequest {
  model: ModelBytes;
  /** What the model is, for the page's line: 'exported int4 b32', 'the open model'. */
  label: string;
}

export type AgreementDone =
  | { available: true; agreement: BackendAgreement; label: string; wasm: RuntimeInfo }
  | { available: false; reason: string; label: string };

let controller: AbortController | undefined;
let parsed: { key: string; model: OnnxModel } | undefined;
let reference: { key: string; session: InferenceSession; logits: ReferenceLogits } | undefined;
/** Measured KLs by (model, text, ctx, tensor, step): a second run, or the plan after the chart, reuses them. */
const klCache = new Map<string, number>();

async function bytesOf(x: Uint8Array | File): Promise<Uint8Array> {
  return x instanceof Uint8Array ? x : new Uint8Array(await x.arrayBuffer());
}

function sequencesOf(req: SliceRequest): number[][] {
  const all = req.ids ?? [loadTokenizer(req.tokenizerJson).encode(req.text ?? '')];
  const slice = firstTokens(all, req.tokens);
  if (!slice.length)
    throw new ModelError('invalid-argument', 'The text has fewer than two tokens: nothing to score.');
  return slice;
}

/** A fresh controller for this run; an older run stops at its next check. */
function start(): AbortController {
  controller?.abort();
  const mine = new AbortController();
  controller = mine;
  return mine;
}

async function wasmSession(bytes: Uint8Array): Promise<InferenceSession> {
  return (await createSession({ model: bytes, provider: 'wasm' })).session;
}

/** The original's wasm session and its logits over the slice, kept while model, text and ctx stay. */
async function referenceFor(m: ModelBytes, bytes: Uint8Array, sequences: number[][], ctx: number) {
  const key = `${m.key}|${ctx}|${await tokensHash(sequences)}`;
  if (reference?.key === key) return reference.logits;
  await reference?.session.release();
  reference = undefined;
  const session = await wasmSession(bytes);
  reference = {
    key,
    session,
    logits: new ReferenceLogits({ session, Tensor, inputs: m.inputs }, sequences, ctx, ctx),
  };
  return reference.logits;
}

const api = {
  async sensitivity(
    req: SensitivityRequest,
    onProgress?: (p: SensitivityProgress) => void,
  ): Promise<Result<SensitivityDone>> {
    const mine = start();
    try {
      if (req.model.externalData?.length)
        throw new ModelError(
          'unsupported',
          'Sensitivity reads models without external data for now (as compress --auto-bits does).',
        );
      const candidates = parseCandidates(req.candidates);
      const bytes = await bytesOf(req.model.model);
      if (parsed?.key !== req.model.key)
        parsed = { key: req.model.key, model: parseModel(bytesSource(req.model.name, bytes)) };
      const sequences = sequencesOf(req);
      const logits = await referenceFor(req.model, bytes, sequences, req.ctx);
      const textHash = await logits.textHash();
      const runtime = { provider: 'wasm', threads: 'default', onnxruntime: ORT_WEB_VERSION };
      const measure = trialKl(
        logits,
        { load: wasmSession, Tensor, inputs: req.model.inputs, runtime },
        mine.signal,
      );
      let cached = 0;
      const table = await measureSensitivity(parsed.model, candidates, measure, {
        cacheKey: `${req.model.key}|${textHash}|${req.ctx}`,
        cache: {
          get: (k) => {
            const v = klCache.get(k);
            if (v !== undefined) cached++;
            return v;
          },
          set: (k, v) => void klCache.set(k, v),
        },
        signal: mine.signal,
        onProgress: (done, total, name, candidate) => onProgress?.({ done, total, name, candidate }),
      });
      return {
        ok: true,
        value: {
          table,
          protocol: {
            textHash,
            tokens: logits.tokens,
            ctx: req.ctx,
            provider: 'wasm',
            onnxruntime: ORT_WEB_VERSION,
          },
          cached,
        },
      };
    } catch (e) {
      return {
        ok: false,
        error: serializeError(
          mine.signal.aborted ? new ModelError('cancelled', 'Sensitivity analysis cancelled.') : e,
        ),
      };
    } finally {
      if (controller === mine) controller = undefined;
    }
  },

  /**
   * The model on wasm, then on WebGPU (only WebGPU: a provider that fails to start is an error, never a
   * quiet second wasm run), on the same slice: max |Δlogit|, KL and top-1 agreement.
   */
  async agreement(
    req: AgreementRequest,
    onProgress?: (done: number, total: number) => void,
  ): Promise<Result<AgreementDone>> {
    const mine = start();
    let gpu: InferenceSession | undefined;
    let cpu: InferenceSession | undefined;
    try {
      const adapter = await webGpuAdapter();
      if (!adapter.present)
        return {
          ok: true,
          value: {
            available: false,
            label: req.label,
            reason: `No WebGPU adapter: ${adapter.description}, so there is no second backend to compare wasm with.`,
          },
        };
      const bytes = await bytesOf(req.model.model);
      const externalData = await Promise.all(
        (req.model.externalData ?? []).map(async (e) => ({ path: e.path, data: await bytesOf(e.data) })),
      );
      const sequences = sequencesOf(req);
      const wasm = await createSession({ model: bytes, externalData, provider: 'wasm' });
      cpu = wasm.session;
      const logits = new ReferenceLogits(
        { session: cpu, Tensor, inputs: req.model.inputs },
        sequences,
        req.ctx,
        req.ctx,
      );
      if (mine.signal.aborted) throw new ModelError('cancelled', 'Backend comparison cancelled.');
      try {
        gpu = (await createSession({ model: bytes, externalData, provider: 'webgpu', strict: true })).session;
      } catch (e) {
        return {
          ok: true,
          value: {
            available: false,
            label: req.label,
            reason: `onnxruntime's WebGPU provider did not start on this adapter (${adapter.description}): ${(e as Error).message}`,
          },
        };
      }
      const agreement = await compareBackends(
        logits,
        { session: gpu, Tensor, inputs: req.model.inputs },
        { provider: 'wasm', threads: wasm.info.threads, onnxruntime: ORT_WEB_VERSION },
        { provider: 'webgpu', reason: adapter.description },
        { signal: mine.signal, onProgress },
      );
      return { ok: true, value: { available: true, agreement, label: req.label, wasm: wasm.info } };
    } catch (e) {
      return {
        ok: false,
        error: serializeError(
          mine.signal.aborted ? new ModelError('cancelled', 'Backend comparison cancelled.') : e,
        ),
      };
    } finally {
      await gpu?.release();
      await cpu?.release();
      if (controller === mine) controller = undefined;
    }
  },

  /** Stops the running sensitivity or agreement run at its next trial or window. */
  cancel(): void {
    controller?.abort();
  },
};

export type PrecisionWorkerApi = typeof api;
Comlink.expose(api);
