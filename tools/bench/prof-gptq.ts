import { layerHessian, upperCholeskyOfInverse } from '../../src/core/calibrate/linalg.ts';
import { gptqInt4 } from '../../src/methods/gptq/kernel.ts';
const k = Number(process.argv[2] ?? 768),
  n = Number(process.argv[3] ?? 768);
let s = 1;
const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
const rows = 256;
const x = new Float64Array(rows * k).map(() => u() - 0.5);
const xtx = new Float64Array(k * k);
for (let r = 0; r < rows; r++)
  for (let i = 0; i < k; i++) {
    const a = x[r * k + i];
    for (let j = 0; j < k; j++) xtx[i * k + j] += a * x[r * k + j];
  }
for (let i = 0; i < k; i++) xtx[i * k + i] += 1;
const stats = { xtx, rows, k };
let t = performance.now();
const { h } = layerHessian(stats, 0.01);
console.log('hessian', (performance.now() - t).toFixed(0));
t = performance.now();
upperCholeskyOfInverse(h, k);
console.log('chol+inv', (performance.now() - t).toFixed(0));
t = performance.now();
const w = new Float32Array(k * n).map(() => u() - 0.5);
gptqInt4({ name: 'w', values: w, shape: [k, n], channelAxis: 1 }, stats, {
  blockSize: 32,
  symmetric: true,
  dampening: 0.01,
  actOrder: true,
});
console.log('gptq total', (performance.now() - t).toFixed(0));
