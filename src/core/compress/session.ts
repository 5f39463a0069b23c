/**
 * Live previews of a recipe: the studio's slider loop. Results are memoised per tensor and per
 * recipe prefix, so moving one step's slider recomputes only that step onwards and only for the
 * tensors it selects; the tensor the person is looking at is computed first; and a run yields to
 * the event loop between tensors so a newer request can cancel it.
 */
import { ModelError } from '../errors.ts';
import { readTensorFloat32, type OnnxModel } from '../onnx/model.ts';
import { findWeight } from '../onnx/graphs.ts';
import { getMethod } from '../../methods/registry.ts';
import { yieldToEventLoop } from '../eval/yield.ts';
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
import { histogram } from '../stats.ts';
import type { CalibrationStats } from '../calibrate/stats.ts';
import { missingCalibrationMessage } from '../../methods/calibrated.ts';
import { rangeAndZeros } from '../simd/index.ts';
import { KernelPool, poolable, ranksTogether } from './kernel-tasks.ts';
import { noCandidatesMessage, selectWeights, weightCandidates, type WeightCandidate } from './select.ts';

interface State {
  key: string;
  outcome: TensorOutcome;
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
   * other weight's arrays are dropped once it is measured, unless the memory budget keeps them for
   * the next run. A large model then previews in the memory of a few weights. Default 'all'.
   */
  keep?: 'all' | 'summary';
}

export interface SessionOptions {
  /**
   * Bytes of arrays the session may keep between runs: original weights (read again from the file
   * when evicted) and memoised compressed weights (recomputed when evicted). Default: no bound.
   */
  memoryBudget?: number;
  /** Kernel workers for the steps whose method reads only weights. */
  pool?: KernelPool;
}

/** Bytes an outcome's arrays hold beyond its original (decoded values, and the encoding about as big as it stores). */
function outcomeBytes(o: TensorOutcome): number {
  return (o.values === o.original ? 0 : o.values.byteLength) + (o.encoder ? o.storedBytes : 0);
}

/** A short id per statistics object, so memoised results of calibrated steps follow the statistics they used. */
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
  private cache = new Map<string, TensorOutcome>();
  /** Reports of cached outcomes: a slider move re-measures only the tensors it recomputed. */
  private readonly reports = new WeakMap<TensorOutcome, TensorReport>();
  /** How many tensors the last run computed (the rest came from the cache): for tests and the UI. */
  lastComputed = 0;

  private readonly budget: number;
  private originalBytes = 0;
  private readonly pool?: KernelPool;

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
    this.pool = options.pool;
  }

  private reportOf(o: TensorOutcome): TensorReport {
    let r = this.reports.get(o);
    if (!r) {
      r = reportFor(o);
      this.reports.set(o, r);
    }
    return r;
  }

  /** Bytes of arrays kept between runs: originals, and memoised compressed weights (each ≤ half the budget). */
  memory(): { originals: number; memoised: number } {
    let memoised = 0;
    for (const o of this.cache.values()) memoised += outcomeBytes(o);
    return { originals: this.originalBytes, memoised };
  }

  /** Forget every memoised result (the next run recomputes everything). */
  clearCache(): void {
    this.cache.clear();
  }

  original(name: string): Float32Array {
    let v = this.originals.get(name);
    if (v) {
      // most recently used last: eviction takes the oldest first
      this.originals.delete(name);
      this.originals.set(name, v);
      return v;
    }
    v = readTensorFloat32(this.model, findWeight(this.model, name).tensor);
    // in shared memory when the pool can share it: every later dispatch of it is free
    if (this.pool) v = this.pool.share(v);
    // half the budget for originals, half for compressed weights; a weight larger than that is read each time
    if (v.byteLength <= this.budget / 2) {
      for (const [old, values] of this.originals) {
        if (this.originalBytes + v.byteLength <= this.budget / 2) break;
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
    const summary = options.keep === 'summary';
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
    const used = new Map<string, TensorOutcome>();
    /**
     * Keys this run put into the cache: a run of a few weights (`only`) trims only these at its end,
     * so runs of other weights going on at the same time (the export's, in the pool) keep theirs.
     */
    const added = new Set<string>();
    let usedBytes = 0;
    const keepBytes = this.budget / 2;
    let computed = 0;
    const states = new Map<string, Promise<State>>();
    /** Outcomes being computed, by cache key: a global step's group is computed once for all its tensors. */
    const computing = new Map<string, Promise<TensorOutcome>>();
    const pool = this.pool;
    const scope = pool?.newScope() ?? 0;
    const initial = (c: WeightCandidate): State => ({
      key: c.name,
      outcome: initialOutcome(c, this.original(c.name)),
    });
    // the kernels of one step over `inputs`: in the pool when the method reads only weights, else here
    const apply = async (i: number, inputs: State[]): Promise<TensorOutcome[]> => {
      const step = steps[i];
      const method = getMethod(step.method);
      const matrices = inputs.map((s) => asMatrix(s.outcome.candidate, s.outcome.values));
      const results =
        pool && poolable(method)
          ? await pool.apply(method.id, step.options, matrices, scope)
          : method.apply(matrices, step.options, method.needs?.length ? calibration : undefined);
      return results.map((r, j) => {
        const key = `${inputs[j].key}>${stepKeys[i]}`;
        const outcome = nextOutcome(inputs[j].outcome, method, step.options, r);
        this.cache.set(key, outcome);
        added.add(key);
        computed++;
        return outcome;
      });
    };
    // the state of tensor c after steps[0..i]
    const advance = async (c: WeightCandidate, i: number): Promise<State> => {
      const prev = i === 0 ? initial(c) : await stateAfter(c, i - 1);
      if (!picks[i].has(c.name)) return prev;
      const key = `${prev.key}>${stepKeys[i]}`;
      let outcome = this.cache.get(key) ?? (await computing.get(key));
      if (!outcome) {
        const group = stepKeys[i].includes('@') ? this.candidates.filter((x) => picks[i].has(x.name)) : [c];
        const inputs = await Promise.all(group.map((g) => (g === c ? prev : stateAfter(g, i - 1))));
        const done = apply(i, inputs);
        const keys = inputs.map((s) => `${s.key}>${stepKeys[i]}`);
        // the outcomes as computed, not read back from the cache: another run may have trimmed it since
        keys.forEach((k, j) =>
          computing.set(
            k,
            done.then((outs) => outs[j]),
          ),
        );
        try {
          outcome = (await done)[group.indexOf(c)];
        } finally {
          for (const k of keys) computing.delete(k);
        }
      }
      return { key, outcome };
    };
    const stateAfter = (c: WeightCandidate, i: number): Promise<State> => {
      if (i < 0) return Promise.resolve(initial(c));
      const id = `${c.name}#${i}`;
      let s = states.get(id);
      if (!s) {
        s = advance(c, i).then((state) => {
          // memoised for the next run while the budget allows
          const bytes = outcomeBytes(state.outcome);
          if (!used.has(state.key) && usedBytes + bytes <= keepBytes) {
            used.set(state.key, state.outcome);
            usedBytes += bytes;
          }
          return state;
        });
        states.set(id, s);
      }
      return s;
    };
    const finals = new Map<string, TensorOutcome>();
    const measured = new Map<string, TensorReport>();
    let kept: TensorOutcome | undefined;
    /** Summary mode: the weight is measured, then its arrays go (except what the budget keeps). */
    const release = (c: WeightCandidate, final: State) => {
      measured.set(c.name, this.reportOf(final.outcome));
      if (c.name === options.priority) kept = final.outcome;
      for (let i = 0; i < steps.length; i++) {
        const id = `${c.name}#${i}`;
        const s = states.get(id);
        if (s) void s.then((st) => !used.has(st.key) && this.cache.delete(st.key));
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
        const job: Promise<void> = stateAfter(c, steps.length - 1).then(
          (final) => {
            if (c.name === options.priority) options.onPriority?.(final.outcome);
            if (summary) release(c, final);
            else finals.set(c.name, final.outcome);
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
      for (const [k, o] of this.cache) if (!added.has(k)) held += outcomeBytes(o);
      for (const k of added) {
        const o = this.cache.get(k);
        if (!o) continue;
        if (used.has(k) && held + outcomeBytes(o) <= keepBytes) held += outcomeBytes(o);
        else this.cache.delete(k);
      }
    } else this.cache = new Map(keep);
    this.lastComputed = computed;
    if (summary) {
      const inOrder = this.candidates.filter((c) => measured.has(c.name));
      const list = inOrder.map((c) => measured.get(c.name) as TensorReport);
      return {
        outcomes: kept ? [kept] : [],
        reports: list,
        totals: totalsFor(this.model, list),
        warnings: [],
      };
    }
    const outcomes = order
      .map((c) => finals.get(c.name)!)
      .sort((a, b) => this.candidates.indexOf(a.candidate) - this.candidates.indexOf(b.candidate));
    const reports = outcomes.map((o) => this.reportOf(o));
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
