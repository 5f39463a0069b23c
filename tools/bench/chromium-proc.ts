/**
 * Chromium's processes seen from outside, through /proc: the bench's large-model run and its profile
 * measure the browser's CPU and memory this way (a page cannot measure its own browser).
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Every process below `root` (the browser and its renderer, GPU and utility processes). */
export function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(entry), ppid);
    } catch {
      // exited meanwhile
    }
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [pid, pp] of parent) if (pp === out[i]) out.push(pid);
  return out;
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields 14 and 15 of /proc/PID/stat (utime, stime), in clock ticks (100 a second on Linux)
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

/** A Chromium process' kind: browser, renderer (the page and its workers), gpu-process, utility (storage, network). */
export function kindOf(pid: number): string {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const type = /--type=([a-z-]+)/.exec(cmd)?.[1];
    if (!type) return 'browser';
    const service = /--utility-sub-type=([\w.]+)/.exec(cmd)?.[1];
    return service ? `utility ${service.split('.').slice(-2, -1)[0] ?? service}` : type;
  } catch {
    return 'gone';
  }
}

export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The browser process of a profile: the process whose command line names that profile. */
export function browserPid(profile: string): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmd.includes(`--user-data-dir=${profile}`) && !cmd.includes('--type=')) return Number(entry);
    } catch {
      // exited meanwhile
    }
  }
  throw new Error(`no browser process for ${profile}`);
}
