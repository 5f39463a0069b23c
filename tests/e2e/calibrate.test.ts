/**
 * Calibration in the page, end to end in Chromium: stories260K (no tokenizer) calibrates on sequences
 * it generates itself, in the model worker with onnxruntime-web; GPTQ then joins the recipe menu, its
 * slider previews without running the model again, the compressed model is evaluated and exported,
 * and onnxruntime-node scores the exported file as the page did. Cancel stops a run and leaves the
 * page working on the statistics it had.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ARTIFACTS, ROOT, dropFiles, exportAndCollect, openStudio, type Studio } from './harness.ts';
import { main } from '../../src/cli/main.ts';
import { DEMO_DIR, STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';
import { compressBytes, opTypes } from '../helpers/compress.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { findWeight } from '../../src/core/onnx/graphs.ts';

const IDS = join(STORIES_DIR, 'ids.txt');

async function cliPerplexity(model: string): Promise<{ perplexity: number; tokens: number }> {
  let out = '';
  const args = ['ppl', model, '--ids', IDS, '--ctx', '512', '--stride', '512', '--json'];
  expect(await main(args, (s) => (out += s))).toBe(0);
  return JSON.parse(out);
}

type CalibrationView = {
  running: boolean;
  error?: string;
  done?: { runs: number; sequences: number; tokens: number; activations: unknown[] };
};
type Store = {
  getState(): {
    calibration: CalibrationView;
    compressedEval: { result?: { perplexity: number; tokens: number } };
  };
};

describe('calibration in the page', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio();
  });
  afterAll(async () => {
    await studio?.close();
  });

  const text = (id: string) => studio.page.locator(`[data-testid=${id}]`).textContent();
  const calibration = () =>
    studio.page.evaluate(
      () => (window as unknown as { __studio: Store }).__studio.getState().calibration as CalibrationView,
    );
  async function settled() {
    await studio.page.waitForSelector('[data-testid=preview][aria-busy=false] [data-testid=preview-totals]', {
      timeout: 120_000,
    });
  }
  async function openStories() {
    const { page } = studio;
    await page.goto(`${studio.url}?demo=0`);
    await page.waitForSelector('[data-testid=dropzone]');
    await dropFiles(page, '[data-testid=dropzone]', [
      { name: 'stories260K.onnx', bytes: readFileSync(STORIES_MODEL) },
    ]);
    await page.waitForFunction(
      () => document.querySelector('[data-testid=summary] h2')?.textContent === 'stories260K.onnx',
      undefined,
      { timeout: 60_000 },
    );
    await settled();
  }

  it('calibrates on generated sequences, previews GPTQ live, evaluates and exports it', async () => {
    const { page } = studio;
    await openStories();
    // before calibration the menu has no GPTQ and says why
    expect(await text('calibrate-first')).toMatch(/GPTQ.*calibrate first/);
    const offered = () =>
      page
        .locator('[data-testid=add-step] option')
        .evaluateAll((os) => os.map((o) => o.getAttribute('value')));
    expect(await offered()).not.toContain('gptq');

    // what a run will capture, said before it runs
    await expect.poll(() => text('calib-footprint')).toMatch(/^21 MatMul inputs · statistics [\d.]+ MB$/);
    // a model without tokenizer.json: generated sequences are the default source
    expect(await page.locator('[data-testid=calib-source]').inputValue()).toBe('generate');
    await page.locator('[data-testid=calib-samples]').fill('8');
    await page.locator('[data-testid=calib-length]').fill('32');
    await page.locator('[data-testid=calibrate]').click();
    await page.waitForSelector('[data-testid=calib-status]', { timeout: 120_000 });
    const first = await calibration();
    expect(first.done).toMatchObject({ runs: 1, sequences: 8, tokens: 8 * 32 });
    expect(first.done!.activations.length).toBe(21);
    expect(await text('calib-runs')).toBe('1');
    const runtimeThreads = await page.evaluate(() =>
      crossOriginIsolated ? navigator.hardwareConcurrency : 1,
    );
    console.log(
      `calibration in the page, stories260K, 8 × 32 generated + capture of ${first.done!.activations.length} activations: ` +
        `${Math.round((first.done as unknown as { millis: number }).millis)} ms (onnxruntime-web wasm, ≤ ${Math.min(4, runtimeThreads)} threads)`,
    );
    // the activation charts: one bar per captured activation
    await page.waitForSelector('[data-testid=activation-outlier-chart] .recharts-bar-rectangle');
    expect(await page.locator('[data-testid=activation-range-chart] .recharts-bar').count()).toBe(2);

    // GPTQ in the menu now; the recipe's int4 step becomes GPTQ int4
    expect(await offered()).toContain('gptq');
    expect(await page.locator('[data-testid=calibrate-first]').count()).toBe(0);
    const int4Bits = await text('total-bits');
    await page.locator('[data-testid=step-0-method]').selectOption('gptq');
    await expect.poll(() => text('recipe-label')).toBe('GPTQ int4 b32');
    await settled();
    expect(studio.pageErrors).toEqual([]);
    expect(await page.locator('[data-testid=preview] .error').count()).toBe(0);
    const statsAt32 = await text('overlay-stats');
    expect(statsAt32).toMatch(/^gptq · /);
    // GPTQ stores what int4 stores: same codes and scales per block
    expect(await text('total-bits')).toBe(int4Bits);

    // the block-size slider: the preview recomputes, the model does not run again
    await page.locator('[data-testid=opt-0-blockSize]').focus();
    await page.keyboard.press('ArrowRight');
    await expect.poll(() => text('recipe-label')).toBe('GPTQ int4 b64');
    await settled();
    await expect.poll(() => text('overlay-stats')).not.toBe(statsAt32);
    expect(Number(await text('total-bits'))).toBeLessThan(Number(int4Bits));
    expect((await calibration()).done!.runs).toBe(1);
    expect(await text('calib-runs')).toBe('1');
    console.log(`GPTQ slider move on stories260K: ${await text('preview-status')}`);

    // the share link carries how to calibrate (generated, 8 × 32), not the sequences
    await expect
      .poll(() => decodeURIComponent(page.url()), { timeout: 10_000 })
      .toContain(
        '"calibration":{"source":"generate","samples":8,"length":32,"seed":0,"bos":1,"sequential":false}',
      );

    // evaluate on the fixture's ids (pre-tokenized: the model has no tokenizer)
    await page.locator('[data-testid=eval-text]').fill(readFileSync(IDS, 'utf8'));
    await page.locator('.quality-controls input').nth(0).fill('512');
    await page.locator('.quality-controls input').nth(1).fill('512');
    await page.locator('[data-testid=evaluate-compressed]').click();
    await expect.poll(() => text('ppl-compressed'), { timeout: 240_000 }).toMatch(/^\d+\.\d{3}/);
    const pagePpl = await page.evaluate(
      () => (window as unknown as { __studio: Store }).__studio.getState().compressedEval.result!,
    );
    expect((await calibration()).done!.runs).toBe(1);

    // export: the file onnxruntime-node scores as the page scored its compressed model
    const { dir, onnxPath: exported, report } = await exportAndCollect(page, 'cs-calib-');
    expect(report.recipe.calibration).toEqual({
      source: 'generate',
      samples: 8,
      length: 32,
      seed: 0,
      bos: 1,
      sequential: false,
    });
    expect(report.recipe.steps.map((s: { method: string }) => s.method)).toEqual(['gptq']);
    const bytes = new Uint8Array(readFileSync(exported));
    expect(opTypes(bytes)).toContain('MatMulNBits');
    const node = await cliPerplexity(exported);
    expect(node.tokens).toBe(pagePpl.tokens);
    expect(Math.abs(node.perplexity / pagePpl.perplexity - 1)).toBeLessThan(1e-3);
    // GPTQ, not round-to-nearest: the exported int4 codes differ from plain int4's at the same block size
    const rtn = compressBytes(new Uint8Array(readFileSync(STORIES_MODEL)), [
      { method: 'int4', options: { blockSize: 64 } },
    ]).exported;
    const weightOf = (b: Uint8Array) => {
      const m = parseModel(bytesSource('x.onnx', b));
      const node = m.graph.node.find((n) => n.op_type === 'MatMulNBits')!;
      return findWeight(m, node.input[1]).tensor.raw_data;
    };
    expect(Buffer.from(weightOf(bytes)!).equals(Buffer.from(weightOf(rtn)!))).toBe(false);
    // the report's recipe reproduces the page's file in the CLI (onnxruntime-node generates the same
    // sequences and captures the same statistics)
    const recipeFile = join(dir, 'recipe.json');
    writeFileSync(recipeFile, JSON.stringify(report.recipe));
    const cliOut = join(dir, 'cli.onnx');
    expect(await main(['compress', STORIES_MODEL, '--recipe', recipeFile, '-o', cliOut], () => {})).toBe(0);
    expect(Buffer.from(readFileSync(cliOut)).equals(Buffer.from(bytes))).toBe(true);
    writeFileSync(join(ARTIFACTS, 'calibrate-report.json'), JSON.stringify(report.recipe, null, 2));
    rmSync(dir, { recursive: true, force: true });
    await page.screenshot({ path: join(ARTIFACTS, 'calibrate-gptq.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });

  it('Cancel stops a calibration and leaves the previous statistics working', async () => {
    const { page } = studio;
    const before = (await calibration()).done!;
    // a long run: many long sequences
    await page.locator('[data-testid=calib-samples]').fill('256');
    await page.locator('[data-testid=calib-length]').fill('256');
    await page.locator('[data-testid=calibrate]').click();
    await page.waitForFunction(
      () =>
        /Generating sequences \d+ \/ 256/.test(
          document.querySelector('[data-testid=calibration] [data-testid=progress]')?.textContent ?? '',
        ),
      undefined,
      { timeout: 60_000 },
    );
    await page.locator('[data-testid=calibration]').getByRole('button', { name: 'Cancel' }).click();
    await page.waitForSelector('[data-testid=calib-error]', { timeout: 30_000 });
    expect(await text('calib-error')).toBe('Cancelled. The previous statistics are still in use.');
    const after = await calibration();
    expect(after.running).toBe(false);
    expect(after.done!.runs).toBe(before.runs);
    // the GPTQ preview still works on the statistics it had: move the slider back
    await page.locator('[data-testid=opt-0-blockSize]').focus();
    await page.keyboard.press('ArrowLeft');
    await expect.poll(() => text('recipe-label')).toBe('GPTQ int4 b32');
    await settled();
    expect(await page.locator('[data-testid=preview] .error').count()).toBe(0);
    // the worker is free at once: a short calibration with another seed runs to the end
    await page.locator('[data-testid=calib-samples]').fill('2');
    await page.locator('[data-testid=calib-length]').fill('16');
    await page.locator('[data-testid=calib-seed]').fill('5');
    await page.locator('[data-testid=calibrate]').click();
    await expect
      .poll(async () => (await calibration()).done!.runs, { timeout: 60_000 })
      .toBe(before.runs + 1);
    expect((await calibration()).error).toBeUndefined();
    await settled();
    await page.screenshot({ path: join(ARTIFACTS, 'calibrate-cancelled.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });

  it('a shared link fills the card with its calibration settings; the demo model calibrates from them', async () => {
    const { page } = studio;
    const recipe = {
      version: 1,
      calibration: { source: 'generate', samples: 4, length: 16, seed: 2, sequential: false },
      steps: [{ method: 'gptq', options: { blockSize: 64 } }],
    };
    await page.goto(`${studio.url}?eval=0#recipe=${encodeURIComponent(JSON.stringify(recipe))}`);
    await page.waitForSelector('[data-testid=preview][aria-busy=false]', { timeout: 120_000 });
    expect(await text('recipe-label')).toBe('GPTQ int4 b64');
    // no statistics yet: the preview and the disabled buttons say what to do
    await expect
      .poll(() => page.locator('[data-testid=preview] .error').textContent())
      .toMatch(/run Calibrate/);
    expect(await page.locator('[data-testid=export]').isDisabled()).toBe(true);
    expect(await text('needs-calibration-reason')).toMatch(/run Calibrate first/);
    expect(await page.locator('[data-testid=calib-samples]').inputValue()).toBe('4');
    expect(await page.locator('[data-testid=calib-length]').inputValue()).toBe('16');
    expect(await page.locator('[data-testid=calib-seed]').inputValue()).toBe('2');
    await page.locator('[data-testid=calibrate]').click();
    await page.waitForSelector('[data-testid=calib-status]', { timeout: 120_000 });
    expect((await calibration()).done).toMatchObject({ runs: 1, sequences: 4, tokens: 64 });
    await settled();
    expect(await page.locator('[data-testid=preview] .error').count()).toBe(0);
    expect(await text('overlay-stats')).toMatch(/^gptq · /);
    expect(await page.locator('[data-testid=export]').isDisabled()).toBe(false);
    await page.screenshot({ path: join(ARTIFACTS, 'calibrate-shared-link.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });

  it('calibrates on a text file with the tokenizer, and warns when it overlaps the evaluation text', async () => {
    const { page } = studio;
    // the demo model from the test before, its held-out text in the Quality panel
    await page.locator('[data-testid=calib-source]').selectOption('text');
    expect(await text('calib-disabled-reason')).toBe('Choose a text file first.');
    expect(await page.locator('[data-testid=calibrate]').isDisabled()).toBe(true);
    const heldout = readFileSync(join(DEMO_DIR, 'heldout.txt'), 'utf8');
    await page.locator('[data-testid=calib-file-input]').setInputFiles({
      name: 'heldout-part.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from(heldout.slice(0, 3000)),
    });
    await expect
      .poll(() => text('calib-overlap'), { timeout: 30_000 })
      .toMatch(/^100 % of the calibration data also appears/);
    await page.locator('[data-testid=calib-samples]').fill('4');
    await page.locator('[data-testid=calibrate]').click();
    await expect.poll(async () => (await calibration()).done?.runs, { timeout: 60_000 }).toBe(2);
    expect(await text('calib-status')).toContain('heldout-part.txt');
    // 4 windows of 16 tokens cut from the file's tokens
    expect((await calibration()).done).toMatchObject({ sequences: 4, tokens: 64 });
    // text that is not in the held-out text: no warning
    await page.locator('[data-testid=calib-file-input]').setInputFiles({
      name: 'other.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from(readFileSync(join(ROOT, 'README.md'), 'utf8').slice(0, 3000)),
    });
    // (the worker answers between the tensors of the GPTQ preview the new statistics started)
    await expect.poll(() => page.locator('[data-testid=calib-overlap]').count(), { timeout: 60_000 }).toBe(0);
    await settled();
    await page.screenshot({ path: join(ARTIFACTS, 'calibrate-text.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });
});
