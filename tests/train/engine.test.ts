/**
 * The training engine on real models: its forward pass equals onnxruntime's logits on the demo GPT-2
 * and stories260K (Llama: RoPE, GQA, RMSNorm, SwiGLU); the gradient of the whole distillation loss
 * equals finite differences; the KD loss and the wasm product equal direct computations; ops it lacks
 * and quantized students get typed errors naming them.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isModelError } from '../../src/core/errors.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { bytesSource, parseModel, type OnnxModel } from '../../src/core/onnx/model.ts';
import { TrainGraph } from '../../src/core/train/graph.ts';
import { batchLoss, checkTrainable, decoderValues, trainableWeights } from '../../src/core/train/distill.ts';
import { kdLoss } from '../../src/core/train/loss.ts';
import { gemmWasm, matmulAccJs, matmulNTAccJs, matmulTNAccJs } from '../../src/core/train/kernels.ts';
import { MATMUL_WASM_BASE64 } from '../../src/core/train/matmul-wasm.ts';
// @ts-expect-error: a plain .mjs build script without type declarations
import { assembleKernels } from '../../tools/build-wasm.mjs';
import { compressBytes } from '../helpers/compress.ts';
import { DEMO_MODEL, STORIES_MODEL } from '../helpers/fixtures.ts';
import { pastInputs } from '../helpers/demo.ts';
import { seededFloats } from '../helpers/models.ts';
import { ort } from '../helpers/ort.ts';

function load(path: string): { bytes: Uint8Array; model: OnnxModel } {
  const bytes = new Uint8Array(readFileSync(path));
  return { bytes, model: parseModel(bytesSource(path.split('/').pop()!, bytes)) };
}

function rowsOf(B: number, L: number, vocab: number, seed: number): number[][] {
  const r = seededFloats(B * L, seed);
  return Array.from({ length: B }, (_, b) =>
    Array.from({ length: L }, (_, t) => Math.floor(Math.abs(r[b * L + t]) * (vocab - 1))),
  );
}

async function ortLogits(bytes: Uint8Array, model: OnnxModel, rows: number[][]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const B = rows.length;
    const L = rows[0].length;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [B, L]),
    };
    if (model.graph.input.some((i) => i.name === 'attention_mask'))
      feeds.attention_mask = new ort.Tensor('int64', new BigInt64Array(B * L).fill(1n), [B, L]);
    if (model.graph.input.some((i) => i.name === 'position_ids'))
      feeds.position_ids = new ort.Tensor(
        'int64',
        BigInt64Array.from({ length: B * L }, (_, i) => BigInt(i % L)),
        [B, L],
      );
    // the demo's KV cache, empty: [B, heads, 0, head_dim]
    for (const p of pastInputs(bytes))
      feeds[p.name] = new ort.Tensor('float32', new Float32Array(0), [B, p.heads, 0, p.headDim]);
    return (await session.run(feeds)).logits.data as Float32Array;
  } finally {
    await session.release();
  }
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('training engine forward equals onnxruntime', () => {
  it.each([
    ['the demo GPT-2 (batch 2 × 32, attention mask, GELU as tanh)', DEMO_MODEL, 2, 32, 2048],
    ['stories260K (Llama: RoPE, GQA, RMSNorm, SwiGLU; batch 1 × 40)', STORIES_MODEL, 1, 40, 512],
  ])('%s', async (_name, path, B, L, vocab) => {
    const { bytes, model } = load(path);
    const rows = rowsOf(B, L, vocab, 7);
    const graph = new TrainGraph(model, trainableWeights(model));
    const logits = graph.forward(decoderValues(model.graph, rows), { record: false }).values.get('logits')!;
    expect(logits.shape).toEqual([B, L, vocab]);
    expect(maxAbsDiff(logits.data as Float32Array, await ortLogits(bytes, model, rows))).toBeLessThan(1e-4);
  });
});

describe('the whole distillation loss', () => {
  it('its gradient for weights of every kind of stories260K equals finite differences', () => {
    const { model } = load(STORIES_MODEL);
    const graph = new TrainGraph(model, trainableWeights(model));
    const rows = rowsOf(1, 12, 512, 3);
    // a teacher that differs from the student: the same model's logits shifted per position
    const base = batchLoss(graph, rows, null, { temperature: 2, alpha: 0.5, withGrad: false }).grad;
    const teacher = Float32Array.from(seededFloats(base.length, 9, 2));
    const opts = { temperature: 2, alpha: 0.5, withGrad: true };
    const { grads } = batchLoss(graph, rows, teacher, opts);
    const lossAt = () => batchLoss(graph, rows, teacher, { ...opts, withGrad: false }).loss;
    // an embedding row, attention, MLP and norm weights: the entries with the largest gradients
    for (const name of ['emb', 'l0.wq', 'l1.wk', 'l2.wv', 'l3.w2', 'l4.w3', 'l0.rms_att', 'rms_final']) {
      const w = graph.params.get(name);
      const g = grads!.get(name);
      expect(w && g, name).toBeTruthy();
      const order = Array.from(g!.keys()).sort((a, b) => Math.abs(g![b]) - Math.abs(g![a]));
      for (const i of order.slice(0, 2)) {
        const h = 1e-2;
        const keep = w![i];
        w![i] = keep + h;
        const plus = lossAt();
        w![i] = keep - h;
        const minus = lossAt();
        w![i] = keep;
        const numeric = (plus - minus) / (2 * h);
        expect(Math.abs(numeric - g![i]), `${name}[${i}]: ${numeric} vs ${g![i]}`).toBeLessThan(
          0.03 * Math.abs(numeric) + 2e-4,
        );
      }
    }
  });

  it('KL and CE equal their definitions, and the logits gradient equals finite differences', () => {
    const B = 2;
    const L = 3;
    const V = 5;
    const s = seededFloats(B * L * V, 1, 3);
    const t = seededFloats(B * L * V, 2, 3);
    const ids = [0, 3, 4, 1, 2, 2];
    const T = 2;
    const alpha = 0.3;
    const r = kdLoss(s, t, ids, B, L, V, { temperature: T, alpha });
    const softmax = (x: Float32Array, row: number, temp: number) => {
      const e = Array.from(x.subarray(row * V, row * V + V), (v) => Math.exp(v / temp));
      const z = e.reduce((a, b) => a + b);
      return e.map((v) => v / z);
    };
    let kl = 0;
    let ce = 0;
    for (let row = 0; row < B * L; row++) {
      const ps = softmax(s, row, T);
      const pt = softmax(t, row, T);
      kl += pt.reduce((acc, p, v) => acc + p * Math.log(p / ps[v]), 0);
      if (row % L < L - 1) ce -= Math.log(softmax(s, row, 1)[ids[row + 1]]);
    }
    kl /= B * L;
    ce /= B * (L - 1);
    expect(r.kl).toBeCloseTo(kl, 6);
    expect(r.ce).toBeCloseTo(ce, 6);
    expect(r.loss).toBeCloseTo(alpha * T * T * kl + (1 - alpha) * ce, 6);
    for (let i = 0; i < s.length; i += 3) {
      const h = 1e-3;
      const p = Float32Array.from(s);
      const m = Float32Array.from(s);
      p[i] += h;
      m[i] -= h;
      const numeric =
        (kdLoss(p, t, ids, B, L, V, { temperature: T, alpha }).loss -
          kdLoss(m, t, ids, B, L, V, { temperature: T, alpha }).loss) /
        (2 * h);
      expect(Math.abs(numeric - r.grad[i])).toBeLessThan(1e-3);
    }
  });
});

describe('the wasm matrix product', () => {
  it('the embedded module is the assembled matmul.wat (run `npm run build:wasm` after editing it)', async () => {
    const bytes: Uint8Array = await assembleKernels('src/core/train/matmul.wat');
    expect(Buffer.from(bytes).toString('base64')).toBe(MATMUL_WASM_BASE64);
  });

  it.each([
    [1, 1, 1],
    [3, 5, 7],
    [17, 33, 30],
    [2, 4, 4],
    [5, 9, 8],
    [64, 192, 576],
  ])('M %i, K %i, N %i: A·B, A·Bᵀ and Aᵀ·B accumulate as the JavaScript loops do', (M, K, N) => {
    // operands at odd offsets, output rows and columns not multiples of the 4 × 8 tile
    const a = seededFloats(M * K + 3, 1);
    const b = seededFloats(K * N + 5, 2);
    const c0 = seededFloats(M * N + 2, 3);
    const tolerance = 1e-4 * Math.sqrt(K);
    // NN: c[M,N] += a[M,K]·b[K,N]
    const c1 = Float32Array.from(c0);
    const c2 = Float32Array.from(c0);
    gemmWasm('NN', a, 3, b, 5, c1, 2, M, K, N);
    matmulAccJs(a, 3, b, 5, c2, 2, M, K, N);
    expect(maxAbsDiff(c1, c2)).toBeLessThan(tolerance);
    expect(maxAbsDiff(c1, c0)).toBeGreaterThan(0);
    // NT: c[M,N] += a[M,K]·b[N,K]ᵀ (b read as [N, K])
    const d1 = Float32Array.from(c0);
    const d2 = Float32Array.from(c0);
    gemmWasm('NT', a, 3, b, 5, d1, 2, M, K, N);
    matmulNTAccJs(a, 3, b, 5, d2, 2, M, K, N);
    expect(maxAbsDiff(d1, d2)).toBeLessThan(tolerance);
    // TN: c[M,N] += a[K,M]ᵀ·b[K,N] (a read as [K, M]); the JS loop names it c[K',N] += a[M',K']ᵀ·b[M',N]
    const e1 = Float32Array.from(c0);
    const e2 = Float32Array.from(c0);
    gemmWasm('TN', a, 3, b, 5, e1, 2, M, K, N);
    matmulTNAccJs(a, 3, b, 5, e2, 2, K, M, N);
    expect(maxAbsDiff(e1, e2)).toBeLessThan(tolerance);
    // overwriting: c = a·b whatever c held
    const f1 = Float32Array.from(c0);
    const f2 = Float32Array.from(c0);
    f2.fill(0, 2);
    gemmWasm('NN', a, 3, b, 5, f1, 2, M, K, N, true);
    matmulAccJs(a, 3, b, 5, f2, 2, M, K, N);
    expect(maxAbsDiff(f1, f2)).toBeLessThan(tolerance);
    // the elements before the output stay as they were
    for (const c of [c1, d1, e1]) expect([c[0], c[1]]).toEqual([c0[0], c0[1]]);
  });
});

describe('typed errors', () => {
  it('an op the engine lacks is named in a ModelError', () => {
    const bytes = makeModelBytes({
      nodes: [
        makeNode('MatMul', ['x', 'w'], ['h']),
        makeNode('HardSwish', ['h'], ['y'], {}, { name: 'act' }),
      ],
      inputs: [valueInfo('x', DataType.FLOAT, [2, 4])],
      outputs: [valueInfo('y', DataType.FLOAT, [2, 3])],
      initializers: [floatTensor('w', [4, 3], seededFloats(12, 1))],
    });
    const model = parseModel(bytesSource('hardswish.onnx', bytes));
    let error: unknown;
    try {
      new TrainGraph(model, ['w']);
    } catch (e) {
      error = e;
    }
    expect(isModelError(error) && error.code).toBe('unsupported');
    expect((error as Error).message).toMatch(/op HardSwish \(node 'act'\)/);
  });

  it('a student stored as int4 MatMulNBits is refused: distil before quantizing', () => {
    const { bytes } = load(STORIES_MODEL);
    const quantized = compressBytes(bytes, [{ method: 'int4', options: { blockSize: 32 } }]).exported;
    const model = parseModel(bytesSource('q4.onnx', quantized));
    let error: unknown;
    try {
      checkTrainable(model);
    } catch (e) {
      error = e;
    }
    expect(isModelError(error) && error.code).toBe('unsupported');
    expect((error as Error).message).toMatch(/MatMulNBits.*Distil the float/);
  });

  it('trainable selections: all, no embeddings, norms and biases only', () => {
    const { model } = load(DEMO_MODEL);
    const all = trainableWeights(model, 'all');
    expect(all).toContain('transformer.wte.weight');
    expect(all).toContain('transformer.h.0.attn.c_attn.weight');
    expect(all).toContain('transformer.h.0.ln_1.bias');
    const noEmb = trainableWeights(model, 'no-embeddings');
    expect(noEmb).not.toContain('transformer.wte.weight');
    expect(noEmb).not.toContain('transformer.wpe.weight');
    expect(noEmb).toContain('transformer.h.0.attn.c_attn.weight');
    const norms = trainableWeights(model, 'norms-biases');
    expect(norms).toContain('transformer.h.0.ln_1.weight');
    expect(norms).not.toContain('transformer.h.0.attn.c_attn.weight');
    // stories260K's rotary tables and causal mask are read by Slice: constants, never trained
    const stories = trainableWeights(load(STORIES_MODEL).model, 'all');
    for (const table of ['cos_tab', 'sin_tab', 'mask_tab']) expect(stories).not.toContain(table);
  });
});
