/** What the studio shows about a model: totals, dtype mix, op types and a row per weight tensor. */
import { dtypeName, rawByteLength } from './onnx/dtypes.ts';
import { elementCount, readTensorOwned, type OnnxModel, type TensorValues } from './onnx/model.ts';
import type { GraphProto, TensorProto, TensorShapeDimension } from './onnx/proto.ts';
import { graphIndex } from './onnx/graphs.ts';
import { isModelError } from './errors.ts';
import { tensorStats, type TensorStats } from './stats.ts';

export interface TensorSummary extends Partial<TensorStats> {
  name: string;
  dtype: string;
  shape: number[];
  params: number;
  bytes: number;
  external: boolean;
  /** Op types of the nodes that read this tensor directly (in nested subgraphs too). */
  consumers: string[];
  /** Why values could not be read (e.g. an unsupported dtype); the stats are absent then. */
  error?: string;
  /** The subgraph holding it (e.g. 'If_0/then_branch'); absent for the main graph. */
  graph?: string;
  /** 'constant' for a weight held in a Constant node; absent for an initializer. */
  source?: 'constant';
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
  /** Parameters per dtype (a null-prototype object). */
  dtypes: Record<string, number>;
  /** Nodes per op type over the main graph and every subgraph (a null-prototype object). */
  opTypes: Record<string, number>;
  /** Every weight: initializers of every graph and the weights Constant nodes hold. */
  tensors: TensorSummary[];
}

/**
 * Counts in a null-prototype object: op types are free text in a model, and one named `constructor`,
 * `toString` or `__proto__` must count like any other instead of hitting Object.prototype.
 */
function countsRecord(counts: Map<string, number>): Record<string, number> {
  const out = Object.create(null) as Record<string, number>;
  for (const [k, v] of counts) out[k] = v;
  return out;
}

/** A dimension as the model declares it: its size, its symbolic name, or '?' when it states neither. */
function dimension(d: TensorShapeDimension): number | string {
  if (d.dim_param) return d.dim_param;
  if (
    Object.prototype.hasOwnProperty.call(d, 'dim_value') &&
    d.dim_value !== undefined &&
    d.dim_value !== null
  )
    return Number(d.dim_value);
  return '?';
}

function ioInfo(graph: GraphProto, which: 'input' | 'output') {
  const inits = new Set(graph.initializer.map((t) => t.name));
  return graph[which]
    .filter((v) => !inits.has(v.name))
    .map((v) => ({
      name: v.name,
      dtype: dtypeName(v.type?.tensor_type?.elem_type ?? 0),
      shape: (v.type?.tensor_type?.shape?.dim ?? []).map(dimension),
    }));
}

export function summarizeModel(
  model: OnnxModel,
  onProgress?: (done: number, total: number) => void,
  shouldStop?: () => boolean,
  /** false: rows without min/max/mean/std/zeros (no tensor is read); tensorRowStats fills them later. */
  withStats = true,
): ModelSummary {
  const { graph } = model;
  const index = graphIndex(graph);
  const weights = index.weights();
  const dtypes = new Map<string, number>();
  const tensors: TensorSummary[] = [];
  let params = 0;
  let bytes = 0;
  const total = weights.length;
  weights.forEach((w, i) => {
    if (shouldStop?.()) return;
    const t = w.tensor;
    const count = elementCount(t.dims);
    const size = rawByteLength(t.data_type, count);
    const row: TensorSummary = {
      name: w.name,
      dtype: dtypeName(t.data_type),
      shape: t.dims.map(Number),
      params: count,
      bytes: size,
      external: t.data_location === 1,
      consumers: [...new Set(index.readers(w.scope, w.tensorName).map((n) => n.op_type))].sort(),
    };
    if (w.scope.label) row.graph = w.scope.label;
    if (w.source === 'constant') row.source = 'constant';
    if (withStats)
      Object.assign(
        row,
        tensorRowStats(model, t, (v) => tensorStats(v)),
      );
    tensors.push(row);
    params += count;
    bytes += size;
    dtypes.set(row.dtype, (dtypes.get(row.dtype) ?? 0) + count);
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
    dtypes: countsRecord(dtypes),
    opTypes: countsRecord(index.opTypeCounts()),
    tensors,
  };
}

/**
 * One row's statistics: `stats` over the tensor's values (in place, or in a kernel pool), or the
 * reason its values cannot be read (an unsupported dtype, a truncated file) as the row's error.
 */
export function tensorRowStats<T extends TensorStats | Promise<TensorStats>>(
  model: OnnxModel,
  tensor: TensorProto,
  stats: (values: TensorValues, owned: boolean) => T,
): T | { error: string } {
  try {
    // `owned`: the values' buffer is the callee's alone to give away (readTensorOwned)
    const { values, owned } = readTensorOwned(model, tensor);
    return stats(values, owned);
  } catch (e) {
    if (!isModelError(e)) throw e;
    return { error: e.message };
  }
}

/** The graph's real inputs (initializers listed as inputs by old exporters excluded). */
export function summarizeInputs(graph: GraphProto): ModelSummary['inputs'] {
  return ioInfo(graph, 'input');
}
