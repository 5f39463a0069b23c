/**
 * A pool of disposable kernel workers, the same on the page (Web Workers spawned by the model worker)
 * and in the CLI (worker_threads): jobs queue here and go to the first idle worker; inputs travel as
 * SharedArrayBuffer views (no copy) or structured clones, results come back transferred. `cancel()`
 * bumps a shared generation counter (Atomics) that running kernels poll (src/core/cancel.ts), and
 * drops queued jobs; the workers live on — the pool never terminates a worker to stop its work, and
 * the worker that holds the model is never one of these. Pure TS: the runtime layer (src/runtime/
 * pool-web.ts, pool-node.ts) says how a worker is started.
 */
import { ModelError, serializeError, type SerializedError } from '../errors.ts';

/** One worker as the pool sees it: messages in and out, and a way to end it when the pool closes. */
export interface PoolPort {
  postMessage(message: unknown, transfer?: Transferable[]): void;
  onMessage(handler: (message: unknown) => void): void;
  onError(handler: (error: Error) => void): void;
  terminate(): void;
  /** Told when the worker takes a job and when it is idle again (Node: an idle worker must not keep the process alive). */
  setBusy?(busy: boolean): void;
}

/** What the pool sends a worker. */
export type ToWorker =
  | { type: 'init'; cancel?: SharedArrayBuffer }
  | { type: 'task'; id: number; scope: number; generation: number; payload: unknown };

/** What a worker answers; `busy`: seconds the task took on the worker's own clock (its thread's CPU time where it can read it). */
export type FromWorker =
  | { type: 'result'; id: number; value: unknown; busy?: number }
  | { type: 'error'; id: number; error: SerializedError; busy?: number };

interface Job {
  id: number;
  payload: unknown;
  transfer: Transferable[];
  scope: number;
  generation: number;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

interface Slot {
  port: PoolPort;
  job?: Job;
  /** Index into the pool's busy times (one per worker started). */
  index: number;
}

export interface PoolOptions {
  /** Workers at most (started on demand). */
  size: number;
  /** SharedArrayBuffer is usable here: inputs can be shared and a cancel reaches running kernels. */
  shared: boolean;
}

/** True where SharedArrayBuffer exists and may be posted (Node; a cross-origin isolated page). */
export function sharedMemoryAvailable(): boolean {
  const g = globalThis as { crossOriginIsolated?: boolean };
  return typeof SharedArrayBuffer !== 'undefined' && g.crossOriginIsolated !== false;
}

/** Cancel scopes: cells of the shared generation array. */
const CANCEL_SCOPES = 64;

export class WorkerPool {
  readonly size: number;
  readonly shared: boolean;
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  /**
   * One cancel generation per scope (a preview, an export, an opening), shared with every worker
   * when memory can be shared: cancelling one run leaves the others' jobs alone.
   */
  private readonly generations: Int32Array;
  /** Seconds each worker started so far spent on tasks, by the worker's clock (see busyTimes). */
  private readonly busy: number[] = [];
  private nextId = 1;
  private nextScope = 0;
  private closed = false;

  constructor(
    private readonly spawn: () => PoolPort,
    options: PoolOptions,
  ) {
    if (!Number.isInteger(options.size) || options.size < 1)
      throw new ModelError(
        'invalid-argument',
        `A worker pool needs at least one worker (got ${options.size}).`,
      );
    this.size = options.size;
    this.shared = options.shared && sharedMemoryAvailable();
    const bytes = CANCEL_SCOPES * 4;
    this.generations = new Int32Array(this.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
  }

  /**
   * Seconds each worker (in the order they started) spent running tasks, as the workers measure it:
   * their thread's CPU time where the runtime exposes it (Linux worker_threads), else wall time while
   * busy. Not stretched by waiting for a core (Linux): total / busiest bounds the speed-up the pool
   * reaches with free cores (tick-granular: meaningful for tasks of tens of ms).
   */
  busyTimes(): number[] {
    return [...this.busy];
  }

  /** Jobs queued or running. */
  get pending(): number {
    return this.queue.length + this.slots.filter((s) => s.job).length;
  }

  /**
   * Runs `payload` on a worker. `transfer`: buffers the caller gives up (moved, not copied). A job
   * cancelled before it ends rejects with a 'cancelled' ModelError.
   */
  /** A cancel scope for one run's jobs (scopes are reused round-robin; a run rarely outlives 63 others). */
  newScope(): number {
    this.nextScope = (this.nextScope % (CANCEL_SCOPES - 1)) + 1;
    return this.nextScope;
  }

  run<T>(payload: unknown, transfer: Transferable[] = [], scope = 0): Promise<T> {
    if (this.closed) return Promise.reject(new ModelError('cancelled', 'The kernel pool was closed.'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        id: this.nextId++,
        payload,
        transfer,
        scope,
        generation: Atomics.load(this.generations, scope),
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      this.pump();
    });
  }

  /**
   * Stops the queued and running jobs of `scope` (every scope when omitted): running kernels throw
   * at their next check, queued ones never start.
   */
  cancel(scope?: number): void {
    if (scope === undefined) for (let s = 0; s < CANCEL_SCOPES; s++) Atomics.add(this.generations, s, 1);
    else Atomics.add(this.generations, scope, 1);
    const dropped = this.queue.filter((j) => scope === undefined || j.scope === scope);
    for (let i = this.queue.length - 1; i >= 0; i--)
      if (dropped.includes(this.queue[i])) this.queue.splice(i, 1);
    for (const job of dropped) job.reject(new ModelError('cancelled', 'Kernel cancelled before it started.'));
    // without shared memory the running kernels finish; their results are dropped as stale
  }

  /** Ends the workers (the pool's own, disposable); pending jobs reject. */
  close(): void {
    this.closed = true;
    this.cancel();
    for (const s of this.slots) {
      s.job?.reject(new ModelError('cancelled', 'The kernel pool was closed.'));
      s.port.terminate();
    }
    this.slots.length = 0;
  }

  private pump(): void {
    while (this.queue.length) {
      let slot = this.slots.find((s) => !s.job);
      if (!slot && this.slots.length < this.size) slot = this.start();
      if (!slot) return;
      const job = this.queue.shift()!;
      slot.job = job;
      slot.port.setBusy?.(true);
      const message: ToWorker = {
        type: 'task',
        id: job.id,
        scope: job.scope,
        generation: job.generation,
        payload: job.payload,
      };
      try {
        slot.port.postMessage(message, job.transfer);
      } catch (e) {
        slot.job = undefined;
        job.reject(e);
      }
    }
  }

  private start(): Slot {
    const port = this.spawn();
    const slot: Slot = { port, index: this.busy.length };
    this.busy.push(0);
    port.onMessage((raw) => {
      const m = raw as FromWorker;
      const job = slot.job;
      if (!job || job.id !== m.id) return;
      this.busy[slot.index] += m.busy ?? 0;
      slot.job = undefined;
      port.setBusy?.(false);
      // a job cancelled while it ran (no shared flag to stop it) answers late: its result is stale
      if (job.generation !== Atomics.load(this.generations, job.scope))
        job.reject(new ModelError('cancelled', 'Kernel cancelled while it ran.'));
      else if (m.type === 'result') job.resolve(m.value);
      else job.reject(reviveError(m.error));
      this.pump();
    });
    port.onError((e) => {
      // a worker that died (out of memory, a failed import) takes its job with it; a fresh one replaces it
      const job = slot.job;
      this.slots.splice(this.slots.indexOf(slot), 1);
      port.terminate();
      job?.reject(new ModelError('unsupported', `A kernel worker failed: ${e.message}`));
      this.pump();
    });
    const init: ToWorker = {
      type: 'init',
      ...(this.shared ? { cancel: this.generations.buffer as SharedArrayBuffer } : {}),
    };
    port.postMessage(init);
    this.slots.push(slot);
    return slot;
  }
}

function reviveError(e: SerializedError): Error {
  if (e.code) return new ModelError(e.code, e.message);
  const error = new Error(e.message);
  error.name = e.name;
  return error;
}

/** Seconds on a monotonic wall clock: a worker's busy time where its thread's CPU time cannot be read. */
export const wallSeconds = (): number => performance.now() / 1000;

/**
 * The worker side: answers tasks with `handle`, which returns the value and the buffers to transfer
 * back. The cancel scope is installed per task so kernels' checkCancelled() sees this task's generation.
 * `clock` (seconds) times each task for the pool's busy times: the thread's CPU time where the runtime
 * can read it, else wall time.
 */
export function serveTasks(
  port: { post(message: FromWorker, transfer: Transferable[]): void },
  handle: (payload: unknown) => { value: unknown; transfer: Transferable[] },
  setScope: (shared: Int32Array | undefined, scope: number, generation: number) => void,
  clock: () => number = wallSeconds,
): (message: unknown) => void {
  let cancel: Int32Array | undefined;
  return (raw) => {
    const m = raw as ToWorker;
    if (m.type === 'init') {
      cancel = m.cancel ? new Int32Array(m.cancel) : undefined;
      return;
    }
    setScope(cancel, m.scope, m.generation);
    const start = clock();
    try {
      const { value, transfer } = handle(m.payload);
      port.post({ type: 'result', id: m.id, value, busy: clock() - start }, transfer);
    } catch (e) {
      port.post({ type: 'error', id: m.id, error: serializeError(e), busy: clock() - start }, []);
    } finally {
      setScope(undefined, 0, 0);
    }
  };
}
