/**
 * tensorStats on float32 tensors (chunked two-sweep moments in WebAssembly SIMD, chunks merged
 * pairwise) against a direct float64 reference: min, max and zeros exactly, mean and std to float64
 * rounding, on sizes that leave every SIMD tail and span several staging chunks, and on values far
 * from zero with a small spread, where a naive Σx² − n·mean² would cancel.
 */
import { describe, expect, it } from 'vitest';
import { tensorStats } from '../../src/core/stats.ts';
import { seededFloats } from '../helpers/models.ts';

/** Two passes in float64 over the whole tensor: the textbook definition. */
function reference(x: Float32Array) {
  let min = Infinity;
  let max = -Infinity;
  let zeros = 0;
  let sum = 0;
  for (const v of x) {
    if (v < min) min = v;
    if (v > max) max = v;
    if (v === 0) zeros++;
    sum += v;
  }
  const mean = sum / x.length;
  let m2 = 0;
  for (const v of x) m2 += (v - mean) * (v - mean);
  return { min, max, mean, std: Math.sqrt(m2 / x.length), zeros: zeros / x.length };
}

function expectClose(got: number, want: number, rel = 1e-12): void {
  expect(Math.abs(got - want)).toBeLessThanOrEqual(rel * Math.max(1, Math.abs(want)));
}

describe('tensor statistics of float32 weights', () => {
  it('equal the float64 two-pass definition, across SIMD tails and staging chunks', () => {
    for (const n of [1, 2, 3, 5, 8, 13, 4096, 65_535, 65_537, 200_003]) {
      const x = seededFloats(n, n, 0.1);
      for (let i = 0; i < n; i += 7) x[i] = 0;
      const got = tensorStats(x);
      const want = reference(x);
      expect([got.min, got.max, got.zeros]).toEqual([want.min, want.max, want.zeros]);
      expectClose(got.mean, want.mean);
      expectClose(got.std, want.std, 1e-9);
    }
  });

  it('stay exact far from zero with a small spread (1000 ± 0.001), where Σx² − n·mean² cancels', () => {
    const x = seededFloats(150_000, 3, 0.001).map((v) => 1000 + v);
    const got = tensorStats(x);
    const want = reference(x);
    expectClose(got.mean, want.mean);
    expectClose(got.std, want.std, 1e-9);
    expect(got.std).toBeGreaterThan(1e-4);
  });

  it('leave NaN out of min and max (the mean and std become NaN), as the one-pass loop did', () => {
    const x = seededFloats(1000, 5);
    x[500] = NaN;
    const got = tensorStats(x);
    const finite = x.filter((v) => !Number.isNaN(v));
    expect([got.min, got.max]).toEqual([Math.min(...finite), Math.max(...finite)]);
    expect(got.mean).toBeNaN();
    expect(got.std).toBeNaN();
    expect(tensorStats(new Float32Array(0))).toEqual({ min: 0, max: 0, mean: 0, std: 0, zeros: 0 });
  });
});
