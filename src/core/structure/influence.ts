/**
 * How much a whole block changes the residual stream on real data (ShortGPT's "block influence",
 * Men et al. 2024): 1 − the mean cosine similarity between a token's stream entering and leaving the
 * block. A block whose output points where its input did is the one to drop; summing its heads' and
 * neurons' contributions misses that those contributions may be large yet aligned with the stream.
 * The capture graph is the model with each block boundary also a graph output; onnxruntime is
 * injected, as for the other captures.
 */
import type { InferenceSession } from 'onnxruntime-common';
import { ModelError } from '../errors.ts';
import { DataType } from '../onnx/dtypes.ts';
import { makeNode } from '../onnx/build.ts';
import { writeModel } from '../onnx/write.ts';
import type { OnnxModel } from '../onnx/model.ts';
import { decoderFeeds, type IoSpec, type TensorCtor } from '../eval/decoder.ts';
import { yieldToEventLoop } from '../eval/yield.ts';
import type { ModelStructure } from './detect.ts';

export interface BoundaryCapture {
  /** Graph outputs carrying the stream at each boundary: [blocks + 1], entering block 0 … leaving the last. */
  outputs: string[];
  bytes: Uint8Array;
}

export function planBoundaryCapture(model: OnnxModel, structure: ModelStructure): BoundaryCapture {
  const taken = new Set<string>();
  for (const n of model.graph.node) for (const o of n.output) taken.add(o);
  for (const v of [...model.graph.input, ...model.graph.output, ...model.graph.initializer])
    taken.add(v.name);
  const streams = [
    ...structure.blocks.map((b) => b.input),
    structure.blocks[structure.blocks.length - 1].output,
  ];
  const outputs = streams.map((s, i) => {
    let name = `${s}__boundary${i}`;
    for (let j = 1; taken.has(name); j++) name = `${s}__boundary${i}_${j}`;
    taken.add(name);
    return name;
  });
  const graph = {
    ...model.graph,
    node: [
      ...model.graph.node,
      ...streams.map((s, i) => makeNode('Identity', [s], [outputs[i]], {}, { name: outputs[i] })),
    ],
    output: [
      ...model.graph.output,
      ...outputs.map((name) => ({ name, type: { tensor_type: { elem_type: DataType.FLOAT } } })),
    ],
  };
  return { outputs, bytes: writeModel(model, { graph }).model };
}

/** Σ over rows of cos(a_row, b_row) for row-major [rows, width] a and b, and the row count. */
export function rowCosineSum(a: Float32Array, b: Float32Array, width: number): { sum: number; rows: number } {
  if (a.length !== b.length || a.length % width !== 0)
    throw new ModelError(
      'invalid-argument',
      `Block boundaries of ${a.length} and ${b.length} values are not rows of ${width}.`,
    );
  let sum = 0;
  const rows = a.length / width;
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let i = r * width; i < (r + 1) * width; i++) {
      dot += a[i] * b[i];
      na += a[i] * a[i];
      nb += b[i] * b[i];
    }
    sum += na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 1;
  }
  return { sum, rows };
}

/** Per block, 1 − mean cos(stream in, stream out) over every token of `sequences`. */
export async function captureBlockInfluence(
  session: InferenceSession,
  Tensor: TensorCtor,
  inputs: IoSpec[],
  plan: BoundaryCapture,
  width: number,
  sequences: readonly number[][],
  signal?: AbortSignal,
): Promise<number[]> {
  const blocks = plan.outputs.length - 1;
  const sums = new Float64Array(blocks);
  let rows = 0;
  const fed = inputs.filter((i) => session.inputNames.includes(i.name));
  for (const seq of sequences) {
    if (signal?.aborted) throw new ModelError('cancelled', 'Block influence capture cancelled.');
    const out = await session.run(decoderFeeds(Tensor, fed, seq), plan.outputs);
    const streams = plan.outputs.map((o) => out[o].data as Float32Array);
    for (let b = 0; b < blocks; b++) {
      const r = rowCosineSum(streams[b], streams[b + 1], width);
      sums[b] += r.sum;
      if (b === 0) rows += r.rows;
    }
    for (const t of Object.values(out)) t.dispose?.();
    await yieldToEventLoop();
  }
  return Array.from(sums, (s) => 1 - s / rows);
}
