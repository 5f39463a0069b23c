/**
 * The training engine's hot loops: the three products a MatMul's forward and backward need, as flat
 * functions over Float32Array with offsets (so batched products run on views without copies). Every
 * one accumulates into its output (c += …), which is what gradient accumulation and broadcast batch
 * dimensions need. Products big enough to pay for staging run in the WASM SIMD kernel (matmul.wat;
 * measured 2-core machine: ~0.27 GFLOP/s in these JavaScript loops, several times that in wasm); the
 * transposed forms transpose one operand (O(size), small beside the O(M·K·N) product) and reuse it.
 * The JavaScript loops stay as the small-size path and the reference the wasm kernel is tested against.
 */
import { MATMUL_WASM_BASE64 } from './matmul-wasm.ts';

interface MatmulKernel {
  memory: WebAssembly.Memory;
  gemm(a: number, b: number, c: number, M: number, K: number, N4: number): void;
  /** gemm two rows at a time (rows 0…2⌊M/2⌋−1); the odd last row is left to gemm. */
  gemm2(a: number, b: number, c: number, M: number, K: number, N4: number): void;
}

/** Which wasm loop runs the products: 'gemm2' (two rows per pass, the default) or 'gemm'; for A/B tests. */
export const kernelChoice = { rows: 2 as 1 | 2 };

let kernel: MatmulKernel | null = null;

function wasm(): MatmulKernel {
  if (!kernel) {
    const bytes = Uint8Array.from(atob(MATMUL_WASM_BASE64), (ch) => ch.charCodeAt(0));
    kernel = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as MatmulKernel;
  }
  return kernel;
}

/** Below this many multiply-adds the JavaScript loop is cheaper than staging into wasm memory. */
const WASM_MIN_MACS = 1 << 15;

/** c[M,N] += a[M,K] · b[K,N] in the wasm kernel: a, b and c staged (rows padded to 4 floats), c copied back. */
export function gemmWasm(
  a: Float32Array,
  ao: number,
  b: Float32Array,
  bo: number,
  c: Float32Array,
  co: number,
  M: number,
  K: number,
  N: number,
): void {
  const k = wasm();
  const N4 = Math.ceil(N / 4) * 4;
  const aAt = 0;
  const bAt = aAt + Math.ceil((M * K * 4) / 16) * 16;
  const cAt = bAt + K * N4 * 4;
  const end = cAt + M * N4 * 4;
  const missing = end - k.memory.buffer.byteLength;
  if (missing > 0) k.memory.grow(Math.ceil(missing / 65536));
  const buf = k.memory.buffer;
  new Float32Array(buf, aAt, M * K).set(a.subarray(ao, ao + M * K));
  const B = new Float32Array(buf, bAt, K * N4);
  const C = new Float32Array(buf, cAt, M * N4);
  if (N4 === N) {
    B.set(b.subarray(bo, bo + K * N));
    C.set(c.subarray(co, co + M * N));
  } else {
    B.fill(0);
    C.fill(0);
    for (let r = 0; r < K; r++) B.set(b.subarray(bo + r * N, bo + (r + 1) * N), r * N4);
    for (let r = 0; r < M; r++) C.set(c.subarray(co + r * N, co + (r + 1) * N), r * N4);
  }
  if (kernelChoice.rows === 2 && M >= 2) {
    k.gemm2(aAt, bAt, cAt, M, K, N4);
    if (M % 2) k.gemm(aAt + (M - 1) * K * 4, bAt, cAt + (M - 1) * N4 * 4, 1, K, N4);
  } else k.gemm(aAt, bAt, cAt, M, K, N4);
  if (N4 === N) c.set(C, co);
  else for (let r = 0; r < M; r++) c.set(C.subarray(r * N4, r * N4 + N), co + r * N);
}

/** x[rows, cols] (at offset xo) transposed into a fresh [cols, rows] array. */
function transposed(x: Float32Array, xo: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const src = xo + r * cols;
    for (let j = 0; j < cols; j++) out[j * rows + r] = x[src + j];
  }
  return out;
}

/** c[M,N] += a[M,K] · b[K,N]. */
export function matmulAcc(
  a: Float32Array,
  ao: number,
  b: Float32Array,
  bo: number,
  c: Float32Array,
  co: number,
  M: number,
  K: number,
  N: number,
): void {
  if (M * K * N >= WASM_MIN_MACS) gemmWasm(a, ao, b, bo, c, co, M, K, N);
  else matmulAccJs(a, ao, b, bo, c, co, M, K, N);
}

/** c[M,N] += a[M,K] · b[N,K]ᵀ (dA = dC · Bᵀ). */
export function matmulNTAcc(
  a: Float32Array,
  ao: number,
  b: Float32Array,
  bo: number,
  c: Float32Array,
  co: number,
  M: number,
  K: number,
  N: number,
): void {
  if (M * K * N >= WASM_MIN_MACS) gemmWasm(a, ao, transposed(b, bo, N, K), 0, c, co, M, K, N);
  else matmulNTAccJs(a, ao, b, bo, c, co, M, K, N);
}

/** c[K,N] += a[M,K]ᵀ · b[M,N] (dB = Aᵀ · dC). */
export function matmulTNAcc(
  a: Float32Array,
  ao: number,
  b: Float32Array,
  bo: number,
  c: Float32Array,
  co: number,
  M: number,
  K: number,
  N: number,
): void {
  if (M * K * N >= WASM_MIN_MACS) gemmWasm(transposed(a, ao, M, K), 0, b, bo, c, co, K, M, N);
  else matmulTNAccJs(a, ao, b, bo, c, co, M, K, N);
}

/** c[M,N] += a[M,K] · b[K,N], in JavaScript. */
export function matmulAccJs(
  a: Float32Array,
  ao: number,
  b: Float32Array,
  bo: number,
  c: Float32Array,
  co: number,
  M: number,
  K: number,
  N: number,
): void {
  for (let i = 0; i < M; i++) {
    const ci = co + i * N;
    const ai = ao + i * K;
    let k = 0;
    // two rows of b per pass halves the loads and stores of c
    for (; k + 1 < K; k += 2) {
      const a0 = a[ai + k];
      const a1 = a[ai + k + 1];
      const b0 = bo + k * N;
      const b1 = b0 + N;
      for (let j = 0; j < N; j++) c[ci + j] += a0 * b[b0 + j] + a1 * b[b1 + j];
    }
    if (k < K) {
      const a0 = a[ai + k];
      const b0 = bo + k * N;
      for (let j = 0; j < N; j++) c[ci + j] += a0 * b[b0 + j];
    }
  }
}

/** c[M,N] += a[M,K] · b[N,K]ᵀ, in JavaScript (row dot products). */
export function matmulNTAccJs(
  a: Float32Array,
  ao: number,
  b: Float32Array,
  bo: number,
  c: Float32Array,
  co: number,
  M: number,
  K: number,
  N: number,
): void {
  for (let i = 0; i < M; i++) {
    const ai = ao + i * K;
    const ci = co + i * N;
    for (let j = 0; j < N; j++) {
      const bj = bo + j * K;
      let s0 = 0;
      let s1 = 0;
      let k = 0;
      for (; k + 1 < K; k += 2) {
        s0 += a[ai + k] * b[bj + k];
        s1 += a[ai + k + 1] * b[bj + k + 1];
      }
      if (k < K) s0 += a[ai + k] * b[bj + k];
      c[ci + j] += s0 + s1;
    }
  }
}

/** c[K,N] += a[M,K]ᵀ · b[M,N], in JavaScript. */
export function matmulTNAccJs(
  a: Float32Array,
  ao: number,
  b: Float32Array,
  bo: number,
  c: Float32Array,
  co: number,
  M: number,
  K: number,
  N: number,
): void {
  for (let i = 0; i < M; i++) {
    const ai = ao + i * K;
    const bi = bo + i * N;
    for (let k = 0; k < K; k++) {
      const av = a[ai + k];
      if (av === 0) continue;
      const ck = co + k * N;
      for (let j = 0; j < N; j++) c[ck + j] += av * b[bi + j];
    }
  }
}
