/** The recipe's "structure" in share links, recipe files and history labels; links made before it still open. */
import { describe, expect, it } from 'vitest';
import { describeRecipe, readHashRecipe, recipeJson, recipeToHash } from '../../src/app/share.ts';
import { resolveFullRecipe } from '../../src/core/compress/recipe.ts';
import type { StructureSettings } from '../../src/core/compress/structure.ts';

const steps = [{ method: 'int4', options: { blockSize: 32 } }];
const structure: StructureSettings = { heads: 0.25, neurons: 0.3, importance: 'magnitude', scope: 'layer' };

describe('structure in share links', () => {
  it('a link carries the structure and reads it back as the CLI resolves it', () => {
    const r = readHashRecipe(recipeToHash(steps, undefined, structure));
    expect(r).toEqual({ steps, structure });
    // the recipe file the report holds is one the CLI reads, with the same structure
    expect(resolveFullRecipe(recipeJson(steps, undefined, structure)).structure).toEqual(structure);
  });

  it('a link made before structure existed opens with none, and its hash is unchanged', () => {
    const old = '#recipe=' + encodeURIComponent(JSON.stringify({ version: 1, steps }));
    expect(recipeToHash(steps)).toBe(old);
    expect(readHashRecipe(old)).toEqual({ steps });
  });

  it('a link that only prunes structure opens with no steps; a bad structure is refused with its reason', () => {
    const only = '#recipe=' + encodeURIComponent(JSON.stringify({ version: 1, structure: { blocks: 1 } }));
    expect(readHashRecipe(only)).toEqual({
      steps: [],
      structure: { blocks: 1, importance: 'magnitude', scope: 'layer' },
    });
    const bad =
      '#recipe=' + encodeURIComponent(JSON.stringify({ version: 1, structure: { heads: 1.5 }, steps }));
    expect(readHashRecipe(bad).error).toMatch(/structure\.heads is the share to remove/);
  });

  it('history labels tell recipes apart that differ only in structure', () => {
    expect(describeRecipe(steps)).toBe('int4 b32');
    expect(describeRecipe(steps, structure)).toBe('−25% heads, −30% neurons → int4 b32');
    expect(describeRecipe(steps, { blocks: 2, importance: 'activation', scope: 'global' })).toBe(
      '−2 blocks (activation, global) → int4 b32',
    );
  });
});
