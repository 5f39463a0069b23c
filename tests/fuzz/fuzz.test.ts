/**
 * A seeded fuzz run inside `npm test`: a few hundred mutants of five real models (the two fixtures,
 * Constant-node weights, If/Loop subgraph weights, external data) through open → inspect → compress
 * → export in memory, then the CLI's compress writing to an output folder. Every stage must succeed
 * or throw a ModelError; nothing outside the output folder may change. `npm run fuzz` is the long
 * run of the same engine (tools/fuzz/run.ts), in child processes, with time and memory counted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FIXTURE_DIRS, seedModels } from '../../tools/fuzz/models.ts';
import { mutantSeed } from '../../tools/fuzz/prng.ts';
import { TEST_PLAN } from '../../tools/fuzz/plans.ts';
import { changedEntries, fingerprint, isUntyped, runSeed, type MutantPlan } from '../../tools/fuzz/target.ts';

const SEED = 4;
const COUNT = 300;

describe('fuzz: mutated models through read → inspect → compress → export → write', () => {
  const root = mkdtempSync(join(tmpdir(), 'compression-studio-fuzz-test-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it(`${COUNT} mutants (seed ${SEED}) give only typed errors and write only the output folder`, async () => {
    const models = seedModels();
    expect(models.length).toBeGreaterThanOrEqual(4);
    const plan: MutantPlan = { models, ...TEST_PLAN };
    const fixturesBefore = FIXTURE_DIRS.map((d) => fingerprint(d));
    const failures: string[] = [];
    const reached = new Set<string>();
    for (let i = 0; i < COUNT; i++) {
      const seed = mutantSeed(SEED, i);
      const run = await runSeed(join(root, 'run'), seed, plan);
      if (run.stages.some((s) => s.stage.startsWith('compress') && s.result === 'ok')) reached.add(run.model);
      if (isUntyped(run) || run.outsideWrites.length) {
        const untyped = run.stages.filter((s) => s.result === 'untyped');
        failures.push(
          [
            `mutant ${i} (npm run fuzz -- --replay ${seed} --test) of ${run.model}: ${run.mutations.join(' ; ')}`,
            ...untyped.map((s) => `  ${s.stage}: ${s.message}\n    at ${s.stack}`),
            ...(run.outsideWrites.length
              ? [`  wrote outside the output folder: ${run.outsideWrites.join(', ')}`]
              : []),
          ].join('\n'),
        );
      }
    }
    const fixturesChanged = FIXTURE_DIRS.flatMap((d, i) => changedEntries(fixturesBefore[i], fingerprint(d)));
    expect(fixturesChanged).toEqual([]);
    expect(failures.join('\n')).toBe('');
    // the mutants must get past parsing into the compress path, or the run proves little
    expect([...reached].sort()).toEqual(expect.arrayContaining(['external-data-mlp', 'stories260K']));
  }, 180_000);
});
