/** The CLI's and tests' onnxruntime: onnxruntime-node, CPU. */
import * as ort from 'onnxruntime-node';

export async function createNodeSession(model: Uint8Array | string): Promise<ort.InferenceSession> {
  const options: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all', logSeverityLevel: 3 };
  return typeof model === 'string'
    ? ort.InferenceSession.create(model, options)
    : ort.InferenceSession.create(model, options);
}

export const Tensor = ort.Tensor;
