import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ARTIFACTS, ROOT, dropFiles, openStudio, type Studio } from './harness.ts';
import { main } from '../../src/cli/main.ts';
import { STORIES_DIR } from '../helpers/shared.ts';

const DEMO = join(ROOT, 'public/models/tiny-shakespeare-gpt2');
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

  it('opens with the demo model loaded and its held-out perplexity shown, equal to the CLI within 0.1%', async () => {
    const { page } = studio;
    await page.goto(studio.url);
    await page.waitForSelector('[data-testid=perplexity]', { timeout: 240_000 });
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
    const { ctx, stride, tokens } = result;
    expect(await page.locator('[data-testid=eval-result]').textContent()).toContain(
      `${tokens.toLocaleString('en-US')} tokens scored`,
    );
    const cli = await cliPerplexity([
      join(DEMO, 'model.onnx'),
      '--text',
      join(DEMO, 'heldout.txt'),
      '--tokenizer',
      DEMO,
      '--ctx',
      String(ctx),
      '--stride',
      String(stride),
    ]);
    expect(tokens).toBe(cli.tokens);
    expect(Math.abs(result.perplexity / cli.perplexity - 1)).toBeLessThan(0.001);
    expect(shown).toBeCloseTo(result.perplexity, 3);
    await page.screenshot({ path: join(ARTIFACTS, 'quality-demo.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });

  it('stories260K with pre-tokenized ids reproduces its reference perplexity', async () => {
    const { page } = studio;
    await dropFiles(page, '[data-testid=dropzone]', [
      { name: 'model.onnx', bytes: readFileSync(join(STORIES, 'model.onnx')) },
    ]);
    await page.waitForFunction(
      () => document.querySelector('[data-testid=summary] h2')?.textContent === 'model.onnx',
    );
    await page.locator('[data-testid=eval-text]').fill(readFileSync(join(STORIES, 'ids.txt'), 'utf8'));
    await page.getByLabel('pre-tokenized ids (one sequence per line)').check();
    await page.locator('.quality-controls input').nth(0).fill('512');
    await page.locator('.quality-controls input').nth(1).fill('512');
    await page.click('[data-testid=evaluate]');
    await page.waitForSelector('[data-testid=perplexity]', { timeout: 120_000 });
    expect(Number(await page.locator('[data-testid=perplexity]').textContent())).toBeCloseTo(3.548, 3);
    expect(await page.locator('[data-testid=eval-result]').textContent()).toContain('1,804 tokens scored');
  });

  it('Cancel stops the evaluation in the worker', async () => {
    const { page } = studio;
    await page.goto(studio.url + '?eval=0');
    await page.waitForSelector('[data-testid=evaluate]:not([disabled])', { timeout: 120_000 });
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
    await page.waitForSelector('[data-testid=eval-error]');
    expect(await page.locator('[data-testid=eval-error]').textContent()).toBe('Cancelled.');
    // the worker is free again at once: a short evaluation right after completes
    await page.locator('[data-testid=eval-text]').fill('To be, or not to be, that is the question.');
    await page.locator('.quality-controls input').nth(1).fill('64');
    const started = Date.now();
    await page.click('[data-testid=evaluate]');
    await page.waitForSelector('[data-testid=perplexity]', { timeout: 30_000 });
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(await page.locator('[data-testid=eval-result]').textContent()).toMatch(/\d+ tokens scored/);
  });
});
