/**
 * The kernel pool's batches: jobs queued in one turn go to a worker several to a message, and a busy
 * worker holds its next small batch (src/core/pool/worker-pool.ts). Real worker threads, counted at
 * their ports: the demo model's weights sent in batches equal the in-thread kernels bit for bit, one
 * failing job rejects alone, and a cancel reaches the jobs a worker holds as well as the queued ones.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { serialize } from 'node:v8';
import { bytesSource, parseModel, readTensorFloat32 } from '../../src/core/onnx/model.ts';
import { findWeight } from '../../src/core/onnx/graphs.ts';
import { weightCandidates } from '../../src/core/compress/select.ts';
import { KernelPool, applyMeasured, type KernelTask } from '../../src/core/compress/kernel-tasks.ts';
import { WorkerPool, type PoolPort, type ToWorker } from '../../src/core/pool/worker-pool.ts';
import { spawnNodeWorker } from '../../src/runtime/pool-node.ts';
import { getMethod, resolveOptions } from '../../src/methods/registry.ts';
import type { WeightMatrix } from '../../src/methods/types.ts';
import { tensorStats } from '../../src/core/stats.ts';
import { DEMO_MODEL } from '../helpers/fixtures.ts';
import { seededFloats } from '../helpers/models.ts';

const model = parseModel(bytesSource('model.onnx', new Uint8Array(readFileSync(DEMO_MODEL))));
const demo: WeightMatrix[] = weightCandidates(model.graph).map((c) => {
  const values = readTensorFloat32(model, findWeight(model, c.name).tensor);
  const shared = new Float32Array(new SharedArrayBuffer(values.byteLength));
  shared.set(values);
  return { name: c.name, shape: c.shape, channelAxis: c.channelAxis, values: shared };
});

/** A pool of real worker threads whose ports record the size of every batch they are sent, by worker. */
function countedPool(size: number, shared: boolean) {
  const batches: number[][] = [];
  const spawn = (): PoolPort => {
    const port = spawnNodeWorker();
    const mine: number[] = [];
    batches.push(mine);
    return {
      ...port,
      postMessage: (m, transfer) => {
        const message = m as ToWorker;
        if (message.type === 'tasks') mine.push(message.tasks.length);
        port.postMessage(m, transfer);
      },
    };
  };
  const pool = new KernelPool(new WorkerPool(spawn, { size, shared }));
  return { pool, batches };
}

const bytes = (x: unknown) => serialize(x);

describe('kernel pool batches', () => {
  const two = countedPool(2, true);
  const one = countedPool(1, true);
  const plain = countedPool(1, false);
  afterAll(() => {
    two.pool.close();
    one.pool.close();
    plain.pool.close();
  });

  it.each([
    ['int8', {}],
    ['int4', { blockSize: 32 }],
    ['prune', { sparsity: 0.5 }],
    ['kmeans', { clusters: 16 }],
    ['fp16', {}],
  ] as const)(
    '%s over the demo weights dispatched at once: fewer messages than tensors, both workers used, the in-thread bytes',
    async (id, raw) => {
      const method = getMethod(id);
      const options = resolveOptions(method, raw);
      const sent = two.batches.map((b) => b.length);
      const pooled = await Promise.all(demo.map((t) => two.pool.apply(id, options, [t])));
      const batches = two.batches.map((b, i) => b.slice(sent[i] ?? 0));
      // every tensor went out once, several to a message, on both workers
      expect(batches.flat().reduce((a, b) => a + b, 0)).toBe(demo.length);
      expect(batches.flat().length).toBeLessThan(demo.length);
      expect(Math.max(...batches.flat())).toBeGreaterThan(1);
      expect(batches.filter((b) => b.length > 0).length).toBe(2);
      const alone = method.apply(demo, options);
      pooled.forEach(([r], i) => {
        expect(Buffer.from(r.values.buffer).equals(Buffer.from(alone[i].values.buffer))).toBe(true);
        expect(bytes(r.encoding).equals(bytes(alone[i].encoding))).toBe(true);
        expect(r.storedBytes).toBe(alone[i].storedBytes);
      });
    },
  );

  it('measured results in batches equal applyMeasured in the thread', async () => {
    const options = resolveOptions(getMethod('int4'), { blockSize: 64 });
    const pooled = await Promise.all(
      demo.map((t) => two.pool.applyMeasured('int4', options, [t], [t.values])),
    );
    const alone = applyMeasured(
      getMethod('int4'),
      demo,
      options,
      demo.map((t) => t.values),
    );
    pooled.forEach(([r], i) => {
      expect(r.error).toEqual(alone[i].error);
      expect(bytes(r.encoding).equals(bytes(alone[i].encoding))).toBe(true);
    });
  });

  it('a job that fails in a batch rejects alone; the others of its batch resolve', async () => {
    const options = resolveOptions(getMethod('int8'), {});
    const task = (method: string, t: WeightMatrix): KernelTask => ({
      kind: 'apply',
      method,
      options,
      tensors: [t],
    });
    const sent = one.batches[0]?.length ?? 0;
    // equal costs, one worker: the first batch takes half the queue (guided), so jobs 0 and 1 go together
    const jobs = [
      one.pool.pool.run(task('int8', demo[1])),
      one.pool.pool.run(task('no-such-method', demo[1])),
      one.pool.pool.run(task('int8', demo[3])),
      one.pool.pool.run(task('int8', demo[5])),
    ];
    const settled = await Promise.allSettled(jobs);
    expect(one.batches[0].slice(sent)[0]).toBe(2);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    const { reason } = settled[1] as PromiseRejectedResult;
    expect(reason).toMatchObject({ code: 'invalid-argument' });
    expect((reason as Error).message).toMatch(/no-such-method/);
  });

  it('a job that cannot be posted fails alone; the others of its batch go one to a message', async () => {
    const values = (seed: number) => seededFloats(1000, seed);
    const sent = one.batches[0]?.length ?? 0;
    const jobs = [
      one.pool.pool.run({ kind: 'stats', values: values(1) }),
      // a function cannot be cloned: postMessage throws for the whole message
      one.pool.pool.run({ kind: 'stats', values: values(2), unpostable: () => 0 }),
      one.pool.pool.run({ kind: 'stats', values: values(3) }),
      one.pool.pool.run({ kind: 'stats', values: values(4) }),
    ];
    const settled = await Promise.allSettled(jobs);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect((settled[1] as PromiseRejectedResult).reason).toMatchObject({ name: 'DataCloneError' });
    expect((settled[0] as PromiseFulfilledResult<unknown>).value).toEqual(tensorStats(values(1)));
    // the first message failed with two jobs, which then went one to a message
    expect(one.batches[0].slice(sent).slice(0, 3)).toEqual([2, 1, 1]);
  });

  /** 24 small k-means jobs of one scope, queued at once; cancelled once the first batches went out. */
  async function cancelAfterDispatch(kernels: KernelPool) {
    const options = resolveOptions(getMethod('kmeans'), { clusters: 16, perChannel: true });
    const scope = kernels.newScope();
    const jobs = Array.from({ length: 24 }, (_, i) =>
      kernels.apply(
        'kmeans',
        options,
        [{ name: `w${i}`, shape: [128, 256], channelAxis: 1, values: seededFloats(128 * 256, i + 1) }],
        scope,
      ),
    );
    // the microtask that hands the queue out has run: the worker holds its batches, the rest is queued
    await new Promise((r) => setImmediate(r));
    expect(kernels.pool.queued).toBeGreaterThan(0);
    expect(kernels.pool.pending).toBeGreaterThan(kernels.pool.queued);
    kernels.cancel(scope);
    expect(kernels.pool.queued).toBe(0);
    const settled = await Promise.allSettled(jobs);
    expect(settled.map((s) => s.status === 'rejected' && (s.reason as { code?: string }).code)).toEqual(
      jobs.map(() => 'cancelled'),
    );
    expect(kernels.pool.pending).toBe(0);
    // the same workers answer the next job
    const next = seededFloats(2000, 5);
    expect(await kernels.stats(next)).toEqual(tensorStats(next));
  }

  it('a cancel drops the queued jobs and the batches a worker holds stop at their first check (shared flag)', async () => {
    await cancelAfterDispatch(one.pool);
  });

  it('without shared memory the held batches finish and their answers are dropped as stale', async () => {
    expect(plain.pool.pool.shared).toBe(false);
    await cancelAfterDispatch(plain.pool);
  });
});
