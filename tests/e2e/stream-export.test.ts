/**
 * The page's streaming export in Chromium: stories260K opened as .onnx + .onnx_data is exported with
 * external data, written by the model worker one tensor at a time into the origin-private file system
 * and downloaded from there (webdriver has no folder picker). The two files equal the in-memory export
 * of the same recipe byte for byte, and onnxruntime-node runs them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Download } from 'playwright-core';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { concatChunks, writeModel } from '../../src/core/onnx/write.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { PreviewSession } from '../../src/core/compress/session.ts';
import { resolveFullRecipe } from '../../src/core/compress/recipe.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';
import { idsInput, ort } from '../helpers/ort.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';
import { dropFiles, openStudio, type Studio } from './harness.ts';

describe('the studio in Chromium: streaming export with external data', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio();
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('streams .onnx + .onnx_data to disk, identical to the in-memory export; onnxruntime-node runs them', async () => {
    const { page } = studio;
    await page.goto(`${studio.url}?demo=0`);
    await page.waitForSelector('[data-testid=dropzone]');
    const source = writeModel(parseModel(bytesSource('stories.onnx', readFileSync(STORIES_MODEL))), {
      externalData: { location: 'stories.onnx_data' },
    });
    const sourceData = concatChunks(source.externalData!.chunks);
    await dropFiles(page, '[data-testid=dropzone]', [
      { name: 'stories.onnx', bytes: source.model },
      { name: 'stories.onnx_data', bytes: sourceData },
    ]);
    await page.waitForSelector('[data-testid=preview][aria-busy=false] [data-testid=preview-totals]', {
      timeout: 120_000,
    });

    const dir = mkdtempSync(join(tmpdir(), 'cs-stream-e2e-'));
    const downloads = new Map<string, string>();
    const onDownload = async (d: Download) => {
      const path = join(dir, d.suggestedFilename());
      await d.saveAs(path);
      downloads.set(d.suggestedFilename(), path);
    };
    page.on('download', onDownload);
    try {
      await page.locator('[data-testid=export]').click();
      await expect.poll(() => downloads.size, { timeout: 120_000 }).toBe(3);
    } finally {
      page.off('download', onDownload);
    }
    try {
      expect([...downloads.keys()].sort()).toEqual([
        'stories.compressed.onnx',
        'stories.compressed.onnx_data',
        'stories.report.json',
      ]);
      const report = JSON.parse(readFileSync(downloads.get('stories.report.json')!, 'utf8'));
      const onnx = readFileSync(downloads.get('stories.compressed.onnx')!);
      const data = readFileSync(downloads.get('stories.compressed.onnx_data')!);
      expect(report.externalData).toBe('stories.compressed.onnx_data');
      expect(report.outputBytes).toBe(onnx.byteLength + data.byteLength);
      expect(onnx.byteLength).toBeLessThan(64 * 1024); // every weight of 1 KiB or more is external

      // the same recipe through the in-memory export (the page's preview order) gives the same bytes
      const model = parseModel(bytesSource('stories.onnx', source.model), [
        bytesSource('stories.onnx_data', sourceData),
      ]);
      const steps = resolveFullRecipe(report.recipe).steps;
      const result = await new PreviewSession(model).run(steps);
      const memory = exportCompressed(model, result, {
        externalData: { location: 'stories.compressed.onnx_data' },
      });
      expect(Buffer.from(onnx).equals(Buffer.from(memory.model))).toBe(true);
      expect(Buffer.from(data).equals(Buffer.from(concatChunks(memory.externalData!.chunks)))).toBe(true);

      const session = await ort.InferenceSession.create(downloads.get('stories.compressed.onnx')!, {
        extra: EXACT_WEIGHT_ONLY,
      });
      try {
        const logits = (await session.run(idsInput([1, 300, 40, 50]))).logits;
        expect(logits.dims).toEqual([1, 4, 512]);
        expect((logits.data as Float32Array).every(Number.isFinite)).toBe(true);
      } finally {
        await session.release();
      }
      expect(await page.locator('[data-testid=export-message]').textContent()).toMatch(
        /Exported .* MB \(stories\.compressed\.onnx \+ stories\.compressed\.onnx_data\)/,
      );
      expect(studio.pageErrors).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
