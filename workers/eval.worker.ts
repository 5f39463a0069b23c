/** The evaluation worker: onnxruntime-web sessions and perplexity runs, cancellable between windows. */
import * as Comlink from 'comlink';
import { createSession, ORT_WEB_VERSION, Tensor, type RuntimeInfo } from '../src/runtime/ort-web.ts';
import {
  ReferenceLogits,
  compareWithReference,
  tokensHash,
  type ComparisonResult,
} from '../src/core/eval/compare.ts';
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
  /** The original model: when given, the model is also compared with it on the same tokens. */
  base?: ModelBytes;
}

export type EvalResult = PerplexityResult & {
  runtime: RuntimeInfo;
  protocol: { ctx: number; stride: number };
  /** KL, same top, PPL ratio… against `base`, with the full protocol (when a base was given). */
  versus?: ComparisonResult;
  /** Forward-pass tokens/s on the first ctx tokens of the data (speed.ts): the same protocol for every model. */
  speed: SpeedResult;
};

/** The original's session and its logits per window, kept while the text and window stay the same. */
let reference: { key: string; session: InferenceSession; logits: ReferenceLogits } | undefined;
/** The browser keeps less of the original's logits than the CLI: past this, windows are recomputed. */
const REFERENCE_BUDGET_BYTES = 128 * 2 ** 20;

async function referenceFor(base: ModelBytes, sequences: number[][], req: EvalRequest) {
  const key = `${base.key}|${req.ctx}|${req.stride}|${await tokensHash(sequences)}`;
  if (reference?.key === key) return reference.logits;
  if (reference && !reference.key.startsWith(`${base.key}|`)) await reference.session.release();
  const session =
    reference?.key.startsWith(`${base.key}|`) === true
      ? reference.session
      : (
          await createSession({
            model: await bytesOf(base.model),
            externalData: await Promise.all(
              (base.externalData ?? []).map(async (e) => ({ path: e.path, data: await bytesOf(e.data) })),
            ),
            provider: req.provider ?? 'auto',
          })
        ).session;
  const logits = new ReferenceLogits(
    { session, Tensor, inputs: base.inputs },
    sequences,
    req.ctx,
    req.stride,
    REFERENCE_BUDGET_BYTES,
  );
  reference = { key, session, logits };
  return logits;
}

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
      // the forward-pass speed of this model alone, on the same protocol as a plain evaluation
      const speedIds = sequences.flat().slice(0, req.ctx);
      const speedOf = () =>
        measureSpeed(session, Tensor, req.model.inputs, speedIds, { signal: mine.signal });
      if (req.base) {
        const start = performance.now();
        const logits = await referenceFor(req.base, sequences, req);
        const versus = await compareWithReference(
          logits,
          { session, Tensor, inputs: req.model.inputs },
          { provider: info.provider, threads: info.threads, onnxruntime: ORT_WEB_VERSION },
          {
            signal: mine.signal,
            onProgress: (p) =>
              onProgress?.({
                ...p,
                tokensPerSecond: p.tokensScored / Math.max((performance.now() - start) / 1000, 1e-9),
              }),
          },
        );
        const seconds = (performance.now() - start) / 1000;
        const tokens = versus.protocol.tokens;
        const speed = await speedOf();
        return {
          ok: true,
          value: {
            perplexity: versus.perplexity.value,
            nll: Math.log(versus.perplexity.value),
            tokens,
            // both models ran over the text: the rate is of the pair
            tokensPerSecond: tokens / Math.max(seconds, 1e-9),
            seconds,
            ctx: req.ctx,
            stride: req.stride,
            windows: versus.protocol.windows,
            runtime: info,
            protocol: { ctx: req.ctx, stride: req.stride },
            versus,
            speed,
          },
        };
      }
      const r = await evaluatePerplexity(session, Tensor, req.model.inputs, sequences, {
        ctx: req.ctx,
        stride: req.stride,
        signal: mine.signal,
        onProgress,
      });
      const speed = await speedOf();
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
    await reference?.session.release();
    reference = undefined;
  },
};

export type EvalWorkerApi = typeof api;
Comlink.expose(api);
