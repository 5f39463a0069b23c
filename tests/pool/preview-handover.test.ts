/**
 * A big model's preview reads each weight for one use: the session hands such originals over to the
 * kernel worker (transferred, no copy into shared memory) instead of caching them, the worker measures
 * the error from the kernel's own sums, and a statistics run takes the statistics of the weights the
 * preview reads from those reads (StatsHub). Checked on stories260K written to disk with external
 * data (read by the CLI's file source, which reads into fresh buffers), with a real worker pool.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesSource, parseModel, readTensorOwned, type OnnxModel } from '../../src/core/onnx/model.ts';
import { writeModel, concatChunks } from '../../src/core/onnx/write.ts';
import { findWeight } from '../../src/core/onnx/graphs.ts';
import { modelSources } from '../../src/cli/files.ts';
import { PreviewSession } from '../../src/core/compress/session.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { applyMeasured } from '../../src/core/compress/kernel-tasks.ts';
import { errorStats } from '../../src/core/compress/metrics.ts';
import { asMatrix } from '../../src/core/compress/pipeline.ts';
import { getMethod } from '../../src/methods/registry.ts';
import { tensorStats } from '../../src/core/stats.ts';
import { StatsHub } from '../../src/core/stats-hub.ts';
import { createNodePool } from '../../src/runtime/pool-node.ts';
import { expectSameReports } from '../helpers/reports.ts';
import { stories } from '../helpers/stream-export.ts';
import { float16Model } from '../helpers/models.ts';

const INT4 = resolveRecipe({ steps: [{ method: 'int4', options: { blockSize: 32 } }] });

let dir: string;
/** stories260K as .onnx + .onnx_data on disk, opened as the CLI opens a model. */
let onDisk: () => OnnxModel;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cs-handover-'));
  const written = writeModel(stories(), { externalData: { location: 'model.onnx_data' } });
  writeFileSync(join(dir, 'model.onnx'), written.model);
  writeFileSync(join(dir, 'model.onnx_data'), concatChunks(written.externalData!.chunks));
  onDisk = () => {
    const sources = modelSources(join(dir, 'model.onnx'));
    return parseModel(sources.main, sources.external);
  };
});

const pool = createNodePool(2);
afterAll(() => {
  pool.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('reading a weight for one use', () => {
  it('is owned when read from an external file into a fresh buffer, never when it is a view on the model', () => {
    const external = onDisk();
    const inMemory = stories();
    const name = new PreviewSession(external).candidates[0].name;
    const fromFile = readTensorOwned(external, findWeight(external, name).tensor);
    const fromBytes = readTensorOwned(inMemory, findWeight(inMemory, name).tensor);
    expect(fromFile.owned).toBe(true);
    expect(fromBytes.owned).toBe(false);
    expect(fromFile.values).toEqual(fromBytes.values);
    // float16 stored in the model's bytes is widened into an array of its own
    const half = parseModel(bytesSource('half.onnx', float16Model()));
    const widened = readTensorOwned(half, findWeight(half, 'w16').tensor);
    expect(widened.owned).toBe(true);
    expect(widened.values).toBeInstanceOf(Float32Array);
    expect(widened.values.buffer).not.toBe(half.graph.initializer[0].raw_data!.buffer);
  });
});

describe('a summary preview whose originals do not fit the budget', () => {
  it('hands them over to the workers (the reads are emptied), caches none but the viewed one, and reports as a run without a pool', async () => {
    const reads = new Map<string, Float32Array>();
    const budget = 64 * 1024;
    const handing = new PreviewSession(onDisk(), {
      pool,
      memoryBudget: budget,
      onRead: (name, values) => void reads.set(name, values),
    });
    const plain = new PreviewSession(onDisk(), { memoryBudget: budget });
    const selected = (await plain.run(INT4, { keep: 'summary' })).reports.map((r) => r.name);
    const priority = selected[1];
    const options = { keep: 'summary' as const, priority };
    const handed = await handing.run(INT4, options);
    const alone = await plain.run(INT4, options);
    expectSameReports(handed.reports, alone.reports);
    // every weight but the viewed one went to a worker without a copy: its buffer moved there
    const emptied = [...reads].filter(([, v]) => v.buffer.byteLength === 0).map(([n]) => n);
    expect(emptied.sort()).toEqual(selected.filter((n) => n !== priority).sort());
    expect(reads.get(priority)!.length).toBeGreaterThan(0);
    // the viewed weight is cached (a slider moves it next), the others are not (they would not be hit)
    const viewedBytes = reads.get(priority)!.byteLength;
    expect(handing.memory().originals).toBe(viewedBytes <= budget / 2 ? viewedBytes : 0);
  });

  it('a slider move afterwards (an int4 option changed) reports as a fresh session does', async () => {
    const session = new PreviewSession(onDisk(), { pool, memoryBudget: 64 * 1024 });
    const priority = session.candidates[0].name;
    await session.run(INT4, { keep: 'summary', priority });
    const moved = resolveRecipe({ steps: [{ method: 'int4', options: { blockSize: 64 } }] });
    const again = await session.run(moved, { keep: 'summary', priority });
    const fresh = await new PreviewSession(onDisk()).run(moved, { keep: 'summary', priority });
    expectSameReports(again.reports, fresh.reports);
  });

  it('keeps the originals it reads when they fit: nothing is handed over', async () => {
    const reads = new Map<string, Float32Array>();
    const session = new PreviewSession(onDisk(), { pool, onRead: (n, v) => void reads.set(n, v) });
    await session.run(INT4, { keep: 'summary' });
    expect([...reads.values()].every((v) => v.length > 0)).toBe(true);
    expect(session.memory().originals).toBeGreaterThan(0);
  });
});

describe("a kernel's error from its own sums", () => {
  it('equals the error measured on the decoded values, to float64 rounding (int4, int8)', () => {
    const model = stories();
    const session = new PreviewSession(model);
    for (const [method, options] of [
      ['int4', { blockSize: 32 }],
      ['int8', { symmetric: true }],
    ] as const) {
      for (const c of session.candidates.slice(0, 4)) {
        const original = session.original(c.name);
        const [measured] = applyMeasured(getMethod(method), [asMatrix(c, original)], options, [original]);
        const [full] = getMethod(method).apply([asMatrix(c, original)], options);
        const direct = errorStats(original, full.values);
        expect(measured.error.maxAbsError).toBe(direct.maxAbsError);
        expect(measured.error.sparsity).toBe(direct.sparsity);
        expect(measured.error.mse).toBeCloseTo(direct.mse, 12);
        expect(Number(measured.error.snrDb.toPrecision(12))).toBe(Number(direct.snrDb.toPrecision(12)));
      }
    }
  });
});

describe('StatsHub: statistics of the weights a preview reads, for the statistics run', () => {
  const a = new Float32Array([1, -2, 0, 4]);
  const b = new Float32Array([0.5, 0.25, 0, 0]);

  it('answers what the preview offered, as tensorStats of those values', async () => {
    const hub = new StatsHub(['a', 'b']);
    expect(hub.covers('a')).toBe(true);
    const waiting = hub.when('a');
    hub.offer('a', a);
    expect(await waiting).toEqual(tensorStats(a));
    expect(await hub.when('a')).toEqual(tensorStats(a));
    hub.end();
    // known ones stay known after the preview ended; the others are no longer covered
    expect(hub.covers('a')).toBe(true);
    expect(hub.covers('b')).toBe(false);
  });

  it('answers undefined to whoever still waits when the preview ends without reading the weight', async () => {
    const hub = new StatsHub(['a', 'b']);
    const waiting = hub.when('b');
    hub.offer('a', a);
    hub.end();
    expect(await waiting).toBeUndefined();
    hub.offer('b', b);
    expect(await hub.when('b')).toBeUndefined();
  });

  it('sums up neither a weight it does not expect nor one the statistics run read itself', async () => {
    const hub = new StatsHub(['a', 'b']);
    hub.drop('b');
    hub.offer('b', b);
    hub.offer('c', b);
    expect(hub.covers('b')).toBe(false);
    expect(hub.covers('c')).toBe(false);
    expect(await hub.when('b')).toBeUndefined();
  });
});
