/**
 * AWQ-style activation-aware int4 (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization").
 * Input features with large activations matter more to a layer's output, so their weights are
 * scaled up before int4 rounding (finer relative steps) and the activation is scaled down by the
 * same factor at run time:
 *
 *   x · W  =  (x · diag(1/s)) · (diag(s) · W)  ≈  (x · diag(1/s)) · Q(diag(s) · W)
 *
 * with s_j = m_j^α (m_j the activation magnitude of feature j) and α picked from a grid on [0, 1]
 * to minimise the layer's output error on the calibration data, computed exactly from XᵀX:
 * ‖XW − XŴ‖²_F = Σ_c ΔW_cᵀ (XᵀX) ΔW_c. Q is the int4 method's grid (onnxruntime's MatMulNBits
 * quantizer), or GPTQ on the scaled weight ("AWQ then GPTQ"); α = 0 is plain RTN / plain GPTQ, so
 * the chosen scale never does worse than either on that objective.
 *
 * Dimensions: K input features, N outputs, X [rows, K]; weights are handled input-major [K, N]
 * internally, whichever axis holds their output channels.
 */
import { ModelError } from '../../core/errors.ts';
import type { InputStats } from '../../core/calibrate/stats.ts';
import { calibratedDims } from '../calibrated.ts';
import type { WeightMatrix } from '../types.ts';
import { dequantizeInt4Blockwise, quantizeInt4Blockwise, type Int4Quantized } from '../int4/kernel.ts';
import { gptqInt4 } from '../gptq/kernel.ts';

export interface AwqKernelOptions {
  blockSize: number;
  symmetric: boolean;
  /** α values tried, evenly spaced on [0, 1] (AWQ uses 20); 1 means α = 0 only (plain RTN). */
  gridPoints: number;
  /** How the scaled weight is rounded: the int4 method's round-to-nearest, or GPTQ. */
  quantizer: 'rtn' | 'gptq';
  /**
   * Round-to-nearest only: AWQ's clip search, each block's range shrunk by the factor (1, 0.95, …,
   * 0.55) whose rounding error in the layer output is least; kept only where it lowers the error.
   */
  clip: boolean;
  /** GPTQ's dampening and act-order, used when quantizer is 'gptq'. */
  dampening: number;
  actOrder: boolean;
}

export interface AwqEncoding {
  /** int4 codes and scales of diag(s) · W: the int4 method's encoding, exported as it exports it. */
  int4: Int4Quantized;
  /** 1 / s per input feature, [K], float32: what the exported model multiplies the activation by. */
  inverseScale: Float32Array;
  /** The α the search chose. */
  alpha: number;
  /** Every weight that uses this same scale (one, or those reading one activation): the norm before them may absorb 1/s. */
  sharedWith: string[];
}

export interface AwqResult {
  /** diag(1/s) · Q(diag(s) · W) in the weight's own layout: what the exported model computes with. */
  values: Float32Array;
  encoding: AwqEncoding;
}

const f32 = Math.fround;

/**
 * Activation magnitude per input feature, [K]: the root mean square √(Σx² / rows). AWQ uses mean |x|;
 * the captured statistics hold Σx² (the diagonal of XᵀX), and the α search absorbs the difference.
 */
export function activationMagnitude(stats: Pick<InputStats, 'sumSquares' | 'rows' | 'k'>): Float64Array {
  const rows = stats.rows > 0 ? stats.rows : 1;
  return Float64Array.from(stats.sumSquares, (s) => Math.sqrt(s / rows));
}

/**
 * s_j = max(m_j^α, 1e-4), normalised by √(max s · min s) as AWQ does (it keeps s around 1), and 1/s,
 * both float32, [K]. A feature that never fired (m_j = 0) keeps s_j = 1: its weights never reach the
 * output, and a tiny scale would only blow up 1/s.
 */
export function awqScale(
  magnitude: Float64Array,
  alpha: number,
): { scale: Float32Array; inverse: Float32Array } {
  const k = magnitude.length;
  const raw = new Float64Array(k);
  let lo = Infinity;
  let hi = 0;
  for (let j = 0; j < k; j++) {
    if (!(magnitude[j] > 0)) continue;
    const v = Math.max(magnitude[j] ** alpha, 1e-4);
    raw[j] = v;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const norm = hi > 0 ? Math.sqrt(hi * lo) : 1;
  const scale = new Float32Array(k);
  const inverse = new Float32Array(k);
  for (let j = 0; j < k; j++) {
    scale[j] = raw[j] > 0 ? f32(raw[j] / norm) : 1;
    inverse[j] = f32(1 / scale[j]);
  }
  return { scale, inverse };
}

/** `values` (own layout) with input feature j multiplied by `perFeature[j]`, rounded to float32. */
export function scaleInputs(w: WeightMatrix, values: Float32Array, perFeature: Float32Array): Float32Array {
  const [rows, cols] = w.shape;
  const out = new Float32Array(values.length);
  if (w.channelAxis === 1) {
    // [K, N]: row j is feature j
    for (let j = 0; j < rows; j++) {
      const f = perFeature[j];
      for (let c = 0, at = j * cols; c < cols; c++, at++) out[at] = f32(values[at] * f);
    }
  } else {
    // [N, K]: column j is feature j
    for (let r = 0; r < rows; r++)
      for (let j = 0, at = r * cols; j < cols; j++, at++) out[at] = f32(values[at] * perFeature[j]);
  }
  return out;
}

/**
 * ‖X(W − Ŵ)‖²_F = Σ_c Δ_cᵀ (XᵀX) Δ_c for Δ = W − Ŵ in the weight’s own layout; xtx [K, K], symmetric.
 */
export function outputError(w: WeightMatrix, approx: Float32Array, xtx: Float64Array): number {
  const [rows, cols] = w.shape;
  const k = w.channelAxis === 1 ? rows : cols;
  const n = w.channelAxis === 1 ? cols : rows;
  // Δ input-major [K, N]
  const d = new Float64Array(k * n);
  if (w.channelAxis === 1) for (let i = 0; i < k * n; i++) d[i] = w.values[i] - approx[i];
  else
    for (let c = 0; c < n; c++)
      for (let j = 0; j < k; j++) d[j * n + c] = w.values[c * k + j] - approx[c * k + j];
  // H is symmetric: Σ_i Δ_i · (H_ii Δ_i + 2 Σ_{j>i} H_ij Δ_j), half the multiply-adds of Δᵀ(HΔ)
  const acc = new Float64Array(n);
  let e = 0;
  for (let i = 0; i < k; i++) {
    const hii = xtx[i * k + i];
    for (let c = 0, at = i * n; c < n; c++, at++) acc[c] = hii * d[at];
    for (let j = i + 1; j < k; j++) {
      const h = 2 * xtx[i * k + j];
      if (h === 0) continue;
      for (let c = 0, at = j * n; c < n; c++, at++) acc[c] += h * d[at];
    }
    for (let c = 0, at = i * n; c < n; c++, at++) e += d[at] * acc[c];
  }
  return e;
}

/** Round-to-nearest int4 of diag(s)·W, and the weights the model then computes with, diag(1/s)·Q. */
function scaledRtn(
  w: WeightMatrix,
  scale: Float32Array,
  inverse: Float32Array,
  opts: Pick<AwqKernelOptions, 'blockSize' | 'symmetric'>,
): { int4: Int4Quantized; values: Float32Array } {
  const [rows, cols] = w.shape;
  const scaled = scaleInputs(w, w.values, scale);
  const int4 = quantizeInt4Blockwise(scaled, rows, cols, w.channelAxis, opts.blockSize, opts.symmetric);
  const q = dequantizeInt4Blockwise(int4, rows, cols, w.channelAxis);
  return { int4, values: scaleInputs(w, q, inverse) };
}

/** GPTQ on diag(s)·W, whose input is X·diag(1/s): its XᵀX is diag(1/s)·XᵀX·diag(1/s). */
function scaledGptq(
  w: WeightMatrix,
  stats: InputStats,
  scale: Float32Array,
  inverse: Float32Array,
  opts: AwqKernelOptions,
): { int4: Int4Quantized; values: Float32Array } {
  const { k, rows } = stats;
  const xtx = stats.xtx!;
  const scaledXtx = new Float64Array(k * k);
  for (let i = 0; i < k; i++)
    for (let j = 0; j < k; j++) scaledXtx[i * k + j] = xtx[i * k + j] * inverse[i] * inverse[j];
  const scaled = { ...w, values: scaleInputs(w, w.values, scale) };
  const { encoding, values } = gptqInt4(
    scaled,
    { xtx: scaledXtx, rows, k },
    {
      blockSize: opts.blockSize,
      symmetric: opts.symmetric,
      dampening: opts.dampening,
      actOrder: opts.actOrder,
    },
  );
  return { int4: encoding, values: scaleInputs(w, values, inverse) };
}

/**
 * AWQ for weights that share one scale (one weight, or every weight reading the same activation,
 * as AWQ groups q/k/v): α minimises the sum of their output errors; results in `weights`' order.
 */
export function awqInt4(
  weights: readonly WeightMatrix[],
  stats: InputStats,
  opts: AwqKernelOptions,
): AwqResult[] {
  const { blockSize, gridPoints } = opts;
  if (!(blockSize >= 2) || !Number.isInteger(blockSize))
    throw new ModelError('invalid-argument', `int4 block size must be a whole number ≥ 2, got ${blockSize}.`);
  if (!(gridPoints >= 1) || !Number.isInteger(gridPoints))
    throw new ModelError('invalid-argument', `AWQ's grid must be a whole number ≥ 1, got ${gridPoints}.`);
  for (const w of weights) calibratedDims(w, stats.k);
  const xtx = stats.xtx;
  if (!xtx)
    throw new ModelError(
      'invalid-argument',
      `AWQ needs XᵀX of '${stats.input}' to measure the output error, and it was not captured.`,
    );
  const magnitude = activationMagnitude(stats);
  type Quantized = { int4: Int4Quantized; values: Float32Array };
  // α is searched with the rounding that will be used, so α = 0 (no scaling) is plain RTN or plain GPTQ
  const quantize = (w: WeightMatrix, scale: Float32Array, inverse: Float32Array): Quantized =>
    opts.quantizer === 'gptq'
      ? scaledGptq(w, stats, scale, inverse, opts)
      : scaledRtn(w, scale, inverse, opts);
  let best: {
    alpha: number;
    error: number;
    inverse: Float32Array;
    scale: Float32Array;
    out: Quantized[];
  } | null = null;
  for (let g = 0; g < gridPoints; g++) {
    const alpha = gridPoints === 1 ? 0 : g / (gridPoints - 1);
    const { scale, inverse } = awqScale(magnitude, alpha);
    const out = weights.map((w) => quantize(w, scale, inverse));
    const error = weights.reduce((sum, w, i) => sum + outputError(w, out[i].values, xtx), 0);
    // strictly lower: ties keep the smaller α
    if (!best || error < best.error) best = { alpha, error, scale, inverse, out };
  }
  const { alpha, scale, inverse, out } = best!;
  const sharedWith = weights.map((w) => w.name);
  return weights.map((w, i) => {
    let { int4, values } = out[i];
    if (opts.quantizer === 'rtn' && opts.clip) {
      const clipped = scaledClipped(w, xtx, scale, inverse, opts);
      // the clip search sees each block alone; keep it only if the whole layer's error agrees
      if (outputError(w, clipped.values, xtx) < outputError(w, values, xtx)) ({ int4, values } = clipped);
    }
    return { values, encoding: { int4, inverseScale: inverse, alpha, sharedWith } };
  });
}

/** Range shrink factors AWQ's clip search tries: 1, 0.95, …, 0.55. */
const CLIP_RATIOS = Array.from({ length: 10 }, (_, i) => 1 - i / 20);

/**
 * int4 codes of diag(s)·W with each block's range shrunk by the factor of least error in the layer
 * output, d_bᵀ H'_bb d_b over the block's own inputs, where H' = diag(1/s)·XᵀX·diag(1/s) is XᵀX of
 * the scaled activation and d_b the block's rounding error. Scales, zero points and codes follow the
 * int4 method's formulas on the shrunk range, so the int4 exporters write them unchanged.
 */
function scaledClipped(
  w: WeightMatrix,
  xtx: Float64Array,
  scale: Float32Array,
  inverse: Float32Array,
  opts: Pick<AwqKernelOptions, 'blockSize' | 'symmetric'>,
): { int4: Int4Quantized; values: Float32Array } {
  const { blockSize, symmetric } = opts;
  const [rows, cols] = w.shape;
  const { k, n } = calibratedDims(w, scale.length);
  const scaled = scaleInputs(w, w.values, scale);
  const blocks = Math.ceil(k / blockSize);
  const codes = new Uint8Array(rows * cols).fill(symmetric ? 8 : 0);
  const scales = new Float32Array(n * blocks);
  const zeroPoints = symmetric ? null : new Uint8Array(n * blocks);
  // where (input j, output c) lives in the weight's own layout
  const at =
    w.channelAxis === 1 ? (j: number, c: number) => j * cols + c : (j: number, c: number) => c * cols + j;
  const v = new Float64Array(blockSize);
  const d = new Float64Array(blockSize);
  const code = new Uint8Array(blockSize);
  const bestCode = new Uint8Array(blockSize);
  for (let b = 0; b < blocks; b++) {
    const j0 = b * blockSize;
    const len = Math.min(k, j0 + blockSize) - j0;
    // H' of this block, [len, len]
    const h = new Float64Array(len * len);
    for (let a = 0; a < len; a++)
      for (let e = 0; e < len; e++)
        h[a * len + e] = xtx[(j0 + a) * k + j0 + e] * inverse[j0 + a] * inverse[j0 + e];
    for (let c = 0; c < n; c++) {
      let lo = 0;
      let hi = 0;
      for (let a = 0; a < len; a++) {
        v[a] = scaled[at(j0 + a, c)];
        if (v[a] < lo) lo = v[a];
        else if (v[a] > hi) hi = v[a];
      }
      let bestError = Infinity;
      let bestScale = 0;
      let bestZero = symmetric ? 8 : 0;
      for (const r of CLIP_RATIOS) {
        let s: number;
        let z: number;
        if (symmetric) {
          s = f32(((-lo > hi ? lo : hi) * r) / -8);
          z = 8;
        } else {
          s = f32(((hi - lo) * r) / 15);
          z = s !== 0 ? Math.min(15, Math.max(0, Math.round((-lo * r) / s))) : 8;
        }
        const inv = s !== 0 ? f32(1 / s) : 0;
        for (let a = 0; a < len; a++) {
          const q = Math.round(f32(v[a] * inv)) + z;
          code[a] = q > 15 ? 15 : q < 0 ? 0 : q;
          d[a] = v[a] - f32((code[a] - z) * s);
        }
        let error = 0;
        for (let a = 0; a < len; a++) {
          let row = 0;
          for (let e = 0; e < len; e++) row += h[a * len + e] * d[e];
          error += d[a] * row;
        }
        if (error < bestError) {
          bestError = error;
          bestScale = s;
          bestZero = z;
          bestCode.set(code);
        }
      }
      scales[c * blocks + b] = bestScale;
      if (zeroPoints) zeroPoints[c * blocks + b] = bestZero;
      for (let a = 0; a < len; a++) codes[at(j0 + a, c)] = bestCode[a];
    }
  }
  const int4: Int4Quantized = {
    channels: n,
    k,
    blockSize,
    blocksPerChannel: blocks,
    codes,
    scales,
    zeroPoints,
  };
  const q = dequantizeInt4Blockwise(int4, rows, cols, w.channelAxis);
  return { int4, values: scaleInputs(w, q, inverse) };
}
