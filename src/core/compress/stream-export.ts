/**
 * Streaming export: the compressed model written without ever holding it. Each weight is read,
 * compressed by every step of the recipe, written into the graph and its new bytes parked in a
 * spool (a temporary file in the CLI, the origin-private file system in the page), before the next
 * weight is read. Then the .onnx (small: every tensor of 1 KiB or more is external) is encoded, and
 * the external-data file is written tensor by tensor in the order and at the offsets the in-memory
 * export (`exportCompressed`) gives, so the two outputs are byte-identical.
 *
 * With a kernel pool (`streamOutcomes`' `pool`), the weights' kernels run in its workers, one weight
 * more in flight than it has workers, and are handed out (and written) in the model's order.
 *
 * Peak memory: one source tensor and its compressed form per weight in flight (one without a pool,
 * the pool's size + 1 with one: the largest weights bound it), and the graph's metadata, whatever
 * the model's size. The spool costs one more write and read of the compressed weights (not of the
 * weights a recipe leaves alone, which are copied from the source as they are written, a part of
 * `WRITE_PART_BYTES` at a time).
 */
import { ModelError } from '../errors.ts';
import { readTensorFloat32, type OnnxModel } from '../onnx/model.ts';
import { findWeight } from '../onnx/graphs.ts';
import { planModel, type ExternalDataOptions } from '../onnx/write.ts';
import type { TensorProto } from '../onnx/proto.ts';
import { getMethod } from '../../methods/registry.ts';
import { missingCalibrationMessage } from '../../methods/calibrated.ts';
import type { CalibrationStats } from '../calibrate/stats.ts';
import { GraphEditor } from './graph-editor.ts';
import { finishRewrite, rewriteOutcome } from './export.ts';
import {
  asMatrix,
  initialOutcome,
  nextOutcome,
  reportFor,
  totalsFor,
  type CompressionResult,
  type TensorOutcome,
  type TensorReport,
} from './pipeline.ts';
import type { ResolvedStep } from './recipe.ts';
import { KernelPool, poolable } from './kernel-tasks.ts';
import type { CompressionMethod, KernelResult, OptionValues, WeightMatrix } from '../../methods/types.ts';
import { requireSelection, selectWeights, weightCandidates, type WeightCandidate } from './select.ts';
import type { PreviewSession } from './session.ts';

/** Bytes written once and read back later by offset (append-only). */
export interface Spool {
  /** Appends `bytes`; returns the offset they start at. */
  append(bytes: Uint8Array): number;
  /** Bytes appended before, whole or a part of one append. */
  read(offset: number, length: number): Uint8Array;
}

/**
 * The most bytes one write to the data file carries: a tensor is read (from the spool or the source)
 * and written this much at a time, so a big one (an embedding of 262 MB) costs no copy of its size.
 */
export const WRITE_PART_BYTES = 16 * 2 ** 20;

/** A spool in memory: for tests, and for the page where no file system is at hand. */
export function memorySpool(): Spool {
  const chunks: Uint8Array[] = [];
  const starts: number[] = [];
  let size = 0;
  return {
    append(bytes) {
      const at = size;
      // a copy: the caller's buffer may be a view into something bigger, or reused
      chunks.push(bytes.slice());
      starts.push(at);
      size += bytes.byteLength;
      return at;
    },
    read(offset, length) {
      // the last append starting at or before `offset` (starts ascend)
      let lo = 0;
      let hi = starts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (starts[mid] <= offset) lo = mid;
        else hi = mid - 1;
      }
      const from = offset - (starts[lo] ?? 0);
      if (!chunks.length || from < 0 || from + length > chunks[lo].byteLength)
        throw new ModelError('invalid-argument', `The spool holds no ${length} bytes at ${offset}.`);
      return chunks[lo].subarray(from, from + length);
    },
  };
}

/** Where the two output files go: the data file in order, then the .onnx (after the data is complete). */
export interface ExportSink {
  writeData(bytes: Uint8Array): void | Promise<void>;
  writeModel(bytes: Uint8Array): void | Promise<void>;
}

export interface StreamExportOptions {
  externalData: ExternalDataOptions;
  spool: Spool;
  sink: ExportSink;
  /** Called after each weight is compressed and parked, and after each tensor is written. */
  onProgress?: (phase: 'compress' | 'write', done: number, total: number) => void;
  /** Checked between tensors; throws to stop. */
  checkCancelled?: () => void;
  /** The most bytes of one write (default `WRITE_PART_BYTES`). */
  writePart?: number;
}

export interface StreamedExport {
  warnings: string[];
  modelBytes: number;
  dataBytes: number;
}

/**
 * Writes `outcomes` (consumed one at a time: each may be dropped once rewritten) as the compressed
 * model to `sink`: the external-data file, then the .onnx, byte-identical to `exportCompressed`
 * with the same external-data options.
 */
export async function exportStreaming(
  model: OnnxModel,
  outcomes: Iterable<TensorOutcome> | AsyncIterable<TensorOutcome>,
  options: StreamExportOptions,
): Promise<StreamedExport> {
  const threshold = options.externalData.threshold ?? 1024;
  const parked = new WeakMap<TensorProto, { offset: number; length: number }>();
  const { spool } = options;
  const root = new GraphEditor(model.graph, model.proto.opset_import);
  root.useSpool({
    park(t) {
      const raw = t.raw_data;
      // tensors below the threshold stay embedded in the .onnx: nothing to gain from parking them
      if (!raw || raw.byteLength < threshold) return t;
      const held: TensorProto = { ...t };
      delete held.raw_data;
      parked.set(held, { offset: spool.append(raw), length: raw.byteLength });
      return held;
    },
    restore(t) {
      const at = parked.get(t);
      return at ? { ...t, raw_data: spool.read(at.offset, at.length) } : t;
    },
  });
  let rewritten = 0;
  for await (const o of outcomes) {
    options.checkCancelled?.();
    rewriteOutcome(model, root, o);
    rewritten++;
    options.onProgress?.('compress', rewritten, rewritten);
  }
  const { graph, proto } = finishRewrite(model, root, rewritten);
  const planned = planModel(model, {
    graph,
    proto,
    externalData: options.externalData,
    stored: (t) => {
      const at = parked.get(t);
      return (
        at && {
          length: at.length,
          read: () => spool.read(at.offset, at.length),
          readPart: (start, n) => spool.read(at.offset + start, n),
        }
      );
    },
  });
  const data = planned.externalData!;
  let written = 0;
  let zeros = new Uint8Array(0);
  const part = options.writePart ?? WRITE_PART_BYTES;
  for (let i = 0; i < data.pieces.length; i++) {
    options.checkCancelled?.();
    const piece = data.pieces[i];
    if (piece.offset > written) {
      const pad = piece.offset - written;
      if (zeros.byteLength < pad) zeros = new Uint8Array(pad);
      await options.sink.writeData(zeros.subarray(0, pad));
    }
    for (let at = 0; at < piece.length; at += part)
      await options.sink.writeData(piece.readPart(at, Math.min(part, piece.length - at)));
    written = piece.offset + piece.length;
    options.onProgress?.('write', i + 1, data.pieces.length);
  }
  await options.sink.writeModel(planned.model);
  return { warnings: [...root.warnings], modelBytes: planned.model.byteLength, dataBytes: written };
}

/**
 * Whether a step must see several weights at once (one global threshold, one scale shared by the
 * weights reading one activation): such a recipe cannot compress one weight at a time.
 */
export function isCrossTensor(step: ResolvedStep): boolean {
  if (step.method === 'prune')
    return step.options.scope === 'global' && step.options.pattern === 'unstructured';
  if (step.method === 'awq') return step.options.scaleGroup === 'input';
  return false;
}

/**
 * `work(i)` for i = 0 … count − 1, results handed out in the order of i, with at most `width` of
 * them started and not yet handed out (the one handed out included): a pool's workers stay busy
 * while memory holds `width` weights at once, whatever the model's size. When the reader stops early
 * (an error, a cancel), `abandon` is called and the works still running are left to fail quietly.
 */
export async function* inOrder<T>(
  count: number,
  width: number,
  work: (i: number) => Promise<T>,
  abandon?: () => void,
): AsyncGenerator<T> {
  const started = new Map<number, Promise<T>>();
  let next = 0;
  let finished = false;
  try {
    for (let i = 0; i < count; i++) {
      while (next < count && next < i + Math.max(1, width)) {
        const p = work(next++);
        // a work that fails after the reader has gone must not be an unhandled rejection
        p.catch(() => {});
        started.set(next - 1, p);
      }
      const value = await started.get(i)!;
      started.delete(i);
      yield value;
    }
    finished = true;
  } finally {
    if (!finished) abandon?.();
  }
}

/** The compression of a recipe, produced one weight at a time (see `streamOutcomes`). */
export interface StreamedCompression {
  /** Each weight's outcome, in `compressModel`'s order (the model's); read it once. */
  outcomes: Iterable<TensorOutcome> | AsyncIterable<TensorOutcome>;
  /** Filled as the outcomes are read: complete once they all have been. */
  result(): CompressionResult;
}

/** One step's kernel over one weight, as the step loop asks for it. */
interface KernelCall {
  method: CompressionMethod;
  options: OptionValues;
  matrix: WeightMatrix;
}

/**
 * `compressModel`'s result, computed one weight at a time: each weight is read (float16 and
 * bfloat16 widened to float32 for that weight alone), put through every step that selects it, and
 * handed out; only its report stays. Recipes with a cross-tensor step (`isCrossTensor`) run through
 * `compressModel` instead (all weights in memory), and their outcomes are handed out the same way.
 *
 * With a `pool`, each weight's kernels run there (calibrated steps here) with `inFlight` weights at
 * most (default: one more than the pool's workers) read and not yet handed out; the outcomes are
 * then an async sequence, in the same order and bit for bit the same as without a pool.
 */
export function streamOutcomes(
  model: OnnxModel,
  steps: readonly ResolvedStep[],
  options: {
    calibration?: CalibrationStats;
    compressAll: (model: OnnxModel, steps: readonly ResolvedStep[]) => CompressionResult;
    pool?: KernelPool;
    inFlight?: number;
  },
): StreamedCompression {
  for (const step of steps) {
    const method = getMethod(step.method);
    if (method.needs?.length && !options.calibration)
      throw new ModelError('needs-calibration', missingCalibrationMessage(method.id));
  }
  if (steps.some(isCrossTensor)) {
    const all = options.compressAll(model, steps);
    return { outcomes: all.outcomes, result: () => all };
  }
  const candidates = weightCandidates(model.graph);
  const picks = steps.map((s) => selectWeights(candidates, s.select));
  // compressModel's order: the model's order of the weights any step selects
  const selected = new Set(picks.flatMap((p) => p.map((c) => c.name)));
  const order: WeightCandidate[] = candidates.filter((c) => selected.has(c.name));
  const pickedAt = picks.map((p) => new Map(p.map((c, j) => [c.name, j])));
  // warnings sorted as compressModel's (step by step, weights in their step's order)
  const warnings: { step: number; at: number; text: string }[] = [];
  picks.forEach((p, i) => {
    if (!p.length)
      warnings.push({ step: i, at: -1, text: `Step ${i + 1} (${steps[i].method}) selected no tensors.` });
  });
  const reports: TensorReport[] = [];
  /** The one step loop of a weight, for both drivers: asks for each step's kernel, returns the outcome. */
  function* tensorSteps(
    c: WeightCandidate,
    original: Float32Array,
  ): Generator<KernelCall, TensorOutcome, KernelResult> {
    let o = initialOutcome(c, original);
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i];
      const at = pickedAt[i].get(c.name);
      if (at === undefined) continue;
      const method = getMethod(step.method);
      const r = yield { method, options: step.options, matrix: asMatrix(c, o.values) };
      if (method.role === 'transform' && o.encoder)
        warnings.push({
          step: i,
          at,
          text: `${c.name}: ${method.id} after ${o.encoder.method} works on the decoded weights and stores them as float32 again.`,
        });
      if (method.role === 'encode' && o.encoder)
        warnings.push({
          step: i,
          at,
          text: `${c.name}: ${method.id} re-encodes weights already encoded by ${o.encoder.method}.`,
        });
      o = nextOutcome(o, method, step.options, r);
    }
    return o;
  }
  const read = (c: WeightCandidate) => readTensorFloat32(model, findWeight(model, c.name).tensor);
  const here = (call: KernelCall): KernelResult =>
    call.method.apply(
      [call.matrix],
      call.options,
      call.method.needs?.length ? options.calibration : undefined,
    )[0];
  const pool = options.pool;
  const outcomes = pool
    ? (async function* (): AsyncGenerator<TensorOutcome> {
        const scope = pool.newScope();
        const compress = async (c: WeightCandidate): Promise<TensorOutcome> => {
          // in shared memory when the pool can share it: the kernel reads it without a copy
          const run = tensorSteps(c, pool.share(read(c)));
          let next = run.next();
          while (!next.done) {
            const call = next.value;
            next = run.next(
              poolable(call.method)
                ? (await pool.apply(call.method.id, call.options, [call.matrix], scope))[0]
                : here(call),
            );
          }
          return next.value;
        };
        // one more than the pool has workers: they compute the next weights while this thread
        // encodes, measures and parks the one handed out
        const width = options.inFlight ?? pool.size + 1;
        for await (const o of inOrder(
          order.length,
          width,
          (i) => compress(order[i]),
          () => pool.cancel(scope),
        )) {
          reports.push(reportFor(o));
          yield o;
        }
      })()
    : (function* (): Generator<TensorOutcome> {
        for (const c of order) {
          const run = tensorSteps(c, read(c));
          let next = run.next();
          while (!next.done) next = run.next(here(next.value));
          reports.push(reportFor(next.value));
          yield next.value;
        }
      })();
  requireSelection(model, candidates.length, order.length);
  return {
    outcomes,
    result: () => ({
      outcomes: [],
      reports,
      totals: totalsFor(model, reports),
      warnings: warnings.sort((a, b) => a.step - b.step || a.at - b.at).map((w) => w.text),
    }),
  };
}

/**
 * The page's streamed export of a recipe through its preview session: one weight per session run,
 * in the model's order, with a pool one weight more in flight than it has workers. What the
 * preview memoised is written as it is (a summary preview keeps the encodings: no kernel runs again
 * for them); the rest is computed in the pool, which sends back only each weight's encoding and
 * error statistics. The originals the session cached are dropped first and none are cached while
 * exporting (each weight is read once). Byte for byte `streamOutcomes`' outcomes.
 */
export function previewOutcomes(
  session: PreviewSession,
  model: OnnxModel,
  steps: readonly ResolvedStep[],
  options: {
    calibration?: CalibrationStats;
    /** The export's workers (the page lends it one per core); the session's own pool otherwise. */
    pool?: KernelPool;
    onProgress?: (done: number, total: number) => void;
  } = {},
): StreamedCompression {
  const picks = steps.map((s) => new Set(selectWeights(session.candidates, s.select).map((c) => c.name)));
  const order = session.candidates.filter((c) => picks.some((p) => p.has(c.name))).map((c) => c.name);
  requireSelection(model, session.candidates.length, order.length);
  session.dropOriginals();
  const { pool, calibration } = options;
  const reports: TensorReport[] = [];
  let abandoned = false;
  const each = inOrder(
    order.length,
    pool ? pool.size + 1 : 1,
    (i) =>
      session.run(steps, {
        ...(calibration ? { calibration } : {}),
        only: new Set([order[i]]),
        isStale: () => abandoned,
        keep: 'encodings',
        readOnce: true,
        ...(pool ? { pool } : {}),
      }),
    () => {
      abandoned = true;
    },
  );
  return {
    outcomes: (async function* () {
      let done = 0;
      for await (const r of each) {
        reports.push(...r.reports);
        options.onProgress?.(++done, order.length);
        yield r.outcomes[0];
      }
    })(),
    result: () => ({ outcomes: [], reports, totals: totalsFor(model, reports), warnings: [] }),
  };
}
