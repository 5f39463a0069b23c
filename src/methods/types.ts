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
}
