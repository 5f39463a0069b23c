/**
 * int4 block-wise weights. Export as com.microsoft MatMulNBits (onnxruntime's own layout, as in
 * transformers.js q4 models) where the weight feeds MatMuls directly, else as blocked int4
 * DequantizeLinear (opset 21), which stock onnxruntime runs on CPU/wasm.
 */
import { DataType } from '../../core/onnx/dtypes.ts';
import { bytesOf, makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { GraphEditor } from '../../core/compress/graph-editor.ts';
import type { CompressionMethod, KernelSplit, WeightMatrix } from '../types.ts';
import { partMatrix, partShape, placePart } from '../split.ts';
import type { NodeProto } from '../../core/onnx/proto.ts';
import { noErrorSums } from '../../core/simd/index.ts';
import { withLazyValues } from '../lazy-values.ts';
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

function floatAttr(node: NodeProto, name: string, fallback: number): number {
  const a = node.attribute?.find((x) => x.name === name);
  return a?.f !== undefined && a.f !== null ? Number(a.f) : fallback;
}

function intAttr(node: NodeProto, name: string, fallback: number): number {
  const a = node.attribute?.find((x) => x.name === name);
  return a?.i !== undefined && a.i !== null ? Number(a.i) : fallback;
}

/** A float32 1-D initializer of `n` values in the editor's graph: Gemm's C as MatMulNBits' bias. */
function isBiasVector(editor: GraphEditor, name: string, n: number): boolean {
  try {
    const c = editor.getInitializer(name);
    return c.data_type === DataType.FLOAT && c.dims.length === 1 && Number(c.dims[0]) === n;
  } catch {
    return false;
  }
}

/**
 * A Gemm reading the weight as B, as MatMulNBits computes it: Y = alpha·(A·B') + beta·C becomes
 * MatMulNBits(A) (its bias input taking a [N] C when alpha and beta are 1), then a Mul by alpha and
 * an Add of (beta·)C where they are needed. [M, K] · B' → [M, N].
 */
function gemmAsMatMulNBits(
  node: NodeProto,
  inputs: string[],
  attrs: { K: number; N: number; bits: number; block_size: number },
  editor: GraphEditor,
): NodeProto[] {
  const n = attrs.N;
  const alpha = floatAttr(node, 'alpha', 1);
  const beta = floatAttr(node, 'beta', 1);
  const c = node.input[2] || undefined;
  const base = node.name || node.output[0];
  const name = (what: string) => editor.uniqueName(`${base}_${what}`);
  const scalar = (what: string, value: number) => {
    const t = name(what);
    editor.setInitializer(rawTensor(t, DataType.FLOAT, [], bytesOf(Float32Array.of(value))));
    return t;
  };
  const asBias = c !== undefined && alpha === 1 && beta === 1 && isBiasVector(editor, c, n);
  // inputs: A, B, scales, zero_points, g_idx, bias (absent optional inputs are named '')
  const withBias = asBias ? [...inputs, ...Array<string>(4 - inputs.length).fill(''), c] : inputs;
  const mm = makeNode(
    'MatMulNBits',
    [node.input[0], ...withBias],
    [asBias || (alpha === 1 && c === undefined) ? node.output[0] : name('matmul')],
    attrs,
    { name: name('Q4'), domain: 'com.microsoft' },
  );
  const out: NodeProto[] = [mm];
  let y = mm.output[0];
  if (alpha !== 1) {
    const scaled = c === undefined || asBias ? node.output[0] : name('alpha_out');
    out.push(makeNode('Mul', [y, scalar('alpha', alpha)], [scaled], {}, { name: name('alpha') }));
    y = scaled;
  }
  if (c !== undefined && !asBias) {
    let bias = c;
    if (beta !== 1) {
      bias = name('beta_c');
      out.push(makeNode('Mul', [c, scalar('beta', beta)], [bias], {}, { name: name('beta') }));
    }
    if (beta !== 0) out.push(makeNode('Add', [y, bias], [node.output[0]], {}, { name: name('bias') }));
    else out.push(makeNode('Identity', [y], [node.output[0]], {}, { name: name('bias') }));
  }
  return out;
}

function rewriteMatMulNBits(t: WeightMatrix, q: Int4Quantized, editor: GraphEditor): void {
  // MatMul reads B as [K, N] (channels on axis 1); Gemm with transB as [N, K] (channels on axis 0)
  const [k, n] = t.channelAxis === 1 ? t.shape : [t.shape[1], t.shape[0]];
  const consumers = editor.consumers(t.name);
  editor.removeInitializer(t.name);
  const bName = editor.uniqueName(`${t.name}_Q4`);
  const scaleName = editor.uniqueName(`${t.name}_scales`);
  const blob = q.blockSize / 2;
  editor.setInitializer(
    rawTensor(
      bName,
      DataType.UINT8,
      [n, q.blocksPerChannel, blob],
      packMatMulNBits(q, t.shape[0], t.shape[1], t.channelAxis),
    ),
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
  const attrs = { K: k, N: n, bits: 4, block_size: q.blockSize };
  for (const { node } of consumers) {
    if (node.op_type === 'Gemm') {
      editor.replaceNode(node, gemmAsMatMulNBits(node, inputs, attrs, editor));
      continue;
    }
    const name = editor.uniqueName(node.name ? `${node.name}_Q4` : `${t.name}_MatMulNBits`);
    editor.replaceNode(node, [
      makeNode('MatMulNBits', [node.input[0], ...inputs], [node.output[0]], attrs, {
        name,
        domain: 'com.microsoft',
      }),
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
 * Why MatMulNBits cannot replace a reader of the weight, or undefined when it can: a well-formed
 * MatMul taking it as B (two named inputs, one named output), or a Gemm taking it as B with A not
 * transposed and B laid out as the weight's channels say (transB = 1 for [N, K]). A malformed node
 * (inputs or outputs missing, as in a damaged file) is left as it is, and the weight is decoded by a
 * DequantizeLinear in front of it instead.
 */
export function matMulNBitsRefusal(node: NodeProto, index: number, channelAxis: 0 | 1): string | undefined {
  const named = !!node.input[0] && node.output.length === 1 && !!node.output[0];
  if (node.domain || index !== 1 || !named) return `a ${node.op_type} reads it other than as B`;
  if (node.op_type === 'MatMul')
    return node.input.length === 2 && channelAxis === 1 ? undefined : 'a MatMul reads it transposed';
  if (node.op_type === 'Gemm') {
    if (intAttr(node, 'transA', 0) !== 0) return 'a Gemm reads its input transposed (transA = 1)';
    if ((intAttr(node, 'transB', 0) ? 0 : 1) !== channelAxis)
      return 'Gemms read it both as [K, N] and as [N, K]';
    return node.input.length <= 3 ? undefined : 'a Gemm has extra inputs';
  }
  return `a ${node.op_type} reads it`;
}

/** Why the weight cannot be exported as MatMulNBits (the first reader that refuses), else undefined. */
function matMulNBitsProblem(t: WeightMatrix, editor: GraphEditor): string | undefined {
  const consumers = editor.consumers(t.name);
  if (!consumers.length) return 'nothing reads it';
  for (const { node, index } of consumers) {
    const why = matMulNBitsRefusal(node, index, t.channelAxis);
    if (why) return why;
  }
  return undefined;
}

/**
 * int4 on ranges of rows: a [C, K] table's rows are whole channels; a [K, N] weight's blocks run down
 * its rows, so its parts are whole blocks of rows. Either way each part's scales are the whole
 * tensor's, written into their place in the [channels, blocks] layout.
 */
export const int4Split: KernelSplit<Int4Options, Int4Quantized> = {
  partAxis(t, options) {
    return { axis: 0, unit: t.channelAxis === 1 ? options.blockSize : 1 };
  },
  allocate(t, options, _state, alloc) {
    const [rows, cols] = t.shape;
    const channels = t.channelAxis === 1 ? cols : rows;
    const k = t.channelAxis === 1 ? rows : cols;
    const blocks = Math.ceil(k / options.blockSize);
    const encoding: Int4Quantized = {
      channels,
      k,
      blockSize: options.blockSize,
      blocksPerChannel: blocks,
      codes: alloc(Uint8Array, rows * cols),
      scales: alloc(Float32Array, channels * blocks),
      zeroPoints: options.symmetric ? null : alloc(Uint8Array, channels * blocks),
    };
    return { values: alloc(Float32Array, rows * cols), storedBytes: int4StoredBytes(encoding), encoding };
  },
  runPart(t, part, options, _state, out) {
    const [rows, cols] = partShape(t.shape, part);
    const q = quantizeInt4Blockwise(
      partMatrix(t, part).values,
      rows,
      cols,
      t.channelAxis,
      options.blockSize,
      options.symmetric,
    );
    placePart(dequantizeInt4Blockwise(q, rows, cols, t.channelAxis), out.values, t.shape, part);
    const whole = out.encoding!;
    placePart(q.codes, whole.codes, t.shape, part);
    const place = (from: Float32Array | Uint8Array, to: Float32Array | Uint8Array) => {
      if (t.channelAxis === 0) {
        to.set(from, part.start * whole.blocksPerChannel); // [rows = channels, blocks]
        return;
      }
      // [channels, blocks]: this part's blocks b0.. of every channel
      const b0 = part.start / options.blockSize;
      for (let c = 0; c < q.channels; c++)
        to.set(
          from.subarray(c * q.blocksPerChannel, (c + 1) * q.blocksPerChannel),
          c * whole.blocksPerChannel + b0,
        );
    };
    place(q.scales, whole.scales);
    if (q.zeroPoints) place(q.zeroPoints, whole.zeroPoints!);
  },
};

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
      const axis = t.channelAxis; // the decode closure must not keep t (and its values) alive
      // the error against the input measured while encoding: the decode waits until values are read
      const error = noErrorSums();
      const encoding = quantizeInt4Blockwise(
        t.values,
        rows,
        cols,
        t.channelAxis,
        options.blockSize,
        options.symmetric,
        error,
      );
      return withLazyValues({ storedBytes: int4StoredBytes(encoding), encoding, error }, () =>
        dequantizeInt4Blockwise(encoding, rows, cols, axis),
      );
    });
  },
  decode(encoding, t) {
    return dequantizeInt4Blockwise(encoding, t.shape[0], t.shape[1], t.channelAxis);
  },
  rewrite(t, encoding, editor, options) {
    if (options.format !== 'matmulnbits') return rewriteBlockedDequantize(t, encoding, editor);
    const problem = matMulNBitsProblem(t, editor);
    if (!problem) return rewriteMatMulNBits(t, encoding, editor);
    editor.warn(
      `${t.name}: exported as int4 DequantizeLinear (opset 21) instead of MatMulNBits: ${problem}.`,
    );
    rewriteBlockedDequantize(t, encoding, editor);
  },
  split: int4Split,
};
