/**
 * The page after bad input, in Chromium: a file that fails to open leaves the previous model fully
 * working (preview, export, evaluation), a model opened while the previous one's perplexity is
 * preparing cancels it without a message, and the rough edges a newcomer hit with stories260K.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Download, Page } from 'playwright-core';
import { ARTIFACTS, dropFiles, openStudio, type Studio } from './harness.ts';
import { DEMO_MODEL, STORIES_DIR } from '../helpers/fixtures.ts';

const DEMO_BYTES = readFileSync(DEMO_MODEL);
const SHORT_TEXT = 'To be, or not to be, that is the question: whether tis nobler in the mind to suffer.';
const STORIES_MODEL = readFileSync(join(STORIES_DIR, 'model.onnx'));
// one short sequence: a few windows of work at most
const STORIES_IDS = readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8').split('\n')[0].split(' ').slice(0, 64);

const text = (page: Page, id: string) => page.locator(`[data-testid=${id}]`).textContent();

/** A fresh page load (a goto that changes only the hash would not reload). */
async function load(page: Page, url: string) {
  await page.goto('about:blank');
  await page.goto(url);
}

async function settled(page: Page) {
  await page.waitForSelector('[data-testid=preview][aria-busy=false] [data-testid=preview-totals]', {
    timeout: 60_000,
  });
}

/** Every text that ever appeared in an alert or a progress bar, so a message shown for a moment is caught. */
async function recordMessages(page: Page) {
  await page.evaluate(() => {
    const w = window as unknown as { seenMessages: string[] };
    w.seenMessages = [];
    new MutationObserver(() => {
      for (const el of document.querySelectorAll('[role=alert], [data-testid=progress]'))
        if (el.textContent) w.seenMessages.push(el.textContent);
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
}
const seenMessages = (page: Page) =>
  page.evaluate(() => (window as unknown as { seenMessages: string[] }).seenMessages);

describe('bad files leave the demo model working', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio({ production: true });
    await studio.page.goto(`${studio.url}?eval=0`);
    await settled(studio.page);
  });
  afterAll(async () => {
    await studio?.close();
  });

  const badFiles = [
    { label: 'an empty file', name: 'empty.onnx', bytes: new Uint8Array(0), message: /empty/i },
    {
      label: 'a PNG renamed .onnx',
      name: 'cat.onnx',
      bytes: Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48]),
      message: /cat\.onnx is not an ONNX model: it looks like a PNG image/,
    },
    {
      label: 'a truncated model (the first half of the demo)',
      name: 'half.onnx',
      bytes: DEMO_BYTES.subarray(0, DEMO_BYTES.byteLength >> 1),
      message: /half\.onnx/,
    },
  ];

  for (const [n, bad] of badFiles.entries()) {
    it(`after ${bad.label}: the error, then preview, export and evaluation on the demo`, async () => {
      const { page } = studio;
      await dropFiles(page, '[data-testid=dropzone]', [{ name: bad.name, bytes: bad.bytes }]);
      await page.waitForSelector('[data-testid=error]', { timeout: 30_000 });
      const error = (await text(page, 'error'))!;
      expect(error).toMatch(bad.message);
      expect(error).toContain('model.onnx is still open.');
      expect(error).not.toMatch(/No model is open/);
      await page.screenshot({ path: join(ARTIFACTS, `bad-input-${n}-error.png`), fullPage: true });

      // preview: the block-size slider still changes the numbers
      const before = await text(page, 'total-bits');
      await page.locator('[data-testid=opt-0-blockSize]').focus();
      await page.keyboard.press(n % 2 === 0 ? 'ArrowRight' : 'ArrowLeft');
      await expect.poll(() => text(page, 'total-bits'), { timeout: 30_000 }).not.toBe(before);
      await settled(page);
      expect(await page.locator('.preview [role=alert]').count()).toBe(0);

      // export: the compressed model and its report download
      const downloads: string[] = [];
      const onDownload = (d: Download) => downloads.push(d.suggestedFilename());
      page.on('download', onDownload);
      await page.locator('[data-testid=export]').click();
      await expect
        .poll(() => downloads.sort(), { timeout: 30_000 })
        .toEqual(['model.compressed.onnx', 'model.report.json']);
      page.off('download', onDownload);
      await expect
        .poll(() => text(page, 'export-message'), { timeout: 30_000 })
        .toMatch(/^Exported [\d.]+ MB/);

      // evaluation of the compressed model (and the original first) on a short text
      await page.locator('[data-testid=eval-text]').fill(`${SHORT_TEXT} (${n})`);
      await page.locator('[data-testid=evaluate-compressed]').click();
      await expect.poll(() => text(page, 'ppl-compressed'), { timeout: 60_000 }).toMatch(/^\d+\.\d{3}/);
      expect(Number(await text(page, 'ppl-original'))).toBeGreaterThan(1);
      await page.screenshot({ path: join(ARTIFACTS, `bad-input-${n}-after.png`), fullPage: true });
      expect(studio.pageErrors).toEqual([]);
    });
  }
});

describe('opening another model, and the rough edges a newcomer hit', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio({ production: true });
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('a model opened while the demo perplexity is preparing cancels it silently', async () => {
    const { page } = studio;
    await load(page, studio.url); // the demo opens and starts scoring its held-out text
    await recordMessages(page);
    await page.waitForFunction(
      () =>
        (
          window as unknown as { __studio: { getState(): { evaluation: { running: boolean } } } }
        ).__studio.getState().evaluation.running,
      undefined,
      { timeout: 60_000 },
    );
    await dropFiles(page, '[data-testid=dropzone]', [{ name: 'stories260K.onnx', bytes: STORIES_MODEL }]);
    await expect
      .poll(() => page.locator('[data-testid=summary] h2').textContent(), { timeout: 60_000 })
      .toBe('stories260K.onnx');
    // the worker is free again: an evaluation of the new model completes, and nothing said "Cancelled."
    await page.locator('[data-testid=eval-text]').fill(STORIES_IDS.join(' '));
    await page.click('[data-testid=evaluate]');
    await page.waitForSelector('[data-testid=perplexity]', { timeout: 60_000 });
    expect(await text(page, 'eval-result')).toContain(`${STORIES_IDS.length - 1} tokens scored`);
    expect((await seenMessages(page)).filter((m) => /Cancelled/.test(m))).toEqual([]);
    expect(await page.locator('[data-testid=eval-error]').count()).toBe(0);
    await page.screenshot({ path: join(ARTIFACTS, 'bad-input-no-cancelled.png'), fullPage: true });
  });

  it('stories260K (no tokenizer): no demo text, ids suggested, Evaluate disabled with one reason', async () => {
    const { page } = studio;
    await load(page, `${studio.url}?eval=0`);
    await settled(page);
    expect(await page.locator('[data-testid=eval-text]').inputValue()).not.toBe('');
    await dropFiles(page, '[data-testid=dropzone]', [{ name: 'stories260K.onnx', bytes: STORIES_MODEL }]);
    await expect
      .poll(() => page.locator('[data-testid=summary] h2').textContent(), { timeout: 60_000 })
      .toBe('stories260K.onnx');
    // the demo's Shakespeare is gone; a model without tokenizer.json starts in ids mode
    expect(await page.locator('[data-testid=eval-text]').inputValue()).toBe('');
    expect(await text(page, 'eval-text-label')).not.toContain('demo held-out text');
    expect(await page.getByLabel('pre-tokenized ids (one sequence per line)').isChecked()).toBe(true);
    expect(await page.locator('[data-testid=evaluate]').isDisabled()).toBe(true);
    expect(await page.locator('[data-testid=evaluate-compressed]').isDisabled()).toBe(true);
    expect(await text(page, 'eval-disabled-reason')).toMatch(/without a tokenizer\.json: paste token ids/);
    expect(await text(page, 'evaluate-compressed-reason')).toMatch(/without a tokenizer\.json/);
    // plain text without a tokenizer: still disabled, the reason says what is missing
    await page.getByLabel('pre-tokenized ids (one sequence per line)').uncheck();
    await page.locator('[data-testid=eval-text]').fill('Once upon a time');
    expect(await page.locator('[data-testid=evaluate-compressed]').isDisabled()).toBe(true);
    expect(await text(page, 'eval-disabled-reason')).toBe(
      'This model came without a tokenizer.json: load one, or give pre-tokenized ids.',
    );
    // ids given: both buttons work, and the Hugging Face tokenizer error never appears
    await recordMessages(page);
    await page.getByLabel('pre-tokenized ids (one sequence per line)').check();
    await page.locator('[data-testid=eval-text]').fill(STORIES_IDS.join(' '));
    await page.locator('[data-testid=evaluate-compressed]').click();
    await expect.poll(() => text(page, 'ppl-compressed'), { timeout: 60_000 }).toMatch(/^\d+\.\d{3}/);
    expect(await page.locator('body').textContent()).not.toContain('not a Hugging Face tokenizer');
    expect((await seenMessages(page)).filter((m) => /Hugging Face/.test(m))).toEqual([]);
    await page.screenshot({ path: join(ARTIFACTS, 'bad-input-stories-ids.png'), fullPage: true });
  });

  it('Add step → Magnitude pruning goes before int4 and shrinks the model; chart ticks are round', async () => {
    const { page } = studio;
    await load(
      page,
      `${studio.url}?eval=0#recipe=${encodeURIComponent('{"version":1,"steps":[{"method":"int4"}]}')}`,
    );
    await settled(page);
    await page.locator('[data-testid=add-step]').selectOption('prune');
    await expect.poll(() => text(page, 'recipe-label'), { timeout: 10_000 }).toBe('prune 50% → int4 b32');
    await settled(page);
    const [before, after] = (await text(page, 'total-size'))!.split(' → ');
    expect(after).not.toBe(before);
    // the overlay histogram's x axis: round values such as −0.5, 0, 0.5 (two significant digits at most)
    const tickLabels = page.locator('[data-testid=overlay-chart] .x-ticks text');
    await expect.poll(() => tickLabels.count(), { timeout: 10_000 }).toBeGreaterThan(1);
    const ticks = await tickLabels.allTextContents();
    await page
      .locator('[data-testid=overlay-chart]')
      .screenshot({ path: join(ARTIFACTS, 'bad-input-ticks.png') });
    for (const t of ticks) {
      expect(Number(Number(t).toPrecision(2)), t).toBe(Number(t));
      expect(t).toBe(String(Number(t))); // written plainly: 0.1, not 0.1000
    }
  });

  it('a share link naming an unknown method says what was wrong', async () => {
    const { page } = studio;
    const bad = encodeURIComponent('{"version":1,"steps":[{"method":"int9"}]}');
    await load(page, `${studio.url}?eval=0#recipe=${bad}`);
    await page.waitForSelector('[data-testid=recipe-notice]', { timeout: 30_000 });
    expect(await text(page, 'recipe-notice')).toMatch(/Unknown compression method 'int9'.*instead/);
    await settled(page);
    await page.screenshot({ path: join(ARTIFACTS, 'bad-input-share-link.png'), fullPage: true });
  });

  it('/favicon.ico is served and the page links an icon', async () => {
    const { page } = studio;
    const res = await page.request.get(`${studio.url}favicon.ico`);
    expect(res.status()).toBe(200);
    expect((await res.body()).subarray(0, 4)).toEqual(Buffer.from([0, 0, 1, 0])); // an ICO header
    expect(await page.locator('link[rel=icon]').count()).toBeGreaterThan(0);
  });
});

describe('auto backend with a software WebGPU adapter', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio({ webgpu: true, production: true }); // Chromium's WebGPU here is SwiftShader
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('picks wasm and says why', async () => {
    const { page } = studio;
    await page.goto(`${studio.url}?eval=0`);
    expect(await page.evaluate(async () => !!(await (navigator as Navigator).gpu?.requestAdapter()))).toBe(
      true,
    );
    await page.waitForSelector('[data-testid=evaluate]:not([disabled])', { timeout: 60_000 });
    await page.locator('[data-testid=eval-text]').fill(SHORT_TEXT);
    await page.click('[data-testid=evaluate]');
    await page.waitForSelector('[data-testid=perplexity]', { timeout: 60_000 });
    expect(await text(page, 'runtime')).toMatch(
      /^wasm, \d+ threads? — WebGPU adapter is a software fallback \(SwiftShader\)$/,
    );
    await page.screenshot({ path: join(ARTIFACTS, 'bad-input-auto-backend.png'), fullPage: true });
  });
});
