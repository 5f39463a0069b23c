/**
 * `compress --awq` on the real stories260K model, calibrated on sequences it generates itself: the
 * written model runs in onnxruntime-node with the logits of the preview computed from the same
 * calibration, a recipe with the same settings writes the same bytes, and flags that do not fit
 * are usage errors.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { calibrate } from '../../src/core/compress/calibration.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';
import { idsInput, tempDir } from '../helpers/ort.ts';
import { denseReference, maxAbs, maxAbsDiff, opTypes, runOutput } from '../helpers/compress.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';
import { runCli as run, sha256File as sha } from '../helpers/cli.ts';

const PROBE = [1, 300, 40, 50, 7, 99, 120, 3];
const CALIB = ['--calib-generate', '3', '--calib-len', '24'];

describe('compress --awq (stories260K, generated calibration sequences)', () => {
  const dir = tempDir();
  const flagsOut = join(dir, 'awq-flags.onnx');

  it('writes a model onnxruntime runs with the logits of the preview from the same calibration', async () => {
    const r = await run([
      'compress',
      STORIES_MODEL,
      '--awq',
      '--block',
      '16',
      ...CALIB,
      '-o',
      flagsOut,
      '--json',
    ]);
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.calibration).toEqual({ sequences: 3, tokens: 3 * 24 });
    expect(report.tensors).toHaveLength(35);
    for (const t of report.tensors) expect(t.method).toBe('awq');
    const written = readFileSync(flagsOut);
    expect(opTypes(written).filter((o) => o === 'MatMulNBits')).toHaveLength(35);

    const bytes = readFileSync(STORIES_MODEL);
    const model = parseModel(bytesSource('model.onnx', bytes));
    const steps = resolveRecipe({ steps: [{ method: 'awq', options: { blockSize: 16 } }] });
    const stats = await calibrate(
      model,
      steps,
      { settings: { source: 'generate', samples: 3, length: 24, seed: 0, bos: 1, sequential: true } },
      { createSession: createNodeSession, Tensor, inputs: summarizeInputs(model.graph) },
    );
    const result = compressModel(model, steps, { calibration: stats });
    const preview = await runOutput(
      denseReference({ model, result, exported: bytes }),
      idsInput(PROBE),
      'logits',
    );
    const exported = await runOutput(written, idsInput(PROBE), 'logits');
    const original = await runOutput(bytes, idsInput(PROBE), 'logits');
    expect(maxAbsDiff(exported, preview)).toBeLessThan(1e-3 * maxAbs(preview));
    expect(maxAbsDiff(exported, original)).toBeGreaterThan(1e-2 * maxAbs(original));
  }, 120_000);

  it('a recipe with the same settings writes the same bytes; --awq --gptq rounds with GPTQ', async () => {
    const recipe = join(dir, 'awq.json');
    writeFileSync(
      recipe,
      JSON.stringify({
        version: 1,
        calibration: { source: 'generate', samples: 3, length: 24 },
        steps: [{ method: 'awq', options: { blockSize: 16 } }],
      }),
    );
    const fromRecipe = join(dir, 'awq-recipe.onnx');
    const r = await run(['compress', STORIES_MODEL, '--recipe', recipe, '-o', fromRecipe]);
    expect(r.code, r.err).toBe(0);
    expect(sha(fromRecipe)).toBe(sha(flagsOut));

    const withGptq = join(dir, 'awq-gptq.onnx');
    const g = await run([
      'compress',
      STORIES_MODEL,
      '--awq',
      '--gptq',
      '--block',
      '16',
      ...CALIB,
      '-o',
      withGptq,
    ]);
    expect(g.code, g.err).toBe(0);
    expect(sha(withGptq)).not.toBe(sha(flagsOut));
    const logits = await runOutput(readFileSync(withGptq), idsInput(PROBE), 'logits');
    expect(logits.every(Number.isFinite)).toBe(true);
  }, 120_000);

  it('flags that do not fit are usage errors, and --awq without calibration says how to get it', async () => {
    const out = join(tempDir(), 'x.onnx');
    const cases: [string[], RegExp][] = [
      [['--awq', '--int8', ...CALIB], /--awq quantizes to int4 block-wise: it can't go with --int8/],
      [
        ['--awq', '--kmeans', '16', ...CALIB],
        /--awq quantizes to int4 block-wise: it can't go with --kmeans/,
      ],
      [['--awq', '--block', '24', ...CALIB], /--block 24: awq.blockSize must be one of 16, 32, 64, 128/],
      [['--awq'], /awq needs calibration data: give --calib-generate N/],
    ];
    for (const [flags, message] of cases) {
      const r = await run(['compress', STORIES_MODEL, ...flags, '-o', out]);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.err).toMatch(message);
    }
  });
});
