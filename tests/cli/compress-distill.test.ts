/** A recipe the page made with "distill" is refused by `compress` (it writes no trained weights), saying what to run instead. */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';
import { tempDir } from '../helpers/ort.ts';

describe('compress --recipe with distill', () => {
  it('exits 1 naming the distillation and the commands that do it', async () => {
    const dir = tempDir('cs-distill-recipe-');
    const recipe = join(dir, 'recipe.json');
    writeFileSync(
      recipe,
      JSON.stringify({
        version: 1,
        distill: { steps: 10 },
        steps: [{ method: 'prune', options: { pattern: '2:4' } }],
      }),
    );
    const out = join(dir, 'out.onnx');
    const r = await runCli(['compress', STORIES_MODEL, '--recipe', recipe, '-o', out]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/This recipe distils.*then `distill TEACHER STUDENT`/);
    expect(existsSync(out)).toBe(false);
    // a bad distill setting is a recipe error naming it
    writeFileSync(recipe, JSON.stringify({ version: 1, distill: { alpha: 2 }, steps: [] }));
    const bad = await runCli(['compress', STORIES_MODEL, '--recipe', recipe, '-o', out]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/distill\.alpha must be a number from 0 to 1/);
  });
});
