/**
 * LLM.int8-style 8-bit weights: calibrated outlier input features keep float32 weights, the rest are
 * int8 per output channel. A MatMul reading the weight is exported as LLM.int8's decomposition,
 *   x[..., inliers] @ DequantizeLinear(W_int8) + x[..., outliers] @ W_outliers,
 * with the features picked by Gather on the activation's last axis; any other reader (a Gemm, a
 * MatMul taking the weight as its first input) gets the whole weight rebuilt from the same two parts
 * (Concat, then a Gather that puts each feature back in place). A layer without outliers is plain
 * int8 DequantizeLinear, as the int8 method writes it.
 */
import { DataType } from '../../core/onnx/dtypes.ts';
import { bytesOf, makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { CalibratedMethod } from '../calibrated.ts';
import { statsFor } from '../calibrated.ts';
import { int8Method } from '../int8/index.ts';
import type { GraphEditor } from '../../core/compress/graph-editor.ts';
import type { WeightMatrix } from '../types.ts';
import { llmInt8, llmInt8StoredBytes, type LlmInt8Encoding } from './kernel.ts';

export interface LlmInt8Options {
  [key: string]: string | number | boolean;
  threshold: number;
}

// one default for the method and the page's outlier charts
import { DEFAULT_OUTLIER_THRESHOLD } from '../../core/calibrate/summary.ts';
export { DEFAULT_OUTLIER_THRESHOLD };

/** Writes the int8 inlier part's codes and scale; returns the DequantizeLinear's output name. */
function writeInlierPart(t: WeightMatrix, e: LlmInt8Encoding, editor: GraphEditor): string {
  const int8 = e.int8!;
  const n = int8.scales.length;
  const dims = t.channelAxis === 1 ? [e.inliers.length, n] : [n, e.inliers.length];
  const qName = editor.uniqueName(`${t.name}_inliers_quantized`);
  const scaleName = editor.uniqueName(`${t.name}_inliers_scale`);
  const out = editor.uniqueName(`${t.name}_inliers`);
  editor.setInitializer(rawTensor(qName, DataType.INT8, dims, bytesOf(int8.q)));
  editor.setInitializer(rawTensor(scaleName, DataType.FLOAT, [n], bytesOf(int8.scales)));
  editor.addDecodeNodes(
    makeNode(
      'DequantizeLinear',
      [qName, scaleName],
      [out],
      { axis: t.channelAxis },
      { name: editor.uniqueName(`${out}_DequantizeLinear`) },
    ),
  );
  return out;
}

function indexTensor(editor: GraphEditor, name: string, values: Uint32Array): string {
  const unique = editor.uniqueName(name);
  editor.setInitializer(rawTensor(unique, DataType.INT32, [values.length], bytesOf(Int32Array.from(values))));
  return unique;
}

export const llmInt8Method: CalibratedMethod<LlmInt8Options, LlmInt8Encoding> = {
  id: 'llm-int8',
  label: 'LLM.int8 (outliers in float)',
  summary:
    'int8 weights per output channel, except the rows of input features whose activations exceed a threshold, kept in float (needs calibration).',
  role: 'encode',
  // max |x| per input feature: captured with the input norms on every calibration run
  needs: ['inputNorms'],
  options: [
    {
      key: 'threshold',
      label: 'Outlier threshold',
      type: 'number',
      min: 0,
      max: 1e6,
      step: 0.5,
      default: DEFAULT_OUTLIER_THRESHOLD,
      help: 'An input feature whose calibrated max |activation| exceeds this keeps float weights (LLM.int8 uses 6).',
    },
  ],
  apply(tensors, options, calibration) {
    return tensors.map((t) => {
      const stats = statsFor(calibration, t, 'llm-int8', ['inputNorms']);
      const { values, encoding } = llmInt8(t, stats, options.threshold);
      return {
        values,
        storedBytes: llmInt8StoredBytes(encoding),
        encoding,
        outlierChannels: Array.from(encoding.outliers),
      };
    });
  },
  rewrite(t, e, editor) {
    if (!e.outliers.length) {
      int8Method.rewrite!(t, e.int8!, editor, { granularity: 'per-channel', symmetric: true });
      return;
    }
    editor.removeInitializer(t.name);
    if (!e.int8) {
      // every feature is an outlier: the weight stays as it was
      editor.setInitializer(rawTensor(t.name, DataType.FLOAT, [...t.shape], bytesOf(t.values)));
      return;
    }
    editor.requireOpset('', 13);
    const n = e.int8.scales.length;
    const inlierWeight = writeInlierPart(t, e, editor);
    const outlierWeight = editor.uniqueName(`${t.name}_outliers`);
    const outlierDims = t.channelAxis === 1 ? [e.outliers.length, n] : [n, e.outliers.length];
    editor.setInitializer(rawTensor(outlierWeight, DataType.FLOAT, outlierDims, bytesOf(e.outlierWeights)));
    const consumers = editor.consumers(t.name);
    const split = consumers.filter(
      (c) =>
        t.channelAxis === 1 &&
        c.node.op_type === 'MatMul' &&
        (c.node.domain ?? '') === '' &&
        c.index === 1 &&
        c.node.input[0] !== t.name,
    );
    if (split.length) {
      const inlierIndex = indexTensor(editor, `${t.name}_inlier_features`, e.inliers);
      const outlierIndex = indexTensor(editor, `${t.name}_outlier_features`, e.outliers);
      for (const { node } of split) {
        const base = node.name || node.output[0];
        const [xIn, xOut, yIn, yOut] = ['x_inliers', 'x_outliers', 'y_inliers', 'y_outliers'].map((s) =>
          editor.uniqueName(`${base}_${s}`),
        );
        const named = (suffix: string) => ({ name: editor.uniqueName(`${base}_${suffix}`) });
        editor.replaceNode(node, [
          makeNode('Gather', [node.input[0], inlierIndex], [xIn], { axis: -1 }, named('GatherInliers')),
          makeNode('MatMul', [xIn, inlierWeight], [yIn], {}, named('MatMulInt8')),
          makeNode('Gather', [node.input[0], outlierIndex], [xOut], { axis: -1 }, named('GatherOutliers')),
          makeNode('MatMul', [xOut, outlierWeight], [yOut], {}, named('MatMulOutliers')),
          makeNode('Add', [yIn, yOut], [node.output[0]], {}, named('Add')),
        ]);
      }
      if (split.length === consumers.length) return;
    }
    // other readers get the whole weight: [inliers | outliers] along the input axis, each feature put back in place
    const axis = t.channelAxis === 1 ? 0 : 1;
    const position = new Uint32Array(e.inliers.length + e.outliers.length);
    e.inliers.forEach((j, i) => (position[j] = i));
    e.outliers.forEach((j, i) => (position[j] = e.inliers.length + i));
    const joined = editor.uniqueName(`${t.name}_joined`);
    const order = indexTensor(editor, `${t.name}_feature_order`, position);
    editor.addDecodeNodes(
      makeNode(
        'Concat',
        [inlierWeight, outlierWeight],
        [joined],
        { axis },
        { name: editor.uniqueName(`${joined}_Concat`) },
      ),
      makeNode(
        'Gather',
        [joined, order],
        [t.name],
        { axis },
        { name: editor.uniqueName(`${t.name}_Gather`) },
      ),
    );
  },
};
