/**
 * The real models the fuzzer mutates: the two checked-in fixtures, plus small graphs built here for
 * the storage the fixtures lack (weights in Constant nodes, weights inside If/Loop subgraphs,
 * weights in an external-data file).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { concatChunks, writeModel } from '../../src/core/onnx/write.ts';
import {
  AttributeType,
  type GraphProto,
  type NodeProto,
  type TensorProto,
} from '../../src/core/onnx/proto.ts';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const FIXTURE_DIRS = [
  join(REPO_ROOT, 'tests', 'fixtures', 'stories260K'),
  join(REPO_ROOT, 'public', 'models', 'tiny-shakespeare-gpt2'),
];

/** The file the model is opened by; its external data, if any, sits beside it. */
export const MAIN_FILE = 'model.onnx';
export const DATA_FILE = 'model.onnx_data';

export interface SeedModel {
  name: string;
  /** File name → bytes; always holds MAIN_FILE. */
  files: Record<string, Uint8Array>;
}

/** Deterministic weights (a linear congruential sequence), so every run mutates the same models. */
function weights(n: number, seed: number, scale = 0.5): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

function boolScalar(name: string, value: boolean): TensorProto {
  return { name, dims: [], data_type: DataType.BOOL, raw_data: Uint8Array.of(value ? 1 : 0) };
}

function int64Scalar(name: string, value: number): TensorProto {
  return {
    name,
    dims: [],
    data_type: DataType.INT64,
    raw_data: new Uint8Array(BigInt64Array.of(BigInt(value)).buffer),
  };
}

function graphAttr(name: string, g: GraphProto): NonNullable<NodeProto['attribute']>[number] {
  return { name, type: AttributeType.GRAPH, g };
}

/** Two MatMuls whose weights (and the bias) are Constant nodes, as PaddleOCR's exports store them. */
export function constantWeightsModel(k = 16, hidden = 32, n = 8): Uint8Array {
  return makeModelBytes({
    nodes: [
      makeNode('Constant', [], ['w1'], {
        value: floatTensor('w1_value', [k, hidden], weights(k * hidden, 11)),
      }),
      makeNode('Constant', [], ['b1'], {
        value: floatTensor('b1_value', [hidden], weights(hidden, 12, 0.1)),
      }),
      makeNode('Constant', [], ['w2'], {
        value: floatTensor('w2_value', [hidden, n], weights(hidden * n, 13)),
      }),
      makeNode('MatMul', ['x', 'w1'], ['h0'], {}, { name: 'fc1' }),
      makeNode('Add', ['h0', 'b1'], ['h1']),
      makeNode('ReduceMax', ['h1'], ['h1_max'], { axes: [-1], keepdims: 1 }, { name: 'row_max' }),
      makeNode('Sub', ['h1', 'h1_max'], ['h1s']),
      makeNode('Tanh', ['h1s'], ['h2']),
      makeNode('MatMul', ['h2', 'w2'], ['y'], {}, { name: 'fc2' }),
    ],
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', k])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', n])],
    name: 'constant_weights',
  });
}

/** An If whose branches each own a weight, then a Loop whose body owns one (Silero VAD's layout). */
export function subgraphWeightsModel(k = 16, n = 16): Uint8Array {
  const branch = (tag: string, seed: number): GraphProto => ({
    name: `${tag}_branch`,
    node: [makeNode('MatMul', ['x', `w_${tag}`], [`${tag}_out`], {}, { name: `${tag}_matmul` })],
    initializer: [floatTensor(`w_${tag}`, [k, n], weights(k * n, seed))],
    input: [],
    output: [valueInfo(`${tag}_out`, DataType.FLOAT, ['batch', n])],
  });
  const body: GraphProto = {
    name: 'loop_body',
    node: [
      makeNode('MatMul', ['v_in', 'w_loop'], ['v_mm'], {}, { name: 'loop_matmul' }),
      makeNode('Tanh', ['v_mm'], ['v_out']),
      makeNode('Identity', ['cond_in'], ['cond_out']),
    ],
    initializer: [floatTensor('w_loop', [n, n], weights(n * n, 23))],
    input: [
      valueInfo('iter', DataType.INT64, []),
      valueInfo('cond_in', DataType.BOOL, []),
      valueInfo('v_in', DataType.FLOAT, ['batch', n]),
    ],
    output: [valueInfo('cond_out', DataType.BOOL, []), valueInfo('v_out', DataType.FLOAT, ['batch', n])],
  };
  const ifNode = makeNode('If', ['use_then'], ['y']);
  ifNode.attribute = [
    graphAttr('then_branch', branch('then', 21)),
    graphAttr('else_branch', branch('else', 22)),
  ];
  const loopNode = makeNode('Loop', ['trips', 'keep_going', 'y'], ['z']);
  loopNode.attribute = [graphAttr('body', body)];
  return makeModelBytes({
    nodes: [ifNode, loopNode],
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', k]), valueInfo('use_then', DataType.BOOL, [])],
    outputs: [valueInfo('z', DataType.FLOAT, ['batch', n])],
    initializers: [int64Scalar('trips', 2), boolScalar('keep_going', true)],
    name: 'subgraph_weights',
  });
}

/** An MLP (MatMul, Add, Tanh, MatMul, with a Gemm head) whose weights live in model.onnx_data. */
export function externalDataModel(k = 16, hidden = 32, n = 8): SeedModel {
  const bytes = makeModelBytes({
    nodes: [
      makeNode('MatMul', ['x', 'w1'], ['h0'], {}, { name: 'fc1' }),
      makeNode('Add', ['h0', 'b1'], ['h1']),
      makeNode('ReduceMean', ['h1'], ['h1_mean'], { axes: [1], keepdims: 1 }),
      makeNode('Sub', ['h1', 'h1_mean'], ['h1c']),
      makeNode('Tanh', ['h1c'], ['h2']),
      makeNode('Gemm', ['h2', 'w2'], ['y'], { transB: 1 }, { name: 'head' }),
    ],
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', k])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', n])],
    initializers: [
      floatTensor('w1', [k, hidden], weights(k * hidden, 31)),
      floatTensor('b1', [hidden], weights(hidden, 32, 0.1)),
      floatTensor('w2', [n, hidden], weights(n * hidden, 33)),
    ],
    name: 'external_data',
  });
  const model = parseModel(bytesSource(MAIN_FILE, bytes));
  const written = writeModel(model, { externalData: { location: DATA_FILE, threshold: 64 } });
  if (!written.externalData) throw new Error('externalDataModel: no external data was written');
  return {
    name: 'external-data-mlp',
    files: { [MAIN_FILE]: written.model, [DATA_FILE]: concatChunks(written.externalData.chunks) },
  };
}

/** Every model the fuzzer mutates; the fixtures are read from the repository, never written. */
export function seedModels(): SeedModel[] {
  const read = (path: string) => new Uint8Array(readFileSync(path));
  return [
    { name: 'stories260K', files: { [MAIN_FILE]: read(join(FIXTURE_DIRS[0], MAIN_FILE)) } },
    // the demo keeps its model where Hugging Face folders do (onnx/), with the KV cache's inputs
    {
      name: 'tiny-shakespeare-gpt2',
      files: { [MAIN_FILE]: read(join(FIXTURE_DIRS[1], 'onnx', MAIN_FILE)) },
    },
    { name: 'constant-weights', files: { [MAIN_FILE]: constantWeightsModel() } },
    { name: 'subgraph-weights', files: { [MAIN_FILE]: subgraphWeightsModel() } },
    externalDataModel(),
  ];
}
