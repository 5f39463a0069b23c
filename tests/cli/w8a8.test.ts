/**
 * `compress --w8a8` on stories260K (calibrated on sequences it generates itself), the recipe method
 * `w8a8`, and `methods` listing it. Short calibrations keep each run to a few seconds.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { idsInput, ort, tempDir } from '../helpers/ort.ts';
import { opTypes } from '../helpers/compress.ts';
import { DEMO_MODEL, STORIES_MODEL } from '../helpers/fixtures.ts';
import { runCli as run, sha256File } from '../helpers/cli.ts';

/** Runs the CLI with process.stderr swallowed (calibration progress goes there). */
async function runQuiet(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    return await run(args);
  } finally {
    process.stderr.write = write;
  }
}

describe('compress --w8a8', () => {
  const dir = tempDir();
  const flagsOut = join(dir, 'w8a8-flags.onnx');
  const CALIB = ['--calib-generate', '4', '--calib-len', '32'];

  it('writes int8 weights with QDQ activations that onnxruntime runs, and a recipe reproduces it byte for byte', async () => {
    const source = sha256File(STORIES_MODEL);
    const r = await runQuiet(['compress', STORIES_MODEL, '--w8a8', ...CALIB, '-o', flagsOut, '--json']);
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.calibration).toEqual({ sequences: 4, tokens: 4 * 32 });
    expect(report.tensors).toHaveLength(35);
    for (const t of report.tensors) {
      expect(t.method).toBe('w8a8');
      expect(t.bitsPerWeight).toBeGreaterThanOrEqual(8);
      expect(t.bitsPerWeight).toBeLessThanOrEqual(8.5); // int8 codes plus a float32 scale per output channel
    }
    expect(sha256File(STORIES_MODEL)).toBe(source);
    const bytes = readFileSync(flagsOut);
    const ops = opTypes(bytes);
    expect(ops.filter((o) => o === 'QuantizeLinear')).toHaveLength(35);
    const session = await ort.InferenceSession.create(bytes);
    const logits = (await session.run(idsInput([1, 300, 40, 50, 7])))['logits'].data as Float32Array;
    await session.release();
    expect(logits.every(Number.isFinite)).toBe(true);

    const recipe = join(dir, 'w8a8.json');
    writeFileSync(
      recipe,
      JSON.stringify({
        version: 1,
        calibration: { source: 'generate', samples: 4, length: 32 },
        steps: [{ method: 'w8a8', options: { activation: 'symmetric', range: 'minmax' } }],
      }),
    );
    const recipeOut = join(dir, 'w8a8-recipe.onnx');
    const again = await runQuiet(['compress', STORIES_MODEL, '--recipe', recipe, '-o', recipeOut]);
    expect(again.code, again.err).toBe(0);
    expect(sha256File(recipeOut)).toBe(sha256File(flagsOut));
  }, 60_000);

  it('combines with a pruning step, and refuses a second storage format or missing calibration', async () => {
    const pruned = join(dir, 'pruned.onnx');
    const r = await runQuiet([
      'compress',
      STORIES_MODEL,
      '--prune',
      '0.3',
      '--w8a8',
      ...CALIB,
      '-o',
      pruned,
      '--json',
    ]);
    expect(r.code, r.err).toBe(0);
    for (const t of JSON.parse(r.out).tensors) expect(t.method).toBe('prune+w8a8');

    const two = await run([
      'compress',
      STORIES_MODEL,
      '--w8a8',
      '--int4',
      ...CALIB,
      '-o',
      join(dir, 'x.onnx'),
    ]);
    expect(two.code).toBe(2);
    expect(two.err).toMatch(/Choose one storage format/);
    const none = await run(['compress', STORIES_MODEL, '--w8a8', '-o', join(dir, 'y.onnx')]);
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/w8a8 needs calibration data: give --calib-generate N/);
  }, 60_000);

  it('refuses a tied embedding (also read by a Gather) with a typed error, writing nothing', async () => {
    const demo = DEMO_MODEL;
    const out = join(dir, 'tied.onnx');
    const r = await runQuiet([
      'compress',
      demo,
      '--w8a8',
      '--embeddings',
      '--lm-head',
      '--exclude',
      'transformer.wpe.weight',
      '--calib-generate',
      '2',
      '--calib-len',
      '16',
      '-o',
      out,
    ]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/'transformer\.wte\.weight' is also read by a Gather node/);
    expect(existsSync(out)).toBe(false);
  }, 60_000);

  it('is listed by `methods` with the statistic it reads', async () => {
    const r = await run(['methods', '--json']);
    expect(r.code).toBe(0);
    const w8a8 = JSON.parse(r.out).find((m: { id: string }) => m.id === 'w8a8');
    expect(w8a8).toMatchObject({ role: 'encode', needs: ['inputRange'] });
    expect(w8a8.options.map((o: { key: string }) => o.key)).toEqual(['activation', 'range']);
  });
});
