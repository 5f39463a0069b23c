/** The light SVG charts' geometry (src/app/components/chart-geometry.ts) against direct constructions. */
import { describe, expect, it } from 'vitest';
import {
  binAt,
  linePath,
  linearScale,
  stepAreaPath,
  valueAxis,
} from '../../src/app/components/chart-geometry.ts';

/** Points of an SVG path of M/L commands (and whether it closes), parsed back. */
function points(d: string): { cmd: string; x: number; y: number }[] {
  return [...d.matchAll(/([ML])(-?[\d.]+),(-?[\d.]+)/g)].map((m) => ({
    cmd: m[1],
    x: Number(m[2]),
    y: Number(m[3]),
  }));
}

describe('chart geometry', () => {
  it('linearScale maps the domain onto the range, both ways round', () => {
    const x = linearScale(-2, 6, 10, 410);
    expect(x(-2)).toBe(10);
    expect(x(6)).toBe(410);
    expect(x(2)).toBe(210);
    const y = linearScale(0, 100, 200, 0); // an SVG y axis: up is smaller
    expect(y(0)).toBe(200);
    expect(y(25)).toBe(150);
    expect(linearScale(3, 3, 0, 100)(3)).toBe(50); // a flat domain: the middle
  });

  it('stepAreaPath outlines each bin from its left to its right edge, closed on the baseline', () => {
    const edges = [-1, -0.5, 0, 0.5, 1];
    const counts = [3, 0, 7, 1];
    const x = linearScale(-1, 1, 0, 400);
    const y = linearScale(0, 10, 100, 0);
    const got = stepAreaPath(edges, counts, x, y);
    expect(got.endsWith('Z')).toBe(true);
    // the direct construction: baseline at the first edge, two corners per bin, back to the baseline
    const want = [{ cmd: 'M', x: 0, y: 100 }];
    for (let i = 0; i < counts.length; i++)
      want.push(
        { cmd: 'L', x: x(edges[i]), y: y(counts[i]) },
        { cmd: 'L', x: x(edges[i + 1]), y: y(counts[i]) },
      );
    want.push({ cmd: 'L', x: 400, y: 100 });
    expect(points(got)).toEqual(want);
    expect(stepAreaPath([0], [], x, y)).toBe('');
    // a non-finite count draws as an empty bin, never NaN in the path
    expect(stepAreaPath([0, 1], [NaN], x, y)).not.toContain('NaN');
  });

  it('linePath joins finite points and breaks the line at a non-finite one', () => {
    const x = (i: number) => i * 10;
    const y = (v: number) => 100 - v;
    expect(points(linePath([1, 2, NaN, 4, Infinity, 6], x, y))).toEqual([
      { cmd: 'M', x: 0, y: 99 },
      { cmd: 'L', x: 10, y: 98 },
      { cmd: 'M', x: 30, y: 96 },
      { cmd: 'M', x: 50, y: 94 },
    ]);
    expect(linePath([], x, y)).toBe('');
  });

  it('valueAxis: round, evenly spaced ticks from zero that hold every finite value', () => {
    for (const values of [
      [0, 3.7, 12.2],
      [-4.1, 2, 0.3],
      [0.0012, 0.0047],
      [1500, 80, 2999],
      [-7, -2],
    ]) {
      const { domain, ticks } = valueAxis([values, [NaN, Infinity]]);
      expect(domain).toEqual([ticks[0], ticks[ticks.length - 1]]);
      expect(ticks[0]).toBeLessThanOrEqual(Math.min(0, ...values));
      expect(ticks[ticks.length - 1]).toBeGreaterThanOrEqual(Math.max(0, ...values));
      expect(ticks).toContain(0);
      const step = ticks[1] - ticks[0];
      for (let i = 1; i < ticks.length; i++) expect(ticks[i] - ticks[i - 1]).toBeCloseTo(step, 12);
      // a step of 1, 2 or 5 × 10^k
      const mantissa = step / 10 ** Math.floor(Math.log10(step));
      expect([1, 2, 5, 10].some((m) => Math.abs(mantissa - m) < 1e-9)).toBe(true);
    }
    expect(valueAxis([[12.2, 3.7]]).ticks).toEqual([0, 5, 10, 15]);
    expect(valueAxis([]).domain).toEqual([0, 1]);
    expect(valueAxis([[0, 0, NaN]]).domain).toEqual([0, 1]);
  });

  it('binAt finds the bin holding a value, as a linear scan does, clamped to the bins', () => {
    const edges = [-3, -1.5, -0.2, 0, 0.7, 2.5, 4];
    const scan = (v: number) => {
      let bin = 0;
      for (let i = 0; i < edges.length - 1; i++) if (edges[i] <= v) bin = i;
      return bin;
    };
    for (let v = -4; v <= 5; v += 0.05) expect(binAt(edges, v), String(v)).toBe(scan(v));
    for (const e of edges.slice(0, -1)) expect(binAt(edges, e)).toBe(edges.indexOf(e));
    expect(binAt([1], 1)).toBe(-1);
  });
});
