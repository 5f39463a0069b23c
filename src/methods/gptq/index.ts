/**
 * GPTQ: int4 block-wise or int8 per-channel weights chosen with calibration data. The codes and
 * scales are exactly the int4 / int8 methods' encodings, so their exporters (MatMulNBits, blocked or
 * per-channel DequantizeLinear) write them.
 */
import type { CalibratedMethod } from '../calibrated.ts';
import { DAMPENING_OPTION, statsFor } from '../calibrated.ts';
import { int4Method, int4StoredBytes, INT4_BLOCK_SIZES } from '../int4/index.ts';
import { int8Method } from '../int8/index.ts';
import type { Int4Quantized } from '../int4/kernel.ts';
import type { Int8Quantized } from '../int8/kernel.ts';
import { gptqInt4, gptqInt8 } from './kernel.ts';

export interface GptqOptions {
  [key: string]: string | number | boolean;
  bits: '4' | '8';
  blockSize: number;
  symmetric: boolean;
  format: 'matmulnbits' | 'dequantize';
  dampening: number;
  actOrder: boolean;
}

export type GptqEncoding = Int4Quantized | Int8Quantized;

export const gptqMethod: CalibratedMethod<GptqOptions, GptqEncoding> = {
  id: 'gptq',
  label: 'GPTQ',
  summary:
    'Quantize weights one input at a time, folding each rounding error into the inputs still to come (needs calibration).',
  role: 'encode',
  needs: ['hessian'],
  options: [
    {
      key: 'bits',
      label: 'Bits',
      type: 'select',
      choices: [
        { value: '4', label: 'int4 block-wise' },
        { value: '8', label: 'int8 per output channel' },
      ],
      default: '4',
    },
    { ...int4Method.options[0], help: 'int4 only: weights per scale along the input dimension.' },
    {
      key: 'symmetric',
      label: 'Symmetric',
      type: 'boolean',
      default: true,
      help: 'Symmetric: implied zero point. Otherwise a zero point per block (int4) or channel (int8).',
    },
    int4Method.options[2],
    DAMPENING_OPTION,
    {
      key: 'actOrder',
      label: 'Act-order',
      type: 'boolean',
      default: true,
      help: 'Quantize the inputs with the largest activations first; int4 scales then come from the original blocks.',
    },
  ],
  apply(tensors, options, calibration) {
    return tensors.map((t) => {
      const stats = statsFor(calibration, t, 'gptq', ['hessian']);
      const common = { dampening: options.dampening, actOrder: options.actOrder };
      if (options.bits === '8') {
        const { values, encoding } = gptqInt8(t, stats, { ...common, symmetric: options.symmetric });
        const storedBytes =
          encoding.q.byteLength + encoding.scales.byteLength + (encoding.zeroPoints?.byteLength ?? 0);
        return { values, storedBytes, encoding };
      }
      const { values, encoding } = gptqInt4(t, stats, {
        ...common,
        blockSize: options.blockSize,
        symmetric: options.symmetric,
      });
      return { values, storedBytes: int4StoredBytes(encoding), encoding };
    });
  },
  rewrite(t, encoding, editor, options) {
    if (options.bits === '8')
      int8Method.rewrite!(t, encoding as Int8Quantized, editor, {
        granularity: 'per-channel',
        symmetric: options.symmetric,
      });
    else
      int4Method.rewrite!(t, encoding as Int4Quantized, editor, {
        blockSize: options.blockSize,
        symmetric: options.symmetric,
        format: options.format,
      });
  },
};

export { INT4_BLOCK_SIZES };
