/** The CLI's and tests' onnxruntime: onnxruntime-node, CPU. */
import * as ort from 'onnxruntime-node';

/**
 * Weight-only compressed models are measured as weight-only: by default onnxruntime's CPU optimizer
 * fuses DequantizeLinear→MatMul into MatMulNBits with accuracy level 4, which also quantizes the
 * activations to int8 and would mix a second approximation into every perplexity.
 */
export const EXACT_WEIGHT_ONLY = { session: { qdq_matmulnbits_accuracy_level: '0' } };

export async function createNodeSession(model: Uint8Array | string): Promise<ort.InferenceSession> {
  const options: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    extra: EXACT_WEIGHT_ONLY,
  };
  return typeof model === 'string'
    ? ort.InferenceSession.create(model, options)
    : ort.InferenceSession.create(model, options);
}

export const Tensor = ort.Tensor;

/** The protocol fields of a figure measured here: CPU provider, onnxruntime's own thread choice. */
export const NODE_RUNTIME = {
  provider: 'cpu (onnxruntime-node)',
  threads: 'default',
  onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
};
