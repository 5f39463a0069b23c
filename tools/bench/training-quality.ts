/**
 * The distillation quality table of the training section alone (`BENCH_ROW_CACHE=DIR npx tsx
 * tools/bench/training-quality.ts`): rows already in the cache are read back, the others trained; the
 * markdown goes to stdout. A way to add one row without rerunning the speed rounds.
 */
import { resolve } from 'node:path';
import { trainingQualityMarkdown } from './training.ts';

console.log(await trainingQualityMarkdown(resolve(import.meta.dirname, '../..')));
