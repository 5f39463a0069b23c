import { kmeans1d } from '../../src/methods/kmeans/kernel.ts';
function gauss(n: number, seed: number) {
  const v = new Float32Array(n);
  let s = seed;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  for (let i = 0; i < n; i++) v[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()) * 0.02;
  return v;
}
for (const n of [110592, 768 * 3072]) {
  const x = gauss(n, 3);
  const codes = new Uint8Array(n);
  for (const restarts of [1, 3]) {
    let best = 1e9;
    for (let r = 0; r < 5; r++) {
      const t = performance.now();
      kmeans1d(x, codes, { clusters: 16, keepZeros: true, restarts, seed: 1 });
      best = Math.min(best, performance.now() - t);
    }
    console.log(n, 'restarts', restarts, best.toFixed(2), 'ms', ((best * 1e6) / n).toFixed(1), 'ns/weight');
  }
}
