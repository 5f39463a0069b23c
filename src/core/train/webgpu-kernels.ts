/// <reference types="@webgpu/types" />
/**
 * The training engine's WebGPU kernels: the three products a MatMul's forward and backward need
 * (kernels.ts's NN, NT and TN layouts) as one WGSL compute shader that reads its operands through
 * strides, on a GPUDevice the caller opened. Weights can be kept resident (uploaded once per step and
 * read by every product of that step, forward and backward); the other operands are staged, and the
 * product is read back, per call: the rest of the interpreter (gather, norms, softmax, the loss) runs
 * on the CPU and needs the product there. See webgpu-bridge.ts for how the synchronous engine reaches
 * this asynchronous API, and graph.ts's notes for what that round trip costs.
 */

/** How a product reads its operands, as in kernels.ts (`GemmLayout`). */
export type DeviceLayout = 'NN' | 'NT' | 'TN';

/** An operand: a resident buffer (by id, with an element offset) or values staged for this call. */
export type Operand = { resident: number; offset: number } | { data: Float32Array };

/** A workgroup computes a BLOCK × BLOCK block of the product: 16 × 16 threads of 4 × 4 outputs each. */
const BLOCK = 64;
/** The k-slab staged in workgroup memory per pass. */
const SLAB = 16;

/**
 * c'[i, j] (+)= Σ_k a'[i, k] · b'[k, j] with a'[i, k] = A[aOff + i·ars + k·acs] and b'[k, j] =
 * B[bOff + k·brs + j·bcs]: NN, NT (b read transposed) and TN (a read transposed) are strides.
 * Per pass over k the 256 threads stage a BLOCK × SLAB slab of a' and a SLAB × BLOCK slab of b' in
 * workgroup memory (4 elements each of both), then each thread adds its 4 × 4 outputs' products
 * from registers: 8 workgroup reads per 16 multiply-adds instead of 2 per 1. Each output sums k in
 * order, as the wasm kernel does.
 */
export const GEMM_WGSL = /* wgsl */ `
struct Params {
  M: u32, K: u32, N: u32, accumulate: u32,
  aOff: u32, ars: u32, acs: u32, bOff: u32,
  brs: u32, bcs: u32, pad0: u32, pad1: u32,
}
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
// tA[k][m] and tB[k][n], k-major so a thread's 4 rows (columns) are adjacent
var<workgroup> tA: array<f32, ${BLOCK * SLAB}>;
var<workgroup> tB: array<f32, ${BLOCK * SLAB}>;

@compute @workgroup_size(16, 16)
fn main(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_id) l: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let row0 = wg.y * ${BLOCK}u;
  let col0 = wg.x * ${BLOCK}u;
  var acc: array<vec4f, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += ${SLAB}u) {
    for (var e = 0u; e < 4u; e++) {
      let idx = li + e * 256u;
      let m = idx / ${SLAB}u;
      let ka = k0 + idx % ${SLAB}u;
      var av = 0.0;
      if (row0 + m < p.M && ka < p.K) { av = A[p.aOff + (row0 + m) * p.ars + ka * p.acs]; }
      tA[(idx % ${SLAB}u) * ${BLOCK}u + m] = av;
      let kr = idx / ${BLOCK}u;
      let n = idx % ${BLOCK}u;
      var bv = 0.0;
      if (k0 + kr < p.K && col0 + n < p.N) { bv = B[p.bOff + (k0 + kr) * p.brs + (col0 + n) * p.bcs]; }
      tB[kr * ${BLOCK}u + n] = bv;
    }
    workgroupBarrier();
    for (var k = 0u; k < ${SLAB}u; k++) {
      let bk = k * ${BLOCK}u + l.x * 4u;
      let b = vec4f(tB[bk], tB[bk + 1u], tB[bk + 2u], tB[bk + 3u]);
      let ak = k * ${BLOCK}u + l.y * 4u;
      acc[0] += tA[ak] * b;
      acc[1] += tA[ak + 1u] * b;
      acc[2] += tA[ak + 2u] * b;
      acc[3] += tA[ak + 3u] * b;
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let r = row0 + l.y * 4u + i;
    if (r >= p.M) { break; }
    for (var j = 0u; j < 4u; j++) {
      let c = col0 + l.x * 4u + j;
      if (c >= p.N) { break; }
      let at = r * p.N + c;
      if (p.accumulate == 1u) { C[at] = C[at] + acc[i][j]; } else { C[at] = acc[i][j]; }
    }
  }
}
`;

/** Grows to the next power of two ≥ 256 bytes, so a few buffers serve every size a model asks for. */
const roundUp = (bytes: number) => Math.max(256, 2 ** Math.ceil(Math.log2(Math.max(bytes, 4))));

export class WebGpuKernels {
  readonly device: GPUDevice;
  private readonly pipeline: GPUComputePipeline;
  private readonly params: GPUBuffer;
  private readonly resident = new Map<number, GPUBuffer>();
  /** Staging buffers for a, b and c, and the mappable buffer c is read back through. */
  private scratch: Record<'a' | 'b' | 'c' | 'read', GPUBuffer | undefined> = {
    a: undefined,
    b: undefined,
    c: undefined,
    read: undefined,
  };
  /** Products run (a count the tests and the page read to know the GPU did the work). */
  products = 0;

  constructor(device: GPUDevice) {
    this.device = device;
    const module = device.createShaderModule({ code: GEMM_WGSL });
    this.pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    this.params = device.createBuffer({ size: 48, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  }

  private scratchBuffer(which: 'a' | 'b' | 'c' | 'read', bytes: number): GPUBuffer {
    const have = this.scratch[which];
    if (have && have.size >= bytes) return have;
    have?.destroy();
    const usage =
      which === 'read'
        ? GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST
        : GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const buf = this.device.createBuffer({ size: roundUp(bytes), usage });
    this.scratch[which] = buf;
    return buf;
  }

  /** Keeps `data` on the device under `id` (replacing what the id held) until `free`. */
  upload(id: number, data: Float32Array): void {
    let buf = this.resident.get(id);
    if (!buf || buf.size < data.byteLength) {
      buf?.destroy();
      buf = this.device.createBuffer({
        size: roundUp(data.byteLength),
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      });
      this.resident.set(id, buf);
    }
    this.device.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, data.byteLength);
  }

  /** Frees one resident buffer, or all of them when `id` is undefined. */
  free(id?: number): void {
    for (const [k, buf] of this.resident)
      if (id === undefined || k === id) {
        buf.destroy();
        this.resident.delete(k);
      }
  }

  private bind(op: Operand, which: 'a' | 'b', count: number): { buffer: GPUBuffer; offset: number } {
    if ('resident' in op) {
      const buffer = this.resident.get(op.resident);
      if (!buffer) throw new Error(`no resident buffer ${op.resident}`);
      return { buffer, offset: op.offset };
    }
    const buffer = this.scratchBuffer(which, count * 4);
    this.device.queue.writeBuffer(buffer, 0, op.data.buffer, op.data.byteOffset, count * 4);
    return { buffer, offset: 0 };
  }

  /**
   * c[M, N] (+)= op(a) · op(b), K summed: as kernels.ts's gemmWasm ('TN': a is [K, M]). `c` holds
   * the values to add to (unless `overwrite`) and receives the product.
   */
  async gemm(
    layout: DeviceLayout,
    a: Operand,
    b: Operand,
    c: Float32Array,
    M: number,
    K: number,
    N: number,
    overwrite: boolean,
  ): Promise<void> {
    const A = this.bind(a, 'a', M * K);
    const B = this.bind(b, 'b', K * N);
    const bytes = M * N * 4;
    const C = this.scratchBuffer('c', bytes);
    if (!overwrite) this.device.queue.writeBuffer(C, 0, c.buffer, c.byteOffset, bytes);
    // strides of a'[i, k] and b'[k, j] (see GEMM_WGSL)
    const [ars, acs] = layout === 'TN' ? [1, M] : [K, 1];
    const [brs, bcs] = layout === 'NT' ? [1, K] : [N, 1];
    const params = new Uint32Array([
      M,
      K,
      N,
      overwrite ? 0 : 1,
      A.offset,
      ars,
      acs,
      B.offset,
      brs,
      bcs,
      0,
      0,
    ]);
    this.device.queue.writeBuffer(this.params, 0, params);
    const group = this.device.createBindGroup({
      layout: this.pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: A.buffer } },
        { binding: 1, resource: { buffer: B.buffer } },
        { binding: 2, resource: { buffer: C } },
        { binding: 3, resource: { buffer: this.params } },
      ],
    });
    const read = this.scratchBuffer('read', bytes);
    const encoder = this.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(this.pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(Math.ceil(N / BLOCK), Math.ceil(M / BLOCK));
    pass.end();
    encoder.copyBufferToBuffer(C, 0, read, 0, bytes);
    this.device.queue.submit([encoder.finish()]);
    await read.mapAsync(GPUMapMode.READ, 0, bytes);
    c.set(new Float32Array(read.getMappedRange(0, bytes)));
    read.unmap();
    this.products++;
  }

  destroy(): void {
    this.free();
    for (const b of Object.values(this.scratch)) b?.destroy();
    this.params.destroy();
  }
}

export interface OpenedDevice {
  kernels: WebGpuKernels;
  /** The adapter, in words: "google swiftshader (fallback adapter)". */
  adapter: string;
  fallback: boolean;
}

/**
 * Opens the GPU: the `gpu` object of a page or worker (navigator.gpu). Resolves to a reason in words
 * when there is none, or, unless `allowFallback`, when the only adapter is a software fallback
 * (SwiftShader: 6–8× slower than the wasm kernels on the demo's steps, so 'auto' does not pick it).
 */
export async function openWebGpu(
  gpu: GPU | undefined,
  allowFallback: boolean,
): Promise<OpenedDevice | { reason: string }> {
  if (!gpu) return { reason: 'this browser has no WebGPU (navigator.gpu)' };
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) return { reason: 'WebGPU offers no adapter' };
  const info = adapter.info;
  const fallback = !!info?.isFallbackAdapter;
  const name = [info?.vendor, info?.architecture, info?.description].filter(Boolean).join(' ') || 'GPU';
  if (fallback && !allowFallback)
    return { reason: `the only WebGPU adapter (${name}) is a software fallback` };
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
    },
  });
  return {
    kernels: new WebGpuKernels(device),
    adapter: `${name}${fallback ? ' (fallback adapter)' : ''}`,
    fallback,
  };
}
