/** What the studio shows about a model: totals, dtype mix, op types and a row per weight tensor. */
import { dtypeName, rawByteLength } from './onnx/dtypes.ts';
import { elementCount, readTensor, type OnnxModel } from './onnx/model.ts';
import type { GraphProto } from './onnx/proto.ts';
import { isModelError } from './errors.ts';
import { tensorStats, type TensorStats } from './stats.ts';

export interface TensorSummary extends Partial<TensorStats> {
  name: string;
  dtype: string;
  shape: number[];
  params: number;
  bytes: number;
  external: boolean;
  /** Op types of the nodes that read this tensor directly. */
  consumers: string[];
  /** Why values could not be read (e.g. an unsupported dtype); the stats are absent then. */
  error?: string;
}

export interface ModelSummary {
  name: string;
  fileSize: number;
  /** Bytes of the model's files together (the .onnx plus its external data). */
  totalSize: number;
  params: number;
  bytes: number;
  irVersion: number;
  opsets: { domain: string; version: number }[];
  producer: string;
  inputs: { name: string; dtype: string; shape: (number | string)[] }[];
  outputs: { name: string; dtype: string; shape: (number | string)[] }[];
  /** Parameters per dtype. */
  dtypes: Record<string, number>;
  opTypes: Record<string, number>;
  tensors: TensorSummary[];
}

export function consumerOpTypes(graph: GraphProto): Map<string, Set<string>> {
  const map = new Map<string, Set<string>>();
  for (const node of graph.node) {
    for (const input of node.input) {
      let set = map.get(input);
      if (!set) map.set(input, (set = new Set()));
      set.add(node.op_type);
    }
  }
  return map;
}

function opTypeHistogram(graph: GraphProto): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const node of graph.node) {
    const key = node.domain && node.domain !== 'ai.onnx' ? `${node.domain}.${node.op_type}` : node.op_type;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

function ioInfo(graph: GraphProto, which: 'input' | 'output') {
  const inits = new Set(graph.initializer.map((t) => t.name));
  return graph[which]
    .filter((v) => !inits.has(v.name))
    .map((v) => ({
      name: v.name,
      dtype: dtypeName(v.type?.tensor_type?.elem_type ?? 0),
      shape: (v.type?.tensor_type?.shape?.dim ?? []).map((d) => d.dim_param || Number(d.dim_value ?? 0)),
    }));
}

export function summarizeModel(
  model: OnnxModel,
  onProgress?: (done: number, total: number) => void,
  shouldStop?: () => boolean,
): ModelSummary {
  const { graph } = model;
  const consumers = consumerOpTypes(graph);
  const dtypes: Record<string, number> = {};
  const tensors: TensorSummary[] = [];
  let params = 0;
  let bytes = 0;
  const total = graph.initializer.length;
  graph.initializer.forEach((t, i) => {
    if (shouldStop?.()) return;
    const count = elementCount(t.dims);
    const size = rawByteLength(t.data_type, count);
    const row: TensorSummary = {
      name: t.name,
      dtype: dtypeName(t.data_type),
      shape: t.dims.map(Number),
      params: count,
      bytes: size,
      external: t.data_location === 1,
      consumers: [...(consumers.get(t.name) ?? [])].sort(),
    };
    try {
      Object.assign(row, tensorStats(readTensor(model, t)));
    } catch (e) {
      if (!isModelError(e)) throw e;
      row.error = e.message;
    }
    tensors.push(row);
    params += count;
    bytes += size;
    dtypes[row.dtype] = (dtypes[row.dtype] ?? 0) + count;
    onProgress?.(i + 1, total);
  });
  const externalSize = [...model.external.values()].reduce((s, f) => s + f.size, 0);
  return {
    name: model.name,
    fileSize: model.fileSize,
    totalSize: model.fileSize + externalSize,
    params,
    bytes,
    irVersion: Number(model.proto.ir_version),
    opsets: model.proto.opset_import.map((o) => ({
      domain: o.domain || 'ai.onnx',
      version: Number(o.version),
    })),
    producer: [model.proto.producer_name, model.proto.producer_version].filter(Boolean).join(' '),
    inputs: ioInfo(graph, 'input'),
    outputs: ioInfo(graph, 'output'),
    dtypes,
    opTypes: opTypeHistogram(graph),
    tensors,
  };
}

/** The graph's real inputs (initializers listed as inputs by old exporters excluded). */
export function summarizeInputs(graph: GraphProto): ModelSummary['inputs'] {
  return ioInfo(graph, 'input');
}
