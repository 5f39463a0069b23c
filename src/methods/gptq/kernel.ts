/**
 * GPTQ (Frantar et al. 2022): quantize a weight one input at a time and fold each input's rounding
 * error into the inputs not yet quantized, weighted by the inverse Hessian of the layer-wise
 * objective ‖XW − XŴ‖². The grids are exactly the studio's int4 block-wise (onnxruntime's MatMulNBits
 * grid) and int8 per-channel ones, so the result is an Int4Quantized / Int8Quantized the int4 and
 * int8 exporters write unchanged.
 *
 * Weights are handled input-major, [K, N]: GPTQ's "columns" are the rows here.
 */
import { ModelError } from '../../core/errors.ts';
import { layerHessian, reversedCholeskyFloat32 } from '../../core/calibrate/linalg.ts';
import { inputMajor, runObsPass } from '../../core/calibrate/obs.ts';
import type { HessianSource } from '../../core/calibrate/stats.ts';
import type { WeightMatrix } from '../types.ts';
import { calibratedDims } from '../calibrated.ts';
import { dequantizeInt4Blockwise, type Int4Quantized } from '../int4/kernel.ts';
import { dequantizeInt8, type Int8Quantized } from '../int8/kernel.ts';

export type { HessianSource };

export interface GptqCommonOptions {
  /** λ = dampening · mean(diag H) added to H's diagonal (GPTQ's percdamp; default 0.01). */
  dampening: number;
  /**
   * Quantize inputs in order of decreasing H_ii ("act-order"). Scales then come from the original
   * weights, one per int4 block ("static groups"), so blocks stay aligned with MatMulNBits' layout.
   */
  actOrder: boolean;
  /** Rows per lazy-update block (default 128); any value gives the same result. */
  lazyBlock?: number;
}

export interface GptqInt4Options extends GptqCommonOptions {
  blockSize: number;
  symmetric: boolean;
}

export interface GptqInt8Options extends GptqCommonOptions {
  symmetric: boolean;
}

export interface GptqResult<E> {
  values: Float32Array;
  encoding: E;
}

const f32 = Math.fround;

interface Prepared {
  k: number;
  n: number;
  /** Working weights [k, n] in processing order; dead inputs zeroed. */
  work: Float32Array;
  /** The weights before any update, in original order (dead inputs zeroed), for static scales. */
  original: Float32Array;
  /** H's reversed Cholesky factor (H = VVᵀ, V upper) in processing order, for runObsPass. */
  v: Float32Array;
  /** perm[pos] = original input index processed at position pos. */
  perm: Int32Array;
}

function prepare(w: WeightMatrix, stats: HessianSource, opts: GptqCommonOptions): Prepared {
  const { rows, cols, k, n } = calibratedDims(w, stats.k);
  const { h, dead } = layerHessian(stats, opts.dampening);
  const original = inputMajor(w.values, rows, cols, w.channelAxis);
  for (let i = 0; i < k; i++) if (dead[i]) original.fill(0, i * n, (i + 1) * n);
  const perm = Int32Array.from({ length: k }, (_, i) => i);
  if (opts.actOrder) {
    // decreasing H_ii, ties by index, so the order is deterministic
    perm.sort((a, b) => h[b * k + b] - h[a * k + a] || a - b);
  }
  const v = reversedCholeskyFloat32(h, k, opts.actOrder ? perm : null);
  const work = new Float32Array(k * n);
  for (let pos = 0; pos < k; pos++) work.set(original.subarray(perm[pos] * n, (perm[pos] + 1) * n), pos * n);
  return { k, n, work, original, v, perm };
}

function lazyBlockFor(opts: GptqCommonOptions, multipleOf: number): number {
  const want = opts.lazyBlock ?? 128;
  if (!(want >= 1) || !Number.isInteger(want))
    throw new ModelError('invalid-argument', `GPTQ's lazy block must be a whole number ≥ 1, got ${want}.`);
  return Math.ceil(want / multipleOf) * multipleOf;
}

/** The int4 grid's scale (and zero point) from a block's range [lo, hi] ∋ 0, as quantizeInt4Blockwise fits it. */
function fitInt4(
  lo: number,
  hi: number,
  at: number,
  scales: Float32Array,
  zeroPoints: Uint8Array | null,
): void {
  if (!zeroPoints) {
    scales[at] = (-lo > hi ? lo : hi) / -8;
  } else {
    scales[at] = (hi - lo) / 15;
    zeroPoints[at] = scales[at] !== 0 ? Math.min(15, Math.max(0, Math.round(-lo / scales[at]))) : 8;
  }
}

/**
 * code = floor(f32(f32(x · 1/s) + z + 0.5)) clamped to [0, max]: the float32 arithmetic of the
 * studio's WebAssembly quantizer, so equal weights get equal codes.
 */
function gridCode(x: number, inv: number, offset: number, max: number): number {
  const code = Math.floor(f32(f32(f32(x) * inv) + offset));
  return code < 0 ? 0 : code > max ? max : code;
}

export function gptqInt4(
  w: WeightMatrix,
  stats: HessianSource,
  opts: GptqInt4Options,
): GptqResult<Int4Quantized> {
  const { blockSize, symmetric } = opts;
  if (!(blockSize >= 2) || !Number.isInteger(blockSize))
    throw new ModelError('invalid-argument', `int4 block size must be a whole number ≥ 2, got ${blockSize}.`);
  const { k, n, work, original, v, perm } = prepare(w, stats, opts);
  const blocks = Math.ceil(k / blockSize);
  const scales = new Float32Array(n * blocks);
  const zeroPoints = symmetric ? null : new Uint8Array(n * blocks);
  const codesKN = new Uint8Array(k * n);
  const lo = new Float64Array(n);
  const hi = new Float64Array(n);
  /** Fits block b's scales from rows [r0, r1) of `src` ([·, n]), ranges starting at 0 as the int4 method's do. */
  const fitBlock = (b: number, src: Float32Array, r0: number, r1: number) => {
    lo.fill(0);
    hi.fill(0);
    for (let r = r0; r < r1; r++)
      for (let c = 0, at = r * n; c < n; c++, at++) {
        const v = f32(src[at]);
        if (v < lo[c]) lo[c] = v;
        else if (v > hi[c]) hi[c] = v;
      }
    for (let c = 0; c < n; c++) fitInt4(lo[c], hi[c], c * blocks + b, scales, zeroPoints);
  };
  if (opts.actOrder)
    for (let b = 0; b < blocks; b++) fitBlock(b, original, b * blockSize, Math.min(k, (b + 1) * blockSize));
  const block = lazyBlockFor(opts, blockSize);
  runObsPass({
    work,
    k,
    n,
    v,
    block,
    // without act-order a block's scales are fitted from its rows when its first row comes up
    group: opts.actOrder ? 1 : blockSize,
    compressRow(pos, row, q, live) {
      const kIndex = perm[pos];
      const b = Math.floor(kIndex / blockSize);
      // without act-order a block's scales are fitted when its first row comes up, on weights that by
      // then carry every earlier update (the lazy block is a multiple of the int4 block, so all of them)
      if (!opts.actOrder && pos % blockSize === 0) fitBlock(b, live, pos, Math.min(k, pos + blockSize));
      for (let c = 0; c < n; c++) {
        const at = c * blocks + b;
        const s = scales[at];
        const z = zeroPoints ? zeroPoints[at] : 8;
        const code = gridCode(row[c], s !== 0 ? f32(1 / s) : 0, z + 0.5, 15);
        codesKN[kIndex * n + c] = code;
        q[c] = f32((code - z) * s);
      }
    },
  });
  const [rows, cols] = w.shape;
  const codes = w.channelAxis === 1 ? codesKN : transposeBytes(codesKN, k, n);
  const encoding: Int4Quantized = {
    channels: n,
    k,
    blockSize,
    blocksPerChannel: blocks,
    codes,
    scales,
    zeroPoints,
  };
  return { values: dequantizeInt4Blockwise(encoding, rows, cols, w.channelAxis), encoding };
}

export function gptqInt8(
  w: WeightMatrix,
  stats: HessianSource,
  opts: GptqInt8Options,
): GptqResult<Int8Quantized> {
  const { symmetric } = opts;
  // the per-channel grid is fitted once, on the weights as given (GPTQ's quantizer.find_params)
  const [rows, cols] = w.shape;
  const given = inputMajor(w.values, rows, cols, w.channelAxis);
  const { k, n, work, v, perm } = prepare(w, stats, opts);
  const scales = new Float32Array(n);
  const inv = new Float32Array(n);
  const zeroPoints = symmetric ? null : new Uint8Array(n);
  const lo = new Float64Array(n);
  const hi = new Float64Array(n);
  for (let r = 0; r < k; r++)
    for (let c = 0, at = r * n; c < n; c++, at++) {
      const v = given[at];
      if (v < lo[c]) lo[c] = v;
      else if (v > hi[c]) hi[c] = v;
    }
  for (let c = 0; c < n; c++) {
    scales[c] = symmetric ? Math.max(-lo[c], hi[c]) / 127 : (hi[c] - lo[c]) / 255;
    inv[c] = scales[c] > 0 ? 1 / scales[c] : 0;
    if (zeroPoints)
      zeroPoints[c] = scales[c] > 0 ? Math.min(255, Math.max(0, Math.round(-lo[c] * inv[c]))) : 0;
  }
  const codesKN = symmetric ? new Int8Array(k * n) : new Uint8Array(k * n);
  runObsPass({
    work,
    k,
    n,
    v,
    block: lazyBlockFor(opts, 1),
    compressRow(pos, row, q) {
      const kIndex = perm[pos];
      for (let c = 0; c < n; c++) {
        // symmetric codes are shifted by 128 into the unsigned range, as the int8 method's quantizer does
        const z = zeroPoints ? zeroPoints[c] : 128;
        const code = gridCode(row[c], inv[c], z + 0.5, 255) - (zeroPoints ? 0 : 128);
        codesKN[kIndex * n + c] = code;
        q[c] = f32((code - (zeroPoints ? z : 0)) * scales[c]);
      }
    },
  });
  const q = w.channelAxis === 1 ? codesKN : transposeBytes(codesKN, k, n);
  const encoding: Int8Quantized = { q, scales, zeroPoints };
  return { values: dequantizeInt8(encoding, rows, cols, w.channelAxis), encoding };
}

/** [k, n] → [n, k] for one-byte codes. */
function transposeBytes<T extends Uint8Array | Int8Array>(x: T, k: number, n: number): T {
  const out = new (x.constructor as { new (len: number): T })(x.length);
  for (let r = 0; r < k; r++) for (let c = 0; c < n; c++) out[c * k + r] = x[r * n + c];
  return out;
}
