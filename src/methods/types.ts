/**
 * The contract every compression method folder fulfils. A method is data (id, label, options with
 * defaults and ranges) plus pure functions: a kernel over the selected weight matrices and, for
 * methods that choose a storage format, a graph rewrite that makes the exported model read the
 * weight back exactly as the kernel's preview shows it.
 */
import type { GraphEditor } from '../core/compress/graph-editor.ts';
import type { CalibrationStats } from '../core/calibrate/stats.ts';
import type { ErrorSums } from '../core/simd/index.ts';

/**
 * 'hessian': XᵀX per weight (k² doubles); 'inputNorms': Σx² per input feature; 'inputRange': the
 * activation's min and max (both always captured).
 */
export type StatisticNeed = 'hessian' | 'inputNorms' | 'inputRange';

export type OptionSpec =
  | {
      key: string;
      label: string;
      type: 'number';
      min: number;
      max: number;
      step: number;
      default: number;
      /** Only these values are allowed (e.g. block sizes that are powers of two). */
      choices?: readonly number[];
      help?: string;
    }
  | {
      key: string;
      label: string;
      type: 'select';
      choices: readonly { value: string; label: string }[];
      default: string;
      help?: string;
    }
  | { key: string; label: string; type: 'boolean'; default: boolean; help?: string };

export type OptionValues = Record<string, number | string | boolean>;

/**
 * A weight matrix as a kernel sees it. `values` is row-major over `shape` = [rows, cols].
 * `channelAxis` is the axis of output channels (1 for a MatMul weight [K, N], 0 for a Gather table
 * or a Gemm weight with transB); the other axis is the one a matmul reduces over.
 */
export interface WeightMatrix {
  name: string;
  shape: [number, number];
  values: Float32Array;
  channelAxis: 0 | 1;
}

/** What a kernel returns for one tensor. */
export interface KernelResult<E = unknown> {
  /** The weights the compressed model computes with, same layout as the input. */
  values: Float32Array;
  /** Bytes the tensor occupies in the exported file (payload, scales, codebooks). */
  storedBytes: number;
  /** Storage-format data the method's rewrite needs; absent for transforms that stay dense float32. */
  encoding?: E;
  /** Input features the method left unquantized because their activations are outliers (llm-int8). */
  outlierChannels?: number[];
  /**
   * The error sums of `values` against the kernel's input, measured while encoding (int4, int8): a
   * report built from them needs no decoded copy, and `values` may then be decoded only when read
   * (see lazy-values.ts). Equal, to float64 rounding, to errorSums(input, values).
   */
  error?: ErrorSums;
}

/** Rows (axis 0) or columns (axis 1) [start, end) of a weight matrix: one part of a split kernel. */
export interface TensorPart {
  axis: 0 | 1;
  start: number;
  end: number;
}

/** Typed arrays a split kernel's whole-tensor result is made of (shared memory when parts run in a pool). */
export type ArrayAllocator = <A extends Float32Array | Uint16Array | Uint8Array | Int8Array>(
  kind: { new (length: number): A; new (buffer: SharedArrayBuffer): A; readonly BYTES_PER_ELEMENT: number },
  length: number,
) => A;

/**
 * How a method's kernel runs on parts of one tensor, so a pool spreads one big tensor over its
 * workers: each part writes its slice of the whole-tensor result, and the parts together equal the
 * whole-tensor kernel bit for bit (the split tests check it for every method that has one).
 */
export interface KernelSplit<O extends OptionValues = OptionValues, E = unknown, S = unknown> {
  /**
   * The axis parts cut and the unit their boundaries fall on (whole int4 blocks, whole N:M groups),
   * or undefined when these options need the whole tensor in one call (one threshold, one scale).
   */
  partAxis(t: Omit<WeightMatrix, 'values'>, options: O): { axis: 0 | 1; unit: number } | undefined;
  /**
   * Whole-tensor facts the parts depend on (a threshold, column ranges, a k-means codebook), gathered
   * in `rounds` passes over the same parts (in parallel in a pool): `part` reads one part given the
   * state so far and answers something small (counts, ranges), `combine` merges the answers, in part
   * order, into the next state, exactly (sums of counts, minima and maxima), so the state after the
   * last round is the whole-tensor kernel's own. No rounds: the state is undefined.
   */
  survey?: {
    rounds(t: Omit<WeightMatrix, 'values'>, options: O): number;
    part(t: WeightMatrix, part: TensorPart, options: O, round: number, state: S | undefined): unknown;
    combine(
      t: Omit<WeightMatrix, 'values'>,
      parts: readonly TensorPart[],
      options: O,
      round: number,
      answers: unknown[],
      state: S | undefined,
    ): S;
  };
  /** The whole tensor's result with its arrays from `alloc`, zero until the parts fill them. */
  allocate(t: Omit<WeightMatrix, 'values'>, options: O, state: S, alloc: ArrayAllocator): KernelResult<E>;
  /** Runs the kernel on `part` of `t` and writes that part of the result into `out`. */
  runPart(t: WeightMatrix, part: TensorPart, options: O, state: S, out: KernelResult<E>): void;
}

export interface CompressionMethod<O extends OptionValues = OptionValues, E = unknown> {
  id: string;
  label: string;
  /** One sentence for the UI and `--help`. */
  summary: string;
  /**
   * 'transform' methods change values and keep the tensor dense float32 (pruning); 'encode' methods
   * choose how the tensor is stored (fp16, int8, int4, palettes). A tensor has at most one encoding:
   * a later encode step re-encodes the values the earlier one produced.
   */
  role: 'transform' | 'encode';
  options: readonly OptionSpec[];
  /**
   * Activation statistics the kernel reads (data-aware methods: GPTQ, SparseGPT, Wanda); absent for
   * methods that look only at the weights. The orchestrator captures them before running the step.
   */
  needs?: readonly StatisticNeed[];
  /**
   * Kernel over every tensor the step selected (global pruning needs them together); `calibration`
   * is given to methods that declare `needs`.
   */
  apply(tensors: readonly WeightMatrix[], options: O, calibration?: CalibrationStats): KernelResult<E>[];
  /**
   * The dense float32 weights an encoding stands for, as `apply` gave them in `values` (encode methods
   * whose results decode lazily: a pool worker sends the encoding alone, and the values are decoded
   * where and when they are read).
   */
  decode?(encoding: E, tensor: Pick<WeightMatrix, 'shape' | 'channelAxis'>, options: O): Float32Array;
  /** Replace the initializer `tensor.name` by nodes that produce the encoded weight (encode methods). */
  rewrite?(tensor: WeightMatrix, encoding: E, editor: GraphEditor, options: O): void;
  /** How `apply` runs on parts of one tensor (methods whose result is independent per row, column or block). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each method's own split state
  split?: KernelSplit<O, E, any>;
}
