/**
 * Quantization-aware training: the student trains in float (latent weights), but every forward pass
 * reads the weights as the quantization step will store them — fake quantization through the
 * engine's `weightTransform` hook — and the gradient reaches the float weights unchanged
 * (straight-through estimator). After training, the step's own export runs on the trained float
 * weights, so the file onnxruntime loads computes exactly what the last forward pass computed.
 *
 * - int4 (block-wise, symmetric or asymmetric) and int8 (per channel or per tensor): the fake
 *   quantizer IS the method's kernel (`method.apply`: same scales, same rounding, same clamp), and
 *   the export is the ordinary compress export (`exportCompressed` → the method's `rewrite`) of the
 *   encoding that kernel returns for the trained weights. Scales follow the weights (from each block's
 *   or channel's range at every step), or, with `learnScales`, are trained LSQ-style (lsq.ts): they
 *   start as the kernel's scales of the initial weights and the export stores the learned scales
 *   with the levels the forward pass read, through the same method's `rewrite` (its own packing).
 * - k-means (palettes): the codebook starts as the method's own k-means of the initial weights; each
 *   forward pass reads every weight as the nearest centroid of the current codebook (exact zeros keep
 *   their pinned 0 centroid, as the method does with `keepZeros`). The centroids are not learned by
 *   gradient: by default the codebook stays fixed and only the assignments move; with `refitEvery` N,
 *   every N optimizer steps one Lloyd update moves each centroid to the mean of the weights it holds,
 *   then the weights are re-assigned. Measured on stories260K (batch 4 × 255, lr 3e-4, 100 steps):
 *   fixed 4.501 → 3.838, re-fitted every step worse (the float weights' Adam noise drags the means).
 *   The export writes that codebook and that assignment, not a fresh k-means of the trained weights:
 *   the palette is the one trained with.
 *
 * Weights a pruning step zeroed stay zero (distill's masks re-zero the float weights after each step)
 * and every one of these quantizers maps an exact 0 to 0.
 *
 * The quantizer caches its output per weight and recomputes it only when the float weights changed
 * (an optimizer step): a model that takes one row per forward pass runs the graph `batch` times a step.
 */
import { ModelError } from '../errors.ts';
import { bytesSource, parseModel, readTensorFloat32, type OnnxModel } from '../onnx/model.ts';
import { findWeight } from '../onnx/graphs.ts';
import { getMethod } from '../../methods/registry.ts';
import type { KernelResult, OptionValues } from '../../methods/types.ts';
import { paletteBytes, paletteIndexBits, type Palette } from '../../methods/kmeans/index.ts';
import type { ResolvedStep } from '../compress/recipe.ts';
import {
  asMatrix,
  initialOutcome,
  nextOutcome,
  reportFor,
  totalsFor,
  type CompressionResult,
} from '../compress/pipeline.ts';
import { exportCompressed } from '../compress/export.ts';
import { selectWeights, weightCandidates, type WeightCandidate } from '../compress/select.ts';
import type { Int4Quantized } from '../../methods/int4/kernel.ts';
import type { Int8Quantized } from '../../methods/int8/kernel.ts';
import { LearnedScales } from './lsq.ts';
import {
  distill,
  trainableWeights,
  type TransformParams,
  withWeights,
  type DistillOptions,
  type DistillResult,
  type Teacher,
  type TrainSelection,
} from './distill.ts';

/** The methods whose storage format QAT trains against. */
export const QAT_METHODS = ['int4', 'int8', 'kmeans'] as const;
export type QatMethod = (typeof QAT_METHODS)[number];

export interface QatSettings {
  /** k-means: optimizer steps between two Lloyd updates of the codebook (default 0: never, the codebook stays fixed). */
  refitEvery?: number;
  /** int4 / int8: the scales train LSQ-style (lsq.ts) instead of following each block's or channel's range. */
  learnScales?: boolean;
  /** With learnScales: the scales' learning rate over the weights' (default 1, as LSQ). */
  scaleLr?: number;
}

/** One k-means codebook state: [books, bookSize] sorted centroids and, per book, the index of its pinned 0 (or −1). */
interface CodebookState {
  codebook: Float32Array;
  books: number;
  bookSize: number;
  zeroCode: Int32Array;
}

interface TargetState {
  candidate: WeightCandidate;
  /** The float weights the cached result was computed from. */
  seen: Float32Array | null;
  result: KernelResult | null;
  /** How many distinct float weight versions were quantized (k-means refits count them). */
  versions: number;
  codebook?: CodebookState;
  /** learnScales: the trained scales, and those the cached result was computed with. */
  learned?: LearnedScales;
  seenScales?: Float32Array;
}

function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Which book element i of a [rows, cols] matrix uses: 0, or its output channel when there is one book per channel. */
function bookIndexer(c: WeightCandidate, books: number): (i: number) => number {
  const cols = c.shape[1];
  if (books === 1) return () => 0;
  return c.channelAxis === 1 ? (i) => i % cols : (i) => Math.floor(i / cols);
}

/** Per book: the codes of its nonzero centroids (sorted) and the midpoints between neighbours. */
function nearestTables(s: CodebookState): { codes: Int32Array[]; mids: Float64Array[] } {
  const codes: Int32Array[] = [];
  const mids: Float64Array[] = [];
  for (let b = 0; b < s.books; b++) {
    const own = Int32Array.from({ length: s.bookSize }, (_, j) => j).filter((j) => j !== s.zeroCode[b]);
    const m = new Float64Array(Math.max(0, own.length - 1));
    for (let j = 0; j + 1 < own.length; j++)
      m[j] = (s.codebook[b * s.bookSize + own[j]] + s.codebook[b * s.bookSize + own[j + 1]]) / 2;
    codes.push(own);
    mids.push(m);
  }
  return { codes, mids };
}

/**
 * codes[i] = the centroid of w[i]'s book nearest to it (ties to the lower one, as the method's own
 * assignment); an exact 0 takes its book's pinned 0 when the book has one.
 */
function assignNearest(w: Float32Array, s: CodebookState, bookOf: (i: number) => number): Uint8Array {
  const { codes: own, mids } = nearestTables(s);
  const codes = new Uint8Array(w.length);
  for (let i = 0; i < w.length; i++) {
    const b = bookOf(i);
    const x = w[i];
    if (x === 0 && s.zeroCode[b] >= 0) {
      codes[i] = s.zeroCode[b];
      continue;
    }
    const m = mids[b];
    let lo = 0;
    let hi = m.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (x > m[mid]) lo = mid + 1;
      else hi = mid;
    }
    codes[i] = own[b][lo];
  }
  return codes;
}

/** One Lloyd update: each centroid (but a pinned 0) becomes the mean of the weights assigned to it; books re-sorted. */
function refitCodebook(w: Float32Array, codes: Uint8Array, s: CodebookState, bookOf: (i: number) => number) {
  const { books, bookSize } = s;
  const sum = new Float64Array(books * bookSize);
  const count = new Float64Array(books * bookSize);
  for (let i = 0; i < w.length; i++) {
    const at = bookOf(i) * bookSize + codes[i];
    sum[at] += w[i];
    count[at]++;
  }
  for (let b = 0; b < books; b++) {
    const book = s.codebook.subarray(b * bookSize, (b + 1) * bookSize);
    for (let j = 0; j < bookSize; j++)
      if (j !== s.zeroCode[b] && count[b * bookSize + j] > 0)
        book[j] = Math.fround(sum[b * bookSize + j] / count[b * bookSize + j]);
    book.sort();
    if (s.zeroCode[b] >= 0) s.zeroCode[b] = book.indexOf(0);
  }
}

/**
 * The fake quantizer of one quantization step over a student: `transform` is the engine's
 * weightTransform, `exportModel` the compressed file of the trained weights.
 */
export class FakeQuantizer {
  readonly method: QatMethod;
  readonly options: OptionValues;
  /** The weights the step quantizes (main-graph initializers), by name. */
  readonly targets = new Map<string, TargetState>();
  private readonly refitEvery: number;
  readonly learnScales: boolean;
  private readonly scaleLr: number;

  constructor(student: OnnxModel, step: ResolvedStep, settings: QatSettings = {}) {
    if (!(QAT_METHODS as readonly string[]).includes(step.method))
      throw new ModelError(
        'invalid-argument',
        `Quantization-aware training supports ${QAT_METHODS.join(', ')}, not '${step.method}'.`,
      );
    this.method = step.method as QatMethod;
    this.options = step.options;
    this.refitEvery = settings.refitEvery ?? 0;
    if (!Number.isInteger(this.refitEvery) || this.refitEvery < 0)
      throw new ModelError(
        'invalid-argument',
        `The k-means refit interval must be a whole number ≥ 0 (0: never), got ${settings.refitEvery}.`,
      );
    this.learnScales = settings.learnScales ?? false;
    this.scaleLr = settings.scaleLr ?? 1;
    if (this.learnScales && this.method === 'kmeans')
      throw new ModelError(
        'invalid-argument',
        'Learned scales (LSQ) are for int4 and int8 steps; k-means has a codebook, not scales.',
      );
    if (settings.scaleLr !== undefined && (!this.learnScales || !(this.scaleLr > 0 && this.scaleLr <= 100)))
      throw new ModelError(
        'invalid-argument',
        this.learnScales
          ? `The scales' learning-rate factor must be in (0, 100], got ${settings.scaleLr}.`
          : "The scales' learning-rate factor is read with learned scales only.",
      );
    const picked = selectWeights(weightCandidates(student.graph), step.select);
    const nested = picked.filter((c) => c.scope !== '' || c.source !== 'initializer');
    if (nested.length)
      throw new ModelError(
        'unsupported',
        `${student.name}: quantization-aware training trains main-graph initializers; ${nested[0].name} is ` +
          `${nested[0].scope ? `inside ${nested[0].scope}` : 'a Constant node'}. Exclude it from the step's selection.`,
      );
    if (!picked.length)
      throw new ModelError(
        'invalid-recipe',
        `The ${this.method} step selects no weight of ${student.name} to train against.`,
      );
    for (const c of picked) this.targets.set(c.name, { candidate: c, seen: null, result: null, versions: 0 });
    if (this.learnScales)
      for (const t of this.targets.values()) {
        const c = t.candidate;
        const w = readTensorFloat32(student, findWeight(student, c.name).tensor);
        const [first] = getMethod(this.method).apply([asMatrix(c, w)], this.options);
        const [rows, cols] = c.shape;
        t.learned = new LearnedScales(
          {
            method: this.method as 'int4' | 'int8',
            rows,
            cols,
            channelAxis: c.channelAxis,
            blockSize: Number(this.options.blockSize),
            axis: this.options.granularity === 'per-tensor' ? null : c.channelAxis,
          },
          first.encoding as Int4Quantized | Int8Quantized,
        );
      }
  }

  /**
   * learnScales: the scales as parameters of their own optimizer group (the engine's gradients of
   * the quantized weights → LSQ's gradients of the weights and the scales); undefined otherwise.
   */
  transformParams(): TransformParams | undefined {
    if (!this.learnScales) return undefined;
    const params = new Map<string, Float32Array>();
    for (const [name, t] of this.targets) params.set(name, t.learned!.scales);
    return {
      params,
      lrScale: this.scaleLr,
      backward: (grads, weights) => {
        const out = new Map<string, Float32Array>();
        for (const [name, t] of this.targets) {
          const g = grads.get(name);
          const w = weights.get(name);
          if (g && w) out.set(name, t.learned!.backward(w, g));
        }
        return out;
      },
      afterStep: () => {
        for (const t of this.targets.values()) t.learned!.keepValid();
      },
    };
  }

  /** What the forward pass reads in place of `w` (the quantized-then-decoded weights); other weights pass unchanged. */
  readonly transform = (name: string, w: Float32Array): Float32Array => {
    const t = this.targets.get(name);
    return t ? this.quantize(t, w).values : w;
  };

  /** The step's kernel result (values, stored bytes, encoding) for these float weights, cached per version. */
  private quantize(t: TargetState, w: Float32Array): KernelResult {
    const scales = t.learned?.scales;
    if (t.seen && t.result && sameValues(t.seen, w) && (!scales || sameValues(t.seenScales!, scales)))
      return t.result;
    t.versions++;
    t.result = t.learned
      ? t.learned.result(w)
      : this.method === 'kmeans'
        ? this.palettize(t, w)
        : getMethod(this.method).apply([asMatrix(t.candidate, w)], this.options)[0];
    t.seen = Float32Array.from(w);
    if (scales) t.seenScales = Float32Array.from(scales);
    return t.result;
  }

  private palettize(t: TargetState, w: Float32Array): KernelResult {
    const c = t.candidate;
    const kmeans = getMethod('kmeans');
    if (!t.codebook) {
      // the codebook starts as the method's own k-means of the weights
      const [first] = kmeans.apply([asMatrix(c, w)], this.options);
      const p = first.encoding as Palette;
      const zeroCode = new Int32Array(p.books).fill(-1);
      if (this.options.keepZeros) {
        const bookOf = bookIndexer(c, p.books);
        for (let i = 0; i < w.length; i++)
          if (w[i] === 0) {
            const b = bookOf(i);
            const book = p.codebook.subarray(b * p.bookSize, (b + 1) * p.bookSize);
            zeroCode[b] = book.indexOf(0);
          }
      }
      t.codebook = {
        codebook: Float32Array.from(p.codebook),
        books: p.books,
        bookSize: p.bookSize,
        zeroCode,
      };
    }
    const s = t.codebook;
    const bookOf = bookIndexer(c, s.books);
    let codes = assignNearest(w, s, bookOf);
    // version 1 is the start (the codebook fits it already); refit on every refitEvery-th later version
    if (this.refitEvery > 0 && t.versions > 1 && (t.versions - 1) % this.refitEvery === 0) {
      refitCodebook(w, codes, s, bookOf);
      codes = assignNearest(w, s, bookOf);
    }
    const palette: Palette = {
      codebook: Float32Array.from(s.codebook),
      books: s.books,
      bookSize: s.bookSize,
      codes,
      bits: paletteIndexBits(s.bookSize),
    };
    const values = new Float32Array(w.length);
    for (let i = 0; i < w.length; i++) values[i] = palette.codebook[bookOf(i) * s.bookSize + codes[i]];
    const storedBytes = this.options.export === 'dense' ? values.byteLength : paletteBytes(palette, w.length);
    return { values, storedBytes, encoding: palette };
  }

  /**
   * The compressed model of `weights` (the trained float weights, by name; a target without one keeps
   * the student's own): the student's file with those weights, then every target stored by the step's
   * method from the encoding the forward pass used. `exported` is what onnxruntime loads.
   */
  exportModel(
    student: OnnxModel,
    weights: ReadonlyMap<string, Float32Array>,
  ): { exported: Uint8Array; result: CompressionResult; model: OnnxModel } {
    const model = parseModel(bytesSource(student.name, withWeights(student, new Map(weights))));
    const method = getMethod(this.method);
    const outcomes = [...this.targets.values()].map((t) => {
      const w =
        weights.get(t.candidate.name) ??
        readTensorFloat32(student, findWeight(student, t.candidate.name).tensor);
      return nextOutcome(initialOutcome(t.candidate, w), method, this.options, this.quantize(t, w));
    });
    const reports = outcomes.map(reportFor);
    const result: CompressionResult = {
      outcomes,
      reports,
      totals: totalsFor(model, reports),
      warnings: [],
    };
    return { exported: exportCompressed(model, result).model, result, model };
  }
}

export interface QatResult extends DistillResult {
  /** The quantized model of the trained weights (the step's export format). */
  exported: Uint8Array;
  compression: CompressionResult;
  quantizer: FakeQuantizer;
}

/**
 * The student the engine trains under QAT: the step's targets that the training selection leaves
 * frozen are constants of the graph, which the weight transform never sees, so they are stored
 * fake-quantized once and for all (their values never change). The student itself when none is frozen.
 */
export function withFrozenQuantized(
  student: OnnxModel,
  quantizer: FakeQuantizer,
  train: TrainSelection,
): OnnxModel {
  const trainable = new Set(trainableWeights(student, train));
  const frozen = new Map<string, Float32Array>();
  for (const [name] of quantizer.targets)
    if (!trainable.has(name))
      frozen.set(
        name,
        quantizer.transform(name, readTensorFloat32(student, findWeight(student, name).tensor)),
      );
  return frozen.size ? parseModel(bytesSource(student.name, withWeights(student, frozen))) : student;
}

/**
 * Distillation (or plain next-token training with a null teacher) with the step's fake quantization
 * in every forward pass, then the step's export of the trained weights. Weights the step quantizes but
 * the training selection leaves frozen are read quantized too (their stored values never change).
 */
export async function qatDistill(
  student: OnnxModel,
  teacher: Teacher | null,
  data: readonly number[][],
  step: ResolvedStep | FakeQuantizer,
  opts: DistillOptions & QatSettings,
): Promise<QatResult> {
  if (opts.weightTransform)
    throw new ModelError('invalid-argument', 'Quantization-aware training sets the weight transform itself.');
  const quantizer = step instanceof FakeQuantizer ? step : new FakeQuantizer(student, step, opts);
  const trained = withFrozenQuantized(student, quantizer, opts.train ?? 'all');
  if (opts.learnScales !== undefined && opts.learnScales !== quantizer.learnScales)
    throw new ModelError(
      'invalid-argument',
      "learnScales is the quantizer's setting: build the FakeQuantizer with it, or pass the step.",
    );
  const result = await distill(trained, teacher, data, {
    ...opts,
    weightTransform: quantizer.transform,
    transformParams: quantizer.transformParams(),
  });
  // frozen targets export from their original float values (cached: the encoding the forward read)
  const { exported, result: compression } = quantizer.exportModel(student, result.weights);
  return { ...result, exported, compression, quantizer };
}
