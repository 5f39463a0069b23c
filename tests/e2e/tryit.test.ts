/**
 * "Try it" and "Export folder" in Chromium. A Hub-style clone of the demo folder (with
 * `.gitattributes`, a stray `.safetensors`, a second variant) is opened; Try it continues a prompt
 * with the original and the compressed model side by side (text and tokens/s for both) and Stop ends
 * a long run; Export folder downloads a transformers.js folder as a zip, which the test unzips and
 * runs in onnxruntime-node: the same bytes as the page's ONNX export and as the CLI's `-o DIR/`.
 * A KV-cache decoder without a tokenizer generates from token ids, the ids core generation gives.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import type { Download } from 'playwright-core';
import { ARTIFACTS, ROOT, exportAndCollect, openStudio, type Studio } from './harness.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { writeModel } from '../../src/core/onnx/write.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { generate } from '../../src/core/eval/generate.ts';
import { decoderFeeds } from '../../src/core/eval/decoder.ts';
import { createNodeSession, EXACT_WEIGHT_ONLY, Tensor } from '../../src/runtime/ort-node.ts';
import { mlpModel } from '../helpers/models.ts';
import { cachedDecoder, MERGED } from '../helpers/merged-decoder.ts';
import { runCli } from '../helpers/cli.ts';
import { ort } from '../helpers/ort.ts';

const DEMO = join(ROOT, 'public/models/tiny-shakespeare-gpt2');
/** The demo's model: onnx/model.onnx (with its KV cache) where the folder has the Hub layout. */
const DEMO_MODEL = join(DEMO, 'onnx', 'model.onnx');

/** The demo model as a Hub clone: onnx/model.onnx, a q4 variant with its own data, and stray files. */
function hubClone(): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'cs-tryit-')), 'tiny-shakespeare');
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  copyFileSync(DEMO_MODEL, join(dir, 'onnx', 'model.onnx'));
  const variant = writeModel(parseModel(bytesSource('model_q4.onnx', mlpModel())), {
    externalData: { location: 'model_q4.onnx_data' },
  });
  writeFileSync(join(dir, 'onnx', 'model_q4.onnx'), variant.model);
  writeFileSync(join(dir, 'onnx', 'model_q4.onnx_data'), Buffer.concat(variant.externalData!.chunks));
  copyFileSync(join(DEMO, 'config.json'), join(dir, 'config.json'));
  copyFileSync(join(DEMO, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  writeFileSync(join(dir, '.gitattributes'), '*.onnx_data filter=lfs diff=lfs merge=lfs -text\n');
  writeFileSync(join(dir, 'model.safetensors'), new Uint8Array(4096).fill(7));
  return dir;
}

async function openFolder(studio: Studio, dir: string, main: string) {
  const { page } = studio;
  await page.locator('[data-testid=folder-input]').setInputFiles(dir);
  await page.waitForFunction(
    (main) => {
      const s = (
        window as unknown as { __studio: { getState(): { modelFiles?: { main: { path: string } } } } }
      ).__studio.getState();
      return s.modelFiles?.main.path === main;
    },
    main,
    { timeout: 60_000 },
  );
  await page.waitForSelector('[data-testid=export]:not([disabled])', { timeout: 60_000 });
}

const text = (studio: Studio, id: string) =>
  studio.page.locator(`[data-testid=${id}]`).textContent({ timeout: 5_000 });

describe('the studio in Chromium: Try it and Export folder', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio();
    await studio.page.goto(studio.url + '?demo=0');
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('Try it continues a prompt with both models side by side, and Stop ends a long run', async () => {
    const { page } = studio;
    const dir = hubClone();
    await openFolder(studio, dir, 'tiny-shakespeare/onnx/model.onnx');
    expect(await text(studio, 'recipe-label')).toBe('int4 b32');
    await page.locator('[data-testid=tryit-prompt]').fill('ROMEO:\nI will');
    await page.locator('[data-testid=tryit-max]').fill('24');
    await page.locator('[data-testid=tryit-generate]').click();
    for (const side of [0, 1])
      await expect
        .poll(() => text(studio, `tryit-speed-${side}`), { timeout: 120_000 })
        .toMatch(/^\d+\.\d tokens\/s · \d+ tokens, (reached max new tokens|end of text)/);
    const outputs = await Promise.all([0, 1].map((i) => text(studio, `tryit-output-${i}`)));
    for (const o of outputs) expect(o!.trim().length).toBeGreaterThan(0);
    // the demo has a KV cache: the prompt is read once, then one token a step
    expect(await text(studio, 'tryit-speed-0')).toMatch(/· KV cache$/);
    console.log(`Try it, greedy: ${JSON.stringify(outputs)}`);
    await page.screenshot({ path: join(ARTIFACTS, 'tryit.png'), fullPage: true });

    // sampled, many tokens: Stop ends both before the limit
    await page.locator('[data-testid=tryit-mode]').selectOption('sampled');
    await page.locator('[data-testid=tryit-max]').fill('1000');
    await page.locator('[data-testid=tryit-generate]').click();
    await expect
      .poll(async () => (await text(studio, 'tryit-output-1'))!.length, { timeout: 120_000 })
      .toBeGreaterThan(0);
    await page.locator('[data-testid=tryit-stop]').click();
    for (const side of [0, 1])
      await expect.poll(() => text(studio, `tryit-speed-${side}`), { timeout: 60_000 }).toMatch(/stopped/);
    const count = Number((await text(studio, 'tryit-speed-0'))!.match(/(\d+) tokens,/)![1]);
    expect(count).toBeLessThan(1000);
    expect(await page.locator('[data-testid=tryit-generate]').isEnabled()).toBe(true);
    expect(studio.pageErrors).toEqual([]);
  });

  it('Export folder downloads a transformers.js zip whose model is the page’s and the CLI’s', async () => {
    const { page } = studio;
    const dir = join(tmpdir(), 'cs-tryit-export-' + Date.now());
    mkdirSync(dir);
    // evaluated first: the model card carries the measured perplexities, KL and their protocol
    await page
      .locator('[data-testid=eval-text]')
      .fill(readFileSync(join(DEMO, 'heldout.txt'), 'utf8').slice(0, 1500));
    await page.locator('[data-testid=evaluate-compressed]').click();
    await expect.poll(() => text(studio, 'ppl-compressed'), { timeout: 240_000 }).toMatch(/^\d+\.\d{3}/);
    const pplOriginal = (await text(studio, 'ppl-original'))!;
    const pplCompressed = (await text(studio, 'ppl-compressed'))!.split(' ')[0];
    const downloads: string[] = [];
    const onDownload = async (d: Download) => {
      const path = join(dir, d.suggestedFilename());
      await d.saveAs(path);
      downloads.push(path);
    };
    page.on('download', onDownload);
    try {
      await page.locator('[data-testid=export-folder-original]').check();
      await page.locator('[data-testid=export-folder]').click();
      await expect.poll(() => downloads.length, { timeout: 120_000 }).toBe(1);
    } finally {
      page.off('download', onDownload);
    }
    expect(downloads[0]).toMatch(/tiny-shakespeare-q4\.zip$/);
    expect(await text(studio, 'export-message')).toMatch(/Exported tiny-shakespeare-q4\.zip/);
    const zip = unzipSync(new Uint8Array(readFileSync(downloads[0])));
    expect(Object.keys(zip).sort()).toEqual([
      'README.md',
      'config.json',
      'generation_config.json',
      'onnx/model.onnx',
      'onnx/model_q4.onnx',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    expect(Buffer.from(zip['tokenizer.json']).equals(readFileSync(join(DEMO, 'tokenizer.json')))).toBe(true);
    // the original, asked for, beside the compressed file
    expect(Buffer.from(zip['onnx/model.onnx']).equals(readFileSync(DEMO_MODEL))).toBe(true);
    const card = new TextDecoder().decode(zip['README.md']);
    expect(card).toContain('"method": "int4"');
    expect(card).toContain(`| original | ${pplOriginal} |`);
    expect(card).toContain(`| this folder | ${pplCompressed} |`);
    expect(card).toMatch(/KL\(original ‖ compressed\) per token, mean: \d\.\d{4}/);
    expect(card).toMatch(
      /Protocol: text: pasted; text sha256 [0-9a-f]{12}, \d+ tokens scored .*ctx 128, stride 64/,
    );
    expect(card).toMatch(/Compression Studio \d+\.\d+\.\d+ \(the studio’s page\)/);
    const model = zip['onnx/model_q4.onnx'];
    expect(
      parseModel(bytesSource('m.onnx', model)).graph.node!.some((n) => n.op_type === 'MatMulNBits'),
    ).toBe(true);

    // the page's single-file export of the same recipe: the same bytes
    const single = await exportAndCollect(page, 'cs-tryit-single-');
    expect(Buffer.from(model).equals(readFileSync(single.onnxPath))).toBe(true);
    rmSync(single.dir, { recursive: true, force: true });

    // where the browser has showDirectoryPicker (not under automation), the same files go into the
    // folder picked: here the origin's private file system stands in for the folder a person picks
    const written = await page.evaluate(async () => {
      const nav = navigator as Navigator & { webdriver: boolean };
      const w = window as unknown as { showDirectoryPicker?: () => Promise<FileSystemDirectoryHandle> };
      Object.defineProperty(nav, 'webdriver', { get: () => false, configurable: true });
      w.showDirectoryPicker = () => navigator.storage.getDirectory();
      try {
        (document.querySelector('[data-testid=export-folder]') as HTMLButtonElement).click();
        const root = await navigator.storage.getDirectory();
        const files: Record<string, number[]> = {};
        for (let i = 0; i < 600; i++) {
          await new Promise((r) => setTimeout(r, 200));
          if (
            /Wrote the folder/.test(document.querySelector('[data-testid=export-message]')?.textContent ?? '')
          )
            break;
        }
        const read = async (dir: FileSystemDirectoryHandle, prefix: string) => {
          for await (const [name, handle] of (
            dir as unknown as { entries(): AsyncIterable<[string, FileSystemHandle]> }
          ).entries()) {
            if (handle.kind === 'directory')
              await read(handle as FileSystemDirectoryHandle, `${prefix}${name}/`);
            else {
              const bytes = new Uint8Array(
                await (await (handle as FileSystemFileHandle).getFile()).arrayBuffer(),
              );
              // a digest for the model, the bytes for the small files
              files[`${prefix}${name}`] = bytes.length > 1e6 ? [bytes.length] : [...bytes];
            }
          }
        };
        await read(await root.getDirectoryHandle('tiny-shakespeare-q4'), '');
        return files;
      } finally {
        delete (nav as unknown as Record<string, unknown>).webdriver;
        delete w.showDirectoryPicker;
      }
    });
    expect(await text(studio, 'export-message')).toMatch(/Wrote the folder tiny-shakespeare-q4\//);
    expect(Object.keys(written).sort()).toEqual(Object.keys(zip).sort());
    expect(written['onnx/model_q4.onnx']).toEqual([model.length]);
    expect(Buffer.from(written['config.json']).equals(Buffer.from(zip['config.json']))).toBe(true);

    // the CLI's folder for the same recipe, and onnxruntime-node runs the zip's model alike
    const out = join(dir, 'cli') + '/';
    const cli = await runCli(['compress', DEMO, '--int4', '--block', '32', '-o', out, '--json']);
    expect(cli.code).toBe(0);
    const cliModel = readFileSync(join(out, 'onnx', 'model_q4.onnx'));
    const ids = [11, 1699, 1528, 59, 11];
    const run = async (bytes: Uint8Array) => {
      const session = await ort.InferenceSession.create(bytes, { extra: EXACT_WEIGHT_ONLY });
      const inputs = summarizeInputs(parseModel(bytesSource('m.onnx', bytes)).graph);
      const r = await session.run(decoderFeeds(ort.Tensor, inputs, ids) as Record<string, ort.Tensor>);
      await session.release();
      return r.logits.data as Float32Array;
    };
    const [mine, theirs] = await Promise.all([run(model), run(new Uint8Array(cliModel))]);
    expect(mine.length).toBe(theirs.length);
    let maxDiff = 0;
    for (let i = 0; i < mine.length; i++) maxDiff = Math.max(maxDiff, Math.abs(mine[i] - theirs[i]));
    expect(maxDiff).toBeLessThan(1e-4);
    rmSync(dir, { recursive: true, force: true });
    expect(studio.pageErrors).toEqual([]);
  }, 480_000);

  it('a KV-cache decoder without a tokenizer generates from token ids, as core generation does', async () => {
    const { page } = studio;
    const dir = join(mkdtempSync(join(tmpdir(), 'cs-tryit-kv-')), 'tiny-kv');
    mkdirSync(join(dir, 'onnx'), { recursive: true });
    const bytes = cachedDecoder();
    writeFileSync(join(dir, 'onnx', 'model.onnx'), bytes);
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({ model_type: 'gpt2', vocab_size: MERGED.vocab, n_positions: 64, eos_token_id: 1000 }),
    );
    await openFolder(studio, dir, 'tiny-kv/onnx/model.onnx');
    await expect.poll(() => page.locator('[data-testid=tryit-ids-note]').count()).toBe(1);
    await page.locator('[data-testid=tryit-mode]').selectOption('greedy');
    await page.locator('[data-testid=tryit-prompt]').fill('3 17 5 29');
    await page.locator('[data-testid=tryit-max]').fill('12');
    await page.locator('[data-testid=tryit-generate]').click();
    for (const side of [0, 1])
      await expect
        .poll(() => text(studio, `tryit-speed-${side}`), { timeout: 120_000 })
        .toMatch(/12 tokens, reached max new tokens · KV cache/);
    const session = await createNodeSession(bytes);
    const want = await generate(
      session,
      Tensor,
      summarizeInputs(parseModel(bytesSource('m.onnx', bytes)).graph),
      [3, 17, 5, 29],
      { maxNewTokens: 12, ctx: 64 },
    );
    await session.release();
    expect((await text(studio, 'tryit-output-0'))!.trim()).toBe(want.tokens.join(' '));
    expect((await text(studio, 'tryit-output-1'))!.trim()).toMatch(/^\d+( \d+){11}$/);
    await page.screenshot({ path: join(ARTIFACTS, 'tryit-ids.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  }, 240_000);
});
