/** Small constructors for ONNX protos: used by exporters to write new nodes and by tests to build graphs. */
import { DataType } from './dtypes.ts';
import {
  AttributeType,
  encodeModelProto,
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type OperatorSetIdProto,
  type TensorProto,
  type ValueInfoProto,
} from './proto.ts';

export type AttributeValue = number | string | number[] | TensorProto | { float: number };

function attribute(name: string, value: AttributeValue): AttributeProto {
  if (typeof value === 'number') return { name, type: AttributeType.INT, i: value };
  if (typeof value === 'string')
    return { name, type: AttributeType.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: AttributeType.INTS, ints: value };
  if ('float' in value) return { name, type: AttributeType.FLOAT, f: value.float };
  return { name, type: AttributeType.TENSOR, t: value };
}

export function makeNode(
  opType: string,
  inputs: string[],
  outputs: string[],
  attrs: Record<string, AttributeValue> = {},
  opts: { name?: string; domain?: string } = {},
): NodeProto {
  const node: NodeProto = {
    op_type: opType,
    input: inputs,
    output: outputs,
    attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
  };
  if (opts.name) node.name = opts.name;
  if (opts.domain) node.domain = opts.domain;
  return node;
}

export function valueInfo(name: string, elemType: number, shape: (number | string)[]): ValueInfoProto {
  return {
    name,
    type: {
      tensor_type: {
        elem_type: elemType,
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) },
      },
    },
  };
}

/** The bytes of a typed array as a fresh Uint8Array (an initializer owns its raw_data). */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();
}

export function floatTensor(name: string, dims: number[], data: Float32Array | number[]): TensorProto {
  const arr = data instanceof Float32Array ? data : Float32Array.from(data);
  return { name, dims, data_type: DataType.FLOAT, raw_data: bytesOf(arr) };
}

export function int64Tensor(name: string, dims: number[], data: number[]): TensorProto {
  return { name, dims, data_type: DataType.INT64, raw_data: bytesOf(BigInt64Array.from(data.map(BigInt))) };
}

export function makeModelProto(opts: {
  nodes: NodeProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
  initializers?: TensorProto[];
  opset?: OperatorSetIdProto[];
  name?: string;
}): ModelProto {
  const graph: GraphProto = {
    name: opts.name ?? 'graph',
    node: opts.nodes,
    input: opts.inputs,
    output: opts.outputs,
    initializer: opts.initializers ?? [],
  };
  return {
    ir_version: 8,
    opset_import: opts.opset ?? [{ domain: '', version: 17 }],
    producer_name: 'compression-studio',
    graph,
  };
}

export function makeModelBytes(opts: Parameters<typeof makeModelProto>[0]): Uint8Array {
  return encodeModelProto(makeModelProto(opts));
}
