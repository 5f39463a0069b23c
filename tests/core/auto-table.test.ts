/**
 * The page's per-tensor table over a recipe: a plan read back as one storage per tensor, a hand edit
 * of one row written as an ordinary recipe, and that recipe reproduced by a share link, by the page's
 * export path (preview session → export) and by `compress --recipe`, byte for byte (stories260K).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  assignmentsOfRecipe,
  measureSensitivity,
  parseCandidates,
  planMixedPrecision,
  recipeForAssignments,
} from '../../src/core/compress/auto.ts';
import { firstTokens } from '../../src/core/compress/sensitivity.ts';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { PreviewSession } from '../../src/core/compress/session.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { weightCandidates } from '../../src/core/compress/select.ts';
import { readHashRecipe, recipeJson, recipeToHash } from '../../src/app/share.ts';
import { runCli, sha256File } from '../helpers/cli.ts';
import { tempDir } from '../helpers/ort.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';

const bytes = new Uint8Array(readFileSync(STORIES_MODEL));
const model = parseModel(bytesSource('model.onnx', bytes));
const weights = weightCandidates(model.graph);
const CANDIDATES = parseCandidates('keep,int8,int4b32,kmeans8');

/** A plan on a stand-in sensitivity (each tensor's squared error), quick and with real structure. */
async function plan(bits: number) {
  const klOf = async (_m: OnnxModel, steps: RecipeStep[]) => {
    const r = compressModel(model, resolveRecipe({ steps }));
    return r.reports[0].mse * r.reports[0].params;
  };
  const table = await measureSensitivity(model, CANDIDATES, klOf, { cacheKey: 'table' });
  return planMixedPrecision(table, CANDIDATES, { bitsPerWeight: bits });
}

describe('per-tensor assignments of a recipe', () => {
  it('read a plan back as its choices, a one-step recipe as that step for each tensor it selects', async () => {
    const p = await plan(5);
    const rows = assignmentsOfRecipe(p.recipe.steps, weights)!;
    expect(rows.map((r) => r.name)).toEqual(weights.map((w) => w.name));
    const step = new Map(CANDIDATES.map((c) => [c.id, c.step]));
    for (const c of p.choices)
      expect(rows.find((r) => r.name === c.name)!.step).toEqual(step.get(c.candidate));
    // embeddings were not planned: kept
    for (const r of rows.filter((x) => x.role === 'embedding')) expect(r.step).toBeNull();

    const uniform = assignmentsOfRecipe([{ method: 'int4', options: { blockSize: 32 } }], weights)!;
    for (const r of uniform)
      expect(r.step).toEqual(r.role === 'linear' ? { method: 'int4', options: { blockSize: 32 } } : null);
    // two steps on the same tensors are not one storage per tensor
    expect(
      assignmentsOfRecipe([{ method: 'prune', options: { sparsity: 0.5 } }, { method: 'int4' }], weights),
    ).toBeUndefined();
  });

  it('rewriting the assignments unchanged compresses every tensor as the plan does', async () => {
    const p = await plan(4.5);
    const again = recipeForAssignments(assignmentsOfRecipe(p.recipe.steps, weights)!);
    const a = compressModel(model, resolveRecipe(p.recipe));
    const b = compressModel(model, resolveRecipe(again));
    expect(b.reports.map((r) => [r.name, r.method, r.storedBytes])).toEqual(
      a.reports.map((r) => [r.name, r.method, r.storedBytes]),
    );
    const [x, y] = [exportCompressed(model, b).model, exportCompressed(model, a).model];
    expect(Buffer.from(x).equals(Buffer.from(y))).toBe(true);
  });

  it('a row edited by hand: the link, the page’s export path and compress --recipe give the same file', async () => {
    const p = await plan(5);
    const rows = assignmentsOfRecipe(p.recipe.steps, weights)!;
    const target = rows.find((r) => r.role === 'linear' && r.step?.method !== 'int8')!;
    const embedding = rows.find((r) => r.role === 'embedding')!;
    const edited = recipeForAssignments(
      rows.map((r) =>
        r.name === target.name
          ? { ...r, step: { method: 'int8', options: { granularity: 'per-tensor' } } }
          : r.name === embedding.name
            ? { ...r, step: { method: 'int4', options: { blockSize: 64 } } }
            : r,
      ),
    );
    // the link carries it unchanged, and the table reads the edit back from it
    const link = readHashRecipe(recipeToHash(edited.steps));
    expect(link.error).toBeUndefined();
    expect(link.steps).toEqual(edited.steps);
    const back = assignmentsOfRecipe(link.steps!, weights)!;
    expect(back.find((r) => r.name === target.name)!.step).toEqual({
      method: 'int8',
      options: { granularity: 'per-tensor' },
    });
    expect(back.find((r) => r.name === embedding.name)!.step).toEqual({
      method: 'int4',
      options: { blockSize: 64 },
    });

    // the page exports through its preview session; the CLI through compressModel
    const session = new PreviewSession(model);
    const page = exportCompressed(model, await session.run(resolveRecipe({ steps: link.steps }))).model;
    const dir = tempDir();
    writeFileSync(join(dir, 'recipe.json'), JSON.stringify(recipeJson(link.steps!)));
    const cli = await runCli([
      'compress',
      STORIES_MODEL,
      '--recipe',
      join(dir, 'recipe.json'),
      '-o',
      join(dir, 'cli.onnx'),
    ]);
    expect(cli.err).toBe('');
    expect(cli.code).toBe(0);
    writeFileSync(join(dir, 'page.onnx'), page);
    expect(sha256File(join(dir, 'cli.onnx'))).toBe(sha256File(join(dir, 'page.onnx')));
    const json = await runCli([
      'compress',
      STORIES_MODEL,
      '--recipe',
      join(dir, 'recipe.json'),
      '-o',
      join(dir, 'cli2.onnx'),
      '--json',
    ]);
    const tensors = JSON.parse(json.out).tensors as { name: string; method: string }[];
    expect(tensors.find((t) => t.name === target.name)!.method).toBe('int8');
    expect(tensors.find((t) => t.name === embedding.name)!.method).toBe('int4');
  });
});

describe('firstTokens', () => {
  it('takes the first N tokens sequence after sequence and drops a one-token remainder', () => {
    expect(
      firstTokens(
        [
          [1, 2, 3],
          [4, 5, 6],
        ],
        5,
      ),
    ).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    expect(
      firstTokens(
        [
          [1, 2, 3],
          [4, 5, 6],
        ],
        4,
      ),
    ).toEqual([[1, 2, 3]]);
    expect(firstTokens([[1], [2, 3]], 10)).toEqual([[2, 3]]);
  });
});
