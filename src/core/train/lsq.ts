/**
 * Learned step sizes for quantization-aware training (LSQ: Esser et al. 2020, "Learned Step Size
 * Quantization"): the scales of an int4 or int8 step are trainable parameters, initialised from the
 * scales the step's own kernel computes for the student's weights, and trained by the KD loss beside
 * the weights. Zero points (asymmetric steps) stay as the kernel set them: they are integers the export
 * stores as such, and LSQ learns the step size only.
 *
 * Notation: a weight w belongs to one scale s (an int4 block, an int8 channel or the whole tensor);
 * v = w / s; the level q = clamp(round(v), Qn, Qp) with Qn = −z and Qp = levels − 1 − z (z the zero
 * point: 8 implied for symmetric int4, 0 for symmetric int8), so symmetric int4 is [−8, 7] and
 * symmetric int8 [−128, 127]; the forward pass reads ŵ = q · s, computed as the export's decoder
 * computes it ((code − z) · s in float32), so what trains is what onnxruntime runs.
 *
 * Gradients (LSQ's, with the straight-through estimator on round only):
 * - ∂ŵ/∂s = round(v) − v inside the range (Qn ≤ v ≤ Qp), Qn below it, Qp above it;
 * - ∂ŵ/∂w = 1 inside, 0 outside (the clipped STE). Why not pass the gradient through the clip too, as
 *   the fixed-scale quantizer does: with a learned scale the clip is the scale's to move — a weight
 *   beyond it only changes ŵ through s, and a gradient at the float weight would push it further out
 *   with no effect on the forward pass;
 * - the scale's gradient is multiplied by g = 1 / sqrt(n · Qp) (n weights share the scale; Qp = 7 or 15
 *   for int4 symmetric / asymmetric, 127 or 255 for int8), LSQ's balance of the scale's update against
 *   the weights'. AdamW normalises each parameter's step by its own gradient's magnitude, so g matters
 *   little there; it is kept so the gradient itself is LSQ's.
 * The scales train in their own AdamW group (distill.ts `transformParams`): the weights' schedule
 * times `scaleLr` (default 1: LSQ trains step sizes at the weights' learning rate), no weight decay
 * (it would pull every step size toward 0, clipping more and more of each block).
 * Scales keep their sign (the symmetric int4 kernel stores a negative scale when the block's largest
 * magnitude is positive, so that value maps to −8) and their magnitude stays ≥ 1e-3 of the initial
 * one; a scale that starts at 0 (an all-zero block) stays 0 and its weights read 0.
 */
import type { KernelResult } from '../../methods/types.ts';
import { dequantizeInt4Blockwise, type Int4Quantized } from '../../methods/int4/kernel.ts';
import { int4StoredBytes } from '../../methods/int4/index.ts';
import { dequantizeInt8, type Int8Quantized } from '../../methods/int8/kernel.ts';
import { int8StoredBytes } from '../../methods/int8/index.ts';

/** Which scale each weight uses, and each scale's level range and gradient scale. */
export interface LsqGroups {
  /** [rows · cols]: the index of the scale of each element of the row-major weight. */
  groupOf: Int32Array;
  /** Per scale: the lowest level Qn (−z). */
  lo: Int32Array;
  /** Per scale: the highest level Qp (levels − 1 − z). */
  hi: Int32Array;
  /** Per scale: LSQ's gradient scale 1 / sqrt(n · Qp). */
  gradScale: Float32Array;
}

/** Levels per step: the zero points (null: symmetric, z implied) and the storage's number of codes. */
function groupsFrom(
  groupOf: Int32Array,
  scales: number,
  zeroPoints: Uint8Array | null,
  symmetricZero: number,
  codes: number,
  qpNominal: number,
): LsqGroups {
  const count = new Int32Array(scales);
  for (let i = 0; i < groupOf.length; i++) count[groupOf[i]]++;
  const lo = new Int32Array(scales);
  const hi = new Int32Array(scales);
  const gradScale = new Float32Array(scales);
  for (let g = 0; g < scales; g++) {
    const z = zeroPoints ? zeroPoints[g] : symmetricZero;
    lo[g] = -z;
    hi[g] = codes - 1 - z;
    gradScale[g] = 1 / Math.sqrt(Math.max(1, count[g]) * qpNominal);
  }
  return { groupOf, lo, hi, gradScale };
}

/**
 * int4 blocks of a [rows, cols] weight, as the int4 kernel lays its scales out: [channels, blocks],
 * blocks running along the reduction axis (down the columns when channelAxis is 1).
 */
export function int4Groups(
  rows: number,
  cols: number,
  channelAxis: 0 | 1,
  blockSize: number,
  zeroPoints: Uint8Array | null,
): LsqGroups {
  const k = channelAxis === 1 ? rows : cols;
  const blocks = Math.ceil(k / blockSize);
  const groupOf = new Int32Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++)
      groupOf[r * cols + c] =
        channelAxis === 1 ? c * blocks + Math.floor(r / blockSize) : r * blocks + Math.floor(c / blockSize);
  const channels = channelAxis === 1 ? cols : rows;
  return groupsFrom(groupOf, channels * blocks, zeroPoints, 8, 16, zeroPoints ? 15 : 7);
}

/** int8 scales of a [rows, cols] weight: one per column (axis 1), per row (axis 0) or one (null). */
export function int8Groups(
  rows: number,
  cols: number,
  axis: 0 | 1 | null,
  zeroPoints: Uint8Array | null,
): LsqGroups {
  const groupOf = new Int32Array(rows * cols);
  if (axis !== null)
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) groupOf[r * cols + c] = axis === 1 ? c : r;
  const scales = axis === null ? 1 : axis === 1 ? cols : rows;
  // symmetric int8 levels are [−128, 127]: z = 128 in 256 codes
  return groupsFrom(groupOf, scales, zeroPoints, 128, 256, zeroPoints ? 255 : 127);
}

/** Forward: q[i] = clamp(round(w[i] / s), Qn, Qp) of its scale s (0 where s is 0). w, q: [n]. */
export function lsqLevels(w: Float32Array, groups: LsqGroups, scales: Float32Array): Int32Array {
  const { groupOf, lo, hi } = groups;
  const q = new Int32Array(w.length);
  for (let i = 0; i < w.length; i++) {
    const g = groupOf[i];
    const s = scales[g];
    if (s === 0) continue;
    const r = Math.round(w[i] / s);
    q[i] = r < lo[g] ? lo[g] : r > hi[g] ? hi[g] : r;
  }
  return q;
}

/**
 * Backward: from gradOut = ∂L/∂ŵ [n], the scales' gradients g · Σ ∂L/∂ŵ · ∂ŵ/∂s [scales], and gradOut
 * rewritten in place to ∂L/∂w (zero outside the range and where the scale is 0).
 */
export function lsqBackward(
  w: Float32Array,
  groups: LsqGroups,
  scales: Float32Array,
  gradOut: Float32Array,
): Float32Array {
  const { groupOf, lo, hi, gradScale } = groups;
  const acc = new Float64Array(scales.length);
  for (let i = 0; i < w.length; i++) {
    const g = groupOf[i];
    const s = scales[g];
    const d = gradOut[i];
    if (s === 0) {
      gradOut[i] = 0;
      continue;
    }
    const v = w[i] / s;
    // an element exactly at a bound is inside (its ∂ŵ/∂s is then round(v) − v = 0): the kernel's
    // symmetric int4 scale puts each block's largest weight exactly at −8, which would freeze it
    if (v < lo[g]) {
      acc[g] += d * lo[g];
      gradOut[i] = 0;
    } else if (v > hi[g]) {
      acc[g] += d * hi[g];
      gradOut[i] = 0;
    } else acc[g] += d * (Math.round(v) - v);
  }
  const grad = new Float32Array(scales.length);
  for (let g = 0; g < grad.length; g++) grad[g] = acc[g] * gradScale[g];
  return grad;
}

/** The int4 kernel's encoding of the levels: codes = q + z in the weight's own layout, the learned scales. */
function int4Encoding(
  q: Int32Array,
  groups: LsqGroups,
  like: Int4Quantized,
  scales: Float32Array,
): Int4Quantized {
  const codes = new Uint8Array(q.length);
  for (let i = 0; i < q.length; i++) codes[i] = q[i] - groups.lo[groups.groupOf[i]];
  return { ...like, codes, scales: Float32Array.from(scales) };
}

/** The int8 kernel's encoding: int8 levels (symmetric) or uint8 codes q + z, the learned scales. */
function int8Encoding(
  q: Int32Array,
  groups: LsqGroups,
  like: Int8Quantized,
  scales: Float32Array,
): Int8Quantized {
  const { groupOf, lo } = groups;
  const stored = like.zeroPoints ? Uint8Array.from(q, (v, i) => v - lo[groupOf[i]]) : Int8Array.from(q);
  return { q: stored, scales: Float32Array.from(scales), zeroPoints: like.zeroPoints };
}

/** How one weight's learned scales store: the matrix and the int8 axis (null: per tensor). */
export interface LsqLayout {
  method: 'int4' | 'int8';
  rows: number;
  cols: number;
  channelAxis: 0 | 1;
  /** int4: the block size. */
  blockSize?: number;
  /** int8: the scale axis, null per tensor. */
  axis?: 0 | 1 | null;
}

/**
 * One weight's learned scales: `scales` is the trainable parameter (initialised from the step's own
 * encoding of the initial weights); `result` is what the forward pass reads and the export stores.
 */
export class LearnedScales {
  readonly scales: Float32Array;
  readonly groups: LsqGroups;
  private readonly sign: Int8Array;
  private readonly floor: Float32Array;

  constructor(
    readonly layout: LsqLayout,
    /** The step kernel's encoding of the initial weights (its scales and zero points start the training). */
    private readonly initial: Int4Quantized | Int8Quantized,
  ) {
    const { rows, cols, channelAxis } = layout;
    this.groups =
      layout.method === 'int4'
        ? int4Groups(rows, cols, channelAxis, layout.blockSize!, initial.zeroPoints)
        : int8Groups(rows, cols, layout.axis ?? null, initial.zeroPoints);
    this.scales = Float32Array.from(initial.scales);
    this.sign = Int8Array.from(this.scales, Math.sign);
    this.floor = Float32Array.from(this.scales, (s) => Math.abs(s) * 1e-3);
  }

  /** The levels, values (ŵ, as the export decodes them), stored bytes and encoding of `w` with the current scales. */
  result(w: Float32Array): KernelResult {
    const q = lsqLevels(w, this.groups, this.scales);
    const { rows, cols, channelAxis } = this.layout;
    if (this.layout.method === 'int4') {
      const encoding = int4Encoding(q, this.groups, this.initial as Int4Quantized, this.scales);
      const values = dequantizeInt4Blockwise(encoding, rows, cols, channelAxis);
      return { values, storedBytes: int4StoredBytes(encoding), encoding };
    }
    const encoding = int8Encoding(q, this.groups, this.initial as Int8Quantized, this.scales);
    const values = dequantizeInt8(encoding, rows, cols, this.layout.axis ?? null);
    return { values, storedBytes: int8StoredBytes(encoding), encoding };
  }

  /** ∂L/∂ŵ → ∂L/∂w in place; returns ∂L/∂s. */
  backward(w: Float32Array, gradOut: Float32Array): Float32Array {
    return lsqBackward(w, this.groups, this.scales, gradOut);
  }

  /** After an update: each scale keeps its initial sign and ≥ 1e-3 of its initial magnitude (0 stays 0). */
  keepValid(): void {
    const { scales, sign, floor } = this;
    for (let g = 0; g < scales.length; g++) {
      const m = scales[g] * sign[g];
      scales[g] = sign[g] === 0 ? 0 : sign[g] * (m > floor[g] ? m : floor[g]);
    }
  }
}
