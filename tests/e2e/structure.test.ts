/**
 * Structured pruning in the page, end to end in Chromium: stories260K (8 query / 4 KV heads) with
 * 25 % of heads and 25 % of MLP neurons removed before the recipe's int4 step. The page shows the
 * parameter count fall and the heads' importance; the export is smaller, runs in onnxruntime-node
 * with the original's output shape and finite logits, and the CLI given the report's recipe writes
 * the same bytes. Taylor importance, after calibration, is measured in the worker with progress and
 * gives the file the CLI writes from the report's recipe. A link without "structure" (made before it
 * existed) still opens.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ARTIFACTS, dropFiles, exportAndCollect, openStudio, type Studio } from './harness.ts';
import { main } from '../../src/cli/main.ts';
import { STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';
import { idsInput, runBytes } from '../helpers/ort.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { detectStructure, parameterCount } from '../../src/core/structure/index.ts';
import { mlpModel } from '../helpers/models.ts';

const PROBE = [1, 300, 40, 50, 7, 99, 120, 3];

describe('structured pruning in the page', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio();
  });
  afterAll(async () => {
    await studio?.close();
  });

  const text = (id: string) => studio.page.locator(`[data-testid=${id}]`).textContent();
  async function settled() {
    await studio.page.waitForSelector('[data-testid=preview][aria-busy=false] [data-testid=preview-totals]', {
      timeout: 120_000,
    });
  }

  it('removes 25 % of heads and neurons, shows the parameters fall, exports what the CLI writes', async () => {
    const { page } = studio;
    await page.goto(`${studio.url}?demo=0`);
    await page.waitForSelector('[data-testid=dropzone]');
    const source = new Uint8Array(readFileSync(STORIES_MODEL));
    await dropFiles(page, '[data-testid=dropzone]', [{ name: 'stories260K.onnx', bytes: source }]);
    await page.waitForFunction(
      () => document.querySelector('[data-testid=summary] h2')?.textContent === 'stories260K.onnx',
      undefined,
      { timeout: 60_000 },
    );
    await settled();
    // the model maps: its parameters and the heads' heat map (blocks × 8 heads)
    await page.waitForSelector('[data-testid=structure-params]');
    const before = parameterCount(parseModel(bytesSource('m.onnx', source)).graph);
    expect(Number(await page.locator('[data-testid=structure-params]').getAttribute('data-params'))).toBe(
      before,
    );
    expect(await page.locator('[data-testid=structure-error]').count()).toBe(0);
    await page.locator('[data-testid=structure-heatmap] summary').click();

    // heads: 2 × 12.5 %; neurons: 5 × 5 %
    await page.locator('[data-testid=structure-heads]').focus();
    for (let i = 0; i < 2; i++) await page.keyboard.press('ArrowRight');
    await page.locator('[data-testid=structure-neurons]').focus();
    for (let i = 0; i < 5; i++) await page.keyboard.press('ArrowRight');
    await expect
      .poll(() => page.evaluate(() => location.hash), { timeout: 10_000 })
      .toContain(encodeURIComponent('"structure":{"heads":0.25,"neurons":0.25'));
    await page.waitForSelector('[data-testid=structure-params-after]', { timeout: 120_000 });
    await settled();
    const after = Number(
      await page.locator('[data-testid=structure-params-after]').getAttribute('data-params'),
    );
    expect(after).toBeGreaterThan(0);
    expect(after).toBeLessThan(before);
    expect(await text('structure-params')).toMatch(/heads \d+ → \d+, neurons \d+ → \d+/);
    expect(await page.locator('[data-testid=preview] .error').count()).toBe(0);

    // export: the file and its report
    const { dir, onnxPath, report } = await exportAndCollect(page, 'cs-structure-');
    const exported = new Uint8Array(readFileSync(onnxPath));
    expect(report.recipe.structure).toEqual({
      heads: 0.25,
      neurons: 0.25,
      importance: 'magnitude',
      scope: 'layer',
    });
    expect(report.structure.paramsAfter).toBe(after);
    // sizes are measured from the file the person opened, not from the pruned intermediate
    expect(report.inputBytes).toBe(source.byteLength);
    expect(report.outputBytes).toBe(exported.byteLength);

    // onnxruntime-node: the pruned, int4 export runs, logits finite and shaped as the original's
    const original = (await runBytes(source, idsInput(PROBE))).logits;
    const pruned = (await runBytes(exported, idsInput(PROBE))).logits;
    expect(pruned.dims).toEqual(original.dims);
    expect((pruned.data as Float32Array).every(Number.isFinite)).toBe(true);
    // smaller than the same int4 recipe without the structure pass
    const int4Only = join(dir, 'int4.onnx');
    const int4Recipe = join(dir, 'int4.json');
    writeFileSync(int4Recipe, JSON.stringify({ version: 1, steps: report.recipe.steps }));
    expect(await main(['compress', STORIES_MODEL, '--recipe', int4Recipe, '-o', int4Only], () => {})).toBe(0);
    const int4Bytes = readFileSync(int4Only).byteLength;
    expect(exported.byteLength).toBeLessThan(int4Bytes);
    console.log(
      `stories260K, heads 25 % + neurons 25 % (magnitude, per layer) + int4 b32: parameters ${before} → ${after}, ` +
        `file ${source.byteLength} → ${exported.byteLength} bytes (int4 b32 alone: ${int4Bytes})`,
    );

    // the report's recipe reproduces the page's file in the CLI
    const recipeFile = join(dir, 'recipe.json');
    writeFileSync(recipeFile, JSON.stringify(report.recipe));
    const cliOut = join(dir, 'cli.onnx');
    expect(await main(['compress', STORIES_MODEL, '--recipe', recipeFile, '-o', cliOut], () => {})).toBe(0);
    expect(Buffer.from(readFileSync(cliOut)).equals(Buffer.from(exported))).toBe(true);
    rmSync(dir, { recursive: true, force: true });
    await page.screenshot({ path: join(ARTIFACTS, 'structure.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });

  it('taylor importance: measured in the worker after calibration, with progress; the CLI writes the same file; Evaluate shows tokens/s before and after', async () => {
    const { page } = studio;
    // a fresh page: no recipe or structure kept from the test before
    await page.goto(`${studio.url}?demo=0`);
    await page.evaluate(() => localStorage.clear());
    await page.goto(`${studio.url}?demo=0`);
    await page.waitForSelector('[data-testid=dropzone]');
    const source = new Uint8Array(readFileSync(STORIES_MODEL));
    await dropFiles(page, '[data-testid=dropzone]', [{ name: 'stories260K.onnx', bytes: source }]);
    await page.waitForFunction(
      () => document.querySelector('[data-testid=summary] h2')?.textContent === 'stories260K.onnx',
      undefined,
      { timeout: 60_000 },
    );
    await settled();
    await page.waitForSelector('[data-testid=structure-params]');
    const options = () =>
      page
        .locator('[data-testid=structure-importance] option')
        .evaluateAll((os) =>
          os.map((o) => `${o.getAttribute('value')}:${(o as HTMLOptionElement).disabled}`),
        );
    // before calibration only magnitude can be chosen
    expect(await options()).toEqual(['magnitude:false', 'activation:true', 'taylor:true']);
    await page.locator('[data-testid=calib-samples]').fill('6');
    await page.locator('[data-testid=calib-length]').fill('24');
    await page.locator('[data-testid=calibrate]').click();
    await page.waitForSelector('[data-testid=calib-status]', { timeout: 120_000 });
    expect(await options()).toEqual(['magnitude:false', 'activation:false', 'taylor:false']);
    await page.locator('[data-testid=structure-heads]').focus();
    for (let i = 0; i < 2; i++) await page.keyboard.press('ArrowRight');
    // activation: from the calibration's statistics, at once
    await page.locator('[data-testid=structure-importance]').selectOption('activation');
    await page.waitForFunction(
      () =>
        /activation/.test(
          document.querySelector('[data-testid=structure-heatmap] summary')?.textContent ?? '',
        ),
      undefined,
      { timeout: 60_000 },
    );
    await expect
      .poll(() => page.evaluate(() => decodeURIComponent(location.hash)), { timeout: 10_000 })
      .toContain('"importance":"activation"');
    await settled();
    expect(await page.locator('[data-testid=preview] .error').count()).toBe(0);
    await page.locator('[data-testid=structure-importance]').selectOption('taylor');
    // progress of the forward/backward passes, then the heat map of the new scores
    const seen = await page
      .waitForSelector('[data-testid=structure-importance-progress]', { timeout: 10_000 })
      .then(() => true)
      .catch(() => false);
    await page.waitForFunction(
      () =>
        /taylor/.test(document.querySelector('[data-testid=structure-heatmap] summary')?.textContent ?? '') &&
        !document.querySelector('[data-testid=structure-importance-progress]'),
      undefined,
      { timeout: 120_000 },
    );
    // shown from the choice until the worker answers
    expect(seen).toBe(true);
    expect(await page.locator('[data-testid=structure-importance-error]').count()).toBe(0);
    await expect
      .poll(() => page.evaluate(() => decodeURIComponent(location.hash)), { timeout: 10_000 })
      .toContain('"structure":{"heads":0.25,"importance":"taylor","scope":"layer"}');
    await settled();
    expect(await page.locator('[data-testid=preview] .error').count()).toBe(0);
    const { dir, onnxPath, report } = await exportAndCollect(page, 'cs-taylor-');
    const exported = new Uint8Array(readFileSync(onnxPath));
    expect(report.recipe.structure).toMatchObject({ heads: 0.25, importance: 'taylor' });
    expect(report.recipe.calibration).toMatchObject({ source: 'generate', samples: 6, length: 24 });
    const pruned = (await runBytes(exported, idsInput(PROBE))).logits;
    expect((pruned.data as Float32Array).every(Number.isFinite)).toBe(true);
    // the report's recipe: the CLI generates the same sequences and measures the same gradients
    const recipeFile = join(dir, 'recipe.json');
    writeFileSync(recipeFile, JSON.stringify(report.recipe));
    const cliOut = join(dir, 'cli.onnx');
    expect(await main(['compress', STORIES_MODEL, '--recipe', recipeFile, '-o', cliOut], () => {})).toBe(0);
    expect(Buffer.from(readFileSync(cliOut)).equals(Buffer.from(exported))).toBe(true);
    // Evaluate: perplexity and forward-pass tokens/s before and after, by one protocol (never a speed asserted)
    await page.locator('[data-testid=eval-text]').fill(readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8'));
    await page.locator('.quality-controls input').nth(0).fill('256');
    await page.locator('.quality-controls input').nth(1).fill('256');
    await page.locator('[data-testid=evaluate-compressed]').click();
    await expect.poll(() => text('ppl-compressed'), { timeout: 240_000 }).toMatch(/^\d+\.\d{3}/);
    expect(await text('speed-original')).toMatch(/^[\d,]+ tokens\/s$/);
    expect(await text('speed-compressed')).toMatch(/^[\d,]+ tokens\/s$/);
    expect(await text('speed')).toMatch(/^[\d,]+ tokens\/s$/);
    expect(await text('speed-protocol')).toMatch(/256 tokens as one sequence, median of 5 runs/);
    rmSync(dir, { recursive: true, force: true });
    await page.screenshot({ path: join(ARTIFACTS, 'structure-taylor.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });

  it('a model it cannot map shows the typed error, sliders disabled, and previews its steps alone', async () => {
    const { page } = studio;
    const bytes = mlpModel();
    let expected = '';
    try {
      detectStructure(parseModel(bytesSource('mlp.onnx', bytes)));
    } catch (e) {
      expected = (e as Error).message;
    }
    expect(expected).not.toBe('');
    await dropFiles(page, '[data-testid=dropzone]', [{ name: 'mlp.onnx', bytes }]);
    await page.waitForFunction(
      () => document.querySelector('[data-testid=summary] h2')?.textContent === 'mlp.onnx',
      undefined,
      { timeout: 60_000 },
    );
    await expect.poll(() => text('structure-error')).toBe(expected);
    for (const id of ['structure-heads', 'structure-neurons', 'structure-blocks'])
      expect(await page.locator(`[data-testid=${id}]`).isDisabled()).toBe(true);
    // the structure the previous model's recipe carried is not applied here: the int4 step previews
    await settled();
    expect(await page.locator('[data-testid=preview] .error').count()).toBe(0);
    expect(studio.pageErrors).toEqual([]);
  });
});
