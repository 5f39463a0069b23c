/**
 * The engine's side of the PyTorch reference (tools/bench/qat_reference.py `compare`): trains
 * stories260K exactly as the bench's QAT rows do (tools/bench/qat.ts: the student pruned 2:4 or
 * fake-quantized int4 b32, onnxruntime teacher, T 2, α 0.5, AdamW, warm-up, cosine, seed 0) for the
 * first N steps of a run of `steps`, and writes the student file before training, each step's loss
 * and the trained weights, so the reference can compare them value by value:
 *   npx tsx tools/bench/qat-reference-dump.ts prune24|int4 DATA.json OUT_DIR [stop=3] [steps=300] [lr=1e-3] [warmup=20]
 * Offline check only (never part of the app or its tests).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { distill, sessionTeacher, type DistillStep } from '../../src/core/train/distill.ts';
import { FakeQuantizer, qatDistill } from '../../src/core/train/qat.ts';
import { EXACT_WEIGHT_ONLY, Tensor } from '../../src/runtime/ort-node.ts';
import { log } from './log.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const [method, dataFile, outDir, ...rest] = process.argv.slice(2);
if (!['prune24', 'int4'].includes(method) || !dataFile || !outDir) {
  log(
    'usage: qat-reference-dump.ts prune24|int4 DATA.json OUT_DIR [stop=3] [steps=300] [lr=1e-3] [warmup=20]',
  );
  process.exit(2);
}
const args = Object.fromEntries(rest.map((a) => a.split('=') as [string, string]));
const stop = Number(args.stop ?? 3);
mkdirSync(outDir, { recursive: true });

const bytes = new Uint8Array(readFileSync(join(ROOT, 'tests/fixtures/stories260K/model.onnx')));
const model = parseModel(bytesSource('stories260K.onnx', bytes));
const data: number[][] = JSON.parse(readFileSync(dataFile, 'utf8'));
const session = await ort.InferenceSession.create(bytes, {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  logSeverityLevel: 3,
  extra: EXACT_WEIGHT_ONLY,
});
const teacher = sessionTeacher(session, Tensor, summarizeInputs(model.graph));
const abort = new AbortController();
const losses: DistillStep[] = [];
const opts = {
  steps: Number(args.steps ?? 300),
  batch: 16,
  seq: 255,
  lr: Number(args.lr ?? (method === 'int4' ? 5e-4 : 1e-3)),
  warmup: Number(args.warmup ?? (method === 'int4' ? 10 : 20)),
  schedule: 'cosine' as const,
  temperature: 2,
  alpha: 0.5,
  seed: 0,
  signal: abort.signal,
  onStep: (s: DistillStep) => {
    losses.push(s);
    log(`step ${s.step} loss ${s.loss.toFixed(6)} (KL ${s.kl.toFixed(6)}, CE ${s.ce.toFixed(6)})`);
    if (s.step >= stop) abort.abort();
  },
};
let weights: Map<string, Float32Array>;
if (method === 'prune24') {
  const student = exportCompressed(
    model,
    compressModel(model, resolveRecipe({ steps: [{ method: 'prune', options: { pattern: '2:4' } }] })),
  ).model;
  writeFileSync(join(outDir, 'student.onnx'), student);
  weights = (await distill(parseModel(bytesSource('student.onnx', student)), teacher, data, opts)).weights;
} else {
  const [step] = resolveRecipe({ steps: [{ method: 'int4', options: { blockSize: 32 } }] });
  const quantizer = new FakeQuantizer(model, step);
  writeFileSync(join(outDir, 'student.onnx'), bytes);
  weights = (await qatDistill(model, teacher, data, quantizer, opts)).weights;
  // what the forward pass of the next step reads (the fake-quantized weights)
  const read = Object.fromEntries([...weights].map(([k, w]) => [k, Array.from(quantizer.transform(k, w))]));
  writeFileSync(join(outDir, 'transformed.json'), JSON.stringify(read));
}
await session.release();
writeFileSync(
  join(outDir, 'engine.json'),
  JSON.stringify({
    method,
    opts: { ...opts, signal: undefined, onStep: undefined },
    losses: losses.map((s) => ({ step: s.step, loss: s.loss, kl: s.kl, ce: s.ce, lr: s.lr })),
    weights: Object.fromEntries([...weights].map(([k, w]) => [k, Array.from(w)])),
  }),
);
log(`wrote ${outDir}/engine.json after ${losses.length} steps`);
