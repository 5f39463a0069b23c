/**
 * Automatic mixed precision: the knapsack against brute force on small tables, the frontier, the
 * candidates' grammar, and on stories260K the measured sensitivities, the plan's recipe and its
 * reproduction through `compress --recipe`.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  efficientFrontier,
  exactSelector,
  measureSensitivity,
  parseCandidates,
  planMixedPrecision,
  type SensitivityEntry,
  type TensorSensitivity,
} from '../../src/core/compress/auto.ts';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { selectWeights, weightCandidates } from '../../src/core/compress/select.ts';
import { isModelError } from '../../src/core/errors.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { runCli, sha256File } from '../helpers/cli.ts';
import { readHashRecipe, recipeToHash } from '../../src/app/share.ts';
import { tempDir } from '../helpers/ort.ts';
import { STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';

const CANDIDATES = parseCandidates('keep,int8,int4b32,kmeans8');

/** A seeded table: per tensor, costlier candidates mostly lose less. */
function randomTable(tensors: number, seed: number): TensorSensitivity[] {
  let s = seed;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  return Array.from({ length: tensors }, (_, i) => {
    const params = 64 * (1 + Math.floor(u() * 8));
    return {
      name: `w${i}`,
      role: 'linear' as const,
      params,
      entries: [
        { candidate: 'keep', bytes: params * 4, kl: 0 },
        { candidate: 'int8', bytes: params * 1.05, kl: u() * 0.002 },
        { candidate: 'int4b32', bytes: params * 0.64, kl: u() * 0.05 },
        { candidate: 'kmeans8', bytes: params * 0.4, kl: u() * 0.3 },
      ],
    };
  });
}

/** Every assignment: the least summed KL within the byte budget. */
function bruteForce(table: TensorSensitivity[], maxBytes: number): number {
  let best = Infinity;
  const walk = (i: number, bytes: number, kl: number) => {
    if (bytes > maxBytes + 1e-9) return;
    if (i === table.length) {
      best = Math.min(best, kl);
      return;
    }
    for (const e of table[i].entries) walk(i + 1, bytes + e.bytes, kl + e.kl);
  };
  walk(0, 0, 0);
  return best;
}

describe('mixed-precision plan (greedy knapsack on each tensor’s frontier)', () => {
  it('keeps only the lower convex hull of (bytes, KL)', () => {
    const e = (candidate: string, bytes: number, kl: number): SensitivityEntry => ({ candidate, bytes, kl });
    const hull = efficientFrontier([
      e('a', 10, 1),
      e('b', 20, 0.95), // above the segment a–c: not worth its bytes
      e('c', 30, 0.2),
      e('d', 40, 0.3), // dominated by c
      e('e', 80, 0),
    ]);
    expect(hull.map((x) => x.candidate)).toEqual(['a', 'c', 'e']);
  });

  it('meets the bit budget and comes within a few % of the brute-force optimum', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const table = randomTable(6, seed);
      const params = table.reduce((s, t) => s + t.params, 0);
      for (const bits of [3.5, 4.5, 6, 9]) {
        const plan = planMixedPrecision(table, CANDIDATES, { bitsPerWeight: bits });
        expect(plan.bitsPerWeight).toBeLessThanOrEqual(bits + 1e-9);
        const optimum = bruteForce(table, (bits * params) / 8);
        // greedy on convex hulls is optimal up to the last item that did not fit
        const worstItem = Math.max(...table.map((t) => Math.max(...t.entries.map((x) => x.kl))));
        expect(plan.predictedKl).toBeGreaterThanOrEqual(optimum - 1e-12);
        expect(plan.predictedKl).toBeLessThanOrEqual(optimum + worstItem);
        expect(plan.predictedKl).toBeCloseTo(
          plan.choices.reduce((s, c) => s + c.kl, 0),
          12,
        );
      }
    }
  });

  it('a KL target takes the fewest bytes it can, and says when it cannot be met', () => {
    const table = randomTable(8, 7);
    const loose = planMixedPrecision(table, CANDIDATES, { kl: 0.5 });
    const tight = planMixedPrecision(table, CANDIDATES, { kl: 0.01 });
    expect(loose.predictedKl).toBeLessThanOrEqual(0.5);
    expect(tight.predictedKl).toBeLessThanOrEqual(0.01);
    expect(tight.bytes).toBeGreaterThan(loose.bytes);
    const lossy = table.map((t) => ({
      ...t,
      entries: t.entries.filter((e) => /int4|kmeans/.test(e.candidate)),
    }));
    const impossible = planMixedPrecision(lossy, parseCandidates('int4b32,kmeans8'), { kl: 0 });
    expect(impossible.warning).toMatch(/not reached/);
  });

  it('a budget below the cheapest candidates is a typed error', () => {
    const err = (() => {
      try {
        planMixedPrecision(randomTable(3, 1), CANDIDATES, { bitsPerWeight: 1 });
      } catch (e) {
        return e;
      }
    })();
    expect(isModelError(err)).toBe(true);
    expect((err as Error).message).toMatch(/below the cheapest/);
  });

  it('parses the candidate grammar and refuses unknown names', () => {
    expect(parseCandidates('keep,fp16,int4b64a,kmeans16c').map((c) => c.step)).toEqual([
      null,
      { method: 'fp16' },
      { method: 'int4', options: { blockSize: 64, symmetric: false } },
      { method: 'kmeans', options: { clusters: 16, perChannel: true } },
    ]);
    for (const bad of ['int3', 'int4b48', 'kmeans1', 'kmeans300', 'int8,int8', ''])
      expect(() => parseCandidates(bad)).toThrow(/candidate/);
  });

  it('an exact selector picks one tensor, even when its name holds glob or regex characters', () => {
    const names = ['a.w', 'a*w', 'a.w.bias', 'xa.w'];
    const cands = names.map((name) => ({
      name,
      shape: [2, 2] as [number, number],
      role: 'linear' as const,
      channelAxis: 1 as const,
      consumers: ['MatMul'],
      scope: '',
      source: 'initializer' as const,
    }));
    for (const c of cands)
      expect(selectWeights(cands, exactSelector(c)).map((x) => x.name)).toEqual([c.name]);
  });
});

describe('sensitivity and plan on stories260K', () => {
  const bytes = new Uint8Array(readFileSync(STORIES_MODEL));
  const model = parseModel(bytesSource('model.onnx', bytes));

  it('measures every tensor × lossy candidate once, with the pipeline’s bytes; the cache answers a second pass', async () => {
    const calls: string[] = [];
    // a stand-in KL: the squared error of the compressed tensor, so the plan has real structure
    const klOf = async (_m: OnnxModel, steps: RecipeStep[]) => {
      const r = compressModel(model, resolveRecipe({ steps }));
      calls.push(`${r.reports[0].name}|${steps[0].method}`);
      return r.reports[0].mse * r.reports[0].params;
    };
    const store = new Map<string, number>();
    const cache = { get: (k: string) => store.get(k), set: (k: string, v: number) => void store.set(k, v) };
    const table = await measureSensitivity(model, CANDIDATES, klOf, { cache, cacheKey: 'test' });
    const linear = selectWeights(weightCandidates(model.graph));
    expect(table.map((t) => t.name)).toEqual(linear.map((c) => c.name));
    expect(calls.length).toBe(linear.length * 3);
    const int4 = compressModel(model, resolveRecipe({ steps: [{ method: 'int4' }] }));
    for (const t of table) {
      const report = int4.reports.find((r) => r.name === t.name)!;
      expect(t.entries.find((e) => e.candidate === 'int4b32')!.bytes).toBe(report.storedBytes);
      expect(t.entries.find((e) => e.candidate === 'keep')).toEqual({
        candidate: 'keep',
        bytes: t.params * 4,
        kl: 0,
      });
    }
    await measureSensitivity(model, CANDIDATES, klOf, { cache, cacheKey: 'test' });
    expect(calls.length).toBe(linear.length * 3);

    // the plan is an ordinary recipe: compressing with it gives each tensor its chosen storage and bytes
    const plan = planMixedPrecision(table, CANDIDATES, { bitsPerWeight: 5 });
    const result = compressModel(model, resolveRecipe(plan.recipe));
    const methodOf = { int8: 'int8', int4b32: 'int4', kmeans8: 'kmeans' } as Record<string, string>;
    for (const c of plan.choices) {
      const r = result.reports.find((x) => x.name === c.name);
      if (c.candidate === 'keep') expect(r).toBeUndefined();
      else {
        expect(r?.method).toBe(methodOf[c.candidate]);
        expect(r?.storedBytes).toBe(c.bytes);
      }
    }
    expect(new Set(plan.choices.map((c) => c.candidate)).size).toBeGreaterThan(1);
    // a share link carries the plan unchanged: the page applies the same storage to every tensor
    const link = readHashRecipe(recipeToHash(plan.recipe.steps));
    expect(link.error).toBeUndefined();
    const viaLink = compressModel(model, resolveRecipe({ steps: link.steps }));
    expect(viaLink.reports.map((r) => [r.name, r.method, r.storedBytes])).toEqual(
      result.reports.map((r) => [r.name, r.method, r.storedBytes]),
    );
  });

  it('refuses a second budget, a missing budget and method flags beside --auto-bits, before reading the model', async () => {
    const o = ['-o', join(tempDir(), 'x.onnx')];
    const cases: [string[], RegExp][] = [
      [['--auto-bits', '4', '--auto-kl', '0.1'], /one budget/],
      [['--candidates', 'int8,int4b32'], /one budget/],
      [['--auto-bits', '4', '--int4'], /--int4 can't be combined with --auto-bits/],
      [['--auto-bits', 'x'], /--auto-bits must be a number/],
      [['--auto-bits', '4', '--candidates', 'int5'], /Unknown candidate 'int5'/],
    ];
    for (const [flags, message] of cases) {
      const r = await runCli(['compress', STORIES_MODEL, ...flags, ...o]);
      expect(r.code).not.toBe(0);
      expect(r.err).toMatch(message);
    }
  });

  it('compress --auto-bits writes the model and a recipe that compress --recipe reproduces byte for byte', async () => {
    const dir = tempDir();
    const ids = join(STORIES_DIR, 'ids.txt');
    const auto = await runCli([
      'compress',
      STORIES_MODEL,
      '--auto-bits',
      '5',
      '--candidates',
      'int8,int4b32,kmeans8',
      '--auto-ids',
      ids,
      '--auto-tokens',
      '96',
      '--sensitivity-cache',
      join(dir, 'cache.json'),
      '--save-recipe',
      join(dir, 'plan.json'),
      '-o',
      join(dir, 'auto.onnx'),
      '--json',
    ]);
    expect(auto.err).toBe('');
    expect(auto.code).toBe(0);
    const report = JSON.parse(auto.out);
    expect(report.plan.bitsPerWeight).toBeLessThanOrEqual(5);
    expect(report.sensitivity.length).toBeGreaterThan(10);
    expect(report.protocol.tokens).toBeGreaterThan(50);
    // every measured KL is a real comparison: positive for lossy storage
    for (const t of report.sensitivity) for (const e of t.entries) expect(e.kl).toBeGreaterThan(0);
    expect(JSON.parse(readFileSync(join(dir, 'plan.json'), 'utf8'))).toEqual(report.recipe);
    const again = await runCli([
      'compress',
      STORIES_MODEL,
      '--recipe',
      join(dir, 'plan.json'),
      '-o',
      join(dir, 'again.onnx'),
    ]);
    expect(again.code).toBe(0);
    expect(sha256File(join(dir, 'again.onnx'))).toBe(sha256File(join(dir, 'auto.onnx')));
  });
});
