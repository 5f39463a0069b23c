/**
 * Where the page's perplexity time goes, operator by operator: one batch of the evaluation (B windows
 * of L tokens) run by onnxruntime-web's CPU build in a Chromium worker and by onnxruntime-node, both
 * with onnxruntime's own profiler, the same model, session options and intra-op threads. Each node's
 * time is its fastest of several profiled runs (the machine is shared: the fastest is the least
 * disturbed), summed by operator type. Used by the page-speed section (page-speed.ts).
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import type { BrowserContext } from 'playwright-core';
import * as ort from 'onnxruntime-node';
import { batchFeeds, emptyPast, isPastInput, type IoSpec } from '../../src/core/eval/decoder.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';

export interface OpTime {
  op: string;
  /** Summed over the op's nodes, each at its fastest run, milliseconds. */
  pageMs: number;
  nodeMs: number;
}

interface ProfileEvent {
  cat: string;
  name: string;
  dur: number;
  args?: { op_name?: string };
}

const PROFILED_RUNS = 4;

// the batch's feeds as the evaluator's batchFeeds makes them: ids, ones, positions, the cache empty
const WORKER_JS = `
function feedsFor(ort, session, B, L, vocab, pastShape) {
  const n = B * L;
  const feeds = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 7919) % vocab)), [B, L]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [B, L]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(i % L)), [B, L]),
  };
  for (const name of session.inputNames)
    if (!(name in feeds)) feeds[name] = new ort.Tensor('float32', new Float32Array(0), [B, ...pastShape]);
  return feeds;
}
self.onmessage = async (e) => {
  const { threads, B, L, vocab, runs, pastShape, sessionExtra } = e.data;
  try {
    const ort = await import('/ort/ort.wasm.bundle.min.mjs');
    ort.env.wasm.numThreads = threads;
    ort.env.wasm.proxy = false;
    const bytes = new Uint8Array(await (await fetch('/model.onnx')).arrayBuffer());
    const session = await ort.InferenceSession.create(bytes, {
      executionProviders: ['wasm'], graphOptimizationLevel: 'all', enableProfiling: true, extra: sessionExtra,
    });
    const feeds = feedsFor(ort, session, B, L, vocab, pastShape);
    for (let i = 0; i < runs; i++) await session.run(feeds, [session.outputNames[0]]);
    session.endProfiling(); // onnxruntime-web writes the profile to the console, one event a line
    self.postMessage({ ok: true });
  } catch (err) {
    self.postMessage({ ok: false, error: String((err && err.stack) || err) });
  }
};`;

const PAGE_HTML = `<!doctype html><script type="module">
window.profile = (cfg) => new Promise((resolve) => {
  const w = new Worker('/worker.mjs', { type: 'module' });
  w.onmessage = (e) => { w.terminate(); resolve(e.data); };
  w.onerror = (e) => resolve({ ok: false, error: String(e.message) });
  w.postMessage(cfg);
});
</script>`;

function serve(root: string, modelPath: string): Promise<Server> {
  const ortDist = join(root, 'node_modules/onnxruntime-web/dist');
  const types: Record<string, string> = { '.mjs': 'text/javascript', '.wasm': 'application/wasm' };
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    // cross-origin isolated, as the studio is served: SharedArrayBuffer, so wasm threads
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
    };
    let body: string | Buffer | undefined;
    let type = 'application/octet-stream';
    if (path === '/') [body, type] = [PAGE_HTML, 'text/html'];
    else if (path === '/worker.mjs') [body, type] = [WORKER_JS, 'text/javascript'];
    else if (path === '/model.onnx') body = readFileSync(modelPath);
    else if (/^\/ort\/[\w.-]+$/.test(path)) {
      try {
        body = readFileSync(join(ortDist, path.slice(5)));
        type = types[extname(path)] ?? type;
      } catch {
        body = undefined;
      }
    }
    if (body === undefined) {
      res.writeHead(404, headers).end();
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Type': type }).end(body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Per node, the fastest of its runs; then summed by operator type (microseconds). */
function byOperator(events: ProfileEvent[]): Map<string, number> {
  const fastest = new Map<string, { op: string; dur: number }>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || !e.args?.op_name) continue;
    const seen = fastest.get(e.name);
    if (!seen || e.dur < seen.dur) fastest.set(e.name, { op: e.args.op_name, dur: e.dur });
  }
  const sums = new Map<string, number>();
  for (const { op, dur } of fastest.values()) sums.set(op, (sums.get(op) ?? 0) + dur);
  return sums;
}

export async function opProfile(
  root: string,
  context: BrowserContext,
  modelPath: string,
  inputs: IoSpec[],
  opts: { threads: number; batch: number; length: number; vocab: number },
): Promise<OpTime[]> {
  const sessionExtra = EXACT_WEIGHT_ONLY;
  const server = await serve(root, modelPath);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const page = await context.newPage();
  const lines: string[] = [];
  page.on('console', (m) => {
    const t = m.text().trim();
    if (t.startsWith('{"cat"')) lines.push(t.replace(/,$/, ''));
  });
  let pageSums: Map<string, number>;
  try {
    await page.goto(`http://127.0.0.1:${port}/`);
    const r = (await page.evaluate(
      (cfg) => (window as unknown as { profile(c: unknown): Promise<unknown> }).profile(cfg),
      {
        threads: opts.threads,
        B: opts.batch,
        L: opts.length,
        runs: PROFILED_RUNS,
        vocab: opts.vocab,
        // [heads, 0, head_dim] of the empty cache (emptyPast), batch in front
        pastShape: emptyPast(
          ort.Tensor,
          inputs.find((i) => isPastInput(i.name)) ?? { name: '', dtype: 'float32', shape: [1, 0] },
        ).dims.slice(1),
        sessionExtra,
      },
    )) as { ok: boolean; error?: string };
    if (!r.ok) throw new Error(`page profile failed: ${r.error}`);
    await page.waitForTimeout(500); // the last console lines
    pageSums = byOperator(lines.map((l) => JSON.parse(l) as ProfileEvent));
  } finally {
    await page.close();
    server.close();
  }

  const dir = mkdtempSync(join(tmpdir(), 'cs-op-profile-'));
  let nodeSums: Map<string, number>;
  try {
    const session = await ort.InferenceSession.create(readFileSync(modelPath), {
      graphOptimizationLevel: 'all',
      intraOpNumThreads: opts.threads,
      interOpNumThreads: 1,
      enableProfiling: true,
      profileFilePrefix: join(dir, 'node'),
      extra: sessionExtra,
    });
    const fill = batchFeeds(
      ort.Tensor,
      inputs.filter((i) => session.inputNames.includes(i.name)),
      opts.batch,
      opts.length,
    );
    for (let b = 0; b < opts.batch; b++)
      fill.setRow(
        b,
        Array.from({ length: opts.length }, (_, i) => ((b * opts.length + i) * 7919) % opts.vocab),
      );
    const feeds = fill.feeds;
    for (let i = 0; i < PROFILED_RUNS; i++) await session.run(feeds, [session.outputNames[0]]);
    session.endProfiling();
    await session.release();
    const file = readdirSync(dir).find((f) => f.endsWith('.json'));
    if (!file) throw new Error('onnxruntime-node wrote no profile');
    nodeSums = byOperator(JSON.parse(readFileSync(join(dir, file), 'utf8')) as ProfileEvent[]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const ops = [...new Set([...pageSums.keys(), ...nodeSums.keys()])];
  return ops
    .map((op) => ({ op, pageMs: (pageSums.get(op) ?? 0) / 1000, nodeMs: (nodeSums.get(op) ?? 0) / 1000 }))
    .sort((a, b) => b.pageMs - a.pageMs);
}
