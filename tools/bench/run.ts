/**
 * `npm run bench`: quality of every method at several strengths (perplexity next to file size) on
 * the demo model and on stories260K, and the speed of every kernel against the reference Python
 * implementations (torch / scikit-learn) on the same weights. Writes docs/BENCHMARKS.md.
 * Flags: --quick (skip the 124 M-parameter set), --no-python, --out FILE, --speed-only (keep the
 * quality tables of the last run), --only calibrated (only the calibrated tables and the calibration
 * speed sections, merged into the last run's file by heading), --only training (only the training
 * section, tools/bench/training.ts, merged likewise; --no-train-quality skips its distillation rows),
 * --only qat (only the quantization-aware training section, tools/bench/qat.ts, replaced in the
 * existing report), --structure-only (only the structured-pruning section, replaced in the existing report),
 * --only large (the large-model section, tools/bench/large.ts: a generated 2.7 GB model through the CLI and
 * Chromium, replaced in the existing report).
 */
import { spawnSync } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  bytesSource,
  findInitializer,
  parseModel,
  readTensorFloat32,
  type OnnxModel,
} from '../../src/core/onnx/model.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { weightCandidates } from '../../src/core/compress/select.ts';
import { loadTokenizer, parseIdsText } from '../../src/core/tokenizer.ts';
import { quantizeInt8 } from '../../src/methods/int8/kernel.ts';
import { quantizeInt4Blockwise, dequantizeInt4Blockwise } from '../../src/methods/int4/kernel.ts';
import { dequantizeInt8 } from '../../src/methods/int8/kernel.ts';
import { pruneMagnitude } from '../../src/methods/prune/kernel.ts';
import { kmeans1d } from '../../src/methods/kmeans/kernel.ts';
import { castFloat16ToFloat32, castFloat32ToFloat16 } from '../../src/core/onnx/dtypes.ts';
import { formatBytes } from '../../src/core/errors.ts';
import { PreviewSession, overlayHistogram } from '../../src/core/compress/session.ts';
import { errorStats } from '../../src/core/compress/metrics.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { structureSection } from './structure.ts';
import { qatSection } from './qat.ts';
import { largeSection } from './large.ts';
import {
  DEMO_CALIBRATED,
  DEMO_TRAIN,
  STORIES_CALIBRATED,
  calibratedMarkdown,
  calibratedTable,
  captureSpeedMarkdown,
  gptqSpeedMarkdown,
  type CalibratedModelSpec,
} from './calibrated.ts';
import {
  openReference,
  versusCells,
  versusProtocol,
  VERSUS_HEADER,
  VERSUS_RULE,
  type VersusOriginal,
} from './perplexity.ts';
import { trainingSection } from './training.ts';
import { pageSpeedSection } from './page-speed.ts';
import { gpt2SmallSynthetic, type WeightSet } from './weights.ts';
import { kernelPoolSection } from './kernel-pool.ts';
import { log } from './log.ts';
import { cachedRows } from './row-cache.ts';

const ROOT = resolve(import.meta.dirname, '../..');
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;
const DEMO = join(ROOT, 'public/models/tiny-shakespeare-gpt2');
/** The demo's one model file: GPT-2 with its KV cache, where Hugging Face folders keep it. */
const DEMO_MODEL = join(DEMO, 'onnx', 'model.onnx');
const STORIES = join(ROOT, 'tests/fixtures/stories260K');
const args = new Set(process.argv.slice(2));
const outIndex = process.argv.indexOf('--out');
const OUT = outIndex > 0 ? process.argv[outIndex + 1] : join(ROOT, 'docs/BENCHMARKS.md');
const onlyIndex = process.argv.indexOf('--only');
const ONLY = onlyIndex > 0 ? process.argv[onlyIndex + 1] : null;
/** --only calibrated, or some of its parts: --only stories,demo,capture,gptq */
const CALIBRATED_PARTS = ['stories', 'demo', 'capture', 'gptq'];
/** --only quality-stories,quality-demo: the uncalibrated quality tables (with KL against fp32). */
const ONLY_PARTS = [...CALIBRATED_PARTS, 'quality-stories', 'quality-demo'];
/** --only NAME for a section replaced alone in the existing report. */
const SECTIONS_ALONE = ['training', 'qat', 'page-speed', 'kernel-pool', 'large'];
const PARTS = ONLY === 'calibrated' ? CALIBRATED_PARTS : (ONLY?.split(',') ?? []);
if (ONLY !== null && !SECTIONS_ALONE.includes(ONLY) && PARTS.some((p) => !ONLY_PARTS.includes(p)))
  throw new Error(
    `--only takes 'training', 'qat', 'page-speed', 'kernel-pool', 'large', 'calibrated' or some of ${ONLY_PARTS.join(',')}, got ${ONLY}`,
  );

// ---------------------------------------------------------------- quality

const QUALITY: { label: string; steps: RecipeStep[] }[] = [
  { label: 'fp32 (original)', steps: [] },
  { label: 'fp16', steps: [{ method: 'fp16' }] },
  { label: 'int8 per-channel', steps: [{ method: 'int8' }] },
  { label: 'int8 per-tensor', steps: [{ method: 'int8', options: { granularity: 'per-tensor' } }] },
  ...[16, 32, 64, 128].map((b) => ({
    label: `int4 block ${b}`,
    steps: [{ method: 'int4', options: { blockSize: b } }],
  })),
  { label: 'int4 block 32 asymmetric', steps: [{ method: 'int4', options: { symmetric: false } }] },
  ...[0.1, 0.3, 0.5, 0.7].map((s) => ({
    label: `prune ${s * 100}% per layer`,
    steps: [{ method: 'prune', options: { sparsity: s } }],
  })),
  ...[0.1, 0.3, 0.5, 0.7].map((s) => ({
    label: `prune ${s * 100}% global`,
    steps: [{ method: 'prune', options: { sparsity: s, scope: 'global' } }],
  })),
  { label: 'prune 2:4', steps: [{ method: 'prune', options: { pattern: '2:4' } }] },
  { label: 'prune 4:8', steps: [{ method: 'prune', options: { pattern: '4:8' } }] },
  ...[4, 8, 16, 32, 64, 256].map((k) => ({
    label: `k-means K=${k}`,
    steps: [{ method: 'kmeans', options: { clusters: k } }],
  })),
  {
    label: 'k-means K=16 per channel',
    steps: [{ method: 'kmeans', options: { clusters: 16, perChannel: true } }],
  },
  {
    label: 'prune 50% + int4 block 32',
    steps: [{ method: 'prune', options: { sparsity: 0.5 } }, { method: 'int4' }],
  },
  {
    label: 'prune 30% + k-means K=16',
    steps: [
      { method: 'prune', options: { sparsity: 0.3 } },
      { method: 'kmeans', options: { clusters: 16 } },
    ],
  },
];

interface QualityRow {
  label: string;
  ppl: number;
  bytes: number;
  bitsPerWeight: number;
  sparsity: number;
  compressSeconds: number;
  versus?: VersusOriginal;
}

async function qualityTable(name: string, path: string, sequences: number[][], ctx: number, stride: number) {
  const source = new Uint8Array(readFileSync(path));
  const model = parseModel(bytesSource(name, source));
  // the original's logits are computed once and every row is compared with them on the same tokens
  const reference = await openReference(source, model, sequences, ctx, stride);
  let rows: QualityRow[];
  try {
    // BENCH_ROW_CACHE=DIR keeps each row's result (tools/bench/row-cache.ts)
    rows = await cachedRows(
      `quality-${name}`,
      QUALITY,
      async (q): Promise<QualityRow> => {
        const t0 = performance.now();
        let bytes: Uint8Array = source;
        let bitsPerWeight = 32;
        let sparsity = 0;
        if (q.steps.length) {
          const result = compressModel(model, resolveRecipe({ steps: q.steps }));
          bytes = exportCompressed(model, result).model;
          bitsPerWeight = result.totals.bitsPerWeight;
          sparsity = result.totals.sparsity;
        }
        const compressSeconds = (performance.now() - t0) / 1000;
        const r = await reference.measure(bytes, model);
        log(
          `  ${name}: ${q.label.padEnd(28)} ppl ${r.perplexity.toFixed(3)}  KL ${r.versus.kl.value.toFixed(5)}  ` +
            `same top ${(r.versus.sameTop.value * 100).toFixed(2)} %  ${formatBytes(bytes.byteLength)}`,
        );
        return {
          label: q.label,
          ppl: r.perplexity,
          bytes: bytes.byteLength,
          bitsPerWeight,
          sparsity,
          compressSeconds,
          versus: r.versus,
        };
      },
      // rows cached before the bench measured KL against the original are measured again
      (cached) => cached.versus !== undefined,
    );
  } finally {
    await reference.close();
  }
  const tokens = rows[0].versus?.protocol.tokens ?? 0;
  return { rows, tokens };
}

function qualityMarkdown(title: string, protocol: string, rows: QualityRow[]): string {
  const base = rows[0];
  const lines = [
    `### ${title}`,
    '',
    protocol,
    '',
    `| recipe | perplexity | Δ vs fp32 ${VERSUS_HEADER} file size | × smaller | bits/weight (compressed tensors) | sparsity | compress time |`,
    `|---|---:|---:|${VERSUS_RULE}---:|---:|---:|---:|---:|`,
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.label} | ${r.ppl.toFixed(3)} | ${r === base ? '—' : `${(((r.ppl - base.ppl) / base.ppl) * 100).toFixed(1)} %`} |` +
        `${versusCells(r.versus)} ${formatBytes(r.bytes)} | ${(base.bytes / r.bytes).toFixed(2)} | ${r.bitsPerWeight.toFixed(2)} | ` +
        `${(r.sparsity * 100).toFixed(1)} % | ${r === base ? '—' : `${(r.compressSeconds * 1000).toFixed(0)} ms`} |`,
    );
  }
  lines.push('', versusProtocol(rows));
  return lines.join('\n');
}

// ---------------------------------------------------------------- speed

function weightsOf(model: OnnxModel, title: string): WeightSet {
  const tensors = weightCandidates(model.graph).map((c) => {
    const v = readTensorFloat32(model, findInitializer(model, c.name));
    // every kernel sees a [K, N] matrix with channels along N; transposed tables are transposed here
    if (c.channelAxis === 1) return { name: c.name, shape: c.shape, values: v };
    const [r, col] = c.shape;
    const t = new Float32Array(v.length);
    for (let i = 0; i < r; i++) for (let j = 0; j < col; j++) t[j * r + i] = v[i * col + j];
    return { name: c.name, shape: [col, r] as [number, number], values: t };
  });
  return { name: title, tensors };
}

type KernelName = 'int8' | 'int4' | 'prune' | 'kmeans' | 'fp16';

const KERNELS: { id: KernelName; label: string; ours: string; theirs: string }[] = [
  {
    id: 'int8',
    label: 'int8 per-channel',
    ours: 'quantizeInt8',
    theirs: 'torch textbook per-channel (amax/127, round, clamp)',
  },
  {
    id: 'int4',
    label: 'int4 block 32',
    ours: 'quantizeInt4Blockwise',
    theirs: 'torch textbook block RTN (amax/7 per 32)',
  },
  {
    id: 'prune',
    label: 'L1 prune 50 %',
    ours: 'pruneMagnitude',
    theirs: 'torch.nn.utils.prune.l1_unstructured',
  },
  {
    id: 'kmeans',
    label: 'k-means K=16',
    ours: 'kmeans1d',
    theirs: 'sklearn.cluster.KMeans(16, n_init=1) per tensor',
  },
  { id: 'fp16', label: 'fp16 cast', ours: 'castFloat32ToFloat16', theirs: 'torch Tensor.half()' },
];

/** Time of the kernel proper (what export needs), then its squared error from the decoded result. */
function runKernel(
  id: KernelName,
  values: Float32Array,
  shape: [number, number],
): { seconds: number; sq: number } {
  const [k, n] = shape;
  const t0 = performance.now();
  let decode: () => Float32Array;
  if (id === 'int8') {
    const q = quantizeInt8(values, k, n, 1, true);
    decode = () => dequantizeInt8(q, k, n, 1);
  } else if (id === 'int4') {
    const q = quantizeInt4Blockwise(values, k, n, 1, 32, true);
    decode = () => dequantizeInt4Blockwise(q, k, n, 1);
  } else if (id === 'prune') {
    const p = pruneMagnitude(values, 0.5);
    decode = () => p;
  } else if (id === 'kmeans') {
    const codes = new Uint8Array(values.length);
    const book = kmeans1d(values, codes, { clusters: 16, keepZeros: true, restarts: 3, seed: 1 });
    decode = () => Float32Array.from(codes, (c) => book[c]);
  } else {
    const h = castFloat32ToFloat16(values);
    decode = () => castFloat16ToFloat32(h);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, sq: errorStats(values, decode()).mse * values.length };
}

interface SpeedRow {
  kernel: (typeof KERNELS)[number];
  ours: { seconds: number; sq: number };
  theirs?: { seconds: number; sqError: number };
}

function speedTable(
  set: WeightSet,
  python: boolean,
  repeats: number,
): { rows: SpeedRow[]; params: number; note?: string } {
  const params = set.tensors.reduce((s, t) => s + t.values.length, 0);
  const rows: SpeedRow[] = [];
  for (const kernel of KERNELS) {
    let best = { seconds: Infinity, sq: 0 };
    for (let r = 0; r < repeats; r++) {
      let seconds = 0;
      let sq = 0;
      for (const t of set.tensors) {
        collectGarbage(); // the previous tensor's decode arrays are not this kernel's cost
        const x = runKernel(kernel.id, t.values, t.shape);
        seconds += x.seconds;
        sq += x.sq;
      }
      if (seconds < best.seconds) best = { seconds, sq };
    }
    rows.push({ kernel, ours: best });
    log(`  ${set.name}: ${kernel.label} ${best.seconds.toFixed(3)} s`);
  }
  let note: string | undefined;
  if (python) {
    const dir = mkdtempSync(join(tmpdir(), 'cs-bench-'));
    try {
      const file = join(dir, 'weights.f32');
      const all = new Float32Array(params);
      const tensors = [];
      let offset = 0;
      for (const t of set.tensors) {
        all.set(t.values, offset);
        tensors.push({ name: t.name, shape: t.shape, offset });
        offset += t.values.length;
      }
      writeFileSync(file, new Uint8Array(all.buffer));
      const manifest = join(dir, 'manifest.json');
      writeFileSync(manifest, JSON.stringify({ file, tensors, methods: KERNELS.map((k) => k.id) }));
      log(`  ${set.name}: running the Python references…`);
      const py = spawnSync('/usr/bin/python3', [join(ROOT, 'tools/bench/baselines.py'), manifest], {
        encoding: 'utf8',
        maxBuffer: 1 << 24,
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      if (py.status === 0) {
        const theirs = JSON.parse(py.stdout);
        for (const r of rows) r.theirs = theirs[r.kernel.id];
      } else
        note = `Python references did not run (${py.error?.message ?? `exit ${py.status}`}); install python3-torch and python3-sklearn.`;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return { rows, params, note };
}

/** The issue's targets, checked against this run's numbers (met / missed), not written by hand. */
function targetLines(table: ReturnType<typeof speedTable>, mb: number, kmeansTarget: boolean): string[] {
  const row = (id: KernelName) => table.rows.find((r) => r.kernel.id === id)!;
  const check = (ok: boolean) => (ok ? 'met' : '**missed**');
  const out = ['Targets in this run:'];
  for (const id of ['int8', 'int4'] as const) {
    const rate = mb / row(id).ours.seconds;
    out.push(
      `- ${row(id).kernel.label} ≥ 500 MB/s per worker: ${rate.toFixed(0)} MB/s — ${check(rate >= 500)}`,
    );
  }
  for (const r of table.rows.filter((x) => x.theirs && x.kernel.id !== 'fp16')) {
    const ratio = r.theirs!.seconds / r.ours.seconds;
    out.push(
      `- ${r.kernel.label} faster than ${r.kernel.theirs}: ${ratio.toFixed(1)}× — ${check(ratio > 1)}`,
    );
  }
  const km = row('kmeans');
  if (km.theirs) {
    const ratio = km.theirs.seconds / km.ours.seconds;
    const mseOk = km.ours.sq <= km.theirs.sqError;
    const line = `- k-means ≥ 100× sklearn with MSE no higher: ${ratio.toFixed(1)}×, MSE ${mseOk ? 'lower or equal' : 'higher'}`;
    // the issue sets this target on the whole GPT-2-small-shaped set; on small tensors our fixed
    // per-tensor cost (Lloyd with 3 seeds on ~16 k histogram points) weighs more, so it is shown, not judged
    out.push(
      kmeansTarget ? `${line} — ${check(ratio >= 100 && mseOk)}` : `${line} (target set on the 124 M set)`,
    );
  }
  return out;
}

function speedMarkdown(set: WeightSet, table: ReturnType<typeof speedTable>): string {
  const mb = (table.params * 4) / 1e6;
  const lines = [
    `### ${set.name}`,
    '',
    `${table.params.toLocaleString('en-US')} parameters in ${set.tensors.length} tensors (${mb.toFixed(0)} MB of float32). One thread each side.`,
    '',
    '| kernel | ours | ours MB/s | reference | reference time | speed-up | MSE ours | MSE reference |',
    '|---|---:|---:|---|---:|---:|---:|---:|',
  ];
  for (const r of table.rows) {
    const mse = (sq: number) => (sq / table.params).toExponential(3);
    lines.push(
      `| ${r.kernel.label} (\`${r.kernel.ours}\`) | ${r.ours.seconds.toFixed(3)} s | ${(mb / r.ours.seconds).toFixed(0)} | ` +
        `${r.kernel.theirs} | ${r.theirs ? `${r.theirs.seconds.toFixed(3)} s` : 'n/a'} | ` +
        `${r.theirs ? `${(r.theirs.seconds / r.ours.seconds).toFixed(1)}×` : 'n/a'} | ${mse(r.ours.sq)} | ` +
        `${r.theirs ? mse(r.theirs.sqError) : 'n/a'} |`,
    );
  }
  if (table.note) lines.push('', table.note);
  lines.push('', ...targetLines(table, mb, set.kmeansTarget === true));
  return lines.join('\n');
}

// ---------------------------------------------------------------- live preview latency

/**
 * What a slider move costs in the worker for a GPT-2-small MLP weight (768 × 3072): the preview
 * session's first answer (kernel, decode, error statistics, overlay histogram) for that tensor.
 */
async function previewLatencyMarkdown(): Promise<string> {
  const k = 768;
  const n = 3072;
  const w = gpt2SmallSynthetic().tensors.find((t) => t.name === 'h.0.mlp.c_fc')!.values;
  const bytes = makeModelBytes({
    nodes: [makeNode('MatMul', ['x', 'w'], ['h']), makeNode('Relu', ['h'], ['y'])],
    inputs: [valueInfo('x', DataType.FLOAT, [1, k])],
    outputs: [valueInfo('y', DataType.FLOAT, [1, n])],
    initializers: [floatTensor('w', [k, n], w)],
  });
  const session = new PreviewSession(parseModel(bytesSource('mlp', bytes)));
  const cases: [string, RecipeStep[]][] = [
    ['int8 per-channel', [{ method: 'int8' }]],
    ['int4 block 32', [{ method: 'int4' }]],
    ['int4 block 128', [{ method: 'int4', options: { blockSize: 128 } }]],
    ['prune 50 %', [{ method: 'prune', options: { sparsity: 0.5 } }]],
    ['prune 2:4', [{ method: 'prune', options: { pattern: '2:4' } }]],
    ['k-means K=16', [{ method: 'kmeans', options: { clusters: 16 } }]],
    [
      'prune 50 % → int4 block 32 (int4 moved)',
      [{ method: 'prune', options: { sparsity: 0.5 } }, { method: 'int4' }],
    ],
    ['fp16', [{ method: 'fp16' }]],
  ];
  const lines = [
    '## Live preview: one slider move on a 768 × 3072 weight',
    '',
    'Time from the request to the selected tensor’s answer in the preview session (kernel, decode, ' +
      'error statistics, 64-bin overlay histogram), single thread, median of 5. The last row reuses the cached pruning.',
    '',
    '| recipe | ms |',
    '|---|---:|',
  ];
  for (const [label, steps] of cases) {
    const times: number[] = [];
    const moved = label.includes('moved');
    for (let r = 0; r < 5; r++) {
      // the cached case moves only the int4 slider (32 ↔ 64), so pruning comes from the cache;
      // every other case starts from an empty cache, so the number is the work itself
      const run = moved ? [steps[0], { method: 'int4', options: { blockSize: r % 2 ? 64 : 32 } }] : steps;
      if (!moved) session.clearCache();
      const t0 = performance.now();
      let answered = 0;
      await session.run(resolveRecipe({ steps: run }), {
        priority: 'w',
        onPriority: (o) => {
          errorStats(o.original, o.values);
          overlayHistogram(o.original, o.values, 64);
          answered = performance.now() - t0;
        },
      });
      times.push(answered);
    }
    times.sort((a, b) => a - b);
    lines.push(`| ${label} | ${times[2].toFixed(0)} |`);
    log(`  preview ${label}: ${times[2].toFixed(0)} ms`);
  }
  return lines.join('\n');
}

const NOTES = `## Reading the tables

- **bits/weight** counts everything a compressed tensor stores: codes, float32 scales, zero points, codebooks
  and per-channel offsets. MatMulNBits pads K to whole blocks, so a block larger than K's divisors costs
  bits (the demo's K = 192 with block 128 stores 256 rows: 5.19 bits, more than block 64's 4.50).
- **k-means** indices pack whole into bytes (1, 2, 4 or 8 bits), so K = 8 stores 4-bit indices like K = 16,
  and K = 32…256 store 8-bit indices: on these models K = 16 is the 4-bit choice, K = 256 the 8-bit one.
- Pruning keeps the dense layout (ONNX has no sparse MatMul that stock onnxruntime runs everywhere): its
  file is the same size; sparsity pays off with a sparse runtime or combined with quantization/k-means.
- The MSE columns of the speed tables compare the same kernel's error: our int4 uses onnxruntime's
  scheme (the block's extreme maps to −8, so 16 levels are used), the torch reference the textbook
  max/7 (15 levels), hence our lower error at the same bits. k-means: ours bins a 16,384-bin histogram
  of each tensor, runs k-means++ (3 seeds) and Lloyd to convergence on it, and assigns every weight
  through a bin → code table.
- The quantizers' range and code loops, k-means' range/histogram/assignment passes and the fp16 casts run
  as WebAssembly SIMD (\`src/core/simd/kernels.wat\`, four lanes, one thread, the same module in workers,
  Node and the CLI); k-means++ seeding and Lloyd run on the histogram's prefix sums in plain TypeScript.
  torch's \`Tensor.half()\` uses the CPU's F16C conversion instructions, which WebAssembly does not have,
  so the fp16 cast stays behind it (the issue sets no target for fp16).
- Kernel times include allocating the output arrays and vary by ±20 % between runs on this shared VM.
`;

// ---------------------------------------------------------------- main

async function main() {
  const python = !args.has('--no-python');
  const sections: string[] = [];
  const started = new Date().toISOString().slice(0, 10);
  if (args.has('--structure-only')) return replaceSection(await structureSection(ROOT));
  if (ONLY === 'qat') return replaceSection(await qatSection(ROOT));
  if (ONLY === 'page-speed') return replaceSection(await pageSpeedSection(ROOT));
  if (ONLY === 'kernel-pool') return replaceSection(await kernelPoolSection(ROOT));
  // the large-model section: generated 2.7 GB model, CLI and Chromium (tools/bench/large.ts)
  if (ONLY === 'large') return replaceSection(await largeSection(ROOT));

  const training = () => trainingSection(ROOT, { python, quality: !args.has('--no-train-quality') });
  if (ONLY === 'training') {
    sections.push(await training());
    mergeReport(sections);
    return;
  }
  if (ONLY !== null) {
    await calibratedOnly(sections);
    mergeReport(sections);
    return;
  }
  if (!args.has('--speed-only')) await qualitySections(sections);
  if (!args.has('--speed-only')) sections.push(await structureSection(ROOT));
  sections.push(await previewLatencyMarkdown());
  await speedSections(sections, python);
  sections.push(await captureSpeedSection());
  sections.push(await training());
  writeReport(sections, started);
}

async function qualitySections(sections: string[]) {
  sections.push('## Quality: perplexity against size');
  if (existsSync(DEMO_MODEL)) {
    sections.push(await demoQuality());
    const spec = demoCalibratedSpec();
    sections.push(calibratedMarkdown(spec, await calibratedTable(spec)));
  }
  sections.push(await storiesQuality());
  const spec = storiesCalibratedSpec();
  sections.push(calibratedMarkdown(spec, await calibratedTable(spec)));
}

async function demoQuality(): Promise<string> {
  const tokenizer = loadTokenizer(JSON.parse(readFileSync(join(DEMO, 'tokenizer.json'), 'utf8')));
  const ids = tokenizer.encode(readFileSync(join(DEMO, 'heldout.txt'), 'utf8'));
  const config = JSON.parse(readFileSync(join(DEMO, 'config.json'), 'utf8'));
  const ctx = config.n_positions;
  const stride = ctx / 2;
  log('quality: demo model');
  const demo = await qualityTable('demo', DEMO_MODEL, [ids], ctx, stride);
  return qualityMarkdown(
    DEMO_TITLE,
    `Protocol: \`heldout.txt\` (last 10 % of tinyshakespeare), ${demo.tokens.toLocaleString('en-US')} tokens scored, ` +
      `strided window ctx ${ctx}, stride ${stride}. Linear weights compressed; the tied embedding/LM head stays fp32 (opt-in in a recipe).`,
    demo.rows,
  );
}

async function storiesQuality(): Promise<string> {
  log('quality: stories260K');
  const storiesIds = parseIdsText(readFileSync(join(STORIES, 'ids.txt'), 'utf8'));
  const stories = await qualityTable('stories260K', join(STORIES, 'model.onnx'), storiesIds, 512, 256);
  return qualityMarkdown(
    STORIES_TITLE,
    `Protocol: \`ids.txt\`, five stories each scored from its first token, ${stories.tokens.toLocaleString('en-US')} predictions ` +
      `(reference fp32 3.5482; per-row int8 3.551, int4 4.390). Linear weights compressed; the tied embedding stays fp32.`,
    stories.rows,
  );
}

const DEMO_TITLE = 'Demo model (tiny-shakespeare-gpt2, GPT-2 architecture) on its held-out text';
const STORIES_TITLE = 'stories260K (real pretrained Llama-architecture model) on its TinyStories sample';

/** The demo model calibrated on 128 windows × 128 tokens of its training split (never heldout.txt). */
function demoCalibratedSpec(): CalibratedModelSpec {
  const tokenizer = loadTokenizer(JSON.parse(readFileSync(join(DEMO, 'tokenizer.json'), 'utf8')));
  const ctx = JSON.parse(readFileSync(join(DEMO, 'config.json'), 'utf8')).n_positions;
  return {
    name: 'demo',
    title: 'Demo model',
    path: DEMO_MODEL,
    evalSequences: [tokenizer.encode(readFileSync(join(DEMO, 'heldout.txt'), 'utf8'))],
    ctx,
    stride: ctx / 2,
    calibration: {
      source: 'text',
      file: DEMO_TRAIN(DEMO),
      tokenizer: join(DEMO, 'tokenizer.json'),
      samples: 128,
      length: 128,
    },
    rows: DEMO_CALIBRATED,
  };
}

/** stories260K calibrated on 128 sequences × 256 tokens it generates itself (seed 0). */
function storiesCalibratedSpec(): CalibratedModelSpec {
  return {
    name: 'stories260K',
    title: 'stories260K',
    path: join(STORIES, 'model.onnx'),
    evalSequences: parseIdsText(readFileSync(join(STORIES, 'ids.txt'), 'utf8')),
    ctx: 512,
    stride: 256,
    calibration: { source: 'generate', samples: 128, length: 256, seed: 0, bos: 1 },
    rows: STORIES_CALIBRATED,
  };
}

/** Activation capture tokens/s against a plain perplexity pass, on the calibration shapes of each model. */
async function captureSpeedSection(): Promise<string> {
  log('speed: activation capture');
  const rows: string[] = [];
  if (existsSync(DEMO_MODEL)) {
    const tokenizer = loadTokenizer(JSON.parse(readFileSync(join(DEMO, 'tokenizer.json'), 'utf8')));
    const ids = tokenizer.encode(readFileSync(DEMO_TRAIN(DEMO), 'utf8'));
    const windows = Array.from({ length: 32 }, (_, i) => ids.slice(i * 128, (i + 1) * 128));
    rows.push(await captureSpeedMarkdown('demo model', DEMO_MODEL, windows));
  }
  const stories = parseIdsText(readFileSync(join(STORIES, 'ids.txt'), 'utf8')).map((s) => s.slice(0, 256));
  rows.push(await captureSpeedMarkdown('stories260K', join(STORIES, 'model.onnx'), stories));
  return [
    '## Calibration speed: activation capture against a plain perplexity pass',
    '',
    'Tokens per second through onnxruntime-node (default threads) over the same sequences, best of 2: a perplexity ' +
      'pass (logits, NLL) against one capture of every linear weight’s input (the capture graph returns each ' +
      'activation; the statistics — Σx², max |x|, min/max, histogram — are folded in one WebAssembly SIMD pass; ' +
      'with XᵀX the capture graph also computes each activation’s Gram matrix with a Gemm, added in float64). ' +
      'Capture runs sequences of one length as one batch (up to 1,024 tokens) when the graph takes a batch (the ' +
      'demo model does; stories260K fixes its batch at 1), so XᵀX is added once per batch.',
    '',
    '| model | sequences × tokens | perplexity pass tok/s | capture with XᵀX tok/s (× ppl) | capture without XᵀX tok/s (× ppl) | target ≥ 0.5× |',
    '|---|---|---:|---:|---:|---|',
    ...rows,
  ].join('\n');
}

/** --only calibrated (or some of its parts): the calibrated tables and the calibration speed sections. */
async function calibratedOnly(sections: string[]) {
  if (PARTS.includes('quality-stories')) sections.push(await storiesQuality());
  if (PARTS.includes('quality-demo') && existsSync(DEMO_MODEL)) sections.push(await demoQuality());
  if (PARTS.includes('stories')) {
    log('calibrated: stories260K');
    const stories = storiesCalibratedSpec();
    sections.push(calibratedMarkdown(stories, await calibratedTable(stories)));
  }
  if (PARTS.includes('demo') && existsSync(DEMO_MODEL)) {
    log('calibrated: demo model');
    const spec = demoCalibratedSpec();
    sections.push(calibratedMarkdown(spec, await calibratedTable(spec)));
  }
  if (PARTS.includes('capture')) sections.push(await captureSpeedSection());
  if (PARTS.includes('gptq') && !args.has('--quick'))
    sections.push(await gptqSpeedMarkdown(gpt2SmallSynthetic().tensors));
}

async function speedSections(sections: string[], python: boolean) {
  sections.push('## Speed: kernels against the reference implementations');
  const sets: { set: () => WeightSet; repeats: number }[] = [];
  if (existsSync(DEMO_MODEL)) {
    sets.push({
      set: () =>
        weightsOf(
          parseModel(bytesSource('demo', new Uint8Array(readFileSync(DEMO_MODEL)))),
          'Demo model weights (linear layers)',
        ),
      repeats: 3,
    });
  }
  if (!args.has('--quick')) sets.push({ set: gpt2SmallSynthetic, repeats: 1 });
  for (const { set, repeats } of sets) {
    const s = set();
    log(`speed: ${s.name}`);
    sections.push(speedMarkdown(s, speedTable(s, python, repeats)));
    if (s.kmeansTarget) {
      log('speed: GPTQ on the 124 M set');
      sections.push(await gptqSpeedMarkdown(s.tensors));
    }
  }
}

/** Puts `section` (a "## …" part) in place of the report's part of the same title, or before the live-preview part. */
function replaceSection(section: string) {
  const old = existsSync(OUT) ? readFileSync(OUT, 'utf8') : '# Benchmarks\n\n';
  const title = section.slice(0, section.indexOf('\n'));
  const at = old.indexOf(title);
  let doc: string;
  if (at >= 0) {
    const next = old.indexOf('\n## ', at + title.length);
    doc = old.slice(0, at) + section + '\n' + (next >= 0 ? old.slice(next) : '');
  } else {
    const before = old.indexOf('## Live preview');
    doc =
      before >= 0 ? old.slice(0, before) + section + '\n\n' + old.slice(before) : old + '\n' + section + '\n';
  }
  writeFileSync(OUT, doc);
  log(`wrote ${OUT} (${title.slice(3)} replaced)`);
}

/** A markdown document cut at its headings (## to ####): [heading line, text up to the next heading]. */
function blocksOf(doc: string): { heading: string; text: string }[] {
  const blocks: { heading: string; text: string }[] = [];
  for (const line of doc.split('\n')) {
    if (/^#{1,4} /.test(line) || !blocks.length) blocks.push({ heading: line, text: line + '\n' });
    else blocks[blocks.length - 1].text += line + '\n';
  }
  return blocks;
}

/**
 * --only: each fresh section replaces the block with its heading in the last run's file; a section
 * the file lacks goes in after the block it follows in a full run (a calibrated table after its
 * model's table, the calibration speed section before the notes).
 */
function mergeReport(sections: string[]) {
  if (!existsSync(OUT)) throw new Error(`--only needs ${OUT} from a full run to merge into`);
  const blocks = blocksOf(readFileSync(OUT, 'utf8'));
  const after = (heading: string) =>
    heading.includes('Demo model: calibrated')
      ? `### ${DEMO_TITLE}`
      : heading.includes('stories260K: calibrated')
        ? `### ${STORIES_TITLE}`
        : heading.startsWith('### GPTQ')
          ? '### GPT-2-small-shaped synthetic weights (124 M parameters)'
          : null;
  for (const section of sections)
    for (const fresh of blocksOf(section + '\n\n')) {
      const at = blocks.findIndex((b) => b.heading === fresh.heading);
      if (at >= 0) {
        blocks[at] = fresh;
        continue;
      }
      const anchor = after(fresh.heading);
      const i = anchor ? blocks.findIndex((b) => b.heading === anchor) : -1;
      const notes = blocks.findIndex((b) => b.heading === '## Reading the tables');
      blocks.splice(i >= 0 ? i + 1 : notes >= 0 ? notes : blocks.length, 0, fresh);
    }
  // the header says which sections are newer than the rest
  const head = blocks[0];
  const mark = `Sections rewritten by \`npm run bench -- --only ${ONLY}\``;
  const stamp =
    `${mark} on ${new Date().toISOString().slice(0, 10)} (Node ${process.version}, ${cpus().length} × ` +
    `${cpus()[0]?.model ?? 'unknown CPU'})` +
    (ONLY === 'training' ? ': the training section.' : '; the others are from the full run above.');
  // one such line, for the latest --only run (a previous one's sections may have been rewritten again)
  // (--only training replaces only its own line: the training section is independent of the others)
  const stale = (l: string) =>
    ONLY === 'training' ? l.startsWith(mark) : l.startsWith('Sections rewritten by');
  const lines = head.text.split('\n').filter((l) => !stale(l));
  lines.splice(lines.length - 1, 0, stamp, '');
  head.text = lines.join('\n').replace(/\n{3,}/g, '\n\n');
  writeFileSync(
    OUT,
    blocks
      .map((b) => b.text)
      .join('')
      .replace(/\n+$/, '\n'),
  );
  log(`wrote ${OUT} (only the --only sections replaced)`);
}

function writeReport(sections: string[], started: string) {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const doc = [
    '# Benchmarks',
    '',
    `Written by \`npm run bench\` on ${started}: Node ${process.version}, ${cpus().length} × ${cpu}. ` +
      'Perplexities come from onnxruntime-node running the exported files (weight-only: `session.qdq_matmulnbits_accuracy_level = 0`, ' +
      'so onnxruntime does not also quantize activations). Kernel times are single-threaded wall time of the kernel proper ' +
      '(codes + scales or codebook: what export writes, output allocation included), excluding decoding for the preview; ' +
      'garbage from earlier tensors is collected before each timed call.',
    '',
    ...sections.flatMap((s) => [s, '']),
    NOTES,
  ].join('\n');
  // --speed-only keeps the quality tables of the last full run
  if (args.has('--speed-only') && existsSync(OUT)) {
    const old = readFileSync(OUT, 'utf8');
    const quality = old.slice(old.indexOf('## Quality'), old.indexOf('## Live preview'));
    const at = doc.indexOf('## Live preview');
    if (quality.startsWith('## Quality') && at > 0) {
      writeFileSync(OUT, doc.slice(0, at) + quality + doc.slice(at));
      log(`wrote ${OUT} (quality tables kept)`);
      return;
    }
  }
  writeFileSync(OUT, doc);
  log(`wrote ${OUT}`);
}

await main();
