/// <reference types="@webgpu/types" />
/**
 * The GPU worker: owns the WebGPU device the training engine's products run on, and answers the
 * training worker's requests through shared memory (src/core/train/webgpu-bridge.ts explains why a
 * worker of its own: the engine blocks while it waits, and WebGPU answers through promises).
 */
import { openWebGpu } from '../src/core/train/webgpu-kernels.ts';
import { serveWebGpu, type BridgeBuffers } from '../src/core/train/webgpu-bridge.ts';

export type GpuWorkerMessage =
  { kind: 'open'; buffers: BridgeBuffers } | { kind: 'data'; data: SharedArrayBuffer };

export type GpuWorkerReply =
  | { kind: 'opened'; ok: true; adapter: string; fallback: boolean }
  | { kind: 'opened'; ok: false; reason: string };

let server: ReturnType<typeof serveWebGpu> | undefined;

self.onmessage = async (e: MessageEvent<GpuWorkerMessage>) => {
  const m = e.data;
  if (m.kind === 'data') {
    server?.adoptData(m.data);
    return;
  }
  let reply: GpuWorkerReply;
  try {
    const opened = await openWebGpu((navigator as Navigator & { gpu?: GPU }).gpu, true);
    if ('reason' in opened) reply = { kind: 'opened', ok: false, reason: opened.reason };
    else {
      server = serveWebGpu(m.buffers, opened.kernels);
      reply = { kind: 'opened', ok: true, adapter: opened.adapter, fallback: opened.fallback };
    }
  } catch (err) {
    reply = { kind: 'opened', ok: false, reason: (err as Error).message ?? String(err) };
  }
  self.postMessage(reply);
};
