/**
 * The live studio end to end in Chromium: sliders that change the preview, before/after perplexity,
 * export loaded back by onnxruntime-node, share links, persistence across reloads, and no model
 * bytes on the network.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism, loadavg } from 'node:os';
import {
  ARTIFACTS,
  launchChromium,
  exportAndCollect,
  mainThreadTasks,
  openStudio,
  type Studio,
} from './harness.ts';
import { ort } from '../helpers/ort.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';
import { DEMO_DIR } from '../helpers/fixtures.ts';
import { cacheFeeds } from '../helpers/demo.ts';

describe('live studio', () => {
  let studio: Studio;
  const requests: { url: string; method: string; postBytes: number }[] = [];
  beforeAll(async () => {
    // the production build: what people get, and what the main-thread budget is about
    studio = await openStudio({ production: true });
    studio.context.on('request', (r) =>
      requests.push({ url: r.url(), method: r.method(), postBytes: r.postDataBuffer()?.byteLength ?? 0 }),
    );
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

  it('sliders change the numbers and the histogram of the selected tensor', async () => {
    const { page } = studio;
    await page.goto(`${studio.url}?eval=0`);
    await settled();
    expect(await text('recipe-label')).toBe('int4 b32');
    const bitsAt32 = await text('total-bits');
    const statsAt32 = await text('overlay-stats');
    const overlayPaths = () =>
      page
        .locator('[data-testid=overlay-chart] path.area')
        .evaluateAll((ps) => ps.map((p) => p.getAttribute('d')));
    const pathsAt32 = await overlayPaths();
    expect(pathsAt32).toHaveLength(2); // original and compressed

    // main-thread long tasks while the sliders move (the work itself runs in the worker)
    await page.evaluate(() => {
      const w = window as unknown as { longTasks: number[] };
      w.longTasks = [];
      new PerformanceObserver((list) =>
        list.getEntries().forEach((e) => w.longTasks.push(e.duration)),
      ).observe({
        type: 'longtask',
      });
    });
    const loadBefore = loadavg()[0];
    const tasks = await mainThreadTasks(page, async () => {
      // keyboard on the block-size slider: 32 → 64 (the demo's K = 192 and 768 are whole blocks of 64)
      await page.locator('[data-testid=opt-0-blockSize]').focus();
      await page.keyboard.press('ArrowRight');
      await expect.poll(() => text('opt-0-blockSize-value')).toBe('64');
      await expect.poll(() => text('recipe-label')).toBe('int4 b64');
      await settled();
      expect(Number(await text('total-bits'))).toBeCloseTo(4.5, 2); // 4 bits + one float32 scale per 64
      expect(Number(bitsAt32)).toBeCloseTo(5, 2);
      expect(await text('overlay-stats')).not.toBe(statsAt32);
      const pathsAt64 = await overlayPaths();
      expect(pathsAt64[1]).not.toBe(pathsAt32[1]); // the compressed histogram moved

      // a pruning step: a transform, so it goes before the quantization that stores the weights
      await page.locator('[data-testid=add-step]').selectOption('prune');
      await expect.poll(() => text('recipe-label')).toBe('prune 50% → int4 b64');
      await settled();
      expect(await text('total-sparsity')).toMatch(/^(49|50)\.\d %$/);
      await page.locator('[data-testid=opt-0-sparsity]').focus();
      for (let i = 0; i < 10; i++) await page.keyboard.press('ArrowLeft');
      await expect.poll(() => text('recipe-label')).toBe('prune 40% → int4 b64');
      await settled();
      expect(Number((await text('total-sparsity'))!.split(' ')[0])).toBeLessThan(45);
    });
    const load = Math.max(loadBefore, loadavg()[0]);
    const cores = availableParallelism();
    const longTasks = await page.evaluate(() => (window as unknown as { longTasks: number[] }).longTasks);
    const busiest = tasks.map((t) => t.cpu).sort((a, b) => b - a);
    console.log(
      `main thread while sliders move: long tasks (wall) ${JSON.stringify(longTasks.map(Math.round))} ms; ` +
        `busiest tasks (CPU) ${JSON.stringify(busiest.slice(0, 5).map(Math.round))} ms of ${tasks.length}; ` +
        `load ${load.toFixed(1)} on ${cores} cores`,
    );
    expect(tasks.length).toBeGreaterThan(10);
    // The budget: no main-thread task over 50 ms. What the page makes its main thread do is each
    // task's thread (CPU) time: React commits, layout and paint of what the worker sent. Measured
    // here: the busiest task 10–27 ms (adding a step; a frame that lays out and paints the whole
    // page), against 14–45 ms when recharts drew the preview's charts; a render that takes 150 ms of
    // CPU fails it.
    expect(busiest[0]).toBeLessThan(50);
    // Wall-clock long tasks (the Long Tasks API, what a person feels) match the CPU time when the page
    // has a core. On an oversubscribed machine they measure the scheduler instead (this one: 2 cores,
    // load 3–28 from other jobs, the tests under nice): tasks of 2–10 ms CPU lasted 50–150 ms. So the
    // wall-clock bound holds the page to 50 ms only when the machine had a core free for it.
    if (load < cores) expect(Math.max(0, ...longTasks)).toBeLessThan(50);
    await page.screenshot({ path: join(ARTIFACTS, 'studio-sliders.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });

  it('evaluates original and compressed perplexity and keeps the point in the history', async () => {
    const { page } = studio;
    // a shorter text keeps the test quick; the full held-out text is the quality test's job
    const heldout = readFileSync(join(DEMO_DIR, 'heldout.txt'), 'utf8').slice(0, 4000);
    await page.locator('[data-testid=eval-text]').fill(heldout);
    await page.locator('[data-testid=evaluate-compressed]').click();
    await expect.poll(() => text('ppl-compressed'), { timeout: 240_000 }).toMatch(/^\d+\.\d{3}/);
    const original = Number(await text('ppl-original'));
    const compressed = Number((await text('ppl-compressed'))!.split(' ')[0]);
    expect(original).toBeGreaterThan(1);
    expect(compressed).toBeGreaterThan(1);
    expect(compressed).not.toBe(original);
    // against the original on the same tokens: KL > 0, same top below 100 %, and the protocol
    const kl = Number((await text('kl-versus'))!.split(' ')[0]);
    expect(kl).toBeGreaterThan(0);
    expect(Number((await text('same-top'))!.split(' ')[0])).toBeLessThan(100);
    expect(await text('versus-protocol')).toMatch(
      /text sha256 [0-9a-f]{12}, \d+ tokens scored .*ctx \d+, stride \d+, .*onnxruntime \d/,
    );
    expect(await page.locator('[data-testid=history] li').count()).toBe(1);
    expect(await page.locator('[data-testid=history] li').textContent()).toMatch(/KL \d\.\d{4} · same top/);
    await page.screenshot({ path: join(ARTIFACTS, 'studio-evaluated.png'), fullPage: true });
  });

  it('exports an ONNX file that onnxruntime-node runs, and a report', async () => {
    const { page } = studio;
    const { dir, onnxPath: modelPath, report } = await exportAndCollect(page, 'cs-dl-');
    expect(report.recipe.steps.map((s: { method: string }) => s.method)).toEqual(['prune', 'int4']);
    const session = await ort.InferenceSession.create(modelPath, { extra: EXACT_WEIGHT_ONLY });
    // the demo's KV cache fed empty; the export keeps its present.* outputs
    const out = await session.run(cacheFeeds(readFileSync(modelPath), [1, 2, 3, 4, 5]));
    expect(out.logits.dims.slice(0, 2)).toEqual([1, 5]);
    expect(out['present.5.value'].dims).toEqual([1, 6, 5, 32]);
    expect(report.outputBytes).toBe(readFileSync(modelPath).byteLength);
    rmSync(dir, { recursive: true, force: true });
  });

  it('a share link opened in a fresh browser profile applies the same recipe', async () => {
    const link = studio.page.url();
    expect(link).toContain('#recipe=');
    const fresh = await launchChromium(); // a new profile: the recipe can only come from the link
    try {
      const page = fresh.context.pages()[0] ?? (await fresh.context.newPage());
      await page.goto(link.replace('?eval=0', '?eval=0'));
      await page.waitForSelector('[data-testid=preview][aria-busy=false] [data-testid=preview-totals]', {
        timeout: 120_000,
      });
      expect(await page.locator('[data-testid=recipe-label]').textContent()).toBe('prune 40% → int4 b64');
      expect(await page.locator('[data-testid=total-bits]').textContent()).toBe(await text('total-bits'));
      await page.screenshot({ path: join(ARTIFACTS, 'studio-shared-link.png'), fullPage: true });
    } finally {
      await fresh.close();
    }
  });

  it('survives a reload with its recipe and history', async () => {
    const { page } = studio;
    await page.goto(`${studio.url}?eval=0`); // no hash: the stored recipe comes back
    await settled();
    expect(await text('recipe-label')).toBe('prune 40% → int4 b64');
    expect(await page.locator('[data-testid=history] li').count()).toBe(1);
    // move a slider away, then restore the evaluated recipe from the history: with a history chart on
    // the page, the main thread's budget holds too (the chart redraws when the history changes only)
    const tasks = await mainThreadTasks(page, async () => {
      await page.locator('[data-testid=opt-1-blockSize]').focus();
      await page.keyboard.press('ArrowLeft');
      await expect.poll(() => text('recipe-label')).toBe('prune 40% → int4 b32');
      await settled();
      await page.locator('[data-testid=history] li button').first().click();
      await expect.poll(() => text('recipe-label')).toBe('prune 40% → int4 b64');
      await settled();
    });
    const busiest = Math.max(...tasks.map((t) => t.cpu));
    console.log(
      `main thread with a history chart: busiest task ${Math.round(busiest)} ms CPU of ${tasks.length}`,
    );
    expect(busiest).toBeLessThan(50);
    // a reload right after a change, before the URL and storage writes (they wait for the recipe to
    // rest), keeps the change, and the address bar catches up
    await page.locator('[data-testid=opt-1-blockSize]').focus();
    await page.keyboard.press('ArrowLeft');
    await expect.poll(() => text('recipe-label')).toBe('prune 40% → int4 b32');
    await page.reload();
    await settled();
    expect(await text('recipe-label')).toBe('prune 40% → int4 b32');
    expect(decodeURIComponent(page.url())).toContain('"blockSize":32');
  });

  it('sent nothing off the machine and no model bytes anywhere', () => {
    expect(requests.length).toBeGreaterThan(0);
    const origin = new URL(studio.url).origin;
    for (const r of requests) {
      const local = r.url.startsWith(origin) || /^(data|blob|chrome-extension):/.test(r.url);
      expect(local, r.url).toBe(true);
      expect(r.postBytes, `${r.method} ${r.url}`).toBe(0);
    }
  });
});
