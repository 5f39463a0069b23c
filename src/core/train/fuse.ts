/**
 * Fusions the training engine applies to a graph before running it: subgraphs that exporters spell out
 * op by op, recognised by their exact structure and replaced by one node whose forward and backward are
 * each one pass over the data. GPT-2's gelu_new, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), is nine
 * elementwise nodes over the [tokens, 4·d] activations (six Mul, two Add, a Tanh) and as many backward
 * passes, each allocating its output: ~17 % of a demo-model training step before this fusion. The
 * constants are read from the graph (whatever they are), so the fused op computes what the nodes did;
 * a subgraph that differs in any way, or whose inner values something else reads, is left alone.
 * tests/train/fuse.test.ts checks the fused forward against onnxruntime and its gradient against
 * finite differences.
 */
import type { NodeProto } from '../onnx/proto.ts';
import type { OpDef } from './ops.ts';
import { floats, type Value } from './tensor.ts';

export interface PlannedNode {
  node: NodeProto;
  /** Set for a fused node (its op is not in the op table). */
  op?: OpDef;
}

/** y = c4·x·(c3 + tanh(c2·(x + c1·x³))): the tanh form of GELU with the graph's own constants. */
function geluTanhOp(c1: number, c2: number, c3: number, c4: number): OpDef {
  return {
    forward(x): Value[] {
      const v = x[0]!;
      const X = v.data as Float32Array;
      const n = X.length;
      const Y = floats(n);
      const T = floats(n);
      for (let i = 0; i < n; i++) {
        const xi = X[i];
        const t = Math.tanh(c2 * (xi + c1 * xi * xi * xi));
        T[i] = t;
        Y[i] = c4 * xi * (c3 + t);
      }
      // the second output (unnamed in the graph) keeps tanh for the backward pass
      return [
        { dtype: 'float32', shape: v.shape, data: Y },
        { dtype: 'float32', shape: v.shape, data: T },
      ];
    },
    backward(x, y, gy) {
      const g = gy[0];
      if (!g) return [undefined];
      const X = x[0]!.data as Float32Array;
      const T = y[1].data as Float32Array;
      const out = floats(g.length);
      for (let i = 0; i < g.length; i++) {
        const xi = X[i];
        const t = T[i];
        // d/dx c4·x·(c3 + t) = c4·[(c3 + t) + x·(1 − t²)·c2·(1 + 3·c1·x²)]
        out[i] = g[i] * c4 * (c3 + t + xi * (1 - t * t) * c2 * (1 + 3 * c1 * xi * xi));
      }
      return [out];
    },
  };
}

/**
 * The graph's nodes with every recognised subgraph replaced by one fused node (at the place of the
 * subgraph's last node, so its input is computed before it). `scalar(name)` is the value of a
 * one-element constant (initializer or Constant node), undefined for anything else.
 */
export function planFusions(
  nodes: readonly NodeProto[],
  graphOutputs: ReadonlySet<string>,
  scalar: (name: string) => number | undefined,
): PlannedNode[] {
  const producer = new Map<string, number>();
  const consumers = new Map<string, number[]>();
  nodes.forEach((n, i) => {
    for (const o of n.output) if (o) producer.set(o, i);
    for (const name of n.input) {
      if (!name) continue;
      let list = consumers.get(name);
      if (!list) consumers.set(name, (list = []));
      list.push(i);
    }
  });
  const nodeOf = (name: string, op: string): NodeProto | undefined => {
    const i = producer.get(name);
    const n = i === undefined ? undefined : nodes[i];
    return n && n.op_type === op && (!n.domain || n.domain === 'ai.onnx') && n.input.length === 2
      ? n
      : undefined;
  };
  /** The only consumer of an inner value (none when it has others or is a graph output). */
  const soleUse = (name: string, op: string): NodeProto | undefined => {
    const list = consumers.get(name);
    if (!list || list.length !== 1 || graphOutputs.has(name)) return undefined;
    const n = nodes[list[0]];
    return n.op_type === op && (!n.domain || n.domain === 'ai.onnx') && n.input.length === 2 ? n : undefined;
  };
  const inner = (name: string) => (consumers.get(name)?.length ?? 0) === 1 && !graphOutputs.has(name);
  /** A binary node's (scalar constant, other input), either order. */
  const scalarAnd = (n: NodeProto): [number, string] | undefined => {
    const [p, q] = n.input;
    const sp = scalar(p);
    if (sp !== undefined) return [sp, q];
    const sq = scalar(q);
    return sq !== undefined ? [sq, p] : undefined;
  };
  const other = (n: NodeProto, one: string) =>
    n.input[0] === one ? n.input[1] : n.input[1] === one ? n.input[0] : undefined;

  const replaced = new Map<NodeProto, PlannedNode>();
  const removed = new Set<NodeProto>();
  for (const tanh of nodes) {
    if (tanh.op_type !== 'Tanh' || (tanh.domain && tanh.domain !== 'ai.onnx')) continue;
    // backwards from tanh: u = c2·a1, a1 = x + m2, m2 = c1·m1, m1 = x·m0, m0 = x·x
    const mulU = nodeOf(tanh.input[0], 'Mul');
    const su = mulU && scalarAnd(mulU);
    const add1 = su && nodeOf(su[1], 'Add');
    if (!mulU || !su || !add1) continue;
    let match: { x: string; c1: number; chain: NodeProto[] } | undefined;
    for (const m2 of add1.input) {
      const mulM2 = nodeOf(m2, 'Mul');
      const s2 = mulM2 && scalarAnd(mulM2);
      const x = other(add1, m2);
      const mulM1 = s2 && nodeOf(s2[1], 'Mul');
      if (!mulM2 || !s2 || x === undefined || !mulM1) continue;
      const m0 = other(mulM1, x);
      const mulM0 = m0 !== undefined ? nodeOf(m0, 'Mul') : undefined;
      if (!mulM0 || mulM0.input[0] !== x || mulM0.input[1] !== x) continue;
      match = { x, c1: s2[0], chain: [mulM0, mulM1, mulM2, add1, mulU] };
      break;
    }
    if (!match) continue;
    const { x } = match;
    // forwards from tanh: a2 = c3 + t, m4 = x·a2, y = c4·m4 (or y = m4)
    const add2 = soleUse(tanh.output[0], 'Add');
    const s3 = add2 && scalarAnd(add2);
    const mul4 = add2 && soleUse(add2.output[0], 'Mul');
    if (!add2 || !s3 || s3[1] !== tanh.output[0] || !mul4 || other(mul4, add2.output[0]) !== x) continue;
    const mul5 = soleUse(mul4.output[0], 'Mul');
    const s5 = mul5 && scalarAnd(mul5);
    const last = mul5 && s5 && s5[1] === mul4.output[0] ? mul5 : mul4;
    const c4 = last === mul5 ? s5![0] : 1;
    const all = [...match.chain, tanh, add2, mul4, ...(last === mul5 ? [mul5] : [])];
    // every value made inside is read only inside (the last node's output is the result)
    if (!all.slice(0, -1).every((n) => inner(n.output[0]))) continue;
    if (all.some((n) => removed.has(n) || n.output.length !== 1)) continue;
    for (const n of all) removed.add(n);
    replaced.set(last, {
      node: { ...last, op_type: 'GeluTanh (fused)', input: [x], output: [last.output[0]], attribute: [] },
      op: geluTanhOp(match.c1, su[0], s3[0], c4),
    });
  }
  const planned: PlannedNode[] = [];
  for (const n of nodes) {
    const r = replaced.get(n);
    if (r) planned.push(r);
    else if (!removed.has(n)) planned.push({ node: n });
  }
  return planned;
}
