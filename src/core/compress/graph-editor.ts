/**
 * Rewrites of a graph for export: weights swapped for decode nodes, MatMuls swapped for
 * MatMulNBits. The source graph is never mutated: the editor works on shallow copies of its lists.
 *
 * One editor per graph of the model (the main graph and each If/Loop/Scan subgraph), sharing one set
 * of taken names (ONNX names are unique across the whole model) and one opset table. A weight is
 * rewritten by the editor of the graph that holds it, so its decode nodes land in that graph; its
 * consumers are looked up through nested graphs too (a main-graph weight read inside a branch).
 */
import { ModelError } from '../errors.ts';
import { constantValue, graphIndex } from '../onnx/graphs.ts';
import type { GraphProto, NodeProto, OperatorSetIdProto, TensorProto } from '../onnx/proto.ts';

export interface Consumer {
  node: NodeProto;
  /** Which input of `node` reads the tensor. */
  index: number;
}

interface Shared {
  names: Set<string>;
  opsets: Map<string, number>;
  editors: Map<GraphProto, GraphEditor>;
  /** Which editor's node list holds each node (replaced nodes included). */
  owners: Map<NodeProto, GraphEditor>;
  /** What the export did other than asked (a format fallen back to another), for the report. */
  warnings: string[];
  /** The streaming export's spool: new weights leave memory as they are set, and come back when read. */
  spool?: InitializerSpool;
}

/**
 * Where a streaming export parks the weights rewrites set (see stream-export.ts): `park` returns the
 * tensor to keep in the graph (its bytes moved out), `restore` gives a parked tensor its bytes back.
 */
export interface InitializerSpool {
  park(t: TensorProto): TensorProto;
  restore(t: TensorProto): TensorProto;
}

export class GraphEditor {
  private readonly initializers: Map<string, TensorProto>;
  private nodes: NodeProto[];
  private readonly decodeNodes: NodeProto[] = [];
  private readonly inputs: GraphProto['input'];
  /** Names this graph defines: they hide the same name of an outer graph from its nodes. */
  private readonly defined = new Set<string>();
  private readonly shared: Shared;
  /** Whether this edits the model's main graph (not an If/Loop/Scan body). */
  private readonly isMain: boolean;
  readonly opsets: Map<string, number>;

  constructor(
    private readonly graph: GraphProto,
    opsetImport: readonly OperatorSetIdProto[],
    shared?: Shared,
  ) {
    this.initializers = new Map(graph.initializer.map((t) => [t.name, t]));
    this.nodes = [...graph.node];
    this.inputs = [...graph.input];
    for (const t of graph.initializer) this.defined.add(t.name);
    for (const v of graph.input) this.defined.add(v.name);
    for (const n of graph.node) for (const x of n.output) this.defined.add(x);
    const root = !shared;
    this.isMain = root;
    this.shared = shared ?? {
      names: new Set(),
      opsets: new Map(),
      editors: new Map(),
      owners: new Map(),
      warnings: [],
    };
    this.opsets = this.shared.opsets;
    this.shared.editors.set(graph, this);
    for (const n of this.nodes) this.shared.owners.set(n, this);
    if (!root) return;
    for (const o of opsetImport) this.opsets.set(o.domain ?? '', Number(o.version));
    for (const scope of graphIndex(graph).scopes) {
      const g = scope.graph;
      if (g !== graph && !this.shared.editors.has(g)) new GraphEditor(g, [], this.shared);
      const names = this.shared.names;
      for (const t of g.initializer) names.add(t.name);
      for (const n of g.node) {
        for (const x of n.input) names.add(x);
        for (const x of n.output) names.add(x);
        if (n.name) names.add(n.name);
      }
      for (const v of [...g.input, ...g.output]) names.add(v.name);
    }
  }

  /** The editor of `graph`, this model's main graph or one of its subgraphs. */
  editorFor(graph: GraphProto): GraphEditor {
    const e = this.shared.editors.get(graph);
    if (!e)
      throw new ModelError('invalid-argument', `The graph '${graph.name ?? ''}' is not part of this model.`);
    return e;
  }

  /** A name no tensor or node in the model uses yet, derived from `base`. */
  uniqueName(base: string): string {
    let name = base;
    for (let i = 1; this.shared.names.has(name); i++) name = `${base}_${i}`;
    this.shared.names.add(name);
    return name;
  }

  /** Nodes reading `tensorName` as this graph defines it: its own, and those of nested graphs that do not hide it. */
  consumers(tensorName: string): Consumer[] {
    const out: Consumer[] = [];
    const stack: GraphEditor[] = [this];
    while (stack.length) {
      const editor = stack.pop() as GraphEditor;
      for (const node of editor.allNodes()) {
        node.input.forEach((x, index) => {
          if (x === tensorName) out.push({ node, index });
        });
        for (const a of node.attribute ?? []) {
          for (const g of a.g ? [a.g, ...(a.graphs ?? [])] : (a.graphs ?? [])) {
            const sub = this.shared.editors.get(g);
            if (sub && !sub.defined.has(tensorName)) stack.push(sub);
          }
        }
      }
    }
    return out;
  }

  /** The node of this graph that writes `tensorName`, if one does (not a graph input or initializer). */
  producer(tensorName: string): NodeProto | undefined {
    return this.allNodes().find((n) => n.output.includes(tensorName));
  }

  /** Whether `tensorName` is one of this graph's outputs (its value is seen outside the graph). */
  isGraphOutput(tensorName: string): boolean {
    return this.graph.output.some((v) => v.name === tensorName);
  }

  private allNodes(): NodeProto[] {
    return [...this.decodeNodes, ...this.nodes];
  }

  getInitializer(name: string): TensorProto {
    const t = this.initializers.get(name);
    if (!t) throw new ModelError('invalid-argument', `The graph has no initializer named '${name}'.`);
    return this.shared.spool ? this.shared.spool.restore(t) : t;
  }

  /** From now on, every initializer set is handed to `spool` (the streaming export's). */
  useSpool(spool: InitializerSpool): void {
    this.shared.spool = spool;
  }

  setInitializer(t: TensorProto): void {
    // only the main graph's initializers go to the external-data file; a subgraph's stay embedded
    const spool = this.isMain ? this.shared.spool : undefined;
    this.initializers.set(t.name, spool ? spool.park(t) : t);
    this.shared.names.add(t.name);
    this.defined.add(t.name);
  }

  removeInitializer(name: string): void {
    this.initializers.delete(name);
    const i = this.inputs.findIndex((v) => v.name === name);
    if (i >= 0) this.inputs.splice(i, 1);
  }

  /**
   * A weight held by a Constant node becomes an initializer of the same name (the node goes), so
   * every method rewrites it as it rewrites any initializer.
   */
  constantToInitializer(name: string): void {
    const i = this.nodes.findIndex((n) => n.output[0] === name && constantValue(n));
    if (i < 0) throw new ModelError('invalid-argument', `The graph has no Constant node writing '${name}'.`);
    const value = constantValue(this.nodes[i]) as TensorProto;
    this.nodes.splice(i, 1);
    this.setInitializer({ ...value, name });
  }

  /** Nodes that compute a weight from initializers only: they run first, before any consumer. */
  addDecodeNodes(...nodes: NodeProto[]): void {
    this.decodeNodes.push(...nodes);
    for (const n of nodes) {
      this.shared.owners.set(n, this);
      for (const x of n.output) this.defined.add(x);
    }
  }

  /** Moves a decode node after every other (it reads what decode nodes added since it write). */
  moveDecodeNodeLast(node: NodeProto): void {
    const i = this.decodeNodes.indexOf(node);
    if (i >= 0) this.decodeNodes.push(...this.decodeNodes.splice(i, 1));
  }

  hasInitializer(name: string): boolean {
    return this.initializers.has(name);
  }

  /** Replace `node` wherever it is: in this graph or in a nested one (the editor holding it does it). */
  replaceNode(node: NodeProto, replacement: NodeProto[]): void {
    const owner = this.shared.owners.get(node) ?? this;
    const i = owner.nodes.indexOf(node);
    if (i < 0) throw new Error(`replaceNode: node ${node.name ?? node.op_type} is not in the graph`);
    owner.nodes.splice(i, 1, ...replacement);
    for (const n of replacement) this.shared.owners.set(n, owner);
  }

  /** Records something the export did other than the recipe asked (shared by every graph's editor). */
  warn(message: string): void {
    if (!this.shared.warnings.includes(message)) this.shared.warnings.push(message);
  }

  get warnings(): readonly string[] {
    return this.shared.warnings;
  }

  requireOpset(domain: string, version: number): void {
    if ((this.opsets.get(domain) ?? 0) < version) this.opsets.set(domain, version);
  }

  finish(): GraphProto {
    const initializer = [...this.initializers.values()];
    return {
      ...this.graph,
      node: this.allNodes().map((n) => this.withEditedSubgraphs(n)),
      initializer,
      input: this.inputs,
    };
  }

  /** `node` with each subgraph it holds replaced by that graph's edited form. */
  private withEditedSubgraphs(node: NodeProto): NodeProto {
    if (!node.attribute?.some((a) => a.g || a.graphs?.length)) return node;
    const edited = (g: GraphProto) => this.shared.editors.get(g)?.finish() ?? g;
    return {
      ...node,
      attribute: node.attribute.map((a) => ({
        ...a,
        ...(a.g ? { g: edited(a.g) } : {}),
        ...(a.graphs?.length ? { graphs: a.graphs.map(edited) } : {}),
      })),
    };
  }
}
