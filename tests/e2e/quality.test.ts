import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ARTIFACTS, dropFiles, openStudio, type Studio } from './harness.ts';
import { main } from '../../src/cli/main.ts';
import { DEMO_DIR, DEMO_MODEL, STORIES_DIR } from '../helpers/fixtures.ts';

const STORIES = STORIES_DIR;

async function cliPerplexity(args: string[]): Promise<{ perplexity: number; tokens: number }> {
  let out = '';
  expect(await main(['ppl', ...args, '--json'], (s) => (out += s))).toBe(0);
  return JSON.parse(out);
}

describe('quality in the browser (onnxruntime-web in a worker)', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio();
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('opens with the demo model and starts scoring its held-out text', async () => {
    const { page } = studio;
    await page.goto(studio.url);
    // the full held-out perplexity is `npm run bench`'s: here only that the page starts it, then stop it
    await page.waitForFunction(
      () =>
        /Scoring: [\d,]+ tokens/.test(document.querySelector('[data-testid=progress]')?.textContent ?? ''),
      undefined,
      { timeout: 60_000 },
    );
    expect(await page.locator('[data-testid=eval-text-label]').textContent()).toContain('demo held-out text');
    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.waitForSelector('[data-testid=eval-error]', { timeout: 30_000 });
    expect(studio.pageErrors).toEqual([]);
  });

  it('scores a short text in the page equal to the CLI within 0.1%', async () => {
    const { page } = studio;
    await page.goto(studio.url + '?eval=0');
    await page.waitForSelector('[data-testid=evaluate]:not([disabled])', { timeout: 60_000 });
    // ~2,000 characters of the held-out text: a few windows, seconds of work on any machine
    const text = readFileSync(join(DEMO_DIR, 'heldout.txt'), 'utf8').slice(0, 2000);
    const textFile = join(mkdtempSync(join(tmpdir(), 'cs-quality-')), 'short.txt');
    writeFileSync(textFile, text);
    await page.locator('[data-testid=eval-text]').fill(text);
    await page.locator('.quality-controls input').nth(0).fill('128');
    await page.locator('.quality-controls input').nth(1).fill('64');
    await page.click('[data-testid=evaluate]');
    await page.waitForSelector('[data-testid=perplexity]', { timeout: 60_000 });
    const shown = Number(await page.locator('[data-testid=perplexity]').textContent());
    // exact values from the store (the page rounds them for display)
    const result = await page.evaluate(() => {
      type Store = {
        getState(): {
          evaluation: { result?: { perplexity: number; tokens: number; ctx: number; stride: number } };
        };
      };
      return (window as unknown as { __studio: Store }).__studio.getState().evaluation.result!;
    });
    const { tokens } = result;
    expect(await page.locator('[data-testid=eval-result]').textContent()).toContain(
      `${tokens.toLocaleString('en-US')} tokens scored`,
    );
    const cli = await cliPerplexity([
      DEMO_MODEL,
      '--text',
      textFile,
      '--tokenizer',
      DEMO_DIR,
      '--ctx',
      '128',
      '--stride',
      '64',
    ]);
    expect(tokens).toBe(cli.tokens);
    expect(tokens).toBeGreaterThan(128);
    expect(Math.abs(result.perplexity / cli.perplexity - 1)).toBeLessThan(0.001);
    expect(shown).toBeCloseTo(result.perplexity, 3);
    await page.screenshot({ path: join(ARTIFACTS, 'quality-demo.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });

  it('stories260K with pre-tokenized ids reproduces its reference perplexity', async () => {
    const { page } = studio;
    await dropFiles(page, '[data-testid=dropzone]', [
      { name: 'stories260K.onnx', bytes: readFileSync(join(STORIES, 'model.onnx')) },
    ]);
    // named apart from the demo's model.onnx, so the wait ends when stories260K is the open model
    await page.waitForFunction(
      () => document.querySelector('[data-testid=summary] h2')?.textContent === 'stories260K.onnx',
      undefined,
      { timeout: 60_000 },
    );
    await page.locator('[data-testid=eval-text]').fill(readFileSync(join(STORIES, 'ids.txt'), 'utf8'));
    await page.getByLabel('pre-tokenized ids (one sequence per line)').check();
    await page.locator('.quality-controls input').nth(0).fill('512');
    await page.locator('.quality-controls input').nth(1).fill('512');
    await page.click('[data-testid=evaluate]');
    await page.waitForSelector('[data-testid=perplexity]', { timeout: 60_000 });
    expect(Number(await page.locator('[data-testid=perplexity]').textContent())).toBeCloseTo(3.548, 3);
    expect(await page.locator('[data-testid=eval-result]').textContent()).toContain('1,804 tokens scored');
  });

  it('Cancel stops the evaluation in the worker', async () => {
    const { page } = studio;
    await page.goto(studio.url + '?eval=0');
    await page.waitForSelector('[data-testid=evaluate]:not([disabled])', { timeout: 60_000 });
    await page.locator('.quality-controls input').nth(0).fill('128');
    await page.locator('.quality-controls input').nth(1).fill('8'); // many small windows: a long run
    await page.click('[data-testid=evaluate]');
    await page.waitForFunction(
      () =>
        /Scoring: [\d,]+ tokens/.test(document.querySelector('[data-testid=progress]')?.textContent ?? ''),
      undefined,
      { timeout: 60_000 },
    );
    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.waitForSelector('[data-testid=eval-error]', { timeout: 30_000 });
    expect(await page.locator('[data-testid=eval-error]').textContent()).toBe('Cancelled.');
    // the worker is free again at once: a short evaluation right after completes
    await page.locator('[data-testid=eval-text]').fill('To be, or not to be, that is the question.');
    await page.locator('.quality-controls input').nth(1).fill('64');
    await page.click('[data-testid=evaluate]');
    await page.waitForSelector('[data-testid=perplexity]', { timeout: 30_000 });
    expect(await page.locator('[data-testid=eval-result]').textContent()).toMatch(/\d+ tokens scored/);
  });
});
