/**
 * The calibrated methods through the recipe pipeline and the command line, on the real stories260K
 * model (which ships no tokenizer: it calibrates on sequences it generates itself) and the demo
 * GPT-2 model (text + tokenizer). Few, short sequences keep each calibration to a few seconds.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { resolveFullRecipe, resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { calibrate, calibrationWindows } from '../../src/core/compress/calibration.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { ModelError, isModelError } from '../../src/core/errors.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';
import { idsInput, tempDir } from '../helpers/ort.ts';
import { denseReference, maxAbs, maxAbsDiff, runOutput } from '../helpers/compress.ts';
import { DEMO_DIR, DEMO_MODEL, STORIES_MODEL } from '../helpers/fixtures.ts';
import { runCli as run, runCliCapturingStderr, sha256File as sha } from '../helpers/cli.ts';

const HOW = 'give --calib-generate N, --calib-ids F or --calib-text F --tokenizer D';

const PROBE = [1, 300, 40, 50, 7, 99, 120, 3];

describe('compress --gptq with generated calibration sequences (stories260K)', () => {
  const dir = tempDir();
  const flagsOut = join(dir, 'gptq-flags.onnx');

  it('writes a model onnxruntime runs whose logits match the preview computed from the same calibration', async () => {
    const r = await runCliCapturingStderr([
      'compress',
      STORIES_MODEL,
      '--gptq',
      '--calib-generate',
      '4',
      '--calib-len',
      '32',
      '-o',
      flagsOut,
      '--json',
    ]);
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out); // progress never reaches stdout: it stays one JSON object
    expect(report.calibration).toEqual({ sequences: 4, tokens: 4 * 32 });
    expect(report.tensors).toHaveLength(35);
    for (const t of report.tensors) expect(t.method).toBe('gptq');
    expect(r.err).toMatch(/calibration: generating sequences 4\/4/);
    expect(r.err).toMatch(/calibration: capturing activations, layer groups 20\/20/);

    // the preview, through the core API: same settings → same sequences → same statistics → same weights
    const bytes = readFileSync(STORIES_MODEL);
    const model = parseModel(bytesSource('model.onnx', bytes));
    const steps = resolveRecipe({ steps: [{ method: 'gptq' }] });
    const stats = await calibrate(
      model,
      steps,
      {
        settings: { source: 'generate', samples: 4, length: 32, seed: 0, bos: 1, sequential: true },
      },
      { createSession: createNodeSession, Tensor, inputs: summarizeInputs(model.graph) },
    );
    const result = compressModel(model, steps, { calibration: stats });
    const preview = await runOutput(
      denseReference({ model, result, exported: bytes }),
      idsInput(PROBE),
      'logits',
    );
    const exported = await runOutput(readFileSync(flagsOut), idsInput(PROBE), 'logits');
    const original = await runOutput(bytes, idsInput(PROBE), 'logits');
    expect(maxAbsDiff(exported, preview)).toBeLessThan(1e-3 * maxAbs(preview));
    // and it is a compressed model, not the original passed through
    expect(maxAbsDiff(exported, original)).toBeGreaterThan(1e-2 * maxAbs(original));
  }, 60_000);

  it('a recipe with the same calibration settings reproduces the flags’ file byte for byte; another seed does not', async () => {
    const recipe = (seed: number) => ({
      version: 1,
      calibration: { source: 'generate', samples: 4, length: 32, seed },
      steps: [{ method: 'gptq', options: { bits: '4', blockSize: 32 } }],
    });
    const same = join(dir, 'same.json');
    const other = join(dir, 'other.json');
    writeFileSync(same, JSON.stringify(recipe(0)));
    writeFileSync(other, JSON.stringify(recipe(7)));
    const sameOut = join(dir, 'gptq-recipe.onnx');
    const otherOut = join(dir, 'gptq-other-seed.onnx');
    expect(
      (await runCliCapturingStderr(['compress', STORIES_MODEL, '--recipe', same, '-o', sameOut])).code,
    ).toBe(0);
    expect(
      (await runCliCapturingStderr(['compress', STORIES_MODEL, '--recipe', other, '-o', otherOut])).code,
    ).toBe(0);
    expect(sha(sameOut)).toBe(sha(flagsOut));
    expect(sha(otherOut)).not.toBe(sha(flagsOut));
  }, 60_000);
});

describe('compress --sparsegpt / --wanda', () => {
  it('--sparsegpt 0.5 prunes every tensor to exactly 50 % in the written model', async () => {
    const out = join(tempDir(), 'sparse.onnx');
    const r = await runCliCapturingStderr([
      'compress',
      STORIES_MODEL,
      '--sparsegpt',
      '0.5',
      '--calib-generate',
      '4',
      '--calib-len',
      '32',
      '-o',
      out,
      '--json',
    ]);
    expect(r.code, r.err).toBe(0);
    const inspected = JSON.parse((await run(['inspect', out, '--json'])).out);
    const linear = inspected.tensors.filter((t: { name: string }) => /^l\d\.w/.test(t.name));
    expect(linear).toHaveLength(35);
    for (const t of linear) expect(t.zeros * t.params, t.name).toBe(t.params / 2);
    for (const t of JSON.parse(r.out).tensors) expect(t.method).toBe('sparsegpt');
  }, 60_000);

  it('--wanda 2:4 with --calib-ids keeps 2 of every 4 weights along the input, and --int8 stores them', async () => {
    const dir = tempDir();
    const ids = join(dir, 'calib.txt');
    writeFileSync(ids, '1 300 40 50 7 99 120 3 8 9 10 11 12 13 14 15\n1 2 3 4 5 6 7 8 9 10\n');
    const out = join(dir, 'wanda.onnx');
    const r = await runCliCapturingStderr([
      'compress',
      STORIES_MODEL,
      '--wanda',
      '2:4',
      '--int8',
      '--calib-ids',
      ids,
      '--calib-len',
      '8',
      '-o',
      out,
      '--json',
    ]);
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.calibration).toEqual({ sequences: 4, tokens: 8 + 8 + 8 + 2 });
    for (const t of report.tensors) {
      expect(t.method).toBe('wanda+int8');
      expect(t.sparsity).toBeCloseTo(0.5, 2);
    }
    const logits = await runOutput(readFileSync(out), idsInput(PROBE), 'logits');
    expect(logits.every(Number.isFinite)).toBe(true);
  }, 60_000);

  it('calibrates the demo model on a text with its tokenizer (BOS and context from config.json)', async () => {
    const dir = tempDir();
    const text = join(dir, 'calib.txt');
    writeFileSync(text, 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(8));
    const out = join(dir, 'demo-wanda.onnx');
    const r = await runCliCapturingStderr([
      'compress',
      DEMO_MODEL,
      '--wanda',
      '0.3',
      '--calib-text',
      text,
      '--tokenizer',
      DEMO_DIR,
      '--calib-samples',
      '2',
      '-o',
      out,
      '--json',
    ]);
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.calibration.sequences).toBe(2);
    expect(report.calibration.tokens).toBeGreaterThan(2);
    expect(report.calibration.tokens).toBeLessThanOrEqual(2 * 128); // the config's context caps the windows
    for (const t of report.tensors) expect(t.sparsity).toBeCloseTo(0.3, 2);
  }, 60_000);
});

describe('calibration mistakes are typed errors', () => {
  it('a calibrated method without calibration data names what is missing (flags and recipes alike)', async () => {
    const out = join(tempDir(), 'x.onnx');
    const flags = await run(['compress', STORIES_MODEL, '--gptq', '-o', out]);
    expect(flags.code).toBe(2);
    expect(flags.err).toContain(`gptq needs calibration data: ${HOW}.`);
    const recipe = join(tempDir(), 'r.json');
    writeFileSync(recipe, JSON.stringify({ steps: [{ method: 'sparsegpt' }, { method: 'int4' }] }));
    const fromRecipe = await run(['compress', STORIES_MODEL, '--recipe', recipe, '-o', out]);
    expect(fromRecipe.code).toBe(2);
    expect(fromRecipe.err).toContain(`sparsegpt needs calibration data: ${HOW}.`);
    // in the core, without the CLI: a typed error, not a TypeError from the kernel
    const model = parseModel(bytesSource('model.onnx', readFileSync(STORIES_MODEL)));
    let caught: unknown;
    try {
      compressModel(model, resolveRecipe({ steps: [{ method: 'wanda' }] }));
    } catch (e) {
      caught = e;
    }
    expect(isModelError(caught) && caught.code).toBe('needs-calibration');
    expect((caught as ModelError).message).toMatch(/^wanda needs calibration data/);
  });

  it('calibration ids outside the vocabulary are refused, naming the file and the id', async () => {
    const dir = tempDir();
    const ids = join(dir, 'bad.txt');
    writeFileSync(ids, '1 5 6 7\n1 2 600 4\n');
    const r = await run([
      'compress',
      STORIES_MODEL,
      '--wanda',
      '0.5',
      '--calib-ids',
      ids,
      '-o',
      join(dir, 'x.onnx'),
    ]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      `--calib-ids ${ids}: token id 600 (sequence 2) is outside the model's vocabulary of 512 tokens.`,
    );
  });

  it('flags that do not fit together are usage errors, found before the model is read', async () => {
    const out = join(tempDir(), 'x.onnx');
    const cases: [string[], RegExp][] = [
      [
        ['--gptq', '--calib-generate', '2', '--calib-ids', 'f'],
        /--calib-generate and --calib-ids are two sources/,
      ],
      [['--int4', '--calib-generate', '2'], /--calib-generate gives calibration data, and no step needs it/],
      [['--gptq', '--calib-text', 'f'], /--calib-text needs --tokenizer/],
      [
        ['--wanda', '0.5', '--calib-ids', 'f', '--calib-seed', '3'],
        /--calib-seed applies to --calib-generate/,
      ],
      [
        ['--wanda', '0.5', '--prune', '0.5', '--calib-generate', '2'],
        /--prune and --wanda are each a pruning step/,
      ],
      [
        ['--wanda', '1:3', '--calib-generate', '2'],
        /--wanda takes a sparsity \(0…0.99\) or 2:4 or 4:8, got '1:3'/,
      ],
      [
        ['--sparsegpt', '1.5', '--calib-generate', '2'],
        /--sparsegpt 1.5: sparsegpt.sparsity must be between 0 and 0.99/,
      ],
      [['--gptq', '--kmeans', '16', '--calib-generate', '2'], /--gptq .* can't go with --kmeans/],
      [['--gptq', '--int8', '--block', '64', '--calib-generate', '2'], /--gptq --int8 is per output channel/],
      [['--gptq', '--calib-generate', '0'], /--calib-generate must be a whole number from 1/],
      [['--gptq', '--int8', '--int4', '--calib-generate', '2'], /give one of --int4, --int8/],
      [['--gptq', '--recipe', 'r.json', '--calib-generate', '2'], /--recipe and --gptq can't be combined/],
      [['--copy', '--calib-generate', '2'], /--copy rewrites the model unchanged: drop --calib-generate/],
      [['--gptq', '--calib-generate', '2', '--calib-len', '1'], /--calib-len must be a whole number from 2/],
    ];
    for (const [flags, message] of cases) {
      const r = await run(['compress', '/nonexistent/model.onnx', ...flags, '-o', out]);
      expect(r.err, flags.join(' ')).toMatch(message);
      expect(r.code, flags.join(' ')).toBe(2);
    }
  });

  it('a recipe’s calibration settings are validated with typed errors', () => {
    const steps = [{ method: 'gptq' }];
    const bad: [unknown, RegExp][] = [
      [[1], /"calibration" must be an object/],
      [{ source: 'web' }, /calibration.source must be one of generate, ids, text, got "web"/],
      [{ source: 'generate', samples: 0 }, /calibration.samples must be a whole number from 1/],
      [{ source: 'generate', length: 2.5 }, /calibration.length must be a whole number from 2/],
      [{ source: 'ids', data: [[1, 2]] }, /calibration has no field 'data'.*not part of a recipe/],
      [{ source: 'generate', sequential: 'yes' }, /calibration.sequential must be true or false/],
    ];
    for (const [calibration, message] of bad) {
      let caught: unknown;
      try {
        resolveFullRecipe({ calibration, steps });
      } catch (e) {
        caught = e;
      }
      expect(isModelError(caught) && caught.code, JSON.stringify(calibration)).toBe('invalid-recipe');
      expect((caught as Error).message).toMatch(message);
    }
    expect(resolveFullRecipe({ calibration: { source: 'generate' }, steps }).calibration).toEqual({
      source: 'generate',
      samples: 32,
      seed: 0,
      sequential: true,
    });
  });

  it('calibration data is cut into windows of the asked length, at most the asked number', () => {
    expect(
      calibrationWindows(
        [
          [1, 2, 3, 4, 5, 6, 7],
          [8, 9, 10],
        ],
        10,
        3,
      ),
    ).toEqual([
      [1, 2, 3],
      [4, 5, 6],
      [8, 9, 10],
    ]);
    expect(calibrationWindows([[1, 2, 3, 4, 5, 6, 7, 8]], 2, 3)).toEqual([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    expect(() => calibrationWindows([[5]], 4, 3)).toThrow(/no sequence of at least 2 tokens/);
  });
});

describe('calibration progress', () => {
  it('counts sequences when one capture runs on the original model (a recipe with "sequential": false)', async () => {
    const dir = tempDir();
    const recipe = join(dir, 'recipe.json');
    writeFileSync(
      recipe,
      JSON.stringify({
        calibration: { source: 'generate', samples: 2, length: 16, sequential: false },
        steps: [{ method: 'wanda', options: { sparsity: 0.3 } }],
      }),
    );
    const r = await runCliCapturingStderr([
      'compress',
      STORIES_MODEL,
      '--recipe',
      recipe,
      '-o',
      join(dir, 'w.onnx'),
    ]);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/calibration: capturing activations, sequences 2\/2/);
    expect(r.err).not.toMatch(/layer groups/);
  });
});
