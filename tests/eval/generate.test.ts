/**
 * Generation for the "Try it" box, in onnxruntime-node: greedy decoding with the KV cache gives the
 * tokens of greedy decoding by full recompute, and both equal a direct reference loop (the prefix run
 * whole each step, argmax of the last row); merged decoders take the cache through use_cache_branch;
 * models without a cache (stories260K) recompute; sampling is seeded; Stop and EOS end it.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { InferenceSession } from 'onnxruntime-common';
import { generate, topKFilter, cacheLayout, type GenerateOptions } from '../../src/core/eval/generate.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { isModelError } from '../../src/core/errors.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';
import { MERGED, cachedDecoder, mergedDecoder, plainDecoder } from '../helpers/merged-decoder.ts';
import { ROOT, STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';
import { loadTokenizer } from '../../src/core/tokenizer.ts';
import { idsInput, ort } from '../helpers/ort.ts';

const PROMPT = [3, 17, 5, 29];

async function open(bytes: Uint8Array) {
  const inputs = summarizeInputs(parseModel(bytesSource('m.onnx', bytes)).graph);
  const session = await createNodeSession(bytes);
  return { session, inputs };
}

/** Counts each run's input_ids length, to see whether the cache was used. */
function counting(session: InferenceSession, lengths: number[]): InferenceSession {
  return new Proxy(session, {
    get(target, key) {
      if (key === 'run')
        return (feeds: Record<string, { dims: readonly number[] }>, fetches?: string[]) => {
          lengths.push(Number(feeds.input_ids.dims[1]));
          return target.run(feeds as never, fetches as never);
        };
      const v = Reflect.get(target, key);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  }) as InferenceSession;
}

/**
 * The direct reference: the whole sequence run each step with only the inputs a plain decoder
 * needs (empty past, no-cache branch), the last row's argmax taken here.
 */
async function referenceGreedy(bytes: Uint8Array, prompt: number[], steps: number): Promise<number[]> {
  const session = await ort.InferenceSession.create(bytes);
  const seq = [...prompt];
  try {
    for (let s = 0; s < steps; s++) {
      const feeds = idsInput(seq);
      for (const name of session.inputNames) {
        if (name.startsWith('past_key_values'))
          feeds[name] = new ort.Tensor('float32', new Float32Array(0), [1, MERGED.heads, 0, MERGED.headDim]);
        if (name === 'use_cache_branch') feeds[name] = new ort.Tensor('bool', Uint8Array.of(0), [1]);
        if (name === 'attention_mask')
          feeds[name] = new ort.Tensor('int64', new BigInt64Array(seq.length).fill(1n), [1, seq.length]);
      }
      const out = await session.run(feeds);
      const logits = out.logits.data as Float32Array;
      const last = Array.from(logits.subarray(logits.length - MERGED.vocab));
      seq.push(last.indexOf(Math.max(...last)));
    }
  } finally {
    await session.release();
  }
  return seq.slice(prompt.length);
}

const GREEDY: GenerateOptions = { maxNewTokens: 20, ctx: 64 };

/** The demo folder laid out as the Hub's GPT-2 (onnx/model.onnx with past_key_values), once it is. */
const DEMO = join(ROOT, 'public/models/tiny-shakespeare-gpt2');
const DEMO_KV = join(DEMO, 'onnx', 'model.onnx');

describe('generate', () => {
  it('greedy with the KV cache equals greedy by full recompute and the direct reference', async () => {
    const bytes = cachedDecoder();
    const { session, inputs } = await open(bytes);
    try {
      expect(cacheLayout(inputs, session.outputNames)?.pairs.map((p) => p.present)).toEqual([
        'present.0.key',
        'present.0.value',
      ]);
      const cachedRuns: number[] = [];
      const seen: number[] = [];
      const cached = await generate(counting(session, cachedRuns), Tensor, inputs, PROMPT, {
        ...GREEDY,
        onToken: (t) => seen.push(t.token),
      });
      const fullRuns: number[] = [];
      const full = await generate(counting(session, fullRuns), Tensor, inputs, PROMPT, {
        ...GREEDY,
        useCache: false,
      });
      // the prompt once, then one token a step; against the whole prefix every step
      expect(cachedRuns).toEqual([4, ...Array(19).fill(1)]);
      expect(fullRuns).toEqual(Array.from({ length: 20 }, (_, i) => 4 + i));
      expect(cached.cached).toBe(true);
      expect(full.cached).toBe(false);
      expect(cached.tokens).toHaveLength(20);
      expect(cached.tokens).toEqual(full.tokens);
      expect(seen).toEqual(cached.tokens);
      expect(cached.tokens).toEqual(await referenceGreedy(plainDecoder(), PROMPT, 20));
      expect(cached.stop).toBe('length');
      expect(cached.tokensPerSecond).toBeGreaterThan(0);
    } finally {
      await session.release();
    }
  });

  it('merged decoders: use_cache_branch false for the prompt, true with the cache after', async () => {
    const { session, inputs } = await open(mergedDecoder());
    try {
      const runs: number[] = [];
      const cached = await generate(counting(session, runs), Tensor, inputs, PROMPT, GREEDY);
      expect(cached.cached).toBe(true);
      expect(runs).toEqual([4, ...Array(19).fill(1)]);
      expect(cached.tokens).toEqual(await referenceGreedy(plainDecoder(), PROMPT, 20));
      // sampled, the whole distribution matters: the merged file draws what the cached one draws
      const sampling = { temperature: 1.5, topK: 0, seed: 5 };
      const drawn = await generate(session, Tensor, inputs, PROMPT, { ...GREEDY, sampling });
      const single = await open(cachedDecoder());
      try {
        const want = await generate(single.session, Tensor, single.inputs, PROMPT, { ...GREEDY, sampling });
        expect(drawn.tokens).toEqual(want.tokens);
      } finally {
        await single.session.release();
      }
    } finally {
      await session.release();
    }
  });

  it('the demo GPT-2 with its KV cache: 100 greedy tokens as full recompute gives', async () => {
    const bytes = new Uint8Array(readFileSync(DEMO_KV));
    const { session, inputs } = await open(bytes);
    const tokenizer = loadTokenizer(JSON.parse(readFileSync(join(DEMO, 'tokenizer.json'), 'utf8')));
    const prompt = tokenizer.encode('ROMEO:\nI will');
    try {
      const opts = { maxNewTokens: 100, ctx: 128 };
      const cached = await generate(session, Tensor, inputs, prompt, opts);
      const full = await generate(session, Tensor, inputs, prompt, { ...opts, useCache: false });
      expect(cached.cached).toBe(true);
      expect(full.cached).toBe(false);
      expect(cached.tokens).toHaveLength(100);
      expect(cached.tokens).toEqual(full.tokens);
      expect(tokenizer.decode(cached.tokens).length).toBeGreaterThan(100);
    } finally {
      await session.release();
    }
  });

  it('stories260K (no cache) recomputes the prefix, as a direct loop does', async () => {
    const bytes = new Uint8Array(readFileSync(STORIES_MODEL));
    const { session, inputs } = await open(bytes);
    const prompt = parseIdsText(readFileSync(`${STORIES_DIR}/ids.txt`, 'utf8'))[0].slice(0, 6);
    try {
      const r = await generate(session, Tensor, inputs, prompt, { maxNewTokens: 8, ctx: 256 });
      expect(r.cached).toBe(false);
      const seq = [...prompt];
      for (let s = 0; s < 8; s++) {
        const out = await session.run(idsInput(seq));
        const logits = out.logits.data as Float32Array;
        const vocab = Number(out.logits.dims[2]);
        const last = Array.from(logits.subarray(logits.length - vocab));
        seq.push(last.indexOf(Math.max(...last)));
      }
      expect(r.tokens).toEqual(seq.slice(prompt.length));
    } finally {
      await session.release();
    }
  });

  it('sampling is seeded, top-k 1 is greedy, and the cache does not change what is drawn', async () => {
    const { session, inputs } = await open(cachedDecoder());
    try {
      const sampled = (seed: number, topK = 0, useCache = true) =>
        generate(session, Tensor, inputs, PROMPT, {
          ...GREEDY,
          useCache,
          sampling: { temperature: 1.5, topK, seed },
        }).then((r) => r.tokens);
      const a = await sampled(7);
      // random weights make greedy settle on one token; the draws move, so they test the context
      expect(new Set(a).size).toBeGreaterThan(3);
      expect(await sampled(7)).toEqual(a);
      expect(await sampled(7, 0, false)).toEqual(a);
      expect(await sampled(8)).not.toEqual(a);
      const greedy = (await generate(session, Tensor, inputs, PROMPT, GREEDY)).tokens;
      expect(await sampled(3, 1)).toEqual(greedy);
    } finally {
      await session.release();
    }
  });

  it('topKFilter keeps the k largest, against a sort', () => {
    const row = [0.5, -1, 3, 2, 2.5, -7, 0];
    for (let k = 1; k <= row.length; k++) {
      const kept = [...topKFilter(row, k)].flatMap((v, i) => (v === -Infinity ? [] : [i]));
      const want = row
        .map((v, i) => [v, i])
        .sort((x, y) => y[0] - x[0])
        .slice(0, k)
        .map(([, i]) => i)
        .sort((x, y) => x - y);
      expect(kept).toEqual(want);
    }
    expect([...topKFilter(row, 0)]).toEqual(row);
  });

  it('stops on Stop and on EOS, and goes on past the context by re-reading', async () => {
    const { session, inputs } = await open(cachedDecoder());
    try {
      const controller = new AbortController();
      const stopped = await generate(session, Tensor, inputs, PROMPT, {
        ...GREEDY,
        signal: controller.signal,
        onToken: (t) => {
          if (t.count === 3) controller.abort();
        },
      });
      expect(stopped.stop).toBe('cancelled');
      expect(stopped.tokens).toHaveLength(3);

      const greedy = (await generate(session, Tensor, inputs, PROMPT, GREEDY)).tokens;
      const eos = await generate(session, Tensor, inputs, PROMPT, { ...GREEDY, eosTokenIds: [greedy[1]] });
      expect(eos.stop).toBe('eos');
      expect(eos.tokens).toEqual(greedy.slice(0, greedy.indexOf(greedy[1]) + 1));

      // ctx 16: the cache fills after 12 new tokens, is re-read from the last 8, and generation goes on
      const runs: number[] = [];
      const long = await generate(counting(session, runs), Tensor, inputs, PROMPT, {
        maxNewTokens: 30,
        ctx: 16,
      });
      expect(long.tokens).toHaveLength(30);
      expect(runs.filter((n) => n > 1).slice(1)).toEqual([8, 8]);
      expect(long.tokens.slice(0, 13)).toEqual(greedy.slice(0, 13));
    } finally {
      await session.release();
    }
  });

  it('refuses an empty prompt and bad settings with a typed error', async () => {
    const { session, inputs } = await open(cachedDecoder());
    try {
      const fails = async (prompt: number[], opts: Partial<GenerateOptions>) => {
        const e = await generate(session, Tensor, inputs, prompt, { ...GREEDY, ...opts }).catch((x) => x);
        expect(isModelError(e)).toBe(true);
        return (e as Error).message;
      };
      expect(await fails([], {})).toMatch(/at least one token/);
      expect(await fails(PROMPT, { maxNewTokens: 0 })).toMatch(/Max new tokens/);
      expect(await fails(PROMPT, { sampling: { temperature: 0, topK: 0, seed: 0 } })).toMatch(/Temperature/);
      expect(await fails([MERGED.vocab + 5], {})).toMatch(/could not run on the prompt/);
    } finally {
      await session.release();
    }
  });
});
