/**
 * The model folder both the CLI's `-o DIR/` and the page's Export folder write
 * (src/core/compress/folder.ts): the file name by format, the side files kept or made from
 * config.json, the model card with measured quality and its protocol; and the page's streamed zip
 * (fflate) read back whole.
 */
import { describe, expect, it } from 'vitest';
import { unzipSync } from 'fflate';
import { folderExtras, folderModelName, type ModelCard } from '../../src/core/compress/folder.ts';
import { folderSideFiles } from '../../src/core/compress/folder.ts';
import { streamZip } from '../../src/core/compress/zip.ts';

const utf8 = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

const CARD: ModelCard = {
  source: 'tiny',
  modelFile: 'model_q4.onnx',
  recipe: { version: 1, steps: [{ method: 'int4', options: { blockSize: 32 } }] },
  inputBytes: 4e6,
  outputBytes: 1e6,
  bitsPerWeight: 5.14,
  tensors: 12,
  warnings: [],
  version: '9.8.7',
};

describe('model folders', () => {
  it('names the model by the format the recipe ends with', () => {
    expect(folderModelName([{ method: 'prune' }, { method: 'int4' }])).toBe('model_q4.onnx');
    expect(folderModelName([{ method: 'gptq', options: { bits: 8 } }])).toBe('model_quantized.onnx');
    expect(folderModelName([{ method: 'w8a8' }])).toBe('model_quantized.onnx');
    expect(folderModelName([{ method: 'fp16' }])).toBe('model_fp16.onnx');
    expect(folderModelName([{ method: 'kmeans' }])).toBe('model.onnx');
  });

  it('keeps the side files, makes the two configs transformers.js reads, and writes the card', () => {
    const sources = new Map([
      ['config.json', utf8(JSON.stringify({ n_positions: 128, bos_token_id: 0, eos_token_id: 0 }))],
      ['tokenizer.json', utf8('{"model":{}}')],
    ]);
    const files = folderExtras(sources, {
      ...CARD,
      writer: 'the studio’s page',
      quality: {
        original: 46.33,
        compressed: 47.1,
        kl: 0.0123,
        sameTop: 0.91,
        protocol: 'ctx 128, stride 64',
      },
    });
    expect(files.map((f) => f.path)).toEqual([
      'config.json',
      'tokenizer.json',
      'generation_config.json',
      'tokenizer_config.json',
      'README.md',
    ]);
    expect(JSON.parse(text(files[2].data))).toEqual({ bos_token_id: 0, eos_token_id: 0 });
    expect(JSON.parse(text(files[3].data))).toMatchObject({ model_max_length: 128 });
    const card = text(files[4].data);
    expect(card).toContain('Compression Studio 9.8.7 (the studio’s page)');
    expect(card).toContain('| original | 46.330 |');
    expect(card).toContain('| this folder | 47.100 |');
    expect(card).toContain('KL(original ‖ compressed) per token, mean: 0.0123');
    expect(card).toContain('Protocol: ctx 128, stride 64');
    expect(card).toContain('"blockSize": 32');
    // without a measurement the card says so and how to measure
    expect(text(folderExtras(new Map(), CARD)[0].data)).toContain('Perplexity was not measured');
  });

  it('finds the side files beside onnx/, or beside the model', () => {
    const f = (path: string) => ({ path, file: new File([path], path.split('/').pop()!) });
    const hub = [f('m/onnx/model.onnx'), f('m/config.json'), f('m/onnx/config.json'), f('m/tokenizer.json')];
    const found = folderSideFiles(hub, 'm/onnx/model.onnx');
    expect([...found.keys()]).toEqual(['config.json', 'tokenizer.json']);
    expect(found.get('config.json')).toBe(hub[1]);
    const flat = folderSideFiles([f('d/model.onnx'), f('d/config.json')], 'd/model.onnx');
    expect([...flat.keys()]).toEqual(['config.json']);
  });

  it('the streamed zip holds every file byte for byte', async () => {
    const big = new Uint8Array(3 * (1 << 20) + 17).map((_, i) => (i * 31) & 255);
    const files = [
      { path: 'onnx/model_q4.onnx', data: big },
      { path: 'README.md', data: utf8('# card\n'.repeat(100)) },
      { path: 'empty.json', data: new Uint8Array(0) },
    ];
    const chunks: Uint8Array[] = [];
    await streamZip(files, (c) => chunks.push(c));
    // more than one chunk: the archive came out as it was written, not at the end
    expect(chunks.length).toBeGreaterThan(3);
    const whole = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      whole.set(c, at);
      at += c.length;
    }
    const back = unzipSync(whole);
    expect(Object.keys(back)).toEqual(files.map((f) => f.path));
    // Buffer.equals: a deep toEqual over megabytes takes minutes
    for (const f of files) expect(Buffer.from(back[f.path]).equals(Buffer.from(f.data))).toBe(true);
  });
});
