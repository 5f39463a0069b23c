/**
 * The export of stories260K with external data two ways, for the streaming tests: in memory
 * (`exportCompressed`) and streamed (`streamOutcomes` + `exportStreaming`, optionally through a
 * kernel pool), each as the .onnx and data bytes.
 */
import { readFileSync } from 'node:fs';
import { parseModel, bytesSource } from '../../src/core/onnx/model.ts';
import { concatChunks } from '../../src/core/onnx/write.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { resolveRecipe, type Recipe } from '../../src/core/compress/recipe.ts';
import {
  exportStreaming,
  memorySpool,
  streamOutcomes,
  type Spool,
} from '../../src/core/compress/stream-export.ts';
import type { KernelPool } from '../../src/core/compress/kernel-tasks.ts';
import { STORIES_MODEL } from './fixtures.ts';

export const location = 'out.onnx_data';
export const stories = () => parseModel(bytesSource('model.onnx', readFileSync(STORIES_MODEL)));

export function inMemory(recipe: Recipe) {
  const model = stories();
  const steps = resolveRecipe(recipe);
  const result = compressModel(model, steps);
  const written = exportCompressed(model, result, { externalData: { location } });
  return {
    model: written.model,
    data: concatChunks(written.externalData!.chunks),
    result,
    warnings: written.warnings,
  };
}

/** The streaming export into memory (through `pool` when given, `inFlight` weights at most). */
export async function streamed(
  recipe: Recipe,
  options: { spool?: Spool; pool?: KernelPool; inFlight?: number } = {},
) {
  const model = stories();
  const steps = resolveRecipe(recipe);
  const compression = streamOutcomes(model, steps, {
    compressAll: (m, s) => compressModel(m, s),
    ...(options.pool ? { pool: options.pool } : {}),
    ...(options.inFlight ? { inFlight: options.inFlight } : {}),
  });
  const data: Uint8Array[] = [];
  let onnx = new Uint8Array(0);
  const done = await exportStreaming(model, compression.outcomes, {
    externalData: { location },
    spool: options.spool ?? memorySpool(),
    sink: {
      writeData: (b) => void data.push(b.slice()),
      writeModel: (b) => void (onnx = b.slice()),
    },
  });
  return { model: onnx, data: concatChunks(data), result: compression.result(), done };
}

/** Recipes covering in-place and appended tensors, several encodings, and a cross-tensor step. */
export const STREAM_RECIPES: [string, Recipe][] = [
  ['int4 block 32 (MatMulNBits)', { version: 1, steps: [{ method: 'int4', options: { blockSize: 32 } }] }],
  [
    'prune on some weights, int8 with the embedding (in-place and appended tensors mixed)',
    {
      version: 1,
      steps: [
        { method: 'prune', options: { sparsity: 0.3 }, select: { include: ['l*.w1', 'l*.w3'] } },
        { method: 'int8', select: { exclude: ['/^l0\\./'], embeddings: true } },
      ],
    },
  ],
  ['k-means 16 palettes', { version: 1, steps: [{ method: 'kmeans', options: { clusters: 16 } }] }],
  ['fp16', { version: 1, steps: [{ method: 'fp16' }] }],
  [
    'global pruning (cross-tensor: compressed as a whole, written as a stream)',
    {
      version: 1,
      steps: [
        { method: 'prune', options: { sparsity: 0.5, scope: 'global' } },
        { method: 'int4', options: { blockSize: 64 } },
      ],
    },
  ],
];
