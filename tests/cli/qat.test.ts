/**
 * `distill --qat`: stories260K trained against its own int4 / k-means quantization, the written file
 * stored in the method's format and run by onnxruntime; the QAT flags' usage errors.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { STORIES_DIR } from '../helpers/fixtures.ts';
import { QUICK_DISTILL_ARGS, runCli as run } from '../helpers/cli.ts';
import { idsInput, runPath, tempDir } from '../helpers/ort.ts';

const STORIES = join(STORIES_DIR, 'model.onnx');

describe('compression-studio distill --qat', () => {
  it.each([
    [
      'int4',
      ['--qat', 'int4', '--block', '16', '--asym'],
      'MatMulNBits',
      { blockSize: 16, symmetric: false },
    ],
    ['kmeans', ['--qat', 'kmeans', '--k', '8'], 'BitShift', { clusters: 8 }],
  ])(
    '--qat %s writes the quantized model of the trained weights, which onnxruntime runs',
    async (method, flags, op, options) => {
      const dir = tempDir();
      const out = join(dir, `${method}.onnx`);
      const r = await run(['distill', STORIES, STORIES, '-o', out, ...flags, ...QUICK_DISTILL_ARGS]);
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const report = JSON.parse(r.out);
      expect(report.qat).toMatchObject({ method, options });
      // int4 b16 asym: 4 bits + a float32 scale and a 4-bit zero point per 16; K=8: 4-bit indices + one codebook
      expect(report.qat.bitsPerWeight).toBeLessThan(method === 'int4' ? 6.5 : 4.1);
      expect(report.history).toHaveLength(3);
      expect(Number.isFinite(report.perplexityBefore) && Number.isFinite(report.perplexityAfter)).toBe(true);
      const written = parseModel(bytesSource('q.onnx', new Uint8Array(readFileSync(out))));
      expect(written.graph.node.some((n) => n.op_type === op)).toBe(true);
      const logits = (await runPath(out, idsInput([1, 2, 3, 4]))).logits;
      expect(logits.dims).toEqual([1, 4, 512]);
    },
    300_000,
  );

  it('refuses QAT flags without --qat, a flag of another method and an unknown method (status 2), writing nothing', async () => {
    const out = join(tempDir(), 'out.onnx');
    const base = ['distill', STORIES, STORIES, '-o', out, '--train-generate', '2'];
    const cases: [string[], RegExp][] = [
      [['--k', '16'], /--k is only read with --qat/],
      [['--qat', 'kmeans', '--block', '32'], /--block is read with --qat int4, not --qat kmeans/],
      [['--qat', 'int8', '--k', '4'], /--k is read with --qat kmeans/],
      [['--qat', 'int4', '--refit-every', '5'], /--refit-every is read with --qat kmeans/],
      [['--qat', 'prune'], /--qat must be one of int4, int8, kmeans/],
      [['--qat', 'int4', '--block', '48'], /--block must be one of 16, 32, 64, 128/],
    ];
    for (const [flags, message] of cases) {
      const r = await run([...base, ...flags]);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.err).toMatch(message);
    }
    expect(existsSync(out)).toBe(false);
  });
});
