/**
 * BENCH_ROW_CACHE (tools/bench/row-cache.ts): rows in the cache are read back, rows whose cached
 * result no longer serves (e.g. measured before the bench computed KL) run again, and a row claimed by
 * a process that died is run here instead of waited for; a live claim is waited for.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cachedRows } from '../../tools/bench/row-cache.ts';

interface Result {
  label: string;
  value: number;
  versus?: { kl: number };
}

const ROWS = [{ label: 'int4 block 32' }, { label: 'prune 2:4' }];

describe('bench row cache', () => {
  let dir: string;
  const saved = { ...process.env };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'row-cache-'));
    process.env.BENCH_ROW_CACHE = dir;
    delete process.env.BENCH_ROW_FILTER;
    delete process.env.BENCH_ROW_ORDER;
  });
  afterEach(() => {
    process.env = { ...saved };
    rmSync(dir, { recursive: true, force: true });
  });

  const fileOf = (label: string) => join(dir, `t-${label.replace(/\W+/g, '_')}.json`);

  it('reads cached rows back and runs again those `reuse` rejects', async () => {
    let runs: string[] = [];
    const run = async (row: { label: string }): Promise<Result> => {
      runs.push(row.label);
      return { label: row.label, value: runs.length, versus: { kl: 0.5 } };
    };
    const first = await cachedRows('t', ROWS, run);
    expect(runs).toEqual(['int4 block 32', 'prune 2:4']);
    expect(existsSync(fileOf('prune 2:4'))).toBe(true);

    runs = [];
    expect(await cachedRows('t', ROWS, run)).toEqual(first);
    expect(runs).toEqual([]);

    // a row cached by an older bench, without its KL figures
    writeFileSync(fileOf('prune 2:4'), JSON.stringify({ label: 'prune 2:4', value: 7 }));
    const hasVersus = (r: Result) => r.versus !== undefined;
    const again = await cachedRows('t', ROWS, run, hasVersus);
    expect(runs).toEqual(['prune 2:4']);
    expect(again[0]).toEqual(first[0]);
    expect(again[1].versus).toEqual({ kl: 0.5 });
    expect(JSON.parse(readFileSync(fileOf('prune 2:4'), 'utf8')).versus).toEqual({ kl: 0.5 });

    // a stale row another process is meant to run (BENCH_ROW_FILTER) is still shown as it is
    writeFileSync(fileOf('prune 2:4'), JSON.stringify({ label: 'prune 2:4', value: 7 }));
    process.env.BENCH_ROW_FILTER = '^int4';
    runs = [];
    const partial = await cachedRows('t', ROWS, run, hasVersus);
    expect(runs).toEqual([]);
    expect(partial[1]).toEqual({ label: 'prune 2:4', value: 7 });
  });

  it('runs a row whose claim belongs to a dead process, waits for a live claim', async () => {
    // a pid that has exited
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {
      encoding: 'utf8',
    }).stdout;
    writeFileSync(fileOf('int4 block 32') + '.claim', dead);
    const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
    try {
      writeFileSync(fileOf('prune 2:4') + '.claim', String(live.pid));
      // the live claimant finishes its row a moment later
      setTimeout(
        () => writeFileSync(fileOf('prune 2:4'), JSON.stringify({ label: 'prune 2:4', value: 42 })),
        200,
      );
      const runs: string[] = [];
      const rows = await cachedRows('t', ROWS, async (row): Promise<Result> => {
        runs.push(row.label);
        return { label: row.label, value: 1 };
      });
      expect(runs).toEqual(['int4 block 32']);
      expect(rows).toEqual([
        { label: 'int4 block 32', value: 1 },
        { label: 'prune 2:4', value: 42 },
      ]);
      expect(readFileSync(fileOf('int4 block 32') + '.claim', 'utf8')).toBe(String(process.pid));
    } finally {
      live.kill();
    }
  }, 30_000);
});
