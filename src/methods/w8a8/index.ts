/**
 * W8A8: int8 weights per output channel (the int8 method's kernel and DequantizeLinear export) and,
 * on each selected MatMul / Gemm, the activation input quantized to 8 bits with a scale and zero point
 * calibrated from its range: exported as QuantizeLinear → DequantizeLinear (QDQ) in front of the
 * MatMul, which stock onnxruntime runs (and may fuse into integer kernels).
 */
import { DataType } from '../../core/onnx/dtypes.ts';
import { makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import { ModelError } from '../../core/errors.ts';
import type { GraphEditor } from '../../core/compress/graph-editor.ts';
import type { NodeProto } from '../../core/onnx/proto.ts';
import type { CalibratedMethod } from '../calibrated.ts';
import { statsFor } from '../calibrated.ts';
import { int8Method } from '../int8/index.ts';
import { dequantizeInt8, quantizeInt8, type Int8Quantized } from '../int8/kernel.ts';
import type { WeightMatrix } from '../types.ts';
import { HISTOGRAM_SHIFT } from '../../core/calibrate/stats.ts';
import {
  activationInterval,
  activationQuantization,
  type ActivationQuantization,
  type ActivationRange,
} from './kernel.ts';

export interface W8a8Options {
  [key: string]: string | number | boolean;
  activation: 'asymmetric' | 'symmetric';
  range: ActivationRange;
}

export interface W8a8Encoding {
  weight: Int8Quantized;
  activation: ActivationQuantization;
}

export const w8a8Method: CalibratedMethod<W8a8Options, W8a8Encoding> = {
  id: 'w8a8',
  label: 'W8A8 (int8 weights and activations)',
  summary:
    'int8 weights per output channel, and each MatMul input quantized to 8 bits with a scale calibrated ' +
    'from its range (min–max, percentile or least squared error; needs calibration); the preview shows the weights only, since activation ' +
    'quantization changes what the exported model computes at run time, not its weights.',
  role: 'encode',
  needs: ['inputRange'],
  options: [
    {
      key: 'activation',
      label: 'Activations',
      type: 'select',
      choices: [
        { value: 'symmetric', label: 'int8, zero point 0' },
        { value: 'asymmetric', label: 'uint8 with a zero point' },
      ],
      // int8 × int8 (S8S8) is what onnxruntime recommends for QDQ on x86: its uint8 × int8 kernels
      // can saturate on CPUs without VNNI. It also measured better on stories260K (3.558 vs 3.568).
      default: 'symmetric',
      help: 'Asymmetric spends all 256 codes on the calibrated range; symmetric covers ± its largest |x|.',
    },
    {
      key: 'range',
      label: 'Activation range',
      type: 'select',
      choices: [
        { value: 'minmax', label: 'Min–max' },
        { value: 'percentile', label: 'Percentile (0.01 %–99.99 %)' },
        { value: 'mse', label: 'Least squared error' },
      ],
      default: 'minmax',
      help: 'Min–max never clips; percentile and MSE clip rare large activations for a finer step.',
    },
  ],
  apply(tensors, options, calibration) {
    return tensors.map((t) => {
      const stats = statsFor(calibration, t, 'w8a8', ['inputRange']);
      const [rows, cols] = t.shape;
      const weight = quantizeInt8(t.values, rows, cols, t.channelAxis, true);
      const values = dequantizeInt8(weight, rows, cols, t.channelAxis);
      const symmetric = options.activation === 'symmetric';
      const [lo, hi] = activationInterval(stats, options.range, symmetric, HISTOGRAM_SHIFT);
      const activation = activationQuantization(lo, hi, symmetric);
      // the activation's scale and zero point live once per MatMul, not per weight: not counted
      const storedBytes = weight.q.byteLength + weight.scales.byteLength;
      return { values, storedBytes, encoding: { weight, activation } };
    });
  },
  rewrite(t, encoding, editor) {
    int8Method.rewrite!(t, encoding.weight, editor, { granularity: 'per-channel', symmetric: true });
    const matmuls = matmulsReading(t, editor);
    const { scale, zeroPoint, symmetric } = encoding.activation;
    const scaleName = editor.uniqueName(`${t.name}_input_scale`);
    const zpName = editor.uniqueName(`${t.name}_input_zero_point`);
    editor.setInitializer(
      rawTensor(scaleName, DataType.FLOAT, [], new Uint8Array(Float32Array.of(scale).buffer)),
    );
    editor.setInitializer(
      rawTensor(
        zpName,
        symmetric ? DataType.INT8 : DataType.UINT8,
        [],
        symmetric ? new Uint8Array(Int8Array.of(zeroPoint).buffer) : Uint8Array.of(zeroPoint),
      ),
    );
    editor.requireOpset('', 13);
    for (const node of matmuls) {
      const x = node.input[0];
      const quantized = editor.uniqueName(`${x}_quantized_for_${t.name}`);
      const dequantized = editor.uniqueName(`${x}_dequantized_for_${t.name}`);
      editor.replaceNode(node, [
        makeNode('QuantizeLinear', [x, scaleName, zpName], [quantized], {}, { name: quantized }),
        makeNode(
          'DequantizeLinear',
          [quantized, scaleName, zpName],
          [dequantized],
          {},
          {
            name: dequantized,
          },
        ),
        { ...node, input: [dequantized, ...node.input.slice(1)] },
      ]);
    }
  },
};

/**
 * The MatMul / Gemm nodes that multiply an activation by `t` (directly or through a Transpose of it),
 * the nodes whose activation input gets the QDQ pair. Anything else reading the weight is refused:
 * its output would not be quantized as calibrated.
 */
function matmulsReading(t: WeightMatrix, editor: GraphEditor): NodeProto[] {
  const out: NodeProto[] = [];
  const refuse = (node: NodeProto): never => {
    throw new ModelError(
      'unsupported',
      `w8a8 quantizes the activation a weight is multiplied with; '${t.name}' is also read by a ` +
        `${node.op_type} node${node.name ? ` '${node.name}'` : ''}. Exclude it from the w8a8 step.`,
    );
  };
  const isProduct = (node: NodeProto, index: number) =>
    !node.domain && index === 1 && (node.op_type === 'MatMul' || node.op_type === 'Gemm');
  for (const { node, index } of editor.consumers(t.name)) {
    if (node.op_type === 'DequantizeLinear' && node.output[0] === t.name) continue;
    if (isProduct(node, index)) out.push(node);
    else if (!node.domain && node.op_type === 'Transpose' && index === 0) {
      for (const use of editor.consumers(node.output[0]))
        if (isProduct(use.node, use.index)) out.push(use.node);
        else refuse(use.node);
    } else refuse(node);
  }
  if (!out.length)
    throw new ModelError(
      'unsupported',
      `'${t.name}' feeds no MatMul or Gemm: w8a8 has no activation to quantize.`,
    );
  return out;
}
