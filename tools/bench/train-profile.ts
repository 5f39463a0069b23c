/**
 * Where one distillation step's time goes: the demo model (batch 8 × 128 from train.txt) or
 * stories260K (batch 16 × 255 of sequences it generates, as the QAT bench), teacher in
 * onnxruntime-node (one thread), student forward + backward + AdamW, with each op's forward and
 * backward timed by type. `npx tsx tools/bench/train-profile.ts [steps] [demo|stories]`. A developer's
 * tool, not a test.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { loadTokenizer } from '../../src/core/tokenizer.ts';
import { generateCalibrationSequences } from '../../src/core/calibrate/generate.ts';
import { OPS, type OpDef } from '../../src/core/train/ops.ts';
import { TrainGraph } from '../../src/core/train/graph.ts';
import {
  batchLoss,
  decoderValues,
  takesBatches,
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
const which = process.argv[3] ?? 'demo';
const STORIES = which === 'stories';
const times = new Map<string, number>();
const add = (k: string, ms: number) => times.set(k, (times.get(k) ?? 0) + ms);
/** TRAIN_PROFILE_BY=layer-0 nodes: key the times by node (those of the first block, `l0`/`h.0`, and the head). */
const byNode = process.env.TRAIN_PROFILE_BY === 'node';
const key = (name: string, where: string) => {
  if (!byNode) return name;
  const label = where.slice(where.indexOf(': ') + 2);
  return label;
};
for (const [name, op] of Object.entries(OPS)) {
  const f = op.forward;
  op.forward = (x, ctx) => {
    const t = performance.now();
    const r = f(x, ctx);
    add(`${key(name, ctx.where)} fwd`, performance.now() - t);
    return r;
  };
  const b = op.backward;
  if (b)
    op.backward = (x, y, gy, ctx, w) => {
      const t = performance.now();
      const r = b(x, y, gy, ctx, w);
      add(`${key(name, ctx.where)} bwd`, performance.now() - t);
      return r;
    };
}
const file = STORIES ? join(ROOT, 'tests/fixtures/stories260K/model.onnx') : DEMO_MODEL;
const bytes = new Uint8Array(readFileSync(file));
const model = parseModel(bytesSource(`${which}.onnx`, bytes));
const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
const inputs = summarizeInputs(model.graph);
const [B, L, V] = STORIES ? [16, 255, 512] : [8, 128, 2048];
const data = STORIES
  ? await generateCalibrationSequences(session, ort.Tensor, inputs, {
      count: 32,
      length: L + 1,
      seed: 0,
      bos: 1,
    })
  : [
      loadTokenizer(JSON.parse(readFileSync(join(DEMO, 'tokenizer.json'), 'utf8'))).encode(
        readFileSync(join(DEMO, 'train.txt'), 'utf8'),
      ),
    ];
const teacher = sessionTeacher(session, ort.Tensor, inputs);
const graph = new TrainGraph(model, trainableWeights(model, 'all'));
const sample = windowSampler(data, L, 0);
// fused nodes (fuse.ts) are not in the op table: time them through the compiled graph's own list
const compiled = (graph as unknown as { nodes: { node: { op_type: string }; op: OpDef }[] }).nodes;
for (const c of compiled) {
  const name = c.node.op_type;
  if (!name.includes('(fused)')) continue;
  const { forward, backward } = c.op;
  c.op = {
    forward: (x, ctx) => {
      const t = performance.now();
      const r = forward(x, ctx);
      add(`${key(name, ctx.where)} fwd`, performance.now() - t);
      return r;
    },
    backward: backward
      ? (x, y, gy, ctx, w) => {
          const t = performance.now();
          const r = backward(x, y, gy, ctx, w);
          add(`${key(name, ctx.where)} bwd`, performance.now() - t);
          return r;
        }
      : undefined,
  };
}
const opt = new AdamW();
let cpu0 = process.cpuUsage();
for (let s = 0; s <= steps; s++) {
  if (s === 1) {
    times.clear(); // step 0 warms up
    cpu0 = process.cpuUsage();
  }
  const rows = Array.from({ length: B }, sample);
  let t = performance.now();
  const tl = await teacher(rows);
  add('teacher', performance.now() - t);
  let grads: Map<string, Float32Array>;
  if (!takesBatches(model.graph)) {
    // one row at a time (stories260K's batch is fixed at 1): the engine's own loop
    t = performance.now();
    grads = batchLoss(graph, rows, tl, { temperature: 2, alpha: 0.5, withGrad: true }).grads!;
    add('student forward + loss + backward', performance.now() - t);
  } else {
    // the student's step in its parts (what batchLoss does for a graph that takes batches)
    t = performance.now();
    const fwd = graph.forward(decoderValues(model.graph, rows));
    add('student forward', performance.now() - t);
    t = performance.now();
    const logits = fwd.values.get('logits')!;
    const loss = kdLoss(logits.data as Float32Array, tl, rows.flat(), B, L, V, {
      temperature: 2,
      alpha: 0.5,
    });
    add('KD loss', performance.now() - t);
    t = performance.now();
    grads = graph.backward(fwd, { logits: loss.grad }, new Map());
    graph.release(fwd);
    add('student backward', performance.now() - t);
  }
  const r = { grads };
  t = performance.now();
  opt.step(graph.params, r.grads!, 1e-4, (n) => graph.shapes.get(n)!.length);
  add('adamw', performance.now() - t);
}
const cpu = process.cpuUsage(cpu0);
console.log(`cpu ${((steps * B * L) / ((cpu.user + cpu.system) / 1e6)).toFixed(0)} tokens per cpu-second`);
const total = [
  'teacher',
  'student forward',
  'KD loss',
  'student backward',
  'student forward + loss + backward',
  'adamw',
].reduce((s, k) => s + (times.get(k) ?? 0), 0);
console.log(
  `per step ${(total / steps).toFixed(0)} ms, ${((steps * B * L) / (total / 1000)).toFixed(0)} tokens/s`,
);
for (const [k, v] of [...times].sort((a, b) => b[1] - a[1]))
  console.log(
    `${k.padEnd(28)} ${(v / steps).toFixed(1).padStart(8)} ms  ${((100 * v) / total).toFixed(1)} %`,
  );
await session.release();
