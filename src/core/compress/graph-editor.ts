/**
 * Rewrites of a graph for export: weights swapped for decode nodes, MatMuls swapped for
 * MatMulNBits. The source graph is never mutated: the editor works on shallow copies of its lists.
 */
import { ModelError } from '../errors.ts';
import type { GraphProto, NodeProto, OperatorSetIdProto, TensorProto } from '../onnx/proto.ts';

export interface Consumer {
  node: NodeProto;
  /** Which input of `node` reads the tensor. */
  index: number;
}

export class GraphEditor {
  private readonly initializers: Map<string, TensorProto>;
  private nodes: NodeProto[];
  private readonly decodeNodes: NodeProto[] = [];
  private readonly inputs: GraphProto['input'];
  private readonly names = new Set<string>();
  readonly opsets = new Map<string, number>();

  constructor(
    private readonly graph: GraphProto,
    opsetImport: readonly OperatorSetIdProto[],
  ) {
    this.initializers = new Map(graph.initializer.map((t) => [t.name, t]));
    this.nodes = [...graph.node];
    this.inputs = [...graph.input];
    for (const o of opsetImport) this.opsets.set(o.domain ?? '', Number(o.version));
    for (const t of graph.initializer) this.names.add(t.name);
    for (const n of graph.node) {
      for (const x of n.input) this.names.add(x);
      for (const x of n.output) this.names.add(x);
      if (n.name) this.names.add(n.name);
    }
    for (const v of [...graph.input, ...graph.output]) this.names.add(v.name);
  }

  /** A name no tensor or node in the graph uses yet, derived from `base`. */
  uniqueName(base: string): string {
    let name = base;
    for (let i = 1; this.names.has(name); i++) name = `${base}_${i}`;
    this.names.add(name);
    return name;
  }

  consumers(tensorName: string): Consumer[] {
    const out: Consumer[] = [];
    for (const node of this.nodes) {
      node.input.forEach((x, index) => {
        if (x === tensorName) out.push({ node, index });
      });
    }
    return out;
  }

  getInitializer(name: string): TensorProto {
    const t = this.initializers.get(name);
    if (!t) throw new ModelError('invalid-argument', `The graph has no initializer named '${name}'.`);
    return t;
  }

  setInitializer(t: TensorProto): void {
    this.initializers.set(t.name, t);
    this.names.add(t.name);
  }

  removeInitializer(name: string): void {
    this.initializers.delete(name);
    const i = this.inputs.findIndex((v) => v.name === name);
    if (i >= 0) this.inputs.splice(i, 1);
  }

  /** Nodes that compute a weight from initializers only: they run first, before any consumer. */
  addDecodeNodes(...nodes: NodeProto[]): void {
    this.decodeNodes.push(...nodes);
  }

  replaceNode(node: NodeProto, replacement: NodeProto[]): void {
    const i = this.nodes.indexOf(node);
    if (i < 0) throw new Error(`replaceNode: node ${node.name ?? node.op_type} is not in the graph`);
    this.nodes.splice(i, 1, ...replacement);
  }

  requireOpset(domain: string, version: number): void {
    if ((this.opsets.get(domain) ?? 0) < version) this.opsets.set(domain, version);
  }

  finish(): GraphProto {
    const initializer = [...this.initializers.values()];
    return {
      ...this.graph,
      node: [...this.decodeNodes, ...this.nodes],
      initializer,
      input: this.inputs,
    };
  }
}
