/**
 * `distill --qat int4|int8 --learn-scales`: stories260K trained with LSQ-style learned scales, the
 * report says so, the written file stores the learned scales (not the kernel's scales of the trained
 * weights) and onnxruntime runs it; the flag's usage errors.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { bytesSource, parseModel, readTensor } from '../../src/core/onnx/model.ts';
import { STORIES_DIR } from '../helpers/fixtures.ts';
import { QUICK_DISTILL_ARGS, runCli as run } from '../helpers/cli.ts';
import { idsInput, runPath, tempDir } from '../helpers/ort.ts';

const STORIES = join(STORIES_DIR, 'model.onnx');

describe('compression-studio distill --learn-scales', () => {
  it('--qat int8 --learn-scales writes the learned scales, and onnxruntime runs the file', async () => {
    const out = join(tempDir(), 'lsq.onnx');
    const r = await run([
      'distill',
      STORIES,
      STORIES,
      '-o',
      out,
      '--qat',
      'int8',
      '--learn-scales',
      ...QUICK_DISTILL_ARGS,
    ]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.qat).toMatchObject({ method: 'int8', learnScales: true, scaleLr: 1 });
    const written = parseModel(bytesSource('q.onnx', new Uint8Array(readFileSync(out))));
    expect(written.graph.node.some((n) => n.op_type === 'DequantizeLinear')).toBe(true);
    // the stored scales are not what int8's kernel computes for the stored weights (they were trained)
    const scales = written.graph.initializer.filter(
      (t) => t.data_type === DataType.FLOAT && t.name.endsWith('_scale'),
    );
    expect(scales.length).toBeGreaterThan(0);
    const original = parseModel(bytesSource('m.onnx', new Uint8Array(readFileSync(STORIES))));
    const plain = compressModel(original, resolveRecipe({ steps: [{ method: 'int8' }] }));
    const plainScales = new Map(
      plain.outcomes.map((o) => [
        `${o.candidate.name}_scale`,
        (o.encoder!.encoding as { scales: Float32Array }).scales,
      ]),
    );
    let differs = 0;
    for (const t of scales) {
      const mine = Float32Array.from(readTensor(written, t) as Float32Array);
      if (plainScales.has(t.name) && mine.some((v, i) => v !== plainScales.get(t.name)![i])) differs++;
    }
    expect(differs).toBe(scales.length);
    const logits = (await runPath(out, idsInput([1, 2, 3, 4]))).logits;
    expect(logits.dims).toEqual([1, 4, 512]);
  }, 300_000);

  it('refuses --learn-scales without --qat or with k-means, and --scale-lr without it (status 2), writing nothing', async () => {
    const out = join(tempDir(), 'out.onnx');
    const base = ['distill', STORIES, STORIES, '-o', out, '--train-generate', '2'];
    const cases: [string[], RegExp][] = [
      [['--learn-scales'], /--learn-scales is only read with --qat/],
      [
        ['--qat', 'kmeans', '--learn-scales'],
        /--learn-scales is read with --qat int4 or int8, not --qat kmeans/,
      ],
      [['--qat', 'int4', '--scale-lr', '0.1'], /--scale-lr is only read with --learn-scales/],
      [['--qat', 'int4', '--learn-scales', '--scale-lr', '0'], /--scale-lr must be a number in \(0, 100\]/],
    ];
    for (const [flags, message] of cases) {
      const r = await run([...base, ...flags]);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.err).toMatch(message);
    }
    expect(existsSync(out)).toBe(false);
  });
});
