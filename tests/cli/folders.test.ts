/**
 * Models as people publish them: a Hugging Face / transformers.js folder (config.json, tokenizer
 * files, onnx/model.onnx and its variants, external data, files that are not the model) given to
 * every command, the context read from config.json or the position table, JSON ids files.
 */
import { describe, expect, it } from 'vitest';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseIdsText } from '../../src/core/tokenizer.ts';
import { ModelError } from '../../src/core/errors.ts';
import { positionTableContext } from '../../src/core/eval/context.ts';
import { decodeModelProto } from '../../src/core/onnx/proto.ts';
import { tempDir } from '../helpers/ort.ts';
import { runCli as run, sha256File } from '../helpers/cli.ts';
import { tinyDecoder, VOCAB } from '../helpers/decoders.ts';
import { mlpModel } from '../helpers/models.ts';
import { DEMO_DIR, DEMO_MODEL, STORIES_MODEL } from '../helpers/fixtures.ts';

const DECODER = tinyDecoder({ positionIds: true, attentionMask: true });
const IDS = Array.from({ length: 40 }, (_, i) => (i * 7 + 3) % VOCAB);

/** A Hub-style clone: the model under onnx/, a quantized variant, config, tokenizer and things to ignore. */
function hubFolder(options: { config?: object; variants?: Record<string, Uint8Array> } = {}): string {
  const dir = tempDir('cs-folder-');
  mkdirSync(join(dir, 'onnx'));
  writeFileSync(join(dir, 'onnx', 'model.onnx'), DECODER);
  for (const [name, bytes] of Object.entries(options.variants ?? { 'model_q4.onnx': mlpModel() }))
    writeFileSync(join(dir, 'onnx', name), bytes);
  if (options.config) writeFileSync(join(dir, 'config.json'), JSON.stringify(options.config));
  writeFileSync(join(dir, '.gitattributes'), '*.onnx filter=lfs diff=lfs merge=lfs -text\n');
  writeFileSync(join(dir, 'model.safetensors'), new Uint8Array(64));
  writeFileSync(join(dir, 'ids.txt'), IDS.join(' ') + '\n');
  return dir;
}

async function pplJson(args: string[]) {
  const r = await run(['ppl', ...args, '--json']);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.out) as { perplexity: number; ctx: number; stride: number; tokens: number };
}

describe('a model folder given to the CLI', () => {
  it('inspect reads onnx/model.onnx, and --file another of its models', async () => {
    const dir = hubFolder();
    const r = await run(['inspect', dir]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^model\.onnx: /);
    expect(r.out).toContain('position_ids');
    const q4 = await run(['inspect', dir, '--file', 'onnx/model_q4.onnx']);
    expect(q4.code).toBe(0);
    expect(q4.out).toMatch(/^model_q4\.onnx: /);
    // the name alone is enough when it is unique
    expect((await run(['inspect', dir, '--file', 'model_q4.onnx'])).out).toMatch(/^model_q4\.onnx: /);
  });

  it('decoder_model_merged.onnx when there is no model.onnx; the only .onnx when there is one', async () => {
    const merged = tempDir('cs-folder-');
    mkdirSync(join(merged, 'onnx'));
    writeFileSync(join(merged, 'onnx', 'decoder_model_merged_q4.onnx'), mlpModel());
    writeFileSync(join(merged, 'onnx', 'decoder_model_merged.onnx'), DECODER);
    expect((await run(['inspect', merged])).out).toMatch(/^decoder_model_merged\.onnx: /);
    const single = tempDir('cs-folder-');
    writeFileSync(join(single, 'net.onnx'), DECODER);
    expect((await run(['inspect', single])).out).toMatch(/^net\.onnx: /);
  });

  it('several models and none preferred: an error listing them and naming --file', async () => {
    const dir = tempDir('cs-folder-');
    mkdirSync(join(dir, 'onnx'));
    writeFileSync(join(dir, 'onnx', 'model_fp16.onnx'), DECODER);
    writeFileSync(join(dir, 'onnx', 'model_q4.onnx'), DECODER);
    const r = await run(['inspect', dir]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /holds several models.*--file NAME \(onnx\/model_fp16\.onnx, onnx\/model_q4\.onnx\)/,
    );
    const wrong = await run(['inspect', dir, '--file', 'model.onnx']);
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(
      /--file model\.onnx: no such model in .*its \.onnx files: onnx\/model_fp16\.onnx/,
    );
    const empty = tempDir('cs-folder-');
    writeFileSync(join(empty, 'config.json'), '{}');
    expect((await run(['inspect', empty])).err).toMatch(/is a folder with no \.onnx file in it/);
    // --file with a model file rather than a folder
    const onFile = await run(['inspect', join(dir, 'onnx', 'model_q4.onnx'), '--file', 'x.onnx']);
    expect(onFile.code).toBe(1);
    expect(onFile.err).toMatch(/chooses a model inside a folder/);
  });

  it('ppl on the folder equals ppl on its model file, with the ctx of config.json', async () => {
    const dir = hubFolder({ config: { n_positions: 16 } });
    const ids = join(dir, 'ids.txt');
    const folder = await pplJson([dir, '--ids', ids]);
    expect(folder.ctx).toBe(16);
    expect(folder.stride).toBe(8);
    const file = await pplJson([join(dir, 'onnx', 'model.onnx'), '--ids', ids, '--ctx', '16']);
    expect(folder.perplexity).toBe(file.perplexity);
    expect(folder.tokens).toBe(file.tokens);
    // a longer window is refused naming the limit and where it comes from
    const long = await run(['ppl', dir, '--ids', ids, '--ctx', '32']);
    expect(long.code).toBe(1);
    expect(long.err).toMatch(
      /--ctx 32 is longer than the model's context: it reads at most 16 positions \(config\.json's n_positions\)/,
    );
  });

  it('without config.json the position table bounds ctx, with a clear error instead of a Gather failure', async () => {
    const dir = hubFolder();
    const ids = join(dir, 'ids.txt');
    const r = await run(['ppl', dir, '--ids', ids, '--ctx', '600']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /--ctx 600 is longer than the model's context: it reads at most 512 positions \(the rows of its position-embedding table 'P'\)/,
    );
    expect(r.err).not.toMatch(/onnxruntime/);
    expect((await pplJson([dir, '--ids', ids])).ctx).toBe(512);
    // the table is found in the graph; the token table and a model without one are not taken for it
    expect(positionTableContext(decodeModelProto(DECODER).graph!)?.positions).toBe(512);
    expect(positionTableContext(decodeModelProto(tinyDecoder({})).graph!)).toBeUndefined();
    expect(positionTableContext(decodeModelProto(readFileSync(STORIES_MODEL)).graph!)).toBeUndefined();
  });

  it("ppl --text reads the folder's own tokenizer.json without --tokenizer", async () => {
    const demo = DEMO_DIR;
    const dir = tempDir('cs-folder-');
    mkdirSync(join(dir, 'onnx'));
    copyFileSync(DEMO_MODEL, join(dir, 'onnx', 'model.onnx'));
    copyFileSync(join(demo, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    copyFileSync(join(demo, 'config.json'), join(dir, 'config.json'));
    const text = join(dir, 'short.txt');
    writeFileSync(text, readFileSync(join(demo, 'heldout.txt'), 'utf8').slice(0, 600));
    const own = await pplJson([dir, '--text', text, '--ctx', '64']);
    const given = await pplJson([DEMO_MODEL, '--text', text, '--tokenizer', demo, '--ctx', '64']);
    expect(own.perplexity).toBe(given.perplexity);
    expect(own.tokens).toBeGreaterThan(100);
  });

  it("external data is read by the names the model references; other variants' _data files are ignored", async () => {
    const dir = hubFolder();
    const src = join(dir, 'onnx', 'model.onnx');
    const out = tempDir('cs-folder-out-');
    mkdirSync(join(out, 'onnx'));
    const copy = await run([
      'compress',
      src,
      '--copy',
      '--external-data',
      '-o',
      join(out, 'onnx', 'model.onnx'),
    ]);
    expect(copy.code).toBe(0);
    writeFileSync(join(out, 'onnx', 'model_q4.onnx_data'), new Uint8Array(128));
    writeFileSync(join(out, '.gitattributes'), '');
    writeFileSync(join(out, 'model.safetensors'), new Uint8Array(64));
    const ids = join(dir, 'ids.txt');
    const a = await pplJson([out, '--ids', ids, '--ctx', '16']);
    const b = await pplJson([src, '--ids', ids, '--ctx', '16']);
    expect(a.perplexity).toBe(b.perplexity);
  });

  it('compress takes a folder, and --file', async () => {
    const dir = hubFolder();
    const out = join(tempDir(), 'q.onnx');
    const r = await run(['compress', dir, '--int8', '--embeddings', '-o', out, '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).tensors.map((t: { name: string }) => t.name)).toEqual(
      expect.arrayContaining(['E', 'P']),
    );
    const q = await run(['compress', dir, '--file', 'onnx/model_q4.onnx', '--int8', '-o', out, '--json']);
    expect(q.code).toBe(0);
    // (w2 writes the output: the LM head, opt-in)
    expect(JSON.parse(q.out).tensors.map((t: { name: string }) => t.name)).toEqual(['w1']);
  });
});

describe('compress -o DIR/: a transformers.js folder out', () => {
  it('writes onnx/model_q4.onnx (the bytes -o FILE writes), config, tokenizer files and a model card', async () => {
    const demo = DEMO_DIR;
    const out = join(tempDir('cs-folder-out-'), 'tiny-q4') + '/';
    const r = await run(['compress', demo, '--int4', '-o', out, '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.folder.model).toBe('onnx/model_q4.onnx');
    // the demo folder has all four side files of a Hub GPT-2: copied as they are
    expect(report.folder.files).toEqual([
      'config.json',
      'generation_config.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'README.md',
    ]);
    const file = join(tempDir(), 'q4.onnx');
    expect((await run(['compress', DEMO_MODEL, '--int4', '-o', file])).code).toBe(0);
    expect(sha256File(join(out, 'onnx', 'model_q4.onnx'))).toBe(sha256File(file));
    expect(readFileSync(join(out, 'tokenizer.json'))).toEqual(readFileSync(join(demo, 'tokenizer.json')));
    expect(JSON.parse(readFileSync(join(out, 'generation_config.json'), 'utf8'))).toEqual({
      bos_token_id: 0,
      eos_token_id: 0,
    });
    expect(JSON.parse(readFileSync(join(out, 'tokenizer_config.json'), 'utf8'))).toMatchObject({
      model_max_length: 128,
    });
    const card = readFileSync(join(out, 'README.md'), 'utf8');
    expect(card).toContain('"method": "int4"');
    expect(card).toMatch(/Compression Studio \d+\.\d+\.\d+/);
    expect(card).toContain('ppl THIS_FOLDER --file onnx/model_q4.onnx');
    // the folder is a model folder for the CLI too
    const ids = join(tempDir(), 'ids.txt');
    writeFileSync(ids, '11 1699 1528 59 11 1273 262 780 45 429 778 99\n');
    const q4 = await pplJson([out, '--ids', ids]);
    expect(q4.ctx).toBe(128);
    expect(q4.perplexity).toBe((await pplJson([file, '--ids', ids, '--ctx', '128'])).perplexity);
  });

  it('names the file by format: int8 → model_quantized, fp16 → model_fp16, float → model.onnx', async () => {
    const dir = hubFolder();
    const root = tempDir('cs-folder-out-');
    for (const [flags, name] of [
      [['--int8'], 'model_quantized.onnx'],
      [['--fp16'], 'model_fp16.onnx'],
      [['--prune', '0.5'], 'model.onnx'],
    ] as const) {
      const out = join(root, name) + '/';
      const r = await run(['compress', dir, ...flags, '--embeddings', '--lm-head', '-o', out, '--json']);
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out).folder.model).toBe(`onnx/${name}`);
      expect(readFileSync(join(out, 'onnx', name)).byteLength).toBeGreaterThan(0);
    }
    // a file where the folder should be, or a missing parent: refused before any work
    writeFileSync(join(root, 'taken'), 'x');
    expect((await run(['compress', dir, '--int8', '-o', join(root, 'taken') + '/'])).err).toMatch(
      /is a file, not a folder/,
    );
    expect((await run(['compress', dir, '--int8', '-o', join(root, 'no', 'such') + '/'])).err).toMatch(
      /does not exist/,
    );
  });
});

describe('ids files', () => {
  it('one sequence per line, a JSON array, or a JSON array of arrays read the same ids', () => {
    expect(parseIdsText('1 2 3\n4, 5\n')).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    expect(parseIdsText('[1, 2, 3]')).toEqual([[1, 2, 3]]);
    expect(parseIdsText(' [[1, 2, 3], [4, 5], []]\n')).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
  });

  it('bad JSON ids are typed errors that say where', () => {
    const bad = (text: string, re: RegExp) => {
      try {
        parseIdsText(text);
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(ModelError);
        expect((e as Error).message).toMatch(re);
      }
    };
    bad('[1, 2', /not valid JSON/);
    bad('[[1, 2], [3, -4]]', /sequence 2, item 2 \(-4\) is not a token id/);
    bad('[[1], 2]', /sequence 1, item 1 \(\[1\]\)|sequence 2/);
    bad('[1.5]', /item 1 \(1\.5\) is not a token id/);
  });

  it("ppl --ids reads the demo's heldout_ids.json", async () => {
    const demo = DEMO_DIR;
    const all = JSON.parse(readFileSync(join(demo, 'heldout_ids.json'), 'utf8')) as number[] | number[][];
    const first = (Array.isArray(all[0]) ? (all as number[][]).flat() : (all as number[])).slice(0, 300);
    const dir = tempDir();
    writeFileSync(join(dir, 'part.json'), JSON.stringify([first.slice(0, 150), first.slice(150)]));
    writeFileSync(join(dir, 'part.txt'), `${first.slice(0, 150).join(' ')}\n${first.slice(150).join(' ')}\n`);
    const json = await pplJson([DEMO_MODEL, '--ids', join(dir, 'part.json'), '--ctx', '64']);
    const lines = await pplJson([DEMO_MODEL, '--ids', join(dir, 'part.txt'), '--ctx', '64']);
    expect(json.perplexity).toBe(lines.perplexity);
    expect(json.tokens).toBe(lines.tokens);
    // the whole file reads as the ids it holds
    const parsed = parseIdsText(readFileSync(join(demo, 'heldout_ids.json'), 'utf8'));
    expect(parsed.flat()).toEqual(Array.isArray(all[0]) ? (all as number[][]).flat() : all);
    expect(parsed.flat().length).toBeGreaterThan(10_000);
  });
});
