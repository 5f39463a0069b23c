/**
 * The training engine's hot loops: the three products a MatMul's forward and backward need, as flat
 * functions over Float32Array with offsets (so batched products run on views without copies). Every
 * one accumulates into its output (c += …), which is what gradient accumulation and broadcast batch
 * dimensions need, or overwrites it when the caller knows nothing else writes there. Products big
 * enough to pay for staging run in the WASM SIMD kernel (matmul.wat: 4 × 8 register tiles; ~12–20
 * GFLOP/s of CPU time on the 2-core build machine, near what 128-bit multiply + add without FMA
 * allows, against ~0.3 GFLOP/s for these JavaScript loops). All three layouts run in the one kernel:
 * Aᵀ·B reads A through strides, A·Bᵀ transposes B while staging it (the one copy staging makes anyway).
 * The JavaScript loops stay as the small-size path and the reference the wasm kernel is tested against.
 * A `GemmDevice` installed with `useGemmDevice` (the WebGPU backend: webgpu-bridge.ts) takes the
 * products of at least DEVICE_MIN_MACS multiply-adds in place of wasm, with the same semantics.
 */
import { MATMUL_WASM_BASE64 } from './matmul-wasm.ts';
import { instantiateBase64 } from '../simd/instantiate.ts';

interface MatmulKernel {
  memory: WebAssembly.Memory;
  /** c[M4, N8] += a' · b[K, N8], a'[i][k] at a + i·ras + k·cas (bytes); see matmul.wat. */
  gemm(
    a: number,
    ras: number,
    cas: number,
    b: number,
    c: number,
    M4: number,
    K: number,
    N8: number,
    accumulate: number,
  ): void;
}

let kernel: MatmulKernel | null = null;

function wasm(): MatmulKernel {
  if (!kernel) {
    kernel = instantiateBase64<MatmulKernel>(MATMUL_WASM_BASE64);
  }
  return kernel;
}

/** Below this many multiply-adds the JavaScript loop is cheaper than staging into wasm memory. */
const WASM_MIN_MACS = 1 << 15;

/**
 * Another place the products can run (the GPU): `gemm` has gemmWasm's arguments and semantics. `pin`
 * keeps arrays (the weights, for one training step) on the device until `unpin`.
 */
export interface GemmDevice {
  readonly name: string;
  gemm(
    layout: GemmLayout,
    a: Float32Array,
    ao: number,
    b: Float32Array,
    bo: number,
    c: Float32Array,
    co: number,
    M: number,
    K: number,
    N: number,
    overwrite: boolean,
  ): void;
  pin(arrays: Iterable<Float32Array>): void;
  unpin(): void;
}

/** Below this many multiply-adds a product stays on the CPU: a GPU round trip costs more than it saves. */
const DEVICE_MIN_MACS = 1 << 16;

let device: GemmDevice | null = null;

/** Runs the products on `d` from now on (null: back to wasm). Per thread: each worker has its own. */
export function useGemmDevice(d: GemmDevice | null): void {
  device = d;
}

/** The device the products run on, if any. */
export function gemmDevice(): GemmDevice | null {
  return device;
}

/** Keeps the weights on the device for the step about to run (nothing without a device). */
export function pinWeights(weights: Iterable<Float32Array>): void {
  device?.pin(weights);
}

/** The weights may change now (the optimizer's step): the device forgets its copies. */
export function unpinWeights(): void {
  device?.unpin();
}

/**
 * How the wasm product reads its operands: 'NN' c[M,N] += a[M,K]·b[K,N]; 'NT' c[M,N] += a[M,K]·b[N,K]ᵀ;
 * 'TN' c[M,N] += a[K,M]ᵀ·b[K,N]. K is always the summed dimension.
 */
export type GemmLayout = 'NN' | 'NT' | 'TN';

const align16 = (bytes: number) => Math.ceil(bytes / 16) * 16;

/**
 * c[M,N] += op(a) · op(b) in the wasm kernel (c = op(a) · op(b) when `overwrite`: c is not read). a,
 * b and c are staged into the module's memory (one copy each: b packed in column panels, NT's b
 * transposed on the way in, TN's a read through strides as it is), c copied back. Rows are padded to 8 floats and row counts to 4; the
 * padding computes values nobody reads.
 */
export function gemmWasm(
  layout: GemmLayout,
  a: Float32Array,
  ao: number,
  b: Float32Array,
  bo: number,
  c: Float32Array,
  co: number,
  M: number,
  K: number,
  N: number,
  overwrite = false,
): void {
  const k = wasm();
  const M4 = Math.ceil(M / 4) * 4;
  const N8 = Math.ceil(N / 8) * 8;
  // a' rows past M (padding) read past a's last element by up to 3 floats: 16 bytes of slack
  const aAt = 0;
  const bAt = align16(aAt + Math.max(M4, M) * K * 4 + 16);
  const cAt = align16(bAt + K * N8 * 4);
  const end = cAt + M4 * N8 * 4;
  const missing = end - k.memory.buffer.byteLength;
  if (missing > 0) k.memory.grow(Math.ceil(missing / 65536));
  const buf = k.memory.buffer;
  new Float32Array(buf, aAt, M * K).set(a.subarray(ao, ao + M * K));
  const B = new Float32Array(buf, bAt, K * N8);
  const C = new Float32Array(buf, cAt, M4 * N8);
  // b packed in column panels of 8 (see matmul.wat): element (r, n) at ((n >> 3)·K + r)·8 + (n & 7)
  if (layout === 'NT') {
    // b [N, K]: row n of b is column n of the product's b
    for (let n = 0; n < N; n++) {
      const src = bo + n * K;
      const dst = (n >> 3) * K * 8 + (n & 7);
      for (let r = 0; r < K; r++) B[dst + r * 8] = b[src + r];
    }
  } else {
    // b [K, N]
    const full = N & ~7;
    for (let r = 0; r < K; r++) {
      const src = bo + r * N;
      for (let n = 0; n < full; n += 8) {
        const dst = (n >> 3) * K * 8 + r * 8;
        const s = src + n;
        B[dst] = b[s];
        B[dst + 1] = b[s + 1];
        B[dst + 2] = b[s + 2];
        B[dst + 3] = b[s + 3];
        B[dst + 4] = b[s + 4];
        B[dst + 5] = b[s + 5];
        B[dst + 6] = b[s + 6];
        B[dst + 7] = b[s + 7];
      }
      for (let n = full; n < N; n++) B[(n >> 3) * K * 8 + r * 8 + (n & 7)] = b[src + n];
    }
  }
  const accumulate = overwrite ? 0 : 1;
  if (!overwrite) {
    if (N8 === N) C.set(c.subarray(co, co + M * N));
    else for (let r = 0; r < M; r++) C.set(c.subarray(co + r * N, co + (r + 1) * N), r * N8);
  }
  if (layout === 'TN') k.gemm(aAt, 4, M * 4, bAt, cAt, M4, K, N8, accumulate);
  else k.gemm(aAt, K * 4, 4, bAt, cAt, M4, K, N8, accumulate);
  if (N8 === N) c.set(C.subarray(0, M * N), co);
  else for (let r = 0; r < M; r++) c.set(C.subarray(r * N8, r * N8 + N), co + r * N);
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
  overwrite = false,
): void {
  if (device && M * K * N >= DEVICE_MIN_MACS) device.gemm('NN', a, ao, b, bo, c, co, M, K, N, overwrite);
  else if (M * K * N >= WASM_MIN_MACS) gemmWasm('NN', a, ao, b, bo, c, co, M, K, N, overwrite);
  else {
    if (overwrite) c.fill(0, co, co + M * N);
    matmulAccJs(a, ao, b, bo, c, co, M, K, N);
  }
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
  overwrite = false,
): void {
  if (device && M * K * N >= DEVICE_MIN_MACS) device.gemm('NT', a, ao, b, bo, c, co, M, K, N, overwrite);
  else if (M * K * N >= WASM_MIN_MACS) gemmWasm('NT', a, ao, b, bo, c, co, M, K, N, overwrite);
  else {
    if (overwrite) c.fill(0, co, co + M * N);
    matmulNTAccJs(a, ao, b, bo, c, co, M, K, N);
  }
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
  overwrite = false,
): void {
  if (device && M * K * N >= DEVICE_MIN_MACS) device.gemm('TN', a, ao, b, bo, c, co, K, M, N, overwrite);
  else if (M * K * N >= WASM_MIN_MACS) gemmWasm('TN', a, ao, b, bo, c, co, K, M, N, overwrite);
  else {
    if (overwrite) c.fill(0, co, co + K * N);
    matmulTNAccJs(a, ao, b, bo, c, co, M, K, N);
  }
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
