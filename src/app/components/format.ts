export { formatBytes } from '../../core/errors.ts';

export function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}

export function formatNumber(x: number | undefined): string {
  if (x === undefined || x === null) return '—';
  if (x === 0) return '0';
  const a = Math.abs(x);
  return a >= 1e4 || a < 1e-3 ? x.toExponential(2) : x.toPrecision(4);
}

/**
 * Round tick values for a numeric axis over [min, max]: multiples of 1, 2 or 5 × 10^k, about
 * `target` of them, so an axis reads −1, −0.5, 0, 0.5 rather than the bins' raw −1.175, −0.7333.
 */
export function niceTicks(min: number, max: number, target = 6): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  if (max < min) [min, max] = [max, min];
  if (max === min) return [min];
  const rough = (max - min) / Math.max(1, target);
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = ([1, 2, 5, 10].find((m) => m * magnitude >= rough) ?? 10) * magnitude;
  // decimals of the step, so 0.1 + 0.2 prints as 0.3 and compares equal to it
  const decimals = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  const ticks: number[] = [];
  for (let i = Math.ceil(min / step); i * step <= max + step * 1e-9; i++)
    ticks.push(Number((i * step).toFixed(decimals)) || 0);
  return ticks;
}

/** A nice tick as written: 0.1 rather than 0.1000 (the value is already round). */
export function formatTick(x: number): string {
  return String(Number(x.toPrecision(6)));
}
