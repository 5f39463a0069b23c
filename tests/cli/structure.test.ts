/**
 * Structured pruning from the command line: --heads / --neurons / --blocks write a smaller model that
 * onnxruntime-node runs, compose with the storage formats (pruned first, then quantized: the same
 * file as pruning and quantizing through the API), read the same from a recipe, and refuse what they
 * cannot do before any work.
 */
import { readFileSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { pruneStructure } from '../../src/core/compress/structure.ts';
import { idsInput, tempDir } from '../helpers/ort.ts';
import { maxAbs, maxAbsDiff, runOutput } from '../helpers/compress.ts';
import { mlpModel } from '../helpers/models.ts';
import { DEMO_MODEL, STORIES_MODEL } from '../helpers/fixtures.ts';
import { cacheFeeds } from '../helpers/demo.ts';
import { runCli as run, runCliCapturingStderr } from '../helpers/cli.ts';

const PROBE = [1, 300, 40, 50, 7, 99, 120, 3];

/** The demo's feeds for one of its (pruned) files: the KV cache empty, shaped by the heads it declares. */
const demoFeeds = (bytes: Uint8Array) => cacheFeeds(bytes, [5, 17, 300, 42, 9, 1000, 77, 3]);

describe('compress --heads / --neurons / --blocks', () => {
  const dir = tempDir();

  it('writes a smaller demo model that onnxruntime runs, and reports what it removed', async () => {
    const out = join(dir, 'demo-structured.onnx');
    const r = await run([
      'compress',
      DEMO_MODEL,
      '--heads',
      '0.5',
      '--neurons',
      '0.5',
      '--blocks',
      '1',
      '-o',
      out,
      '--json',
    ]);
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.structure).toMatchObject({
      headsBefore: 36,
      headsAfter: 15, // 5 blocks × 3
      neuronsBefore: 4608,
      neuronsAfter: 5 * 384,
      blocksAfter: 5,
      importance: 'magnitude',
    });
    expect(report.structure.paramsAfter).toBeLessThan(report.structure.paramsBefore * 0.6);
    expect(report.inputBytes).toBe(statSync(DEMO_MODEL).size);
    expect(report.outputBytes).toBe(statSync(out).size);
    expect(report.outputBytes).toBeLessThan(report.inputBytes * 0.6);
    const bytes = readFileSync(out);
    const logits = await runOutput(bytes, demoFeeds(bytes), 'logits', {});
    expect(logits.length).toBe(8 * 2048);
    expect(maxAbs(logits)).toBeGreaterThan(0.1);
  });

  it('composes with int4: the file equals pruning then quantizing through the API', async () => {
    const out = join(dir, 'stories-heads-int4.onnx');
    const r = await run([
      'compress',
      STORIES_MODEL,
      '--heads',
      '0.25',
      '--neurons',
      '0.25',
      '--multiple',
      '8',
      '--int4',
      '-o',
      out,
    ]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/structure: heads 40 -> 30, MLP neurons 860 -> 640/);
    const source = parseModel(bytesSource('model.onnx', readFileSync(STORIES_MODEL)));
    const pruned = await pruneStructure(source, {
      heads: 0.25,
      neurons: 0.25,
      multiple: 8,
      importance: 'magnitude',
    });
    const steps = resolveRecipe({ steps: [{ method: 'int4' }] });
    const expected = exportCompressed(pruned.model, compressModel(pruned.model, steps)).model;
    const written = readFileSync(out);
    expect(Buffer.compare(written, Buffer.from(expected))).toBe(0);
    const m = parseModel(bytesSource('out.onnx', written));
    expect(m.graph.node.filter((n) => n.op_type === 'MatMulNBits').length).toBeGreaterThan(0);
    const a = await runOutput(written, idsInput(PROBE), 'logits', {});
    expect(a.length).toBe(PROBE.length * 512);
    expect(maxAbs(a)).toBeGreaterThan(0.1);
  });

  it('reads the same settings from a recipe\'s "structure" (steps may be left out)', async () => {
    const recipe = join(dir, 'structure.json');
    writeFileSync(
      recipe,
      JSON.stringify({ version: 1, structure: { heads: 0.25, neurons: 0.3, blocks: 1 } }),
    );
    const a = join(dir, 'recipe.onnx');
    const b = join(dir, 'flags.onnx');
    expect((await run(['compress', STORIES_MODEL, '--recipe', recipe, '-o', a])).code).toBe(0);
    expect(
      (
        await run([
          'compress',
          STORIES_MODEL,
          '--heads',
          '0.25',
          '--neurons',
          '0.3',
          '--blocks',
          '1',
          '-o',
          b,
        ])
      ).code,
    ).toBe(0);
    expect(Buffer.compare(readFileSync(a), readFileSync(b))).toBe(0);
  });

  it('activation importance calibrates on the --calib-… data', async () => {
    const out = join(dir, 'stories-activation.onnx');
    const r = await runCliCapturingStderr([
      'compress',
      STORIES_MODEL,
      '--heads',
      '0.25',
      '--importance',
      'activation',
      '--calib-generate',
      '4',
      '--calib-len',
      '32',
      '-o',
      out,
      '--json',
    ]);
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.structure).toMatchObject({ importance: 'activation', headsAfter: 30 });
    const logits = await runOutput(readFileSync(out), idsInput(PROBE), 'logits', {});
    expect(maxAbs(logits)).toBeGreaterThan(0.1);
  });

  it('taylor importance takes its gradients on the --calib-… data', async () => {
    const out = join(dir, 'stories-taylor.onnx');
    const r = await runCliCapturingStderr([
      'compress',
      STORIES_MODEL,
      '--heads',
      '0.25',
      '--neurons',
      '0.25',
      '--importance',
      'taylor',
      '--calib-generate',
      '3',
      '--calib-len',
      '16',
      '-o',
      out,
      '--json',
    ]);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/gradients for Taylor importance \(training engine\) 3\/3/);
    const report = JSON.parse(r.out);
    expect(report.structure).toMatchObject({ importance: 'taylor', headsAfter: 30 });
    const logits = await runOutput(readFileSync(out), idsInput(PROBE), 'logits', {});
    expect(maxAbs(logits)).toBeGreaterThan(0.1);
  });

  it('refuses impossible or incomplete requests with a clear message, writing nothing', async () => {
    const out = join(dir, 'never.onnx');
    const cases: [string[], number, RegExp][] = [
      [['--heads', '1'], 2, /--heads is the share to remove, from 0 to below 1/],
      [['--importance', 'activation'], 2, /--importance applies to --heads, --neurons or --blocks/],
      [['--heads', '0.5', '--importance', 'activation'], 2, /activation importance needs calibration data/],
      [
        ['--heads', '0.5', '--importance', 'fisher'],
        2,
        /importance must be one of magnitude, activation, taylor/,
      ],
      [['--heads', '0.5', '--importance', 'taylor'], 2, /taylor importance needs calibration data/],
      [['--blocks', '5'], 1, /0 to 4/],
      [['--heads', '0.5', '--include', 'l1.*'], 2, /--include selects the tensors of a method step/],
    ];
    for (const [flags, code, message] of cases) {
      const r = await run(['compress', STORIES_MODEL, ...flags, '-o', out]);
      expect(r.code, flags.join(' ')).toBe(code);
      expect(r.err, flags.join(' ')).toMatch(message);
    }
    const mlp = join(dir, 'mlp.onnx');
    writeFileSync(mlp, mlpModel());
    const r = await run(['compress', mlp, '--heads', '0.5', '-o', out]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/no transformer block/);
    expect(existsSync(out)).toBe(false);
  });
});

it('the pruned demo model is the same computation onnxruntime gives for the API plan', async () => {
  // a check that the CLI's output is the API's: same plan → same logits
  const source = parseModel(bytesSource('model.onnx', readFileSync(DEMO_MODEL)));
  const pruned = await pruneStructure(source, { neurons: 0.5, importance: 'magnitude', scope: 'global' });
  const dir = tempDir();
  const out = join(dir, 'global.onnx');
  const r = await run(['compress', DEMO_MODEL, '--neurons', '0.5', '--structure-scope', 'global', '-o', out]);
  expect(r.code, r.err).toBe(0);
  const written = readFileSync(out);
  const a = await runOutput(written, demoFeeds(written), 'logits', {});
  const b = await runOutput(pruned.bytes, demoFeeds(pruned.bytes), 'logits', {});
  expect(maxAbsDiff(a, b)).toBe(0);
});
