/**
 * The CLI's kernel pool: the page's pool over worker_threads. Workers load the TypeScript core
 * through tsx, as the CLI itself does (kernel-worker-node.mjs).
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { WorkerPool, type PoolPort } from '../core/pool/worker-pool.ts';
import { KernelPool } from '../core/compress/kernel-tasks.ts';

export function defaultWorkerCount(): number {
  return Math.max(1, availableParallelism());
}

/** One kernel worker thread, as a pool drives it. */
export function spawnNodeWorker(): PoolPort {
  const worker = new Worker(new URL('./kernel-worker-node.mjs', import.meta.url));
  // an idle pool must not keep the CLI alive; a busy one must
  worker.unref();
  return {
    postMessage: (m, transfer) => worker.postMessage(m, (transfer ?? []) as never),
    onMessage: (h) => worker.on('message', h),
    onError: (h) => worker.on('error', h),
    terminate: () => void worker.terminate(),
    setBusy: (busy) => (busy ? worker.ref() : worker.unref()),
  };
}

export function createNodePool(size = defaultWorkerCount()): KernelPool {
  return new KernelPool(new WorkerPool(spawnNodeWorker, { size, shared: true }));
}
