/**
 * `npm run fuzz [-- --seed N --count N --jobs N]`: thousands of mutants of the real models through
 * read → inspect → compress → export → write, each in a child process so a runaway allocation or a
 * hang costs one mutant, not the run. Prints the counts and every failing mutant with its seed;
 * `--replay SEED [--test]` runs one mutant again in this process and prints what each stage did.
 * Exits 1 when any mutant threw an untyped error, crashed its process, ran over 30 s, pushed memory
 * over 2 GB, or wrote a file outside its output folder.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { FIXTURE_DIRS, seedModels } from './models.ts';
import { mutantSeed } from './prng.ts';
import { LONG_PLAN, TEST_PLAN, type PlanOptions } from './plans.ts';
import {
  changedEntries,
  fingerprint,
  isUntyped,
  runSeed,
  type MutantPlan,
  type MutantRun,
} from './target.ts';

const SLOW_MS = 30_000;
const MEMORY_LIMIT = 2 * 1024 ** 3;
/** A mutant still running after this is killed (and counted as slow); a child over RSS_KILL is killed too. */
const KILL_AFTER_MS = 90_000;
const RSS_KILL = 4 * 1024 ** 3;

interface ChildRequest {
  index: number;
  seed: number;
}

interface ChildReply {
  index: number;
  run: MutantRun;
  /** Peak resident memory of the child during this mutant (VmHWM after a reset), in bytes. */
  peakRss: number;
}

/** Resets the kernel's peak-RSS mark for this process; false where /proc does not allow it. */
function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

function procStatusBytes(pid: number | 'self', field: 'VmHWM' | 'VmRSS'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The folder a child process runs its mutants in; the parent removes it when the child ends, however it ends. */
function childRunDir(pid: number | undefined): string {
  return join(tmpdir(), `compression-studio-fuzz-${pid ?? 'unknown'}`);
}

async function child(): Promise<void> {
  const models = seedModels();
  const plan: MutantPlan = { models, ...LONG_PLAN };
  const root = childRunDir(process.pid);
  process.on('message', async (msg: ChildRequest) => {
    const canReset = resetPeakRss();
    const run = await runSeed(root, msg.seed, plan, (model, mutations) => {
      const started: MutantStarted = { index: msg.index, model, mutations };
      process.send?.(started);
    });
    const peakRss = (canReset && procStatusBytes('self', 'VmHWM')) || process.memoryUsage().rss;
    const reply: ChildReply = { index: msg.index, run, peakRss };
    process.send?.(reply);
  });
  process.on('disconnect', () => {
    rmSync(root, { recursive: true, force: true });
    process.exit(0);
  });
}

/** Sent before a mutant's stages run, so a mutant that kills its process can still be described. */
interface MutantStarted {
  index: number;
  model: string;
  mutations: string[];
}

interface Failure {
  index: number;
  seed: number;
  why: string;
  run?: MutantRun;
  started?: MutantStarted;
}

async function parent(seed: number, count: number, jobs: number): Promise<number> {
  const fixturesBefore = FIXTURE_DIRS.map((d) => fingerprint(d));
  const self = fileURLToPath(import.meta.url);
  const started = performance.now();
  const stageCodes = new Map<string, number>();
  const failures: Failure[] = [];
  let ok = 0;
  let typed = 0;
  let untyped = 0;
  let crashed = 0;
  let slow = 0;
  let overMemory = 0;
  let outside = 0;
  let maxMs = 0;
  let maxRss = 0;
  let next = 0;
  let done = 0;

  const record = (index: number, reply: ChildReply) => {
    const { run, peakRss } = reply;
    maxMs = Math.max(maxMs, run.ms);
    maxRss = Math.max(maxRss, peakRss);
    for (const s of run.stages) stageCodes.set(s.result, (stageCodes.get(s.result) ?? 0) + 1);
    const why: string[] = [];
    if (isUntyped(run)) {
      untyped++;
      why.push('untyped error');
    } else if (run.stages.every((s) => s.result === 'ok')) ok++;
    else typed++;
    if (run.ms > SLOW_MS) {
      slow++;
      why.push(`ran ${Math.round(run.ms / 1000)} s`);
    }
    if (peakRss > MEMORY_LIMIT) {
      overMemory++;
      why.push(`peak memory ${(peakRss / 1024 ** 3).toFixed(1)} GB`);
    }
    if (run.outsideWrites.length) {
      outside++;
      why.push(`wrote outside the output folder: ${run.outsideWrites.join(', ')}`);
    }
    if (why.length) failures.push({ index, seed: run.seed, why: why.join('; '), run });
  };

  await new Promise<void>((resolveAll) => {
    const startChild = () => {
      const proc: ChildProcess = fork(self, ['--child'], {
        execArgv: ['--import', 'tsx', '--max-old-space-size=4096'],
        stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      });
      let current: ChildRequest | undefined;
      let timer: NodeJS.Timeout | undefined;
      let killedFor: string | undefined;
      const give = () => {
        if (next >= count) {
          current = undefined;
          proc.disconnect();
          return;
        }
        current = { index: next, seed: mutantSeed(seed, next) };
        next++;
        killedFor = undefined;
        timer = setTimeout(() => {
          killedFor = `still running after ${KILL_AFTER_MS / 1000} s`;
          slow++;
          proc.kill('SIGKILL');
        }, KILL_AFTER_MS);
        proc.send(current);
      };
      const watch = setInterval(() => {
        const rss = proc.pid ? procStatusBytes(proc.pid, 'VmRSS') : undefined;
        if (current && rss && rss > RSS_KILL) {
          killedFor = `resident memory reached ${(rss / 1024 ** 3).toFixed(1)} GB`;
          overMemory++;
          proc.kill('SIGKILL');
        }
      }, 200);
      let started: MutantStarted | undefined;
      proc.on('message', (reply: ChildReply | MutantStarted) => {
        if (!('run' in reply)) {
          started = reply;
          return;
        }
        clearTimeout(timer);
        record(reply.index, reply);
        done++;
        if (done % 500 === 0) console.error(`fuzz: ${done}/${count} mutants`);
        give();
      });
      proc.on('exit', (code, signal) => {
        clearTimeout(timer);
        clearInterval(watch);
        rmSync(childRunDir(proc.pid), { recursive: true, force: true });
        alive--;
        if (current) {
          // the mutant took its process down (or was killed for time or memory): record it, go on in a fresh one
          if (!killedFor) crashed++;
          done++;
          failures.push({
            index: current.index,
            seed: current.seed,
            why: killedFor ?? `the process died (exit ${code ?? ''}${signal ? ` signal ${signal}` : ''})`,
            started: started?.index === current.index ? started : undefined,
          });
          current = undefined;
          startChild();
          return;
        }
        if (alive === 0) resolveAll();
      });
      alive++;
      give();
    };
    let alive = 0;
    for (let j = 0; j < Math.min(jobs, count); j++) startChild();
    if (count === 0) resolveAll();
  });

  const fixturesChanged = FIXTURE_DIRS.flatMap((d, i) =>
    changedEntries(fixturesBefore[i], fingerprint(d)).map((p) => `${d}/${p}`),
  );
  for (const f of failures.sort((a, b) => a.index - b.index)) {
    console.log(`FAIL mutant ${f.index} (--replay ${f.seed}): ${f.why}`);
    const described = f.run ?? f.started;
    if (described) console.log(`  model ${described.model}; mutations: ${described.mutations.join(' ; ')}`);
    if (f.run) {
      for (const s of f.run.stages.filter((x) => x.result === 'untyped'))
        console.log(`  ${s.stage}: ${s.message}\n    at ${s.stack}`);
    }
  }
  const codes = [...stageCodes].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${n}`);
  console.log(
    [
      `seed ${seed}, ${count} mutants of ${seedModels().length} models in ${((performance.now() - started) / 1000).toFixed(0)} s`,
      `  all stages ok:          ${ok}`,
      `  typed errors only:      ${typed}`,
      `  stage results:          ${codes.join(', ')}`,
      `  untyped errors:         ${untyped}`,
      `  crashed/killed:         ${crashed}`,
      `  runs over 30 s:         ${slow} (slowest ${(maxMs / 1000).toFixed(1)} s)`,
      `  runs over 2 GB:         ${overMemory} (peak ${(maxRss / 1024 ** 2).toFixed(0)} MB)`,
      `  files written outside:  ${outside + fixturesChanged.length}${fixturesChanged.length ? ` (fixtures: ${fixturesChanged.join(', ')})` : ''}`,
    ].join('\n'),
  );
  return untyped + crashed + slow + overMemory + outside + fixturesChanged.length > 0 ? 1 : 0;
}

/** One mutant in this process, every stage printed: the reproducer for a FAIL line. */
async function replay(seed: number, plan: PlanOptions): Promise<number> {
  const root = join(tmpdir(), `compression-studio-fuzz-replay-${process.pid}`);
  const run = await runSeed(root, seed, { models: seedModels(), ...plan });
  console.log(`model ${run.model}, seed ${seed}, ${run.ms.toFixed(0)} ms`);
  for (const m of run.mutations) console.log(`  mutation: ${m}`);
  for (const s of run.stages)
    console.log(
      `  ${s.stage}: ${s.result}${s.message ? ` — ${s.message}` : ''}${s.stack ? `\n    at ${s.stack}` : ''}`,
    );
  if (run.outsideWrites.length)
    console.log(`  wrote outside the output folder: ${run.outsideWrites.join(', ')}`);
  console.log(`  files kept in ${root}`);
  return isUntyped(run) || run.outsideWrites.length ? 1 : 0;
}

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: '1' },
    count: { type: 'string', default: '5000' },
    jobs: { type: 'string', default: '2' },
    replay: { type: 'string' },
    /** With --replay: the seed came from the in-`npm test` run (tests/fuzz/fuzz.test.ts). */
    test: { type: 'boolean', default: false },
    child: { type: 'boolean', default: false },
  },
  strict: true,
});

function whole(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(`fuzz: --${name} must be a whole number, got '${text}'`);
    process.exit(2);
  }
  return n;
}

if (values.child) await child();
else if (values.replay !== undefined)
  process.exitCode = await replay(whole('replay', values.replay), values.test ? TEST_PLAN : LONG_PLAN);
else
  process.exitCode = await parent(
    whole('seed', values.seed),
    whole('count', values.count),
    Math.max(1, whole('jobs', values.jobs)),
  );
