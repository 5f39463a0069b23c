/**
 * The structured-pruning section of `npm run bench`: heads (12.5 / 25 / 50 %), MLP neurons (25 /
 * 50 %) and one block removed, by magnitude and by activation importance, on the demo model and
 * stories260K — perplexity, file size, parameters and onnxruntime-node tokens/s of the exported file.
 * Run alone with `npm run bench -- --structure-only` (rewrites only this section of the report).
 *
 * tokens/s: the same input (one sequence of the model's context, from its evaluation text) through
 * each file, one intra-op thread, 3 warm-up runs, then the median of 15 timed runs.
 * Activation importance calibrates on sequences the model generates itself (seeded), never on the
 * text perplexity is measured on.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { formatBytes } from '../../src/core/errors.ts';
import { evaluatePerplexity } from '../../src/core/eval/perplexity.ts';
import { decoderFeeds } from '../../src/core/eval/decoder.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { loadTokenizer, parseIdsText } from '../../src/core/tokenizer.ts';
import { createNodeSession, EXACT_WEIGHT_ONLY, Tensor } from '../../src/runtime/ort-node.ts';
import { generateCalibrationSequences } from '../../src/core/calibrate/generate.ts';
import { captureActivationStats, planCapture } from '../../src/core/calibrate/capture.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import {
  activationImportance,
  activationTargets,
  applyStructuredPruning,
  detectStructure,
  magnitudeImportance,
  planPruning,
  type PruneRequest,
  type StructureImportance,
} from '../../src/core/structure/index.ts';

const log = (s: string) => process.stderr.write(s + '\n');
const DEMO_TOKENS = 8192;

interface Row {
  label: string;
  importance: string;
  ppl: number;
  bytes: number;
  params: number;
  tokensPerSecond: number;
}

const REQUESTS: { label: string; request: PruneRequest; int4?: boolean }[] = [
  { label: 'heads 12.5 %', request: { heads: 0.125 } },
  { label: 'heads 25 %', request: { heads: 0.25 } },
  { label: 'heads 50 %', request: { heads: 0.5 } },
  { label: 'neurons 25 %', request: { neurons: 0.25 } },
  { label: 'neurons 50 %', request: { neurons: 0.5 } },
  { label: '1 block', request: { blocks: 1 } },
  { label: 'heads 25 % + neurons 25 %', request: { heads: 0.25, neurons: 0.25 } },
  {
    label: 'heads 25 % + neurons 25 %, then int4 block 32',
    request: { heads: 0.25, neurons: 0.25 },
    int4: true,
  },
];

/** Median seconds of one forward pass over `ids`, one intra-op thread. */
async function forwardSeconds(bytes: Uint8Array, model: OnnxModel, ids: number[]): Promise<number> {
  const session = await ort.InferenceSession.create(bytes, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    extra: EXACT_WEIGHT_ONLY,
  });
  try {
    const feeds = decoderFeeds(
      Tensor,
      summarizeInputs(model.graph).filter((i) => session.inputNames.includes(i.name)),
      ids,
    );
    for (let i = 0; i < 3; i++) await session.run(feeds);
    const times: number[] = [];
    for (let i = 0; i < 15; i++) {
      const t0 = performance.now();
      await session.run(feeds);
      times.push((performance.now() - t0) / 1000);
    }
    times.sort((a, b) => a - b);
    return times[7];
  } finally {
    await session.release();
  }
}

async function perplexity(
  bytes: Uint8Array,
  model: OnnxModel,
  sequences: number[][],
  ctx: number,
  stride: number,
) {
  const session = await createNodeSession(bytes);
  try {
    return await evaluatePerplexity(session, Tensor, summarizeInputs(model.graph), sequences, {
      ctx,
      stride,
    });
  } finally {
    await session.release();
  }
}

async function activationScores(model: OnnxModel, bytes: Uint8Array, bos: number, length: number) {
  const structure = detectStructure(model);
  const inputs = summarizeInputs(model.graph);
  const gen = await createNodeSession(bytes);
  const sequences = await generateCalibrationSequences(gen, Tensor, inputs, {
    count: 32,
    length,
    seed: 0,
    bos,
  });
  await gen.release();
  const plan = planCapture(model, activationTargets(structure), { hessian: false });
  const capture = await createNodeSession(plan.bytes);
  const stats = await captureActivationStats(capture, Tensor, inputs, plan, sequences);
  await capture.release();
  return activationImportance(model, structure, stats);
}

interface Subject {
  title: string;
  path: string;
  sequences: number[][];
  ctx: number;
  stride: number;
  bos: number;
  protocol: string;
}

async function table(s: Subject): Promise<{ rows: Row[]; tokens: number; speedTokens: number }> {
  const bytes = new Uint8Array(readFileSync(s.path));
  const model = parseModel(bytesSource(s.title, bytes));
  const structure = detectStructure(model);
  const probe = s.sequences.flat().slice(0, s.ctx);
  const rows: Row[] = [];
  const base = await perplexity(bytes, model, s.sequences, s.ctx, s.stride);
  const params = model.graph.initializer.reduce((n, t) => n + t.dims.reduce((a, b) => a * Number(b), 1), 0);
  rows.push({
    label: 'fp32 (original)',
    importance: '—',
    ppl: base.perplexity,
    bytes: bytes.byteLength,
    params,
    tokensPerSecond: probe.length / (await forwardSeconds(bytes, model, probe)),
  });
  log(`  ${s.title}: original ppl ${base.perplexity.toFixed(3)}`);
  const scores: [string, StructureImportance][] = [
    ['magnitude', magnitudeImportance(model, structure)],
    ['activation', await activationScores(model, bytes, s.bos, Math.min(128, s.ctx))],
  ];
  for (const r of REQUESTS) {
    for (const [kind, importance] of scores) {
      const plan = planPruning(structure, importance, r.request);
      const pruned = applyStructuredPruning(model, plan, structure);
      let out = pruned.bytes;
      if (r.int4)
        out = exportCompressed(
          pruned.model,
          compressModel(pruned.model, resolveRecipe({ steps: [{ method: 'int4' }] })),
        ).model;
      const result = await perplexity(out, pruned.model, s.sequences, s.ctx, s.stride);
      const seconds = await forwardSeconds(out, pruned.model, probe);
      rows.push({
        label: r.label,
        importance: kind,
        ppl: result.perplexity,
        bytes: out.byteLength,
        params: pruned.report.paramsAfter,
        tokensPerSecond: probe.length / seconds,
      });
      log(
        `  ${s.title}: ${r.label} (${kind}) ppl ${result.perplexity.toFixed(3)} ${formatBytes(out.byteLength)}`,
      );
    }
  }
  return { rows, tokens: base.tokens, speedTokens: probe.length };
}

function markdown(s: Subject, t: Awaited<ReturnType<typeof table>>): string {
  const base = t.rows[0];
  const lines = [
    `### ${s.title}`,
    '',
    `${s.protocol} Perplexity over ${t.tokens.toLocaleString('en-US')} scored tokens; tokens/s: one ${t.speedTokens}-token ` +
      'sequence, one intra-op thread, median of 15 runs after 3 warm-up runs.',
    '',
    '| removed | importance | perplexity | Δ vs fp32 | file size | parameters | tokens/s | speed-up |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of t.rows) {
    lines.push(
      `| ${r.label} | ${r.importance} | ${r.ppl.toFixed(3)} | ${r === base ? '—' : `${(((r.ppl - base.ppl) / base.ppl) * 100).toFixed(1)} %`} | ` +
        `${formatBytes(r.bytes)} | ${r.params.toLocaleString('en-US')} | ${r.tokensPerSecond.toFixed(0)} | ` +
        `${(r.tokensPerSecond / base.tokensPerSecond).toFixed(2)}× |`,
    );
  }
  return lines.join('\n');
}

/** The "## Structured pruning" section of docs/BENCHMARKS.md. */
export async function structureSection(root: string): Promise<string> {
  const demoDir = join(root, 'public/models/tiny-shakespeare-gpt2');
  const storiesDir = join(root, 'tests/fixtures/stories260K');
  const tokenizer = loadTokenizer(JSON.parse(readFileSync(join(demoDir, 'tokenizer.json'), 'utf8')));
  // the first DEMO_TOKENS tokens of the held-out text: 18 files each evaluated, on a shared machine
  const demoIds = tokenizer.encode(readFileSync(join(demoDir, 'heldout.txt'), 'utf8')).slice(0, DEMO_TOKENS);
  const subjects: Subject[] = [
    {
      title: 'Demo model (tiny-shakespeare-gpt2: 6 blocks, 6 heads, MLP 768)',
      path: join(demoDir, 'model.onnx'),
      sequences: [demoIds],
      ctx: 128,
      stride: 64,
      bos: 0,
      protocol: `Protocol: the first ${DEMO_TOKENS.toLocaleString('en-US')} tokens of \`heldout.txt\`, strided window ctx 128, stride 64.`,
    },
    {
      title: 'stories260K (5 blocks, 8 query / 4 KV heads, SwiGLU 172)',
      path: join(storiesDir, 'model.onnx'),
      sequences: parseIdsText(readFileSync(join(storiesDir, 'ids.txt'), 'utf8')),
      ctx: 512,
      stride: 256,
      bos: 1,
      protocol:
        'Protocol: `ids.txt`, five stories each scored from its first token. With GQA heads go in KV groups ' +
        '(4 per block): 12.5 % rounds to one group (25 %).',
    },
  ];
  const parts = [
    '## Structured pruning: heads, neurons and blocks removed',
    '',
    'Whole attention heads, MLP neurons or blocks are cut out of the graph (`src/core/structure/`): the file ' +
      'and the work per token shrink. Per layer: every block loses the same share; heads in whole KV groups; ' +
      'no fine-tuning after pruning (distillation is a later step). **magnitude**: ‖W_v(head)‖·‖W_o(head)‖, ' +
      '‖W_up(j)‖(·‖W_gate(j)‖)·‖W_down(j)‖; **activation**: Σ rms(x)·‖W_o row‖ over the head’s outputs, ' +
      'rms(x_j)·‖W_down(j)‖ per neuron, x captured on 32 sequences of 128 tokens the model generates itself ' +
      '(seed 0); a block’s score is the sum of its heads’ and neurons’.',
  ];
  for (const s of subjects) {
    log(`structure: ${s.title}`);
    parts.push('', markdown(s, await table(s)));
  }
  return parts.join('\n');
}
