/**
 * The training engine's hot loops: the three products a MatMul's forward and backward need, as flat
 * functions over Float32Array with offsets (so batched products run on views without copies). Every
 * one accumulates into its output (c += …), which is what gradient accumulation and broadcast batch
 * dimensions need. Loop orders keep the innermost loop on contiguous memory.
 */

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

/** c[M,N] += a[M,K] · b[N,K]ᵀ (row dot products: dA = dC · Bᵀ). */
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
