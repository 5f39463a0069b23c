/**
 * The training engine's WebGPU backend against its wasm kernels, in Chromium's training worker. This
 * machine has no GPU: `--enable-unsafe-webgpu` alone makes Debian's Chromium offer SwiftShader (a
 * software Vulkan, `isFallbackAdapter`), which 'auto' declines and 'webgpu' takes, so the same shaders
 * a hardware GPU runs are checked here. First each product (NN, NT, TN; written, accumulated, with a
 * resident operand; the MatMul op's forward and both backward products, batched) against the wasm
 * kernel on small shapes; then 10 distillation steps of the demo model (2 × 32 tokens, its training
 * split, teacher = the model itself through onnxruntime-web) on each backend: the losses agree within
 * 1e-3 step by step, and so does the held-out perplexity of the result.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, openStudio, type Studio } from './harness.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { DISTILL_DEFAULTS } from '../../src/core/compress/distill-settings.ts';

const DEMO = join(ROOT, 'public/models/tiny-shakespeare-gpt2');

type Client = typeof import('../../src/app/client.ts');

interface Run {
  backend: string;
  gpuProducts: number;
  losses: number[];
  perplexities: number[];
}

describe('WebGPU training backend (SwiftShader)', () => {
  let studio: Studio;
  const t0 = Date.now();
  beforeAll(async () => {
    studio = await openStudio({ webgpu: true });
    const log = (m: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(0)} s] ${m}`);
    studio.page.on('console', (m) => {
      if (/ step \d+: loss /.test(m.text())) log(m.text());
    });
    studio.page.on('framenavigated', (f) => {
      if (f === studio.page.mainFrame()) log(`page navigated to ${f.url()}`);
    });
    await studio.page.goto(`${studio.url}?eval=0`);
    await studio.page.waitForFunction(() => self.crossOriginIsolated, undefined, { timeout: 60_000 });
    // the page's own client module (the dev server's), through which the tests reach the training worker
    await studio.page.addScriptTag({
      type: 'module',
      content: "import * as client from '/src/app/client.ts'; self.__client = client;",
    });
    await studio.page.waitForFunction(() => '__client' in self, undefined, { timeout: 60_000 });
  });
  afterAll(async () => {
    await studio?.close();
  });

  it('runs every product like the wasm kernels', async () => {
    const result = await studio.page.evaluate(async () => {
      const client = (self as unknown as { __client: Client }).__client;
      return client.checkTrainKernels();
    });
    console.log(`kernels on ${result.backend}:`);
    for (const c of result.checks)
      console.log(
        `  ${c.op}: max |webgpu − wasm| ${c.maxAbsDiff.toExponential(2)} (values up to ${c.maxAbs.toFixed(2)})`,
      );
    expect(result.backend).toMatch(/^WebGPU \(.*swiftshader.*fallback/i);
    expect(result.checks).toHaveLength(15);
    for (const c of result.checks) {
      expect(c.maxAbs, c.op).toBeGreaterThan(0.1);
      // float32 sums of ≤ 128 products in another order: a few ulps of the values
      expect(c.maxAbsDiff, c.op).toBeLessThan(1e-4);
    }
  });

  // SwiftShader runs the shaders on the CPU, 6–8× slower than the wasm kernels (75–120 s for the 10 steps, 2–4 minutes with the measurements)
  it(
    '10 distillation steps of the demo model lose the same on WebGPU as on wasm',
    { timeout: 600_000 },
    async () => {
      const modelBytes = readFileSync(join(DEMO, 'onnx', 'model.onnx'));
      const inputs = summarizeInputs(parseModel(bytesSource('model.onnx', new Uint8Array(modelBytes))).graph);
      const settings = { ...DISTILL_DEFAULTS, steps: 10, batch: 2, seq: 32, evalEvery: 10, lr: 2e-3 };
      const runs: Run[] = [];
      for (const backend of ['wasm', 'webgpu'] as const) {
        const start = Date.now();
        const run = await studio.page.evaluate(
          async ({ backend, inputs, settings }) => {
            const client = (self as unknown as { __client: Client }).__client;
            const bytes = async (path: string) => new Uint8Array(await (await fetch(path)).arrayBuffer());
            const losses: number[] = [];
            const perplexities: number[] = [];
            const done = await client.trainStudentInWorker(
              {
                key: `webgpu-check-${backend}`,
                student: await bytes('models/tiny-shakespeare-gpt2/onnx/model.onnx'),
                teacher: { key: 'demo', model: await bytes('models/tiny-shakespeare-gpt2/onnx/model.onnx') },
                inputs,
                settings,
                data: {
                  text: await (await fetch('models/tiny-shakespeare-gpt2/train.txt')).text(),
                  tokenizerJson: await (await fetch('models/tiny-shakespeare-gpt2/tokenizer.json')).json(),
                  bos: 0,
                },
                resume: false,
                backend,
              },
              (p) => {
                if (p.kind === 'step') {
                  losses.push(p.step.loss);
                  console.log(`${backend} step ${p.step.step}: loss ${p.step.loss.toFixed(4)}`);
                }
                if (p.kind === 'eval') perplexities.push(p.point.perplexity);
              },
            );
            return { backend: done.backend, gpuProducts: done.gpuProducts, losses, perplexities };
          },
          { backend, inputs, settings },
        );
        console.log(
          `${backend}: 10 steps + 2 held-out measurements in ${((Date.now() - start) / 1000).toFixed(0)} s`,
        );
        runs.push(run);
      }
      const [wasm, gpu] = runs;
      console.log(
        `demo, 10 steps of 2×32: loss ${wasm.losses.map((l) => l.toFixed(4)).join(' ')} (${wasm.backend})\n` +
          `                        ${gpu.losses.map((l) => l.toFixed(4)).join(' ')} (${gpu.backend}, ${gpu.gpuProducts} products on the GPU)\n` +
          `held-out ppl ${wasm.perplexities.map((p) => p.toFixed(3)).join(' → ')} vs ${gpu.perplexities.map((p) => p.toFixed(3)).join(' → ')}`,
      );
      expect(wasm.backend).toBe('WASM SIMD');
      expect(wasm.gpuProducts).toBe(0);
      expect(gpu.backend).toMatch(/^WebGPU/);
      // every step's products (forward and both backward) and the evaluations' went to the GPU
      expect(gpu.gpuProducts).toBeGreaterThan(10 * 3 * 12);
      expect(wasm.losses).toHaveLength(10);
      expect(gpu.losses).toHaveLength(10);
      // training moved: the loss after 10 steps differs from the first
      expect(Math.abs(wasm.losses[9] - wasm.losses[0])).toBeGreaterThan(1e-2);
      for (let s = 0; s < 10; s++)
        expect(Math.abs(gpu.losses[s] - wasm.losses[s]), `step ${s + 1}`).toBeLessThan(1e-3);
      expect(gpu.perplexities).toHaveLength(wasm.perplexities.length);
      gpu.perplexities.forEach((p, i) =>
        expect(Math.abs(p - wasm.perplexities[i]) / wasm.perplexities[i]).toBeLessThan(1e-3),
      );
    },
  );
});
