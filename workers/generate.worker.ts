/**
 * The "Try it" worker: text generated from the original and the compressed model side by side, one
 * token from each in turn, streamed to the page as it comes; Stop ends both between tokens. Its own
 * onnxruntime-web sessions (kept per model key), so a generation never waits on an evaluation.
 */
import * as Comlink from 'comlink';
import type { InferenceSession } from 'onnxruntime-web';
import { createSession, Tensor } from '../src/runtime/ort-web.ts';
import { generateTokens, type GenerationSummary, type Sampling } from '../src/core/eval/generate.ts';
import { loadTokenizer, parseIdsText, type TextTokenizer } from '../src/core/tokenizer.ts';
import { ModelError, serializeError } from '../src/core/errors.ts';
import type { ModelBytes } from './eval.worker.ts';
import type { Result } from './model.worker.ts';

export interface GenerateRequest {
  /** The models to generate from, side by side (the original, then the compressed). */
  models: ModelBytes[];
  /** Text with a tokenizer; without one, token ids separated by spaces. */
  prompt: string;
  tokenizerJson?: unknown;
  maxNewTokens: number;
  sampling?: Sampling;
  ctx: number;
  eosTokenIds?: number[];
  provider?: 'auto' | 'webgpu' | 'wasm';
}

export interface GenerateUpdate {
  /** Index into the request's models. */
  model: number;
  /** Generated ids so far. */
  ids: number[];
  /** Their text (with a tokenizer): the prompt is not repeated. */
  text?: string;
  tokensPerSecond: number;
  /** Set once this model is finished. */
  done?: Pick<GenerationSummary, 'stop' | 'cached' | 'promptTruncated'>;
}

const sessions = new Map<string, InferenceSession>();
let controller: AbortController | undefined;

async function bytesOf(x: Uint8Array | File): Promise<Uint8Array> {
  return x instanceof Uint8Array ? x : new Uint8Array(await x.arrayBuffer());
}

/** The sessions of this request's models; the others (a previous recipe's) are released. */
async function sessionsFor(models: ModelBytes[], provider: GenerateRequest['provider']) {
  const keys = new Set(models.map((m) => m.key));
  for (const [key, s] of sessions)
    if (!keys.has(key)) {
      sessions.delete(key);
      await s.release();
    }
  const out: InferenceSession[] = [];
  for (const m of models) {
    let session = sessions.get(m.key);
    if (!session) {
      const externalData = await Promise.all(
        (m.externalData ?? []).map(async (e) => ({ path: e.path, data: await bytesOf(e.data) })),
      );
      session = (
        await createSession({ model: await bytesOf(m.model), externalData, provider: provider ?? 'auto' })
      ).session;
      sessions.set(m.key, session);
    }
    out.push(session);
  }
  return out;
}

function promptIds(req: GenerateRequest, tokenizer: TextTokenizer | undefined): number[] {
  if (tokenizer) {
    const ids = tokenizer.encode(req.prompt);
    if (!ids.length) throw new ModelError('invalid-argument', 'Type a prompt first: it gave no tokens.');
    return ids;
  }
  const sequences = parseIdsText(req.prompt);
  if (sequences.length !== 1 || !sequences[0].length)
    throw new ModelError(
      'invalid-argument',
      'This model has no tokenizer: type the prompt as token ids separated by spaces (one line).',
    );
  return sequences[0];
}

const api = {
  async generate(req: GenerateRequest, onUpdate: (u: GenerateUpdate) => void): Promise<Result<null>> {
    controller?.abort();
    const mine = new AbortController();
    controller = mine;
    try {
      const tokenizer = req.tokenizerJson ? loadTokenizer(req.tokenizerJson) : undefined;
      const prompt = promptIds(req, tokenizer);
      const list = await sessionsFor(req.models, req.provider);
      const runs = list.map((session, i) => ({
        it: generateTokens(session, Tensor, req.models[i].inputs, prompt, {
          maxNewTokens: req.maxNewTokens,
          sampling: req.sampling,
          ctx: req.ctx,
          eosTokenIds: req.eosTokenIds,
          signal: mine.signal,
        }),
        ids: [] as number[],
        tokensPerSecond: 0,
        finished: false,
      }));
      const text = (ids: number[]) => (tokenizer ? tokenizer.decode(ids) : undefined);
      // one token from each model in turn: both texts grow together on the page
      while (runs.some((r) => !r.finished)) {
        for (const [i, r] of runs.entries()) {
          if (r.finished) continue;
          const step = await r.it.next();
          if (step.done) {
            r.finished = true;
            const { stop, cached, promptTruncated } = step.value;
            onUpdate({
              model: i,
              ids: r.ids,
              text: text(r.ids),
              tokensPerSecond: step.value.tokensPerSecond,
              done: { stop, cached, promptTruncated },
            });
          } else {
            r.ids.push(step.value.token);
            r.tokensPerSecond = step.value.tokensPerSecond;
            onUpdate({ model: i, ids: [...r.ids], text: text(r.ids), tokensPerSecond: r.tokensPerSecond });
          }
        }
      }
      return { ok: true, value: null };
    } catch (e) {
      return { ok: false, error: serializeError(e) };
    } finally {
      if (controller === mine) controller = undefined;
    }
  },

  /** Stops the running generation before its next token (what was generated stays). */
  stop(): void {
    controller?.abort();
  },
};

export type GenerateWorkerApi = typeof api;
Comlink.expose(api);
