/**
 * Calibration text for a model that ships none (no tokenizer, no data set): sequences sampled from
 * the model itself, starting at its BOS token, with a seeded generator so the same seed on the same
 * model gives the same sequences. Works for any causal LM the studio evaluates (input_ids → logits);
 * each step reruns the prefix, since not every graph exposes a KV cache.
 */
import type { InferenceSession } from 'onnxruntime-common';
import { isModelError, ModelError } from '../errors.ts';
import { float16ToFloat32 } from '../onnx/dtypes.ts';
import { decoderFeeds, logitsOutputName, type IoSpec, type TensorCtor } from '../eval/decoder.ts';
import { yieldToEventLoop } from '../eval/yield.ts';

export interface GenerateOptions {
  /** Sequences to sample (N). */
  count: number;
  /** Tokens per sequence including the BOS token (L), at most the model's context. */
  length: number;
  seed: number;
  /** The token every sequence starts with (1 for llama2.c models; the config's bos_token_id). */
  bos: number;
  /** Softmax temperature (default 1: sample the model's own distribution). */
  temperature?: number;
  signal?: AbortSignal;
  onProgress?: (p: GenerateProgress) => void;
}

export interface GenerateProgress {
  sequencesDone: number;
  sequencesTotal: number;
  tokensDone: number;
  tokensTotal: number;
}

/** mulberry32: a small seeded generator of uniform floats in [0, 1). */
export function seededUniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function wholeNumber(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min)
    throw new ModelError('invalid-argument', `${name} must be a whole number ≥ ${min}, got ${v}.`);
}

/** Index drawn from softmax(row / temperature), computed in float64. */
export function sampleFromLogits(row: ArrayLike<number>, temperature: number, u: number): number {
  let max = -Infinity;
  for (let v = 0; v < row.length; v++) if (row[v] > max) max = row[v];
  const p = new Float64Array(row.length);
  let z = 0;
  for (let v = 0; v < row.length; v++) z += p[v] = Math.exp((row[v] - max) / temperature);
  if (!(z > 0) || !Number.isFinite(z))
    throw new ModelError('invalid-argument', 'The model produced logits that are not finite numbers.');
  let target = u * z;
  for (let v = 0; v < row.length; v++) {
    target -= p[v];
    if (target < 0) return v;
  }
  // u·z landed on the rounding error at the top: the last token with any probability
  for (let v = row.length - 1; v >= 0; v--) if (p[v] > 0) return v;
  return row.length - 1;
}

export async function generateCalibrationSequences(
  session: InferenceSession,
  Tensor: TensorCtor,
  inputs: IoSpec[],
  opts: GenerateOptions,
): Promise<number[][]> {
  const { count, length, bos } = opts;
  const temperature = opts.temperature ?? 1;
  wholeNumber('The number of calibration sequences', count, 1);
  wholeNumber('The calibration sequence length', length, 2);
  wholeNumber('The BOS token id', bos, 0);
  if (!(temperature > 0) || !Number.isFinite(temperature))
    throw new ModelError('invalid-argument', `Temperature must be a positive number, got ${temperature}.`);
  const fed = inputs.filter((i) => session.inputNames.includes(i.name));
  const outName = logitsOutputName([...session.outputNames]);
  const uniform = seededUniform(opts.seed);
  const sequences: number[][] = [];
  for (let s = 0; s < count; s++) {
    const ids = [bos];
    while (ids.length < length) {
      if (opts.signal?.aborted)
        throw new ModelError('cancelled', 'Generating calibration sequences cancelled.');
      let out: Awaited<ReturnType<InferenceSession['run']>>;
      try {
        out = await session.run(decoderFeeds(Tensor, fed, ids), [outName]);
      } catch (e) {
        if (isModelError(e)) throw e;
        // e.g. a BOS id outside the vocabulary: onnxruntime's message, as the error of this input
        throw new ModelError(
          'invalid-argument',
          `The model could not run on the sequence being generated: ${(e as Error).message ?? String(e)}`,
        );
      }
      const logits = out[outName];
      const vocab = Number(logits.dims[logits.dims.length - 1]);
      const data = logits.data;
      // the last row is the next token's distribution, whether the graph returns every position or only the last
      const at = data.length - vocab;
      if (!(vocab > 0) || at < 0 || data.length % vocab !== 0)
        throw new ModelError(
          'invalid-argument',
          `The model's logits (shape [${logits.dims.join(', ')}]) have no vocabulary axis.`,
        );
      const row =
        data instanceof Uint16Array
          ? Float32Array.from(data.subarray(at), float16ToFloat32)
          : (data as Float32Array).subarray(at);
      ids.push(sampleFromLogits(row, temperature, uniform()));
      for (const t of Object.values(out)) t.dispose?.();
    }
    sequences.push(ids);
    opts.onProgress?.({
      sequencesDone: s + 1,
      sequencesTotal: count,
      tokensDone: (s + 1) * length,
      tokensTotal: count * length,
    });
    await yieldToEventLoop();
  }
  return sequences;
}
