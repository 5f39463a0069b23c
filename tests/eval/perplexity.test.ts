import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { evaluatePerplexity, slidingWindows } from '../../src/core/eval/perplexity.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { ModelError } from '../../src/core/errors.ts';
import { tinyDecoder, VOCAB, type DecoderSignature } from '../helpers/decoders.ts';
import { ort } from '../helpers/ort.ts';
import { DEMO_DIR, DEMO_MODEL, STORIES_DIR } from '../helpers/fixtures.ts';

const STORIES = STORIES_DIR;

/**
 * The independent reference: Hugging Face's strided loop written out plainly, feeding each input by
 * hand and computing log-softmax naively.
 */
async function referencePerplexity(model: Uint8Array, ids: number[], ctx: number, stride: number) {
  const session = await ort.InferenceSession.create(model);
  const names = session.inputNames;
  let nll = 0;
  let count = 0;
  let prevEnd = 0;
  for (let begin = 0; begin < ids.length; begin += stride) {
    const end = Math.min(begin + ctx, ids.length);
    const trgLen = end - prevEnd;
    const win = ids.slice(begin, end);
    const n = win.length;
    const i64 = (xs: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), [1, xs.length]);
    const feeds: Record<string, ort.Tensor> = { input_ids: i64(win) };
    if (names.includes('attention_mask')) feeds.attention_mask = i64(win.map(() => 1));
    if (names.includes('position_ids')) feeds.position_ids = i64(win.map((_, i) => i));
    for (const kind of ['key', 'value'])
      if (names.includes(`past_key_values.0.${kind}`))
        feeds[`past_key_values.0.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, 2, 0, 4]);
    if (names.includes('use_cache_branch')) feeds.use_cache_branch = new ort.Tensor('bool', [false], [1]);
    const logits = (await session.run(feeds)).logits;
    const V = logits.dims[2];
    const data = logits.data as Float32Array;
    for (let t = Math.max(n - trgLen, 1); t < n; t++) {
      const row = Array.from(data.subarray((t - 1) * V, t * V));
      const logZ = Math.log(row.reduce((s, x) => s + Math.exp(x), 0));
      nll += logZ - row[win[t]];
      count++;
    }
    prevEnd = end;
    if (end === ids.length) break;
  }
  await session.release();
  return { perplexity: Math.exp(nll / count), tokens: count };
}

async function studioPerplexity(model: Uint8Array, sequences: number[][], ctx: number, stride: number) {
  const session = await ort.InferenceSession.create(model);
  const inputs = summarizeInputs(parseModel(bytesSource('m.onnx', model)).graph);
  try {
    return await evaluatePerplexity(session, ort.Tensor, inputs, sequences, { ctx, stride });
  } finally {
    await session.release();
  }
}

const ids = Array.from({ length: 70 }, (_, i) => (i * 7 + (i >> 2)) % VOCAB);

describe('perplexity evaluator against an independent loop (onnxruntime-node)', () => {
  const signatures: [string, DecoderSignature][] = [
    ['input_ids only', {}],
    ['with attention_mask', { attentionMask: true }],
    ['with position_ids', { attentionMask: true, positionIds: true }],
    [
      'HF with-past export (past_key_values fed empty)',
      { attentionMask: true, positionIds: true, past: true },
    ],
    [
      'HF merged export (use_cache_branch false)',
      { attentionMask: true, positionIds: true, past: true, useCacheBranch: true },
    ],
  ];
  for (const [label, sig] of signatures) {
    it(label, async () => {
      const model = tinyDecoder(sig);
      for (const [ctx, stride] of [
        [16, 8],
        [32, 32],
        [20, 7],
      ]) {
        const ref = await referencePerplexity(model, ids, ctx, stride);
        const got = await studioPerplexity(model, [ids], ctx, stride);
        // stride == ctx (disjoint windows) cannot score a window's first token: HF's loop skips it too
        if (stride < ctx) expect(got.tokens).toBe(ids.length - 1);
        expect(got.tokens).toBe(ref.tokens);
        expect(Math.abs(got.perplexity / ref.perplexity - 1)).toBeLessThan(1e-9);
      }
    });
  }

  it('stories260K (a real pretrained Llama) reproduces its reference perplexity 3.5482', async () => {
    const model = new Uint8Array(readFileSync(join(STORIES, 'model.onnx')));
    const sequences = parseIdsText(readFileSync(join(STORIES, 'ids.txt'), 'utf8'));
    const got = await studioPerplexity(model, sequences, 512, 512);
    expect(got.tokens).toBe(1804);
    expect(got.perplexity).toBeCloseTo(3.5482, 3);
    // and the same figure from the independent loop on the first story
    const ref = await referencePerplexity(model, sequences[0], 512, 512);
    const one = await studioPerplexity(model, [sequences[0]], 512, 512);
    expect(Math.abs(one.perplexity / ref.perplexity - 1)).toBeLessThan(1e-9);
  });

  it('windows batched several to a run (the demo model) give the one-at-a-time perplexity', async () => {
    const dir = DEMO_DIR;
    const model = new Uint8Array(readFileSync(DEMO_MODEL));
    const all = JSON.parse(readFileSync(join(dir, 'heldout_ids.json'), 'utf8')) as
      number[] | { ids: number[] };
    const heldout = (Array.isArray(all) ? all : all.ids).slice(0, 2000);
    const session = await ort.InferenceSession.create(model);
    const inputs = summarizeInputs(parseModel(bytesSource('m.onnx', model)).graph);
    let runs = 0;
    const counting = new Proxy(session, {
      get(target, prop, receiver) {
        if (prop === 'run') return (...a: Parameters<typeof session.run>) => (runs++, target.run(...a));
        return Reflect.get(target, prop, receiver);
      },
    });
    try {
      const one = await evaluatePerplexity(session, ort.Tensor, inputs, [heldout], {
        ctx: 128,
        stride: 64,
        batch: 1,
      });
      const batched = await evaluatePerplexity(counting, ort.Tensor, inputs, [heldout], {
        ctx: 128,
        stride: 64,
      });
      expect(batched.tokens).toBe(one.tokens);
      expect(batched.windows).toBe(one.windows);
      // fewer runs than windows: 1 alone (it sizes the batch), then 8 to a run, the short last one apart
      expect(runs).toBeLessThan(one.windows / 4);
      expect(Math.abs(batched.perplexity / one.perplexity - 1)).toBeLessThan(1e-6);
    } finally {
      await session.release();
    }
  });

  it('cancelling stops the work: no window runs after the abort', async () => {
    const model = tinyDecoder({ attentionMask: true });
    const session = await ort.InferenceSession.create(model);
    let runs = 0;
    const counting = new Proxy(session, {
      get(target, prop, receiver) {
        if (prop === 'run') return (...a: Parameters<typeof session.run>) => (runs++, target.run(...a));
        return Reflect.get(target, prop, receiver);
      },
    });
    const controller = new AbortController();
    const inputs = summarizeInputs(parseModel(bytesSource('m.onnx', model)).graph);
    const total = slidingWindows([ids.length], 8, 4).length;
    const promise = evaluatePerplexity(counting, ort.Tensor, inputs, [ids], {
      ctx: 8,
      stride: 4,
      signal: controller.signal,
      batch: 1, // one window per run, so runs count windows
      onProgress: (p) => p.windowsDone === 3 && controller.abort(),
    });
    await expect(promise).rejects.toMatchObject({ code: 'cancelled' });
    expect(runs).toBe(3);
    expect(total).toBeGreaterThan(10);
  });

  it('windows with stride < ctx score every token after the first exactly once', () => {
    for (const [len, ctx, stride] of [
      [100, 16, 8],
      [5, 16, 8],
      [17, 16, 5],
    ]) {
      const scored = new Array(len).fill(0);
      for (const w of slidingWindows([len], ctx, stride)) {
        expect(w.end - w.begin).toBeLessThanOrEqual(ctx);
        for (let t = w.firstTarget; t < w.end - w.begin; t++) scored[w.begin + t]++;
      }
      expect(scored).toEqual([0, ...new Array(len - 1).fill(1)]);
    }
    // disjoint windows: each window's first token has no context inside the window and goes unscored
    const disjoint = slidingWindows([48], 16, 16);
    expect(disjoint.map((w) => [w.begin, w.firstTarget])).toEqual([
      [0, 1],
      [16, 1],
      [32, 1],
    ]);
    expect(() => slidingWindows([10], 8, 9)).toThrow(ModelError);
  });

  it('an input a language model does not have is a clear error', async () => {
    const { makeModelBytes, makeNode, valueInfo } = await import('../../src/core/onnx/build.ts');
    const model = makeModelBytes({
      nodes: [makeNode('Identity', ['pixel_values'], ['logits'])],
      inputs: [valueInfo('pixel_values', 1, [1, 3])],
      outputs: [valueInfo('logits', 1, [1, 3])],
    });
    await expect(studioPerplexity(model, [[1, 2, 3]], 8, 4)).rejects.toThrow(/input 'pixel_values'/);
  });
});

describe.runIf(existsSync(join(DEMO_DIR, 'training.json')))('the demo model', () => {
  const dir = DEMO_DIR;
  it('CLI perplexity on the held-out text matches the training script within 0.5%', async () => {
    const training = JSON.parse(readFileSync(join(dir, 'training.json'), 'utf8'));
    const { main } = await import('../../src/cli/main.ts');
    let out = '';
    const code = await main(
      [
        'ppl',
        DEMO_MODEL,
        '--text',
        join(dir, 'heldout.txt'),
        '--tokenizer',
        dir,
        '--ctx',
        String(training.protocol.ctx),
        '--stride',
        String(training.protocol.stride),
        '--json',
      ],
      (s) => (out += s),
    );
    expect(code).toBe(0);
    const r = JSON.parse(out);
    expect(r.tokens).toBe(training.protocol.tokens_scored);
    expect(Math.abs(r.perplexity / training.heldout_perplexity - 1)).toBeLessThan(0.005);
  });

  it('the JS tokenizer reproduces the training tokenizer ids exactly', async () => {
    const { loadTokenizer } = await import('../../src/core/tokenizer.ts');
    const tok = loadTokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')));
    const expected = JSON.parse(readFileSync(join(dir, 'heldout_ids.json'), 'utf8'));
    expect(tok.encode(readFileSync(join(dir, 'heldout.txt'), 'utf8'))).toEqual(expected);
  });

  it('train.txt is the training split: the token count the training script reports, cut at a line start before the held-out text', async () => {
    const { loadTokenizer } = await import('../../src/core/tokenizer.ts');
    const tok = loadTokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')));
    const train = readFileSync(join(dir, 'train.txt'), 'utf8');
    const heldout = readFileSync(join(dir, 'heldout.txt'), 'utf8');
    const training = JSON.parse(readFileSync(join(dir, 'training.json'), 'utf8'));
    expect(tok.encode(train).length).toBe(training.train_tokens);
    expect(train.endsWith('\n')).toBe(true);
    // the split is 90 % / 10 % of the characters (the cut moves to the next line start)
    const share = train.length / (train.length + heldout.length);
    expect(share).toBeGreaterThanOrEqual(0.9);
    expect(share).toBeLessThan(0.9001);
    // no held-out line long enough to be telling appears in the training text
    const lines = heldout.split('\n').filter((l) => l.length > 45);
    expect(lines.length).toBeGreaterThan(100);
    expect(lines.filter((l) => train.includes(l))).toEqual([]);
  });
});
