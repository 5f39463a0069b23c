import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { STORIES_DIR } from '../helpers/fixtures.ts';
import { runCli as run, sha256File } from '../helpers/cli.ts';
import { idsInput, runPath, tempDir } from '../helpers/ort.ts';

const STORIES = join(STORIES_DIR, 'model.onnx');

describe('compression-studio distill', () => {
  it('trains a 2:4-pruned student on generated sequences, reports perplexity before and after, writes a model onnxruntime runs', async () => {
    const dir = tempDir();
    const pruned = join(dir, 'pruned.onnx');
    expect((await run(['compress', STORIES, '--nm', '2:4', '-o', pruned])).code).toBe(0);
    const before = sha256File(pruned);
    const out = join(dir, 'distilled.onnx');
    const r = await run([
      'distill',
      STORIES,
      pruned,
      '-o',
      out,
      '--train-generate',
      '6',
      '--steps',
      '6',
      '--batch',
      '2',
      '--seq',
      '32',
      '--lr',
      '2e-3',
      '--json',
    ]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(report).toMatchObject({ steps: 6, batch: 2, seq: 32, temperature: 2, alpha: 0.5, train: 'all' });
    expect(report.history).toHaveLength(6);
    expect(report.heldOut.from).toBe('1 more generated sequence');
    expect(report.perplexityAfter).toBeLessThan(report.perplexityBefore);
    expect(sha256File(pruned)).toBe(before);
    // same graph and names as the student, new weights; onnxruntime runs it
    const written = parseModel(bytesSource('d.onnx', new Uint8Array(readFileSync(out))));
    const student = parseModel(bytesSource('p.onnx', new Uint8Array(readFileSync(pruned))));
    expect(written.graph.node.map((n) => n.op_type)).toEqual(student.graph.node.map((n) => n.op_type));
    expect(written.graph.initializer.map((t) => t.name)).toEqual(
      student.graph.initializer.map((t) => t.name),
    );
    const logits = (await runPath(out, idsInput([1, 2, 3, 4]))).logits;
    expect(logits.dims).toEqual([1, 4, 512]);
  }, 300_000);

  it('refuses a quantized student (status 1), missing training data and two sources (status 2), writing nothing', async () => {
    const dir = tempDir();
    const q4 = join(dir, 'q4.onnx');
    expect((await run(['compress', STORIES, '--int4', '-o', q4])).code).toBe(0);
    const out = join(dir, 'out.onnx');
    const quantized = await run(['distill', STORIES, q4, '-o', out, '--train-generate', '2']);
    expect(quantized.code).toBe(1);
    expect(quantized.err).toMatch(/MatMulNBits.*Distil the float/);
    const noData = await run(['distill', STORIES, STORIES, '-o', out]);
    expect(noData.code).toBe(2);
    expect(noData.err).toMatch(/no training data/);
    const two = await run([
      'distill',
      STORIES,
      STORIES,
      '-o',
      out,
      '--train-generate',
      '2',
      '--train-ids',
      'x',
    ]);
    expect(two.code).toBe(2);
    const badTrain = await run([
      'distill',
      STORIES,
      STORIES,
      '-o',
      out,
      '--train-generate',
      '2',
      '--train',
      'some',
    ]);
    expect(badTrain.code).toBe(2);
    expect(badTrain.err).toMatch(/--train must be one of all, no-embeddings, norms-biases/);
    expect(existsSync(out)).toBe(false);
  });
});
