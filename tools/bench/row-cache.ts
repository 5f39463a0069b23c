/**
 * BENCH_ROW_CACHE=DIR for the bench's tables: each row's result is kept in DIR as JSON, so a rerun (or
 * a run killed half way) does not measure it again, and a row another bench process has claimed there
 * (a `.claim` file) is waited for, not run twice: several processes can share one table's rows.
 * BENCH_ROW_ORDER=reverse runs the rows from the last, so a second process starts at the other end.
 * BENCH_ROW_FILTER=REGEX runs only the rows whose label matches; the others come from the cache when
 * it has them and are left out of the table when it does not (a partial table, to measure new rows).
 * A claim whose process is gone (killed half way) is taken over, not waited for.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Whether another process that still runs wrote `claim` (its pid): this one's own claims are of finished runs. */
function claimAlive(claim: string): boolean {
  const pid = Number(readFileSync(claim, 'utf8'));
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it runs, as another user
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * `run` for every row not in the cache, results in the rows' order. `table` names the table in the
 * cache files (`${table}-${label}.json`); without BENCH_ROW_CACHE every row runs. `reuse`: whether a
 * cached result still serves (e.g. it has the figures a newer bench computes); a row whose cached
 * result does not is run again and its file overwritten.
 */
export async function cachedRows<R extends { label: string }, T>(
  table: string,
  rows: readonly R[],
  run: (row: R) => Promise<T>,
  reuse: (cached: T) => boolean = () => true,
): Promise<T[]> {
  const dir = process.env.BENCH_ROW_CACHE;
  const fileOf = (row: R) => (dir ? join(dir, `${table}-${row.label.replace(/\W+/g, '_')}.json`) : '');
  const filter = process.env.BENCH_ROW_FILTER ? new RegExp(process.env.BENCH_ROW_FILTER) : null;
  const order = [...rows.keys()];
  if (process.env.BENCH_ROW_ORDER === 'reverse') order.reverse();
  const results = new Map<number, T>();
  const read = (file: string) =>
    file && existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as T) : undefined;
  const runHere = async (i: number, file: string) => {
    if (file) writeFileSync(file + '.claim', String(process.pid));
    const result = await run(rows[i]);
    if (file) writeFileSync(file, JSON.stringify(result));
    results.set(i, result);
  };
  const claimed: number[] = [];
  for (const i of order) {
    const file = fileOf(rows[i]);
    const cached = read(file);
    if (cached !== undefined && reuse(cached)) {
      results.set(i, cached);
      continue;
    }
    if (filter && !filter.test(rows[i].label)) {
      // a stale row is still shown when this process does not run it
      if (cached !== undefined) results.set(i, cached);
      continue;
    }
    // a claim of a live process: that process runs the row (a stale row's claim is its finished run's)
    if (file && existsSync(file + '.claim') && claimAlive(file + '.claim')) {
      claimed.push(i);
      continue;
    }
    await runHere(i, file);
  }
  for (const i of claimed) {
    const file = fileOf(rows[i]);
    for (;;) {
      const done = read(file);
      if (done !== undefined && reuse(done)) {
        results.set(i, done);
        break;
      }
      // its process died without a result: run the row here
      if (!existsSync(file + '.claim') || !claimAlive(file + '.claim')) {
        await runHere(i, file);
        break;
      }
      await new Promise((r) => setTimeout(r, 5000));
    }
  }
  return [...rows.keys()].filter((i) => results.has(i)).map((i) => results.get(i)!);
}
