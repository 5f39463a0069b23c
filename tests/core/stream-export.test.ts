/**
 * The streaming export (one weight at a time, external data written tensor by tensor) gives the
 * bytes the in-memory export gives, and onnxruntime-node runs them.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveRecipe, type Recipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { concatChunks, writeModel } from '../../src/core/onnx/write.ts';
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

  it('writes a big tensor a bounded part at a time, read in parts from the spool and from the source file: the same bytes', async () => {
    // stories260K with external data as the source: the tensors a recipe leaves alone are copied
    // from its data file, the compressed ones from the spool
    const whole = writeModel(stories(), { externalData: { location: 'src.onnx_data', threshold: 1024 } });
    const srcData = concatChunks(whole.externalData!.chunks);
    const reads: number[] = [];
    const source = () =>
      parseModel(bytesSource('src.onnx', whole.model), [
        {
          name: 'src.onnx_data',
          size: srcData.byteLength,
          read: (offset, length) => {
            reads.push(length);
            return srcData.subarray(offset, offset + length);
          },
        },
      ]);
    const recipe = resolveRecipe({
      version: 1,
      steps: [{ method: 'int8', select: { include: ['l*.w1', 'l*.w2'] } }],
    });
    const model = source();
    const expected = exportCompressed(model, compressModel(model, recipe), { externalData: { location } });
    const part = 4096;
    const writes: number[] = [];
    const data: Uint8Array[] = [];
    let onnx = new Uint8Array(0);
    const streamedModel = source();
    reads.length = 0;
    await exportStreaming(
      streamedModel,
      streamOutcomes(streamedModel, recipe, { compressAll: compressModel }).outcomes,
      {
        externalData: { location },
        spool: memorySpool(),
        writePart: part,
        sink: {
          writeData: (b) => {
            writes.push(b.byteLength);
            data.push(b.slice());
          },
          writeModel: (b) => void (onnx = b.slice()),
        },
      },
    );
    expect(Buffer.from(onnx).equals(Buffer.from(expected.model))).toBe(true);
    expect(
      Buffer.from(concatChunks(data)).equals(Buffer.from(concatChunks(expected.externalData!.chunks))),
    ).toBe(true);
    // the embedding (512 × 64 float32, 128 KiB) went out in 32 writes, none larger than a part
    expect(Math.max(...writes)).toBe(part);
    expect(writes.length).toBeGreaterThan(100);
    // and was read from the source a part at a time: no read of the source as big as the embedding
    expect(Math.max(...reads)).toBeLessThan(512 * 64 * 4);
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
