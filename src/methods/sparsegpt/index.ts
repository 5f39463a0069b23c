/** SparseGPT pruning: unstructured (exact sparsity) or N:M, the kept weights updated to make up for the pruned ones. */
import type { CalibratedMethod } from '../calibrated.ts';
import { DAMPENING_OPTION, statsFor } from '../calibrated.ts';
import { pruneMethod } from '../prune/index.ts';
import { sparsegptPrune } from './kernel.ts';

export interface SparseGptMethodOptions {
  [key: string]: string | number | boolean;
  sparsity: number;
  pattern: 'unstructured' | '2:4' | '4:8';
  dampening: number;
  group: 'block' | 'output';
}

const [sparsityOption, , patternOption] = pruneMethod.options;

export const sparsegptMethod: CalibratedMethod<SparseGptMethodOptions> = {
  id: 'sparsegpt',
  label: 'SparseGPT pruning',
  summary:
    'Prune by second-order saliency and update the remaining weights to compensate (needs calibration).',
  role: 'transform',
  needs: ['hessian'],
  options: [
    sparsityOption,
    patternOption,
    DAMPENING_OPTION,
    {
      key: 'group',
      label: 'Compare within',
      type: 'select',
      choices: [
        { value: 'block', label: 'Each block of inputs, all outputs (SparseGPT)' },
        { value: 'output', label: 'Each output channel (as Wanda)' },
      ],
      default: 'block',
      help: 'Unstructured pattern only: which weights compete for the pruning share.',
    },
  ],
  apply(tensors, options, calibration) {
    return tensors.map((t) => {
      const values = sparsegptPrune(t, statsFor(calibration, t, 'sparsegpt', ['hessian']), options);
      return { values, storedBytes: values.byteLength };
    });
  },
};
