/**
 * int4 block-wise weights. Export as com.microsoft MatMulNBits (onnxruntime's own layout, as in
 * transformers.js q4 models) where the weight feeds MatMuls directly, else as blocked int4
 * DequantizeLinear (opset 21), which stock onnxruntime runs on CPU/wasm.
 */
import { DataType } from '../../core/onnx/dtypes.ts';
import { bytesOf, makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { GraphEditor } from '../../core/compress/graph-editor.ts';
import type { CompressionMethod, WeightMatrix } from '../types.ts';
import {
  blockedScaleLayout,
  dequantizeInt4Blockwise,
  packInt4Natural,
  packMatMulNBits,
  packNibbles,
  packZeroPointsMatMulNBits,
  quantizeInt4Blockwise,
  type Int4Quantized,
} from './kernel.ts';

export interface Int4Options {
  [key: string]: string | number | boolean;
  blockSize: number;
  symmetric: boolean;
  format: 'matmulnbits' | 'dequantize';
}

export const INT4_BLOCK_SIZES = [16, 32, 64, 128] as const;

/** Bytes of the exported tensor: 4-bit codes, float32 scales, packed 4-bit zero points. */
export function int4StoredBytes(q: Int4Quantized): number {
  const codes = (q.channels * q.blocksPerChannel * q.blockSize) / 2; // MatMulNBits pads K to whole blocks
  const scales = q.scales.byteLength;
  const zps = q.zeroPoints ? q.channels * Math.ceil(q.blocksPerChannel / 2) : 0;
  return codes + scales + zps;
}

function rewriteMatMulNBits(t: WeightMatrix, q: Int4Quantized, editor: GraphEditor): void {
  const [k, n] = t.shape;
  const consumers = editor.consumers(t.name);
  editor.removeInitializer(t.name);
  const bName = editor.uniqueName(`${t.name}_Q4`);
  const scaleName = editor.uniqueName(`${t.name}_scales`);
  const blob = q.blockSize / 2;
  editor.setInitializer(
    rawTensor(bName, DataType.UINT8, [n, q.blocksPerChannel, blob], packMatMulNBits(q, k, n, 1)),
  );
  editor.setInitializer(rawTensor(scaleName, DataType.FLOAT, [q.scales.length], bytesOf(q.scales)));
  const inputs = [bName, scaleName];
  if (q.zeroPoints) {
    const zpName = editor.uniqueName(`${t.name}_zero_points`);
    const packed = packZeroPointsMatMulNBits(q);
    editor.setInitializer(rawTensor(zpName, DataType.UINT8, [packed.length], packed));
    inputs.push(zpName);
  }
  editor.requireOpset('com.microsoft', 1);
  for (const { node } of consumers) {
    const name = editor.uniqueName(node.name ? `${node.name}_Q4` : `${t.name}_MatMulNBits`);
    editor.replaceNode(node, [
      makeNode(
        'MatMulNBits',
        [node.input[0], ...inputs],
        [node.output[0]],
        { K: k, N: n, bits: 4, block_size: q.blockSize },
        { name, domain: 'com.microsoft' },
      ),
    ]);
  }
}

function rewriteBlockedDequantize(t: WeightMatrix, q: Int4Quantized, editor: GraphEditor): void {
  const [rows, cols] = t.shape;
  const reduceAxis = t.channelAxis === 1 ? 0 : 1;
  const scaleDims = t.channelAxis === 1 ? [q.blocksPerChannel, q.channels] : [q.channels, q.blocksPerChannel];
  editor.removeInitializer(t.name);
  const qName = editor.uniqueName(`${t.name}_DQ_Q4`);
  const scaleName = editor.uniqueName(`${t.name}_DQ_scales`);
  const qType = q.zeroPoints ? DataType.UINT4 : DataType.INT4;
  const packed = packInt4Natural(q);
  editor.setInitializer(rawTensor(qName, qType, [rows, cols], packed));
  const scales = blockedScaleLayout(q.scales, q.channels, q.blocksPerChannel, t.channelAxis);
  editor.setInitializer(rawTensor(scaleName, DataType.FLOAT, scaleDims, bytesOf(scales)));
  const inputs = [qName, scaleName];
  if (q.zeroPoints) {
    const zpName = editor.uniqueName(`${t.name}_DQ_zero_points`);
    const zps = blockedScaleLayout(q.zeroPoints, q.channels, q.blocksPerChannel, t.channelAxis);
    editor.setInitializer(rawTensor(zpName, DataType.UINT4, scaleDims, packNibbles(zps)));
    inputs.push(zpName);
  }
  editor.requireOpset('', 21);
  editor.addDecodeNodes(
    makeNode(
      'DequantizeLinear',
      inputs,
      [t.name],
      { axis: reduceAxis, block_size: q.blockSize },
      { name: editor.uniqueName(`${t.name}_DequantizeLinear`) },
    ),
  );
}

/**
 * MatMulNBits applies when every reader of the weight is a well-formed MatMul taking it as B: two
 * named inputs, one named output. A malformed MatMul (inputs or outputs missing, as in a damaged
 * file) is left as it is, and the weight is decoded by a DequantizeLinear in front of it instead.
 */
function feedsOnlyMatMuls(t: WeightMatrix, editor: GraphEditor): boolean {
  const consumers = editor.consumers(t.name);
  return (
    t.channelAxis === 1 &&
    consumers.length > 0 &&
    consumers.every(
      ({ node, index }) =>
        node.op_type === 'MatMul' &&
        !node.domain &&
        index === 1 &&
        node.input.length === 2 &&
        !!node.input[0] &&
        node.output.length === 1 &&
        !!node.output[0],
    )
  );
}

export const int4Method: CompressionMethod<Int4Options, Int4Quantized> = {
  id: 'int4',
  label: 'int4 block-wise',
  summary: 'Round weights to 4-bit integers with one scale per block of input features (round to nearest).',
  role: 'encode',
  options: [
    {
      key: 'blockSize',
      label: 'Block size',
      type: 'number',
      min: 16,
      max: 128,
      step: 16,
      choices: INT4_BLOCK_SIZES,
      default: 32,
      help: 'Weights per scale along the input dimension; smaller blocks are more accurate and larger.',
    },
    {
      key: 'symmetric',
      label: 'Symmetric',
      type: 'boolean',
      default: true,
      help: 'Symmetric: zero point 8 implied. Otherwise a 4-bit zero point per block.',
    },
    {
      key: 'format',
      label: 'Export as',
      type: 'select',
      choices: [
        { value: 'matmulnbits', label: 'MatMulNBits (onnxruntime, transformers.js q4)' },
        { value: 'dequantize', label: 'DequantizeLinear int4 (ONNX opset 21)' },
      ],
      default: 'matmulnbits',
    },
  ],
  apply(tensors, options) {
    return tensors.map((t) => {
      const [rows, cols] = t.shape;
      const encoding = quantizeInt4Blockwise(
        t.values,
        rows,
        cols,
        t.channelAxis,
        options.blockSize,
        options.symmetric,
      );
      const values = dequantizeInt4Blockwise(encoding, rows, cols, t.channelAxis);
      return { values, storedBytes: int4StoredBytes(encoding), encoding };
    });
  },
  rewrite(t, encoding, editor, options) {
    if (options.format === 'matmulnbits' && feedsOnlyMatMuls(t, editor))
      rewriteMatMulNBits(t, encoding, editor);
    else rewriteBlockedDequantize(t, encoding, editor);
  },
};
