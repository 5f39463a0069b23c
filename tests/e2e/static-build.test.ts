/**
 * The static build as a host without header control serves it: under a sub-path, with no COOP/COEP
 * headers. The service worker must make the page cross-origin isolated (threads), the demo model
 * must load from relative URLs, and onnxruntime-web's wasm must come from the built assets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrowserContext } from 'playwright-core';
import { createServer, type Server } from 'node:http';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';
import { ARTIFACTS, launchChromium, productionBuild } from './harness.ts';

const SUB = '/some/sub/path/';
const TYPES: Record<string, string> = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.css': 'text/css',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.txt': 'text/plain',
  '.png': 'image/png',
};

describe('static build from a sub-path on a host that sets no headers', () => {
  let out: string;
  let server: Server;
  let context: BrowserContext;
  let browser: Awaited<ReturnType<typeof launchChromium>>;
  let origin: string;

  beforeAll(async () => {
    out = await productionBuild();
    server = createServer((req, res) => {
      const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      if (!path.startsWith(SUB)) {
        res.writeHead(404).end();
        return;
      }
      let file = normalize(join(out, path.slice(SUB.length)));
      if (!file.startsWith(out)) return void res.writeHead(403).end();
      if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
      if (!existsSync(file)) return void res.writeHead(404).end();
      res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' });
      res.end(readFileSync(file));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const address = server.address();
    origin = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    browser = await launchChromium();
    context = browser.context;
  });

  afterAll(async () => {
    await browser?.close();
    server?.close();
  });

  it('becomes cross-origin isolated through the service worker and runs onnxruntime-web with threads', async () => {
    const page = context.pages()[0] ?? (await context.newPage());
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${origin}${SUB}?eval=0`);
    await expect.poll(() => page.evaluate(() => window.crossOriginIsolated), { timeout: 60_000 }).toBe(true);
    await page.waitForSelector('[data-testid=preview-totals]', { timeout: 120_000 });
    await page
      .locator('[data-testid=eval-text]')
      .fill('ROMEO:\nBut soft, what light through yonder window breaks?\n');
    await page.getByRole('button', { name: 'Evaluate', exact: true }).click();
    await page.waitForSelector('[data-testid=perplexity]', { timeout: 120_000 });
    const runtime = await page.evaluate(() => {
      type Store = {
        getState(): {
          evaluation: { result?: { runtime: { threads: number; crossOriginIsolated: boolean } } };
        };
      };
      return (window as unknown as { __studio: Store }).__studio.getState().evaluation.result!.runtime;
    });
    expect(runtime.crossOriginIsolated).toBe(true);
    expect(runtime.threads).toBeGreaterThan(1);
    await page.screenshot({ path: join(ARTIFACTS, 'static-build-subpath.png'), fullPage: true });
    expect(errors).toEqual([]);
  });
});
