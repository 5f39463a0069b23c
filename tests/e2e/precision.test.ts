/**
 * Mixed precision and backend agreement in the real page: the sensitivity chart, the plan written as
 * per-tensor steps, a hand edit of one row that the share link and `compress --recipe` reproduce, and
 * the exported int4 model run on wasm and on WebGPU (Chromium's SwiftShader adapter) on the same tokens.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ARTIFACTS, ROOT, exportAndCollect, openStudio, type Studio } from './harness.ts';
import { runCli, sha256File } from '../helpers/cli.ts';
import { readHashRecipe, recipeJson } from '../../src/app/share.ts';

const DEMO_MODEL = join(ROOT, 'public/models/tiny-shakespeare-gpt2/onnx/model.onnx');

type StoreState = {
  recipe: { method: string; options?: Record<string, unknown>; select?: { include?: string[] } }[];
  precisionWeights?: { name: string }[];
  sensitivity?: { table: { name: string; entries: { candidate: string; kl: number }[] }[] };
  agreementRun: { result?: unknown };
};

async function state(page: Studio['page']): Promise<StoreState> {
  return page.evaluate(() => {
    type Store = { getState(): unknown };
    return JSON.parse(JSON.stringify((window as unknown as { __studio: Store }).__studio.getState()));
  });
}

/** The slice both checks run on: few tokens keep SwiftShader (≈20× slower than wasm) quick. */
async function shortSlice(page: Studio['page'], tokens: number) {
  await page.locator('[data-testid=sensitivity-tokens]').fill(String(tokens));
}

describe('sensitivity chart and the per-tensor table', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio();
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('charts every linear weight’s KL, plans under a bit budget, and a row edit survives the link and the CLI', async () => {
    const { page } = studio;
    await page.goto(`${studio.url}?eval=0`);
    await page.waitForSelector('[data-testid=sensitivity-run]:not([disabled])', { timeout: 90_000 });
    await shortSlice(page, 32);
    await page.click('[data-testid=sensitivity-run]');
    const t0 = Date.now();
    await page.waitForSelector('[data-testid=sensitivity-chart]', { timeout: 240_000 });
    console.log(`sensitivity: ${(Date.now() - t0) / 1000} s`);
    const s1 = await state(page);
    const kls = s1.sensitivity!.table.map((t) => t.entries.find((e) => e.candidate === 'int4b32')!.kl);
    expect(kls.length).toBe(24); // 6 blocks × (c_attn, c_proj, c_fc, mlp c_proj)
    for (const kl of kls) expect(kl).toBeGreaterThan(0);
    expect(Number(await page.locator('[data-testid=sensitivity-chart]').getAttribute('data-bars'))).toBe(24);
    // recharts draws one bar rectangle per tensor
    expect(await page.locator('[data-testid=sensitivity-chart] .recharts-bar-rectangle').count()).toBe(24);
    await page.screenshot({ path: join(ARTIFACTS, 'precision-sensitivity.png'), fullPage: true });

    // the plan: int4 b32 is measured already (the cache), nothing new: a plan between float and int4
    await page.locator('[data-testid=plan-candidates]').fill('keep,int4b32');
    await page.locator('[data-testid=plan-budget]').fill('8');
    await page.click('[data-testid=plan-run]');
    await page.waitForSelector('[data-testid=plan-summary]', { timeout: 240_000 });
    console.log(`plan: ${(Date.now() - t0) / 1000} s`);
    expect(await page.locator('[data-testid=sensitivity-protocol]').textContent()).toMatch(
      /24 from the cache/,
    );
    const planned = await state(page);
    // one step (int4) over the tensors it chose; the rest kept in float: the table shows both
    expect(planned.recipe).toHaveLength(1);
    for (const step of planned.recipe)
      expect(step.select?.include?.every((p) => p.startsWith('/^'))).toBe(true);
    const methods = await page
      .locator('[data-testid^=plan-method-]')
      .evaluateAll((els) => els.map((e) => (e as HTMLSelectElement).value));
    expect(methods.filter((m) => m === 'int4').length).toBe(planned.recipe[0].select!.include!.length);
    expect(methods.filter((m) => m === 'keep').length).toBeGreaterThan(1); // the embedding and planned ones
    const bits = Number(
      /([\d.]+) bits\/weight/.exec((await page.locator('[data-testid=plan-summary]').textContent())!)![1],
    );
    expect(bits).toBeLessThanOrEqual(8);
    expect(bits).toBeGreaterThan(5); // some tensors kept in float

    // hand edit: the first tensor row to int8 per tensor
    const row = page.locator('[data-testid=plan-row-0]');
    const name = (await row.getAttribute('data-name'))!;
    await page.locator('[data-testid=plan-method-0]').selectOption('int8');
    await page.locator('[data-testid=plan-opt-0-granularity]').selectOption('per-tensor');
    await expect
      .poll(async () => decodeURIComponent(await page.evaluate(() => location.hash)), { timeout: 10_000 })
      .toContain('per-tensor');
    const link = await page.evaluate(() => location.href);
    const edited = readHashRecipe(new URL(link).hash);
    expect(edited.error).toBeUndefined();
    const int8Step = edited.steps!.find(
      (s) => s.method === 'int8' && s.options?.granularity === 'per-tensor',
    )!;
    expect(int8Step.select?.include).toContain(`/^${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$/`);
    await page.waitForSelector('[data-testid=preview-totals], [data-testid=tensor-plan]', {
      timeout: 60_000,
    });
    await page.screenshot({ path: join(ARTIFACTS, 'precision-table-edit.png'), fullPage: true });

    // the page's export of the edited plan equals the CLI's `compress --recipe` of the link's recipe
    const exported = await exportAndCollect(page, 'cs-precision-');
    const recipeFile = join(exported.dir, 'plan.json');
    writeFileSync(recipeFile, JSON.stringify(recipeJson(edited.steps!)));
    const cli = await runCli([
      'compress',
      DEMO_MODEL,
      '--recipe',
      recipeFile,
      '-o',
      join(exported.dir, 'cli.onnx'),
    ]);
    expect(cli.err).toBe('');
    expect(sha256File(join(exported.dir, 'cli.onnx'))).toBe(sha256File(exported.onnxPath));
    expect(exported.report.recipe.steps).toEqual(edited.steps);

    // the link in a fresh page shows the same table: the edited row reads int8 per tensor
    await page.goto('about:blank');
    await page.goto(link.replace('?eval=0', '?eval=0'));
    await page.waitForSelector('[data-testid=plan-method-0]', { timeout: 90_000 });
    expect(await page.locator('[data-testid=plan-method-0]').inputValue()).toBe('int8');
    expect(await page.locator('[data-testid=plan-opt-0-granularity]').inputValue()).toBe('per-tensor');
    expect(studio.pageErrors).toEqual([]);
  }, 600_000);

  it('without a WebGPU adapter the backend check says so instead of comparing wasm with itself', async () => {
    const { page } = studio;
    await page.goto(`${studio.url}?eval=0`);
    const adapter = await page.evaluate(async () => !!(await (navigator as Navigator).gpu?.requestAdapter()));
    await page.waitForSelector('[data-testid=backend-check-original]:not([disabled])', { timeout: 90_000 });
    await page.click('[data-testid=backend-check-original]');
    await page.waitForSelector('[data-testid=backend-unavailable], [data-testid=backend-result]', {
      timeout: 120_000,
    });
    // this Chromium runs without --enable-unsafe-webgpu: no adapter, unless the machine offers one
    if (!adapter)
      expect(await page.locator('[data-testid=backend-unavailable]').textContent()).toMatch(
        /No WebGPU adapter/,
      );
    expect(await page.locator('[data-testid=backend-max-delta]').count()).toBe(adapter ? 1 : 0);
  });
});

describe('backend agreement: wasm against WebGPU (SwiftShader)', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio({ webgpu: true });
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('exports an int4 model and shows max |Δlogit|, KL and top-1 agreement between the two backends', async () => {
    const { page } = studio;
    await page.goto(`${studio.url}?eval=0`);
    expect(await page.evaluate(async () => !!(await (navigator as Navigator).gpu?.requestAdapter()))).toBe(
      true,
    );
    await page.waitForSelector('[data-testid=backend-check-compressed]:not([disabled])', { timeout: 90_000 });
    // the default recipe is int4 b32: its export holds MatMulNBits
    expect(await page.locator('[data-testid=recipe-label]').textContent()).toContain('int4 b32');
    const exported = await exportAndCollect(page, 'cs-backends-');
    expect(readFileSync(exported.onnxPath).includes(Buffer.from('MatMulNBits'))).toBe(true);
    await shortSlice(page, 24);
    await page.click('[data-testid=backend-check-compressed]');
    await page.waitForSelector(
      '[data-testid=backend-result], [data-testid=backend-unavailable], [data-testid=backend-error]',
      { timeout: 300_000 },
    );
    await page.screenshot({ path: join(ARTIFACTS, 'precision-backends.png'), fullPage: true });
    const unavailable = await page.locator('[data-testid=backend-unavailable]').count();
    const error = await page.locator('[data-testid=backend-error]').count();
    if (unavailable || error)
      throw new Error(
        `no comparison: ${await page.locator('[data-testid=backend-unavailable], [data-testid=backend-error]').textContent()}`,
      );
    const result = (await state(page)).agreementRun.result as {
      agreement: {
        maxAbsLogit: number;
        kl: { mean: { value: number } };
        sameTop: { value: number };
        tokens: number;
      };
    };
    const a = result.agreement;
    expect(Number.isFinite(a.maxAbsLogit)).toBe(true);
    expect(Number.isFinite(a.kl.mean.value)).toBe(true);
    expect(a.tokens).toBeGreaterThan(10);
    expect(a.sameTop.value).toBeGreaterThanOrEqual(0.9);
    expect(await page.locator('[data-testid=backend-max-delta]').textContent()).toMatch(/\d\.\d+e[-+]\d+/);
    expect(await page.locator('[data-testid=backend-top1]').textContent()).toMatch(/%/);
    expect(await page.locator('[data-testid=backend-protocol]').textContent()).toMatch(/wasm.*webgpu/);
    expect(studio.pageErrors).toEqual([]);
  }, 400_000);
});
