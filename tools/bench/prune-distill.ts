/**
 * The structure section's prune → distil row: the demo model with 25 % of its heads and 25 % of its
 * MLP neurons removed, then distilled from the original on its training split — the two commands the
 * README shows, run through the same core functions (pruneStructure, distill) in one process:
 *
 * - pruning: per layer, by `importance` (activation by default), calibrated on 128 windows of 128
 *   tokens of `train.txt` (what `--calib-text train.txt` gives);
 * - distillation: 150 steps of 8 × 128 tokens drawn from `train.txt` (seed 0), AdamW lr 1e-3, cosine,
 *   T 2, α 0.5, every float weight (the CLI's defaults);
 * - perplexity: the whole `heldout.txt`, ctx 128, stride 64, before pruning, after pruning and after
 *   distillation (onnxruntime-node on the written files).
 *
 * A run takes long on a shared machine (150 × 1,024 tokens forward and backward in the training
 * engine); with BENCH_ROW_CACHE=DIR its result is kept in DIR and read back by the next bench run.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { loadTokenizer } from '../../src/core/tokenizer.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';
import { pruneStructure } from '../../src/core/compress/structure.ts';
import { distill, sessionTeacher, withWeights } from '../../src/core/train/distill.ts';
import type { ImportanceKind } from '../../src/core/structure/index.ts';
import {
  openReference,
  versusCells,
  versusProtocol,
  VERSUS_HEADER,
  VERSUS_RULE,
  type VersusOriginal,
} from './perplexity.ts';
import { log } from './log.ts';

export const PRUNE_DISTILL = {
  heads: 0.25,
  neurons: 0.25,
  calibrationSamples: 128,
  calibrationLength: 128,
  steps: 150,
  batch: 8,
  seq: 128,
  lr: 1e-3,
  ctx: 128,
  stride: 64,
};

export interface PruneDistillResult {
  importance: ImportanceKind;
  fp32: number;
  pruned: number;
  distilled: number;
  paramsBefore: number;
  paramsAfter: number;
  bytesBefore: number;
  bytesAfter: number;
  heldOutTokens: number;
  trainTokensPerSecond: number;
  seconds: number;
  /** The pruned and the distilled file against the original on the same tokens (rows cached before: absent). */
  prunedVersus?: VersusOriginal;
  versus?: VersusOriginal;
}

export async function pruneDistillRow(
  root: string,
  importance: ImportanceKind = 'activation',
): Promise<PruneDistillResult> {
  const cacheDir = process.env.BENCH_ROW_CACHE;
  const cacheFile = cacheDir ? join(cacheDir, `demo-prune-distill-${importance}.json`) : '';
  // a row cached before the bench measured KL is trained again (its weights are not kept)
  const cached = cacheFile && existsSync(cacheFile) ? JSON.parse(readFileSync(cacheFile, 'utf8')) : null;
  if (cached?.versus) return cached;
  // another bench process claimed the row: wait for its result instead of training twice
  if (!cached && cacheFile && existsSync(cacheFile + '.claim')) {
    log(`  prune → distil (${importance}): waiting for the run that claimed ${cacheFile}`);
    while (!existsSync(cacheFile)) await new Promise((r) => setTimeout(r, 10_000));
    return JSON.parse(readFileSync(cacheFile, 'utf8'));
  }
  if (cacheFile) writeFileSync(cacheFile + '.claim', String(process.pid));
  const p = PRUNE_DISTILL;
  const dir = join(root, 'public/models/tiny-shakespeare-gpt2');
  const tokenizer = loadTokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')));
  const train = tokenizer.encode(readFileSync(join(dir, 'train.txt'), 'utf8'));
  const heldOut = [tokenizer.encode(readFileSync(join(dir, 'heldout.txt'), 'utf8'))];
  const bytes = new Uint8Array(readFileSync(join(dir, 'onnx', 'model.onnx')));
  const model = parseModel(bytesSource('tiny-shakespeare-gpt2', bytes));
  const inputs = summarizeInputs(model.graph);
  const t0 = performance.now();
  // the bench's one perplexity pass (the original's logits once, every model against them)
  const reference = await openReference(bytes, model, heldOut, p.ctx, p.stride);
  try {
    const fp32 = await reference.measure(bytes, model);
    log(`  prune → distil (${importance}): fp32 ${fp32.perplexity.toFixed(3)}`);
    const prunedModel = await pruneStructure(
      model,
      { heads: p.heads, neurons: p.neurons, importance, scope: 'layer' },
      {
        input: {
          settings: {
            source: 'text',
            samples: p.calibrationSamples,
            length: p.calibrationLength,
            seed: 0,
            bos: 0,
            sequential: false,
          },
          data: [train],
        },
        runtime: { createSession: createNodeSession, Tensor, inputs },
      },
    );
    const pruned = await reference.measure(prunedModel.bytes, prunedModel.model);
    log(`  prune → distil (${importance}): pruned ${pruned.perplexity.toFixed(3)}`);
    const teacherSession = await createNodeSession(bytes);
    let result;
    try {
      result = await distill(prunedModel.model, sessionTeacher(teacherSession, Tensor, inputs), [train], {
        steps: p.steps,
        batch: p.batch,
        seq: p.seq,
        lr: p.lr,
        onStep: (s) => {
          if (s.step % 10 === 0 || s.step === 1)
            log(
              `  prune → distil (${importance}): step ${s.step}/${s.steps} loss ${s.loss.toFixed(4)} ` +
                `${Math.round(s.tokensPerSecond)} tokens/s`,
            );
        },
      });
    } finally {
      await teacherSession.release();
    }
    const written = withWeights(prunedModel.model, result.weights);
    const distilled = await reference.measure(written, prunedModel.model);
    log(`  prune → distil (${importance}): distilled ${distilled.perplexity.toFixed(3)}`);
    const row: PruneDistillResult = {
      importance,
      fp32: fp32.perplexity,
      pruned: pruned.perplexity,
      distilled: distilled.perplexity,
      paramsBefore: prunedModel.report.paramsBefore,
      paramsAfter: prunedModel.report.paramsAfter,
      bytesBefore: bytes.byteLength,
      bytesAfter: written.byteLength,
      heldOutTokens: distilled.tokens,
      trainTokensPerSecond: result.tokensPerSecond,
      seconds: (performance.now() - t0) / 1000,
      prunedVersus: pruned.versus,
      versus: distilled.versus,
    };
    if (cacheFile) writeFileSync(cacheFile, JSON.stringify(row));
    return row;
  } finally {
    await reference.close();
  }
}

/** The row as a markdown table with its protocol. */
export function pruneDistillMarkdown(rows: PruneDistillResult[]): string {
  const p = PRUNE_DISTILL;
  const lines = [
    '### Prune, then distil (demo model)',
    '',
    `Protocol: per layer, ${p.heads * 100} % of heads and ${p.neurons * 100} % of MLP neurons removed, importance ` +
      `calibrated on ${p.calibrationSamples} windows of ${p.calibrationLength} tokens of \`train.txt\`; then ` +
      `\`distill\` from the original: ${p.steps} steps of ${p.batch} × ${p.seq} tokens of \`train.txt\` (seed 0), ` +
      `AdamW lr ${p.lr}, cosine, T 2, α 0.5, every float weight. Perplexity on the whole \`heldout.txt\` ` +
      `(${rows[0]?.heldOutTokens.toLocaleString('en-US') ?? '—'} scored tokens), ctx ${p.ctx}, stride ${p.stride}. ` +
      'Target: within 10 % of fp32.',
    '',
    `| importance | fp32 | pruned | KL pruned | distilled | Δ vs fp32 ${VERSUS_HEADER} within 10 % | parameters | file size | training tokens/s |`,
    `|---|---:|---:|---:|---:|---:|${VERSUS_RULE}---|---:|---:|---:|`,
  ];
  for (const r of rows) {
    const delta = (r.distilled - r.fp32) / r.fp32;
    lines.push(
      `| ${r.importance} | ${r.fp32.toFixed(3)} | ${r.pruned.toFixed(3)} | ${r.prunedVersus ? r.prunedVersus.kl.value.toFixed(5) : '—'} | ` +
        `**${r.distilled.toFixed(3)}** | ${(delta * 100).toFixed(1)} % |${versusCells(r.versus)} ${delta <= 0.1 ? 'yes' : 'no'} | ` +
        `${r.paramsBefore.toLocaleString('en-US')} → ${r.paramsAfter.toLocaleString('en-US')} | ` +
        `${(r.bytesBefore / 1e6).toFixed(2)} → ${(r.bytesAfter / 1e6).toFixed(2)} MB | ${r.trainTokensPerSecond.toFixed(0)} |`,
    );
  }
  const protocol = versusProtocol(rows);
  if (protocol)
    lines.push(
      '',
      `${protocol} KL columns: the distilled file (KL pruned: the pruned file before distillation).`,
    );
  return lines.join('\n');
}

// run alone: node --import tsx tools/bench/prune-distill.ts [importance]
if (process.argv[1]?.endsWith('prune-distill.ts')) {
  const kind = (process.argv[2] ?? 'activation') as ImportanceKind;
  pruneDistillRow(process.cwd(), kind).then(
    (r) => console.log(JSON.stringify(r)),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
