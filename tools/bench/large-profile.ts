/**
 * Where the page's preview of a big model spends its CPU: opens a generated model (tools/bench/large-model.ts,
 * `LARGE_LAYERS` blocks, 3 by default: 1.13 GB) in Chromium, waits for the first preview, and prints the
 * CPU seconds of every Chromium thread over the open and the preview (from /proc/PID/task/TID/stat: the
 * work, whatever the machine's load), grouped by process kind and thread name. Not part of `npm test`
 * or `npm run bench`: a tool for iterating on issue 14.
 *
 *   LARGE_LAYERS=3 node --import tsx tools/bench/large-profile.ts [model dir, kept between runs]
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LARGE_SPEC, writeLargeModel } from './large-model.ts';
import { browserPid, descendants, kindOf, rssOf } from './chromium-proc.ts';

const rss = (pids: number[]): number => pids.reduce((n, p) => n + rssOf(p), 0);

const ROOT = join(import.meta.dirname, '../..');
const spec = { ...LARGE_SPEC, layers: Number(process.env.LARGE_LAYERS) || 3 };
const modelDir = process.argv[2] ?? join(tmpdir(), `cs-large-profile-${spec.layers}`);

/** CPU seconds by "kind/thread name/tid" of every thread of `pids`. */
function threadCpu(pids: number[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of pids) {
    const kind = kindOf(pid);
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const name = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'));
        const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
        out.set(`${kind}/${name}/${tid}`, (Number(f[11]) + Number(f[12])) / 100);
      } catch {
        // exited
      }
    }
  }
  return out;
}

/** CPU seconds of whole processes (threads that ended included, as /proc/PID/stat counts them), by pid. */
function processCpu(pids: number[], into: Map<number, number>): Map<number, number> {
  for (const pid of pids) {
    try {
      const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      into.set(pid, Math.max(into.get(pid) ?? 0, (Number(f[11]) + Number(f[12])) / 100));
    } catch {
      // exited: its last reading stays
    }
  }
  return into;
}
const total = (m: Map<number, number>) => [...m.values()].reduce((a, b) => a + b, 0);

function diff(after: Map<string, number>, before: Map<string, number>): [string, number][] {
  return [...after]
    .map(([k, v]) => [k, v - (before.get(k) ?? 0)] as [string, number])
    .filter(([, v]) => v >= 0.05)
    .sort((a, b) => b[1] - a[1]);
}

async function main(): Promise<void> {
  if (!existsSync(join(modelDir, 'model.onnx_data'))) {
    mkdirSync(modelDir, { recursive: true });
    const { bytes } = writeLargeModel(modelDir, spec);
    console.log(`wrote ${(bytes / 1e9).toFixed(2)} GB to ${modelDir}`);
  }
  const { createServer } = await import('vite');
  const { chromium } = await import('playwright-core');
  const server = await createServer({
    root: ROOT,
    configFile: join(ROOT, 'vite.config.ts'),
    server: { port: 0, host: '127.0.0.1' },
    logLevel: 'error',
  });
  await server.listen();
  const address = server.httpServer!.address();
  const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/?demo=0`;
  const profile = mkdtempSync(join(tmpdir(), 'cs-large-profile-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (m) => {
      if (m.text().startsWith('[profile]')) console.log(m.text());
    });
    await page.goto(url);
    await page.waitForSelector('[data-testid=dropzone]');
    const pid = browserPid(profile);
    let peak = 0;
    let peakAt = '';
    let t0 = performance.now();
    const timeline: string[] = [];
    let tick = 0;
    const sampler = setInterval(
      () => {
        const ps = descendants(pid);
        const now = rss(ps);
        if (now > peak) {
          peak = now;
          peakAt = `${((performance.now() - t0) / 1000).toFixed(2)} s: ${ps.map((p) => `${kindOf(p)} ${(rss([p]) / 1e9).toFixed(2)}`).join(', ')}`;
        }
        if (process.env.PROFILE_TIMELINE === 'all' || (tick++ % 5 === 0 && process.env.PROFILE_TIMELINE))
          timeline.push(
            `${((performance.now() - t0) / 1000).toFixed(2)}:${(now / 1e9).toFixed(2)}(${ps
              .filter((p) => kindOf(p) === 'renderer')
              .map((p) => (rss([p]) / 1e9).toFixed(2))
              .join('+')})`,
          );
      },
      Number(process.env.PROFILE_SAMPLE_MS) || 200,
    );
    t0 = performance.now();
    const c0 = threadCpu(descendants(pid));
    const seen = new Map<number, number>();
    const p0 = total(processCpu(descendants(pid), seen));
    await page.setInputFiles('[data-testid=file-input]', [
      join(modelDir, 'model.onnx'),
      join(modelDir, 'model.onnx_data'),
    ]);
    await page.waitForFunction(
      () => document.querySelector('[data-testid=summary] h2')?.textContent === 'model.onnx',
      undefined,
      { timeout: 600_000, polling: 200 },
    );
    const t1 = performance.now();
    const c1 = threadCpu(descendants(pid));
    const p1 = total(processCpu(descendants(pid), seen));
    // PROFILE_MAIN=1: the page's main thread sampled by V8's profiler over the preview
    const cdp = process.env.PROFILE_MAIN ? await context.newCDPSession(page) : undefined;
    if (cdp) {
      await cdp.send('Profiler.enable');
      await cdp.send('Profiler.setSamplingInterval', { interval: 1000 });
      await cdp.send('Profiler.start');
    }
    await page.waitForSelector('[data-testid=preview][aria-busy=false] [data-testid=preview-totals]', {
      timeout: 600_000,
    });
    const t2 = performance.now();
    const c2 = threadCpu(descendants(pid));
    const p2 = total(processCpu(descendants(pid), seen));
    clearInterval(sampler);
    const sum = (d: [string, number][]) => d.reduce((s, [, v]) => s + v, 0);
    if (cdp) {
      const { profile: prof } = await cdp.send('Profiler.stop');
      const dt = new Map<number, number>();
      prof.samples?.forEach((id, i) => dt.set(id, (dt.get(id) ?? 0) + (prof.timeDeltas?.[i] ?? 0)));
      const self = new Map<string, number>();
      for (const n of prof.nodes) {
        const f = n.callFrame;
        const key = `${f.functionName || '(anon)'} ${f.url.split('/').pop()}:${f.lineNumber}`;
        self.set(key, (self.get(key) ?? 0) + (dt.get(n.id) ?? 0) / 1e6);
      }
      // each sample's time also to the deepest frame of the studio's own code on its stack
      const parent = new Map<number, number>();
      for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
      const byId = new Map(prof.nodes.map((n) => [n.id, n]));
      const ours = new Map<string, number>();
      for (const [id, t] of dt) {
        let at: number | undefined = id;
        let key = '(not ours)';
        while (at !== undefined) {
          const f = byId.get(at)!.callFrame;
          if (/\/src\/|\/workers\//.test(f.url)) {
            key = `${f.functionName || '(anon)'} ${f.url.split('/').pop()}:${f.lineNumber}`;
            break;
          }
          at = parent.get(at);
        }
        ours.set(key, (ours.get(key) ?? 0) + t / 1e6);
      }
      console.log('main thread, by the deepest frame of our code, seconds:');
      for (const [k, v] of [...ours].sort((a, b) => b[1] - a[1]).slice(0, 15))
        console.log(`  ${v.toFixed(3)}  ${k}`);
      console.log('main thread, self seconds:');
      for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25))
        console.log(`  ${v.toFixed(3)}  ${k}`);
    }
    const open = diff(c1, c0);
    const preview = diff(c2, c1);
    console.log(
      `open: ${((t1 - t0) / 1000).toFixed(1)} s wall, ${(p1 - p0).toFixed(2)} CPU s (threads alive at the end: ${sum(open).toFixed(2)})`,
    );
    for (const [k, v] of open.slice(0, 8)) console.log(`  ${v.toFixed(2)}  ${k}`);
    console.log(
      `preview: ${((t2 - t1) / 1000).toFixed(1)} s wall, ${(p2 - p1).toFixed(2)} CPU s (threads alive at the end: ${sum(preview).toFixed(2)})`,
    );
    for (const [k, v] of preview.slice(0, 12)) console.log(`  ${v.toFixed(2)}  ${k}`);
    console.log(`peak resident ${(peak / 1e9).toFixed(2)} GB at ${peakAt}`);
    if (timeline.length) console.log(`resident each second, GB (renderers): ${timeline.join(' ')}`);
    const totals = await page.locator('[data-testid=preview-totals]').textContent();
    console.log(`totals: ${totals}`);
    // PROFILE_CHECK=1: every row's min/max/mean/std as the table shows them, against the core's
    // statistics of the tensor read here (those of the weights the preview read came from its reads)
    if (process.env.PROFILE_CHECK) {
      const { parseModel, readTensor } = await import('../../src/core/onnx/model.ts');
      const { fileSource } = await import('../../src/cli/files.ts');
      const { tensorStats } = await import('../../src/core/stats.ts');
      const { formatNumber } = await import('../../src/app/components/format.ts');
      const model = parseModel(fileSource(join(modelDir, 'model.onnx')), (location: string) =>
        fileSource(join(modelDir, location)),
      );
      const shown = async () =>
        page
          .locator('[data-testid=tensor-table] tbody tr')
          .evaluateAll((trs) =>
            trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')),
          );
      let rows = await shown();
      for (let i = 0; i < 600 && rows.some((r) => r[7] === '—'); i++) {
        await new Promise((r) => setTimeout(r, 100));
        rows = await shown();
      }
      let bad = 0;
      for (const r of rows) {
        const t = model.graph.initializer.find((x) => x.name === r[0])!;
        const st = tensorStats(readTensor(model, t));
        const want = [st.min, st.max, st.mean, st.std].map(formatNumber);
        if (want.join('|') !== r.slice(4, 8).join('|')) {
          bad++;
          console.log(`row ${r[0]}: table ${r.slice(4, 8).join(' ')}, core ${want.join(' ')}`);
        }
      }
      console.log(`check: ${rows.length - bad} of ${rows.length} rows as the core computes them`);
    }
  } finally {
    await context.close();
    await server.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

await main();
