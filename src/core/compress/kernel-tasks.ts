/**
 * The work a kernel pool worker does (src/core/pool/worker-pool.ts carries it): a method's kernel over
 * one or more weight matrices, a tensor's summary statistics, a histogram. The same functions run
 * in-process when there is no pool, so a pooled result is the single-thread result, bit for bit.
 * Calibrated methods (those that declare `needs`) stay in the thread that holds the statistics.
 */
import { getMethod } from '../../methods/registry.ts';
import type { CompressionMethod, KernelResult, OptionValues, WeightMatrix } from '../../methods/types.ts';
import type { TensorValues } from '../onnx/model.ts';
import { histogram, tensorStats, type Histogram, type TensorStats } from '../stats.ts';
import { checkCancelled } from '../cancel.ts';
import { withLazyValues, withoutPendingValues } from '../../methods/lazy-values.ts';
import type { WorkerPool } from '../pool/worker-pool.ts';

export type KernelTask =
  | { kind: 'apply'; method: string; options: OptionValues; tensors: WeightMatrix[] }
  | { kind: 'stats'; values: TensorValues }
  | { kind: 'histogram'; values: Float32Array; bins: number; range?: [number, number] };

/** Runs one task; returns its value and the buffers it may hand back without a copy. */
export function runKernelTask(task: KernelTask): { value: unknown; transfer: Transferable[] } {
  checkCancelled();
  if (task.kind === 'apply') {
    // values still to be decoded stay behind (for a method that can decode them again): KernelPool.apply
    // decodes them where they are read
    const method = getMethod(task.method);
    const computed = method.apply(task.tensors, task.options);
    const results = method.decode ? computed.map(withoutPendingValues) : computed;
    return { value: results, transfer: buffersOf(results) };
  }
  if (task.kind === 'stats') return { value: tensorStats(task.values), transfer: [] };
  return { value: histogram(task.values, task.bins, task.range), transfer: [] };
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
 * The studio's side of a kernel pool: tensors go out as shared views (no copy) when their memory
 * is a SharedArrayBuffer, as clones otherwise (the caller keeps them: they are memoised), and
 * results come back transferred.
 */
export class KernelPool {
  constructor(readonly pool: WorkerPool) {}

  get size(): number {
    return this.pool.size;
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
    const results = await this.pool.run<Partial<KernelResult>[]>(
      { kind: 'apply', method, options, tensors: tensors.map((t) => ({ ...t, values: compact(t.values) })) },
      [],
      scope,
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

  stats(values: TensorValues, scope = 0): Promise<TensorStats> {
    return this.pool.run<TensorStats>({ kind: 'stats', values: compact(values) }, [], scope);
  }

  histogram(values: Float32Array, bins: number, range?: [number, number], scope = 0): Promise<Histogram> {
    return this.pool.run<Histogram>(
      { kind: 'histogram', values: compact(values), bins, ...(range ? { range } : {}) },
      [],
      scope,
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
  }

  close(): void {
    this.pool.close();
  }
}
