/** `compress --workers N`: the CLI's kernels on worker_threads write the same file as one thread, and onnxruntime-node runs it. */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.ts';
import { ort } from '../helpers/ort.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';
import { DEMO_MODEL } from '../helpers/fixtures.ts';
import { cacheFeeds } from '../helpers/demo.ts';

const DEMO = DEMO_MODEL;

describe('compress --workers', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cs-workers-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('two workers and one thread write identical bytes, and onnxruntime-node runs the file', async () => {
    const one = join(dir, 'one.onnx');
    const two = join(dir, 'two.onnx');
    const recipe = ['--prune', '0.4', '--kmeans', '16'];
    expect((await runCli(['compress', DEMO, ...recipe, '--workers', '1', '-o', one])).code).toBe(0);
    expect((await runCli(['compress', DEMO, ...recipe, '--workers', '2', '-o', two])).code).toBe(0);
    expect(readFileSync(two).equals(readFileSync(one))).toBe(true);
    const session = await ort.InferenceSession.create(two, { extra: EXACT_WEIGHT_ONLY });
    // the demo takes its KV cache: fed empty
    const out = await session.run(cacheFeeds(new Uint8Array(readFileSync(two)), [1, 2, 3]));
    expect(out.logits.dims).toEqual([1, 3, 2048]);
  });

  it('with external data (the streamed export) two workers and one thread write identical files', async () => {
    const recipe = ['--int4', '--block', '32', '--external-data'];
    const outs = [];
    for (const workers of ['1', '2']) {
      // the same file name in each: the .onnx names its data file
      mkdirSync(join(dir, `streamed-${workers}`));
      const out = join(dir, `streamed-${workers}`, 'model.onnx');
      const r = await runCli(['compress', DEMO, ...recipe, '--workers', workers, '-o', out]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      outs.push({ model: readFileSync(out), data: readFileSync(`${out}_data`) });
    }
    expect(outs[1].data.byteLength).toBeGreaterThan(100_000);
    expect(outs[1].data.equals(outs[0].data)).toBe(true);
    expect(outs[1].model.equals(outs[0].model)).toBe(true);
  });

  it('refuses a worker count that is not a whole number ≥ 1', async () => {
    const r = await runCli(['compress', DEMO, '--int4', '--workers', '0', '-o', join(dir, 'x.onnx')]);
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/--workers must be a whole number from 1 to 256/);
  });
});
