import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ARTIFACTS, dropFiles, openStudio, type Studio } from './harness.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';

const STORIES = STORIES_MODEL;

describe('the studio in Chromium: drop a model, see its weights', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio();
    await studio.page.goto(studio.url);
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('dropping stories260K shows its tensors and a histogram', async () => {
    const { page } = studio;
    await page.waitForSelector('[data-testid=dropzone]');
    expect(await page.evaluate(() => self.crossOriginIsolated)).toBe(true);
    await dropFiles(page, '[data-testid=dropzone]', [{ name: 'model.onnx', bytes: readFileSync(STORIES) }]);
    await page.waitForSelector('[data-testid=tensor-table] tbody tr', { timeout: 60_000 });
    const rows = await page.locator('[data-testid=tensor-table] tbody tr').count();
    const expected = (await import('../../src/core/onnx/model.ts')).parseModel(
      (await import('../../src/core/onnx/model.ts')).bytesSource('model.onnx', readFileSync(STORIES)),
    ).graph.initializer.length;
    expect(rows).toBe(expected);
    // opening read no tensor: every row's statistics arrive afterwards from the kernel pool, and they
    // are the ones the core computes (min/max/std of each row, as the table formats them)
    const model = (await import('../../src/core/onnx/model.ts')).parseModel(
      (await import('../../src/core/onnx/model.ts')).bytesSource('model.onnx', readFileSync(STORIES)),
    );
    const { summarizeModel } = await import('../../src/core/summary.ts');
    const { formatNumber } = await import('../../src/app/components/format.ts');
    const want = new Map(summarizeModel(model).tensors.map((t) => [t.name, formatNumber(t.std)]));
    const shown = () =>
      page
        .locator('[data-testid=tensor-table] tbody tr')
        .evaluateAll((trs) =>
          trs.map((tr) => [
            tr.querySelector('td.name')!.textContent!,
            tr.querySelectorAll('td')[7].textContent!,
          ]),
        );
    await expect
      .poll(async () => (await shown()).every(([, std]) => std !== '—'), { timeout: 30_000 })
      .toBe(true);
    for (const [name, std] of await shown()) expect(std, name).toBe(want.get(name));
    await expect.poll(() => page.locator('[data-testid=param-count]').textContent()).toContain('559');
    // the first MatMul weight is selected and its histogram drawn
    await page.waitForSelector('[data-testid=histogram-chart] .recharts-bar-rectangle', { timeout: 30_000 });
    const bars = await page.locator('[data-testid=histogram-chart] .recharts-bar-rectangle').count();
    expect(bars).toBeGreaterThan(8);

    // filter, then pick another tensor: the histogram follows the selection
    await page.fill('[data-testid=tensor-filter]', 'w2');
    const filtered = page.locator('[data-testid=tensor-table] tbody tr');
    expect(await filtered.count()).toBeGreaterThan(0);
    const name = (await filtered.first().locator('td.name').textContent())!;
    await filtered.first().click();
    await expect.poll(() => page.locator('[data-testid=histogram-tensor]').textContent()).toBe(name);
    await page.screenshot({ path: join(ARTIFACTS, 'inspect-stories260K.png'), fullPage: true });
    expect(studio.pageErrors).toEqual([]);
  });

  it('dropping an image renamed .onnx shows an inline error, and the page still works', async () => {
    const { page } = studio;
    const png = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]);
    await dropFiles(page, '[data-testid=dropzone]', [{ name: 'cat.onnx', bytes: png }]);
    await page.waitForSelector('[data-testid=error]');
    expect(await page.locator('[data-testid=error]').textContent()).toMatch(
      /cat\.onnx is not an ONNX model: it looks like a PNG image/,
    );
    await page.screenshot({ path: join(ARTIFACTS, 'inspect-error.png') });
    await dropFiles(page, '[data-testid=dropzone]', [{ name: 'model.onnx', bytes: readFileSync(STORIES) }]);
    await page.waitForSelector('[data-testid=error]', { state: 'detached' });
    await page.fill('[data-testid=tensor-filter]', '');
    expect(await page.locator('[data-testid=tensor-table] tbody tr').count()).toBeGreaterThan(10);
  });
});
