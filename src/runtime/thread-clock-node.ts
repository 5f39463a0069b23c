/**
 * This thread's CPU time in Node (worker_threads): Linux's /proc/thread-self/schedstat gives the
 * nanoseconds the calling thread ran, not counting time spent waiting for a core. The kernel brings a
 * running thread's count up to date at scheduler ticks and switches, so a reading may lag by a tick (a
 * few ms): fine for tasks of tens of ms and more. Node 20 has no per-thread CPU time of its own
 * (process.cpuUsage counts every thread), so elsewhere it falls back to wall time.
 */
import { readFileSync } from 'node:fs';
import { wallSeconds } from '../core/pool/worker-pool.ts';

function schedstatSeconds(): number {
  const text = readFileSync('/proc/thread-self/schedstat', 'latin1');
  return Number(text.slice(0, text.indexOf(' '))) / 1e9;
}

/** Seconds of this thread's CPU time (Linux), or of wall time where that cannot be read. */
export function threadClock(): () => number {
  try {
    if (Number.isFinite(schedstatSeconds())) return schedstatSeconds;
  } catch {
    // not Linux, or /proc not mounted
  }
  return wallSeconds;
}
