/**
 * The seam the WebGPU backend plugs into (kernels.ts `GemmDevice`), checked in Node, where WebGPU is
 * out of reach: a device made of the JavaScript reference loops passes the device check the Chromium
 * test runs on WebGPU (device-check.ts), a device that reads NT's b untransposed fails it, and the
 * demo model's distillation loss and gradients are the same whether the products go to a device or
 * to the wasm kernel (the layouts and argument orders kernels.ts hands a device are right). The WGSL
 * shaders themselves are checked in tests/e2e/train-webgpu.test.ts.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { TrainGraph } from '../../src/core/train/graph.ts';
import { batchLoss, distill, trainableWeights } from '../../src/core/train/distill.ts';
import { checkDevice } from '../../src/core/train/device-check.ts';
import {
  matmulAccJs,
  matmulNTAccJs,
  matmulTNAccJs,
  useGemmDevice,
  type GemmDevice,
  type GemmLayout,
} from '../../src/core/train/kernels.ts';
import { DEMO_MODEL } from '../helpers/fixtures.ts';

/** The products as the JavaScript loops compute them, with gemmWasm's arguments ('TN': a is [K, M]). */
class LoopDevice implements GemmDevice {
  readonly name = 'JavaScript loops';
  calls = 0;
  pinned = new Set<Float32Array>();
  pins = 0;
  constructor(private readonly ntAsNn = false) {}
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
  ): void {
    this.calls++;
    if (overwrite) c.fill(0, co, co + M * N);
    if (layout === 'NN' || (layout === 'NT' && this.ntAsNn)) matmulAccJs(a, ao, b, bo, c, co, M, K, N);
    else if (layout === 'NT') matmulNTAccJs(a, ao, b, bo, c, co, M, K, N);
    // c[M, N] += a[K, M]ᵀ · b[K, N]: the loop's own names are (rows summed, columns of a, N)
    else matmulTNAccJs(a, ao, b, bo, c, co, K, M, N);
  }
  pin(arrays: Iterable<Float32Array>): void {
    this.pins++;
    for (const w of arrays) this.pinned.add(w);
  }
  unpin(): void {
    this.pinned.clear();
  }
}

afterEach(() => useGemmDevice(null));

describe('the GEMM device seam', () => {
  it('the device check passes a correct device and catches a wrong layout', () => {
    const good = checkDevice(new LoopDevice());
    expect(good).toHaveLength(15);
    for (const c of good) {
      expect(c.maxAbs, c.op).toBeGreaterThan(0.1);
      expect(c.maxAbsDiff, c.op).toBeLessThan(1e-4);
    }
    const bad = checkDevice(new LoopDevice(true));
    const failing = bad.filter((c) => c.maxAbsDiff > 1e-2).map((c) => c.op);
    // NT is the forward of nothing here but dA of every MatMul: those fail, the others do not
    expect(failing).toEqual(
      expect.arrayContaining(['gemm NT', 'gemm NT accumulate', 'gemm NT pinned', 'MatMul weight dA']),
    );
    expect(failing.every((op) => /NT|dA/.test(op))).toBe(true);
  });

  it('the demo model trains the same with its products on a device', async () => {
    const bytes = new Uint8Array(readFileSync(DEMO_MODEL));
    const model = parseModel(bytesSource('model.onnx', bytes));
    const rows = [
      [5, 17, 300, 41, 9, 1200, 77, 8, 64, 2000, 3, 11, 250, 90, 14, 6],
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
    ];
    const run = () => {
      const graph = new TrainGraph(model, trainableWeights(model));
      return batchLoss(graph, rows, null, { temperature: 2, alpha: 0.5, withGrad: true });
    };
    const wasm = run();
    const device = new LoopDevice();
    useGemmDevice(device);
    const onDevice = run();
    expect(device.calls).toBeGreaterThan(20);
    expect(Math.abs(onDevice.loss - wasm.loss)).toBeLessThan(1e-5);
    let worst = 0;
    for (const [name, g] of wasm.grads!) {
      const h = onDevice.grads!.get(name)!;
      for (let i = 0; i < g.length; i++) worst = Math.max(worst, Math.abs(g[i] - h[i]));
    }
    expect(worst).toBeLessThan(1e-5);

    // distil pins the weights for each step and lets go of them after it
    const steps = await distill(model, null, [rows.flat()], { steps: 2, batch: 1, seq: 16, lr: 1e-3 });
    expect(steps.history).toHaveLength(2);
    expect(device.pins).toBe(2);
    expect(device.pinned.size).toBe(0);
  });
});
