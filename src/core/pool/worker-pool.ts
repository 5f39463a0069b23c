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

/** One job as a worker receives it: `generation` is its cancel scope's generation when it was queued. */
export interface TaskMessage {
  id: number;
  scope: number;
  generation: number;
  payload: unknown;
}

/** What the pool sends a worker: a batch of one or more jobs, run in order, answered in one message. */
export type ToWorker = { type: 'init'; cancel?: SharedArrayBuffer } | { type: 'tasks'; tasks: TaskMessage[] };

/** One job's answer: its value, or the error it threw. */
export type TaskAnswer = { id: number; value: unknown } | { id: number; error: SerializedError };

/**
 * What a worker answers for a batch, every job's answer in the batch's order; `busy`: seconds the batch
 * took on the worker's own clock (its thread's CPU time where it can read it).
 */
export type FromWorker = { type: 'answers'; answers: TaskAnswer[]; busy?: number };

interface Job {
  id: number;
  payload: unknown;
  transfer: Transferable[];
  scope: number;
  generation: number;
  /** What the job weighs against others (the kernel pool's unit: weights read): see GROUP_COST. */
  cost: number;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

interface Slot {
  port: PoolPort;
  /** Batches sent and not answered yet, oldest first (the worker answers them in order). */
  batches: Job[][];
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

/**
 * Jobs queued together go to a worker as one message while their cost stays under this (and under
 * their share of the queue, see takeBatch): a tensor of the demo model is well under a millisecond of
 * kernel, and a message each way per tensor cost as much again in round trips. In the kernel pool's
 * unit, 2^20 weights: 4 MB of float32, a few ms of kernel.
 */
export const GROUP_COST = 1 << 20;
/**
 * A busy worker is sent its next batch before it answers the one it runs (so it never waits for this
 * thread between them) only when that batch costs less than this: a bigger job waits for the first
 * free worker, since a wrong guess then costs more than a round trip saves. 2^22 weights, the kernel
 * pool's least split part.
 */
export const AHEAD_COST = 1 << 22;
/** Batches a worker holds at most: the one it runs and the next. */
const BATCHES_PER_WORKER = 2;
/** The share of the queued cost one batch takes at most: 1 / (workers × this), so the last batches are small. */
const GUIDED_SHARES = 2;

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
  private pumpQueued = false;

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
   * reaches with free cores (tick-granular: meaningful for batches of tens of ms).
   */
  busyTimes(): number[] {
    return [...this.busy];
  }

  /** Jobs queued or sent to a worker and not answered yet. */
  get pending(): number {
    return (
      this.queue.length + this.slots.reduce((n, s) => n + s.batches.reduce((m, b) => m + b.length, 0), 0)
    );
  }

  /** Jobs not handed to a worker yet (what a cancel drops at once). */
  get queued(): number {
    return this.queue.length;
  }

  /** A cancel scope for one run's jobs (scopes are reused round-robin; a run rarely outlives 63 others). */
  newScope(): number {
    this.nextScope = (this.nextScope % (CANCEL_SCOPES - 1)) + 1;
    return this.nextScope;
  }

  /**
   * Runs `payload` on a worker. `transfer`: buffers the caller gives up (moved, not copied). `cost`:
   * what the job weighs against the others (the kernel pool's unit: weights read), which decides what
   * goes out together (see GROUP_COST, AHEAD_COST). A job cancelled before it ends rejects with a
   * 'cancelled' ModelError. Jobs queued in the same turn of the event loop go out together: the queue is
   * handed to the workers in a microtask.
   */
  run<T>(payload: unknown, transfer: Transferable[] = [], scope = 0, cost = 1): Promise<T> {
    if (this.closed) return Promise.reject(new ModelError('cancelled', 'The kernel pool was closed.'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        id: this.nextId++,
        payload,
        transfer,
        scope,
        generation: Atomics.load(this.generations, scope),
        cost,
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      if (!this.pumpQueued) {
        this.pumpQueued = true;
        queueMicrotask(() => {
          this.pumpQueued = false;
          this.pump();
        });
      }
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
    // jobs sent to a worker answer 'cancelled' at their first check (shared memory), or finish and are
    // dropped as stale when their batch answers (without it)
  }

  /** Ends the workers (the pool's own, disposable); pending jobs reject. */
  close(): void {
    this.closed = true;
    this.cancel();
    for (const s of this.slots) {
      for (const job of s.batches.flat())
        job.reject(new ModelError('cancelled', 'The kernel pool was closed.'));
      s.batches.length = 0;
      s.port.terminate();
    }
    this.slots.length = 0;
  }

  /**
   * Hands queued jobs to workers: an idle worker first, then a new one (up to `size`), then a busy one
   * with room for its next batch when the next job is small (AHEAD_COST).
   */
  private pump(): void {
    while (this.queue.length) {
      let slot = this.slots.find((s) => !s.batches.length);
      if (!slot && this.slots.length < this.size) slot = this.start();
      if (!slot && this.queue[0].cost < AHEAD_COST) slot = this.leastAhead();
      if (!slot) return;
      this.send(slot, this.takeBatch(slot));
    }
  }

  /** Posts `batch` to `slot`'s worker, which holds it until it answers. */
  private send(slot: Slot, batch: Job[]): void {
    if (!slot.batches.length) slot.port.setBusy?.(true);
    slot.batches.push(batch);
    const tasks: TaskMessage[] = batch.map((j) => ({
      id: j.id,
      scope: j.scope,
      generation: j.generation,
      payload: j.payload,
    }));
    const message: ToWorker = { type: 'tasks', tasks };
    try {
      slot.port.postMessage(
        message,
        batch.length === 1 ? batch[0].transfer : batch.flatMap((j) => j.transfer),
      );
    } catch (e) {
      slot.batches.splice(slot.batches.indexOf(batch), 1);
      if (!slot.batches.length) slot.port.setBusy?.(false);
      // a payload that cannot be posted fails alone: the others of its batch go one to a message
      if (batch.length > 1) for (const job of batch) this.send(slot, [job]);
      else batch[0].reject(e);
    }
  }

  /** The busy worker with room for another batch that holds the least, if any. */
  private leastAhead(): Slot | undefined {
    let best: Slot | undefined;
    let bestCost = Infinity;
    for (const s of this.slots) {
      if (s.batches.length >= BATCHES_PER_WORKER) continue;
      const cost = heldCost(s);
      if (cost < bestCost) [best, bestCost] = [s, cost];
    }
    return best;
  }

  /**
   * The head of the queue, and the jobs after it while what `slot` holds stays under GROUP_COST and
   * under one share of what is queued (guided scheduling: the shares shrink as the queue empties, so
   * the workers finish together, and a worker that gets no core for a while holds little that another
   * could have run).
   */
  private takeBatch(slot: Slot): Job[] {
    const queued = this.queue.reduce((c, j) => c + j.cost, 0);
    const limit = Math.min(GROUP_COST, queued / (this.size * GUIDED_SHARES)) - heldCost(slot);
    const batch = [this.queue.shift()!];
    let cost = batch[0].cost;
    while (this.queue.length && cost + this.queue[0].cost <= limit) {
      const job = this.queue.shift()!;
      cost += job.cost;
      batch.push(job);
    }
    return batch;
  }

  private start(): Slot {
    const port = this.spawn();
    const slot: Slot = { port, batches: [], index: this.busy.length };
    this.busy.push(0);
    port.onMessage((raw) => {
      const m = raw as FromWorker;
      const batch = slot.batches[0];
      if (m.type !== 'answers' || !batch || batch[0].id !== m.answers[0]?.id) return;
      slot.batches.shift();
      if (!slot.batches.length) port.setBusy?.(false);
      this.busy[slot.index] += m.busy ?? 0;
      batch.forEach((job, i) => {
        const answer = m.answers[i];
        // a job cancelled while it ran (no shared flag to stop it) answers late: its result is stale
        if (job.generation !== Atomics.load(this.generations, job.scope))
          job.reject(new ModelError('cancelled', 'Kernel cancelled while it ran.'));
        else if (answer?.id !== job.id)
          job.reject(new ModelError('unsupported', 'A kernel worker answered out of order.'));
        else if ('error' in answer) job.reject(reviveError(answer.error));
        else job.resolve(answer.value);
      });
      this.pump();
    });
    port.onError((e) => {
      // a worker that died (out of memory, a failed import) takes its jobs with it; a fresh one replaces it
      const jobs = slot.batches.flat();
      slot.batches.length = 0;
      this.slots.splice(this.slots.indexOf(slot), 1);
      port.terminate();
      for (const job of jobs)
        job.reject(new ModelError('unsupported', `A kernel worker failed: ${e.message}`));
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

/** What `slot`'s worker holds: the cost of its batches not answered yet. */
function heldCost(slot: Slot): number {
  return slot.batches.reduce((c, b) => c + b.reduce((d, j) => d + j.cost, 0), 0);
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
 * The worker side: answers each batch of tasks with `handle`, which returns a task's value and the
 * buffers to transfer back; the batch's answers go back in one message. The cancel scope is installed
 * per task so kernels' checkCancelled() sees that task's generation. `clock` (seconds) times each
 * batch for the pool's busy times: the thread's CPU time where the runtime can read it, else wall time.
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
    const start = clock();
    const answers: TaskAnswer[] = [];
    // a buffer named twice in a transfer list fails the whole message
    const transfer = new Set<Transferable>();
    for (const task of m.tasks) {
      setScope(cancel, task.scope, task.generation);
      try {
        const done = handle(task.payload);
        answers.push({ id: task.id, value: done.value });
        for (const b of done.transfer) transfer.add(b);
      } catch (e) {
        answers.push({ id: task.id, error: serializeError(e) });
      } finally {
        setScope(undefined, 0, 0);
      }
    }
    const busy = clock() - start;
    try {
      port.post({ type: 'answers', answers, busy }, [...transfer]);
    } catch (e) {
      // a value that cannot be posted: every task of the batch answers the error instead of none
      const error = serializeError(e);
      port.post({ type: 'answers', answers: answers.map(({ id }) => ({ id, error })), busy }, []);
    }
  };
}
