/** Wanda pruning: |weight| × input-feature norm, per output (or per tensor), no weight update. */
import type { CalibratedMethod } from '../calibrated.ts';
import { statsFor } from '../calibrated.ts';
import { pruneMethod } from '../prune/index.ts';
import { wandaPrune } from './kernel.ts';

export interface WandaMethodOptions {
  [key: string]: string | number | boolean;
  sparsity: number;
  pattern: 'unstructured' | '2:4' | '4:8';
  group: 'output' | 'tensor';
}

const [sparsityOption, , patternOption] = pruneMethod.options;

export const wandaMethod: CalibratedMethod<WandaMethodOptions> = {
  id: 'wanda',
  label: 'Wanda pruning',
  summary: 'Prune the weights of smallest |weight| × activation norm (needs calibration).',
  role: 'transform',
  needs: ['inputNorms'],
  options: [
    sparsityOption,
    patternOption,
    {
      key: 'group',
      label: 'Compare within',
      type: 'select',
      choices: [
        { value: 'output', label: 'Each output channel (Wanda)' },
        { value: 'tensor', label: 'The whole tensor' },
      ],
      default: 'output',
      help: 'Unstructured pattern only.',
    },
  ],
  apply(tensors, options, calibration) {
    return tensors.map((t) => {
      const values = wandaPrune(t, statsFor(calibration, t, 'wanda', ['inputNorms']), options);
      return { values, storedBytes: values.byteLength };
    });
  },
};
