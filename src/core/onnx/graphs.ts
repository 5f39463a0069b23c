/**
 * A model's graphs as a tree of scopes: the main graph and every subgraph held in a node attribute
 * (If branches, Loop and Scan bodies), with ONNX's lexical scoping: a subgraph reads the names of
 * the graphs around it unless it defines the same name itself. On that tree: every weight wherever
 * it lives (initializers of any graph, tensors held in Constant nodes) under one unique name each,
 * and the nodes that read a tensor, found without re-walking paths (each list is built once).
 *
 * The walk is iterative: a fuzzed model may nest subgraphs deeper than the call stack.
 */
import { ModelError } from '../errors.ts';
import { DataType } from './dtypes.ts';
import type { GraphProto, NodeProto, TensorProto } from './proto.ts';

export interface Scope {
  graph: GraphProto;
  parent: Scope | null;
  /** The node whose attribute holds this graph; null for the main graph. */
  owner: NodeProto | null;
  /** Where this graph sits, for names: '' for the main graph, else e.g. 'If_0/then_branch'. */
  label: string;
  children: Scope[];
  /** Every name this graph defines (inputs, initializers, node outputs): they hide outer names. */
  defined: Set<string>;
  /** Names defined more than once by initializers or node outputs (invalid; readers are ambiguous). */
  ambiguous: Set<string>;
  /** Readers of each name among this graph's own nodes, each node once per name. */
  local: Map<string, NodeProto[]>;
}

export interface WeightRef {
  /** Unique across the model: the tensor's own name in the main graph, else prefixed by its scope label. */
  name: string;
  /** The name nodes of its graph read it by (an initializer's name, a Constant node's output). */
  tensorName: string;
  tensor: TensorProto;
  scope: Scope;
  source: 'initializer' | 'constant';
  /** The Constant node holding the tensor (source 'constant'). */
  node?: NodeProto;
}

const FLOAT_TYPES = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16, DataType.DOUBLE]);
// integer types quantized weights are stored in (int64/int32/bool constants are shapes, axes, masks)
const PAYLOAD_TYPES = new Set<number>([DataType.INT8, DataType.UINT8, DataType.INT4, DataType.UINT4]);

/** The tensor a Constant node holds in its `value` attribute, if any. */
export function constantValue(node: NodeProto): TensorProto | undefined {
  if (node.op_type !== 'Constant' || (node.domain && node.domain !== 'ai.onnx')) return undefined;
  return node.attribute?.find((a) => a.name === 'value' && a.t)?.t ?? undefined;
}

/**
 * Whether a Constant node's tensor is a weight. Constant nodes also carry the graph's plumbing —
 * shapes, axes, scalars like an epsilon — which are not weights; exporters that keep all weights in
 * Constant nodes (PaddleOCR) store them as float (or quantized integer) arrays.
 */
export function isConstantWeight(t: TensorProto): boolean {
  let n = 1;
  for (const d of t.dims) n *= Number(d);
  return n >= 2 && (FLOAT_TYPES.has(t.data_type) || PAYLOAD_TYPES.has(t.data_type));
}

function subgraphsOf(node: NodeProto): { graph: GraphProto; label: string }[] {
  const out: { graph: GraphProto; label: string }[] = [];
  for (const a of node.attribute ?? []) {
    if (a.g) out.push({ graph: a.g, label: a.name });
    (a.graphs ?? []).forEach((g, i) => out.push({ graph: g, label: `${a.name}[${i}]` }));
  }
  return out;
}

function makeScope(graph: GraphProto, parent: Scope | null, owner: NodeProto | null, label: string): Scope {
  const defined = new Set<string>();
  const ambiguous = new Set<string>();
  const define = (name: string) => {
    if (defined.has(name)) ambiguous.add(name);
    defined.add(name);
  };
  for (const t of graph.initializer ?? []) define(t.name);
  for (const n of graph.node ?? []) for (const o of n.output ?? []) if (o) define(o);
  // an input may repeat an initializer's name (its default value, as old exporters wrote): not ambiguous
  for (const v of graph.input ?? []) defined.add(v.name);
  const local = new Map<string, NodeProto[]>();
  for (const n of graph.node ?? []) {
    for (const x of new Set(n.input ?? [])) {
      if (!x) continue;
      const list = local.get(x);
      if (list) list.push(n);
      else local.set(x, [n]);
    }
  }
  return { graph, parent, owner, label, children: [], defined, ambiguous, local };
}

export class GraphIndex {
  readonly root: Scope;
  /** Every scope, the main graph first, each graph before the graphs inside it. */
  readonly scopes: Scope[] = [];
  private readonly scopeByNode = new Map<NodeProto, Scope>();
  private readonly scopeByGraph = new Map<GraphProto, Scope>();
  private weightList?: WeightRef[];
  private weightByName?: Map<string, WeightRef>;

  constructor(graph: GraphProto) {
    this.root = makeScope(graph, null, null, '');
    const queue: Scope[] = [this.root];
    for (let q = 0; q < queue.length; q++) {
      const scope = queue[q];
      this.scopes.push(scope);
      this.scopeByGraph.set(scope.graph, scope);
      (scope.graph.node ?? []).forEach((node, i) => {
        this.scopeByNode.set(node, scope);
        const owner = node.name || `${node.op_type}_${i}`;
        for (const sub of subgraphsOf(node)) {
          if (this.scopeByGraph.has(sub.graph)) continue; // one graph object reached twice: walk it once
          const label = scope.label ? `${scope.label}/${owner}/${sub.label}` : `${owner}/${sub.label}`;
          const child = makeScope(sub.graph, scope, node, label);
          this.scopeByGraph.set(sub.graph, child);
          scope.children.push(child);
          queue.push(child);
        }
      });
    }
  }

  scopeOf(node: NodeProto): Scope {
    return this.scopeByNode.get(node) ?? this.root;
  }

  scopeOfGraph(graph: GraphProto): Scope | undefined {
    return this.scopeByGraph.get(graph);
  }

  /** Nodes reading `name` as defined in `scope`: its own nodes and those of nested graphs that do not hide it. */
  readers(scope: Scope, name: string): NodeProto[] {
    const out = [...(scope.local.get(name) ?? [])];
    const stack = [...scope.children];
    while (stack.length) {
      const s = stack.pop() as Scope;
      if (s.defined.has(name)) continue;
      out.push(...(s.local.get(name) ?? []));
      stack.push(...s.children);
    }
    return out;
  }

  /** Every weight in every graph: initializers, then the weights Constant nodes hold, graph by graph. */
  weights(): WeightRef[] {
    if (this.weightList) return this.weightList;
    const list: WeightRef[] = [];
    const byName = new Map<string, WeightRef>();
    const add = (ref: Omit<WeightRef, 'name'>) => {
      const base = ref.scope.label ? `${ref.scope.label}/${ref.tensorName}` : ref.tensorName;
      let name = base;
      for (let k = 2; byName.has(name); k++) name = `${base}#${k}`;
      const full = { ...ref, name };
      byName.set(name, full);
      list.push(full);
    };
    for (const scope of this.scopes) {
      for (const t of scope.graph.initializer ?? [])
        add({ tensorName: t.name, tensor: t, scope, source: 'initializer' });
      for (const node of scope.graph.node ?? []) {
        const t = constantValue(node);
        if (t && node.output?.[0] && isConstantWeight(t))
          add({ tensorName: node.output[0], tensor: t, scope, source: 'constant', node });
      }
    }
    this.weightList = list;
    this.weightByName = byName;
    return list;
  }

  weight(name: string): WeightRef | undefined {
    this.weights();
    return this.weightByName?.get(name);
  }

  /** Nodes per op type over every graph (domain-qualified outside the default domain). */
  opTypeCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const scope of this.scopes) {
      for (const node of scope.graph.node ?? []) {
        const key =
          node.domain && node.domain !== 'ai.onnx' ? `${node.domain}.${node.op_type}` : node.op_type;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
    }
    return counts;
  }
}

const indexes = new WeakMap<GraphProto, GraphIndex>();

/** The index of a graph tree, built once per graph object (parsed graphs are never mutated). */
export function graphIndex(graph: GraphProto): GraphIndex {
  let index = indexes.get(graph);
  if (!index) {
    index = new GraphIndex(graph);
    indexes.set(graph, index);
  }
  return index;
}

/** Every tensor stored in the model's graphs: initializers of every graph and Constant-node values. */
export function allStoredTensors(graph: GraphProto): TensorProto[] {
  const out: TensorProto[] = [];
  for (const scope of graphIndex(graph).scopes) {
    out.push(...(scope.graph.initializer ?? []));
    for (const node of scope.graph.node ?? []) {
      const t = constantValue(node);
      if (t) out.push(t);
    }
  }
  return out;
}

/** The weight a summary row or a weight candidate names (see WeightRef.name). */
export function findWeight(model: { name: string; graph: GraphProto }, name: string): WeightRef {
  const ref = graphIndex(model.graph).weight(name);
  if (!ref) throw new ModelError('invalid-argument', `${model.name} has no weight named '${name}'.`);
  return ref;
}
