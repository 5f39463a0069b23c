/**
 * Where one distillation step's time goes: the demo model, batch 8 × 128 from train.txt, teacher in
 * onnxruntime-node (one thread), student forward + backward + AdamW, with each op's forward and
 * backward timed by type. `npx tsx tools/bench/train-profile.ts [steps]`. A developer's tool, not a test.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { loadTokenizer } from '../../src/core/tokenizer.ts';
import { OPS } from '../../src/core/train/ops.ts';
import { TrainGraph } from '../../src/core/train/graph.ts';
import {
  decoderValues,
  sessionTeacher,
  trainableWeights,
  windowSampler,
} from '../../src/core/train/distill.ts';
import { kdLoss } from '../../src/core/train/loss.ts';
import { AdamW } from '../../src/core/train/optim.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const DEMO = join(ROOT, 'public/models/tiny-shakespeare-gpt2');
/** The demo's one model file: GPT-2 with its KV cache, where Hugging Face folders keep it. */
const DEMO_MODEL = join(DEMO, 'onnx', 'model.onnx');
const steps = Number(process.argv[2] ?? 3);
const times = new Map<string, number>();
const add = (k: string, ms: number) => times.set(k, (times.get(k) ?? 0) + ms);
for (const [name, op] of Object.entries(OPS)) {
  const f = op.forward;
  op.forward = (x, ctx) => {
    const t = performance.now();
    const r = f(x, ctx);
    add(`${name} fwd`, performance.now() - t);
    return r;
  };
  const b = op.backward;
  if (b)
    op.backward = (x, y, gy, ctx, w) => {
      const t = performance.now();
      const r = b(x, y, gy, ctx, w);
      add(`${name} bwd`, performance.now() - t);
      return r;
    };
}
const bytes = new Uint8Array(readFileSync(DEMO_MODEL));
const model = parseModel(bytesSource('demo.onnx', bytes));
const tokenizer = loadTokenizer(JSON.parse(readFileSync(join(DEMO, 'tokenizer.json'), 'utf8')));
const ids = tokenizer.encode(readFileSync(join(DEMO, 'train.txt'), 'utf8'));
const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
const teacher = sessionTeacher(session, ort.Tensor, summarizeInputs(model.graph));
const graph = new TrainGraph(model, trainableWeights(model, 'all'));
const sample = windowSampler([ids], 128, 0);
const opt = new AdamW();
let cpu0 = process.cpuUsage();
for (let s = 0; s <= steps; s++) {
  if (s === 1) {
    times.clear(); // step 0 warms up
    cpu0 = process.cpuUsage();
  }
  const rows = Array.from({ length: 8 }, sample);
  let t = performance.now();
  const tl = await teacher(rows);
  add('teacher', performance.now() - t);
  // the student's step in its parts (what batchLoss does for a graph that takes batches)
  t = performance.now();
  const fwd = graph.forward(decoderValues(model.graph, rows));
  add('student forward', performance.now() - t);
  t = performance.now();
  const logits = fwd.values.get('logits')!;
  const loss = kdLoss(logits.data as Float32Array, tl, rows.flat(), 8, 128, 2048, {
    temperature: 2,
    alpha: 0.5,
  });
  add('KD loss', performance.now() - t);
  t = performance.now();
  const grads = graph.backward(fwd, { logits: loss.grad }, new Map());
  graph.release(fwd);
  add('student backward', performance.now() - t);
  const r = { grads };
  t = performance.now();
  opt.step(graph.params, r.grads!, 1e-4, (n) => graph.shapes.get(n)!.length);
  add('adamw', performance.now() - t);
}
const cpu = process.cpuUsage(cpu0);
console.log(`cpu ${((steps * 1024) / ((cpu.user + cpu.system) / 1e6)).toFixed(0)} tokens per cpu-second`);
const total = ['teacher', 'student forward', 'KD loss', 'student backward', 'adamw'].reduce(
  (s, k) => s + (times.get(k) ?? 0),
  0,
);
console.log(
  `per step ${(total / steps).toFixed(0)} ms, ${((steps * 1024) / (total / 1000)).toFixed(0)} tokens/s`,
);
for (const [k, v] of [...times].sort((a, b) => b[1] - a[1]))
  console.log(
    `${k.padEnd(28)} ${(v / steps).toFixed(1).padStart(8)} ms  ${((100 * v) / total).toFixed(1)} %`,
  );
await session.release();
