/** The evaluation worker: onnxruntime-web sessions and perplexity runs, cancellable between windows. */
import * as Comlink from 'comlink';
import { createSession, Tensor, type RuntimeInfo } from '../src/runtime/ort-web.ts';
import {
  evaluatePerplexity,
  type PerplexityProgress,
  type PerplexityResult,
} from '../src/core/eval/perplexity.ts';
import type { IoSpec } from '../src/core/eval/decoder.ts';
import { measureSpeed, type SpeedResult } from '../src/core/eval/speed.ts';
import { loadTokenizer } from '../src/core/tokenizer.ts';
import { serializeError } from '../src/core/errors.ts';
import type { Result } from './model.worker.ts';
import type { InferenceSession } from 'onnxruntime-web';

export interface ModelBytes {
  /** Identifies the model so its session is reused across evaluations. */
  key: string;
  model: Uint8Array | File;
  externalData?: { path: string; data: Uint8Array | File }[];
  inputs: IoSpec[];
}

export interface EvalRequest {
  model: ModelBytes;
  text?: string;
  tokenizerJson?: unknown;
  ids?: number[][];
  ctx: number;
  stride: number;
  provider?: 'auto' | 'webgpu' | 'wasm';
}

export type EvalResult = PerplexityResult & {
  runtime: RuntimeInfo;
  protocol: { ctx: number; stride: number };
  /** Forward-pass tokens/s on the first ctx tokens of the data (speed.ts): the same protocol for every model. */
  speed: SpeedResult;
};

let cached: { key: string; session: InferenceSession; info: RuntimeInfo } | undefined;
let controller: AbortController | undefined;

async function bytesOf(x: Uint8Array | File): Promise<Uint8Array> {
  return x instanceof Uint8Array ? x : new Uint8Array(await x.arrayBuffer());
}

async function sessionFor(m: ModelBytes, provider: EvalRequest['provider']) {
  if (cached?.key === m.key) return cached;
  await cached?.session.release();
  cached = undefined;
  const externalData = await Promise.all(
    (m.externalData ?? []).map(async (e) => ({ path: e.path, data: await bytesOf(e.data) })),
  );
  const { session, info } = await createSession({ model: await bytesOf(m.model), externalData, provider });
  cached = { key: m.key, session, info };
  return cached;
}

const api = {
  async evaluate(
    req: EvalRequest,
    onProgress?: (p: PerplexityProgress) => void,
  ): Promise<Result<EvalResult>> {
    controller?.abort();
    const mine = new AbortController();
    controller = mine;
    try {
      let sequences = req.ids;
      if (!sequences) {
        const tokenizer = loadTokenizer(req.tokenizerJson);
        sequences = [tokenizer.encode(req.text ?? '')];
      }
      const { session, info } = await sessionFor(req.model, req.provider ?? 'auto');
      const r = await evaluatePerplexity(session, Tensor, req.model.inputs, sequences, {
        ctx: req.ctx,
        stride: req.stride,
        signal: mine.signal,
        onProgress,
      });
      const speed = await measureSpeed(
        session,
        Tensor,
        req.model.inputs,
        sequences.flat().slice(0, req.ctx),
        {
          signal: mine.signal,
        },
      );
      return {
        ok: true,
        value: { ...r, runtime: info, protocol: { ctx: req.ctx, stride: req.stride }, speed },
      };
    } catch (e) {
      return { ok: false, error: serializeError(e) };
    } finally {
      if (controller === mine) controller = undefined;
    }
  },

  /** Stops the running evaluation at its next window. */
  cancel(): void {
    controller?.abort();
  },

  async release(): Promise<void> {
    await cached?.session.release();
    cached = undefined;
  },
};

export type EvalWorkerApi = typeof api;
Comlink.expose(api);
