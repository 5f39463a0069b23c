/**
 * The one module that imports and configures onnxruntime-web (transformers.js style): wasm threads,
 * execution provider choice and session creation. The app and every worker get sessions from here.
 */
import * as ort from 'onnxruntime-web';

export interface RuntimeInfo {
  provider: 'webgpu' | 'wasm';
  threads: number;
  crossOriginIsolated: boolean;
  notice?: string;
}

let configured: RuntimeInfo | undefined;
let webgpuAvailable: Promise<boolean> | undefined;

function hasWebGpuAdapter(): Promise<boolean> {
  const gpu = (globalThis.navigator as Navigator & { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  if (!gpu) return Promise.resolve(false);
  return gpu.requestAdapter().then(
    (a) => !!a,
    () => false,
  );
}

/** Threads when the page is cross-origin isolated (SharedArrayBuffer), one thread with a notice otherwise. */
export function configureRuntime(): RuntimeInfo {
  if (configured) return configured;
  const isolated = !!globalThis.crossOriginIsolated;
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  const threads = isolated ? Math.max(1, Math.min(4, cores)) : 1;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false; // we are already in a worker
  ort.env.logLevel = 'error';
  configured = {
    provider: 'wasm',
    threads,
    crossOriginIsolated: isolated,
    notice: isolated
      ? undefined
      : 'This page is not cross-origin isolated, so onnxruntime runs on one thread (slower, same results).',
  };
  return configured;
}

export interface SessionRequest {
  model: Uint8Array;
  externalData?: { path: string; data: Uint8Array }[];
  /** 'auto' picks WebGPU when the browser has an adapter, wasm otherwise. */
  provider?: 'auto' | 'webgpu' | 'wasm';
}

export async function createSession(
  req: SessionRequest,
): Promise<{ session: ort.InferenceSession; info: RuntimeInfo }> {
  const base = configureRuntime();
  webgpuAvailable ??= hasWebGpuAdapter();
  const wantGpu = req.provider === 'webgpu' || (req.provider === 'auto' && (await webgpuAvailable));
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: wantGpu ? ['webgpu', 'wasm'] : ['wasm'],
    graphOptimizationLevel: 'all',
    externalData: req.externalData,
    // measure weight-only compression as such: without this onnxruntime fuses DequantizeLinear→MatMul
    // into MatMulNBits that also quantizes activations to int8 (accuracy level 4)
    extra: { session: { qdq_matmulnbits_accuracy_level: '0' } },
  };
  const session = await ort.InferenceSession.create(req.model, options);
  return { session, info: { ...base, provider: wantGpu ? 'webgpu' : 'wasm' } };
}

export const Tensor = ort.Tensor;
