import { quantizeInt4Blockwise } from '../../src/methods/int4/kernel.ts';
import { quantizeInt8 } from '../../src/methods/int8/kernel.ts';
const shapes: [number, number][] = [];
for (let l = 0; l < 6; l++) shapes.push([192, 576], [192, 192], [192, 768], [768, 192]);
const xs = shapes.map(([k, n]) => Float32Array.from({ length: k * n }, (_, i) => Math.sin(i * 1.37) * 0.02));
const total = xs.reduce((s, x) => s + x.length, 0);
for (const [name, f] of [
  ['int8', (x: Float32Array, k: number, n: number) => quantizeInt8(x, k, n, 1, true)],
  ['int4', (x: Float32Array, k: number, n: number) => quantizeInt4Blockwise(x, k, n, 1, 32, true)],
] as const) {
  let best = 1e9;
  for (let r = 0; r < 10; r++) {
    const t = performance.now();
    shapes.forEach(([k, n], i) => f(xs[i], k, n));
    best = Math.min(best, performance.now() - t);
  }
  console.log(name, best.toFixed(2), 'ms', ((total * 4) / 1e6 / (best / 1000)).toFixed(0), 'MB/s');
}
