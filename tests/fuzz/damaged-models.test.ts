/**
 * The classes of damaged model the fuzzer found leaking raw JavaScript errors out of compress, each
 * reproduced by hand: typed data fields that disagree with the dtype, MatMuls without their inputs
 * or outputs under the int4 MatMulNBits rewrite, and Reduce ops without their data input under the
 * opset-21 rewrite. Each now gives a typed error or a correct export.
 */
import { describe, expect, it } from 'vitest';
import { isModelError, ModelError } from '../../src/core/errors.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { bytesSource, parseModel, readTensor, type OnnxModel } from '../../src/core/onnx/model.ts';
import { decodeModelProto, type NodeProto, type TensorProto } from '../../src/core/onnx/proto.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { seededFloats } from '../helpers/models.ts';
import { ort } from '../helpers/ort.ts';

const K = 32;
const N = 16;

/** x·w1 → ReduceMax-centred → ·w2, with `extra` initializers and nodes appended. */
function model(
  opts: { extra?: TensorProto[]; nodes?: NodeProto[]; edit?: (nodes: NodeProto[]) => void } = {},
) {
  const nodes = [
    makeNode('MatMul', ['x', 'w1'], ['h'], {}, { name: 'fc1' }),
    makeNode('ReduceMax', ['h'], ['h_max'], { axes: [-1], keepdims: 1 }, { name: 'row_max' }),
    makeNode('Sub', ['h', 'h_max'], ['hc']),
    makeNode('MatMul', ['hc', 'w2'], ['y'], {}, { name: 'fc2' }),
    ...(opts.nodes ?? []),
  ];
  opts.edit?.(nodes);
  const bytes = makeModelBytes({
    nodes,
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', K])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', N])],
    initializers: [
      floatTensor('w1', [K, N], seededFloats(K * N, 1, 0.5)),
      floatTensor('w2', [N, N], seededFloats(N * N, 2, 0.5)),
      ...(opts.extra ?? []),
    ],
  });
  return { bytes, open: (): OnnxModel => parseModel(bytesSource('damaged.onnx', bytes)) };
}

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

function compressAndExport(m: OnnxModel, steps: RecipeStep[]): Uint8Array {
  return exportCompressed(m, compressModel(m, resolveRecipe({ steps }))).model;
}

describe('typed data fields are validated and decoded from the field the dtype uses', () => {
  it('an int32 tensor whose float_data has the right count but whose int32_data has more is corrupt', () => {
    // Before: float_data (scanned first) passed the check, int32_data was decoded and overran the buffer.
    const decoy: TensorProto = {
      name: 'shape_hint',
      dims: [4],
      data_type: DataType.INT32,
      float_data: [1, 2, 3, 4],
      int32_data: Array.from({ length: 12 }, (_, i) => i),
    };
    const e = thrown(() => model({ extra: [decoy] }).open());
    expect(isModelError(e)).toBe(true);
    expect((e as ModelError).code).toBe('corrupt');
    expect((e as ModelError).message).toMatch(/'shape_hint'.*needs 4 values in int32_data but it stores 12/);
    expect((e as ModelError).message).toMatch(/float_data, which int32 tensors do not use/);
  });

  it('an int64 tensor stored only in float_data is corrupt, naming where its values are', () => {
    const wrong: TensorProto = { name: 'ids', dims: [3], data_type: DataType.INT64, float_data: [1, 2, 3] };
    const e = thrown(() => model({ extra: [wrong] }).open());
    expect((e as ModelError).code).toBe('corrupt');
    expect((e as ModelError).message).toMatch(
      /'ids'.*needs 3 values in int64_data but it stores 0 \(values were found in float_data/,
    );
  });

  it('each dtype decodes from its own field; a stray other field is ignored', () => {
    const tensors: TensorProto[] = [
      { name: 'f32', dims: [2], data_type: DataType.FLOAT, float_data: [1.5, -2], int32_data: [7, 7, 7] },
      { name: 'i32', dims: [2], data_type: DataType.INT32, int32_data: [-3, 4], float_data: [9] },
      { name: 'i8', dims: [3], data_type: DataType.INT8, int32_data: [-1, 127, -128] },
      { name: 'f16', dims: [1], data_type: DataType.FLOAT16, int32_data: [0x3c00] }, // 1.0
      { name: 'i64', dims: [2], data_type: DataType.INT64, int64_data: [-5, 6] },
      { name: 'u32', dims: [2], data_type: DataType.UINT32, uint64_data: [4000000000, 1] },
      { name: 'f64', dims: [1], data_type: DataType.DOUBLE, double_data: [0.1] },
      { name: 'u4', dims: [3], data_type: DataType.UINT4, int32_data: [0x21, 0x03] }, // 1, 2, 3
    ];
    const m = model({ extra: tensors }).open();
    const values = (name: string) =>
      Array.from(readTensor(m, m.graph.initializer.find((t) => t.name === name) as TensorProto), Number);
    expect(values('f32')).toEqual([1.5, -2]);
    expect(values('i32')).toEqual([-3, 4]);
    expect(values('i8')).toEqual([-1, 127, -128]);
    expect(values('f16')).toEqual([1]);
    expect(values('i64')).toEqual([-5, 6]);
    expect(values('u32')).toEqual([4000000000, 1]);
    expect(values('f64')).toEqual([0.1]);
    expect(values('u4')).toEqual([1, 2, 3]);
  });
});

describe('int4 MatMulNBits leaves a malformed MatMul as it is', () => {
  // fc2 writes the graph output, so it counts as an LM head: opted in
  const int4 = [{ method: 'int4', options: { blockSize: 16 }, select: { lmHead: true } }];

  for (const [label, damage] of [
    ['no outputs', (n: NodeProto) => void (n.output = [])],
    ['an empty output name', (n: NodeProto) => void (n.output = [''])],
    ['an empty first input', (n: NodeProto) => void (n.input = ['', n.input[1]])],
    ['a third input', (n: NodeProto) => void (n.input = [...n.input, 'x'])],
  ] as const) {
    it(`a second reader of w1 with ${label}: w1 is decoded by DequantizeLinear, w2 still becomes MatMulNBits`, () => {
      const broken = makeNode('MatMul', ['x', 'w1'], ['h_unused'], {}, { name: 'broken' });
      damage(broken);
      const m = model({ nodes: [broken] }).open();
      const exported = decodeModelProto(compressAndExport(m, int4));
      const nodes = exported.graph?.node ?? [];
      const nbits = nodes.filter((n) => n.op_type === 'MatMulNBits');
      expect(nbits.map((n) => n.name)).toEqual(['fc2_Q4']);
      expect(nodes.find((n) => n.op_type === 'DequantizeLinear')?.output).toEqual(['w1']);
      const kept = nodes.find((n) => n.name === 'broken');
      expect(kept?.op_type).toBe('MatMul');
      expect(kept?.input).toEqual(broken.input);
      expect(kept?.output).toEqual(broken.output);
    });
  }

  it('on a well-formed model both MatMuls become MatMulNBits and onnxruntime runs the export', async () => {
    const m = model().open();
    const bytes = compressAndExport(m, int4);
    expect(
      decodeModelProto(bytes)
        .graph?.node.filter((n) => n.op_type === 'MatMulNBits')
        .map((n) => n.name),
    ).toEqual(['fc1_Q4', 'fc2_Q4']);
    const session = await ort.InferenceSession.create(bytes);
    try {
      const x = new ort.Tensor('float32', seededFloats(2 * K, 5), [2, K]);
      const y = (await session.run({ x })).y.data as Float32Array;
      expect(y.length).toBe(2 * N);
      expect(y.every(Number.isFinite)).toBe(true);
    } finally {
      await session.release();
    }
  });
});

describe('the opset-21 rewrite of Reduce ops', () => {
  const dequantize = [{ method: 'int4', options: { format: 'dequantize' } }];

  for (const [label, inputs] of [
    ['no inputs', []],
    ['an empty data input', ['']],
    ['an axes input as well as the attribute', ['h', 'h']],
  ] as const) {
    it(`a ReduceMax with ${label} is a 'corrupt' error naming the node`, () => {
      const m = model({
        edit: (nodes) =>
          void (nodes.find((n) => n.name === 'row_max') as NodeProto).input.splice(0, 1, ...inputs),
      }).open();
      const e = thrown(() => compressAndExport(m, dequantize));
      expect(isModelError(e)).toBe(true);
      expect((e as ModelError).code).toBe('corrupt');
      expect((e as ModelError).message).toMatch(
        /ReduceMax node 'row_max' has \d input\(s\).*takes exactly one/,
      );
    });
  }

  it("refuses an op whose meaning changed (GroupNormalization), and lets op types named like Object's members pass", () => {
    const odd = [
      makeNode('constructor', ['h'], ['odd1']),
      makeNode('toString', ['h'], ['odd2']),
      makeNode('__proto__', ['h'], ['odd3']),
    ];
    const passed = decodeModelProto(compressAndExport(model({ nodes: odd }).open(), dequantize));
    expect(
      passed.graph?.node.filter((n) => odd.some((o) => o.op_type === n.op_type)).map((n) => n.op_type),
    ).toEqual(['constructor', 'toString', '__proto__']);
    const groupNorm = makeNode(
      'GroupNormalization',
      ['h', 's', 'b'],
      ['gn'],
      { num_groups: 2 },
      { name: 'gn' },
    );
    const e = thrown(() => compressAndExport(model({ nodes: [groupNorm] }).open(), dequantize));
    expect((e as ModelError).code).toBe('unsupported');
    expect((e as ModelError).message).toMatch(/GroupNormalization node 'gn' changed meaning in opset 21/);
  });

  it('a well-formed ReduceMax gets its axes as an int64 input and the export runs in onnxruntime', async () => {
    const source = model();
    const bytes = compressAndExport(source.open(), dequantize);
    const exported = decodeModelProto(bytes);
    expect(Number(exported.opset_import.find((o) => !o.domain)?.version)).toBe(21);
    const reduce = exported.graph?.node.find((n) => n.name === 'row_max') as NodeProto;
    expect(reduce.attribute?.some((a) => a.name === 'axes')).toBe(false);
    const axes = exported.graph?.initializer.find((t) => t.name === reduce.input[1]) as TensorProto;
    const m = parseModel(bytesSource('exported.onnx', bytes));
    expect(Array.from(readTensor(m, axes) as BigInt64Array)).toEqual([-1n]);
    const x = new ort.Tensor('float32', seededFloats(2 * K, 6), [2, K]);
    const run = async (b: Uint8Array) => {
      const s = await ort.InferenceSession.create(b);
      try {
        return (await s.run({ x })).y.data as Float32Array;
      } finally {
        await s.release();
      }
    };
    const [before, after] = [await run(source.bytes), await run(bytes)];
    const maxDiff = before.reduce((m2, v, i) => Math.max(m2, Math.abs(v - after[i])), 0);
    expect(maxDiff).toBeLessThan(0.5);
    expect(maxDiff).toBeGreaterThan(0); // int4 changed the weights, so the export is not the source
  });
});
