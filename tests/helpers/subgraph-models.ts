/**
 * Small real models that keep weights where the studio once could not see them: in Constant nodes
 * (as PaddleOCR exports do), inside If branches and a Loop body (as Silero VAD and Hugging Face merged
 * decoders do), and a main-graph weight read from inside both branches.
 */
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, int64Tensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import {
  AttributeType,
  type GraphProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from '../../src/core/onnx/proto.ts';
import { seededFloats } from './models.ts';

export const K = 32;
export const H = 64;
export const N = 16;

/** A node holding subgraphs (build.ts writes scalar attributes only). */
function nodeWithGraphs(
  opType: string,
  inputs: string[],
  outputs: string[],
  graphs: Record<string, GraphProto>,
  name: string,
): NodeProto {
  return {
    op_type: opType,
    input: inputs,
    output: outputs,
    name,
    attribute: Object.entries(graphs).map(([key, g]) => ({ name: key, type: AttributeType.GRAPH, g })),
  };
}

function graph(
  name: string,
  nodes: NodeProto[],
  inputs: ValueInfoProto[],
  outputs: ValueInfoProto[],
  initializer: TensorProto[] = [],
): GraphProto {
  return { name, node: nodes, input: inputs, output: outputs, initializer };
}

export function constantNode(output: string, value: TensorProto): NodeProto {
  return makeNode('Constant', [], [output], { value }, { name: `${output}_Constant` });
}

/** Weights only in Constant nodes: y = tanh(tanh(x·C1)·C2ᵀ) with C2 read by a Gemm with transB. */
export function constantWeightsModel(): Uint8Array {
  return makeModelBytes({
    nodes: [
      constantNode('c1', floatTensor('c1', [K, H], seededFloats(K * H, 21, 0.3))),
      constantNode('c2', floatTensor('c2', [N, H], seededFloats(N * H, 22, 0.3))),
      // plumbing a Constant node also carries: not a weight
      constantNode('eps', floatTensor('eps', [], [1e-5])),
      makeNode('MatMul', ['x', 'c1'], ['h0']),
      makeNode('Add', ['h0', 'eps'], ['h1']),
      makeNode('Tanh', ['h1'], ['h2']),
      makeNode('Gemm', ['h2', 'c2'], ['h3'], { transB: 1 }),
      makeNode('Tanh', ['h3'], ['y']),
    ],
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', K])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', N])],
  });
}

/**
 * y = If(cond, then: tanh(tanh(x·S)·T), else: relu(tanh(x·S)·E)), with S a main-graph initializer
 * read inside both branches, T a then-branch initializer and E a Constant node in the else branch.
 */
export function ifModel(): Uint8Array {
  const thenBranch = graph(
    'then_graph',
    [
      makeNode('MatMul', ['x', 'shared_w'], ['then_h0'], {}, { name: 'then_matmul_shared' }),
      makeNode('Tanh', ['then_h0'], ['then_h1']),
      makeNode('MatMul', ['then_h1', 'then_w'], ['then_h2'], {}, { name: 'then_matmul' }),
      makeNode('Tanh', ['then_h2'], ['then_out']),
    ],
    [],
    [valueInfo('then_out', DataType.FLOAT, ['batch', N])],
    [floatTensor('then_w', [H, N], seededFloats(H * N, 31, 0.3))],
  );
  const elseBranch = graph(
    'else_graph',
    [
      constantNode('else_w', floatTensor('else_w', [H, N], seededFloats(H * N, 32, 0.3))),
      makeNode('MatMul', ['x', 'shared_w'], ['else_h0'], {}, { name: 'else_matmul_shared' }),
      makeNode('Tanh', ['else_h0'], ['else_h1']),
      makeNode('MatMul', ['else_h1', 'else_w'], ['else_h2'], {}, { name: 'else_matmul' }),
      makeNode('Relu', ['else_h2'], ['else_out']),
    ],
    [],
    [valueInfo('else_out', DataType.FLOAT, ['batch', N])],
  );
  return makeModelBytes({
    nodes: [
      nodeWithGraphs('If', ['cond'], ['y'], { then_branch: thenBranch, else_branch: elseBranch }, 'branch'),
    ],
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', K]), valueInfo('cond', DataType.BOOL, [])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', N])],
    initializers: [floatTensor('shared_w', [K, H], seededFloats(K * H, 30, 0.3))],
  });
}

/** Three rounds of v ← tanh(v·L) in a Loop whose body holds L. */
export function loopModel(): Uint8Array {
  const body = graph(
    'loop_body',
    [
      makeNode('Identity', ['cond_in'], ['cond_out']),
      makeNode('MatMul', ['v_in', 'loop_w'], ['v_h'], {}, { name: 'loop_matmul' }),
      makeNode('Tanh', ['v_h'], ['v_out']),
    ],
    [
      valueInfo('iteration', DataType.INT64, []),
      valueInfo('cond_in', DataType.BOOL, []),
      valueInfo('v_in', DataType.FLOAT, ['batch', K]),
    ],
    [valueInfo('cond_out', DataType.BOOL, []), valueInfo('v_out', DataType.FLOAT, ['batch', K])],
    [floatTensor('loop_w', [K, K], seededFloats(K * K, 41, 0.4))],
  );
  return makeModelBytes({
    nodes: [nodeWithGraphs('Loop', ['trips', '', 'x'], ['y'], { body }, 'rounds')],
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', K])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', K])],
    initializers: [int64Tensor('trips', [], [3])],
  });
}

/**
 * One weight, then `copies` nodes that all write the same tensor name (invalid, but seen in fuzzing):
 * a walk that follows every path instead of every tensor explodes on it.
 */
export function sharedOutputNameModel(copies: number): Uint8Array {
  const nodes = [makeNode('MatMul', ['x', 'w'], ['t'])];
  for (let i = 0; i < copies; i++) nodes.push(makeNode('Identity', ['t'], ['t'], {}, { name: `copy_${i}` }));
  nodes.push(makeNode('Relu', ['t'], ['y']));
  return makeModelBytes({
    nodes,
    inputs: [valueInfo('x', DataType.FLOAT, ['batch', K])],
    outputs: [valueInfo('y', DataType.FLOAT, ['batch', N])],
    initializers: [floatTensor('w', [K, N], seededFloats(K * N, 51, 0.3))],
  });
}

/** A convolution-only model: its weights are 4-D kernels and an int64 shape, nothing a method compresses. */
export function convOnlyModel(): Uint8Array {
  return makeModelBytes({
    nodes: [
      makeNode('Conv', ['x', 'kernel', 'bias'], ['c'], { pads: [1, 1, 1, 1] }),
      makeNode('Reshape', ['c', 'flat'], ['y']),
    ],
    inputs: [valueInfo('x', DataType.FLOAT, [1, 2, 4, 4])],
    outputs: [valueInfo('y', DataType.FLOAT, [1, 48])],
    initializers: [
      floatTensor('kernel', [3, 2, 3, 3], seededFloats(54, 61, 0.3)),
      floatTensor('bias', [3], [0.1, 0.2, 0.3]),
      int64Tensor('flat', [2], [1, 48]),
    ],
  });
}
