/**
 * A Hugging Face / transformers.js folder as people clone it from the Hub, chosen with the page's
 * folder picker: `.gitattributes`, a stray `.safetensors`, a second variant with its own `_data`
 * file. The page opens onnx/model.onnx, hands onnxruntime only the external data it references,
 * takes the context from config.json and the tokenizer from the folder, and scores text as the CLI does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ARTIFACTS, openStudio, type Studio } from './harness.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { writeModel } from '../../src/core/onnx/write.ts';
import { mlpModel } from '../helpers/models.ts';
import { runCli } from '../helpers/cli.ts';
import { DEMO_DIR, DEMO_MODEL } from '../helpers/fixtures.ts';

/** The demo model as a Hub clone: weights in onnx/model.onnx_data, plus what a clone also holds. */
function hubClone(): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'cs-hub-')), 'tiny-shakespeare');
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  const written = writeModel(parseModel(bytesSource('model.onnx', readFileSync(DEMO_MODEL))), {
    externalData: { location: 'model.onnx_data' },
  });
  writeFileSync(join(dir, 'onnx', 'model.onnx'), written.model);
  writeFileSync(join(dir, 'onnx', 'model.onnx_data'), Buffer.concat(written.externalData!.chunks));
  // another variant with its own data file: not the model, and never handed to onnxruntime
  const variant = writeModel(parseModel(bytesSource('model_q4.onnx', mlpModel())), {
    externalData: { location: 'model_q4.onnx_data' },
  });
  writeFileSync(join(dir, 'onnx', 'model_q4.onnx'), variant.model);
  writeFileSync(join(dir, 'onnx', 'model_q4.onnx_data'), Buffer.concat(variant.externalData!.chunks));
  copyFileSync(join(DEMO_DIR, 'config.json'), join(dir, 'config.json'));
  copyFileSync(join(DEMO_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  writeFileSync(join(dir, '.gitattributes'), '*.onnx_data filter=lfs diff=lfs merge=lfs -text\n');
  writeFileSync(join(dir, 'model.safetensors'), new Uint8Array(4096).fill(7));
  writeFileSync(join(dir, 'README.md'), '# tiny-shakespeare\n');
  return dir;
}

describe('the studio in Chromium: a Hub-style model folder', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio();
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('opens onnx/model.onnx with only its external data, and scores text equal to the CLI', async () => {
    const { page } = studio;
    const dir = hubClone();
    await page.goto(studio.url + '?eval=0');
    await page.waitForSelector('[data-testid=evaluate]:not([disabled])', { timeout: 60_000 });
    await page.locator('[data-testid=folder-input]').setInputFiles(dir);
    await page.waitForFunction(
      () => {
        const s = (
          window as unknown as { __studio: { getState(): { modelFiles?: { main: { path: string } } } } }
        ).__studio.getState();
        // the clone's model, not the demo's own onnx/model.onnx opened at start
        return s.modelFiles?.main.path === 'tiny-shakespeare/onnx/model.onnx';
      },
      undefined,
      { timeout: 60_000 },
    );
    const opened = await page.evaluate(() => {
      type State = {
        files: { path: string }[];
        modelFiles: { main: { path: string }; external: { location: string }[] };
        ctx: number;
        tokenizerJson?: unknown;
      };
      const s = (window as unknown as { __studio: { getState(): State } }).__studio.getState();
      return {
        files: s.files.map((f) => f.path).sort(),
        main: s.modelFiles.main.path,
        external: s.modelFiles.external.map((e) => e.location),
        ctx: s.ctx,
        tokenizer: !!s.tokenizerJson,
      };
    });
    // every file of the folder arrived; the model, its one data file, config and tokenizer were picked
    expect(opened.files).toEqual(
      expect.arrayContaining(['tiny-shakespeare/.gitattributes', 'tiny-shakespeare/model.safetensors']),
    );
    expect(opened.main).toBe('tiny-shakespeare/onnx/model.onnx');
    expect(opened.external).toEqual(['model.onnx_data']);
    expect(opened.ctx).toBe(128);
    expect(opened.tokenizer).toBe(true);
    expect(await page.locator('[data-testid=summary] h2').textContent()).toBe('model.onnx');

    const text = readFileSync(join(DEMO_DIR, 'heldout.txt'), 'utf8').slice(0, 1500);
    const textFile = join(dir, '..', 'short.txt');
    writeFileSync(textFile, text);
    await page.locator('[data-testid=eval-text]').fill(text);
    await page.locator('.quality-controls input').nth(0).fill('128');
    await page.locator('.quality-controls input').nth(1).fill('64');
    await page.click('[data-testid=evaluate]');
    await page.waitForSelector('[data-testid=perplexity]', { timeout: 60_000 });
    const result = await page.evaluate(() => {
      type State = { evaluation: { result?: { perplexity: number; tokens: number } } };
      return (window as unknown as { __studio: { getState(): State } }).__studio.getState().evaluation
        .result!;
    });
    const cli = await runCli(['ppl', dir, '--text', textFile, '--ctx', '128', '--stride', '64', '--json']);
    expect(cli.code).toBe(0);
    const want = JSON.parse(cli.out) as { perplexity: number; tokens: number };
    expect(result.tokens).toBe(want.tokens);
    expect(Math.abs(result.perplexity / want.perplexity - 1)).toBeLessThan(0.001);
    await page.screenshot({ path: join(ARTIFACTS, 'hub-folder.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });
});
