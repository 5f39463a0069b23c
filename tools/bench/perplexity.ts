/** The bench's one perplexity pass: a fresh onnxruntime-node session over `bytes`, released afterwards. */
import type { OnnxModel } from '../../src/core/onnx/model.ts';
import { evaluatePerplexity } from '../../src/core/eval/perplexity.ts';
import { summarizeInputs } from '../../src/core/summary.ts';
import { createNodeSession, Tensor } from '../../src/runtime/ort-node.ts';

export async function perplexityOf(
  bytes: Uint8Array,
  model: OnnxModel,
  sequences: number[][],
  ctx: number,
  stride: number,
) {
  const session = await createNodeSession(bytes);
  try {
    return await evaluatePerplexity(session, Tensor, summarizeInputs(model.graph), sequences, {
      ctx,
      stride,
    });
  } finally {
    await session.release();
  }
}
