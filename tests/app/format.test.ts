import { describe, expect, it } from 'vitest';
import { niceTicks } from '../../src/app/components/format.ts';
import { describeRecipe, readHashRecipe, recipeJson, recipeToHash } from '../../src/app/share.ts';
import { parseFullRecipeText } from '../../src/core/compress/recipe.ts';
import { withStep } from '../../src/app/components/RecipePanel.tsx';
import { evaluationInputProblem } from '../../src/app/eval-input.ts';

describe('chart ticks', () => {
  it('are round numbers inside the range, not the bins’ raw values', () => {
    expect(niceTicks(-1.175, 1.06)).toEqual([-1, -0.5, 0, 0.5, 1]);
    expect(niceTicks(-0.7333, 0.7333)).toEqual([-0.5, 0, 0.5]);
    expect(niceTicks(0, 1000)).toEqual([0, 200, 400, 600, 800, 1000]);
    expect(niceTicks(0.0012, 0.0047)).toEqual([0.002, 0.003, 0.004]);
    expect(niceTicks(3, 3)).toEqual([3]);
    expect(niceTicks(NaN, 1)).toEqual([]);
  });
});

describe('share links and history labels', () => {
  it('a link naming an unknown method says what was wrong', () => {
    const hash = recipeToHash([{ method: 'int9' }]);
    const r = readHashRecipe(hash);
    expect(r.steps).toBeUndefined();
    expect(r.error).toMatch(/Unknown compression method 'int9'/);
  });

  it('a link with a bad option says which option', () => {
    const r = readHashRecipe(recipeToHash([{ method: 'int4', options: { blockSize: 48 } }]));
    expect(r.error).toMatch(/int4\.blockSize must be one of/);
  });

  it('a link cut short is named as such, a hash without a recipe is no error', () => {
    expect(readHashRecipe('#recipe=%7B%22steps').error).toMatch(/not valid JSON/);
    expect(readHashRecipe('#other=1')).toEqual({});
    expect(readHashRecipe(recipeToHash([{ method: 'int8' }])).steps).toEqual([{ method: 'int8' }]);
  });

  it('a calibrated recipe carries its calibration settings (never data); older links read as before', () => {
    const steps = [{ method: 'gptq', options: { blockSize: 64 } }];
    const calibration = {
      source: 'generate' as const,
      samples: 8,
      length: 32,
      seed: 3,
      bos: 1,
      sequential: false,
    };
    const hash = recipeToHash(steps, calibration);
    expect(JSON.parse(decodeURIComponent(hash.split('=').slice(1).join('=')))).toEqual({
      version: 1,
      calibration,
      steps,
    });
    expect(readHashRecipe(hash)).toEqual({ steps, calibration });
    // the recipe JSON the CLI reads: its resolver accepts the page's settings as they are
    expect(parseFullRecipeText(JSON.stringify(recipeJson(steps, calibration))).calibration).toEqual(
      calibration,
    );
    // a link from before calibration: no calibration field, same steps
    expect(recipeToHash([{ method: 'int8' }])).toBe(
      `#recipe=${encodeURIComponent('{"version":1,"steps":[{"method":"int8"}]}')}`,
    );
    expect(readHashRecipe(recipeToHash([{ method: 'int8' }]))).toEqual({ steps: [{ method: 'int8' }] });
    expect(readHashRecipe(recipeToHash(steps, { source: 'web' } as never)).error).toMatch(
      /calibration\.source/,
    );
    expect(describeRecipe(steps)).toBe('GPTQ int4 b64');
  });

  it('history labels include the tensor selection', () => {
    const plain = describeRecipe([{ method: 'int4', options: { blockSize: 32 } }]);
    const withEmbeddings = describeRecipe([
      { method: 'int4', options: { blockSize: 32 }, select: { embeddings: true, exclude: ['*.attn.*'] } },
    ]);
    expect(plain).toBe('int4 b32');
    expect(withEmbeddings).toBe('int4 b32 [not *.attn.*; +embeddings]');
    expect(describeRecipe([{ method: 'int8', select: { include: ['h.0.*'], lmHead: true } }])).toBe(
      'int8 [only h.0.*; +LM head]',
    );
  });
});

describe('adding a step', () => {
  it('puts a transform before the encoders, an encoder last', () => {
    const recipe = [{ method: 'int4' }, { method: 'fp16' }];
    expect(withStep(recipe, { method: 'prune' }).map((s) => s.method)).toEqual(['prune', 'int4', 'fp16']);
    expect(withStep(recipe, { method: 'int8' }).map((s) => s.method)).toEqual(['int4', 'fp16', 'int8']);
    expect(withStep([{ method: 'prune' }], { method: 'prune' }).map((s) => s.method)).toEqual([
      'prune',
      'prune',
    ]);
  });
});

describe('evaluation input', () => {
  it('a model without a tokenizer asks for ids, never for a Hugging Face tokenizer', () => {
    const noTok = evaluationInputProblem({ evalIsIds: false, evalText: 'Hello' });
    expect(noTok).toMatch(/without a tokenizer\.json/);
    expect(noTok).not.toMatch(/not a Hugging Face tokenizer/);
    expect(evaluationInputProblem({ evalIsIds: true, evalText: '' })).toMatch(/paste token ids/);
    expect(evaluationInputProblem({ evalIsIds: true, evalText: '1 2 3' })).toBeUndefined();
    expect(evaluationInputProblem({ evalIsIds: false, evalText: 'x', tokenizerJson: { model: {} } })).toBe(
      undefined,
    );
  });
});

describe('auto backend', () => {
  it('refuses a software WebGPU adapter and says why', async () => {
    const { judgeAdapter } = await import('../../src/runtime/ort-web.ts');
    expect(
      judgeAdapter({ info: { vendor: 'google', architecture: 'swiftshader', device: 'swiftshader' } }),
    ).toEqual({ usable: false, reason: 'WebGPU adapter is a software fallback (SwiftShader)' });
    expect(judgeAdapter({ isFallbackAdapter: true, info: {} }).usable).toBe(false);
    expect(judgeAdapter({ info: { isFallbackAdapter: true } }).usable).toBe(false);
    expect(judgeAdapter(null)).toEqual({ usable: false, reason: 'the browser offers no WebGPU adapter' });
    const gpu = judgeAdapter({ info: { vendor: 'nvidia', architecture: 'ampere' } });
    expect(gpu).toEqual({ usable: true, reason: 'WebGPU adapter: nvidia ampere' });
  });
});
