/**
 * The bench's one perplexity pass. `openReference` keeps the original model's session and its logits
 * per window (computed once per table), so every row is also measured against the original on the same
 * tokens: perplexity, KL, same top, PPL ratio, with the protocol.
 */
import type { OnnxModel } from '../../src/core/onnx/model.ts';
import {
  ReferenceLogits,
  compareWithReference,
  protocolLine,
  type EvalProtocol,
  type Estimate,
} from '../../src/core/eval/compare.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { createNodeSession, NODE_RUNTIME, Tensor } from '../../src/runtime/ort-node.ts';

/** A row's figures against the original (JSON-safe, so BENCH_ROW_CACHE can keep them). */
export interface VersusOriginal {
  kl: Estimate;
  klP99: number;
  klMax: number;
  sameTop: Estimate;
  ratio: Estimate;
  protocol: EvalProtocol;
}

export interface BenchReference {
  /** Perplexity of `bytes` (a model with `model`'s signature) and its figures against the original. */
  measure(
    bytes: Uint8Array,
    model: OnnxModel,
  ): Promise<{ perplexity: number; tokens: number; versus: VersusOriginal }>;
  close(): Promise<void>;
}

export async function openReference(
  bytes: Uint8Array,
  model: OnnxModel,
  sequences: number[][],
  ctx: number,
  stride: number,
): Promise<BenchReference> {
  const session = await createNodeSession(bytes);
  const reference = new ReferenceLogits(
    { session, Tensor, inputs: summarizeInputs(model.graph) },
    sequences,
    ctx,
    stride,
  );
  return {
    async measure(rowBytes, rowModel) {
      const row = await createNodeSession(rowBytes);
      try {
        const r = await compareWithReference(
          reference,
          { session: row, Tensor, inputs: summarizeInputs(rowModel.graph) },
          NODE_RUNTIME,
        );
        return {
          perplexity: r.perplexity.value,
          tokens: r.protocol.tokens,
          versus: {
            kl: r.kl.mean,
            klP99: r.kl.p99,
            klMax: r.kl.max,
            sameTop: r.sameTop,
            ratio: r.ratio,
            protocol: r.protocol,
          },
        };
      } finally {
        await row.release();
      }
    },
    close: () => session.release(),
  };
}

/** Table header cells for the figures against the original. */
export const VERSUS_HEADER = '| KL vs fp32 (± se) | KL 99 % | same top (± se) |';
export const VERSUS_RULE = '---:|---:|---:|';

/** The row's cells under VERSUS_HEADER ('—' for a row measured before the bench computed them). */
export function versusCells(v: VersusOriginal | undefined): string {
  if (!v) return ' — | — | — |';
  return (
    ` ${v.kl.value.toFixed(5)} ± ${v.kl.uncertainty.toFixed(5)} | ${v.klP99.toFixed(4)} | ` +
    `${(v.sameTop.value * 100).toFixed(2)} ± ${(v.sameTop.uncertainty * 100).toFixed(2)} % |`
  );
}

/** "KL protocol: …" under a table, from any of its rows. */
export function versusProtocol(rows: { versus?: VersusOriginal }[]): string {
  const p = rows.find((r) => r.versus)?.versus?.protocol;
  return p
    ? `KL protocol: KL(fp32 ‖ row) per scored token, mean ± standard error as llama.cpp's \`--kl-divergence\`, on ${protocolLine(p)}.`
    : '';
}
