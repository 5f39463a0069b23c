/** Real-browser tests: a Vite server for the studio and Debian's Chromium driven by playwright-core. */
import { build, createServer, preview, type PreviewServer, type ViteDevServer } from 'vite';
import { chromium, type BrowserContext, type Download, type Page } from 'playwright-core';
import { expect } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '../..');
export const ARTIFACTS = join(ROOT, 'test-results');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export interface Studio {
  server: ViteDevServer | PreviewServer;
  url: string;
  context: BrowserContext;
  page: Page;
  /** Console errors and uncaught page errors, for tests to assert none happened. */
  pageErrors: string[];
  close(): Promise<void>;
}

/** Debian's Chromium with a fresh profile of its own, as DEVELOPERS.md prescribes. */
export async function launchChromium(
  opts: { webgpu?: boolean } = {},
): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), 'cs-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1400, height: 900 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...(opts.webgpu ? ['--enable-unsafe-webgpu'] : []),
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

let builtDir: string | undefined;

/** The production build, made once per test process (what users get; React's dev checks off). */
export async function productionBuild(): Promise<string> {
  if (builtDir) return builtDir;
  const out = mkdtempSync(join(tmpdir(), 'cs-build-'));
  // Vitest runs with NODE_ENV=test, which would make Vite bundle React's development build
  const nodeEnv = process.env.NODE_ENV;
  process.env.NODE_ENV = 'production';
  try {
    await build({
      root: ROOT,
      configFile: join(ROOT, 'vite.config.ts'),
      mode: 'production',
      logLevel: 'error',
      build: { outDir: out },
    });
  } finally {
    process.env.NODE_ENV = nodeEnv;
  }
  builtDir = out;
  return out;
}

export async function openStudio(opts: { webgpu?: boolean; production?: boolean } = {}): Promise<Studio> {
  const configFile = join(ROOT, 'vite.config.ts');
  let server: ViteDevServer | PreviewServer;
  if (opts.production) {
    server = await preview({
      root: ROOT,
      configFile,
      logLevel: 'error',
      build: { outDir: await productionBuild() },
      preview: { port: 0, host: '127.0.0.1' },
    });
  } else {
    const dev = await createServer({
      root: ROOT,
      configFile,
      server: { port: 0, host: '127.0.0.1' },
      logLevel: 'error',
    });
    await dev.listen();
    server = dev;
  }
  const address = server.httpServer!.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const url = `http://127.0.0.1:${port}/`;
  const { context, close } = await launchChromium({ webgpu: opts.webgpu });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  mkdirSync(ARTIFACTS, { recursive: true });
  return {
    server,
    url,
    context,
    page,
    pageErrors,
    async close() {
      await close();
      await server.close();
    },
  };
}

/** Drops files on an element the way a person's drag and drop does: a DataTransfer in a drop event. */
export async function dropFiles(page: Page, selector: string, files: { name: string; bytes: Uint8Array }[]) {
  const payload = files.map((f) => ({ name: f.name, b64: Buffer.from(f.bytes).toString('base64') }));
  await page.evaluate(
    ({ selector, payload }) => {
      const dt = new DataTransfer();
      for (const f of payload) {
        const bin = atob(f.b64);
        const bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        dt.items.add(new File([bytes], f.name));
      }
      const target = document.querySelector(selector)!;
      target.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      target.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    },
    { selector, payload },
  );
}

/** What one click on Export saves: the model file and its parsed report. */
export interface ExportedFiles {
  /** The temp folder both files were saved in (the caller removes it). */
  dir: string;
  /** Path of the saved .onnx file. */
  onnxPath: string;
  /** The report .json, parsed. */
  report: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- each test reads its own fields
}

/**
 * Clicks Export and collects the two downloads it starts (.onnx and the report .json) into a fresh
 * temp folder named after `prefix`. The listener is removed afterwards so a later export in the same
 * page is not saved twice.
 */
export async function exportAndCollect(page: Page, prefix: string, timeout = 60_000): Promise<ExportedFiles> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const downloads: { name: string; path: string }[] = [];
  const onDownload = async (d: Download) => {
    const path = join(dir, d.suggestedFilename());
    await d.saveAs(path);
    downloads.push({ name: d.suggestedFilename(), path });
  };
  page.on('download', onDownload);
  try {
    await page.locator('[data-testid=export]').click();
    await expect.poll(() => downloads.length, { timeout }).toBe(2);
  } finally {
    page.off('download', onDownload);
  }
  const onnxPath = downloads.find((d) => d.name.endsWith('.onnx'))!.path;
  const report = JSON.parse(readFileSync(downloads.find((d) => d.name.endsWith('.json'))!.path, 'utf8'));
  return { dir, onnxPath, report };
}

/** One task of the page's main thread: wall-clock and thread (CPU) time, in ms. */
export interface MainThreadTask {
  wall: number;
  cpu: number;
}

/**
 * The tasks the page's renderer main thread ran while `action` ran, read from Chromium's trace
 * (`toplevel` category: each task with its wall duration and its thread time). Thread time is the
 * work the page asked for; wall time also counts the time the OS gave the thread's core to other
 * processes, which on a loaded machine is most of it.
 */
export async function mainThreadTasks(page: Page, action: () => Promise<void>): Promise<MainThreadTask[]> {
  type TraceEvent = {
    name: string;
    ph: string;
    pid: number;
    tid: number;
    ts: number;
    dur?: number;
    tdur?: number;
    args?: { name?: string };
  };
  const cdp = await page.context().newCDPSession(page);
  const events: TraceEvent[] = [];
  cdp.on('Tracing.dataCollected', (e) => events.push(...(e.value as unknown as TraceEvent[])));
  await cdp.send('Tracing.start', { categories: 'toplevel', transferMode: 'ReportEvents' });
  try {
    await action();
  } finally {
    const complete = new Promise((resolve) => cdp.once('Tracing.tracingComplete', resolve));
    await cdp.send('Tracing.end');
    await complete;
    await cdp.detach();
  }
  const isTask = (e: TraceEvent) => e.ph === 'X' && e.name === 'ThreadControllerImpl::RunTask';
  // the page's main thread: of the renderers' main threads, the one that ran the most tasks
  const mains = events.filter(
    (e) => e.ph === 'M' && e.name === 'thread_name' && e.args?.name === 'CrRendererMain',
  );
  const count = (m: TraceEvent) =>
    events.filter((e) => e.pid === m.pid && e.tid === m.tid && isTask(e)).length;
  const main = mains.sort((a, b) => count(b) - count(a))[0];
  if (!main) throw new Error('the trace has no renderer main thread');
  const tasks = events
    .filter((e) => e.pid === main.pid && e.tid === main.tid && isTask(e))
    .sort((a, b) => a.ts - b.ts);
  // a task run inside another (a nested run loop) is part of the outer one
  const outer: TraceEvent[] = [];
  for (const t of tasks) {
    const last = outer[outer.length - 1];
    if (!last || t.ts >= last.ts + (last.dur ?? 0)) outer.push(t);
  }
  // a task can come without its thread time (seen on 1 µs ones): its wall time bounds it
  const timed = outer.filter((t) => t.tdur !== undefined).length;
  if (timed < outer.length / 2)
    throw new Error(`the trace has thread time for ${timed} of ${outer.length} tasks`);
  return outer.map((t) => ({ wall: (t.dur ?? 0) / 1000, cpu: (t.tdur ?? t.dur ?? 0) / 1000 }));
}
