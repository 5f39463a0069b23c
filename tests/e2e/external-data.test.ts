import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { writeModel } from '../../src/core/onnx/write.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { mlpModel } from '../helpers/models.ts';
import { dropFiles, openStudio, type Studio } from './harness.ts';

/** The page reads external data by its location beside the model, and refuses one that leaves the folder. */
describe('the studio in Chromium: a model with external data', () => {
  let studio: Studio;
  beforeAll(async () => {
    studio = await openStudio();
    await studio.page.goto(studio.url);
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('opens an .onnx dropped with its .onnx_data, and names an escaping location in its error', async () => {
    const { page } = studio;
    await page.waitForSelector('[data-testid=dropzone]');
    const written = writeModel(parseModel(bytesSource('mlp.onnx', mlpModel(64, 128, 32))), {
      externalData: { location: 'mlp.onnx_data' },
    });
    await dropFiles(page, '[data-testid=dropzone]', [
      { name: 'mlp.onnx', bytes: written.model },
      { name: 'mlp.onnx_data', bytes: Buffer.concat(written.externalData!.chunks) },
    ]);
    await expect
      .poll(() => page.locator('[data-testid=tensor-table] tbody tr').count(), { timeout: 30_000 })
      .toBe(3);

    const escaping = makeModelBytes({
      nodes: [makeNode('Identity', ['x'], ['y'])],
      inputs: [valueInfo('x', DataType.FLOAT, [1])],
      outputs: [valueInfo('y', DataType.FLOAT, [1])],
      initializers: [
        {
          name: 'w',
          dims: [2],
          data_type: DataType.FLOAT,
          data_location: 1,
          external_data: [{ key: 'location', value: '../w.bin' }],
        },
      ],
    });
    await dropFiles(page, '[data-testid=dropzone]', [
      { name: 'bad.onnx', bytes: escaping },
      { name: 'w.bin', bytes: new Uint8Array(8) },
    ]);
    await page.waitForSelector('[data-testid=error]', { timeout: 30_000 });
    expect(await page.locator('[data-testid=error]').textContent()).toMatch(
      /bad\.onnx names the external-data location '\.\.\/w\.bin', which climbs out of the model's folder/,
    );
    expect(studio.pageErrors).toEqual([]);
  });
});
