/**
 * The page's kernel pool: Web Workers started from the model worker, one per core but one (capped), sharing
 * memory and the cancel flag when the page is cross-origin isolated.
 */
import { WorkerPool, sharedMemoryAvailable, type PoolPort } from '../core/pool/worker-pool.ts';
import { KernelPool } from '../core/compress/kernel-tasks.ts';

/** More workers than this only add memory: the kernels are memory-bound long before. */
export const MAX_PAGE_WORKERS = 8;

/**
 * One worker per core but one: the page's own thread keeps a core to render on while the kernels run
 * (on 2 cores, two busy kernel workers stretched the slider's render tasks past 150 ms).
 */
export function pageWorkerCount(): number {
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  return Math.max(1, Math.min(MAX_PAGE_WORKERS, cores - 1));
}

/** Workers while exporting: one per core (capped), since no slider moves then and nothing needs a core kept free. */
export function exportWorkerCount(): number {
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  return Math.max(1, Math.min(MAX_PAGE_WORKERS, cores));
}

/**
 * `pool` with workers lent for an export, up to one per core: close the answer when the export ends
 * (that ends only the lent workers). `pool` itself when it has that many already.
 */
export function widenForExport(pool: KernelPool): KernelPool {
  const more = exportWorkerCount() - pool.size;
  const extra = more > 0 ? createPagePool(more) : undefined;
  return extra ? pool.widened(extra.pool) : pool;
}

/** A kernel pool, or undefined where this context cannot start workers (then kernels run in place). */
export function createPagePool(size = pageWorkerCount()): KernelPool | undefined {
  if (typeof Worker === 'undefined') return undefined;
  const spawn = (): PoolPort => {
    const worker = new Worker(new URL('../../workers/kernel.worker.ts', import.meta.url), {
      type: 'module',
      name: 'kernel',
    });
    return {
      postMessage: (m, transfer) => worker.postMessage(m, transfer ?? []),
      onMessage: (h) => worker.addEventListener('message', (e) => h(e.data)),
      onError: (h) =>
        worker.addEventListener('error', (e) => {
          e.preventDefault();
          h(new Error(e.message || 'the kernel worker could not start'));
        }),
      terminate: () => worker.terminate(),
    };
  };
  return new KernelPool(new WorkerPool(spawn, { size, shared: sharedMemoryAvailable() }));
}
