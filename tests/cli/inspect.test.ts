import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { writeModel, concatChunks } from '../../src/core/onnx/write.ts';
import { mlpModel } from '../helpers/models.ts';
import { tempDir, writeFiles } from '../helpers/ort.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';
import { runCli as run } from '../helpers/cli.ts';

const ROOT = resolve(__dirname, '../..');
const STORIES = STORIES_MODEL;

/** Statistics computed independently: raw little-endian float32 bytes via DataView, two passes. */
function independentStats(raw: Uint8Array) {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const n = raw.byteLength / 4;
  const xs: number[] = [];
  for (let i = 0; i < n; i++) xs.push(view.getFloat32(i * 4, true));
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
  return {
    min: xs.reduce((a, b) => Math.min(a, b), Infinity),
    max: xs.reduce((a, b) => Math.max(a, b), -Infinity),
    mean,
    std: Math.sqrt(variance),
    zeros: xs.filter((x) => x === 0).length / n,
  };
}

describe('compression-studio inspect', () => {
  it('--json matches an independent computation of every statistic on stories260K', async () => {
    const { code, out } = await run(['inspect', STORIES, '--json']);
    expect(code).toBe(0);
    const report = JSON.parse(out);
    const model = parseModel(bytesSource('model.onnx', readFileSync(STORIES)));
    expect(report.tensors).toHaveLength(model.graph.initializer.length);
    let params = 0;
    let checked = 0;
    for (const t of model.graph.initializer) {
      const row = report.tensors.find((r: { name: string }) => r.name === t.name);
      const count = t.dims.reduce((a, b) => a * Number(b), 1);
      params += count;
      expect(row.shape).toEqual(t.dims.map(Number));
      expect(row.params).toBe(count);
      if (t.data_type !== 1) continue;
      expect(row.dtype).toBe('float32');
      expect(row.bytes).toBe(count * 4);
      const ref = independentStats(t.raw_data!);
      expect(row.min).toBe(ref.min);
      expect(row.max).toBe(ref.max);
      // one-pass Welford vs two-pass sums agree to float64 rounding, relative to the tensor's scale
      const scale = Math.max(1, Math.abs(ref.mean), ref.std);
      expect(Math.abs(row.mean - ref.mean)).toBeLessThanOrEqual(1e-12 * scale);
      expect(Math.abs(row.std - ref.std)).toBeLessThanOrEqual(1e-12 * scale);
      expect(row.zeros).toBe(ref.zeros);
      checked++;
    }
    expect(checked).toBeGreaterThan(30);
    expect(report.params).toBe(params);
    const ops: Record<string, number> = {};
    for (const n of model.graph.node) ops[n.op_type] = (ops[n.op_type] ?? 0) + 1;
    expect(report.opTypes).toEqual(ops);
  });

  it('reads external data sitting beside the .onnx', async () => {
    const out = writeModel(parseModel(bytesSource('m.onnx', mlpModel())), {
      externalData: { location: 'm.onnx_data' },
    });
    const dir = tempDir();
    writeFiles(dir, { 'm.onnx': out.model, 'm.onnx_data': concatChunks(out.externalData!.chunks) });
    const { code, out: text } = await run(['inspect', join(dir, 'm.onnx'), '--json']);
    expect(code).toBe(0);
    const w1 = JSON.parse(text).tensors.find((t: { name: string }) => t.name === 'w1');
    expect(w1.params).toBe(16 * 32);
    expect(w1.std).toBeGreaterThan(0.1);
  });

  it('the installed bin exits non-zero with the message on bad input', () => {
    const dir = tempDir();
    writeFiles(dir, { 'empty.onnx': new Uint8Array(), 'cut.onnx': mlpModel().slice(0, 200) });
    const bin = join(ROOT, 'bin/compression-studio.mjs');
    const empty = spawnSync(process.execPath, [bin, 'inspect', join(dir, 'empty.onnx')], {
      encoding: 'utf8',
    });
    expect(empty.status).toBe(1);
    expect(empty.stderr).toMatch(/empty\.onnx is empty \(0 bytes\)/);
    const cut = spawnSync(process.execPath, [bin, 'inspect', join(dir, 'cut.onnx'), '--json'], {
      encoding: 'utf8',
    });
    expect(cut.status).toBe(1);
    expect(cut.stderr).toMatch(/cut\.onnx is truncated or corrupt/);
    expect(cut.stdout).toBe('');
    const missing = spawnSync(process.execPath, [bin, 'inspect', join(dir, 'nope.onnx')], {
      encoding: 'utf8',
    });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/nope\.onnx: no such file/);
    const text = execFileSync(process.execPath, [bin, 'inspect', STORIES], { encoding: 'utf8' });
    expect(text).toMatch(/559,083 parameters/);
  });
});
