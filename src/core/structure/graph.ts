/**
 * The main graph seen as a dataflow: who produces and who reads each tensor, which tensors are
 * constants (initializers or Constant-node outputs) and their integer values, and the ancestor /
 * descendant sets the structure detector intersects to find a sublayer's nodes.
 */
import { ModelError } from '../errors.ts';
import { readTensor, type OnnxModel } from '../onnx/model.ts';
import { constantValue } from '../onnx/graphs.ts';
import type { GraphProto, NodeProto, TensorProto, ValueInfoProto } from '../onnx/proto.ts';

function declaredDims(v: ValueInfoProto | undefined): (number | null)[] | undefined {
  const dims = v?.type?.tensor_type?.shape?.dim;
  return dims?.map((d) => (d.dim_param || d.dim_value === undefined ? null : Number(d.dim_value)));
}

export class Dataflow {
  readonly nodes: NodeProto[];
  /** Node index producing each tensor. */
  readonly producer = new Map<string, number>();
  /** Node indices reading each tensor (each node once). */
  readonly consumers = new Map<string, number[]>();
  readonly initializers = new Map<string, TensorProto>();
  /** Constant tensors: initializers and the outputs of Constant nodes. */
  readonly constants = new Map<string, TensorProto>();
  readonly graphOutputs: Set<string>;

  constructor(
    readonly model: OnnxModel,
    readonly graph: GraphProto = model.graph,
  ) {
    this.nodes = graph.node;
    this.graphOutputs = new Set(graph.output.map((o) => o.name));
    for (const t of graph.initializer) {
      this.initializers.set(t.name, t);
      this.constants.set(t.name, t);
    }
    graph.node.forEach((n, i) => {
      for (const o of n.output) if (o) this.producer.set(o, i);
      for (const x of new Set(n.input)) {
        if (!x) continue;
        const list = this.consumers.get(x);
        if (list) list.push(i);
        else this.consumers.set(x, [i]);
      }
      const value = constantValue(n);
      if (value && n.output[0]) this.constants.set(n.output[0], value);
    });
  }

  /** The declared dimensions of graph input `name` (symbolic ones as null), or undefined. */
  inputDims(name: string): (number | null)[] | undefined {
    return declaredDims(this.graph.input.find((v) => v.name === name));
  }

  /** The declared dimensions of graph output `name` (symbolic ones as null), or undefined. */
  outputDims(name: string): (number | null)[] | undefined {
    return declaredDims(this.graph.output.find((v) => v.name === name));
  }

  /** The node that writes `name`, or undefined for graph inputs and initializers. */
  producerOf(name: string): NodeProto | undefined {
    const i = this.producer.get(name);
    return i === undefined ? undefined : this.nodes[i];
  }

  readersOf(name: string): NodeProto[] {
    return (this.consumers.get(name) ?? []).map((i) => this.nodes[i]);
  }

  /** A node's label in messages: its name, else its first output. */
  label(node: NodeProto): string {
    return node.name || node.output[0] || node.op_type;
  }

  /** The integer values of a constant (shapes, axes, indices), or null when it is not a constant. */
  ints(name: string): number[] | null {
    const t = this.constants.get(name);
    if (!t) return null;
    const v = readTensor(this.model, t);
    if (v instanceof Float32Array || v instanceof Float64Array) return null;
    return Array.from(v as ArrayLike<number | bigint>, (x) => Number(x));
  }

  /** Node indices that `name` flows into (transitively). */
  descendants(name: string): Set<number> {
    const seen = new Set<number>();
    const stack = [...(this.consumers.get(name) ?? [])];
    while (stack.length) {
      const i = stack.pop()!;
      if (seen.has(i)) continue;
      seen.add(i);
      for (const o of this.nodes[i].output) for (const c of this.consumers.get(o) ?? []) stack.push(c);
    }
    return seen;
  }

  /** Node indices `name` is computed from (transitively), `name`'s producer included. */
  ancestors(name: string, stopAt?: string): Set<number> {
    const seen = new Set<number>();
    const start = this.producer.get(name);
    const stack = start === undefined ? [] : [start];
    while (stack.length) {
      const i = stack.pop()!;
      if (seen.has(i)) continue;
      seen.add(i);
      for (const x of this.nodes[i].input) {
        if (!x || x === stopAt) continue;
        const p = this.producer.get(x);
        if (p !== undefined) stack.push(p);
      }
    }
    return seen;
  }

  /** Whether tensor `from` is among the inputs `to` is computed from. */
  reaches(from: string, to: string): boolean {
    if (from === to) return true;
    for (const i of this.ancestors(to)) if (this.nodes[i].input.includes(from)) return true;
    return false;
  }
}

export function intAttr(node: NodeProto, name: string, fallback: number): number {
  const a = node.attribute?.find((x) => x.name === name);
  return a?.i !== undefined ? Number(a.i) : fallback;
}

export function intsAttr(node: NodeProto, name: string): number[] | null {
  const a = node.attribute?.find((x) => x.name === name);
  return a?.ints?.length ? a.ints.map(Number) : null;
}

export function unsupported(message: string): ModelError {
  return new ModelError('unsupported', message);
}
