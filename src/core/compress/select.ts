/**
 * Which initializers are weight matrices, what role they play (linear layer, embedding table, LM
 * head) and along which axis their output channels run; and which of them a step's selector picks.
 */
import { DataType } from '../onnx/dtypes.ts';
import type { GraphProto, NodeProto } from '../onnx/proto.ts';

export type WeightRole = 'linear' | 'embedding' | 'lmHead';

export interface WeightCandidate {
  name: string;
  shape: [number, number];
  role: WeightRole;
  channelAxis: 0 | 1;
  /** Op types that read it (through a Transpose, the op after it). */
  consumers: string[];
}

export interface TensorSelector {
  /** Name patterns: globs (`*`, `?`) or `/regular expressions/`. Empty: every candidate. */
  include?: string[];
  exclude?: string[];
  /** Token-embedding tables (Gather weights, also a tied LM head): opt-in. */
  embeddings?: boolean;
  /** An untied LM head (the MatMul whose output is the logits): opt-in. */
  lmHead?: boolean;
}

function intAttr(node: NodeProto, name: string, fallback: number): number {
  const a = node.attribute?.find((x) => x.name === name);
  return a?.i !== undefined ? Number(a.i) : fallback;
}

// Ops a logits tensor may pass through on its way to the graph output.
const PASS_THROUGH = new Set(['Add', 'Reshape', 'Identity', 'Cast', 'Squeeze', 'Unsqueeze']);

function reachesGraphOutput(start: string, graph: GraphProto, readers: Map<string, NodeProto[]>): boolean {
  const outputs = new Set(graph.output.map((o) => o.name));
  let frontier = [start];
  for (let hop = 0; hop < 4 && frontier.length; hop++) {
    if (frontier.some((t) => outputs.has(t))) return true;
    frontier = frontier.flatMap((t) =>
      (readers.get(t) ?? []).filter((n) => PASS_THROUGH.has(n.op_type)).map((n) => n.output[0]),
    );
  }
  return frontier.some((t) => outputs.has(t));
}

export function weightCandidates(graph: GraphProto): WeightCandidate[] {
  const readers = new Map<string, NodeProto[]>();
  for (const node of graph.node)
    for (const x of node.input) {
      if (!readers.has(x)) readers.set(x, []);
      const list = readers.get(x) as NodeProto[];
      if (!list.includes(node)) list.push(node);
    }
  const out: WeightCandidate[] = [];
  for (const t of graph.initializer) {
    if (t.data_type !== DataType.FLOAT || t.dims.length !== 2) continue;
    const shape: [number, number] = [Number(t.dims[0]), Number(t.dims[1])];
    if (shape[0] * shape[1] === 0) continue;
    const users = readers.get(t.name) ?? [];
    if (!users.length) continue;
    let axis: 0 | 1 | null = null;
    let gather = false;
    let head = false;
    const consumers: string[] = [];
    let ok = true;
    for (const node of users) {
      const index = node.input.indexOf(t.name);
      if (node.domain) ok = false;
      else if (node.op_type === 'MatMul' && index === 1) {
        axis ??= 1;
        head ||= reachesGraphOutput(node.output[0], graph, readers);
        consumers.push('MatMul');
      } else if (node.op_type === 'Gemm' && index === 1) {
        axis ??= intAttr(node, 'transB', 0) ? 0 : 1;
        head ||= reachesGraphOutput(node.output[0], graph, readers);
        consumers.push('Gemm');
      } else if (node.op_type === 'Gather' && index === 0 && intAttr(node, 'axis', 0) === 0) {
        axis = 0;
        gather = true;
        consumers.push('Gather');
      } else if (node.op_type === 'Transpose') {
        // a weight stored [out, in] and transposed for a MatMul (tied LM heads are exported so)
        const matmuls = (readers.get(node.output[0]) ?? []).filter(
          (n) => n.op_type === 'MatMul' && n.input[1] === node.output[0],
        );
        if (!matmuls.length) ok = false;
        axis ??= 0;
        for (const m of matmuls) head ||= reachesGraphOutput(m.output[0], graph, readers);
        consumers.push('Transpose→MatMul');
      } else ok = false;
    }
    if (!ok || axis === null) continue;
    const role: WeightRole = gather ? 'embedding' : head ? 'lmHead' : 'linear';
    out.push({ name: t.name, shape, role, channelAxis: axis, consumers: [...new Set(consumers)] });
  }
  return out;
}

function patternToRegExp(pattern: string): RegExp {
  const m = /^\/(.*)\/([a-z]*)$/s.exec(pattern);
  if (m) return new RegExp(m[1], m[2]);
  const escaped = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`);
}

export function selectWeights(
  candidates: readonly WeightCandidate[],
  selector: TensorSelector = {},
): WeightCandidate[] {
  const include = (selector.include ?? []).map(patternToRegExp);
  const exclude = (selector.exclude ?? []).map(patternToRegExp);
  return candidates.filter((c) => {
    if (c.role === 'embedding' && !selector.embeddings) return false;
    if (c.role === 'lmHead' && !selector.lmHead) return false;
    if (include.length && !include.some((r) => r.test(c.name))) return false;
    return !exclude.some((r) => r.test(c.name));
  });
}

export { patternToRegExp };
