/**
 * AWQ-style activation-aware int4: per-input-feature scales s searched on calibration data (see
 * kernel.ts), int4 block-wise codes of diag(s)·W written as the int4 method writes them
 * (MatMulNBits or blocked DequantizeLinear), and the inverse scale applied in the graph:
 * - on the activation, a Mul by 1/s in front of each MatMul / Gemm that multiplies by the weight
 *   (then the MatMul becomes MatMulNBits as with plain int4);
 * - for any other reader (a Gather, a MatMul taking the weight as its first input), the weight is
 *   rebuilt as DequantizeLinear(int4) · 1/s along its input axis.
 * Either way the model computes with diag(1/s)·Q(diag(s)·W), the values the preview shows.
 */
import { DataType } from '../../core/onnx/dtypes.ts';
import { bytesOf, makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { GraphEditor, Consumer } from '../../core/compress/graph-editor.ts';
import type { InputStats } from '../../core/calibrate/stats.ts';
import type { TensorProto } from '../../core/onnx/proto.ts';
import type { CalibratedMethod } from '../calibrated.ts';
import { DAMPENING_OPTION, statsFor } from '../calibrated.ts';
import { int4Method, int4StoredBytes } from '../int4/index.ts';
import type { KernelResult, WeightMatrix } from '../types.ts';
import { awqInt4, type AwqEncoding } from './kernel.ts';

export type { AwqEncoding };

export interface AwqOptions {
  [key: string]: string | number | boolean;
  blockSize: number;
  symmetric: boolean;
  format: 'matmulnbits' | 'dequantize';
  grid: number;
  scaleGroup: 'weight' | 'input';
  quantizer: 'rtn' | 'gptq';
  clip: boolean;
  dampening: number;
  actOrder: boolean;
}

/** A MatMul / Gemm reading the weight as its B input: the activation it multiplies can take the Mul. */
function isProduct({ node, index }: Consumer, weight: string): boolean {
  return (
    !node.domain &&
    (node.op_type === 'MatMul' || node.op_type === 'Gemm') &&
    index === 1 &&
    !!node.input[0] &&
    node.input[0] !== weight
  );
}

/**
 * The nodes whose activation input gets the Mul by 1/s: products reading the weight directly, or
 * through a Transpose of it (a weight stored [N, K]); null when anything else reads it.
 */
function productsOf(t: WeightMatrix, editor: GraphEditor): Consumer[] | null {
  const out: Consumer[] = [];
  const direct = editor.consumers(t.name);
  if (!direct.length) return null;
  for (const c of direct) {
    if (isProduct(c, t.name)) out.push(c);
    else if (!c.node.domain && c.node.op_type === 'Transpose' && c.index === 0 && c.node.output[0]) {
      const uses = editor.consumers(c.node.output[0]);
      if (!uses.length || !uses.every((u) => isProduct(u, c.node.output[0]))) return null;
      out.push(...uses);
    } else return null;
  }
  return out;
}

/** Activations whose producer already carries 1/s, per export (one editor per graph and export). */
const folded = new WeakMap<GraphEditor, Set<string>>();
function foldedActivations(editor: GraphEditor): Set<string> {
  let set = folded.get(editor);
  if (!set) folded.set(editor, (set = new Set()));
  return set;
}

/** A float32 initializer's values, when they are stored in the file itself (raw or float_data). */
function floatValues(t: TensorProto): Float32Array | null {
  if (t.data_type !== DataType.FLOAT || t.data_location === 1) return null;
  if (t.raw_data?.length) return new Float32Array(Uint8Array.from(t.raw_data).buffer);
  if (t.float_data?.length) return Float32Array.from(t.float_data);
  return null;
}

/**
 * AWQ's fold: when activation x is written by a per-feature multiply by an initializer (an RMSNorm's
 * weight, `Mul(h, g)`; LayerNormalization / SimplifiedLayerNormalization's scale and bias), and only
 * the weights sharing this scale read x, the producer's parameters are divided by s and no Mul is
 * added. Returns false (nothing changed) whenever any of that does not hold.
 */
function foldInverse(x: string, t: WeightMatrix, e: AwqEncoding, editor: GraphEditor): boolean {
  const k = e.inverseScale.length;
  const sharing = new Set(e.sharedWith);
  // every reader of x multiplies it by a weight of this group
  const readers = editor.consumers(x);
  const ofGroup = (c: Consumer): boolean => {
    if (c.index !== 0 || c.node.domain || !['MatMul', 'Gemm'].includes(c.node.op_type)) return false;
    const b = c.node.input[1];
    if (sharing.has(b)) return true;
    const transpose = editor.producer(b);
    return transpose?.op_type === 'Transpose' && !transpose.domain && sharing.has(transpose.input[0]);
  };
  if (!readers.length || !readers.every(ofGroup) || !sharing.has(t.name) || editor.isGraphOutput(x))
    return false;
  const producer = editor.producer(x);
  if (!producer || producer.domain || producer.output.length !== 1) return false;
  // the per-feature parameters to divide: [K] (or [1, …, K]) float32 initializers read by this node only
  const params: string[] = [];
  if (producer.op_type === 'Mul') {
    const own = producer.input.filter((name) => {
      try {
        editor.getInitializer(name);
        return true;
      } catch {
        return false;
      }
    });
    if (own.length !== 1) return false;
    params.push(own[0]);
  } else if (
    producer.op_type === 'LayerNormalization' ||
    producer.op_type === 'SimplifiedLayerNormalization'
  ) {
    params.push(...producer.input.slice(1).filter((name) => !!name));
    if (!params.length) return false;
  } else return false;
  const scaled: TensorProto[] = [];
  for (const name of params) {
    let tensor: TensorProto;
    try {
      tensor = editor.getInitializer(name);
    } catch {
      return false;
    }
    const dims = tensor.dims.map(Number);
    const values = floatValues(tensor);
    if (!values || values.length !== k || dims[dims.length - 1] !== k) return false;
    if (editor.consumers(name).length !== 1) return false;
    const divided = values.map((v, j) => v * e.inverseScale[j]);
    scaled.push(rawTensor(name, DataType.FLOAT, dims, bytesOf(divided)));
  }
  for (const tensor of scaled) editor.setInitializer(tensor);
  return true;
}

export const awqMethod: CalibratedMethod<AwqOptions, AwqEncoding> = {
  id: 'awq',
  label: 'AWQ (activation-aware int4)',
  summary:
    'int4 block-wise after scaling each input feature by its activation magnitude to the power α, α searched per layer ' +
    'to minimise the output error; the activation is divided by the same scale at run time (needs calibration).',
  role: 'encode',
  // XᵀX gives the exact output error of each candidate scale; Σx² per feature gives the magnitudes
  needs: ['hessian', 'inputNorms'],
  options: [
    int4Method.options[0],
    int4Method.options[1],
    int4Method.options[2],
    {
      key: 'grid',
      label: 'α grid points',
      type: 'number',
      min: 1,
      max: 100,
      step: 1,
      default: 20,
      help: 'Values of α tried, evenly spaced on [0, 1]; α = 0 is plain round-to-nearest, so more points never do worse.',
    },
    {
      key: 'scaleGroup',
      label: 'Scale shared by',
      type: 'select',
      choices: [
        { value: 'weight', label: 'each weight (its own Mul)' },
        { value: 'input', label: 'weights reading one activation (as AWQ: q/k/v, gate/up)' },
      ],
      default: 'weight',
      help: 'Each weight’s own scale fits it best; one scale per activation is what AWQ folds into the norm before it.',
    },
    {
      key: 'quantizer',
      label: 'Rounding',
      type: 'select',
      choices: [
        { value: 'rtn', label: 'round to nearest (AWQ)' },
        { value: 'gptq', label: 'GPTQ on the scaled weight' },
      ],
      default: 'rtn',
      help: 'α is searched with the chosen rounding: α = 0 is plain round-to-nearest or plain GPTQ.',
    },
    {
      key: 'clip',
      label: 'Clip search',
      type: 'boolean',
      default: true,
      help: 'Round to nearest only: shrink each block’s range where that lowers the output error (AWQ’s clipping).',
    },
    { ...DAMPENING_OPTION, help: 'GPTQ rounding only: ' + DAMPENING_OPTION.help },
    {
      key: 'actOrder',
      label: 'Act-order',
      type: 'boolean',
      default: true,
      help: 'GPTQ rounding only: quantize the inputs with the largest activations first.',
    },
  ],
  apply(tensors, options, calibration) {
    const kernelOptions = {
      blockSize: options.blockSize,
      symmetric: options.symmetric,
      gridPoints: options.grid,
      quantizer: options.quantizer,
      clip: options.clip,
      dampening: options.dampening,
      actOrder: options.actOrder,
    };
    // groups of tensors that share one scale: each alone, or all those reading one activation
    const groups = new Map<string, { stats: InputStats; at: number[] }>();
    tensors.forEach((t, i) => {
      const stats = statsFor(calibration, t, 'awq', ['hessian', 'inputNorms']);
      const key = options.scaleGroup === 'input' ? `input:${stats.input}` : `weight:${i}`;
      const g = groups.get(key) ?? { stats, at: [] };
      g.at.push(i);
      groups.set(key, g);
    });
    const results: KernelResult<AwqEncoding>[] = new Array(tensors.length);
    for (const { stats, at } of groups.values()) {
      const out = awqInt4(
        at.map((i) => tensors[i]),
        stats,
        kernelOptions,
      );
      out.forEach(({ values, encoding }, j) => {
        // the inverse scale is stored once per weight (each weight's readers get their own Mul)
        const storedBytes = int4StoredBytes(encoding.int4) + encoding.inverseScale.byteLength;
        results[at[j]] = { values, storedBytes, encoding };
      });
    }
    return results;
  },
  rewrite(t, e, editor, options) {
    const int4Options = {
      blockSize: options.blockSize,
      symmetric: options.symmetric,
      format: options.format,
    };
    const k = e.inverseScale.length;
    const products = productsOf(t, editor);
    editor.requireOpset('', 7);
    if (products) {
      const x = products[0].node.input[0];
      const folded = foldedActivations(editor);
      if (!folded.has(x) && products.every((p) => p.node.input[0] === x) && foldInverse(x, t, e, editor))
        folded.add(x);
      if (!folded.has(x)) {
        const inverse = editor.uniqueName(`${t.name}_awq_inverse_scale`);
        editor.setInitializer(rawTensor(inverse, DataType.FLOAT, [k], bytesOf(e.inverseScale)));
        for (const { node } of products) {
          const input = node.input[0];
          const scaled = editor.uniqueName(`${input}_awq_scaled_for_${t.name}`);
          editor.replaceNode(node, [
            makeNode('Mul', [input, inverse], [scaled], {}, { name: editor.uniqueName(`${scaled}_Mul`) }),
            { ...node, input: [scaled, ...node.input.slice(1)] },
          ]);
        }
      }
      int4Method.rewrite!(t, e.int4, editor, int4Options);
      return;
    }
    // any other reader: the weight itself is rebuilt, diag(1/s) · dequantize(codes of diag(s) · W)
    const scaledWeight = editor.uniqueName(`${t.name}_awq_scaled`);
    int4Method.rewrite!({ ...t, name: scaledWeight }, e.int4, editor, {
      ...int4Options,
      format: 'dequantize',
    });
    editor.removeInitializer(t.name);
    const inverse = editor.uniqueName(`${t.name}_awq_inverse_scale`);
    // broadcast along the input axis: [K, 1] against a [K, N] weight, [K] against an [N, K] one
    const dims = t.channelAxis === 1 ? [k, 1] : [k];
    editor.setInitializer(rawTensor(inverse, DataType.FLOAT, dims, bytesOf(e.inverseScale)));
    editor.addDecodeNodes(
      makeNode(
        'Mul',
        [scaledWeight, inverse],
        [t.name],
        {},
        { name: editor.uniqueName(`${t.name}_awq_Mul`) },
      ),
    );
  },
};
