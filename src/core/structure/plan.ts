/**
 * From "remove this much" to which heads, neurons and blocks: a StructurePlan chosen by importance.
 * Heads are removed in whole KV groups (with GQA a KV head and its query heads go together; without
 * it a group is one head); every block keeps at least one group and one neuron. Per layer, each block
 * loses the same share; globally, the least important units of the whole model go, wherever they are.
 */
import { ModelError } from '../errors.ts';
import type { ModelStructure } from './detect.ts';
import type { StructureImportance } from './importance.ts';
import type { BlockPlan, StructurePlan } from './rewrite.ts';

export interface PruneRequest {
  /** Share of attention heads to remove, 0 ≤ heads < 1. */
  heads?: number;
  /** Share of MLP neurons to remove, 0 ≤ neurons < 1. */
  neurons?: number;
  /** Whole blocks to remove (the least important ones). */
  blocks?: number;
  /** 'layer' (default): each block loses the same share; 'global': one ranking over all blocks. */
  scope?: 'layer' | 'global';
  /** Kept neurons per block rounded to a multiple of this (8, 32, 64 suit matrix kernels); default 1. */
  multiple?: number;
}

function invalid(message: string): ModelError {
  return new ModelError('invalid-argument', message);
}

function checkShare(value: number | undefined, what: string): number {
  if (value === undefined) return 0;
  if (!Number.isFinite(value) || value < 0 || value >= 1)
    throw invalid(
      `The share of ${what} to remove must be from 0 to below 1 (at least one stays per block), got ${value}.`,
    );
  return value;
}

interface Unit {
  block: number;
  /** Group or neuron index. */
  index: number;
  score: number;
}

/** The indices of `scores` to keep: the `keep` largest (ties: the lower index stays), ascending. */
function topIndices(scores: number[], keep: number): number[] {
  return scores
    .map((score, index) => ({ score, index }))
    .sort((a, b) => b.score - a.score || a.index - b.index)
    .slice(0, keep)
    .map((u) => u.index)
    .sort((a, b) => a - b);
}

/** Units to remove from a global ranking, lowest score first, never a block's last `minKept`. */
function globalRemovals(
  units: Unit[],
  count: number,
  sizes: number[],
  minKept: (b: number) => number,
): Set<Unit> {
  const left = [...sizes];
  const removed = new Set<Unit>();
  const order = [...units].sort((a, b) => a.score - b.score || a.block - b.block || a.index - b.index);
  for (const u of order) {
    if (removed.size >= count) break;
    if (left[u.block] - 1 < minKept(u.block)) continue;
    left[u.block]--;
    removed.add(u);
  }
  return removed;
}

function roundToMultiple(n: number, multiple: number, max: number): number {
  const r = Math.round(n / multiple) * multiple;
  return Math.min(max, Math.max(multiple, r));
}

export function planPruning(
  structure: ModelStructure,
  importance: StructureImportance,
  request: PruneRequest,
): StructurePlan {
  const { blocks } = structure;
  const headShare = checkShare(request.heads, 'attention heads');
  const neuronShare = checkShare(request.neurons, 'MLP neurons');
  const drop = request.blocks ?? 0;
  if (!Number.isInteger(drop) || drop < 0 || drop >= blocks.length)
    throw invalid(
      `Blocks to remove must be a whole number from 0 to ${blocks.length - 1} (the model has ${blocks.length}), got ${drop}.`,
    );
  const multiple = request.multiple ?? 1;
  if (!Number.isInteger(multiple) || multiple < 1)
    throw invalid(`The neuron multiple must be a whole number ≥ 1, got ${multiple}.`);
  const scope = request.scope ?? 'layer';
  if (scope !== 'layer' && scope !== 'global')
    throw invalid(`Scope must be 'layer' or 'global', got '${String(scope)}'.`);
  if (importance.heads.length !== blocks.length)
    throw invalid('The importance scores are for another model.');

  const dropped = new Set(
    topIndices(
      importance.blocks.map((s) => -s),
      drop,
    ),
  );
  const live = blocks.map((_, i) => i).filter((i) => !dropped.has(i));
  // group scores: the sum over a KV head's query heads
  const groupScores = blocks.map((b, i) => {
    const s = new Array<number>(b.attention.kvHeads).fill(0);
    b.attention.groupOf.forEach((g, h) => (s[g] += importance.heads[i][h]));
    return s;
  });
  const keptGroups = new Map<number, number[]>();
  const keptNeurons = new Map<number, number[]>();
  if (scope === 'layer') {
    for (const i of live) {
      const groups = blocks[i].attention.kvHeads;
      const keepG = Math.max(1, groups - Math.round(headShare * groups));
      keptGroups.set(i, topIndices(groupScores[i], keepG));
      const hidden = blocks[i].mlp.hidden;
      const keepN = roundToMultiple(hidden * (1 - neuronShare), multiple, hidden);
      keptNeurons.set(i, topIndices(importance.neurons[i], neuronShare > 0 ? keepN : hidden));
    }
  } else {
    const sizesG = blocks.map((b) => b.attention.kvHeads);
    const groupUnits = live.flatMap((i) =>
      groupScores[i].map((score, index) => ({ block: i, index, score })),
    );
    const totalG = live.reduce((n, i) => n + sizesG[i], 0);
    const goneG = globalRemovals(groupUnits, Math.round(headShare * totalG), sizesG, () => 1);
    const sizesN = blocks.map((b) => b.mlp.hidden);
    const neuronUnits = live.flatMap((i) =>
      importance.neurons[i].map((score, index) => ({ block: i, index, score })),
    );
    const totalN = live.reduce((n, i) => n + sizesN[i], 0);
    const goneN = globalRemovals(neuronUnits, Math.round(neuronShare * totalN), sizesN, () => multiple);
    for (const i of live) {
      const keepG = sizesG[i] - [...goneG].filter((u) => u.block === i).length;
      keptGroups.set(i, topIndices(groupScores[i], keepG));
      const removedN = [...goneN].filter((u) => u.block === i).length;
      const keepN = removedN ? roundToMultiple(sizesN[i] - removedN, multiple, sizesN[i]) : sizesN[i];
      keptNeurons.set(i, topIndices(importance.neurons[i], keepN));
    }
  }
  return {
    blocks: blocks.map((b, i): BlockPlan => {
      if (dropped.has(i)) return { drop: true };
      const groups = new Set(keptGroups.get(i));
      return {
        heads: b.attention.groupOf.flatMap((g, h) => (groups.has(g) ? [h] : [])),
        neurons: keptNeurons.get(i)!,
      };
    }),
  };
}
