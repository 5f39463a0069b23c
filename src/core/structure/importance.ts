/**
 * How much each attention head, MLP neuron and block contributes, per block (plain arrays, so the
 * page can draw heat maps from them):
 *
 * - magnitude (data-free): a head's ‖W_v[:, its KV head]‖·‖W_o[its rows, :]‖ (the scale of what
 *   it can add to the residual stream), a neuron's ‖W_up[:, j]‖ (·‖W_gate[:, j]‖)·‖W_down[j, :]‖;
 * - activation (calibration data): Σ over the head's features j of rms(x_j)·‖W_o[j, :]‖, where x is
 *   the output projection's input (the head's output) on the calibration sequences, and a neuron's
 *   rms(x_j)·‖W_down[j, :]‖ with x the down projection's input: the expected size of what it adds
 *   to the residual stream (Wanda's |W|·‖X‖, summed over the unit);
 * - taylor (first-order, Michel et al. 2019): |∂L/∂ξ| of a gate ξ (= 1) on the head's output or
 *   the neuron's activation, L the next-token cross-entropy, averaged over calibration sequences
 *   (taylorImportance below; gradients from the training engine).
 *
 * A block's importance is the sum of its heads' and neurons' (what removing all of it takes away);
 * with calibration data, its measured influence on the residual stream instead (influence.ts:
 * 1 − cos(stream in, stream out), ShortGPT's criterion).
 */
import { ModelError } from '../errors.ts';
import { findInitializer, readTensorFloat32, type OnnxModel } from '../onnx/model.ts';
import type { CalibrationStats } from '../calibrate/stats.ts';
import { yieldToEventLoop } from '../eval/yield.ts';
import { TrainGraph } from '../train/graph.ts';
import { batchLoss } from '../train/distill.ts';
import type { BlockInfo, ModelStructure } from './detect.ts';

export type ImportanceKind = 'magnitude' | 'activation' | 'taylor';
export const IMPORTANCE_KINDS: readonly ImportanceKind[] = ['magnitude', 'activation', 'taylor'];

export interface StructureImportance {
  kind: ImportanceKind;
  /** [block][query head] */
  heads: number[][];
  /** [block][neuron] */
  neurons: number[][];
  /** [block] */
  blocks: number[];
}

/** Norms of the columns [cols] of a row-major [rows, cols] matrix, or of its rows. */
function columnNorms(w: Float32Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0, at = r * cols; c < cols; c++, at++) out[c] += w[at] * w[at];
  return out.map(Math.sqrt);
}

function rowNorms(w: Float32Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0, at = r * cols; c < cols; c++, at++) s += w[at] * w[at];
    out[r] = Math.sqrt(s);
  }
  return out;
}

function matrix(model: OnnxModel, name: string): { w: Float32Array; rows: number; cols: number } {
  const t = findInitializer(model, name);
  return { w: readTensorFloat32(model, t), rows: Number(t.dims[0]), cols: Number(t.dims[1]) };
}

/** Per-head ‖W_o rows‖ and per-neuron ‖W_down rows‖ × …, the weight halves every measure shares. */
function outRowNorms(model: OnnxModel, block: BlockInfo): { o: Float64Array; down: Float64Array } {
  const o = matrix(model, block.attention.out.weight);
  const down = matrix(model, block.mlp.down.weight);
  return { o: rowNorms(o.w, o.rows, o.cols), down: rowNorms(down.w, down.rows, down.cols) };
}

function sumRange(a: ArrayLike<number>, from: number, to: number): number {
  let s = 0;
  for (let i = from; i < to; i++) s += a[i];
  return s;
}

function withBlocks(kind: ImportanceKind, heads: number[][], neurons: number[][]): StructureImportance {
  const blocks = heads.map((h, i) => sumRange(h, 0, h.length) + sumRange(neurons[i], 0, neurons[i].length));
  return { kind, heads, neurons, blocks };
}

export function magnitudeImportance(model: OnnxModel, structure: ModelStructure): StructureImportance {
  const heads: number[][] = [];
  const neurons: number[][] = [];
  for (const block of structure.blocks) {
    const att = block.attention;
    const { o, down } = outRowNorms(model, block);
    const v = matrix(model, att.v.linear.weight);
    const vCols = columnNorms(v.w, v.rows, v.cols);
    const d = att.headDim;
    heads.push(
      att.groupOf.map((g, h) => {
        // ‖·‖_F of a slice from the squares of its column / row norms
        const vNorm = Math.sqrt(
          sumRange(
            vCols.map((x) => x * x),
            att.v.offset + g * d,
            att.v.offset + (g + 1) * d,
          ),
        );
        const oNorm = Math.sqrt(
          sumRange(
            o.map((x) => x * x),
            h * d,
            (h + 1) * d,
          ),
        );
        return vNorm * oNorm;
      }),
    );
    const ups = block.mlp.inputs.map((l) => {
      const m = matrix(model, l.weight);
      return columnNorms(m.w, m.rows, m.cols);
    });
    neurons.push(Array.from(down, (x, j) => ups.reduce((p, u) => p * u[j], x)));
  }
  return withBlocks('magnitude', heads, neurons);
}

/** The weights whose input statistics activation importance reads: each block's output and down projections. */
export function activationTargets(structure: ModelStructure): string[] {
  return structure.blocks.flatMap((b) => [b.attention.out.weight, b.mlp.down.weight]);
}

export function activationImportance(
  model: OnnxModel,
  structure: ModelStructure,
  stats: CalibrationStats,
  /** Per block, 1 − mean cos(stream in, stream out) (captureBlockInfluence); absent: the sum of its units. */
  blockInfluence?: number[],
): StructureImportance {
  const rms = (weight: string, k: number) => {
    const s = stats.layers[weight];
    if (!s || s.k !== k || !s.rows)
      throw new ModelError(
        'needs-calibration',
        `Activation importance needs calibration statistics of '${weight}' (${k} input features).`,
      );
    return Array.from(s.sumSquares, (x) => Math.sqrt(x / s.rows));
  };
  const heads: number[][] = [];
  const neurons: number[][] = [];
  for (const block of structure.blocks) {
    const att = block.attention;
    const { o, down } = outRowNorms(model, block);
    const xo = rms(att.out.weight, att.out.inFeatures);
    const xd = rms(block.mlp.down.weight, block.mlp.hidden);
    const d = att.headDim;
    heads.push(
      att.groupOf.map((_, h) => {
        let s = 0;
        for (let j = h * d; j < (h + 1) * d; j++) s += xo[j] * o[j];
        return s;
      }),
    );
    neurons.push(Array.from(down, (x, j) => xd[j] * x));
  }
  const result = withBlocks('activation', heads, neurons);
  if (blockInfluence) {
    if (blockInfluence.length !== structure.blocks.length)
      throw new ModelError(
        'invalid-argument',
        `Block influence for ${blockInfluence.length} blocks; the model has ${structure.blocks.length}.`,
      );
    result.blocks = [...blockInfluence];
  }
  return result;
}

/** The weights whose gradients Taylor importance reads: each block's output and down projections, with their biases. */
export function taylorTargets(structure: ModelStructure): string[] {
  return structure.blocks.flatMap((b) =>
    [b.attention.out, b.mlp.down].flatMap((l) => (l.bias ? [l.weight, l.bias] : [l.weight])),
  );
}

/** Σ_c w[r, c]·g[r, c] for each row r of row-major [rows, cols] w and g, in float64. */
export function rowDots(w: Float32Array, g: Float32Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0, at = r * cols; c < cols; c++, at++) s += w[at] * g[at];
    out[r] = s;
  }
  return out;
}

function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export interface TaylorOptions {
  signal?: AbortSignal;
  /** After each sequence: sequences done, of total. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * First-order Taylor importance (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"):
 * a gate ξ multiplies each head's output (each neuron's activation); removing the unit sets ξ from 1
 * to 0, which changes the loss by about ∂L/∂ξ. The score is E_x |∂L(x)/∂ξ| over the calibration
 * sequences x, L(x) the mean next-token cross-entropy of x — the absolute value per sequence, as in
 * the paper, so gradients of opposite sign on different sequences do not cancel.
 *
 * How ∂L/∂ξ is read: the gate sits on the rows of the projection the unit feeds, so for head h
 * (output features j ∈ [h·d, (h+1)·d) of the output projection W_o [in, out]) and MLP neuron j (row
 * j of W_down), ∂L/∂ξ = Σ_tokens Σ_j x_j·∂L/∂x_j = Σ_j Σ_c W[j, c]·∂L/∂W[j, c]. The two are the same
 * number (∂L/∂W[j, c] = Σ_tokens x_j·∂L/∂y_c): the engine's weight gradients give it without keeping
 * any activation gradient, and only the output and down projections need gradients. A block's gate
 * scales both of its sublayers' contributions to the residual stream (the projections' outputs,
 * biases included): ∂L/∂ξ_block = Σ W⊙∂L/∂W + b·∂L/∂b over its output and down projections.
 *
 * sequences: token ids, each run on its own through the model's graph (forward and backward).
 */
export async function taylorImportance(
  model: OnnxModel,
  structure: ModelStructure,
  sequences: readonly number[][],
  opts: TaylorOptions = {},
): Promise<StructureImportance> {
  const usable = sequences.filter((s) => s.length >= 2);
  if (!usable.length)
    throw new ModelError(
      'needs-calibration',
      'Taylor importance needs calibration sequences of at least 2 tokens (a next token to predict).',
    );
  const graph = new TrainGraph(model, taylorTargets(structure));
  const heads = structure.blocks.map((b) => new Float64Array(b.attention.heads));
  const neurons = structure.blocks.map((b) => new Float64Array(b.mlp.hidden));
  const blocks = new Float64Array(structure.blocks.length);
  let done = 0;
  for (const seq of usable) {
    if (opts.signal?.aborted) throw new ModelError('cancelled', 'Taylor importance cancelled.');
    const { grads } = batchLoss(graph, [seq], null, { temperature: 1, alpha: 0, withGrad: true });
    structure.blocks.forEach((block, b) => {
      let gate = 0;
      for (const [linear, units, width] of [
        [block.attention.out, heads[b], block.attention.headDim],
        [block.mlp.down, neurons[b], 1],
      ] as const) {
        const w = graph.params.get(linear.weight)!;
        const g = grads!.get(linear.weight);
        if (!g)
          throw new ModelError(
            'unsupported',
            `${model.name}: block ${block.index}: the loss does not depend on '${linear.weight}'.`,
          );
        const rows = rowDots(w, g, linear.inFeatures, linear.outFeatures);
        for (let u = 0; u < units.length; u++) {
          let s = 0;
          for (let j = u * width; j < (u + 1) * width; j++) s += rows[j];
          units[u] += Math.abs(s);
          gate += s;
        }
        const gb = linear.bias ? grads!.get(linear.bias) : undefined;
        if (linear.bias && gb) gate += dot(graph.params.get(linear.bias)!, gb);
      }
      blocks[b] += Math.abs(gate);
    });
    opts.onProgress?.(++done, usable.length);
    await yieldToEventLoop();
  }
  const mean = (a: Float64Array) => Array.from(a, (x) => x / usable.length);
  return { kind: 'taylor', heads: heads.map(mean), neurons: neurons.map(mean), blocks: mean(blocks) };
}
