import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { ModelError } from '../../src/core/errors.ts';
import { decodeModelProto } from '../../src/core/onnx/proto.ts';
import { ort, runPath, tempDir, idsInput } from '../helpers/ort.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';
import { STORIES_DIR } from '../helpers/fixtures.ts';
import { runCli as run, sha256File } from '../helpers/cli.ts';

const STORIES = join(STORIES_DIR, 'model.onnx');

const sha = sha256File;

describe('compression-studio compress', () => {
  it('--int4 --json writes a model onnxruntime runs and reports every tensor; the source is untouched', async () => {
    const before = sha(STORIES);
    const dir = tempDir();
    const out = join(dir, 'q4.onnx');
    const { code, out: stdout } = await run([
      'compress',
      STORIES,
      '--int4',
      '--block',
      '32',
      '-o',
      out,
      '--json',
    ]);
    expect(code).toBe(0);
    const report = JSON.parse(stdout);
    expect(report.inputBytes).toBe(statSync(STORIES).size);
    expect(report.outputBytes).toBe(statSync(out).size);
    expect(report.outputBytes).toBeLessThan(report.inputBytes * 0.7);
    expect(report.tensors).toHaveLength(35); // 5 layers × 7 linear weights; the embedding is opt-in
    for (const t of report.tensors) {
      expect(Object.keys(t)).toEqual(
        expect.arrayContaining(['name', 'method', 'bitsPerWeight', 'sparsity', 'mse', 'snrDb']),
      );
      expect(t.method).toBe('int4');
      // 4-bit codes + a float32 scale per 32 weights; w2 has K = 172, padded to 6 blocks
      expect(t.bitsPerWeight).toBeCloseTo(t.name.endsWith('.w2') ? (192 * 4 + 6 * 32) / 172 : 5, 9);
      expect(t.snrDb).toBeGreaterThan(10);
    }
    const logits = (await runPath(out, idsInput([1, 300, 40, 50]))).logits;
    expect(logits.dims).toEqual([1, 4, 512]);
    expect(sha(STORIES)).toBe(before);
  });

  it('shorthands compose: --prune 0.5 --global then --kmeans 16', async () => {
    const out = join(tempDir(), 'pk.onnx');
    const { code, out: stdout } = await run([
      'compress',
      STORIES,
      '--prune',
      '0.5',
      '--global',
      '--kmeans',
      '16',
      '-o',
      out,
      '--json',
    ]);
    expect(code).toBe(0);
    const report = JSON.parse(stdout);
    expect(report.tensors.every((t: { method: string }) => t.method === 'prune+kmeans')).toBe(true);
    expect(report.sparsity).toBeCloseTo(0.5, 3);
    const types = decodeModelProto(new Uint8Array(readFileSync(out))).graph!.node.map((n) => n.op_type);
    expect(types).toContain('Gather');
  });

  it('--nm 2:4 gives exactly 50 % sparsity', async () => {
    const out = join(tempDir(), 'nm.onnx');
    const { out: stdout } = await run(['compress', STORIES, '--nm', '2:4', '-o', out, '--json']);
    expect(JSON.parse(stdout).sparsity).toBe(0.5);
  });

  it('a --recipe file with selectors, and --external-data writes a data file onnxruntime loads', async () => {
    const dir = tempDir();
    const recipe = join(dir, 'recipe.json');
    writeFileSync(
      recipe,
      JSON.stringify({
        version: 1,
        steps: [
          { method: 'prune', options: { sparsity: 0.2 }, select: { include: ['l*.w1', 'l*.w3'] } },
          { method: 'int8', select: { exclude: ['/^l0\\./'], embeddings: true } },
        ],
      }),
    );
    const out = join(dir, 'r.onnx');
    const { code, out: stdout } = await run([
      'compress',
      STORIES,
      '--recipe',
      recipe,
      '--external-data',
      '-o',
      out,
      '--json',
    ]);
    expect(code).toBe(0);
    const report = JSON.parse(stdout);
    const byName = Object.fromEntries(report.tensors.map((t: { name: string }) => [t.name, t]));
    expect(byName['l1.w1'].method).toBe('prune+int8');
    expect(byName['l0.w1'].method).toBe('prune');
    expect(byName['l0.wq']).toBeUndefined();
    expect(byName['emb'].method).toBe('int8');
    expect(existsSync(join(dir, 'r.onnx_data'))).toBe(true);
    const session = await ort.InferenceSession.create(out, { extra: EXACT_WEIGHT_ONLY });
    const logits = (await session.run(idsInput([1, 2, 3]))).logits;
    expect(logits.dims).toEqual([1, 3, 512]);
  });

  it('refuses to overwrite the source and explains bad flags', async () => {
    const same = await run(['compress', STORIES, '--int8', '-o', STORIES]);
    expect(same.code).toBe(1);
    expect(same.err).toMatch(/Refusing to overwrite the source model/);
    const two = await run(['compress', STORIES, '--int8', '--fp16', '-o', join(tempDir(), 'x.onnx')]);
    expect(two.err).toMatch(/Choose one storage format/);
    const block = await run([
      'compress',
      STORIES,
      '--int4',
      '--block',
      '48',
      '-o',
      join(tempDir(), 'x.onnx'),
    ]);
    expect(block.err).toMatch(/blockSize must be one of 16, 32, 64, 128, got 48/);
  });

  it('methods --json lists every method with its option schema', async () => {
    const { out } = await run(['methods', '--json']);
    const ids = JSON.parse(out).map((m: { id: string }) => m.id);
    expect(ids).toEqual([
      'prune',
      'int8',
      'int4',
      'kmeans',
      'fp16',
      'gptq',
      'sparsegpt',
      'wanda',
      'llm-int8',
      'w8a8',
      'awq',
    ]);
    const needs = Object.fromEntries(
      JSON.parse(out).map((m: { id: string; needs: string[] }) => [m.id, m.needs]),
    );
    expect(needs).toMatchObject({
      int4: [],
      gptq: ['hessian'],
      sparsegpt: ['hessian'],
      wanda: ['inputNorms'],
      'llm-int8': ['inputNorms'],
      awq: ['hessian', 'inputNorms'],
    });
  });
});

describe('recipe validation', () => {
  const bad: [unknown, RegExp][] = [
    [{}, /"steps" must be a list/],
    [{ steps: [] }, /"steps" is empty/],
    [{ steps: [{ method: 'quip' }] }, /Unknown compression method 'quip'/],
    [{ steps: [{ method: 'gptq', options: { bits: '3' } }] }, /gptq\.bits must be one of 4, 8, got "3"/],
    [
      { steps: [{ method: 'prune', options: { sparsity: 1.5 } }] },
      /prune\.sparsity must be between 0 and 0\.99, got 1\.5/,
    ],
    [
      { steps: [{ method: 'kmeans', options: { clusters: 2.5 } }] },
      /kmeans\.clusters must be a whole number/,
    ],
    [{ steps: [{ method: 'int8', options: { bits: 8 } }] }, /int8 has no option 'bits'/],
    [{ steps: [{ method: 'int8', select: { include: ['/[/'] } }] }, /not a valid pattern/],
    [{ version: 2, steps: [{ method: 'int8' }] }, /version 2 is not supported/],
  ];
  for (const [recipe, message] of bad) {
    it(`rejects ${JSON.stringify(recipe)}`, () => {
      expect(() => resolveRecipe(recipe)).toThrow(ModelError);
      expect(() => resolveRecipe(recipe)).toThrow(message);
    });
  }

  it('fills defaults from the method schema', () => {
    expect(resolveRecipe({ steps: [{ method: 'int4' }] })[0].options).toEqual({
      blockSize: 32,
      symmetric: true,
      format: 'matmulnbits',
    });
  });
});
