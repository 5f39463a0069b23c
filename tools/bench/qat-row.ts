/**
 * One row of the quantization-aware training section, run alone (so rows can train in parallel
 * processes) and written to BENCH_ROW_CACHE, from which `npm run bench -- --only qat` assembles the
 * section: `BENCH_ROW_CACHE=DIR npx tsx tools/bench/qat-row.ts LABEL-PREFIX [steps=N] [batch=B]
 * [lr=X] [warmup=W] [beta2=B2] [wd=λ] [clip=C] [sequences=S] [checkpoints=a,b] [lsq=1 [scalelr=F]]` (lsq=1: learned scales,
 * labelled ", learned scales"). `qat-row.ts data chunk=K` only generates chunk K of the training
 * sequences (seed K; run several in parallel before a row that needs more than one chunk). The section's settings (batch, sequences) must
 * be the same when it assembles the rows, or they are trained again.
 */
import { resolve } from 'node:path';
import { QAT_DEFAULTS, QAT_RUNS, qatDataChunk, qatRows, qatTrainingData, type QatSettings } from './qat.ts';
import { log } from './log.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const [prefix, ...rest] = process.argv.slice(2);
const args = Object.fromEntries(rest.map((a) => a.split('=') as [string, string]));
if (prefix === 'data' && args.chunk !== undefined && process.env.BENCH_ROW_CACHE) {
  await qatDataChunk(ROOT, QAT_DEFAULTS, Number(args.chunk));
  process.exit(0);
}
const base = QAT_RUNS.find((r) => r.label.startsWith(prefix ?? ''));
if (!prefix || !base || !process.env.BENCH_ROW_CACHE) {
  log(
    `usage: BENCH_ROW_CACHE=DIR qat-row.ts LABEL-PREFIX [k=v…]; labels: ${QAT_RUNS.map((r) => r.label).join('; ')}`,
  );
  process.exit(2);
}
const run = {
  ...base,
  ...(args.steps ? { steps: Number(args.steps) } : {}),
  ...(args.batch ? { batch: Number(args.batch) } : {}),
  ...(args.lr ? { lr: Number(args.lr) } : {}),
  ...(args.warmup ? { warmup: Number(args.warmup) } : {}),
  ...(args.beta2 ? { beta2: Number(args.beta2) } : {}),
  ...(args.wd ? { weightDecay: Number(args.wd) } : {}),
  ...(args.clip ? { gradClip: Number(args.clip) } : {}),
  ...(args.beta2 || args.wd || args.clip
    ? {
        label: `${base.label}, AdamW β2 ${args.beta2 ?? 0.999}, λ ${args.wd ?? 0.01}, clip ${args.clip ?? 'none'}`,
      }
    : {}),
  ...(args.checkpoints ? { checkpoints: args.checkpoints.split(',').map(Number) } : {}),
  ...(args.lsq === '1'
    ? {
        label: `${base.label}, learned scales${args.scalelr ? ` (scale lr × ${args.scalelr})` : ''}`,
        learnScales: true,
        ...(args.scalelr ? { scaleLr: Number(args.scalelr) } : {}),
      }
    : {}),
};
const settings: QatSettings = {
  ...QAT_DEFAULTS,
  ...(args.sequences ? { sequences: Number(args.sequences) } : {}),
  runs: [run],
};
const data = await qatTrainingData(ROOT, settings);
const [row] = await qatRows(ROOT, settings, data);
console.log(JSON.stringify(row));
