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
}

let kernels: DenseKernels | null = null;

function instance(): DenseKernels {
  if (!kernels) {
    const bytes = Uint8Array.from(atob(DENSE_WASM_BASE64), (ch) => ch.charCodeAt(0));
    kernels = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as DenseKernels;
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
