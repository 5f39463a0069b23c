/**
 * A device's products against the wasm kernels on small shapes: each layout (NN, NT, TN), written and
 * accumulated, with a pinned (resident) operand, and the MatMul op's forward and backward with batch
 * dimensions (attention's per-head products, at offsets). The Chromium test runs it in the training
 * worker on WebGPU; the numbers are max |device − wasm| and the largest |value| for scale.
 */
import { seededUniform } from '../calibrate/generate.ts';
import { gemmWasm, useGemmDevice, gemmDevice, type GemmDevice, type GemmLayout } from './kernels.ts';
import { opFor, type NodeContext } from './ops.ts';
import { sizeOf, type Value } from './tensor.ts';

export interface DeviceCheck {
  op: string;
  maxAbsDiff: number;
  maxAbs: number;
}

function randoms(n: number, uniform: () => number): Float32Array {
  return Float32Array.from({ length: n }, () => uniform() * 2 - 1);
}

function compare(op: string, got: Float32Array, want: Float32Array): DeviceCheck {
  let maxAbsDiff = got.length === want.length ? 0 : Infinity;
  let maxAbs = 0;
  for (let i = 0; i < want.length; i++) {
    maxAbsDiff = Math.max(maxAbsDiff, Math.abs(got[i] - want[i]));
    maxAbs = Math.max(maxAbs, Math.abs(want[i]));
  }
  return { op, maxAbsDiff, maxAbs };
}

/** Runs the MatMul op (forward, then backward of a seed gradient) on whatever kernels.ts uses now. */
function matmulOp(a: Value, b: Value, gy: Float32Array): Float32Array[] {
  const node = { op_type: 'MatMul', input: ['a', 'b'], output: ['y'] };
  const op = opFor(node)!;
  const ctx: NodeContext = { node, where: 'check', opset: 17, readTensor: () => a };
  const [y] = op.forward([a, b], ctx);
  const [ga, gb] = op.backward!([a, b], [y], [gy], ctx, [true, true]);
  return [Float32Array.from(y.data as Float32Array), Float32Array.from(ga!), Float32Array.from(gb!)];
}

export function checkDevice(device: GemmDevice, seed = 1): DeviceCheck[] {
  const uniform = seededUniform(seed);
  const out: DeviceCheck[] = [];
  // odd sizes: tiles and padding both get exercised
  const [M, K, N] = [70, 53, 45];
  const shapes: Record<GemmLayout, [number, number]> = {
    NN: [M * K, K * N],
    NT: [M * K, N * K],
    TN: [K * M, K * N],
  };
  for (const layout of ['NN', 'NT', 'TN'] as const) {
    const [na, nb] = shapes[layout];
    const a = randoms(na + 3, uniform);
    const b = randoms(nb + 5, uniform);
    for (const overwrite of [true, false]) {
      const c0 = randoms(M * N + 7, uniform);
      const want = Float32Array.from(c0);
      const got = Float32Array.from(c0);
      // at offsets 3, 5 and 7, as batched products read their blocks
      gemmWasm(layout, a, 3, b, 5, want, 7, M, K, N, overwrite);
      device.gemm(layout, a, 3, b, 5, got, 7, M, K, N, overwrite);
      out.push(compare(`gemm ${layout}${overwrite ? '' : ' accumulate'}`, got, want));
    }
    // b resident (a pinned weight), read at its offset
    const want = new Float32Array(M * N);
    const got = new Float32Array(M * N);
    gemmWasm(layout, a, 3, b, 5, want, 0, M, K, N, true);
    device.pin([b]);
    try {
      device.gemm(layout, a, 3, b, 5, got, 0, M, K, N, true);
    } finally {
      device.unpin();
    }
    out.push(compare(`gemm ${layout} pinned`, got, want));
  }
  // the MatMul op: a weight product [2, 24, 96] · [96, 128] and per-head products [2, 3, 40, 48] · [2, 3, 48, 40]
  const cases: [string, number[], number[]][] = [
    ['MatMul weight', [2, 24, 96], [96, 128]],
    ['MatMul batched', [2, 3, 40, 48], [2, 3, 48, 40]],
  ];
  const before = gemmDevice();
  for (const [name, as, bs] of cases) {
    const a: Value = { dtype: 'float32', shape: as, data: randoms(sizeOf(as), uniform) };
    const b: Value = { dtype: 'float32', shape: bs, data: randoms(sizeOf(bs), uniform) };
    const gy = randoms(sizeOf([...as.slice(0, -1), bs[bs.length - 1]]), uniform);
    let want: Float32Array[];
    let got: Float32Array[];
    try {
      useGemmDevice(null);
      want = matmulOp(a, b, gy);
      useGemmDevice(device);
      got = matmulOp(a, b, gy);
    } finally {
      useGemmDevice(before);
    }
    out.push(compare(`${name} forward`, got[0], want[0]));
    out.push(compare(`${name} dA`, got[1], want[1]));
    out.push(compare(`${name} dB`, got[2], want[2]));
  }
  return out;
}
