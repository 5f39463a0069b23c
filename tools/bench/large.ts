/**
 * The large-model section of `npm run bench` (`npm run bench -- --only large`; not part of `npm test`):
 * a GPT-style float32 model of 2.7 GB (tools/bench/large-model.ts: 11 blocks of width 2048, vocabulary
 * 32,000, 685 M parameters) written under the system's temp folder with external data, then
 *  - the CLI: `compress --recipe` (the page's default int4 block 32) streaming to disk, and the
 *    in-memory export it replaced (tools/bench/large-inmemory.ts), each timed and its peak memory read
 *    from outside (/usr/bin/time -v: the process' maximum resident set);
 *  - Chromium (playwright-core, the Vite dev server): the two files chosen in the page's file input,
 *    open (statistics of every tensor), preview (int4 of every linear weight), export (streamed to the
 *    origin-private file system and downloaded from there), with the resident memory of every browser
 *    process summed every 100 ms from /proc (outside the browser);
 *  - the three outputs compared byte for byte, and onnxruntime-node running the result.
 * Everything is deleted afterwards. The machine is shared: times move with its load.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { LARGE_SPEC as DEFAULT_SPEC, largeParams, writeLargeModel } from './large-model.ts';
import { log } from './log.ts';
import { browserPid, cpuOf, descendants, kindOf, rssOf } from './chromium-proc.ts';

const GB = 1e9;

/** The generated model: 11 blocks, or `LARGE_LAYERS` of them for a quicker run while iterating. */
const LARGE_SPEC = { ...DEFAULT_SPEC, layers: Number(process.env.LARGE_LAYERS) || DEFAULT_SPEC.layers };

interface Measured {
  seconds: number;
  peakBytes: number;
  /** CPU time (user + system) the run used, every thread and process: the work, whatever the load. */
  cpuSeconds: number;
}

/** Runs a command under /usr/bin/time -v: its wall time and maximum resident set size. */
function timed(cmd: string[], cwd: string): Promise<Measured & { stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-v', ...cmd], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t0 = performance.now();
    child.on('close', (code) => {
      const seconds = (performance.now() - t0) / 1000;
      const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
      const user = /User time \(seconds\): ([\d.]+)/.exec(stderr);
      const system = /System time \(seconds\): ([\d.]+)/.exec(stderr);
      if (code !== 0 || !rss)
        return reject(new Error(`${cmd.join(' ')} failed (${code}): ${stderr.slice(-2000)}`));
      const cpuSeconds = Number(user?.[1] ?? 0) + Number(system?.[1] ?? 0);
      resolve({ seconds, peakBytes: Number(rss[1]) * 1024, cpuSeconds, stdout });
    });
  });
}

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 16 * 2 ** 20 })) hash.update(chunk);
  return hash.digest('hex');
}

interface ChromiumRun {
  baselineBytes: number;
  open: Measured;
  preview: Measured;
  export: Measured;
  /** The export until the page says it is done (compressed into the origin-private file system). */
  exportWrite: Measured;
  peakBytes: number;
  /** At the moment of the peak: resident memory by process kind. */
  peakByKind: Map<string, number>;
  /** The page's kernel pool: hardwareConcurrency − 1 workers (at most 8), at least one. */
  poolWorkers: number;
  /** The page's kernel workers while exporting (one per core: no slider to keep smooth then). */
  exportWorkers: number;
  files: Map<string, string>;
  report: { recipe: unknown };
}

export async function chromiumRun(root: string, modelDir: string, outDir: string): Promise<ChromiumRun> {
  const { createServer } = await import('vite');
  const { chromium } = await import('playwright-core');
  const server = await createServer({
    root,
    configFile: join(root, 'vite.config.ts'),
    server: { port: 0, host: '127.0.0.1' },
    logLevel: 'error',
  });
  await server.listen();
  const address = server.httpServer!.address();
  const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/?demo=0`;
  const profile = mkdtempSync(join(tmpdir(), 'cs-large-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1400, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  let sampler: NodeJS.Timeout | undefined;
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(url);
    await page.waitForSelector('[data-testid=dropzone]');
    const pid = browserPid(profile);
    let current = 0;
    let windowPeak = 0;
    let overallPeak = 0;
    let peakByKind = new Map<string, number>();
    /** CPU seconds of processes seen so far (an exited one keeps its last reading). */
    const cpu = new Map<number, number>();
    const cpuTotal = () => {
      for (const p of descendants(pid)) cpu.set(p, Math.max(cpu.get(p) ?? 0, cpuOf(p)));
      return [...cpu.values()].reduce((a, b) => a + b, 0);
    };
    // the process tree is walked every 2 s (a walk reads all of /proc), the known processes sampled
    // every 100 ms: the bench's own event loop must stay free to drive the page
    let pids = descendants(pid);
    let walked = performance.now();
    const sample = () => {
      if (performance.now() - walked > 2000) {
        pids = descendants(pid);
        walked = performance.now();
      }
      const each = pids.map((p) => rssOf(p));
      current = each.reduce((s, b) => s + b, 0);
      windowPeak = Math.max(windowPeak, current);
      if (current > overallPeak) {
        overallPeak = current;
        peakByKind = new Map();
        pids.forEach((p, i) => peakByKind.set(kindOf(p), (peakByKind.get(kindOf(p)) ?? 0) + each[i]));
      }
    };
    sample();
    const baselineBytes = current;
    sampler = setInterval(sample, 100);
    const phase = async (work: () => Promise<void>): Promise<Measured> => {
      windowPeak = current;
      const t0 = performance.now();
      const cpu0 = cpuTotal();
      await work();
      sample();
      return {
        seconds: (performance.now() - t0) / 1000,
        peakBytes: windowPeak,
        cpuSeconds: cpuTotal() - cpu0,
      };
    };
    const poolWorkers = await page.evaluate(() =>
      Math.max(1, Math.min(8, (navigator.hardwareConcurrency || 1) - 1)),
    );
    const exportWorkers = await page.evaluate(() =>
      Math.max(1, Math.min(8, navigator.hardwareConcurrency || 1)),
    );
    const open = await phase(async () => {
      await page.setInputFiles('[data-testid=file-input]', [
        join(modelDir, 'model.onnx'),
        join(modelDir, 'model.onnx_data'),
      ]);
      await page.waitForFunction(
        () => document.querySelector('[data-testid=summary] h2')?.textContent === 'model.onnx',
        undefined,
        { timeout: 600_000, polling: 200 },
      );
    });
    log(`large: Chromium opened in ${open.seconds.toFixed(1)} s`);
    const preview = await phase(() =>
      page
        .waitForSelector('[data-testid=preview][aria-busy=false] [data-testid=preview-totals]', {
          timeout: 600_000,
        })
        .then(() => {}),
    );
    log(`large: Chromium previewed in ${preview.seconds.toFixed(1)} s`);
    const files = new Map<string, string>();
    const saving: Promise<void>[] = [];
    let firstDownload = () => {};
    const downloadStarted = new Promise<void>((r) => (firstDownload = r));
    page.on('download', (d) => {
      firstDownload();
      const path = join(outDir, d.suggestedFilename());
      saving.push(d.saveAs(path).then(() => void files.set(d.suggestedFilename(), path)));
    });
    let exportWrite: Measured | undefined;
    const exported = await phase(async () => {
      exportWrite = await phase(async () => {
        await page.locator('[data-testid=export]').click();
        // the first download starts once the files are complete in the origin-private file system
        await Promise.race([
          downloadStarted,
          page.waitForSelector('[data-testid=export-message]', { timeout: 600_000 }),
        ]);
      });
      await page.waitForSelector('[data-testid=export-message]', { timeout: 600_000 });
      const message = (await page.locator('[data-testid=export-message]').textContent()) ?? '';
      if (!/^Exported/.test(message)) throw new Error(`Chromium export: ${message}`);
      while (saving.length < 3) await new Promise((r) => setTimeout(r, 100));
      await Promise.all(saving);
    });
    log(`large: Chromium exported in ${exported.seconds.toFixed(1)} s`);
    const reportPath = files.get('model.report.json');
    if (!reportPath) throw new Error(`Chromium export saved ${[...files.keys()].join(', ')}`);
    return {
      baselineBytes,
      open,
      preview,
      export: exported,
      exportWrite: exportWrite!,
      peakBytes: overallPeak,
      peakByKind,
      poolWorkers,
      exportWorkers,
      files,
      report: JSON.parse(readFileSync(reportPath, 'utf8')),
    };
  } finally {
    clearInterval(sampler);
    await context.close();
    await server.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

async function runsInOnnxruntime(modelPath: string): Promise<string> {
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(modelPath, { logSeverityLevel: 3 });
  try {
    const ids = BigInt64Array.from([1n, 300n, 4000n, 17n, 9n, 31000n, 2n, 5n]);
    const out = await session.run({ input_ids: new ort.Tensor('int64', ids, [1, ids.length]) });
    const logits = out.logits;
    const finite = (logits.data as Float32Array).every(Number.isFinite);
    if (!finite) throw new Error('onnxruntime-node: non-finite logits');
    return `logits [${logits.dims.join(', ')}], all finite`;
  } finally {
    await session.release();
  }
}

const gb = (b: number) => `${(b / GB).toFixed(2)} GB`;
const ratio = (b: number, size: number) => `${(b / size).toFixed(2)}×`;

export async function largeSection(root: string): Promise<string> {
  const need = 14 * GB;
  const free = statfsSync(tmpdir());
  if (free.bavail * free.bsize < need)
    throw new Error(`the large-model bench needs ${gb(need)} free under ${tmpdir()}`);
  const work = mkdtempSync(join(tmpdir(), 'cs-large-bench-'));
  try {
    const modelDir = join(work, 'model');
    mkdirSync(modelDir);
    log('large: writing the generated model…');
    const t0 = performance.now();
    const { bytes: modelBytes } = writeLargeModel(modelDir, LARGE_SPEC);
    log(`large: ${gb(modelBytes)} written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const chromeDir = join(work, 'chromium');
    mkdirSync(chromeDir);
    const browser = await chromiumRun(root, modelDir, chromeDir);
    const recipePath = join(work, 'recipe.json');
    writeFileSync(recipePath, JSON.stringify(browser.report.recipe));

    const cli = join(root, 'bin/compression-studio.mjs');
    const source = join(modelDir, 'model.onnx');
    const streamDir = join(work, 'cli-stream');
    const oneDir = join(work, 'cli-stream-1');
    const memoryDir = join(work, 'cli-memory');
    mkdirSync(streamDir);
    mkdirSync(oneDir);
    mkdirSync(memoryDir);
    const name = 'model.compressed.onnx';
    const workers = availableParallelism();
    const streamedWith = async (n: number, dir: string) => {
      log(`large: CLI, streaming, ${n} worker(s)…`);
      const args = [
        'compress',
        source,
        '--recipe',
        recipePath,
        '--workers',
        String(n),
        '-o',
        join(dir, name),
      ];
      const r = await timed([process.execPath, cli, ...args], root);
      log(
        `large: CLI streamed in ${r.seconds.toFixed(1)} s (${r.cpuSeconds.toFixed(1)} CPU s), peak ${gb(r.peakBytes)}`,
      );
      return r;
    };
    const streamed = await streamedWith(workers, streamDir);
    const streamedOne = await streamedWith(1, oneDir);
    log('large: CLI, in memory (the export before streaming)…');
    const inMemory = await timed(
      [
        process.execPath,
        '--import',
        'tsx',
        join(root, 'tools/bench/large-inmemory.ts'),
        source,
        recipePath,
        join(memoryDir, name),
      ],
      root,
    );
    log(`large: in memory in ${inMemory.seconds.toFixed(1)} s, peak ${gb(inMemory.peakBytes)}`);

    const outputs = {
      'CLI (streaming)': streamDir,
      'CLI (streaming, one thread)': oneDir,
      'in memory': memoryDir,
      Chromium: chromeDir,
    };
    const hashes: Record<string, string> = {};
    for (const [label, dir] of Object.entries(outputs)) {
      const onnx = await sha256(join(dir, name));
      const data = await sha256(join(dir, `${name}_data`));
      hashes[label] = `${onnx.slice(0, 12)} / ${data.slice(0, 12)}`;
    }
    const identical = new Set(Object.values(hashes)).size === 1;
    const outputBytes = statSync(join(streamDir, name)).size + statSync(join(streamDir, `${name}_data`)).size;
    log('large: onnxruntime-node…');
    const ortLine = await runsInOnnxruntime(join(streamDir, name));
    const params = largeParams(LARGE_SPEC);
    const total = browser.open.seconds + browser.preview.seconds + browser.export.seconds;
    const row = (label: string, m: Measured) =>
      `| ${label} | ${m.seconds.toFixed(1)} s | ${m.cpuSeconds.toFixed(1)} s | ${gb(m.peakBytes)} | ${ratio(m.peakBytes, modelBytes)} |`;
    const downloads: Measured = {
      seconds: browser.export.seconds - browser.exportWrite.seconds,
      cpuSeconds: browser.export.cpuSeconds - browser.exportWrite.cpuSeconds,
      peakBytes: browser.export.peakBytes,
    };
    const cpuTotal = browser.open.cpuSeconds + browser.preview.cpuSeconds + browser.export.cpuSeconds;
    const byKind = [...browser.peakByKind]
      .sort((x, y) => y[1] - x[1])
      .map(([k, b]) => `${k} ${gb(b)}`)
      .join(', ');
    return `## Large model: ${gb(modelBytes)} with external data, CLI and Chromium

A GPT-style float32 model generated on disk (\`tools/bench/large-model.ts\`: ${LARGE_SPEC.layers} blocks of width ${LARGE_SPEC.width}, vocabulary ${LARGE_SPEC.vocab.toLocaleString('en')}, ${(params / 1e6).toFixed(0)} M parameters; \`model.onnx\` + \`model.onnx_data\`, ${gb(modelBytes)}), compressed with the page's default recipe (int4 block 32, MatMulNBits, every linear weight: ${gb(outputBytes)} out). Peak memory is read from outside: \`/usr/bin/time -v\` (maximum resident set) for the CLI, the resident memory of every Chromium process summed every 100 ms from /proc for the browser. CPU is the user + system time of every thread and process (the CLI's from \`/usr/bin/time\`, Chromium's from /proc): the work done, which the load of other jobs does not change, where wall time stretches with it. \`npm run bench -- --only large\`; the files are deleted afterwards. The machine is a shared 2-core VM under load from other jobs: times vary by ±30 % between runs.

| run | time | CPU | peak memory | × model size |
| --- | ---: | ---: | ---: | ---: |
${row(`CLI \`compress\`, streaming export, ${workers} kernel workers`, streamed)}
${row('CLI `compress`, streaming export, one thread (`--workers 1`)', streamedOne)}
${row('CLI, the in-memory export streaming replaced', inMemory)}
| Chromium, idle page | – | – | ${gb(browser.baselineBytes)} | ${ratio(browser.baselineBytes, modelBytes)} |
${row('Chromium, open (read, statistics of every tensor)', browser.open)}
${row(`Chromium, preview (int4 of ${LARGE_SPEC.layers * 4} weights)`, browser.preview)}
${row('Chromium, export: compressed into the origin-private file system', browser.exportWrite)}
${row('Chromium, export: the downloads from there', downloads)}
| Chromium, open + preview + export | ${total.toFixed(1)} s | ${cpuTotal.toFixed(1)} s | ${gb(browser.peakBytes)} | ${ratio(browser.peakBytes, modelBytes)} |

Above the idle page's own ${gb(browser.baselineBytes)}, Chromium peaks at ${gb(browser.peakBytes - browser.baselineBytes)} (${ratio(browser.peakBytes - browser.baselineBytes, modelBytes)} the model); at its peak: ${byKind}. Load average when the run ended: ${loadavg()[0].toFixed(0)} on 2 cores (other jobs), which is what the times measure as much as the studio. The page's kernel pool had ${browser.exportWorkers} workers for the first preview after opening and while exporting (one per core: no slider moves then; ${browser.poolWorkers} afterwards, one per core but one), its streamed export ${browser.exportWorkers + 1} weights in flight, writing the int4 encodings the preview memoised (within its budget) without running their kernels again; the CLI ${workers} workers, ${workers + 1} weights in flight.

Outputs (sha256 of .onnx / .onnx_data): ${Object.entries(hashes)
      .map(([k, v]) => `${k} \`${v}\``)
      .join(
        ', ',
      )} — ${identical ? 'byte-identical' : '**they differ**'}. onnxruntime-node runs the output: ${ortLine}.
`;
  } finally {
    rmSync(work, { recursive: true, force: true });
    if (existsSync(work)) log(`large: could not remove ${work}`);
  }
}
