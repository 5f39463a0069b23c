/**
 * `npm run bench -- --only kernel-pool`: kernel throughput through the kernel pool with 1 and 2
 * workers (worker_threads, the CLI's pool; the page's is the same code over Web Workers) on the demo
 * model's weights and the 124 M-parameter synthetic set. Tensors are dispatched as the studio does:
 * originals in shared memory, big tensors split into parts that write the result in place, other
 * results transferred back. Pool sizes alternate (1, 2, 1, 2…) so both see the same machine load;
 * wall time, the process's CPU time (every thread) and each worker's busy time (its thread's CPU time
 * over its tasks, load-independent) are reported.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { bytesSource, parseModel, readTensorFloat32 } from '../../src/core/onnx/model.ts';
import { findWeight } from '../../src/core/onnx/graphs.ts';
import { weightCandidates } from '../../src/core/compress/select.ts';
import { resolveOptions, getMethod } from '../../src/methods/registry.ts';
import type { OptionValues, WeightMatrix } from '../../src/methods/types.ts';
import { MIN_PART_WEIGHTS, type KernelPool } from '../../src/core/compress/kernel-tasks.ts';
import { createNodePool } from '../../src/runtime/pool-node.ts';
import { gpt2SmallSynthetic } from './weights.ts';
import { log } from './log.ts';
import { threadClock } from '../../src/runtime/thread-clock-node.ts';

const KERNELS: { label: string; method: string; options: Record<string, unknown> }[] = [
  { label: 'int8 per-channel', method: 'int8', options: {} },
  { label: 'int4 block 32', method: 'int4', options: { blockSize: 32 } },
  { label: 'prune 50 %', method: 'prune', options: { sparsity: 0.5 } },
  { label: 'k-means K=16', method: 'kmeans', options: { clusters: 16 } },
  { label: 'fp16', method: 'fp16', options: {} },
];
const ROUNDS = 3;
/** Seconds of work a table needs before its busy-time ratios mean something (see `table`). */
const MIN_MEASURABLE_BUSY = 0.2;

function shared(values: Float32Array): Float32Array {
  const out = new Float32Array(new SharedArrayBuffer(values.byteLength));
  out.set(values);
  return out;
}

interface Pass {
  wall: number;
  cpu: number;
  /** Seconds of CPU each worker spent on this pass's tasks. */
  busy: number[];
  /** Seconds of CPU of the main thread (dispatch, allocation of split results). */
  main: number;
}

const mainThreadClock = threadClock();

/** One pass of `kernel` over every tensor, all dispatched at once (the pool keeps its workers busy). */
async function pass(
  pool: KernelPool,
  method: string,
  options: OptionValues,
  set: WeightMatrix[],
): Promise<Pass> {
  const busy0 = pool.pool.busyTimes();
  const main0 = mainThreadClock();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(set.map((t) => pool.apply(method, options, [t]).then(() => undefined)));
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(cpu0);
  const busy = pool.pool.busyTimes().map((b, i) => b - (busy0[i] ?? 0));
  const main = mainThreadClock() - main0;
  return { wall, cpu: (c.user + c.system) / 1e6, busy, main };
}

const total = (busy: number[]) => busy.reduce((s, b) => s + b, 0);
const busiest = (busy: number[]) => Math.max(...busy);

interface Row {
  label: string;
  /** The pass of least wall time with 1 and with 2 workers (wall and process CPU columns). */
  one: Pass;
  two: Pass;
  /** The pass whose busiest worker was least busy (busy columns): CPU time too grows with contention. */
  oneBusy: Pass;
  twoBusy: Pass;
}

async function measure(set: WeightMatrix[], title: string): Promise<Row[]> {
  const pools = { 1: createNodePool(1), 2: createNodePool(2) };
  const rows: Row[] = [];
  try {
    // start the workers (tsx compiling the core) outside the timed passes
    for (const p of Object.values(pools)) await Promise.all([0, 1].map(() => p.stats(new Float32Array(4))));
    for (const k of KERNELS) {
      const options = resolveOptions(getMethod(k.method), k.options);
      const none: Pass = { wall: Infinity, cpu: 0, busy: [0], main: 0 };
      const best = { 1: none, 2: none };
      const leanest = { 1: { ...none, busy: [Infinity] }, 2: { ...none, busy: [Infinity] } };
      for (let r = 0; r < ROUNDS; r++)
        for (const size of [1, 2] as const) {
          const x = await pass(pools[size], k.method, options, set);
          if (x.wall < best[size].wall) best[size] = x;
          if (busiest(x.busy) < busiest(leanest[size].busy)) leanest[size] = x;
        }
      rows.push({ label: k.label, one: best[1], two: best[2], oneBusy: leanest[1], twoBusy: leanest[2] });
      log(
        `  ${title}: ${k.label} 1 worker ${best[1].wall.toFixed(3)} s, 2 workers ${best[2].wall.toFixed(3)} s ` +
          `(${(best[1].wall / best[2].wall).toFixed(2)}×); busy 1 worker ${total(leanest[1].busy).toFixed(3)} s, ` +
          `2 workers ${leanest[2].busy.map((b) => b.toFixed(3)).join(' + ')} s`,
      );
    }
  } finally {
    pools[1].close();
    pools[2].close();
  }
  return rows;
}

function table(title: string, params: number, tensors: number, rows: Row[]): string[] {
  const mb = (params * 4) / 1e6;
  const sum = (f: (r: Row) => number) => rows.reduce((s, r) => s + f(r), 0);
  const speedup = sum((r) => r.one.wall) / sum((r) => r.two.wall);
  // with free cores a pass lasts as long as its busiest worker: 1 worker's busy time over the busiest
  // of 2 is the speed-up the pool reaches when both cores are its own (dispatch on the main thread aside)
  const freeSpeedup = (one: number, twoBusiest: number) => one / twoBusiest;
  const busySpeedup = freeSpeedup(
    sum((r) => total(r.oneBusy.busy)),
    sum((r) => busiest(r.twoBusy.busy)),
  );
  const balance = sum((r) => total(r.twoBusy.busy)) / sum((r) => busiest(r.twoBusy.busy));
  // a thread's CPU time in schedstat advances at scheduler ticks while it runs (a few ms): passes of
  // a few ms of work in all cannot be measured this way
  const measurable = sum((r) => total(r.oneBusy.busy)) >= MIN_MEASURABLE_BUSY;
  const ratio = (x: number) => (measurable ? `${x.toFixed(2)}×` : '—');
  const target = measurable
    ? `Target ≥ 1.7× with 2 workers: ${speedup.toFixed(2)}× in wall time on the shared machine, ` +
      `${busySpeedup.toFixed(2)}× with free cores (busy times) — ${busySpeedup >= 1.7 ? 'met with free cores' : '**missed**'}` +
      `${speedup >= 1.7 ? ', met in wall time too' : ''}.`
    : `Target ≥ 1.7× with 2 workers: ${speedup.toFixed(2)}× in wall time on the shared machine — ` +
      `${speedup >= 1.7 ? 'met' : '**missed**'}; the busy times (${sum((r) => total(r.oneBusy.busy)).toFixed(3)} s ` +
      'of work in all) are below what the thread clock resolves, so no free-core figure.';
  return [
    `### ${title}`,
    '',
    `${params.toLocaleString('en-US')} parameters in ${tensors} tensors (${mb.toFixed(0)} MB of float32).`,
    '',
    '| kernel | 1 worker | 2 workers | speed-up (wall) | 1 worker MB/s | 2 workers MB/s | CPU s, 1 worker | CPU s, 2 workers | busy s, 1 worker | busy s, 2 workers | bound total / busiest | speed-up, free cores | main thread s, 2 workers |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.label} | ${r.one.wall.toFixed(3)} s | ${r.two.wall.toFixed(3)} s | ${(r.one.wall / r.two.wall).toFixed(2)}× | ` +
        `${(mb / r.one.wall).toFixed(0)} | ${(mb / r.two.wall).toFixed(0)} | ${r.one.cpu.toFixed(2)} | ${r.two.cpu.toFixed(2)} | ` +
        `${total(r.oneBusy.busy).toFixed(3)} | ${r.twoBusy.busy.map((b) => b.toFixed(3)).join(' + ')} | ` +
        `${ratio(total(r.twoBusy.busy) / busiest(r.twoBusy.busy))} | ` +
        `${ratio(freeSpeedup(total(r.oneBusy.busy), busiest(r.twoBusy.busy)))} | ${r.twoBusy.main.toFixed(3)} |`,
    ),
    `| all five | ${sum((r) => r.one.wall).toFixed(3)} s | ${sum((r) => r.two.wall).toFixed(3)} s | ${speedup.toFixed(2)}× | | | ` +
      `${sum((r) => r.one.cpu).toFixed(2)} | ${sum((r) => r.two.cpu).toFixed(2)} | ${sum((r) => total(r.oneBusy.busy)).toFixed(3)} | ` +
      `${sum((r) => total(r.twoBusy.busy)).toFixed(3)} | ${ratio(balance)} | ${ratio(busySpeedup)} | ${sum((r) => r.twoBusy.main).toFixed(3)} |`,
    '',
    target,
  ];
}

export async function kernelPoolSection(root: string): Promise<string> {
  const model = parseModel(
    bytesSource(
      'model.onnx',
      new Uint8Array(readFileSync(join(root, 'public/models/tiny-shakespeare-gpt2/onnx/model.onnx'))),
    ),
  );
  const demo: WeightMatrix[] = weightCandidates(model.graph).map((c) => ({
    name: c.name,
    shape: c.shape,
    channelAxis: c.channelAxis,
    values: shared(readTensorFloat32(model, findWeight(model, c.name).tensor)),
  }));
  const loadBefore = loadavg()[0];
  log('kernel-pool: demo weights');
  const demoRows = await measure(demo, 'demo');
  const synthetic: WeightMatrix[] = gpt2SmallSynthetic().tensors.map((t) => ({
    name: t.name,
    shape: t.shape,
    channelAxis: 1,
    values: shared(t.values),
  }));
  log('kernel-pool: 124 M set');
  const bigRows = await measure(synthetic, '124M');
  const loadAfter = loadavg()[0];
  const count = (s: WeightMatrix[]) => s.reduce((n, t) => n + t.values.length, 0);
  return [
    '## Kernel pool: throughput with 1 and 2 workers',
    '',
    'Protocol: every weight-only kernel through the kernel pool (`src/core/pool/`, worker_threads as in ' +
      '`compress --workers N`; the page runs the same pool over Web Workers), all tensors dispatched at once ' +
      'as the studio does: originals in shared memory (no copy out); a tensor of ' +
      `${(2 * MIN_PART_WEIGHTS).toLocaleString('en-US')} weights or more whose method can split ` +
      `(${MIN_PART_WEIGHTS.toLocaleString('en-US')}-weight parts at least, at most 4 per worker: ` +
      'int8 per channel, int4, fp16, pruning per tensor, k-means with one codebook; ranges, histograms and ' +
      'the codebook fit gathered from the parts first) goes out as parts ' +
      'that write the result in place in shared memory, every other tensor as one task whose result is ' +
      'transferred back. Pool sizes alternate 1, 2, 1, 2 ' +
      `(${ROUNDS} rounds). Wall and CPU s columns: the pass of least wall time; CPU s is the process's user + ` +
      "system time over the pass (every thread). Busy s: each worker's CPU time inside its tasks (its " +
      "thread's `/proc/thread-self/schedstat`: not stretched by waiting for a core, though contention for " +
      "caches and the host's cores still inflates it, and read at the scheduler's ticks, so a few ms per " +
      'task: too coarse for the demo set), from the pass whose busiest worker was least busy; ' +
      'bound: total busy / busiest worker (how evenly the work spreads); free-core speed-up: 1 ' +
      "worker's busy time / the busiest of 2 workers, what the pool gives when both cores are its own (the " +
      'main thread, which dispatches and allocates the split results, runs beside them: its CPU time is in ' +
      'the last column). The machine has 2 cores shared with other jobs: the wall-time speed-up is bounded ' +
      `by the cores actually free during the pass (load average ${loadBefore.toFixed(0)} before the run, ` +
      `${loadAfter.toFixed(0)} after).`,
    '',
    ...table('Demo model weights', count(demo), demo.length, demoRows),
    '',
    ...table(
      'GPT-2-small-shaped synthetic weights (124 M parameters)',
      count(synthetic),
      synthetic.length,
      bigRows,
    ),
  ].join('\n');
}
