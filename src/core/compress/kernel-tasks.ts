/**
 * The work a kernel pool worker does (src/core/pool/worker-pool.ts carries it): a method's kernel over
 * one or more weight matrices, a tensor's summary statistics, a histogram. The same functions run
 * in-process when there is no pool, so a pooled result is the single-thread result, bit for bit.
 * Calibrated methods (those that declare `needs`) stay in the thread that holds the statistics.
 *
 * A big tensor of a method with a `split` (src/methods/split.ts) goes out as several part tasks, so
 * every worker shares it: the tensor and the whole result's arrays live in shared memory; survey tasks
 * answer what the parts need from the whole tensor (counts, ranges), then each part task writes its
 * rows of the result in place and answers nothing.
 */
import { getMethod } from '../../methods/registry.ts';
import type {
  ArrayAllocator,
  CompressionMethod,
  KernelResult,
  OptionValues,
  TensorPart,
  WeightMatrix,
} from '../../methods/types.ts';
import { cutParts } from '../../methods/split.ts';
import type { TensorValues } from '../onnx/model.ts';
import { histogram, tensorStats, type Histogram, type TensorStats } from '../stats.ts';
import { checkCancelled } from '../cancel.ts';
import { ModelError } from '../errors.ts';
import { withLazyValues, withoutPendingValues } from '../../methods/lazy-values.ts';
import type { WorkerPool } from '../pool/worker-pool.ts';
import { errorStats, errorStatsFromSums, type ErrorStats } from './metrics.ts';

/**
 * A kernel's result without its values: the encoding (what the export writes) and the error of the
 * values against the tensor's original, measured where the values were made. A preview that shows
 * only reports, and an export that writes only encodings, then never carry decoded float32 arrays.
 */
export type MeasuredResult = Omit<KernelResult, 'values' | 'error'> & { error: ErrorStats };

export type KernelTask =
  | {
      kind: 'apply';
      method: string;
      options: OptionValues;
      tensors: WeightMatrix[];
      /** Each tensor's original: the answer is then `MeasuredResult`s (no values). */
      originals?: Float32Array[];
    }
  | { kind: 'stats'; values: TensorValues }
  | { kind: 'histogram'; values: Float32Array; bins: number; range?: [number, number] }
  /** One part's answer in a round of a split kernel's survey (method.split.survey). */
  | {
      kind: 'survey';
      method: string;
      options: OptionValues;
      tensor: WeightMatrix;
      part: TensorPart;
      round: number;
      state: unknown;
    }
  /** One part of a split kernel, written into `out` (shared memory). */
  | {
      kind: 'part';
      method: string;
      options: OptionValues;
      tensor: WeightMatrix;
      part: TensorPart;
      state: unknown;
      out: KernelResult;
    };

/** Runs one task; returns its value and the buffers it may hand back without a copy. */
export function runKernelTask(task: KernelTask): { value: unknown; transfer: Transferable[] } {
  checkCancelled();
  if (task.kind === 'apply') {
    const method = getMethod(task.method);
    // values still to be decoded stay behind (for a method that can decode them again): KernelPool.apply
    // decodes them where they are read
    const results = task.originals
      ? applyMeasured(method, task.tensors, task.options, task.originals)
      : method.decode
        ? method.apply(task.tensors, task.options).map(withoutPendingValues)
        : method.apply(task.tensors, task.options);
    return { value: results, transfer: buffersOf(results) };
  }
  if (task.kind === 'survey') {
    const survey = splitOf(task.method).survey;
    const answer = survey?.part(task.tensor, task.part, task.options, task.round, task.state);
    return { value: answer, transfer: buffersOf(answer) };
  }
  if (task.kind === 'part') {
    splitOf(task.method).runPart(task.tensor, task.part, task.options, task.state, task.out);
    return { value: null, transfer: [] };
  }
  if (task.kind === 'stats') return { value: tensorStats(task.values), transfer: [] };
  return { value: histogram(task.values, task.bins, task.range), transfer: [] };
}

/**
 * A weight-only method's kernel over `tensors`, each result measured against its original
 * (`originals[j]`, the weight before every step: reportFor's numbers) and its values dropped.
 */
export function applyMeasured(
  method: CompressionMethod,
  tensors: readonly WeightMatrix[],
  options: OptionValues,
  originals: readonly Float32Array[],
): MeasuredResult[] {
  return method.apply(tensors, options).map((r, j) => {
    // the kernel's error sums are against its input: the original's when the input is the original
    // (no decoded copy, no second pass); else measured on the decoded values. Equal to float64 rounding.
    // (Memory: the originals are handed over, not shared, unless the session caches them, see
    // PreviewSession.original: a handed-over buffer counts as this worker's external memory, so its
    // garbage collector frees it in time; dead views of shared originals did not make it collect.)
    const error =
      r.error && tensors[j].values === originals[j]
        ? errorStatsFromSums(r.error, originals[j].length)
        : errorStats(originals[j], r.values);
    const { encoding, storedBytes, outlierChannels } = r;
    return { encoding, storedBytes, ...(outlierChannels ? { outlierChannels } : {}), error };
  });
}

function splitOf(method: string) {
  const split = getMethod(method).split;
  if (!split) throw new ModelError('unsupported', `${method} cannot run on parts of a tensor.`);
  return split;
}

/** Every distinct non-shared ArrayBuffer under `x` (typed arrays in results and encodings). */
function buffersOf(x: unknown, out = new Set<ArrayBuffer>(), depth = 0): Transferable[] {
  if (depth > 4 || x === null || typeof x !== 'object') return [...out];
  if (ArrayBuffer.isView(x)) {
    if (x.buffer instanceof ArrayBuffer) out.add(x.buffer);
  } else if (Array.isArray(x)) for (const v of x) buffersOf(v, out, depth + 1);
  else for (const v of Object.values(x)) buffersOf(v, out, depth + 1);
  return [...out];
}

/**
 * Where a task's input goes: shared memory as it is (no copy); a window on a bigger buffer as a copy of
 * its own bytes, handed over (the copy is the task's alone); a whole buffer the caller `gives` up,
 * handed over (moved, no copy); otherwise cloned (the caller keeps it). Adds what moves to `transfer`.
 */
class Outgoing {
  readonly transfer = new Set<ArrayBuffer>();
  /** One copy of a window however often the message names it (a tensor that is its own original). */
  private readonly copies = new Map<ArrayBufferView, ArrayBufferView>();
  constructor(private readonly give: boolean) {}

  of<T extends ArrayBufferView>(values: T): T {
    if (values.buffer instanceof SharedArrayBuffer) return values;
    if (values.byteOffset === 0 && values.byteLength === values.buffer.byteLength) {
      if (this.give) this.transfer.add(values.buffer as ArrayBuffer);
      return values;
    }
    let own = this.copies.get(values) as T | undefined;
    if (!own) {
      own = (values as unknown as { slice(): T }).slice();
      this.copies.set(values, own);
      this.transfer.add(own.buffer as ArrayBuffer);
    }
    return own;
  }

  get list(): Transferable[] {
    return [...this.transfer];
  }
}

/** A step whose kernel ranks every selected tensor together (one global threshold): one task for all of them. */
export function ranksTogether(method: string, options: OptionValues): boolean {
  return method === 'prune' && options.scope === 'global' && options.pattern === 'unstructured';
}

/** Whether a step of `method` can run in the pool: its kernel reads only the weights. */
export function poolable(method: CompressionMethod): boolean {
  return !method.needs?.length;
}

/**
 * A view that spans only its own bytes: posting a view clones its whole buffer, and a tensor read from
 * a model file may be a window on the file's bytes. Shared memory goes as it is (never copied).
 */
function compact<T extends ArrayBufferView>(values: T): T {
  if (values.buffer instanceof SharedArrayBuffer) return values;
  if (values.byteOffset === 0 && values.byteLength === values.buffer.byteLength) return values;
  return (values as unknown as { slice(): T }).slice();
}

/**
 * The least weights in a part: a tensor under twice this goes whole to one worker (smaller parts cost
 * more in messages, scheduling and copies than they gain), a bigger one is split into parts this big
 * or bigger.
 */
export const MIN_PART_WEIGHTS = 1 << 22;
/** Parts per worker at most: enough for the last parts of a step to even out the workers' loads. */
const PARTS_PER_WORKER = 4;

/** A task's cost for the pool's batching (WorkerPool.run): the weights its kernel reads. */
const weightsIn = (tensors: readonly WeightMatrix[]): number =>
  tensors.reduce((n, t) => n + t.values.length, 0);

/** The weights in `part` of `t`. */
const weightsOf = (t: WeightMatrix, part: TensorPart): number =>
  (part.end - part.start) * t.shape[part.axis === 0 ? 1 : 0];

/** Arrays in shared memory: what the parts of a split kernel write into, in place. */
const sharedArrays: ArrayAllocator = (kind, length) =>
  new kind(new SharedArrayBuffer(length * kind.BYTES_PER_ELEMENT));

/**
 * The studio's side of a kernel pool: tensors go out as shared views (no copy) when their memory
 * is a SharedArrayBuffer, as clones otherwise (the caller keeps them: they are memoised), and
 * results come back transferred. A big tensor whose method can split goes out in parts (see above)
 * when the pool has more than one worker and shares memory.
 */
export class KernelPool {
  /**
   * `extra`: more workers lent for a while (an export's, when no slider needs a core kept free):
   * tasks go to whichever pool has an idle worker, and `close()` ends only them.
   */
  constructor(
    readonly pool: WorkerPool,
    private readonly extra?: WorkerPool,
  ) {}

  get size(): number {
    return this.pool.size + (this.extra?.size ?? 0);
  }

  /** This pool's workers and `extra`'s together (the same cancel scopes reach both). */
  widened(extra: WorkerPool): KernelPool {
    return new KernelPool(this.pool, extra);
  }

  /** The pool with an idle worker (the own one first), else the less loaded one. */
  private target(): WorkerPool {
    const { pool, extra } = this;
    if (!extra || pool.pending < pool.size) return pool;
    if (extra.pending < extra.size) return extra;
    return pool.pending / pool.size <= extra.pending / extra.size ? pool : extra;
  }

  /** A cancel scope for one run's tasks (`cancel(scope)` stops only them). */
  newScope(): number {
    return this.pool.newScope();
  }

  async apply(
    method: string,
    options: OptionValues,
    tensors: readonly WeightMatrix[],
    scope = 0,
  ): Promise<KernelResult[]> {
    const parts = tensors.length === 1 ? this.partsOf(method, options, tensors[0]) : undefined;
    if (parts) return [await this.applyInParts(method, options, tensors[0], parts, scope)];
    const results = await this.target().run<Partial<KernelResult>[]>(
      {
        kind: 'apply',
        method,
        options,
        tensors: tensors.map((t) => ({ ...t, values: compact(t.values) })),
      },
      [],
      scope,
      weightsIn(tensors),
    );
    const { decode } = getMethod(method);
    // a result sent without values (runKernelTask) decodes them from its encoding when they are read
    return results.map((r, i) => {
      if (r.values || !decode) return r as KernelResult;
      // the shape alone: the closure must not keep the input's values alive
      const shape = { shape: tensors[i].shape, channelAxis: tensors[i].channelAxis };
      return withLazyValues(r, () => decode(r.encoding, shape, options)) as KernelResult;
    });
  }

  /**
   * `applyMeasured` in a worker: only the encodings and the error statistics come back. `give`: the
   * caller gives up the arrays (read for this task alone): their buffers move to the worker (no copy;
   * the caller's views are left empty) and die there with the task. Not freed by hand
   * (`ArrayBuffer.prototype.transfer(0)`): in Chromium that hid them from the worker's garbage
   * collector while the page still held their memory (a 2.7 GB model's preview peaked at 4.6 GB).
   */
  applyMeasured(
    method: string,
    options: OptionValues,
    tensors: readonly WeightMatrix[],
    originals: readonly Float32Array[],
    scope = 0,
    give = false,
  ): Promise<MeasuredResult[]> {
    const out = new Outgoing(give);
    const task: KernelTask = {
      kind: 'apply',
      method,
      options,
      tensors: tensors.map((t) => ({ ...t, values: out.of(t.values) })),
      originals: originals.map((o) => out.of(o)),
    };
    return this.target().run<MeasuredResult[]>(task, out.list, scope, weightsIn(tensors));
  }

  /**
   * The parts `t` runs in on this pool, or undefined when it goes whole: one worker, no shared memory,
   * a tensor under two parts' worth of weights, or a method (with these options) that needs it whole.
   */
  partsOf(method: string, options: OptionValues, t: WeightMatrix): TensorPart[] | undefined {
    const n = t.values.length;
    if (this.size < 2 || !this.pool.shared || n < 2 * MIN_PART_WEIGHTS) return undefined;
    const cut = getMethod(method).split?.partAxis(t, options);
    if (!cut) return undefined;
    const count = Math.min(Math.floor(n / MIN_PART_WEIGHTS), PARTS_PER_WORKER * this.size);
    const parts = cutParts(t.shape, cut.axis, cut.unit, count);
    return parts.length > 1 ? parts : undefined;
  }

  /**
   * `method` over `t` in `parts` on the pool's workers: the survey's rounds first where the method has
   * one (every part at once, the answers combined here), then every part at once, each writing its
   * slice of the result, which is allocated here in shared memory. Equal to the whole-tensor kernel
   * bit for bit.
   */
  async applyInParts(
    method: string,
    options: OptionValues,
    t: WeightMatrix,
    parts: readonly TensorPart[],
    scope = 0,
  ): Promise<KernelResult> {
    const split = splitOf(method);
    // the parts write into shared memory: without it the tensor goes whole
    if (!this.pool.shared) return (await this.apply(method, options, [t], scope))[0];
    const tensor = { ...t, values: this.share(t.values) };
    let state: unknown;
    const rounds = split.survey?.rounds(tensor, options) ?? 0;
    for (let round = 0; round < rounds; round++) {
      const answers = await Promise.all(
        parts.map((part) =>
          this.target().run<unknown>(
            { kind: 'survey', method, options, tensor, part, round, state },
            [],
            scope,
            weightsOf(tensor, part),
          ),
        ),
      );
      state = split.survey!.combine(tensor, parts, options, round, answers, state);
    }
    const out = split.allocate(tensor, options, state, sharedArrays);
    await Promise.all(
      parts.map((part) =>
        this.target().run<null>(
          { kind: 'part', method, options, tensor, part, state, out },
          [],
          scope,
          weightsOf(tensor, part),
        ),
      ),
    );
    return out;
  }

  /** `give`: as applyMeasured's (the caller read `values` for this alone). */
  stats(values: TensorValues, scope = 0, give = false): Promise<TensorStats> {
    const out = new Outgoing(give);
    const task: KernelTask = { kind: 'stats', values: out.of(values) };
    return this.target().run<TensorStats>(task, out.list, scope, values.length);
  }

  histogram(values: Float32Array, bins: number, range?: [number, number], scope = 0): Promise<Histogram> {
    return this.target().run<Histogram>(
      { kind: 'histogram', values: compact(values), bins, ...(range ? { range } : {}) },
      [],
      scope,
      values.length,
    );
  }

  /** `values` in shared memory when the pool can share it (one copy, then every dispatch is free). */
  share(values: Float32Array): Float32Array {
    if (!this.pool.shared || values.buffer instanceof SharedArrayBuffer) return values;
    const out = new Float32Array(new SharedArrayBuffer(values.byteLength));
    out.set(values);
    return out;
  }

  cancel(scope?: number): void {
    this.pool.cancel(scope);
    this.extra?.cancel(scope);
  }

  /** Ends the workers: only the lent ones (`extra`) of a widened pool, the own pool's otherwise. */
  close(): void {
    if (this.extra) this.extra.close();
    else this.pool.close();
  }
}
