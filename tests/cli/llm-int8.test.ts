/**
 * compress --llm-int8 on the real stories260K model, which ships no tokenizer: it calibrates on
 * sequences it generates itself (few and short, so each run takes seconds).
 */
import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { idsInput, runPath, tempDir } from '../helpers/ort.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';
import { runCli as run, sha256File } from '../helpers/cli.ts';

const CALIB = ['--calib-generate', '4', '--calib-len', '32'];

interface TensorJson {
  name: string;
  method: string;
  bitsPerWeight: number;
  outlierChannels?: number[];
}

describe('compress --llm-int8 (stories260K, calibrated on generated sequences)', () => {
  const dir = tempDir();

  it('writes a model onnxruntime runs, reports each weight’s outlier features, and a recipe reproduces it', async () => {
    const out = join(dir, 'flags.onnx');
    const r = await run(['compress', STORIES_MODEL, '--llm-int8', ...CALIB, '-o', out, '--json']);
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out);
    const tensors: TensorJson[] = report.tensors;
    expect(tensors).toHaveLength(35);
    for (const t of tensors) {
      expect(t.method).toBe('llm-int8');
      expect(Array.isArray(t.outlierChannels)).toBe(true);
      // float32 rows cost more than int8 ones: bits per weight rise with the outliers
      if (t.outlierChannels!.length) expect(t.bitsPerWeight).toBeGreaterThan(8.5);
      else expect(t.bitsPerWeight).toBeLessThan(8.6);
    }
    expect(tensors.some((t) => t.outlierChannels!.length > 0)).toBe(true);
    const logits = (await runPath(out, idsInput([1, 300, 40, 50, 7])))['logits'];
    expect(logits.dims).toEqual([1, 5, 512]);
    expect((logits.data as Float32Array).every(Number.isFinite)).toBe(true);

    const recipe = join(dir, 'recipe.json');
    writeFileSync(
      recipe,
      JSON.stringify({
        version: 1,
        calibration: { source: 'generate', samples: 4, length: 32 },
        steps: [{ method: 'llm-int8', options: { threshold: 6 } }],
      }),
    );
    const fromRecipe = join(dir, 'recipe.onnx');
    const rr = await run(['compress', STORIES_MODEL, '--recipe', recipe, '-o', fromRecipe]);
    expect(rr.code, rr.err).toBe(0);
    expect(sha256File(fromRecipe)).toBe(sha256File(out));
  });

  it('--outlier-threshold above every activation finds no outlier: plain int8 per channel', async () => {
    const out = join(dir, 'high.onnx');
    const r = await run([
      'compress',
      STORIES_MODEL,
      '--llm-int8',
      '--outlier-threshold',
      '1000000',
      ...CALIB,
      '-o',
      out,
      '--json',
    ]);
    expect(r.code, r.err).toBe(0);
    for (const t of JSON.parse(r.out).tensors as TensorJson[]) expect(t.outlierChannels).toEqual([]);
    const int8 = join(dir, 'int8.onnx');
    expect((await run(['compress', STORIES_MODEL, '--int8', '-o', int8])).code).toBe(0);
    expect(sha256File(out)).toBe(sha256File(int8));
  });

  it('flags that do not fit are usage errors (status 2), found before the model is read', async () => {
    const out = join(tempDir(), 'x.onnx');
    const cases: [string[], RegExp][] = [
      [['--int8', '--outlier-threshold', '4'], /--outlier-threshold applies to --llm-int8/],
      [['--llm-int8', '--outlier-threshold', 'abc', ...CALIB], /--outlier-threshold must be a number/],
      [['--llm-int8', '--outlier-threshold=-1', ...CALIB], /threshold must be between 0 and 1000000/],
      [['--llm-int8', '--int4', ...CALIB], /Choose one storage format/],
      [['--llm-int8'], /llm-int8 needs calibration data: give --calib-generate N/],
    ];
    for (const [flags, message] of cases) {
      const r = await run(['compress', 'missing-model.onnx', ...flags, '-o', out]);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.err).toMatch(message);
    }
  });
});
