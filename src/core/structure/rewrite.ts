/**
 * Structured pruning as a graph rewrite: the heads, neurons and blocks a plan removes leave the
 * model for real. Weights and biases are sliced (Q/K/V columns, output-projection rows, up/gate
 * columns, down rows), every head count and attention width the detector found is rewritten (per
 * block: shape constants shared between blocks get a copy of their own), GQA's KV-head maps are
 * renumbered, and dropped blocks' nodes are removed with the residual stream reconnected around
 * them. The result is a new, smaller, valid ONNX model; the source is not modified.
 */
import { ModelError } from '../errors.ts';
import { DataType, dtypeInfo } from '../onnx/dtypes.ts';
import { int64Tensor } from '../onnx/build.ts';
import { bytesSource, elementCount, parseModel, tensorBytes, type OnnxModel } from '../onnx/model.ts';
import type { GraphProto, NodeProto, TensorProto, ValueInfoProto } from '../onnx/proto.ts';
import { writeModel } from '../onnx/write.ts';
import {
  detectStructure,
  type AttentionInfo,
  type BlockInfo,
  type CountSite,
  type ModelStructure,
} from './detect.ts';
import { Dataflow } from './graph.ts';

/** What to keep of one block. Absent fields keep everything. */
export interface BlockPlan {
  /** Query heads kept, ascending. With GQA, a KV head's query heads are kept or removed together. */
  heads?: number[];
  /** MLP neurons kept, ascending. */
  neurons?: number[];
  /** Remove the whole block (its attention and MLP); the residual stream passes it unchanged. */
  drop?: boolean;
}

/** One entry per block of the model, in order. */
export interface StructurePlan {
  blocks: BlockPlan[];
}

export interface StructureReport {
  paramsBefore: number;
  paramsAfter: number;
  headsBefore: number;
  headsAfter: number;
  neuronsBefore: number;
  neuronsAfter: number;
  blocksBefore: number;
  blocksAfter: number;
}

export interface PrunedModel {
  model: OnnxModel;
  bytes: Uint8Array;
  report: StructureReport;
}

function invalid(message: string): ModelError {
  return new ModelError('invalid-argument', message);
}

/** Ascending, distinct whole numbers below `n`, at least one. */
function checkKept(list: number[], n: number, what: string, where: string): number[] {
  const sorted = [...list].sort((a, b) => a - b);
  if (!sorted.length)
    throw invalid(`${where}: keeps no ${what}; at least one must stay (drop the block instead).`);
  sorted.forEach((x, i) => {
    if (!Number.isInteger(x) || x < 0 || x >= n)
      throw invalid(`${where}: ${what} index ${x} is not in 0…${n - 1}.`);
    if (i && sorted[i - 1] === x) throw invalid(`${where}: ${what} index ${x} is listed twice.`);
  });
  return sorted;
}

/** The KV heads the kept query heads read; refuses a KV head with only some of its query heads kept. */
export function keptGroups(att: AttentionInfo, heads: number[], where: string): number[] {
  const groups = [...new Set(heads.map((h) => att.groupOf[h]))].sort((a, b) => a - b);
  for (const g of groups) {
    const members = att.groupOf.flatMap((x, h) => (x === g ? [h] : []));
    if (members.some((h) => !heads.includes(h)))
      throw invalid(
        `${where}: query heads ${members.join(', ')} share KV head ${g}; keep or remove them together.`,
      );
  }
  return groups;
}

/** Element indices of whole units of `size` (heads of head_dim values), shifted by `offset`. */
function unitColumns(units: number[], size: number, offset = 0): number[] {
  return units.flatMap((u) => Array.from({ length: size }, (_, j) => offset + u * size + j));
}

/** Integer tensors are shapes, indices and masks, not parameters. */
const NOT_PARAMETERS = new Set<number>([DataType.INT64, DataType.INT32, DataType.BOOL]);

/** Parameters of a graph: the elements of its float (and quantized) initializers. */
export function parameterCount(graph: GraphProto): number {
  let n = 0;
  for (const t of graph.initializer) if (!NOT_PARAMETERS.has(t.data_type)) n += elementCount(t.dims);
  return n;
}

class Rewriter {
  readonly nodes: NodeProto[];
  readonly byOutput = new Map<string, NodeProto>();
  readonly initializers: Map<string, TensorProto>;
  /** New sizes of graph input/output dimensions (a KV cache's head axis): name -> axis -> size. */
  readonly declaredDims = new Map<string, Map<number, number>>();
  private readonly taken = new Set<string>();

  constructor(
    readonly model: OnnxModel,
    readonly flow: Dataflow,
  ) {
    const g = model.graph;
    this.nodes = g.node.map((n) => ({ ...n, input: [...n.input] }));
    for (const n of this.nodes) if (n.output[0]) this.byOutput.set(n.output[0], n);
    this.initializers = new Map(g.initializer.map((t) => [t.name, t]));
    for (const n of g.node) for (const o of n.output) this.taken.add(o);
    for (const v of [...g.input, ...g.output, ...g.initializer]) this.taken.add(v.name);
  }

  fresh(base: string): string {
    let name = base;
    for (let i = 1; this.taken.has(name); i++) name = `${base}_${i}`;
    this.taken.add(name);
    return name;
  }

  node(output: string): NodeProto {
    const n = this.byOutput.get(output);
    if (!n)
      throw new ModelError('invalid-argument', `No node writes '${output}' (stale structure description?).`);
    return n;
  }

  /** A weight read by exactly one node, replaced in place by `slice`. */
  sliceWeight(name: string, rows: number[] | null, cols: number[] | null): void {
    const t = this.initializers.get(name);
    if (!t) throw new ModelError('invalid-argument', `The model has no initializer '${name}'.`);
    const readers = this.flow.readersOf(name);
    if (readers.length !== 1)
      throw new ModelError(
        'unsupported',
        `'${name}' is read by ${readers.length} nodes; a shared weight cannot be sliced for one of them.`,
      );
    const info = dtypeInfo(t.data_type);
    if (!info || info.bits % 8 !== 0)
      throw new ModelError(
        'unsupported',
        `'${name}' is stored as ${info?.name ?? t.data_type}; only byte-sized types can be sliced.`,
      );
    const size = info.bits / 8;
    const bytes = tensorBytes(this.model, t);
    const dims = t.dims.map(Number);
    const [nRows, nCols] = dims.length === 2 ? dims : [1, dims[0]];
    const rs = rows ?? Array.from({ length: nRows }, (_, i) => i);
    const cs = cols ?? Array.from({ length: nCols }, (_, i) => i);
    const out = new Uint8Array(rs.length * cs.length * size);
    let at = 0;
    for (const r of rs)
      for (const c of cs) {
        const from = (r * nCols + c) * size;
        out.set(bytes.subarray(from, from + size), at);
        at += size;
      }
    const newDims = dims.length === 2 ? [rs.length, cs.length] : [cs.length];
    this.initializers.set(name, { name, dims: newDims, data_type: t.data_type, raw_data: out });
  }

  /** Points `node.input[input]` at a new int64 constant holding `values`. */
  setConstantInput(node: NodeProto, input: number, values: number[], base: string): void {
    const name = this.fresh(base);
    this.initializers.set(name, int64Tensor(name, [values.length], values));
    node.input[input] = name;
  }

  /** Sets dimension `axis` of the graph input or output `name` to `size` where it is written. */
  setDeclaredDim(name: string, axis: number, size: number): void {
    let dims = this.declaredDims.get(name);
    if (!dims) this.declaredDims.set(name, (dims = new Map()));
    dims.set(axis, size);
  }

  finish(graph: GraphProto, alias: Map<string, string>): GraphProto {
    const resolve = (x: string) => {
      let y = x;
      while (alias.has(y)) y = alias.get(y)!;
      return y;
    };
    for (const n of this.nodes) n.input = n.input.map((x) => (x ? resolve(x) : x));
    const extra: NodeProto[] = [];
    for (const o of graph.output) {
      const r = resolve(o.name);
      if (r === o.name) continue;
      extra.push({ op_type: 'Identity', input: [r], output: [o.name], name: `${o.name}__skip` });
      // the node that wrote it (a dropped block's present.*) no longer does: the Identity does
      for (const n of this.nodes)
        n.output = n.output.map((x) => (x === o.name ? this.fresh(`${o.name}__dropped`) : x));
    }
    // drop what nothing reads any more (a removed block's nodes, replaced constants)
    const nodes = [...this.nodes, ...extra];
    const used = new Set(graph.output.map((o) => o.name));
    const keep = new Array<boolean>(nodes.length).fill(false);
    for (let i = nodes.length - 1; i >= 0; i--) {
      const n = nodes[i];
      const subgraphReads = n.attribute?.some((a) => a.g || a.graphs?.length);
      if (subgraphReads || n.output.some((o) => o && used.has(o))) {
        keep[i] = true;
        for (const x of n.input) if (x) used.add(x);
        if (subgraphReads) for (const x of outerNames(n)) used.add(x);
      }
    }
    const kept = nodes.filter((_, i) => keep[i]);
    const inputs = new Set(graph.input.map((v) => v.name));
    const initializer = [...this.initializers.values()].filter((t) => used.has(t.name) || inputs.has(t.name));
    const redeclare = (v: ValueInfoProto): ValueInfoProto => {
      const sizes = this.declaredDims.get(v.name);
      const tt = v.type?.tensor_type;
      if (!sizes || !tt?.shape) return v;
      const dim = tt.shape.dim.map((d, axis) => (sizes.has(axis) ? { dim_value: sizes.get(axis) } : d));
      return { ...v, type: { ...v.type, tensor_type: { ...tt, shape: { ...tt.shape, dim } } } };
    };
    const rest: GraphProto = {
      ...graph,
      node: kept,
      initializer,
      input: graph.input.map(redeclare),
      output: graph.output.map(redeclare),
    };
    delete rest.value_info; // shapes of intermediate tensors changed; onnxruntime infers them again
    return rest;
  }
}

/** Every name a node's subgraphs read (they may read outer-scope tensors). */
function outerNames(n: NodeProto): string[] {
  const names: string[] = [];
  const visit = (g: GraphProto) => {
    for (const m of g.node) {
      names.push(...m.input.filter(Boolean));
      for (const a of m.attribute ?? []) {
        if (a.g) visit(a.g);
        for (const s of a.graphs ?? []) visit(s);
      }
    }
  };
  for (const a of n.attribute ?? []) {
    if (a.g) visit(a.g);
    for (const s of a.graphs ?? []) visit(s);
  }
  return names;
}

function pruneHeads(rw: Rewriter, block: BlockInfo, heads: number[], where: string): void {
  const att = block.attention;
  const groups = keptGroups(att, heads, where);
  const d = att.headDim;
  const qCols = unitColumns(heads, d, att.q.offset);
  const kCols = unitColumns(groups, d, att.k.offset);
  const vCols = unitColumns(groups, d, att.v.offset);
  if (att.fused) {
    const cols = [...qCols, ...kCols, ...vCols].sort((a, b) => a - b);
    rw.sliceWeight(att.q.linear.weight, null, cols);
    if (att.q.linear.bias) rw.sliceWeight(att.q.linear.bias, null, cols);
  } else {
    for (const [p, cols] of [
      [att.q, qCols],
      [att.k, kCols],
      [att.v, vCols],
    ] as const) {
      rw.sliceWeight(p.linear.weight, null, cols);
      if (p.linear.bias) rw.sliceWeight(p.linear.bias, null, cols);
    }
  }
  rw.sliceWeight(att.out.weight, unitColumns(heads, d), null);
  const newCount = (unit: CountSite['unit']) => (unit === 'heads' ? heads.length : groups.length);
  // edits to one constant (or one Concat piece) are gathered, then written as a copy of its own
  const edits = new Map<string, { node: NodeProto; input: number; values: number[]; base: string }>();
  for (const site of att.counts) {
    const target = site.piece ? rw.node(site.piece.node) : rw.node(site.node);
    const input = site.piece ? site.piece.input : site.input;
    const key = `${target.output[0]}#${input}`;
    let edit = edits.get(key);
    if (!edit) {
      const source = target.input[input];
      const values = rw.flow.ints(source);
      if (!values && site.element !== 0)
        throw new ModelError(
          'unsupported',
          `${where}: a computed shape piece '${source}' holds a head count at entry ${site.element}.`,
        );
      edit = { node: target, input, values: values ?? [site.value], base: `${source}.block${block.index}` };
      edits.set(key, edit);
    }
    edit.values[site.element] = site.kind === 'count' ? newCount(site.unit) : newCount(site.unit) * d;
  }
  for (const e of edits.values()) rw.setConstantInput(e.node, e.input, e.values, e.base);
  for (const g of att.kvMaps) {
    const gather = rw.node(g);
    const map = heads.map((h) => groups.indexOf(att.groupOf[h]));
    rw.setConstantInput(gather, 1, map, `${gather.input[1]}.block${block.index}`);
  }
  // the KV cache's declared head axis: past_key_values.* in, present.* out
  for (const c of att.cache) {
    if (c.input) rw.setDeclaredDim(c.input, c.axis, newCount(c.unit));
    if (c.output) rw.setDeclaredDim(c.output, c.axis, newCount(c.unit));
  }
  for (const s of att.splits) {
    const split = rw.node(s.node);
    const sizes = s.parts.map((p) => (p === 'q' ? heads.length : groups.length) * d);
    if (split.input[1]) rw.setConstantInput(split, 1, sizes, `${split.input[1]}.block${block.index}`);
    else split.attribute = split.attribute?.map((a) => (a.name === 'split' ? { ...a, ints: sizes } : a));
  }
}

function pruneNeurons(rw: Rewriter, block: BlockInfo, neurons: number[]): void {
  for (const l of block.mlp.inputs) {
    rw.sliceWeight(l.weight, null, neurons);
    if (l.bias) rw.sliceWeight(l.bias, null, neurons);
  }
  rw.sliceWeight(block.mlp.down.weight, neurons, null);
}

/**
 * The model with `plan` applied. `structure` is detectStructure(model) when the caller has it already.
 * Throws 'invalid-argument' for a plan that keeps no head or neuron of a block, drops every block,
 * or splits a KV head's query heads; 'unsupported' for a graph the detector cannot map.
 */
export function applyStructuredPruning(
  model: OnnxModel,
  plan: StructurePlan,
  structure: ModelStructure = detectStructure(model),
): PrunedModel {
  const { blocks } = structure;
  if (plan.blocks.length > blocks.length)
    throw invalid(`The plan names ${plan.blocks.length} blocks; ${model.name} has ${blocks.length}.`);
  const flow = new Dataflow(model);
  const rw = new Rewriter(model, flow);
  const alias = new Map<string, string>();
  const report: StructureReport = {
    paramsBefore: parameterCount(model.graph),
    paramsAfter: 0,
    headsBefore: 0,
    headsAfter: 0,
    neuronsBefore: 0,
    neuronsAfter: 0,
    blocksBefore: blocks.length,
    blocksAfter: 0,
  };
  if (plan.blocks.length && plan.blocks.length === blocks.length && plan.blocks.every((b) => b.drop))
    throw invalid(`The plan drops all ${blocks.length} blocks of ${model.name}; at least one must stay.`);
  blocks.forEach((block, i) => {
    const p = plan.blocks[i] ?? {};
    const where = `${model.name}, block ${i}`;
    const att = block.attention;
    report.headsBefore += att.heads;
    report.neuronsBefore += block.mlp.hidden;
    if (p.drop) {
      alias.set(block.output, block.input);
      // its KV cache passes through unchanged: the model's inputs and outputs stay those of every block
      for (const c of att.cache) if (c.input && c.output) alias.set(c.output, c.input);
      return;
    }
    report.blocksAfter++;
    const heads = p.heads ? checkKept(p.heads, att.heads, 'attention heads', where) : null;
    const neurons = p.neurons ? checkKept(p.neurons, block.mlp.hidden, 'MLP neurons', where) : null;
    if (heads && heads.length < att.heads) pruneHeads(rw, block, heads, where);
    if (neurons && neurons.length < block.mlp.hidden) pruneNeurons(rw, block, neurons);
    report.headsAfter += heads?.length ?? att.heads;
    report.neuronsAfter += neurons?.length ?? block.mlp.hidden;
  });
  const graph = rw.finish(model.graph, alias);
  report.paramsAfter = parameterCount(graph);
  const bytes = writeModel(model, { graph }).model;
  return { model: parseModel(bytesSource(model.name, bytes)), bytes, report };
}
