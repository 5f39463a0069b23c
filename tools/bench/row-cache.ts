/**
 * BENCH_ROW_CACHE=DIR for the bench's tables: each row's result is kept in DIR as JSON, so a rerun (or
 * a run killed half way) does not measure it again, and a row another bench process has claimed there
 * (a `.claim` file) is waited for, not run twice: several processes can share one table's rows.
 * BENCH_ROW_ORDER=reverse runs the rows from the last, so a second process starts at the other end.
 * BENCH_ROW_FILTER=REGEX runs only the rows whose label matches; the others come from the cache when
 * it has them and are left out of the table when it does not (a partial table, to measure new rows).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * `run` for every row not in the cache, results in the rows' order. `table` names the table in the
 * cache files (`${table}-${label}.json`); without BENCH_ROW_CACHE every row runs.
 */
export async function cachedRows<R extends { label: string }, T>(
  table: string,
  rows: readonly R[],
  run: (row: R) => Promise<T>,
): Promise<T[]> {
  const dir = process.env.BENCH_ROW_CACHE;
  const fileOf = (row: R) => (dir ? join(dir, `${table}-${row.label.replace(/\W+/g, '_')}.json`) : '');
  const filter = process.env.BENCH_ROW_FILTER ? new RegExp(process.env.BENCH_ROW_FILTER) : null;
  const order = [...rows.keys()];
  if (process.env.BENCH_ROW_ORDER === 'reverse') order.reverse();
  const results = new Map<number, T>();
  const claimed: number[] = [];
  for (const i of order) {
    const file = fileOf(rows[i]);
    if (file && existsSync(file)) {
      results.set(i, JSON.parse(readFileSync(file, 'utf8')) as T);
      continue;
    }
    if (filter && !filter.test(rows[i].label)) continue;
    if (file && existsSync(file + '.claim')) {
      claimed.push(i);
      continue;
    }
    if (file) writeFileSync(file + '.claim', String(process.pid));
    const result = await run(rows[i]);
    if (file) writeFileSync(file, JSON.stringify(result));
    results.set(i, result);
  }
  for (const i of claimed) {
    const file = fileOf(rows[i]);
    while (!existsSync(file)) await new Promise((r) => setTimeout(r, 5000));
    results.set(i, JSON.parse(readFileSync(file, 'utf8')) as T);
  }
  return [...rows.keys()].filter((i) => results.has(i)).map((i) => results.get(i)!);
}
