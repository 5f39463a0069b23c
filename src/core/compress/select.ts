/**
 * Which weights (initializers or Constant-node values, in the main graph or any subgraph) are weight
 * matrices, what role they play (linear layer, embedding table, LM head) and along which axis their
 * output channels run; and which of them a step's selector picks.
 */
import { DataType, dtypeName } from '../onnx/dtypes.ts';
import { graphIndex, type GraphIndex, type Scope } from '../onnx/graphs.ts';
import type { GraphProto, NodeProto } from '../onnx/proto.ts';
import { ModelError } from '../errors.ts';

export type WeightRole = 'linear' | 'embedding' | 'lmHead';

export interface WeightCandidate {
  /** Unique in the model: a main-graph tensor's own name, a subgraph's prefixed by its path (If_0/then_branch/w). */
  name: string;
  shape: [number, number];
  role: WeightRole;
  channelAxis: 0 | 1;
  /** Op types that read it (through a Transpose, the op after it). */
  consumers: string[];
  /** The subgraph holding it ('' for the main graph). */
  scope: string;
  /** Stored as an initializer or as the value of a Constant node. */
  source: 'initializer' | 'constant';
  /**
   * How the source stores it when not float32: float16 or bfloat16 (ONNX data type codes). Kernels see
   * float32 (each weight widened alone); the export stores it back in this type.
   */
  dataType?: number;
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
const HOPS = 4;

/**
 * Whether `start` reaches a graph output within a few pass-through ops. Each tensor is visited once,
 * so graphs where many nodes write the same name (invalid, but seen in fuzzing) cost linear time,
 * not a walk per path. An If branch's output is the If node's output: the walk continues outside.
 */
function reachesGraphOutput(index: GraphIndex, scope: Scope, start: string): boolean {
  let frontier: { scope: Scope; name: string }[] = [{ scope, name: start }];
  const seen = new Map<Scope, Set<string>>();
  for (let hop = 0; hop <= HOPS && frontier.length; hop++) {
    const next: { scope: Scope; name: string }[] = [];
    for (const at of frontier) {
      let visited = seen.get(at.scope);
      if (!visited) seen.set(at.scope, (visited = new Set()));
      if (visited.has(at.name)) continue;
      visited.add(at.name);
      if (outputNames(at.scope).has(at.name)) {
        if (!at.scope.parent) return true;
        if (at.scope.owner?.op_type === 'If' && !at.scope.owner.domain)
          for (const o of at.scope.owner.output) next.push({ scope: at.scope.parent, name: o });
      }
      if (hop === HOPS) continue;
      for (const n of index.readers(at.scope, at.name))
        if (PASS_THROUGH.has(n.op_type) && n.output[0])
          next.push({ scope: index.scopeOf(n), name: n.output[0] });
    }
    frontier = next;
  }
  return false;
}

const outputSets = new WeakMap<Scope, Set<string>>();
function outputNames(scope: Scope): Set<string> {
  let set = outputSets.get(scope);
  if (!set) outputSets.set(scope, (set = new Set(scope.graph.output.map((o) => o.name))));
  return set;
}

/** The weight matrices of every graph (main and subgraphs) that the methods can compress, and their roles. */
export function weightCandidates(graph: GraphProto): WeightCandidate[] {
  const index = graphIndex(graph);
  const reaches = new Map<Scope, Map<string, boolean>>();
  const isHead = (node: NodeProto): boolean => {
    const scope = index.scopeOf(node);
    const start = node.output[0];
    if (!start) return false;
    let memo = reaches.get(scope);
    if (!memo) reaches.set(scope, (memo = new Map()));
    let r = memo.get(start);
    if (r === undefined) memo.set(start, (r = reachesGraphOutput(index, scope, start)));
    return r;
  };
  const out: WeightCandidate[] = [];
  for (const w of index.weights()) {
    const t = w.tensor;
    const half = t.data_type === DataType.FLOAT16 || t.data_type === DataType.BFLOAT16;
    if ((t.data_type !== DataType.FLOAT && !half) || t.dims.length !== 2) continue;
    // a name written twice in one graph has no single reader set: leave it alone
    if (w.scope.ambiguous.has(w.tensorName)) continue;
    const shape: [number, number] = [Number(t.dims[0]), Number(t.dims[1])];
    if (shape[0] * shape[1] === 0) continue;
    const users = index.readers(w.scope, w.tensorName);
    if (!users.length) continue;
    let axis: 0 | 1 | null = null;
    let gather = false;
    let head = false;
    const consumers: string[] = [];
    let ok = true;
    for (const node of users) {
      const position = node.input.indexOf(w.tensorName);
      if (node.domain) ok = false;
      else if (node.op_type === 'MatMul' && position === 1) {
        axis ??= 1;
        head ||= isHead(node);
        consumers.push('MatMul');
      } else if (node.op_type === 'Gemm' && position === 1) {
        axis ??= intAttr(node, 'transB', 0) ? 0 : 1;
        head ||= isHead(node);
        consumers.push('Gemm');
      } else if (node.op_type === 'Gather' && position === 0 && intAttr(node, 'axis', 0) === 0) {
        axis = 0;
        gather = true;
        consumers.push('Gather');
      } else if (node.op_type === 'Transpose' && node.output[0]) {
        // a weight stored [out, in] and transposed for a MatMul (tied LM heads are exported so)
        const transposed = node.output[0];
        const matmuls = index
          .readers(index.scopeOf(node), transposed)
          .filter((n) => n.op_type === 'MatMul' && n.input[1] === transposed);
        if (!matmuls.length) ok = false;
        axis ??= 0;
        for (const m of matmuls) head ||= isHead(m);
        consumers.push('Transpose→MatMul');
      } else ok = false;
    }
    if (!ok || axis === null) continue;
    const role: WeightRole = gather ? 'embedding' : head ? 'lmHead' : 'linear';
    out.push({
      name: w.name,
      shape,
      role,
      channelAxis: axis,
      consumers: [...new Set(consumers)],
      scope: w.scope.label,
      source: w.source,
      ...(half ? { dataType: t.data_type } : {}),
    });
  }
  return out;
}

/**
 * Why a model has no weight the methods can compress, for the error that says so: what its weights
 * are instead (dtype, rank, the ops reading them).
 */
export function noCandidatesMessage(modelName: string, graph: GraphProto): string {
  const index = graphIndex(graph);
  const weights = index.weights();
  const head = `${modelName} has no float32 2-D weight read by MatMul, Gemm or Gather, so there is nothing the methods can compress`;
  if (!weights.length) return `${head}: it stores no weights at all.`;
  const kinds = new Map<string, number>();
  const count = (kind: string) => kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  for (const w of weights) {
    const t = w.tensor;
    if (t.data_type !== DataType.FLOAT) count(dtypeName(t.data_type));
    else if (t.dims.length !== 2) count(`${t.dims.length}-D float32`);
    else {
      const ops = [...new Set(index.readers(w.scope, w.tensorName).map((n) => n.op_type))].sort();
      count(ops.length ? `2-D float32 read by ${ops.join('/')}` : '2-D float32 read by no node');
    }
  }
  const parts = [...kinds].sort((a, b) => b[1] - a[1]).map(([kind, n]) => `${n} ${kind}`);
  const shown = parts.length > 6 ? [...parts.slice(0, 6), `${parts.length - 6} more kinds`] : parts;
  return `${head}. Its ${weights.length} weight tensor${weights.length === 1 ? ' is' : 's are'}: ${shown.join(', ')}.`;
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

/**
 * The typed error of a compression that picked no weight: the model has none the methods can
 * compress (`unsupported`), or the recipe's selections matched none of them (`invalid-recipe`).
 */
export function requireSelection(
  model: { name: string; graph: GraphProto },
  candidates: number,
  selected: number,
): void {
  if (!selected && !candidates)
    throw new ModelError('unsupported', noCandidatesMessage(model.name, model.graph));
  if (!selected)
    throw new ModelError(
      'invalid-recipe',
      `The recipe selected no weights in ${model.name} (it has ${candidates} weight matrices; ` +
        `embeddings and the LM head need "embeddings": true / "lmHead": true in a step's select).`,
    );
}
