/**
 * The dense float32 product of the second-order calibrated methods (dense.wat), for the layer
 * Hessian's Cholesky factor, GPTQ's and SparseGPT's lazy-batch updates and XᵀX. Unlike the streaming
 * kernels in index.ts, these work on whole matrices that stay in the module's memory between calls
 * (a k × k factor, a [k, n] weight and its accumulators), so the caller lays its matrices out in one
 * arena and calls `gemmSub` on offsets into it: no copy per call.
 *
 * WebAssembly SIMD has no fused multiply-add in every engine yet, so a multiply-add is two
 * instructions on four floats; float32 is twice float64's throughput, and it is the precision the
 * reference GPTQ/SparseGPT run in. Callers keep float64 where it matters (pivots, the scale fits).
 */
import { DENSE_WASM_BASE64 } from './dense-wasm.ts';
import { instantiateBase64 } from './instantiate.ts';

interface DenseKernels {
  memory: WebAssembly.Memory;
  gemm_sub(
    c: number,
    ldc: number,
    a: number,
    lda: number,
    b: number,
    ldb: number,
    m: number,
    n: number,
    p: number,
  ): void;
  activation_stats(
    x: number,
    rows: number,
    k: number,
    sumsq: number,
    absmax: number,
    range: number,
    hist: number,
  ): void;
}

let kernels: DenseKernels | null = null;

function instance(): DenseKernels {
  if (!kernels) {
    kernels = instantiateBase64<DenseKernels>(DENSE_WASM_BASE64);
  }
  return kernels;
}

/**
 * The arena: the module's memory as floats, grown to hold at least `floats` of them. The view is
 * valid until the next `denseArena` call (growing memory detaches it); offsets into it are what
 * `gemmSub` takes. Its contents are whatever the last user left: callers initialise what they read.
 */
export function denseArena(floats: number): Float32Array {
  const k = instance();
  const missing = floats * 4 - k.memory.buffer.byteLength;
  if (missing > 0) k.memory.grow(Math.ceil(missing / 65536));
  return new Float32Array(k.memory.buffer);
}

/**
 * C[m, n] −= A[m, p] · B[p, n] on the arena, float32 (the sum over p accumulated in float32, then
 * subtracted from C). Arguments are float offsets of each matrix's first element and row strides in
 * floats, so any of them can be a block of a bigger matrix; A with stride 1 and p = 1 is a column.
 */
/** Columns and terms per call of the kernel: a block of B of at most 256 × 256 floats (256 KiB) stays in L2. */
const PANEL_COLS = 256;
const PANEL_TERMS = 256;

export function gemmSub(
  c: number,
  ldc: number,
  a: number,
  lda: number,
  b: number,
  ldb: number,
  m: number,
  n: number,
  p: number,
): void {
  if (m <= 0 || n <= 0 || p <= 0) return;
  const kernel = instance();
  // the kernel runs along rows of C, streaming all of B per pair of rows: in panels of columns and
  // terms, that B block stays in cache while the rows go by (each panel's sum is subtracted in turn)
  for (let j0 = 0; j0 < n; j0 += PANEL_COLS)
    for (let t0 = 0; t0 < p; t0 += PANEL_TERMS)
      kernel.gemm_sub(
        (c + j0) * 4,
        ldc * 4,
        (a + t0) * 4,
        lda * 4,
        (b + t0 * ldb + j0) * 4,
        ldb * 4,
        m,
        Math.min(PANEL_COLS, n - j0),
        Math.min(PANEL_TERMS, p - t0),
      );
}

/** Activation floats staged per kernel call (4 MiB): a sequence of a wide activation goes in a few calls. */
const STATS_CHUNK_FLOATS = 1 << 20;
/** Bins of an activation histogram: a float32's top 13 bits (see InputStats.histogram). */
const HISTOGRAM_BINS = 1 << 13;

/**
 * Folds x [rows, k] into per-feature statistics, in place: sumSquares[j] += Σ x² (float64, each
 * square exact), absMax[j] = max(absMax[j], |x|), range = [min, max] over all of x, and, when given,
 * histogram[bits(x) >> 19] += 1 for every element. Uses the shared arena (synchronous, like every
 * user of it). A NaN or ±∞ in x shows as a non-finite sumSquares entry.
 */
export function accumulateActivationStats(
  x: Float32Array,
  rows: number,
  k: number,
  sumSquares: Float64Array,
  absMax: Float32Array,
  range: Float32Array,
  histogram: Uint32Array | undefined,
): void {
  if (rows <= 0 || k <= 0) return;
  const chunkRows = Math.max(1, Math.min(rows, Math.floor(STATS_CHUNK_FLOATS / k)));
  // floats: x chunk, then sumsq (2k floats, 8-byte aligned), absmax, range, histogram
  const sumAt = Math.ceil((chunkRows * k) / 4) * 4;
  const absAt = sumAt + 2 * k;
  const rangeAt = absAt + k;
  const histAt = Math.ceil((rangeAt + 2) / 4) * 4;
  const mem = denseArena(histAt + HISTOGRAM_BINS);
  const sums = new Float64Array(mem.buffer, sumAt * 4, k);
  const hist = new Uint32Array(mem.buffer, histAt * 4, HISTOGRAM_BINS);
  sums.set(sumSquares.subarray(0, k));
  mem.set(absMax.subarray(0, k), absAt);
  mem.set(range.subarray(0, 2), rangeAt);
  if (histogram) hist.set(histogram);
  const kernel = instance();
  for (let r = 0; r < rows; r += chunkRows) {
    const n = Math.min(chunkRows, rows - r);
    mem.set(x.subarray(r * k, (r + n) * k), 0);
    kernel.activation_stats(0, n, k, sumAt * 4, absAt * 4, rangeAt * 4, histAt * 4);
  }
  sumSquares.set(sums);
  absMax.set(mem.subarray(absAt, absAt + k));
  range.set(mem.subarray(rangeAt, rangeAt + 2));
  if (histogram) histogram.set(hist);
}
