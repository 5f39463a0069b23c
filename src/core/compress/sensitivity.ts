/**
 * The sensitivity trial the CLI and the page's precision worker both run: the model with one tensor
 * compressed is exported, loaded by the caller's onnxruntime (node or web) and compared with the
 * original's logits on the slice. Only the session factory differs between the two.
 */
import type { InferenceSession } from 'onnxruntime-common';
import type { OnnxModel } from '../onnx/model.ts';
import type { IoSpec, TensorCtor } from '../eval/decoder.ts';
import { compareWithReference, type ReferenceLogits, type RuntimeProtocol } from '../eval/compare.ts';
import { compressModel } from './pipeline.ts';
import { exportCompressed } from './export.ts';
import { resolveRecipe, type RecipeStep } from './recipe.ts';

/** The first `tokens` tokens, sequence after sequence (sequences left shorter than 2 tokens dropped). */
export function firstTokens(sequences: number[][], tokens: number): number[][] {
  const slice: number[][] = [];
  let left = tokens;
  for (const s of sequences) {
    if (left < 2) break;
    slice.push(s.slice(0, left));
    left -= Math.min(s.length, left);
  }
  return slice.filter((s) => s.length >= 2);
}

export interface TrialRuntime {
  /** A session of ONNX bytes (released by the trial when it is done). */
  load(bytes: Uint8Array): Promise<InferenceSession>;
  Tensor: TensorCtor;
  inputs: IoSpec[];
  runtime: RuntimeProtocol;
}

/** `klOf` for measureSensitivity: mean KL(original ‖ model compressed by `steps`) over the reference's slice. */
export function trialKl(
  reference: ReferenceLogits,
  rt: TrialRuntime,
  signal?: AbortSignal,
): (model: OnnxModel, steps: RecipeStep[]) => Promise<number> {
  return async (model, steps) => {
    const bytes = exportCompressed(model, compressModel(model, resolveRecipe({ steps }))).model;
    const session = await rt.load(bytes);
    try {
      const r = await compareWithReference(
        reference,
        { session, Tensor: rt.Tensor, inputs: rt.inputs },
        rt.runtime,
        { signal },
      );
      return r.kl.mean.value;
    } finally {
      await session.release();
    }
  };
}
