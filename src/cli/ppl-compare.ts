/** `ppl COMPRESSED --base ORIGINAL`: the compressed model against its original on the same tokens. */
import { parseModel } from '../core/onnx/model.ts';
import { summarizeInputs } from '../core/summary.ts';
import {
  ReferenceLogits,
  compareWithReference,
  formatEstimate,
  protocolLine,
  type ComparisonResult,
} from '../core/eval/compare.ts';
import { createNodeSession, NODE_RUNTIME, Tensor } from '../runtime/ort-node.ts';
import type { IoSpec } from '../core/eval/decoder.ts';
import { modelSources } from './files.ts';
import { onnxruntime } from './ppl.ts';

async function openSession(
  path: string,
): Promise<{ session: Awaited<ReturnType<typeof createNodeSession>>; inputs: IoSpec[] }> {
  const { main, external } = modelSources(path);
  const model = parseModel(main, external);
  const inputs = summarizeInputs(model.graph);
  const session = await onnxruntime(`load ${path}`, () =>
    createNodeSession(external.length ? path : main.read(0, main.size)),
  );
  return { session, inputs };
}

/** The figures llama.cpp's `--kl-divergence` prints, one per line. */
export function comparisonText(r: ComparisonResult): string {
  const k = r.kl;
  const f = (x: number) => x.toFixed(6);
  return [
    `protocol: ${protocolLine(r.protocol)}`,
    `PPL(compressed)        ${formatEstimate(r.perplexity)}`,
    `PPL(original)          ${formatEstimate(r.basePerplexity)}`,
    `PPL ratio              ${formatEstimate(r.ratio, 5)}`,
    `ln(PPL ratio)          ${formatEstimate(r.lnRatio, 5)}`,
    `mean KL divergence     ${formatEstimate(k.mean, 6)}`,
    `KL median / 90 % / 99 % / 99.9 % / max   ${f(k.median)} / ${f(k.p90)} / ${f(k.p99)} / ${f(k.p999)} / ${f(k.max)}`,
    `same top               ${(r.sameTop.value * 100).toFixed(3)} ± ${(r.sameTop.uncertainty * 100).toFixed(3)} %`,
    `RMS Δp                 ${(r.rmsDeltaP.value * 100).toFixed(3)} ± ${(r.rmsDeltaP.uncertainty * 100).toFixed(3)} %`,
    '',
  ].join('\n');
}

export async function pplAgainstBase(
  compressedPath: string,
  basePath: string,
  sequences: number[][],
  ctx: number,
  stride: number,
  json: boolean,
  out: (s: string) => void,
): Promise<number> {
  const base = await openSession(basePath);
  try {
    const compressed = await openSession(compressedPath);
    try {
      const reference = new ReferenceLogits({ ...base, Tensor }, sequences, ctx, stride);
      const result = await onnxruntime('run the models', () =>
        compareWithReference(reference, { ...compressed, Tensor }, NODE_RUNTIME),
      );
      out(
        json
          ? JSON.stringify({ ...result, base: basePath, model: compressedPath }) + '\n'
          : comparisonText(result),
      );
      return 0;
    } finally {
      await compressed.session.release();
    }
  } finally {
    await base.session.release();
  }
}
