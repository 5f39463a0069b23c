/**
 * Live previews of a recipe: the studio's slider loop. Results are memoised per tensor and per
 * recipe prefix, so moving one step's slider recomputes only that step onwards and only for the
 * tensors it selects; the tensor the person is looking at is computed first; and a run yields to
 * the event loop between tensors so a newer request can cancel it.
 */
import { ModelError } from '../errors.ts';
import { readTensorFloat32Owned, type OnnxModel } from '../onnx/model.ts';
import { findWeight } from '../onnx/graphs.ts';
import { getMethod } from '../../methods/registry.ts';
import { valuesPending } from '../../methods/lazy-values.ts';
import { yieldToEventLoop } from '../eval/yield.ts';
import {
  asMatrix,
  initialOutcome,
  nextOutcome,
  reportFor,
  reportWith,
  totalsFor,
  type CompressionResult,
  type TensorOutcome,
  type TensorReport,
} from './pipeline.ts';
import type { ResolvedStep } from './recipe.ts';
import { histogram } from '../stats.ts';
import type { CalibrationStats } from '../calibrate/stats.ts';
import { missingCalibrationMessage } from '../../methods/calibrated.ts';
import { rangeAndZeros } from '../simd/index.ts';
import { KernelPool, applyMeasured, poolable, ranksTogether } from './kernel-tasks.ts';
import type { CompressionMethod } from '../../methods/types.ts';
import { noCandidatesMessage, selectWeights, weightCandidates, type WeightCandidate } from './select.ts';

/** An array of no values: a compact outcome's `values` and `original` (see `Memo`). */
const NO_VALUES = new Float32Array(0);

/**
 * What the cache keeps of one tensor after a recipe prefix. Never its original (read again, or
 * found in the originals cache, when needed). `compact`: an encoding a weight-only method made,
 * kept without its decoded values (int4: a byte of code per weight and the scales, against four
 * bytes of float32); the export writes it as it is, and a run that needs the values (the viewed
 * tensor, a later step, a full result) computes them again. Otherwise the outcome is whole.
 */
interface Memo {
  /** `original` is NO_VALUES; so is `values` when compact. */
  outcome: TensorOutcome;
  compact: boolean;
  /** Measured where the values were (known at once when compact). */
  report?: TensorReport;
}

interface State {
  key: string;
  /** Compact (NO_VALUES arrays) or whole, as `memo`. */
  outcome: TensorOutcome;
  compact: boolean;
  report?: TensorReport;
  /** The cache entry it came from or went into (absent for the original weight). */
  memo?: Memo;
}

export interface PreviewOptions {
  /** Computed first, and reported through `onPriority` before the rest. */
  priority?: string;
  onPriority?: (outcome: TensorOutcome) => void;
  /** Polled between tensors; a true answer abandons the run with a 'cancelled' error. */
  isStale?: () => boolean;
  onProgress?: (done: number, total: number) => void;
  /** Statistics for the steps whose method declares `needs` (captured by calibration.ts). */
  calibration?: CalibrationStats;
  /** Run only these weights (the others are left out of the result). */
  only?: ReadonlySet<string>;
  /**
   * 'summary': the result's outcomes hold only the priority weight's (every report is there); each
   * other weight is measured where its kernel ran and only its encoding comes back, memoised while
   * the budget allows. A large model then previews in the memory of a few weights.
   * 'encodings': every outcome, but an encoded one (a weight-only method's) may come without its
   * values and original (empty arrays): what an export writes, and all it needs. Reuses what a
   * summary run memoised. Default 'all': every outcome whole.
   */
  keep?: 'all' | 'summary' | 'encodings';
  /** Kernel workers for this run instead of the session's (an export's wider pool). */
  pool?: KernelPool;
  /** Originals read by this run are not cached (an export reads each weight once). */
  readOnce?: boolean;
}

export interface SessionOptions {
  /**
   * Bytes of arrays the session may keep between runs: original weights (read again from the file
   * when evicted) and memoised compressed weights (recomputed when evicted). Default: no bound.
   */
  memoryBudget?: number;
  /** The part of `memoryBudget` for originals (default: half); the rest is for memoised weights. */
  originalsBudget?: number;
  /** Kernel workers for the steps whose method reads only weights. */
  pool?: KernelPool;
  /**
   * Told of each original read from the model, before a kernel has it (it may be handed over to a
   * worker afterwards): the page sums up the statistics of the weights a first preview reads anyway.
   */
  onRead?: (name: string, values: Float32Array) => void;
}

/** Bytes of the distinct buffers of the typed arrays under `x` (an encoding's codes, scales, …). */
function arrayBytes(x: unknown, seen = new Set<ArrayBufferLike>(), depth = 0): number {
  if (depth > 4 || x === null || typeof x !== 'object') return 0;
  if (ArrayBuffer.isView(x)) {
    if (seen.has(x.buffer)) return 0;
    seen.add(x.buffer);
    return x.buffer.byteLength;
  }
  let n = 0;
  for (const v of Array.isArray(x) ? x : Object.values(x)) n += arrayBytes(v, seen, depth + 1);
  return n;
}

/** Bytes a memo really holds: its encoding's arrays and, when whole, its values. */
function memoBytes(m: Memo): number {
  const seen = new Set<ArrayBufferLike>();
  // values not yet decoded hold no memory (reading them here would decode them)
  const held = m.compact || valuesPending(m.outcome) ? 0 : arrayBytes(m.outcome.values, seen);
  return arrayBytes(m.outcome.encoder?.encoding, seen) + held;
}

/** Whether a step's outcome may be kept compact: an encoding made from the weights alone, which the method's rewrite writes. */
function compactable(method: CompressionMethod): boolean {
  return method.role === 'encode' && poolable(method);
}

/** A calibration id per statistics object, so memoised results of calibrated steps follow the statistics they used. */
const calibrationIds = new WeakMap<CalibrationStats, number>();
let nextCalibrationId = 1;
function calibrationId(stats: CalibrationStats): number {
  let id = calibrationIds.get(stats);
  if (id === undefined) {
    id = nextCalibrationId++;
    calibrationIds.set(stats, id);
  }
  return id;
}

export class PreviewSession {
  readonly candidates: WeightCandidate[];
  private readonly originals = new Map<string, Float32Array>();
  /**
   * Originals read into buffers of their own and not cached: each belongs to the one state it was
   * read for, which may give it away (see `apply`).
   */
  private readonly unkept = new WeakSet<Float32Array>();
  private cache = new Map<string, Memo>();
  /** How many tensors the last run computed (the rest came from the cache): for tests and the UI. */
  lastComputed = 0;

  private readonly budget: number;
  private readonly originalsBudget: number;
  private originalBytes = 0;
  private readonly pool?: KernelPool;
  private readonly onRead?: (name: string, values: Float32Array) => void;

  /**
   * `pool`: kernel workers for the steps whose method reads only weights (the page's and the CLI's
   * pool); without one every kernel runs here. The results are the same either way.
   */
  constructor(
    private readonly model: OnnxModel,
    options: SessionOptions = {},
  ) {
    this.candidates = weightCandidates(model.graph);
    this.budget = options.memoryBudget ?? Infinity;
    this.originalsBudget = Math.min(this.budget, options.originalsBudget ?? this.budget / 2);
    this.pool = options.pool;
    this.onRead = options.onRead;
  }

  /** A state's report: measured when it was made, or now from its values (whole states only). */
  private reportOf(s: State): TensorReport {
    let r = s.report ?? s.memo?.report;
    if (!r) {
      r = reportFor(s.outcome);
      if (s.memo) s.memo.report = r;
    }
    s.report = r;
    return r;
  }

  /** Bytes of arrays kept between runs: originals, and memoised compressed weights (each within its part of the budget). */
  memory(): { originals: number; memoised: number } {
    let memoised = 0;
    for (const m of this.cache.values()) memoised += memoBytes(m);
    return { originals: this.originalBytes, memoised };
  }

  /** Forget every memoised result (the next run recomputes everything). */
  clearCache(): void {
    this.cache.clear();
  }

  /** Forget the cached originals (an export reads each weight once: they would only hold memory). */
  dropOriginals(): void {
    this.originals.clear();
    this.originalBytes = 0;
  }

  original(name: string, cache = true): Float32Array {
    let v = this.originals.get(name);
    if (v) {
      // most recently used last: eviction takes the oldest first
      this.originals.delete(name);
      this.originals.set(name, v);
      return v;
    }
    const read = readTensorFloat32Owned(this.model, findWeight(this.model, name).tensor);
    v = read.values;
    this.onRead?.(name, v);
    // a weight larger than the originals' part of the budget is read each time
    const kept = cache && v.byteLength <= this.originalsBudget;
    // a kept one in shared memory when the pool can share it: every later dispatch of it is free; one
    // read for a single use into a buffer of its own may be handed over to a worker (no copy)
    if (this.pool && kept) v = this.pool.share(v);
    else if (!kept && read.owned) this.unkept.add(v);
    if (kept) {
      for (const [old, values] of this.originals) {
        if (this.originalBytes + v.byteLength <= this.originalsBudget) break;
        this.originals.delete(old);
        this.originalBytes -= values.byteLength;
      }
      this.originals.set(name, v);
      this.originalBytes += v.byteLength;
    }
    return v;
  }

  async run(steps: readonly ResolvedStep[], options: PreviewOptions = {}): Promise<CompressionResult> {
    const picks = steps.map((s) => new Set(selectWeights(this.candidates, s.select).map((c) => c.name)));
    const calibration = options.calibration;
    for (const s of steps)
      if (getMethod(s.method).needs?.length && !calibration)
        throw new ModelError('needs-calibration', missingCalibrationMessage(s.method));
    const stepKeys = steps.map((s, i) => {
      const needs = getMethod(s.method).needs?.length;
      const base = JSON.stringify([
        s.method,
        s.options,
        ...(needs && calibration ? [`calibration#${calibrationId(calibration)}`] : []),
      ]);
      // a global threshold depends on every tensor it ranks together
      return ranksTogether(s.method, s.options) ? `${base}@${[...picks[i]].join(',')}` : base;
    });
    const only = options.only;
    const keepMode = options.keep ?? 'all';
    const summary = keepMode === 'summary';
    const touched = this.candidates.filter(
      (c) => picks.some((p) => p.has(c.name)) && (!only || only.has(c.name)),
    );
    if (!this.candidates.length)
      throw new ModelError('unsupported', noCandidatesMessage(this.model.name, this.model.graph));
    if (!touched.length)
      throw new ModelError(
        'invalid-recipe',
        'The recipe selects no weights: check each step’s tensor selection.',
      );
    const order = [...touched].sort(
      (a, b) => Number(b.name === options.priority) - Number(a.name === options.priority),
    );
    const used = new Map<string, Memo>();
    /**
     * Keys this run put into the cache: a run of a few weights (`only`) trims only these at its end,
     * so runs of other weights going on at the same time (the export's, in the pool) keep theirs.
     */
    const added = new Set<string>();
    let usedBytes = 0;
    const keepBytes = this.budget === Infinity ? Infinity : this.budget - this.originalsBudget;
    let computed = 0;
    const states = new Map<string, Promise<State>>();
    /** Outcomes being computed, by cache key and form: a global step's group is computed once for all its tensors. */
    const computing = new Map<string, Promise<State>>();
    const pool = options.pool ?? this.pool;
    const scope = pool?.newScope() ?? 0;
    // a full run reads the weights in the same order each time: when they do not fit in the originals'
    // budget, least-recently-used caching never hits (each is evicted before it is read again), and
    // only costs a copy into shared memory. The viewed weight is still cached (a slider moves it next).
    let touchedBytes = 0;
    for (const c of touched) touchedBytes += c.shape[0] * c.shape[1] * 4;
    const cycles = !only && touchedBytes > this.originalsBudget;
    const cacheOriginals = (c: WeightCandidate) =>
      !options.readOnce && (!cycles || c.name === options.priority);
    const initial = (c: WeightCandidate): State => ({
      key: c.name,
      outcome: initialOutcome(c, this.original(c.name, cacheOriginals(c))),
      compact: false,
    });
    /** The cache entry of a state just computed: compact in summary and export runs where it can be. */
    const remember = (
      key: string,
      o: TensorOutcome,
      method: CompressionMethod,
      report?: TensorReport,
    ): Memo => {
      const compact = keepMode !== 'all' && compactable(method);
      const memo: Memo = {
        outcome: { ...o, original: NO_VALUES, ...(compact ? { values: NO_VALUES } : {}) },
        compact,
        ...(report ? { report } : {}),
      };
      this.cache.set(key, memo);
      added.add(key);
      computed++;
      return memo;
    };
    // the kernels of one step over `inputs` (whole states): in the pool when the method reads only
    // weights, else here; `measured`: only the encodings and their error statistics come back
    const apply = async (i: number, inputs: State[], measured: boolean): Promise<State[]> => {
      const step = steps[i];
      const method = getMethod(step.method);
      const matrices = inputs.map((s) => asMatrix(s.outcome.candidate, s.outcome.values));
      const keyOf = (j: number) => `${inputs[j].key}>${stepKeys[i]}`;
      if (measured) {
        const originals = inputs.map((s) => s.outcome.original);
        // originals read for these states alone (not cached), which are their values (the first
        // step): handed over to the worker, no copy; the states are not read again
        const give = inputs.every(
          (s) => s.outcome.values === s.outcome.original && this.unkept.has(s.outcome.original),
        );
        const results =
          pool && poolable(method)
            ? await pool.applyMeasured(method.id, step.options, matrices, originals, scope, give)
            : applyMeasured(method, matrices, step.options, originals);
        return results.map((r, j) => {
          const from = { ...inputs[j].outcome, original: NO_VALUES };
          const { error, ...encoded } = r;
          const outcome = nextOutcome(from, method, step.options, { ...encoded, values: NO_VALUES });
          const report = reportWith(outcome, error);
          const memo = remember(keyOf(j), outcome, method, report);
          return { key: keyOf(j), outcome, compact: true, report, memo };
        });
      }
      const results =
        pool && poolable(method)
          ? await pool.apply(method.id, step.options, matrices, scope)
          : method.apply(matrices, step.options, method.needs?.length ? calibration : undefined);
      return results.map((r, j) => {
        const outcome = nextOutcome(inputs[j].outcome, method, step.options, r);
        return { key: keyOf(j), outcome, compact: false, memo: remember(keyOf(j), outcome, method) };
      });
    };
    // the cache key of tensor c after steps[0..i] (the steps that select it)
    const keyAfter = (c: WeightCandidate, i: number): string => {
      let key = c.name;
      for (let k = 0; k <= i; k++) if (picks[k].has(c.name)) key = `${key}>${stepKeys[k]}`;
      return key;
    };
    // the state of tensor c after steps[0..i]; `whole`: with its values (else an encoding may do)
    const advance = async (c: WeightCandidate, i: number, whole: boolean): Promise<State> => {
      if (!picks[i].has(c.name)) return stateAfter(c, i - 1, whole);
      const key = keyAfter(c, i);
      const memo = this.cache.get(key);
      if (memo && (memo.compact ? !whole && memo.report : true)) {
        // a whole memo gets its original back when its values are wanted or its report is not known yet
        const outcome =
          memo.compact || (!whole && memo.report)
            ? memo.outcome
            : { ...memo.outcome, original: this.original(c.name, cacheOriginals(c)) };
        return { key, outcome, compact: memo.compact, memo, ...(memo.report ? { report: memo.report } : {}) };
      }
      const running = computing.get(`${key}#whole`) ?? (whole ? undefined : computing.get(`${key}#any`));
      if (running) return running;
      const method = getMethod(steps[i].method);
      const global = stepKeys[i].includes('@');
      const measured = !whole && !global && compactable(method);
      const group = global ? this.candidates.filter((x) => picks[i].has(x.name)) : [c];
      const inputs = await Promise.all(group.map((g) => stateAfter(g, i - 1, true)));
      const done = apply(i, inputs, measured);
      const keys = inputs.map((s) => `${s.key}>${stepKeys[i]}#${measured ? 'any' : 'whole'}`);
      // the states as computed, not read back from the cache: another run may have trimmed it since
      keys.forEach((k, j) => {
        const state = done.then((outs) => outs[j]);
        // read only by another weight's advance that finds it computing: when none does, a failed or
        // cancelled kernel must not surface as an unhandled rejection (the caller awaits `done`)
        state.catch(() => undefined);
        computing.set(k, state);
      });
      try {
        return (await done)[group.indexOf(c)];
      } finally {
        for (const k of keys) computing.delete(k);
      }
    };
    const stateAfter = (c: WeightCandidate, i: number, whole: boolean): Promise<State> => {
      if (i < 0) return Promise.resolve(initial(c));
      const id = `${c.name}#${i}#${whole ? 'whole' : 'any'}`;
      let s = states.get(id);
      if (!s) {
        s = advance(c, i, whole).then((state) => {
          // memoised for the next run while the budget allows
          const memo = state.memo;
          if (memo && !used.has(state.key)) {
            const bytes = memoBytes(memo);
            if (usedBytes + bytes <= keepBytes) {
              used.set(state.key, memo);
              usedBytes += bytes;
            }
          }
          return state;
        });
        states.set(id, s);
      }
      return s;
    };
    const finals = new Map<string, State>();
    const measuredReports = new Map<string, TensorReport>();
    let kept: TensorOutcome | undefined;
    /** Summary mode: the weight is measured, then its arrays go (except what the budget keeps). */
    const release = (c: WeightCandidate, final: State) => {
      measuredReports.set(c.name, this.reportOf(final));
      if (c.name === options.priority) kept = final.outcome;
      for (let i = 0; i < steps.length; i++)
        for (const form of ['whole', 'any']) {
          const id = `${c.name}#${i}#${form}`;
          const s = states.get(id);
          if (s)
            void s.then(
              (st) => !used.has(st.key) && this.cache.get(st.key) === st.memo && this.cache.delete(st.key),
            );
          states.delete(id);
        }
    };
    // with a pool, as many tensors in flight as it has workers (the first is the one on screen);
    // without, one at a time with a turn of the event loop between them
    const width = pool ? pool.size : 1;
    const running = new Set<Promise<void>>();
    let finished = 0;
    let failure: unknown;
    try {
      for (let t = 0; t < order.length; t++) {
        if (options.isStale?.()) throw new ModelError('cancelled', 'Preview superseded by a newer recipe.');
        const c = order[t];
        // whole where the values are shown or handed out; an encoding is enough for the rest
        const whole = keepMode === 'all' || (summary && c.name === options.priority);
        const job: Promise<void> = stateAfter(c, steps.length - 1, whole).then(
          (final) => {
            if (c.name === options.priority) options.onPriority?.(final.outcome);
            if (summary) release(c, final);
            else finals.set(c.name, final);
            options.onProgress?.(++finished, order.length);
          },
          (e) => {
            failure ??= e;
          },
        );
        running.add(job);
        void job.finally(() => running.delete(job));
        if (running.size >= width) await Promise.race(running);
        if (failure) throw failure;
        if (!pool) await yieldToEventLoop();
      }
      await Promise.all(running);
      if (failure) throw failure;
    } catch (e) {
      pool?.cancel(scope);
      await Promise.allSettled(running);
      throw e;
    }
    if (options.isStale?.()) throw new ModelError('cancelled', 'Preview superseded by a newer recipe.');
    // keep only what this recipe uses: the cache follows the sliders instead of growing without end
    const keep = [...used].filter(([k]) => k.includes('>'));
    // a run of a few weights adds to what the full run memoised, within the budget; a full run replaces it
    if (only) {
      // what this run computed went into the cache as it ran: keep it only while the budget allows
      let held = 0;
      for (const [k, m] of this.cache) if (!added.has(k)) held += memoBytes(m);
      for (const k of added) {
        const m = this.cache.get(k);
        if (!m) continue;
        if (used.has(k) && held + memoBytes(m) <= keepBytes) held += memoBytes(m);
        else this.cache.delete(k);
      }
    } else this.cache = new Map(keep);
    this.lastComputed = computed;
    if (summary) {
      const inOrder = this.candidates.filter((c) => measuredReports.has(c.name));
      const list = inOrder.map((c) => measuredReports.get(c.name) as TensorReport);
      return {
        outcomes: kept ? [kept] : [],
        reports: list,
        totals: totalsFor(this.model, list),
        warnings: [],
      };
    }
    const inModelOrder = this.candidates.filter((c) => finals.has(c.name)).map((c) => finals.get(c.name)!);
    const outcomes = inModelOrder.map((s) => s.outcome);
    const reports = inModelOrder.map((s) => this.reportOf(s));
    return { outcomes, reports, totals: totalsFor(this.model, reports), warnings: [] };
  }
}

/** Histograms of the original and compressed weights over one shared range, for overlaying. */
export function overlayHistogram(
  original: Float32Array,
  compressed: Float32Array,
  bins: number,
): { edges: number[]; original: number[]; compressed: number[] } {
  const a = rangeAndZeros(original);
  const b = rangeAndZeros(compressed);
  const lo = Math.min(a.lo, b.lo);
  const hi = Math.max(a.hi, b.hi);
  const before = histogram(original, bins, [lo, hi]);
  return {
    edges: before.edges,
    original: before.counts,
    compressed: histogram(compressed, bins, [lo, hi]).counts,
  };
}
