/**
 * transformers.js (@huggingface/transformers, offline: env.allowRemoteModels = false) loads the demo
 * folder as shipped (its tokenizer and its KV-cache GPT-2) and the folder
 * `compress -o DIR/` writes — onnx/model_q4.onnx, model_quantized.onnx, model_fp16.onnx beside
 * config.json and generation_config.json — and generates 20 tokens with its KV cache; the q4 file's
 * greedy tokens are those of the studio's preview weights run by onnxruntime-node with the same cache.
 */
import { describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';
import { ort, tempDir } from '../helpers/ort.ts';
import { runCli } from '../helpers/cli.ts';
import { MERGED, cachedDecoder } from '../helpers/merged-decoder.ts';
import { DEMO_DIR, DEMO_MODEL } from '../helpers/fixtures.ts';
import { greedyWithoutCache } from '../helpers/demo.ts';
import { loadTokenizer } from '../../src/core/tokenizer.ts';

const PROMPT = [3, 17, 5, 29];
const NEW_TOKENS = 20;
const CONFIG = {
  model_type: 'gpt2',
  architectures: ['GPT2LMHeadModel'],
  vocab_size: MERGED.vocab,
  n_positions: 64,
  n_embd: MERGED.dim,
  n_layer: 1,
  n_head: MERGED.heads,
  bos_token_id: 0,
  // no token ends the text: generation runs its 20 steps
  eos_token_id: 1000,
};

/** Greedy decoding with the KV cache, as transformers.js runs the model: the prompt, then one token a step. */
async function greedyWithCache(bytes: Uint8Array): Promise<number[]> {
  const session = await ort.InferenceSession.create(bytes, { extra: EXACT_WEIGHT_ONLY });
  const empty = () => new ort.Tensor('float32', new Float32Array(0), [1, MERGED.heads, 0, MERGED.headDim]);
  let past: { key: ort.Tensor; value: ort.Tensor } = { key: empty(), value: empty() };
  const tokens = [...PROMPT];
  let feed = PROMPT;
  try {
    for (let step = 0; step < NEW_TOKENS; step++) {
      const out = await session.run({
        input_ids: new ort.Tensor('int64', BigInt64Array.from(feed.map(BigInt)), [1, feed.length]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(tokens.length).fill(1n), [
          1,
          tokens.length,
        ]),
        'past_key_values.0.key': past.key,
        'past_key_values.0.value': past.value,
      });
      const logits = out.logits.data as Float32Array;
      const last = logits.subarray(logits.length - MERGED.vocab);
      let best = 0;
      for (let i = 1; i < last.length; i++) if (last[i] > last[best]) best = i;
      tokens.push(best);
      feed = [best];
      past = { key: out['present.0.key'], value: out['present.0.value'] };
    }
  } finally {
    await session.release();
  }
  return tokens;
}

describe('transformers.js loads the folders compress -o DIR/ writes', () => {
  it('generates 20 tokens from the q4, q8 and fp16 files; q4 greedily as the preview does', async () => {
    const root = tempDir('cs-tfjs-');
    mkdirSync(join(root, 'source', 'onnx'), { recursive: true });
    writeFileSync(join(root, 'source', 'onnx', 'model.onnx'), cachedDecoder());
    writeFileSync(join(root, 'source', 'config.json'), JSON.stringify(CONFIG));
    const out = join(root, 'tiny-gpt2') + '/';
    for (const flag of ['--int4', '--int8', '--fp16']) {
      const r = await runCli(['compress', join(root, 'source'), flag, '--lm-head', '-o', out, '--json']);
      expect(r.err).toBe('');
      expect(JSON.parse(r.out).warnings).toEqual([]);
    }

    const { AutoModelForCausalLM, Tensor, env } = await import('@huggingface/transformers');
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = root;
    const generated: Record<string, number[]> = {};
    for (const dtype of ['q4', 'q8', 'fp16'] as const) {
      const model = await AutoModelForCausalLM.from_pretrained('tiny-gpt2', { dtype });
      try {
        const ids = new Tensor('int64', BigInt64Array.from(PROMPT.map(BigInt)), [1, PROMPT.length]);
        const output = (await model.generate({
          inputs: ids,
          max_new_tokens: NEW_TOKENS,
          do_sample: false,
        })) as { tolist(): bigint[][] };
        generated[dtype] = output.tolist()[0].map(Number);
      } finally {
        await model.dispose();
      }
      expect(generated[dtype], dtype).toHaveLength(PROMPT.length + NEW_TOKENS);
      expect(generated[dtype].slice(0, PROMPT.length), dtype).toEqual(PROMPT);
    }

    // the studio's preview of the same int4 recipe, as dense float32 weights, decoded greedily
    const model = parseModel(bytesSource('model.onnx', cachedDecoder()));
    const result = compressModel(
      model,
      resolveRecipe({ steps: [{ method: 'int4', select: { lmHead: true } }] }),
    );
    const preview = exportCompressed(model, {
      ...result,
      outcomes: result.outcomes.map((o) => ({ ...o, encoder: null })),
    }).model;
    expect(generated.q4).toEqual(await greedyWithCache(preview));
    // int4 moved this model's greedy path, so the match above says something; int8 and fp16 keep it
    const original = await greedyWithCache(cachedDecoder());
    expect(generated.q4).not.toEqual(original);
    expect(generated.q8).toEqual(original);
    expect(generated.fp16).toEqual(original);
  });
});

/** transformers.js with the studio's demo folder (or a folder the CLI wrote) as its only model source. */
async function transformersGreedy(
  root: string,
  id: string,
  dtype: string,
  prompt: number[],
): Promise<number[]> {
  const { AutoModelForCausalLM, Tensor, env } = await import('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = root;
  const model = await AutoModelForCausalLM.from_pretrained(id, {
    dtype: dtype as 'fp32',
  });
  try {
    const ids = new Tensor('int64', BigInt64Array.from(prompt.map(BigInt)), [1, prompt.length]);
    const output = (await model.generate({
      inputs: ids,
      max_new_tokens: NEW_TOKENS,
      do_sample: false,
    })) as { tolist(): bigint[][] };
    return output.tolist()[0].map(Number);
  } finally {
    await model.dispose();
  }
}

describe('transformers.js loads the demo folder as shipped', () => {
  const demoPrompt = () =>
    loadTokenizer(JSON.parse(readFileSync(join(DEMO_DIR, 'tokenizer.json'), 'utf8'))).encode(
      'ROMEO:\nWhat light is this',
    );

  it("tokenizes as the studio does and generates 20 tokens with its KV cache: the studio's greedy decode", async () => {
    const { AutoTokenizer, env } = await import('@huggingface/transformers');
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = dirname(DEMO_DIR);
    const text = readFileSync(join(DEMO_DIR, 'heldout.txt'), 'utf8').slice(0, 2000);
    const tokenizer = await AutoTokenizer.from_pretrained(basename(DEMO_DIR));
    const studio = loadTokenizer(JSON.parse(readFileSync(join(DEMO_DIR, 'tokenizer.json'), 'utf8')));
    expect(tokenizer.encode(text, { add_special_tokens: false })).toEqual(studio.encode(text));

    const prompt = demoPrompt();
    const generated = await transformersGreedy(dirname(DEMO_DIR), basename(DEMO_DIR), 'fp32', prompt);
    expect(generated).toHaveLength(prompt.length + NEW_TOKENS);
    // every step recomputed from scratch with an empty cache, as perplexity runs the model
    expect(generated).toEqual(await greedyWithoutCache(readFileSync(DEMO_MODEL), prompt, NEW_TOKENS));
  });

  it('the int4, int8 and fp16 folders compress -o DIR/ writes of it generate 20 tokens each', async () => {
    const root = tempDir('cs-tfjs-demo-');
    const out = join(root, 'demo-compressed') + '/';
    for (const flag of ['--int4', '--int8', '--fp16']) {
      const r = await runCli(['compress', DEMO_DIR, flag, '-o', out, '--json']);
      expect(r.err).toBe('');
      expect(JSON.parse(r.out).warnings).toEqual([]);
    }
    const prompt = demoPrompt();
    const files = { q4: 'model_q4.onnx', q8: 'model_quantized.onnx', fp16: 'model_fp16.onnx' };
    for (const [dtype, file] of Object.entries(files)) {
      const generated = await transformersGreedy(root, 'demo-compressed', dtype, prompt);
      expect(generated, dtype).toHaveLength(prompt.length + NEW_TOKENS);
      expect(generated.slice(0, prompt.length), dtype).toEqual(prompt);
      // with the cache as without it: the compressed file's present.* outputs are right too
      if (dtype !== 'fp16')
        expect(generated, dtype).toEqual(
          await greedyWithoutCache(readFileSync(join(out, 'onnx', file)), prompt, NEW_TOKENS),
        );
    }
  });
});
