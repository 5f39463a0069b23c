/**
 * int4 on Gemm layers (every linear layer of a GPT-2 export: Conv1D's addmm is a Gemm with B [K, N],
 * a torch Linear a Gemm with transB and B [N, K]) exported as MatMulNBits, bias, alpha and beta kept,
 * judged by onnxruntime-node against the preview; a Gemm MatMulNBits cannot express falls back to
 * int4 DequantizeLinear with a warning, in the export and in `compress --json`.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { decodeModelProto } from '../../src/core/onnx/proto.ts';
import { seededFloats } from '../helpers/models.ts';
import { floatInput, tempDir } from '../helpers/ort.ts';
import { denseReference, maxAbs, maxAbsDiff, opTypes, runOutput } from '../helpers/compress.ts';
import { runCli } from '../helpers/cli.ts';

const K = 40; // not a multiple of the block: MatMulNBits pads
const H = 48;
const N = 24;

/**
 * x[b, K] → Gemm(c_attn [K, H] + bias, GPT-2 Conv1D) → Tanh → Gemm(proj [H, H], transB, no bias)
 * → Tanh → Gemm(fc [N, H], transB, alpha 0.5, beta 1.5, bias [1, N]) → y[b, N].
 */
function gpt2StyleGemms(options: { transA?: boolean } = {}): Uint8Array {
  return makeModelBytes({
    nodes: [
      makeNode('Gemm', ['x', 'c_attn', 'c_attn_bias'], ['h1'], {}, { name: 'attn' }),
      makeNode('Tanh', ['h1'], ['a1']),
      ...(options.transA ? [makeNode('Transpose', ['a1'], ['a1t'], { perm: [1, 0] })] : []),
      options.transA
        ? makeNode('Gemm', ['a1t', 'proj'], ['h2'], { transA: 1, transB: 1 }, { name: 'proj_gemm' })
        : makeNode('Gemm', ['a1', 'proj'], ['h2'], { transB: 1 }, { name: 'proj_gemm' }),
      makeNode('Tanh', ['h2'], ['a2']),
      makeNode(
        'Gemm',
        ['a2', 'fc', 'fc_bias'],
        ['y'],
        { transB: 1, alpha: { float: 0.5 }, beta: { float: 1.5 } },
        { name: 'fc_gemm' },
      ),
    ],
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', K])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', N])],
    initializers: [
      floatTensor('c_attn', [K, H], seededFloats(K * H, 21, 0.4)),
      floatTensor('c_attn_bias', [H], seededFloats(H, 22, 0.2)),
      floatTensor('proj', [H, H], seededFloats(H * H, 23, 0.3)),
      floatTensor('fc', [N, H], seededFloats(N * H, 24, 0.3)),
      floatTensor('fc_bias', [1, N], seededFloats(N, 25, 0.2)),
    ],
  });
}

function compress(bytes: Uint8Array, steps: RecipeStep[]) {
  const model = parseModel(bytesSource('gemm.onnx', bytes));
  const result = compressModel(model, resolveRecipe({ steps }));
  const written = exportCompressed(model, result);
  return { model, result, exported: written.model, warnings: written.warnings };
}

describe('int4 on Gemm layers', () => {
  for (const symmetric of [true, false])
    it(`exports every Gemm as MatMulNBits equal to the preview (${symmetric ? 'symmetric' : 'zero points'})`, async () => {
      const c = compress(gpt2StyleGemms(), [
        { method: 'int4', options: { blockSize: 32, symmetric }, select: { lmHead: true } },
      ]);
      expect(c.result.reports.map((r) => r.name).sort()).toEqual(['c_attn', 'fc', 'proj']);
      expect(c.warnings).toEqual([]);
      const types = opTypes(c.exported);
      expect(types.filter((t) => t === 'MatMulNBits')).toHaveLength(3);
      expect(types).not.toContain('Gemm');
      expect(types).not.toContain('DequantizeLinear');
      const g = decodeModelProto(c.exported).graph!;
      // the [H] bias rides in MatMulNBits' bias input; fc's alpha, beta and [1, N] bias become Mul and Add
      const attn = g.node.find((n) => n.op_type === 'MatMulNBits' && n.output[0] === 'h1')!;
      expect(attn.input[5]).toBe('c_attn_bias');
      expect(types).toEqual(expect.arrayContaining(['Mul', 'Add']));
      const feeds = { x: floatInput([5, K], 9) };
      const got = await runOutput(c.exported, feeds, 'y');
      const want = await runOutput(denseReference(c), feeds, 'y');
      expect(maxAbsDiff(got, want)).toBeLessThanOrEqual(1e-4 * (1 + maxAbs(want)));
      // and the source model differs from both: int4 changed the weights
      const source = await runOutput(gpt2StyleGemms(), feeds, 'y');
      expect(maxAbsDiff(source, want)).toBeGreaterThan(1e-4);
    });

  it('a Gemm with transA falls back to int4 DequantizeLinear, with a warning naming why', async () => {
    const c = compress(gpt2StyleGemms({ transA: true }), [{ method: 'int4', select: { lmHead: true } }]);
    expect(c.warnings).toEqual([
      'proj: exported as int4 DequantizeLinear (opset 21) instead of MatMulNBits: a Gemm reads its input transposed (transA = 1).',
    ]);
    const types = opTypes(c.exported);
    expect(types.filter((t) => t === 'MatMulNBits')).toHaveLength(2);
    expect(types).toContain('DequantizeLinear');
    const feeds = { x: floatInput([5, K], 9) };
    const got = await runOutput(c.exported, feeds, 'y');
    const want = await runOutput(denseReference(c), feeds, 'y');
    expect(maxAbsDiff(got, want)).toBeLessThanOrEqual(1e-4 * (1 + maxAbs(want)));
  });

  it('compress --int4 writes MatMulNBits for Gemms, and a fallback is a warning in --json and in the text', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'gemm.onnx'), gpt2StyleGemms());
    writeFileSync(join(dir, 'gemm-t.onnx'), gpt2StyleGemms({ transA: true }));
    const ok = await runCli([
      'compress',
      join(dir, 'gemm.onnx'),
      '--int4',
      '--lm-head',
      '-o',
      join(dir, 'q.onnx'),
      '--json',
    ]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.out).warnings).toEqual([]);
    expect(opTypes(new Uint8Array(readFileSync(join(dir, 'q.onnx'))))).not.toContain('Gemm');
    const fallback = await runCli([
      'compress',
      join(dir, 'gemm-t.onnx'),
      '--int4',
      '--lm-head',
      '-o',
      join(dir, 'qt.onnx'),
      '--json',
    ]);
    expect(fallback.code).toBe(0);
    expect(JSON.parse(fallback.out).warnings).toEqual([
      expect.stringMatching(/^proj: exported as int4 DequantizeLinear \(opset 21\) instead of MatMulNBits/),
    ]);
    const text = await runCli([
      'compress',
      join(dir, 'gemm-t.onnx'),
      '--int4',
      '--lm-head',
      '-o',
      join(dir, 'qt.onnx'),
    ]);
    expect(text.out).toMatch(/warning: proj: exported as int4 DequantizeLinear/);
  });
});
