/**
 * How mutants are drawn in each runner. A mutant's seed replays it only under the same plan, so the
 * in-`npm test` run and `npm run fuzz` each name theirs, and `--replay SEED [--test]` picks one.
 */
import type { MutantPlan } from './target.ts';

export type PlanOptions = Omit<MutantPlan, 'models'>;

/** The long run: every model often (the 12 MB GPT-2 a quarter as often), mutants isolated in processes. */
export const LONG_PLAN: PlanOptions = {
  weights: [1, 0.25, 1, 1, 1],
  inMemory: 2,
  alwaysInMemory: ['int4-matmulnbits', 'int4-dequantize'],
  written: 1,
  isolated: true,
};

/** Inside `npm test`: in process, so no FIFO and short shared-output chains; the GPT-2 comes up rarely. */
export const TEST_PLAN: PlanOptions = {
  weights: [1.5, 0.1, 1, 1, 2],
  inMemory: 0,
  alwaysInMemory: ['int4-matmulnbits', 'int4-dequantize'],
  written: 1,
  isolated: false,
};
