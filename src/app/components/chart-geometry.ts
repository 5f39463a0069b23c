/**
 * Geometry of the light SVG charts (svg-chart.tsx): axis domains, linear scales and path strings.
 * Pure functions over plain arrays, so a redraw costs O(points) string work and no DOM measurement.
 */
import { niceTicks } from './format.ts';

/** A linear map from a value domain [d0, d1] to pixels [r0, r1] (a flat domain maps to the middle). */
export function linearScale(d0: number, d1: number, r0: number, r1: number): (x: number) => number {
  const span = d1 - d0;
  if (!(span > 0) || !Number.isFinite(span)) return () => (r0 + r1) / 2;
  const k = (r1 - r0) / span;
  return (x) => r0 + (x - d0) * k;
}

/**
 * A value axis over the data, zero included: round ticks (multiples of 1, 2 or 5 × 10^k) from the
 * last tick at or below min(0, lo) to the first at or above max(0, hi), and that domain. Non-finite
 * values are left out; no data (or only zeros) gives [0, 1].
 */
export function valueAxis(
  values: ArrayLike<number>[],
  target = 5,
): { domain: [number, number]; ticks: number[] } {
  let lo = 0;
  let hi = 0;
  for (const v of values)
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (!Number.isFinite(x)) continue;
      if (x < lo) lo = x;
      if (x > hi) hi = x;
    }
  if (!(hi > lo)) hi = lo + 1;
  const ticks = niceTicks(lo, hi, target);
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : hi - lo;
  if (!ticks.length || !(step > 0)) return { domain: [lo, hi], ticks: [lo, hi] };
  // the domain ends on round values that hold every point
  while (ticks[0] > lo) ticks.unshift(Number((ticks[0] - step).toPrecision(12)));
  while (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return { domain: [ticks[0], ticks[ticks.length - 1]], ticks };
}

const px = (x: number) => Math.round(x * 10) / 10;

/**
 * A histogram's outline as one closed SVG path: edges [n + 1], counts [n]; each bin a flat step
 * from its left edge to its right edge, closed along the baseline y(0).
 */
export function stepAreaPath(
  edges: ArrayLike<number>,
  counts: ArrayLike<number>,
  x: (v: number) => number,
  y: (v: number) => number,
): string {
  const n = Math.min(counts.length, edges.length - 1);
  if (n <= 0) return '';
  const base = px(y(0));
  const parts = [`M${px(x(edges[0]))},${base}`];
  for (let i = 0; i < n; i++) {
    const c = Number.isFinite(counts[i]) ? counts[i] : 0;
    const top = px(y(c));
    parts.push(`L${px(x(edges[i]))},${top}L${px(x(edges[i + 1]))},${top}`);
  }
  parts.push(`L${px(x(edges[n]))},${base}Z`);
  return parts.join('');
}

/** A polyline through (x(i), y(values[i])); a non-finite value breaks the line (a new `M` after it). */
export function linePath(
  values: ArrayLike<number>,
  x: (i: number) => number,
  y: (v: number) => number,
): string {
  let d = '';
  let pen = false;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) {
      pen = false;
      continue;
    }
    d += `${pen ? 'L' : 'M'}${px(x(i))},${px(y(v))}`;
    pen = true;
  }
  return d;
}

/** The index of the bin [edges[i], edges[i + 1]) holding v, clamped to the bins (edges ascending). */
export function binAt(edges: ArrayLike<number>, v: number): number {
  const n = edges.length - 1;
  if (n <= 0) return -1;
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (edges[mid] <= v) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
