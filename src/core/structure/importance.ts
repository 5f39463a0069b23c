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
 * - taylor (first-order, Michel et al. 2019): needs gradients from the training engine, which the
 *   studio does not have yet; `importance('taylor', …)` says so. Its hook is `gradients` below.
 *
 * A block's importance is the sum of its heads' and neurons' (what removing all of it takes away);
 * with calibration data, its measured influence on the residual stream instead (influence.ts:
 * 1 − cos(stream in, stream out), ShortGPT's criterion).
 */
import { ModelError } from '../errors.ts';
import { findInitializer, readTensorFloat32, type OnnxModel } from '../onnx/model.ts';
import type { CalibrationStats } from '../calibrate/stats.ts';
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

/**
 * First-order Taylor importance |Σ ∂L/∂m · m| of a mask m per head / neuron (Michel et al. 2019)
 * needs `gradients`: per block, the loss gradients of the output and down projections' inputs
 * times those inputs, accumulated over calibration data — the training engine will provide them.
 */
export function taylorImportance(): StructureImportance {
  throw new ModelError(
    'unsupported',
    'Taylor (gradient) importance needs the training engine, which the studio does not have yet: use magnitude or activation.',
  );
}
