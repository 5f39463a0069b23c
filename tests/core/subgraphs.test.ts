/**
 * Weights outside the main graph's initializers — in Constant nodes, If branches and Loop bodies —
 * are counted by inspect and compressed in the graph that holds them; onnxruntime runs the result.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesSource, parseModel, readTensorFloat32, type OnnxModel } from '../../src/core/onnx/model.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import {
  encodeModelProto,
  decodeModelProto,
  type GraphProto,
  type TensorProto,
} from '../../src/core/onnx/proto.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { findWeight, graphIndex } from '../../src/core/onnx/graphs.ts';
import { summarizeModel } from '../../src/core/summary.ts';
import { weightCandidates } from '../../src/core/compress/select.ts';
import { compressModel, type CompressionResult } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { PreviewSession } from '../../src/core/compress/session.ts';
import { resolveRecipe, type RecipeStep } from '../../src/core/compress/recipe.ts';
import { isModelError } from '../../src/core/errors.ts';
import { main } from '../../src/cli/main.ts';
import { ort, floatInput, runPath, tempDir, type Feeds } from '../helpers/ort.ts';
import { maxAbs, maxAbsDiff, runOutput } from '../helpers/compress.ts';
import {
  constantWeightsModel,
  convOnlyModel,
  H,
  ifModel,
  K,
  loopModel,
  N,
  sharedOutputNameModel,
} from '../helpers/subgraph-models.ts';

const open = (bytes: Uint8Array, name = 'model.onnx') => parseModel(bytesSource(name, bytes));

function compress(model: OnnxModel, steps: RecipeStep[]): { result: CompressionResult; bytes: Uint8Array } {
  const result = compressModel(model, resolveRecipe({ steps }));
  return { result, bytes: exportCompressed(model, result).model };
}

/** The source model with each compressed weight's preview values written back densely, where it lives. */
function denseReference(model: OnnxModel, result: CompressionResult): Uint8Array {
  return exportCompressed(model, {
    ...result,
    outcomes: result.outcomes.map((o) => ({ ...o, encoder: null })),
  }).model;
}

/** Every graph of a decoded model: the main graph first, then each subgraph. */
function graphsOf(bytes: Uint8Array): GraphProto[] {
  return graphIndex(decodeModelProto(bytes).graph as GraphProto).scopes.map((s) => s.graph);
}

function graphNamed(bytes: Uint8Array, name: string): GraphProto {
  const g = graphsOf(bytes).find((x) => x.name === name);
  if (!g) throw new Error(`no graph ${name}`);
  return g;
}

const x = (batch = 3) => floatInput([batch, K], 7);
const ifFeeds = (cond: boolean): Feeds => ({
  x: x(),
  cond: new ort.Tensor('bool', Uint8Array.of(cond ? 1 : 0), []),
});

// how far from the original model's output each recipe may move it, relative to its largest value
// (pruning changes the function on purpose: only the dense reference judges it)
const RECIPES: { label: string; steps: RecipeStep[]; tolerance: number }[] = [
  { label: 'int8', steps: [{ method: 'int8' }], tolerance: 0.03 },
  { label: 'int4 MatMulNBits', steps: [{ method: 'int4', options: { blockSize: 16 } }], tolerance: 0.25 },
  {
    label: 'int4 DequantizeLinear',
    steps: [{ method: 'int4', options: { blockSize: 16, format: 'dequantize' } }],
    tolerance: 0.25,
  },
  { label: 'k-means 16', steps: [{ method: 'kmeans', options: { clusters: 16 } }], tolerance: 0.25 },
  {
    label: 'prune 2:4 then fp16',
    steps: [{ method: 'prune', options: { pattern: '2:4' } }, { method: 'fp16' }],
    tolerance: Infinity,
  },
];

describe('inspect sees every weight', () => {
  it('counts Constant-node weights (not the plumbing scalars beside them) with statistics', () => {
    const model = open(constantWeightsModel());
    const summary = summarizeModel(model);
    expect(summary.tensors.map((t) => [t.name, t.source, t.consumers])).toEqual([
      ['c1', 'constant', ['MatMul']],
      ['c2', 'constant', ['Gemm']],
    ]);
    expect(summary.params).toBe(K * H + N * H);
    expect(summary.bytes).toBe((K * H + N * H) * 4);
    const c1 = summary.tensors[0];
    const values = readTensorFloat32(model, findWeight(model, 'c1').tensor);
    expect(c1.min).toBe(values.reduce((a, b) => Math.min(a, b), Infinity));
    expect(c1.max).toBe(values.reduce((a, b) => Math.max(a, b), -Infinity));
    expect(summary.opTypes.Constant).toBe(3);
  });

  it('counts initializers and Constant weights inside If branches, each under its subgraph path, and their op types', () => {
    const summary = summarizeModel(open(ifModel()));
    expect(
      summary.tensors.map((t) => [t.name, t.graph ?? '', t.source ?? 'initializer', t.consumers]),
    ).toEqual([
      ['shared_w', '', 'initializer', ['MatMul']],
      ['branch/then_branch/then_w', 'branch/then_branch', 'initializer', ['MatMul']],
      ['branch/else_branch/else_w', 'branch/else_branch', 'constant', ['MatMul']],
    ]);
    expect(summary.params).toBe(K * H + 2 * H * N);
    expect({ ...summary.opTypes }).toEqual({ If: 1, MatMul: 4, Tanh: 3, Relu: 1, Constant: 1 });
  });

  it('counts a Loop body’s weight and op types', () => {
    const summary = summarizeModel(open(loopModel()));
    expect(summary.tensors.map((t) => [t.name, t.params])).toEqual([
      ['trips', 1],
      ['rounds/body/loop_w', K * K],
    ]);
    expect({ ...summary.opTypes }).toEqual({ Loop: 1, Identity: 1, MatMul: 1, Tanh: 1 });
  });

  it('`inspect --json` reports the subgraph weights and op types', async () => {
    const dir = tempDir();
    const path = join(dir, 'if.onnx');
    writeFileSync(path, ifModel());
    let out = '';
    expect(await main(['inspect', path, '--json'], (s) => (out += s))).toBe(0);
    const report = JSON.parse(out);
    expect(report.params).toBe(K * H + 2 * H * N);
    expect(
      report.tensors.map((t: { name: string; graph?: string; source?: string }) => [
        t.name,
        t.graph,
        t.source,
      ]),
    ).toEqual([
      ['shared_w', undefined, undefined],
      ['branch/then_branch/then_w', 'branch/then_branch', undefined],
      ['branch/else_branch/else_w', 'branch/else_branch', 'constant'],
    ]);
    expect(report.opTypes.MatMul).toBe(4);
  });

  it('shows unknown dimensions by their symbolic name or "?", never 0', () => {
    const proto = decodeModelProto(constantWeightsModel());
    const graph = proto.graph as GraphProto;
    graph.input[0].type!.tensor_type!.shape!.dim = [{ dim_param: 'batch' }, {}, { dim_value: 0 }];
    const summary = summarizeModel(open(encodeModelProto(proto)));
    expect(summary.inputs[0].shape).toEqual(['batch', '?', 0]);
  });

  it('op types named constructor, toString and __proto__ count like any other, in --json too', async () => {
    const names = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'constructor', 'constructor'];
    const bytes = makeModelBytes({
      nodes: names.map((op, i) =>
        makeNode(op, [i ? `t${i - 1}` : 'x'], [`t${i}`], {}, { domain: i ? '' : 'custom' }),
      ),
      inputs: [valueInfo('x', DataType.FLOAT, [1])],
      outputs: [valueInfo(`t${names.length - 1}`, DataType.FLOAT, [1])],
    });
    const summary = summarizeModel(open(bytes));
    expect(Object.entries(summary.opTypes).sort()).toEqual([
      ['__proto__', 1],
      ['constructor', 2],
      ['custom.constructor', 1],
      ['hasOwnProperty', 1],
      ['toString', 1],
    ]);
    const dir = tempDir();
    writeFileSync(join(dir, 'm.onnx'), bytes);
    let out = '';
    expect(await main(['inspect', join(dir, 'm.onnx'), '--json'], (s) => (out += s))).toBe(0);
    expect(out).toContain('"__proto__":1');
    expect(Object.entries(JSON.parse(out).opTypes).sort()).toEqual(Object.entries(summary.opTypes).sort());
  });

  it('a subgraph tensor whose bytes do not match its shape is a typed error at open', () => {
    const proto = decodeModelProto(ifModel());
    const branch = proto.graph!.node[0].attribute![0].g!;
    branch.initializer[0].raw_data = branch.initializer[0].raw_data!.subarray(0, 10);
    let error: unknown;
    try {
      open(encodeModelProto(proto));
    } catch (e) {
      error = e;
    }
    expect(isModelError(error) && error.code).toBe('corrupt');
    expect((error as Error).message).toContain("'then_w'");
  });
});

describe('compress reaches every weight', () => {
  it('selects Constant-node and subgraph weights by unique names, keeping top-level names unchanged', () => {
    expect(
      weightCandidates(open(constantWeightsModel()).graph).map((c) => [c.name, c.source, c.channelAxis]),
    ).toEqual([
      ['c1', 'constant', 1],
      ['c2', 'constant', 0],
    ]);
    expect(weightCandidates(open(ifModel()).graph).map((c) => [c.name, c.scope, c.role])).toEqual([
      ['shared_w', '', 'linear'],
      ['branch/then_branch/then_w', 'branch/then_branch', 'linear'],
      ['branch/else_branch/else_w', 'branch/else_branch', 'linear'],
    ]);
    // a selection pattern picks subgraph weights by their path
    const model = open(ifModel());
    const { result } = compress(model, [{ method: 'int8', select: { include: ['branch/then_branch/*'] } }]);
    expect(result.reports.map((r) => r.name)).toEqual(['branch/then_branch/then_w']);
  });

  it('a MatMul whose output leaves through an If branch is an LM head (merged decoders); one inside a Loop body is not', () => {
    // the If model with its branch outputs taken straight from the second MatMuls
    const proto = decodeModelProto(ifModel());
    for (const a of proto.graph!.node[0].attribute!) {
      const g = a.g!;
      const last = g.node[g.node.length - 1];
      g.node = g.node.slice(0, -1);
      g.node[g.node.length - 1].output = [last.output[0]];
    }
    const roles = weightCandidates(open(encodeModelProto(proto)).graph).map((c) => [c.name, c.role]);
    expect(roles).toEqual([
      ['shared_w', 'linear'],
      ['branch/then_branch/then_w', 'lmHead'],
      ['branch/else_branch/else_w', 'lmHead'],
    ]);
    const loop = decodeModelProto(loopModel());
    const body = loop.graph!.node[0].attribute![0].g!;
    body.node = [body.node[0], { ...body.node[1], output: ['v_out'] }];
    expect(weightCandidates(open(encodeModelProto(loop)).graph).map((c) => c.role)).toEqual(['linear']);
  });

  for (const { label, steps, tolerance } of RECIPES) {
    it(`${label}: Constant-node weights are compressed and onnxruntime runs the result`, async () => {
      const source = constantWeightsModel();
      const model = open(source);
      const { result, bytes } = compress(model, steps);
      expect(result.reports.map((r) => r.name)).toEqual(['c1', 'c2']);
      // the compressed weights are no longer float32 Constant nodes
      const constants = graphsOf(bytes)[0].node.filter((n) => n.op_type === 'Constant');
      expect(constants.map((n) => n.output[0])).toEqual(['eps']);
      const feeds = { x: x() };
      const original = await runOutput(source, feeds, 'y');
      const got = await runOutput(bytes, feeds, 'y');
      expect(maxAbsDiff(got, await runOutput(denseReference(model, result), feeds, 'y'))).toBeLessThan(1e-4);
      expect(maxAbsDiff(got, original)).toBeLessThan(tolerance * maxAbs(original));
    });

    it(`${label}: If-branch weights are compressed in their branch, the shared outer weight once`, async () => {
      const source = ifModel();
      const model = open(source);
      const { result, bytes } = compress(model, steps);
      expect(result.reports.map((r) => r.name)).toEqual([
        'shared_w',
        'branch/then_branch/then_w',
        'branch/else_branch/else_w',
      ]);
      const outer = graphsOf(bytes)[0];
      const thenGraph = graphNamed(bytes, 'then_graph');
      const elseGraph = graphNamed(bytes, 'else_graph');
      // nothing float32 of the original weights is left anywhere, and each branch holds its own encoding
      for (const g of graphsOf(bytes)) {
        for (const t of g.initializer) expect(['shared_w', 'then_w', 'else_w']).not.toContain(t.name);
        expect(g.node.filter((n) => n.op_type === 'Constant')).toHaveLength(0);
      }
      expect(thenGraph.initializer.every((t) => t.name.startsWith('then_w'))).toBe(true);
      expect(thenGraph.initializer.length).toBeGreaterThan(0);
      expect(elseGraph.initializer.every((t) => t.name.startsWith('else_w'))).toBe(true);
      expect(elseGraph.initializer.length).toBeGreaterThan(0);
      // the shared weight is encoded once, in the main graph
      expect(outer.initializer.filter((t) => t.name.startsWith('shared_w')).length).toBeGreaterThan(0);
      for (const g of [thenGraph, elseGraph])
        expect(g.initializer.some((t) => t.name.startsWith('shared_w'))).toBe(false);
      const reference = denseReference(model, result);
      for (const cond of [true, false]) {
        const feeds = ifFeeds(cond);
        const original = await runOutput(source, feeds, 'y');
        const got = await runOutput(bytes, feeds, 'y');
        expect(maxAbsDiff(got, await runOutput(reference, feeds, 'y'))).toBeLessThan(1e-4);
        expect(maxAbsDiff(got, original)).toBeLessThan(tolerance * maxAbs(original));
      }
    });

    it(`${label}: a Loop body’s weight is compressed in the body`, async () => {
      const source = loopModel();
      const model = open(source);
      const { result, bytes } = compress(model, steps);
      expect(result.reports.map((r) => r.name)).toEqual(['rounds/body/loop_w']);
      const body = graphNamed(bytes, 'loop_body');
      expect(body.initializer.some((t) => t.name === 'loop_w')).toBe(false);
      expect(body.initializer.length).toBeGreaterThan(0);
      const feeds = { x: x() };
      const original = await runOutput(source, feeds, 'y');
      const got = await runOutput(bytes, feeds, 'y');
      expect(maxAbsDiff(got, await runOutput(denseReference(model, result), feeds, 'y'))).toBeLessThan(1e-4);
      expect(maxAbsDiff(got, original)).toBeLessThan(tolerance * maxAbs(original));
    });
  }

  it('subgraph and Constant-node tensors kept in external data are carried into the output', async () => {
    // then_w (a branch initializer) and else_w (a Constant in the other branch) live in model.onnx_data
    const proto = decodeModelProto(ifModel());
    const [thenBranch, elseBranch] = proto.graph!.node[0].attribute!.map((a) => a.g!);
    const chunks: Uint8Array[] = [];
    let offset = 0;
    const externalize = (t: TensorProto) => {
      const bytes = t.raw_data!;
      t.data_location = 1;
      t.external_data = [
        { key: 'location', value: 'model.onnx_data' },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes.byteLength) },
      ];
      delete t.raw_data;
      chunks.push(bytes);
      offset += bytes.byteLength;
    };
    externalize(thenBranch.initializer[0]);
    externalize(elseBranch.node.find((n) => n.op_type === 'Constant')!.attribute![0].t!);
    const data = Buffer.concat(chunks);
    const model = parseModel(bytesSource('model.onnx', encodeModelProto(proto)), [
      bytesSource('model.onnx_data', data),
    ]);
    expect(summarizeModel(model).params).toBe(K * H + 2 * H * N);
    // only the main-graph weight is compressed: the branch weights pass through untouched
    const result = compressModel(
      model,
      resolveRecipe({ steps: [{ method: 'int8', select: { include: ['shared_w'] } }] }),
    );
    const written = exportCompressed(model, result, {
      externalData: { location: 'out.onnx_data', threshold: 0 },
    });
    const dir = tempDir();
    writeFileSync(join(dir, 'out.onnx'), written.model);
    writeFileSync(join(dir, 'out.onnx_data'), Buffer.concat(written.externalData!.chunks));
    for (const cond of [true, false]) {
      const feeds = ifFeeds(cond);
      const original = await runOutput(ifModel(), feeds, 'y');
      const got = (await runPath(join(dir, 'out.onnx'), feeds)).y.data as Float32Array;
      expect(maxAbsDiff(got, original)).toBeLessThan(0.03 * maxAbs(original));
    }
  });

  it('the live preview reads subgraph and Constant weights too', async () => {
    const session = new PreviewSession(open(ifModel()));
    const result = await session.run(resolveRecipe({ steps: [{ method: 'int8' }] }));
    expect(result.reports.map((r) => r.name)).toEqual([
      'shared_w',
      'branch/then_branch/then_w',
      'branch/else_branch/else_w',
    ]);
    expect(result.totals.params).toBe(K * H + 2 * H * N);
  });

  it('`compress --int8` on the command line writes a model onnxruntime runs', async () => {
    const dir = tempDir();
    const input = join(dir, 'if.onnx');
    const output = join(dir, 'if.int8.onnx');
    writeFileSync(input, ifModel());
    let out = '';
    expect(await main(['compress', input, '--int8', '-o', output, '--json'], (s) => (out += s))).toBe(0);
    expect(JSON.parse(out).tensors).toHaveLength(3);
    const feeds = ifFeeds(false);
    const original = (await runPath(input, feeds)).y.data as Float32Array;
    const got = (await runPath(output, feeds)).y.data as Float32Array;
    expect(maxAbsDiff(got, original)).toBeLessThan(0.03 * maxAbs(original));
    expect(readFileSync(input)).toEqual(Buffer.from(ifModel()));
  });
});

describe('weight selection on hostile graphs', () => {
  it('2,000 nodes writing one tensor name: candidates, compression and export finish (each tensor walked once)', () => {
    const model = open(sharedOutputNameModel(2000));
    expect(weightCandidates(model.graph).map((c) => [c.name, c.role])).toEqual([['w', 'linear']]);
    const { result, bytes } = compress(model, [{ method: 'int8' }]);
    expect(result.reports.map((r) => r.name)).toEqual(['w']);
    expect(graphsOf(bytes)[0].node.filter((n) => n.op_type === 'Identity')).toHaveLength(2000);
  }, 20_000);

  it('a model with nothing compressible says what it holds instead of blaming the selection', async () => {
    const model = open(convOnlyModel(), 'conv.onnx');
    const expectMessage = (e: unknown) => {
      expect(isModelError(e) && e.code).toBe('unsupported');
      const message = (e as Error).message;
      expect(message).toContain('conv.onnx has no float32 2-D weight read by MatMul, Gemm or Gather');
      expect(message).toContain('Its 3 weight tensors are: ');
      expect(message).toContain('1 4-D float32');
      expect(message).toContain('1 int64');
      expect(message).not.toContain('selection');
    };
    let error: unknown;
    try {
      compressModel(model, resolveRecipe({ steps: [{ method: 'int8' }] }));
    } catch (e) {
      error = e;
    }
    expectMessage(error);
    await new PreviewSession(model)
      .run(resolveRecipe({ steps: [{ method: 'int8' }] }))
      .then(() => expect.unreachable(), expectMessage);
  });

  it('a selection that picks none of the candidates keeps the message about the selection', () => {
    const model = open(ifModel());
    expect(() =>
      compressModel(model, resolveRecipe({ steps: [{ method: 'int8', select: { include: ['nothing'] } }] })),
    ).toThrow(/selected no weights.*3 weight matrices/);
  });

  it('a main-graph weight read inside a branch that defines the same name is not rewritten there', () => {
    // the branch's own 'shared_w' hides the outer one: only the outer MatMul reads the outer weight
    const inner = floatTensor('shared_w', [K, H], new Float32Array(K * H).fill(0.5));
    const branch = (name: string): GraphProto => ({
      name,
      node: [makeNode('MatMul', ['x', 'shared_w'], [`${name}_out`])],
      input: [],
      output: [valueInfo(`${name}_out`, DataType.FLOAT, ['batch', H])],
      initializer: name === 'then_graph' ? [inner] : [],
    });
    const proto = decodeModelProto(ifModel());
    const ifNode = proto.graph!.node[0];
    ifNode.attribute = [
      { name: 'then_branch', type: 5, g: branch('then_graph') },
      { name: 'else_branch', type: 5, g: branch('else_graph') },
    ];
    const index = graphIndex(open(encodeModelProto(proto)).graph);
    const readers = index.readers(index.root, 'shared_w').map((n) => n.output[0]);
    expect(readers).toEqual(['else_graph_out']);
  });
});
