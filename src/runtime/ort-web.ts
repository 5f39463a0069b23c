/**
 * The one module that imports and configures onnxruntime-web (transformers.js style): wasm threads,
 * execution provider choice and session creation. The app and every worker get sessions from here.
 *
 * Two builds of onnxruntime-web: CPU sessions run on `onnxruntime-web/wasm` (plain wasm, SIMD and
 * threads, 14 MB), WebGPU sessions on the default build (28 MB: the CPU kernels plus the WebGPU
 * provider's JSEP bridge), imported only when a WebGPU session is asked for: a visitor without a GPU
 * downloads and compiles half the wasm. Once warm the two run at the same speed (the start-up gain
 * was not confirmed by the bench's back-to-back first-evaluation times on a loaded machine). Both
 * take the same options and compute with the same CPU kernels; tensors of one are feeds of the
 * other (read by type, dims and data).
 */
import * as ort from 'onnxruntime-web/wasm';

type OrtModule = typeof ort;
let gpuModule: Promise<OrtModule> | undefined;

/** The default build (WebGPU + wasm), configured as the wasm build is, imported on first use. */
function webGpuRuntime(): Promise<OrtModule> {
  gpuModule ??= import('onnxruntime-web').then((m) => {
    configureEnv(m.env, configureRuntime().threads);
    return m;
  });
  return gpuModule;
}

function configureEnv(env: OrtModule['env'], threads: number): void {
  env.wasm.numThreads = threads;
  env.wasm.proxy = false; // we are already in a worker
  env.logLevel = 'error';
}

export interface RuntimeInfo {
  provider: 'webgpu' | 'wasm';
  threads: number;
  crossOriginIsolated: boolean;
  notice?: string;
  /** Why this provider ran, e.g. "WebGPU adapter is a software fallback (SwiftShader)". */
  reason?: string;
}

let configured: RuntimeInfo | undefined;
let webgpuChoice: Promise<WebGpuChoice> | undefined;

/** Whether 'auto' may use WebGPU, and why (shown on the runtime line under a result). */
export interface WebGpuChoice {
  usable: boolean;
  reason: string;
}

interface AdapterInfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}
interface AdapterLike {
  isFallbackAdapter?: boolean;
  info?: AdapterInfoLike;
  requestAdapterInfo?: () => Promise<AdapterInfoLike>;
}

/** Software rasterisers that implement WebGPU on the CPU: slower than onnxruntime's own wasm kernels. */
const SOFTWARE_ADAPTER = /swiftshader|llvmpipe|lavapipe|softpipe|\bwarp\b|basic render|software/i;

/**
 * Judges an adapter for 'auto': a fallback (software) adapter — `isFallbackAdapter`, or an adapter
 * whose info names SwiftShader/llvmpipe — runs models many times slower than wasm, so it is refused.
 */
export function judgeAdapter(adapter: AdapterLike | null | undefined, info?: AdapterInfoLike): WebGpuChoice {
  if (!adapter) return { usable: false, reason: 'the browser offers no WebGPU adapter' };
  const i = info ?? adapter.info ?? {};
  const named = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ');
  const software = named.match(SOFTWARE_ADAPTER)?.[0];
  if (adapter.isFallbackAdapter || i.isFallbackAdapter || software) {
    const which = software ? (/swiftshader/i.test(software) ? 'SwiftShader' : software) : 'no GPU';
    return { usable: false, reason: `WebGPU adapter is a software fallback (${which})` };
  }
  return { usable: true, reason: `WebGPU adapter${named ? `: ${named}` : ''}` };
}

async function chooseWebGpu(): Promise<WebGpuChoice> {
  // typed loosely: older Chromium has requestAdapterInfo() where newer has adapter.info
  const gpu = (globalThis.navigator as unknown as { gpu?: { requestAdapter(): Promise<AdapterLike | null> } })
    .gpu;
  if (!gpu) return { usable: false, reason: 'this browser has no WebGPU' };
  try {
    const adapter = await gpu.requestAdapter();
    const info =
      adapter && !adapter.info ? await adapter.requestAdapterInfo?.().catch(() => undefined) : undefined;
    return judgeAdapter(adapter, info);
  } catch {
    return { usable: false, reason: 'the WebGPU adapter request failed' };
  }
}

/** onnxruntime-web's intra-op threads at most. */
const MAX_THREADS = 8;

/**
 * Whether this browser offers any WebGPU adapter (software ones included, unlike 'auto'), and which:
 * the backend-agreement check runs on whatever adapter there is and names it.
 */
export async function webGpuAdapter(): Promise<{ present: boolean; description: string }> {
  const choice = await chooseWebGpu();
  const present = choice.usable || choice.reason.startsWith('WebGPU adapter is a software');
  return { present, description: choice.reason };
}

/** Threads when the page is cross-origin isolated (SharedArrayBuffer), one thread with a notice otherwise. */
export function configureRuntime(): RuntimeInfo {
  if (configured) return configured;
  const isolated = !!globalThis.crossOriginIsolated;
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  // every core when isolated (the evaluation's windows go several to a run, wide enough to share
  // out), capped where more threads only add synchronisation on models of this size
  const threads = isolated ? Math.max(1, Math.min(MAX_THREADS, cores)) : 1;
  configureEnv(ort.env, threads);
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
  /** 'auto' picks WebGPU when the browser has a hardware adapter, wasm otherwise (a software one is slower). */
  provider?: 'auto' | 'webgpu' | 'wasm';
  /**
   * With 'webgpu': fail when the WebGPU provider cannot start instead of quietly running on wasm (a
   * backend comparison must compare two backends; nodes WebGPU lacks still run on the CPU kernels).
   */
  strict?: boolean;
}

export async function createSession(
  req: SessionRequest,
): Promise<{ session: ort.InferenceSession; info: RuntimeInfo }> {
  const base = configureRuntime();
  let wantGpu: boolean;
  let reason: string;
  if (req.provider === 'webgpu') [wantGpu, reason] = [true, 'WebGPU was asked for'];
  else if (req.provider === 'wasm') [wantGpu, reason] = [false, 'wasm was asked for'];
  else {
    webgpuChoice ??= chooseWebGpu();
    const choice = await webgpuChoice;
    [wantGpu, reason] = [choice.usable, choice.reason];
  }
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: wantGpu ? (req.strict ? ['webgpu'] : ['webgpu', 'wasm']) : ['wasm'],
    graphOptimizationLevel: 'all',
    externalData: req.externalData,
    // measure weight-only compression as such: without this onnxruntime fuses DequantizeLinear→MatMul
    // into MatMulNBits that also quantizes activations to int8 (accuracy level 4)
    extra: { session: { qdq_matmulnbits_accuracy_level: '0' } },
  };
  const runtime = wantGpu ? await webGpuRuntime() : ort;
  const session = await runtime.InferenceSession.create(req.model, options);
  return { session, info: { ...base, provider: wantGpu ? 'webgpu' : 'wasm', reason } };
}

export const Tensor = ort.Tensor;

/** onnxruntime-web's version, for the protocol line under every figure. */
export const ORT_WEB_VERSION: string = ort.env.versions?.web ?? ort.env.versions?.common ?? 'unknown';
