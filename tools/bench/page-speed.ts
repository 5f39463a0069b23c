/**
 * `npm run bench -- --only page-speed`: the page's perplexity throughput (onnxruntime-web in the
 * evaluation worker, Chromium through playwright-core, the production build served cross-origin
 * isolated) against onnxruntime-node running the same evaluator (src/core/eval/perplexity.ts) on
 * the same tokens with the same intra-op thread count. The two run in turn, back to back, and the
 * section reports each round's ratio: on a shared machine only ratios taken together mean anything.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, preview } from 'vite';
import { chromium } from 'playwright-core';
import * as ort from 'onnxruntime-node';
import { evaluatePerplexity, MAX_BATCH, slidingWindows } from '../../src/core/eval/perplexity.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { loadTokenizer } from '../../src/core/tokenizer.ts';
import { EXACT_WEIGHT_ONLY } from '../../src/runtime/ort-node.ts';
import { log } from './log.ts';
import { opProfile, type OpTime } from './page-op-profile.ts';

const CTX = 128;
const STRIDE = 64;
const CHARS = 24_000;
const ROUNDS = 3;

export async function pageSpeedSection(root: string): Promise<string> {
  const demo = join(root, 'public/models/tiny-shakespeare-gpt2');
  const text = readFileSync(join(demo, 'heldout.txt'), 'utf8').slice(0, CHARS);
  const ids = loadTokenizer(JSON.parse(readFileSync(join(demo, 'tokenizer.json'), 'utf8'))).encode(text);
  const modelPath = join(demo, 'onnx', 'model.onnx');
  const modelBytes = new Uint8Array(readFileSync(modelPath));
  const vocab = Number(
    (JSON.parse(readFileSync(join(demo, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size,
  );
  const inputs = summarizeInputs(parseModel(bytesSource('model.onnx', modelBytes)).graph);

  log('page-speed: production build…');
  const out = mkdtempSync(join(tmpdir(), 'cs-page-speed-'));
  const nodeEnv = process.env.NODE_ENV;
  process.env.NODE_ENV = 'production';
  await build({ root, configFile: join(root, 'vite.config.ts'), logLevel: 'error', build: { outDir: out } });
  process.env.NODE_ENV = nodeEnv;
  const server = await preview({
    root,
    configFile: join(root, 'vite.config.ts'),
    logLevel: 'error',
    build: { outDir: out },
    preview: { port: 0, host: '127.0.0.1' },
  });
  const address = server.httpServer.address();
  const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/?eval=0`;
  const profile = mkdtempSync(join(tmpdir(), 'cs-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  const rows: { page: number; node: number; pagePpl: number; nodePpl: number }[] = [];
  let threads = 1;
  let runtime = '';
  const profiles: { threads: number; ops: OpTime[] }[] = [];
  let firstSeconds: number;
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(url);
    await page.waitForSelector('[data-testid=preview-totals]', { timeout: 300_000 });
    await page.locator('[data-testid=eval-text]').fill(text);
    const pageRun = async () => {
      await page.locator('[data-testid=evaluate]').click();
      await page.waitForSelector('[data-testid=evaluate]:not([disabled])', { timeout: 600_000 });
      await page.waitForSelector('[data-testid=eval-rate]', { timeout: 600_000 });
      const rate = Number((await page.locator('[data-testid=eval-rate]').getAttribute('data-value')) ?? NaN);
      const ppl = Number(await page.locator('[data-testid=perplexity]').textContent());
      runtime = (await page.locator('[data-testid=runtime]').textContent()) ?? '';
      threads = Number(/(\d+) thread/.exec(runtime)?.[1] ?? 1);
      return { rate, ppl };
    };
    const clicked = performance.now();
    await pageRun(); // warm-up: session creation, the wasm kernels' first calls
    firstSeconds = (performance.now() - clicked) / 1000;
    const session = await ort.InferenceSession.create(modelBytes, {
      graphOptimizationLevel: 'all',
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      extra: EXACT_WEIGHT_ONLY,
    });
    const nodeRun = async () => {
      const r = await evaluatePerplexity(session, ort.Tensor, inputs, [ids], { ctx: CTX, stride: STRIDE });
      return { rate: r.tokensPerSecond, ppl: r.perplexity };
    };
    await nodeRun();
    for (let i = 0; i < ROUNDS; i++) {
      const p = await pageRun();
      const n = await nodeRun();
      rows.push({ page: p.rate, node: n.rate, pagePpl: p.ppl, nodePpl: n.ppl });
      log(
        `  round ${i + 1}: page ${p.rate.toFixed(0)} tokens/s, node ${n.rate.toFixed(0)} tokens/s, ratio ${(p.rate / n.rate).toFixed(2)}`,
      );
    }
    await session.release();
    for (const t of [...new Set([1, threads])]) {
      log(`page-speed: operator profile of one batch, ${t} thread(s)…`);
      const ops = await opProfile(root, context, modelPath, inputs, {
        threads: t,
        batch: MAX_BATCH,
        length: CTX,
        vocab,
      });
      profiles.push({ threads: t, ops });
    }
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
    await server.close();
    rmSync(out, { recursive: true, force: true });
  }
  const load = loadavg()[0];
  const ratios = rows.map((r) => r.page / r.node).sort((a, b) => a - b);
  const median = ratios[Math.floor(ratios.length / 2)];
  return [
    '## Page perplexity speed: onnxruntime-web in Chromium against onnxruntime-node',
    '',
    `Protocol: the demo model, the first ${CHARS.toLocaleString('en-US')} characters of \`heldout.txt\` (${ids.length.toLocaleString('en-US')} tokens), ctx ${CTX}, stride ${STRIDE}; ` +
      `tokens/s = tokens scored over the evaluation's wall time (the evaluator of \`src/core/eval/perplexity.ts\` on both sides: windows batched, inputs preallocated). ` +
      `Page: the production build served cross-origin isolated, Chromium headless (\`${runtime.trim()}\`), the Evaluate button, its result line. ` +
      `Node: onnxruntime-node ${ort.env.versions.node ?? ''}, CPU, intraOpNumThreads ${threads} (the page's), graph optimisation all. ` +
      `One warm-up each, then ${ROUNDS} rounds, page then node back to back; load average ${load.toFixed(0)} on ${cpus().length} cores at the end of the run.`,
    '',
    '| round | page tokens/s | node tokens/s | page / node | page perplexity | node perplexity |',
    '|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r, i) =>
        `| ${i + 1} | ${r.page.toFixed(0)} | ${r.node.toFixed(0)} | ${(r.page / r.node).toFixed(2)} | ${r.pagePpl.toFixed(3)} | ${r.nodePpl.toFixed(3)} |`,
    ),
    '',
    `Median ratio ${median.toFixed(2)}× — target ≥ 0.7×: ${median >= 0.7 ? 'met' : '**missed**'}. ` +
      `The page's first evaluation (the warm-up: onnxruntime-web fetched and compiled, the session created, then the text scored) took ${firstSeconds.toFixed(1)} s from the click to its result.`,
    '',
    ...opTable(profiles, wallPerBatch(rows, ids.length)),
  ].join('\n');
}

/** The widest vector extension the CPU offers native code (what onnxruntime-node's MLAS dispatches to). */
function nativeSimd(): string {
  let flags = '';
  try {
    flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  } catch {
    return 'SIMD';
  }
  const has = (f: string) => flags.split(/\s+/).includes(f);
  return has('avx512f') ? 'AVX-512 FMA' : has('avx2') && has('fma') ? 'AVX2 FMA' : 'SIMD';
}

/**
 * Where the time goes, at one thread (the kernels themselves) and at the page's threads (what
 * threading adds): the operators by the page's one-thread time, the rest in one row, the matrix
 * products' share.
 */
/** The rounds' median wall time per batch of the evaluation, each side (ms): to set beside kernel time. */
function wallPerBatch(
  rows: { page: number; node: number }[],
  tokens: number,
): { page: number; node: number } {
  const scored = tokens - 1;
  const batches = Math.ceil(slidingWindows([tokens], CTX, STRIDE).length / MAX_BATCH);
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const perBatch = (rate: number) => ((scored / rate) * 1000) / batches;
  return { page: median(rows.map((r) => perBatch(r.page))), node: median(rows.map((r) => perBatch(r.node))) };
}

function opTable(
  profiles: { threads: number; ops: OpTime[] }[],
  wall: { page: number; node: number },
): string[] {
  const [first] = profiles;
  const order = first.ops.map((o) => o.op);
  const shown = order.slice(0, 8);
  const sum = (ops: OpTime[], k: 'pageMs' | 'nodeMs', pick: (op: string) => boolean) =>
    ops.filter((o) => pick(o.op)).reduce((s, o) => s + o[k], 0);
  const cells = (pick: (op: string) => boolean) =>
    profiles
      .map(({ ops }) => {
        const page = sum(ops, 'pageMs', pick);
        const node = sum(ops, 'nodeMs', pick);
        return `${page.toFixed(1)} | ${node.toFixed(1)} | ${node > 0 ? (page / node).toFixed(1) + '×' : '–'}`;
      })
      .join(' | ');
  const isProduct = (op: string) => op === 'MatMul' || op === 'FusedMatMul' || op === 'Gemm';
  const all = () => true;
  const threadsLabel = (t: number) => `${t} thread${t === 1 ? '' : 's'}`;
  const lines = profiles.map(({ threads, ops }) => {
    const pageAll = sum(ops, 'pageMs', all);
    const nodeAll = sum(ops, 'nodeMs', all);
    const pageProducts = sum(ops, 'pageMs', isProduct);
    const nodeProducts = sum(ops, 'nodeMs', isProduct);
    return (
      `with ${threadsLabel(threads)} the matrix products are ${((100 * pageProducts) / Math.max(pageAll, 1e-9)).toFixed(0)} % of the page's kernel time and take ` +
      `${(pageProducts / Math.max(nodeProducts, 1e-9)).toFixed(1)}× node's, the other operators ${(pageAll - pageProducts).toFixed(0)} ms against ${(nodeAll - nodeProducts).toFixed(0)} ms, ` +
      `so on kernel time alone the page reaches ${(nodeAll / Math.max(pageAll, 1e-9)).toFixed(2)}× node`
    );
  });
  return [
    `### Where the time goes: one batch (${MAX_BATCH} windows of ${CTX} tokens), operator by operator`,
    '',
    `\`tools/bench/page-op-profile.ts\`, run after the rounds above: onnxruntime's own profiler in both runtimes (the page's CPU build, \`onnxruntime-web/wasm\`, in a Chromium worker; onnxruntime-node), ` +
      `the same session options, at ${profiles.map((p) => threadsLabel(p.threads)).join(' and at ')}; each node's time is its fastest of 4 profiled runs, summed by operator type ` +
      `(kernel time only: no feeds, no read-back, no log-softmax in JavaScript). Milliseconds per batch.`,
    '',
    `| operator | ${profiles.map((p) => `page, ${threadsLabel(p.threads)} | node, ${threadsLabel(p.threads)} | page / node`).join(' | ')} |`,
    `|---|${profiles.map(() => '---:|---:|---:').join('|')}|`,
    ...shown.map((op) => `| ${op} | ${cells((o) => o === op)} |`),
    ...(order.length > shown.length
      ? [`| ${order.length - shown.length} others | ${cells((o) => !shown.includes(o))} |`]
      : []),
    `| **all** | ${cells(all)} |`,
    '',
    `${lines.join('; ')}. ` +
      `onnxruntime-web's matrix products are MLAS' 128-bit wasm SIMD kernels (no fused multiply-add: the npm build has no relaxed SIMD), onnxruntime-node's its native ${nativeSimd()} kernels: ` +
      `no session option, batching or JavaScript change on the page's side closes that gap on this CPU. On a loaded machine the wasm threads can add more time than they save. ` +
      `The rounds' wall time per batch (median; batches counted as windows / ${MAX_BATCH}) was ${wall.page.toFixed(0)} ms on the page and ${wall.node.toFixed(0)} ms in node: beyond the kernels, the log-softmax over the vocabulary in JavaScript, ` +
      `copies, and on a loaded machine the wait for a core, which narrows the wall-time ratio above towards the share of the CPU each side gets.`,
  ];
}
