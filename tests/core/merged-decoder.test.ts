/**
 * Optimum-style merged decoders (weights in the main graph, read only inside the two branches of an
 * `If` on use_cache_branch): each weight is selected and compressed once, by every method (the
 * calibrated ones capture the no-cache branch), the export runs in onnxruntime-node on both branches
 * with the previewed weights, and perplexity runs the no-cache branch: equal to the plain decoder's.
 */
import { describe, expect, it } from 'vitest';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { decodeModelProto } from '../../src/core/onnx/proto.ts';
import { graphIndex } from '../../src/core/onnx/graphs.ts';
import { weightCandidates } from '../../src/core/compress/select.ts';
import { compressModel, type CompressionResult } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { resolveFullRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { calibrate } from '../../src/core/compress/calibration.ts';
import { noCacheView } from '../../src/core/compress/merged.ts';
import { evaluatePerplexity } from '../../src/core/eval/perplexity.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';
import { ort, type Feeds } from '../helpers/ort.ts';
import { maxAbs, maxAbsDiff, runOutput } from '../helpers/compress.ts';
import { countingRuntime } from '../helpers/calibration.ts';
import { MERGED, mergedDecoder, plainDecoder } from '../helpers/merged-decoder.ts';
import { seededFloats } from '../helpers/models.ts';

const open = (bytes: Uint8Array) => parseModel(bytesSource('decoder_model_merged.onnx', bytes));
const IDS = Array.from({ length: 64 }, (_, i) => (i * 11 + 5) % MERGED.vocab);
const WEIGHTS = ['wte', 'attn.q', 'attn.k', 'attn.v', 'attn.proj', 'mlp.fc', 'mlp.proj', 'lm_head'];
const ALL = { embeddings: true, lmHead: true };

function ids(values: number[]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), [1, values.length]);
}

/** The no-cache branch (empty past) and the cache branch (a past of 3 positions, 2 new tokens). */
function branchFeeds(): { name: string; feeds: Feeds }[] {
  const past = (seed: number, len: number) =>
    new ort.Tensor('float32', seededFloats(MERGED.heads * len * MERGED.headDim, seed, 0.5), [
      1,
      MERGED.heads,
      len,
      MERGED.headDim,
    ]);
  const cache = (use: boolean, len: number, tokens: number[]): Feeds => ({
    input_ids: ids(tokens),
    'past_key_values.0.key': past(91, len),
    'past_key_values.0.value': past(92, len),
    use_cache_branch: new ort.Tensor('bool', Uint8Array.of(use ? 1 : 0), [1]),
  });
  return [
    { name: 'no cache', feeds: cache(false, 0, IDS.slice(0, 7)) },
    { name: 'cache', feeds: cache(true, 3, IDS.slice(7, 9)) },
  ];
}

/** The merged model with each compressed weight's preview values written back densely. */
function denseReference(model: OnnxModel, result: CompressionResult): Uint8Array {
  return exportCompressed(model, {
    ...result,
    outcomes: result.outcomes.map((o) => ({ ...o, encoder: null })),
  }).model;
}

async function expectBothBranchesMatch(model: OnnxModel, result: CompressionResult, exact = true) {
  const exported = exportCompressed(model, result).model;
  const reference = denseReference(model, result);
  const source = mergedDecoder();
  for (const { name, feeds } of branchFeeds()) {
    const got = await runOutput(exported, feeds, 'logits');
    const want = await runOutput(reference, feeds, 'logits');
    expect(got.length, name).toBe(want.length);
    expect(got.every(Number.isFinite), name).toBe(true);
    if (exact) expect(maxAbsDiff(got, want), name).toBeLessThanOrEqual(1e-4 * (1 + maxAbs(want)));
    // the compression changed what each branch computes
    expect(maxAbsDiff(got, await runOutput(source, feeds, 'logits')), name).toBeGreaterThan(1e-5);
  }
  return exported;
}

describe('a merged decoder (If on use_cache_branch)', () => {
  it('lists each weight the branches read once, as a main-graph weight', () => {
    const candidates = weightCandidates(open(mergedDecoder()).graph);
    expect(candidates.map((c) => c.name)).toEqual(WEIGHTS);
    expect(candidates.find((c) => c.name === 'wte')?.role).toBe('embedding');
    expect(candidates.find((c) => c.name === 'lm_head')?.role).toBe('lmHead');
    expect(candidates.filter((c) => c.role === 'linear')).toHaveLength(6);
  });

  const DATA_FREE: { name: string; steps: RecipeStep[] }[] = [
    { name: 'int8', steps: [{ method: 'int8', select: ALL }] },
    { name: 'int4 MatMulNBits', steps: [{ method: 'int4', select: ALL }] },
    {
      name: 'int4 DequantizeLinear',
      steps: [{ method: 'int4', options: { format: 'dequantize' }, select: ALL }],
    },
    { name: 'prune 50%', steps: [{ method: 'prune', options: { sparsity: 0.5 }, select: ALL }] },
    { name: 'k-means 16', steps: [{ method: 'kmeans', options: { clusters: 16 }, select: ALL }] },
    { name: 'fp16', steps: [{ method: 'fp16', select: ALL }] },
  ];
  for (const { name, steps } of DATA_FREE)
    it(`${name}: compressed once, and both branches run with the previewed weights`, async () => {
      const model = open(mergedDecoder());
      const result = compressModel(model, resolveFullRecipe({ steps }).steps);
      expect(result.reports.map((r) => r.name)).toEqual(WEIGHTS);
      const exported = await expectBothBranchesMatch(model, result);
      // the weights stay in the main graph, shared by the branches: no copy per branch
      const index = graphIndex(decodeModelProto(exported).graph!);
      const branchInitializers = index.scopes.slice(1).flatMap((s) => s.graph.initializer);
      expect(branchInitializers).toEqual([]);
      if (name === 'int4 MatMulNBits') {
        const counts = index.opTypeCounts();
        // 7 MatMul weights (the table is gathered, and gathered rows are decoded once), read in both branches
        expect(counts.get('com.microsoft.MatMulNBits')).toBe(2 * 7);
      }
    });

  const CALIBRATED: { name: string; steps: RecipeStep[]; exact: boolean }[] = [
    { name: 'GPTQ', steps: [{ method: 'gptq' }], exact: true },
    { name: 'AWQ', steps: [{ method: 'awq' }], exact: true },
    { name: 'SparseGPT', steps: [{ method: 'sparsegpt', options: { sparsity: 0.5 } }], exact: true },
    { name: 'Wanda', steps: [{ method: 'wanda', options: { sparsity: 0.5 } }], exact: true },
    { name: 'LLM.int8', steps: [{ method: 'llm-int8' }], exact: true },
    // W8A8 also rounds activations: the export differs from the weights-only preview by design
    { name: 'W8A8', steps: [{ method: 'w8a8' }], exact: false },
  ];
  for (const { name, steps, exact } of CALIBRATED)
    it(`${name}: calibrated on the no-cache branch, and both branches run`, async () => {
      const model = open(mergedDecoder());
      const recipe = resolveFullRecipe({
        calibration: { source: 'ids', samples: 4, length: 16 },
        steps,
      });
      const data = [IDS];
      const stats = await calibrate(
        model,
        recipe.steps,
        { settings: { ...recipe.calibration!, length: 16, bos: 0 }, data },
        countingRuntime(model).runtime,
      );
      const result = compressModel(model, recipe.steps, { calibration: stats });
      expect(result.reports.map((r) => r.name)).toEqual(WEIGHTS.slice(1, -1));
      await expectBothBranchesMatch(model, result, exact);
    });

  it('perplexity runs the no-cache branch: the merged model scores as the plain decoder, before and after int4', async () => {
    const score = async (bytes: Uint8Array) => {
      const model = open(bytes);
      const session = await createNodeSession(bytes);
      try {
        return await evaluatePerplexity(session, Tensor, summarizeInputs(model.graph), [IDS], {
          ctx: 16,
          stride: 8,
        });
      } finally {
        await session.release();
      }
    };
    const merged = await score(mergedDecoder());
    const plain = await score(plainDecoder());
    expect(merged.tokens).toBe(plain.tokens);
    expect(merged.perplexity).toBeCloseTo(plain.perplexity, 5);
    const steps = resolveFullRecipe({ steps: [{ method: 'int4' }] }).steps;
    const q4 = (bytes: Uint8Array) => {
      const model = open(bytes);
      return exportCompressed(model, compressModel(model, steps)).model;
    };
    const mergedQ4 = await score(q4(mergedDecoder()));
    expect(mergedQ4.perplexity).toBeCloseTo((await score(q4(plainDecoder()))).perplexity, 4);
    expect(mergedQ4.perplexity).not.toBe(merged.perplexity);
  });

  it('the no-cache view is the else branch inlined; a model without the If is returned as it is', () => {
    const model = open(mergedDecoder());
    const view = noCacheView(model);
    expect(view.graph.node.some((n) => n.op_type === 'If')).toBe(false);
    expect(weightCandidates(view.graph).map((c) => c.name)).toEqual(WEIGHTS);
    const plain = open(plainDecoder());
    expect(noCacheView(plain)).toBe(plain);
  });
});
