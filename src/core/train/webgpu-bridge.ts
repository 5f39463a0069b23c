/**
 * How the synchronous training engine uses the asynchronous WebGPU API. The interpreter (graph.ts) and
 * its ops are synchronous loops, while WebGPU only reads results back through promises (mapAsync),
 * which a blocked thread never sees resolve. So the device lives in a worker of its own (the GPU
 * worker, serveWebGpu) and the training worker calls it through shared memory: it writes a request
 * (operands in a SharedArrayBuffer, the call in an Int32Array), wakes the GPU worker (Atomics.notify,
 * which that worker awaits with Atomics.waitAsync, its event loop free for mapAsync) and blocks in
 * Atomics.wait until the product is back. Every op of the engine stays as it is and picks the device
 * through kernels.ts. It needs cross-origin isolation (SharedArrayBuffer), which the studio has.
 *
 * What moves per product: the staged operands in, the product out (a round trip per MatMul; the
 * interpreter's other ops run on the CPU and read the product there). Weights are uploaded once per
 * training step (`pin`) and read from the device by every product of that step, forward and backward.
 */
import { ModelError } from '../errors.ts';
import type { GemmDevice } from './kernels.ts';
import type { DeviceLayout, Operand, WebGpuKernels } from './webgpu-kernels.ts';

/** Slots of the control array. */
const REQ = 0; // request counter (client writes)
const DONE = 1; // answered counter (server writes)
const STATUS = 2; // 0 ok, 1 error (message in the error bytes)
const OP = 3;
const ARGS = 4; // 16 argument slots
const ERR_LEN = 20;
const RESIZED = 21; // data buffers the server adopted (counter)
const CTRL_INTS = 32;
const ERR_BYTES = 2048;

const OP_GEMM = 1;
const OP_UPLOAD = 2;
const OP_FREE = 3;

const LAYOUTS: DeviceLayout[] = ['NN', 'NT', 'TN'];

/** What the training worker sends the GPU worker once: the shared control, error and data buffers. */
export interface BridgeBuffers {
  ctrl: SharedArrayBuffer;
  err: SharedArrayBuffer;
  data: SharedArrayBuffer;
}

/** A message port to the GPU worker (a Worker, or anything with postMessage). */
export interface BridgePort {
  postMessage(message: unknown): void;
}

/** Shared control, error and data buffers, with room for `floats` floats of operands. */
export function bridgeBuffers(floats = 1 << 20): BridgeBuffers {
  if (
    typeof SharedArrayBuffer === 'undefined' ||
    !(globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated
  )
    throw new ModelError(
      'unsupported',
      'The WebGPU training backend needs a cross-origin isolated page (SharedArrayBuffer).',
    );
  return {
    ctrl: new SharedArrayBuffer(CTRL_INTS * 4),
    err: new SharedArrayBuffer(ERR_BYTES),
    data: new SharedArrayBuffer(floats * 4),
  };
}

/** How long one call may take before the client gives up (SwiftShader is slow; a real GPU is not). */
const CALL_TIMEOUT_MS = 120_000;

/**
 * The training worker's side: the engine's products (kernels.ts `GemmDevice`) run on the GPU worker,
 * synchronously. Needs a thread that may block (a worker: Atomics.wait is refused on a page's thread).
 */
export class WebGpuClient implements GemmDevice {
  readonly name: string;
  private readonly ctrl: Int32Array;
  private readonly err: Uint8Array;
  private data: Float32Array;
  private readonly port: BridgePort;
  private readonly pinned = new Map<Float32Array, number>();
  private nextId = 1;
  /** Products sent to the GPU. */
  products = 0;

  constructor(buffers: BridgeBuffers, port: BridgePort, name: string) {
    this.ctrl = new Int32Array(buffers.ctrl);
    this.err = new Uint8Array(buffers.err);
    this.data = new Float32Array(buffers.data);
    this.port = port;
    this.name = name;
  }

  /** Room for n floats of operands: a bigger shared buffer, handed to the GPU worker, when needed. */
  private room(n: number): Float32Array {
    if (this.data.length >= n) return this.data;
    const seen = Atomics.load(this.ctrl, RESIZED);
    const data = new SharedArrayBuffer(Math.max(n, this.data.length * 2) * 4);
    this.port.postMessage({ kind: 'data', data });
    this.wait(RESIZED, seen);
    this.data = new Float32Array(data);
    return this.data;
  }

  private wait(slot: number, was: number): void {
    const start = Date.now();
    while (Atomics.load(this.ctrl, slot) === was) {
      const left = CALL_TIMEOUT_MS - (Date.now() - start);
      if (left <= 0 || Atomics.wait(this.ctrl, slot, was, left) === 'timed-out')
        throw new ModelError('unsupported', 'The GPU worker stopped answering (WebGPU device lost?).');
    }
  }

  /** Sends the request written in the control slots and blocks until the GPU worker answers it. */
  private call(op: number, args: number[]): void {
    this.ctrl[OP] = op;
    args.forEach((v, i) => (this.ctrl[ARGS + i] = v));
    const id = Atomics.load(this.ctrl, REQ) + 1;
    const before = Atomics.load(this.ctrl, DONE);
    Atomics.store(this.ctrl, REQ, id);
    Atomics.notify(this.ctrl, REQ);
    this.wait(DONE, before);
    if (this.ctrl[STATUS] !== 0) {
      const text = new TextDecoder().decode(this.err.slice(0, this.ctrl[ERR_LEN]));
      throw new ModelError('unsupported', `WebGPU: ${text}`);
    }
  }

  gemm(
    layout: DeviceLayout,
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
  ): void {
    const aId = this.pinned.get(a) ?? 0;
    const bId = this.pinned.get(b) ?? 0;
    const aAt = 0;
    const bAt = aId ? 0 : M * K;
    const cAt = bAt + (bId ? 0 : K * N);
    const data = this.room(cAt + M * N);
    if (!aId) data.set(a.subarray(ao, ao + M * K), aAt);
    if (!bId) data.set(b.subarray(bo, bo + K * N), bAt);
    if (!overwrite) data.set(c.subarray(co, co + M * N), cAt);
    this.call(OP_GEMM, [
      LAYOUTS.indexOf(layout),
      M,
      K,
      N,
      overwrite ? 1 : 0,
      aId,
      ao,
      bId,
      bo,
      aAt,
      bAt,
      cAt,
    ]);
    c.set(this.data.subarray(cAt, cAt + M * N), co);
    this.products++;
  }

  /** Keeps these arrays on the device until `unpin`: products reading them upload nothing. */
  pin(arrays: Iterable<Float32Array>): void {
    for (const w of arrays) {
      if (this.pinned.has(w)) continue;
      const id = this.nextId++;
      this.room(w.length).set(w);
      this.call(OP_UPLOAD, [id, w.length]);
      this.pinned.set(w, id);
    }
  }

  /** Forgets the pinned arrays (they may change now) and frees their device buffers. */
  unpin(): void {
    if (!this.pinned.size) return;
    this.pinned.clear();
    this.call(OP_FREE, [-1]);
  }
}

/**
 * The GPU worker's side: answers the client's requests with `kernels` until the page closes. `onData`
 * is where the worker passes the bigger data buffers the client sends (its message handler).
 */
export function serveWebGpu(
  buffers: BridgeBuffers,
  kernels: WebGpuKernels,
): { adoptData(data: SharedArrayBuffer): void } {
  const ctrl = new Int32Array(buffers.ctrl);
  const err = new Uint8Array(buffers.err);
  let data = new Float32Array(buffers.data);
  const waitAsync = (
    Atomics as unknown as {
      waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string };
    }
  ).waitAsync;
  const handle = async () => {
    const op = ctrl[OP];
    const arg = (i: number) => ctrl[ARGS + i];
    if (op === OP_GEMM) {
      const [layout, M, K, N, overwrite, aId, ao, bId, bo, aAt, bAt, cAt] = Array.from(
        { length: 12 },
        (_, i) => arg(i),
      );
      const a: Operand = aId ? { resident: aId, offset: ao } : { data: data.subarray(aAt, aAt + M * K) };
      const b: Operand = bId ? { resident: bId, offset: bo } : { data: data.subarray(bAt, bAt + K * N) };
      await kernels.gemm(LAYOUTS[layout], a, b, data.subarray(cAt, cAt + M * N), M, K, N, overwrite === 1);
    } else if (op === OP_UPLOAD) kernels.upload(arg(0), data.subarray(0, arg(1)));
    else if (op === OP_FREE) kernels.free(arg(0) < 0 ? undefined : arg(0));
    else throw new Error(`unknown request ${op}`);
  };
  void (async () => {
    let seen = Atomics.load(ctrl, REQ);
    for (;;) {
      const w = waitAsync(ctrl, REQ, seen);
      if (w.async) await w.value;
      const now = Atomics.load(ctrl, REQ);
      if (now === seen) continue;
      seen = now;
      try {
        await handle();
        ctrl[STATUS] = 0;
      } catch (e) {
        const bytes = new TextEncoder().encode(String((e as Error).message ?? e)).slice(0, ERR_BYTES);
        err.set(bytes);
        ctrl[ERR_LEN] = bytes.length;
        ctrl[STATUS] = 1;
      }
      Atomics.store(ctrl, DONE, seen);
      Atomics.notify(ctrl, DONE);
    }
  })();
  return {
    adoptData(next) {
      data = new Float32Array(next);
      Atomics.add(ctrl, RESIZED, 1);
      Atomics.notify(ctrl, RESIZED);
    },
  };
}
