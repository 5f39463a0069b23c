/**
 * The streaming export (one weight at a time, external data written tensor by tensor) gives the
 * bytes the in-memory export gives, and onnxruntime-node runs them.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveRecipe, type Recipe } from '../../src/core/compress/recipe.ts';
import {
  exportStreaming,
  memorySpool,
  streamOutcomes,
  type Spool,
} from '../../src/core/compress/stream-export.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';
import { idsInput, ort, tempDir } from '../helpers/ort.ts';
import { runCli } from '../helpers/cli.ts';
import { inMemory, location, stories, streamed, STREAM_RECIPES } from '../helpers/stream-export.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';

describe('streaming export', () => {
  it.each(STREAM_RECIPES)('%s: byte-identical to the in-memory export, same reports', async (_, recipe) => {
    const a = inMemory(recipe);
    const b = await streamed(recipe);
    expect(b.data.byteLength).toBeGreaterThan(0);
    expect(Buffer.from(b.model).equals(Buffer.from(a.model))).toBe(true);
    expect(Buffer.from(b.data).equals(Buffer.from(a.data))).toBe(true);
    expect(b.done.modelBytes + b.done.dataBytes).toBe(a.model.byteLength + a.data.byteLength);
    expect(b.done.warnings).toEqual(a.warnings);
    expect(b.result.reports).toEqual(a.result.reports);
    expect(b.result.totals).toEqual(a.result.totals);
    expect(b.result.warnings).toEqual(a.result.warnings);
  });

  it('holds one compressed weight at a time: the spool gets each weight once, as it is produced', async () => {
    const appended: number[] = [];
    /** How many weights had been compressed when each park happened. */
    const producedAt: number[] = [];
    const inner = memorySpool();
    const spool: Spool = {
      append: (bytes) => {
        appended.push(bytes.byteLength);
        producedAt.push(compression.result().reports.length);
        return inner.append(bytes);
      },
      read: (o, l) => inner.read(o, l),
    };
    const recipe: Recipe = { version: 1, steps: [{ method: 'int4', options: { blockSize: 32 } }] };
    const model = stories();
    const compression = streamOutcomes(model, resolveRecipe(recipe), {
      compressAll: () => {
        throw new Error('a per-tensor recipe must not compress the whole model at once');
      },
    });
    // the outcomes are a lazy sequence: nothing is compressed before the export reads it
    expect(compression.result().reports).toHaveLength(0);
    let written = 0;
    await exportStreaming(model, compression.outcomes, {
      externalData: { location },
      spool,
      sink: { writeData: (b) => void (written += b.byteLength), writeModel: () => {} },
    });
    expect(compression.result().reports).toHaveLength(35);
    // weight k's bytes are parked while weight k is the latest compressed, before weight k + 1 is read
    expect(new Set(producedAt)).toEqual(new Set(Array.from({ length: 35 }, (_, i) => i + 1)));
    expect(producedAt).toEqual([...producedAt].sort((x, y) => x - y));
    expect(written).toBeGreaterThan(appended.reduce((s, n) => s + n, 0));
  });

  it('compress --external-data streams to files identical to the in-memory export, which onnxruntime-node runs', async () => {
    const dir = tempDir();
    const recipePath = join(dir, 'recipe.json');
    const recipe: Recipe = {
      version: 1,
      steps: [
        { method: 'prune', options: { sparsity: 0.3 }, select: { include: ['l*.w1'] } },
        { method: 'int4', options: { blockSize: 32 }, select: { exclude: ['l*.w1'] } },
      ],
    };
    writeFileSync(recipePath, JSON.stringify(recipe));
    const out = join(dir, 'out.onnx');
    const { code, err } = await runCli([
      'compress',
      STORIES_MODEL,
      '--recipe',
      recipePath,
      '--external-data',
      '-o',
      out,
    ]);
    expect(err).toBe('');
    expect(code).toBe(0);
    // no spool or temporary file is left beside the outputs
    expect(readdirSync(dir).sort()).toEqual(['out.onnx', 'out.onnx_data', 'recipe.json']);
    const a = inMemory(recipe);
    expect(Buffer.from(readFileSync(out)).equals(Buffer.from(a.model))).toBe(true);
    expect(Buffer.from(readFileSync(join(dir, 'out.onnx_data'))).equals(Buffer.from(a.data))).toBe(true);
    const session = await ort.InferenceSession.create(out, { extra: EXACT_WEIGHT_ONLY });
    try {
      const logits = (await session.run(idsInput([1, 300, 40, 50]))).logits;
      expect(logits.dims).toEqual([1, 4, 512]);
      expect([...(logits.data as Float32Array)].every(Number.isFinite)).toBe(true);
    } finally {
      await session.release();
    }
    expect(existsSync(join(dir, 'out.onnx_data'))).toBe(true);
  });
});
