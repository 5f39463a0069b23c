/**
 * Finding a decoder's transformer structure in its ONNX graph: the residual stream, and on it each
 * block's attention (fused or separate Q/K/V projections, grouped-query KV heads, the output
 * projection, and every constant that carries a head count or an attention width) and MLP (up,
 * optional gate, down). Structured pruning rewrites exactly what this finds; a graph it cannot map
 * is a ModelError naming the block and what is missing, never a guess.
 *
 * The description is plain JSON (names and numbers), so a worker can post it to the page.
 *
 * How heads are found: every tensor between the Q/K/V projections and the output projection carries
 * a "head state" (which projection it comes from, and the axis its heads are on — or 'flat' while the
 * heads are still packed head-major in the last axis). Reshape, Transpose, Split, Gather (GQA's KV
 * head map), Unsqueeze/Expand (HF's repeat_kv) and element-wise ops move that state along; a Reshape
 * or Expand shape entry on a head axis is a head count, the last entry of the Reshape that merges the
 * heads back is an attention width. Only those entries are rewritten: a head dimension computed as
 * hidden / num_heads (GPT-2's export) is left alone, since the hidden width does not change.
 */
import { ModelError } from '../errors.ts';
import type { OnnxModel } from '../onnx/model.ts';
import type { NodeProto } from '../onnx/proto.ts';
import { Dataflow, intAttr, intsAttr, unsupported } from './graph.ts';

/** A MatMul with a 2-D weight initializer [in, out], and the bias Add that follows it, if any. */
export interface LinearInfo {
  weight: string;
  bias: string | null;
  /** The activation it multiplies. */
  input: string;
  /** Its result: the bias Add's output when there is one. */
  output: string;
  inFeatures: number;
  outFeatures: number;
}

export type HeadUnit = 'heads' | 'kvHeads';

/**
 * One integer of a shape constant that carries a head count ('count') or heads × head_dim
 * ('width'). The constant is input `input` of node `node` (named by its first output), or, when that
 * shape is built by a Concat, input `piece.input` of the Concat `piece.node`; `element` indexes the
 * constant (or the piece).
 */
export interface CountSite {
  node: string;
  input: number;
  piece?: { node: string; input: number };
  element: number;
  unit: HeadUnit;
  kind: 'count' | 'width';
  /** The value it holds now. */
  value: number;
}

/** A Split of a fused QKV output: its sections, in output order. */
export interface SplitSite {
  node: string;
  parts: ('q' | 'k' | 'v')[];
}

/** Columns [offset, offset + width) of a linear's output that one projection owns. */
export interface Projection {
  linear: LinearInfo;
  offset: number;
  width: number;
}

export interface AttentionInfo {
  /** Query heads. */
  heads: number;
  /** Key/value heads (= heads without grouped-query attention). */
  kvHeads: number;
  headDim: number;
  /** Q, K and V come from one linear (GPT-2's c_attn). */
  fused: boolean;
  q: Projection;
  k: Projection;
  v: Projection;
  out: LinearInfo;
  counts: CountSite[];
  splits: SplitSite[];
  /** Gather nodes (by output) that map each query head to its KV head, indices [heads]. */
  kvMaps: string[];
  /** The KV head each query head reads, [heads]: query heads of one KV head are pruned together. */
  groupOf: number[];
  /**
   * The KV cache (Hugging Face "with past" exports): graph inputs past_key_values.* and outputs
   * present.* whose declared shape holds this block's KV-head count at `axis`. Pruning heads rewrites
   * that dimension; dropping the block passes `input` through to `output` (when both are known).
   */
  cache: CacheSite[];
}

export interface CacheSite {
  /** The graph input (the past) the attention's Concat joins, if any. */
  input?: string;
  /** The graph output (the present) that Concat writes, if any. */
  output?: string;
  axis: number;
  unit: HeadUnit;
}

export interface MlpInfo {
  /** The linears that read the block's normalized input: up (and gate, for SwiGLU). */
  inputs: LinearInfo[];
  down: LinearInfo;
  /** Intermediate neurons (the down projection's input features). */
  hidden: number;
}

export interface BlockInfo {
  index: number;
  /** The residual stream entering the block. */
  input: string;
  attention: AttentionInfo;
  /** The residual stream between attention and MLP. */
  middle: string;
  mlp: MlpInfo;
  /** The residual stream leaving the block. */
  output: string;
}

export interface ModelStructure {
  /** The residual stream's width. */
  width: number;
  blocks: BlockInfo[];
}

// ---------------------------------------------------------------------------------------------

function findLinears(flow: Dataflow): Map<string, LinearInfo> {
  const byOutput = new Map<string, LinearInfo>();
  for (const n of flow.nodes) {
    if (n.op_type !== 'MatMul' || n.domain) continue;
    const w = flow.initializers.get(n.input[1]);
    if (!w || w.dims.length !== 2) continue;
    const [inFeatures, outFeatures] = w.dims.map(Number);
    let output = n.output[0];
    let bias: string | null = null;
    const readers = flow.readersOf(output);
    if (readers.length === 1 && readers[0].op_type === 'Add' && !readers[0].domain) {
      const add = readers[0];
      const other = add.input[0] === output ? add.input[1] : add.input[0];
      const b = flow.initializers.get(other);
      if (b && b.dims.length === 1 && Number(b.dims[0]) === outFeatures) {
        bias = other;
        output = add.output[0];
      }
    }
    byOutput.set(output, { weight: n.input[1], bias, input: n.input[0], output, inFeatures, outFeatures });
  }
  return byOutput;
}

interface Sublayer {
  /** The residual stream in, out, and the projection whose result is added to it. */
  input: string;
  output: string;
  proj: LinearInfo;
  /** Node indices computed from `input` that the projection's result depends on. */
  region: Set<number>;
  attention: boolean;
}

function findSublayers(flow: Dataflow, linears: Map<string, LinearInfo>): Sublayer[] {
  const subs: Sublayer[] = [];
  for (const n of flow.nodes) {
    if (n.op_type !== 'Add' || n.domain) continue;
    for (const side of [0, 1]) {
      const proj = linears.get(n.input[side]);
      const stream = n.input[1 - side];
      if (!proj || flow.constants.has(stream) || !flow.reaches(stream, proj.input)) continue;
      const down = flow.descendants(stream);
      const region = new Set([...flow.ancestors(proj.output, stream)].filter((i) => down.has(i)));
      const attention = [...region].some((i) => flow.nodes[i].op_type === 'Softmax');
      subs.push({ input: stream, output: n.output[0], proj, region, attention });
      break;
    }
  }
  return subs;
}

/** The transformer blocks of `model`, or a ModelError saying which block could not be mapped and why. */
export function detectStructure(model: OnnxModel): ModelStructure {
  const flow = new Dataflow(model);
  const linears = findLinears(flow);
  const subs = findSublayers(flow, linears);
  if (!subs.length)
    throw unsupported(
      `${model.name}: no transformer block found (no residual Add of a projection MatMul onto the stream it reads).`,
    );
  const blocks: BlockInfo[] = [];
  for (let i = 0; i < subs.length; i += 2) {
    const index = blocks.length;
    const attn = subs[i];
    const mlp = subs[i + 1];
    const where = `${model.name}, block ${index}`;
    if (!attn.attention)
      throw unsupported(
        `${where}: expected attention (a Softmax between the stream '${attn.input}' and the projection '${attn.proj.weight}') and found none.`,
      );
    if (!mlp)
      throw unsupported(
        `${where}: attention ends at '${attn.output}' and no MLP follows on the residual stream.`,
      );
    if (mlp.attention) throw unsupported(`${where}: two attention sublayers in a row; the MLP is missing.`);
    if (mlp.input !== attn.output)
      throw unsupported(
        `${where}: the MLP reads '${mlp.input}', not the attention's residual output '${attn.output}' (parallel attention/MLP blocks are not supported).`,
      );
    if (index > 0 && attn.input !== blocks[index - 1].output)
      throw unsupported(
        `${where}: it reads '${attn.input}', not the previous block's output '${blocks[index - 1].output}'.`,
      );
    blocks.push({
      index,
      input: attn.input,
      attention: detectAttention(flow, linears, attn, where),
      middle: attn.output,
      mlp: detectMlp(flow, linears, mlp, where),
      output: mlp.output,
    });
  }
  const width = blocks[0].attention.out.outFeatures;
  return { width, blocks };
}

// ---------------------------------------------------------------------------------------------
// MLP

/** Ops an MLP's intermediate activations may pass through: element-wise, so neurons stay independent. */
const ELEMENTWISE = new Set([
  'Add',
  'Sub',
  'Mul',
  'Div',
  'Pow',
  'Sqrt',
  'Neg',
  'Tanh',
  'Sigmoid',
  'Erf',
  'Relu',
  'Gelu',
  'FastGelu',
  'Softplus',
  'Exp',
  'Cast',
  'Identity',
  'Where',
  'Max',
  'Min',
  'Abs',
  'Clip',
  'HardSigmoid',
  'HardSwish',
  'Mish',
  'LeakyRelu',
  'Elu',
  'Selu',
  'BiasGelu',
  'QuickGelu',
  'Dropout',
]);

function detectMlp(flow: Dataflow, linears: Map<string, LinearInfo>, sub: Sublayer, where: string): MlpInfo {
  const down = sub.proj;
  const inputs: LinearInfo[] = [];
  for (const i of sub.region) {
    const n = flow.nodes[i];
    const l = n.op_type === 'MatMul' ? [...linears.values()].find((x) => x.weight === n.input[1]) : undefined;
    if (l && l !== down && l.weight !== down.weight) inputs.push(l);
  }
  if (!inputs.length) throw unsupported(`${where}: the MLP has no up projection before '${down.weight}'.`);
  for (const l of inputs)
    if (l.outFeatures !== down.inFeatures)
      throw unsupported(
        `${where}: MLP projection '${l.weight}' has ${l.outFeatures} outputs, but the down projection '${down.weight}' reads ${down.inFeatures}.`,
      );
  if (inputs.some((l) => l.input !== inputs[0].input))
    throw unsupported(`${where}: the MLP's up/gate projections read different tensors.`);
  // between the up projections and the down projection every op must be element-wise
  const beforeDown = flow.ancestors(down.input);
  const hiddenNodes = new Set<number>();
  for (const l of inputs)
    for (const i of flow.descendants(l.output)) if (beforeDown.has(i)) hiddenNodes.add(i);
  for (const i of hiddenNodes) {
    const n = flow.nodes[i];
    if (!ELEMENTWISE.has(n.op_type))
      throw unsupported(
        `${where}: the MLP's neurons pass through ${n.op_type} '${flow.label(n)}', which is not element-wise; its neurons cannot be pruned.`,
      );
    for (const x of n.input) {
      const c = flow.constants.get(x);
      if (c && c.dims.reduce((a, b) => a * Number(b), 1) > 1)
        throw unsupported(
          `${where}: the MLP's ${n.op_type} '${flow.label(n)}' reads a per-neuron constant '${x}'; it cannot be pruned.`,
        );
    }
  }
  return { inputs, down, hidden: down.inFeatures };
}

// ---------------------------------------------------------------------------------------------
// Attention

type Unit = 'q' | 'kv' | 'qkv';
interface HeadState {
  unit: Unit;
  /** The axis heads are on, or 'flat' (packed head-major in the last axis). */
  axis: number | 'flat';
  /** An axis Unsqueeze inserted right after the heads (repeat_kv), to be expanded then merged. */
  repeat?: boolean;
}

interface ShapeEntry {
  /** The value, or null when it is computed at run time. */
  value: number | null;
  site: Omit<CountSite, 'unit' | 'kind' | 'value'>;
}

/** The entries of the shape `node.input[input]`: a constant, or a Concat of constants and computed pieces. */
function shapeEntries(flow: Dataflow, node: NodeProto, input: number, where: string): ShapeEntry[] {
  const name = node.input[input];
  const self = node.output[0];
  const direct = flow.ints(name);
  if (direct) return direct.map((value, element) => ({ value, site: { node: self, input, element } }));
  const concat = flow.producerOf(name);
  if (concat?.op_type === 'Concat') {
    const entries: ShapeEntry[] = [];
    concat.input.forEach((piece, p) => {
      const site = (element: number) => ({
        node: self,
        input,
        piece: { node: concat.output[0], input: p },
        element,
      });
      const values = flow.ints(piece);
      if (values) values.forEach((value, e) => entries.push({ value, site: site(e) }));
      else {
        const length = pieceLength(flow, piece);
        if (length === null)
          throw unsupported(
            `${where}: cannot tell how many entries '${piece}' adds to the shape of ${node.op_type} '${flow.label(node)}'.`,
          );
        for (let e = 0; e < length; e++) entries.push({ value: null, site: site(e) });
      }
    });
    return entries;
  }
  throw unsupported(
    `${where}: the shape of ${node.op_type} '${flow.label(node)}' ('${name}') is neither a constant nor a Concat of pieces.`,
  );
}

/** How many entries a computed shape piece has (Unsqueeze of a scalar: 1), or null when unknown. */
function pieceLength(flow: Dataflow, name: string): number | null {
  const n = flow.producerOf(name);
  if (!n) return null;
  if (n.op_type === 'Unsqueeze') {
    const axes = n.input[1] ? flow.ints(n.input[1]) : intsAttr(n, 'axes');
    return axes?.length === 1 ? 1 : null;
  }
  if (n.op_type === 'Cast' || n.op_type === 'Identity') return pieceLength(flow, n.input[0]);
  if (n.op_type === 'Gather' && flow.producerOf(n.input[0])?.op_type === 'Shape') {
    const idx = flow.ints(n.input[1]);
    const t = flow.constants.get(n.input[1]);
    return idx && t ? (t.dims.length === 0 ? null : idx.length) : null;
  }
  return null;
}

function detectAttention(
  flow: Dataflow,
  linears: Map<string, LinearInfo>,
  sub: Sublayer,
  where: string,
): AttentionInfo {
  const out = sub.proj;
  const region = [...sub.region].sort((a, b) => a - b);
  const inRegion = (i: number | undefined) => i !== undefined && sub.region.has(i);
  const softmaxes = region.filter((i) => flow.nodes[i].op_type === 'Softmax');
  if (softmaxes.length !== 1)
    throw unsupported(`${where}: expected one Softmax in attention, found ${softmaxes.length}.`);
  const softmax = flow.nodes[softmaxes[0]];
  // scores = Q·Kᵀ: the MatMul of two activations the Softmax is computed from; context = P·V
  const scoreIdx = [...flow.ancestors(softmax.output[0])]
    .filter(
      (i) =>
        sub.region.has(i) &&
        flow.nodes[i].op_type === 'MatMul' &&
        !flow.constants.has(flow.nodes[i].input[1]),
    )
    .sort((a, b) => b - a)[0];
  const afterSoftmax = flow.descendants(softmax.output[0]);
  const contextIdx = region.find(
    (i) =>
      afterSoftmax.has(i) &&
      flow.nodes[i].op_type === 'MatMul' &&
      !flow.constants.has(flow.nodes[i].input[1]),
  );
  if (scoreIdx === undefined || contextIdx === undefined)
    throw unsupported(`${where}: the attention's score (Q·Kᵀ) or context (P·V) MatMul was not found.`);
  const score = flow.nodes[scoreIdx];
  const context = flow.nodes[contextIdx];
  const projs = [...linears.values()].filter((l) => l !== out && inRegion(flow.producer.get(l.output)));
  const feeding = (tensor: string) => projs.filter((l) => flow.reaches(l.output, tensor));
  const qs = feeding(score.input[0]);
  const ks = feeding(score.input[1]);
  const vs = feeding(context.input[1]);
  if (qs.length !== 1 || ks.length !== 1 || vs.length !== 1)
    throw unsupported(
      `${where}: could not tell the Q, K and V projections apart (found ${qs.length}, ${ks.length}, ${vs.length} candidates).`,
    );
  const fused = qs[0] === ks[0] && ks[0] === vs[0];
  if (!fused && (qs[0] === ks[0] || ks[0] === vs[0] || qs[0] === vs[0]))
    throw unsupported(
      `${where}: two of Q, K, V share a projection; only all-fused or all-separate are supported.`,
    );

  const state = new Map<string, HeadState>();
  const counts: CountSite[] = [];
  const splits: SplitSite[] = [];
  const kvMaps: string[] = [];
  const cache: CacheSite[] = [];
  const count: { q?: number; kv?: number } = {};
  const widthOf = (unit: 'q' | 'kv') => (unit === 'q' ? qWidth : kvWidth);
  let qWidth = fused ? 0 : qs[0].outFeatures;
  let kvWidth = fused ? 0 : ks[0].outFeatures;
  const proj: Partial<Record<'q' | 'k' | 'v', Projection>> = {};
  if (fused) state.set(qs[0].output, { unit: 'qkv', axis: 'flat' });
  else {
    if (ks[0].outFeatures !== vs[0].outFeatures)
      throw unsupported(
        `${where}: K and V projections have different widths (${ks[0].outFeatures}, ${vs[0].outFeatures}).`,
      );
    state.set(qs[0].output, { unit: 'q', axis: 'flat' });
    state.set(ks[0].output, { unit: 'kv', axis: 'flat' });
    state.set(vs[0].output, { unit: 'kv', axis: 'flat' });
    proj.q = { linear: qs[0], offset: 0, width: qWidth };
    proj.k = { linear: ks[0], offset: 0, width: kvWidth };
    proj.v = { linear: vs[0], offset: 0, width: kvWidth };
  }
  const unitName = (u: 'q' | 'kv'): HeadUnit => (u === 'q' ? 'heads' : 'kvHeads');
  const site = (e: ShapeEntry, unit: 'q' | 'kv', kind: 'count' | 'width', value: number) =>
    counts.push({ ...e.site, unit: unitName(unit), kind, value });
  const fail = (n: NodeProto, why: string): never => {
    throw unsupported(`${where}: ${n.op_type} '${flow.label(n)}' ${why}; its heads cannot be pruned.`);
  };

  let reachedOut = false;
  let repeated = false;
  for (const i of region) {
    const n = flow.nodes[i];
    const inStates = n.input.map((x) => state.get(x));
    const first = inStates.findIndex((s) => s !== undefined);
    if (first < 0) continue;
    const s = inStates[first]!;
    const set = (st: HeadState) => {
      for (const o of n.output) if (o) state.set(o, st);
    };
    if (n.op_type === 'Shape') continue; // run-time shapes adapt to the new head count by themselves
    if (n.input[1] === out.weight && n.op_type === 'MatMul') {
      if (s.unit !== 'q' || s.axis !== 'flat') fail(n, 'reads heads that are not merged back into one axis');
      reachedOut = true;
      continue;
    }
    if (s.unit === 'qkv') {
      if (n.op_type !== 'Split') fail(n, 'reads the fused QKV output (only a Split of it is supported)');
      const axis = intAttr(n, 'axis', 0);
      if (axis !== -1 && axis !== 2) fail(n, `splits the fused QKV along axis ${axis}, not the last`);
      const total = qs[0].outFeatures;
      const sizes =
        (n.input[1] ? flow.ints(n.input[1]) : intsAttr(n, 'split')) ??
        (n.output.length === 3 ? [total / 3, total / 3, total / 3] : null);
      if (!sizes || sizes.length !== 3) fail(n, 'does not split into three parts');
      const parts = n.output.map((o) =>
        flow.reaches(o, score.input[0])
          ? 'q'
          : flow.reaches(o, score.input[1])
            ? 'k'
            : flow.reaches(o, context.input[1])
              ? 'v'
              : null,
      );
      if (parts.some((p) => p === null) || new Set(parts).size !== 3)
        fail(n, 'does not split into Q, K and V');
      let offset = 0;
      parts.forEach((p, j) => {
        proj[p!] = { linear: qs[0], offset, width: sizes![j] };
        offset += sizes![j];
        state.set(n.output[j], { unit: p === 'q' ? 'q' : 'kv', axis: 'flat' });
      });
      qWidth = proj.q!.width;
      kvWidth = proj.k!.width;
      if (proj.v!.width !== kvWidth) fail(n, 'gives K and V different widths');
      if (n.input[1] || intsAttr(n, 'split'))
        splits.push({ node: n.output[0], parts: parts as ('q' | 'k' | 'v')[] });
      continue;
    }
    const unit = s.unit;
    switch (n.op_type) {
      case 'Reshape': {
        if (first !== 0) fail(n, 'uses heads as a shape');
        const entries = shapeEntries(flow, n, 1, where);
        if (s.axis === 'flat') {
          // [.., W] -> [.., H, ...]: the first entry after which the rest multiply to W / H
          const w = widthOf(unit);
          const known = count[unit];
          let at = -1;
          for (let a = 1; a < entries.length && at < 0; a++) {
            const h = entries[a].value;
            if (h === null || h < 1 || w % h !== 0 || (known !== undefined && h !== known)) continue;
            let rest = 1;
            let open = false;
            for (const e of entries.slice(a + 1)) {
              if (e.value === null || e.value === -1) open = true;
              else rest *= e.value;
            }
            if (open ? (w / h) % rest === 0 : rest === w / h) at = a;
          }
          if (at < 0)
            fail(
              n,
              `splits the ${unit === 'q' ? 'query' : 'key/value'} projection (width ${w}) into no recognizable head axis`,
            );
          count[unit] = entries[at].value!;
          site(entries[at], unit, 'count', count[unit]!);
          set({ unit, axis: at });
        } else if (s.repeat) {
          // [.., G, n_rep, ..] -> [.., G·n_rep, ..]: repeat_kv's merge makes query heads
          const e = entries[s.axis];
          if (!e || e.value === null || e.value !== count.q)
            fail(n, 'merges repeated KV heads into an unexpected count');
          site(e, 'q', 'count', e.value!);
          repeated = true;
          set({ unit: 'q', axis: s.axis });
        } else {
          const a = s.axis;
          const e = entries[a];
          const c = count[unit]!;
          const headDim = widthOf(unit) / c;
          if (
            e &&
            a === entries.length - 1 &&
            (e.value === null || e.value === c * headDim || e.value === -1)
          ) {
            // heads merged back: [.., H, d] -> [.., H·d]
            if (e.value !== -1) site(e, unit, 'width', c * headDim);
            set({ unit, axis: 'flat' });
          } else if (e && (e.value === c || e.value === 0)) {
            if (e.value === c) site(e, unit, 'count', c);
            set({ unit, axis: a });
          } else fail(n, `reshapes the head axis ${a} to ${e?.value ?? 'a computed size'}`);
        }
        break;
      }
      case 'Transpose': {
        if (s.axis === 'flat') fail(n, 'transposes packed heads');
        const perm = intsAttr(n, 'perm');
        if (!perm) fail(n, 'has no perm');
        set({ unit, axis: perm!.indexOf(s.axis as number) });
        break;
      }
      case 'Gather': {
        const axis = intAttr(n, 'axis', 0);
        const map = flow.ints(n.input[1]);
        if (first !== 0 || s.axis === 'flat' || axis !== s.axis || !map || unit !== 'kv')
          fail(n, 'gathers along the head axis in a way other than a KV-head map');
        count.q ??= map!.length;
        if (map!.length !== count.q || map!.some((g) => g < 0 || g >= (count.kv ?? 0)))
          fail(n, `maps ${map!.length} query heads onto ${count.kv} KV heads inconsistently`);
        kvMaps.push(n.output[0]);
        set({ unit: 'q', axis: s.axis });
        break;
      }
      case 'Unsqueeze': {
        if (s.axis === 'flat') fail(n, 'unsqueezes packed heads');
        const axes = (n.input[1] ? flow.ints(n.input[1]) : intsAttr(n, 'axes')) ?? [];
        const a = s.axis as number;
        if (axes.length !== 1 || axes[0] !== a + 1) fail(n, 'inserts an axis elsewhere than after the heads');
        set({ unit, axis: a, repeat: true });
        break;
      }
      case 'Expand': {
        if (!s.repeat || first !== 0) fail(n, 'expands heads other than for repeat_kv');
        const entries = shapeEntries(flow, n, 1, where);
        const e = entries[s.axis as number];
        if (!e || e.value !== count[unit]) fail(n, 'expands the KV heads to an unexpected count');
        site(e, unit, 'count', e.value!);
        set(s);
        break;
      }
      case 'Split':
      case 'Slice':
      case 'Concat': {
        if (s.axis === 'flat') fail(n, 'cuts packed heads');
        const axis =
          n.op_type === 'Slice'
            ? (flow.ints(n.input[3] ?? '') ?? [])
            : [intAttr(n, 'axis', n.op_type === 'Split' ? 0 : -999)];
        if (axis.includes(s.axis as number)) fail(n, 'cuts along the head axis');
        if (n.op_type === 'Concat') {
          for (let j = 0; j < n.input.length; j++) {
            const x = n.input[j];
            if (!inStates[j] && !flow.constants.has(x) && !flow.producer.has(x)) {
              // a KV cache fed in: its declared head dimension must be this block's head count
              const dims = flow.inputDims(x);
              const c = count[unit];
              const declared = dims?.[s.axis as number];
              if (c === undefined || declared !== c)
                fail(
                  n,
                  `joins the heads with the graph input '${x}' (a KV cache) whose declared shape ` +
                    `[${dims?.join(', ') ?? '?'}] does not hold the ${c ?? 'unknown'} heads at axis ${s.axis}`,
                );
              cache.push({
                input: x,
                output: flow.graphOutputs.has(n.output[0]) ? n.output[0] : undefined,
                axis: s.axis as number,
                unit: unitName(unit),
              });
            }
            if (inStates[j] && inStates[j]!.axis !== s.axis)
              fail(n, 'joins tensors with heads on different axes');
          }
        }
        set(s);
        break;
      }
      case 'MatMul': {
        const other = inStates[1 - first];
        if (!other || other.axis !== s.axis) fail(n, 'multiplies heads with a tensor laid out differently');
        if (other!.unit !== s.unit && count.q !== count.kv)
          fail(n, 'multiplies query heads with fewer KV heads without a repeat');
        set({ unit: s.unit === 'q' || other!.unit === 'q' ? 'q' : 'kv', axis: s.axis });
        break;
      }
      default: {
        if (
          !ELEMENTWISE.has(n.op_type) &&
          !['Softmax', 'Equal', 'Not', 'And', 'Or', 'Less', 'Greater'].includes(n.op_type)
        )
          fail(n, 'is an operation the head tracker does not know');
        for (const t of inStates)
          if (t && t.axis !== s.axis) fail(n, 'combines tensors with heads on different axes');
        set(s);
      }
    }
  }
  if (!reachedOut)
    throw unsupported(`${where}: the heads never reach the output projection '${out.weight}'.`);
  // a graph output carrying heads that no Concat above wrote (a present.* written by another op)
  for (const [name, st] of state) {
    if (!flow.graphOutputs.has(name) || cache.some((c) => c.output === name)) continue;
    if (st.axis === 'flat' || st.unit === 'qkv')
      throw unsupported(
        `${where}: the graph output '${name}' carries packed heads; its heads cannot be pruned.`,
      );
    const dims = flow.outputDims(name);
    if (dims?.[st.axis] !== count[st.unit])
      throw unsupported(
        `${where}: the graph output '${name}' carries heads, but its declared shape does not hold their count.`,
      );
    cache.push({ output: name, axis: st.axis, unit: unitName(st.unit) });
  }
  if (count.q === undefined || count.kv === undefined || !proj.q || !proj.k || !proj.v)
    throw unsupported(`${where}: the query or key/value head count was not found in any Reshape.`);
  const heads = count.q;
  const kvHeads = count.kv;
  const headDim = qWidth / heads;
  if (!Number.isInteger(headDim) || kvWidth !== kvHeads * headDim)
    throw unsupported(
      `${where}: ${heads} query heads of width ${qWidth} and ${kvHeads} KV heads of width ${kvWidth} disagree on the head size.`,
    );
  if (heads % kvHeads !== 0)
    throw unsupported(`${where}: ${heads} query heads do not group evenly onto ${kvHeads} KV heads.`);
  if (heads !== kvHeads && !kvMaps.length && !repeated)
    throw unsupported(
      `${where}: ${heads} query heads share ${kvHeads} KV heads, but the graph's KV-head repeat was not found.`,
    );
  if (out.inFeatures !== qWidth)
    throw unsupported(
      `${where}: the output projection '${out.weight}' reads ${out.inFeatures} features, the heads give ${qWidth}.`,
    );
  let groupOf = Array.from({ length: heads }, (_, h) => Math.floor(h / (heads / kvHeads)));
  if (kvMaps.length) {
    const maps = kvMaps.map((g) => flow.ints(flow.producerOf(g)!.input[1])!);
    if (maps.some((m) => m.join() !== maps[0].join()))
      throw unsupported(`${where}: the KV-head maps of K and V differ.`);
    groupOf = maps[0];
  }
  return {
    heads,
    kvHeads,
    headDim,
    fused,
    q: proj.q,
    k: proj.k,
    v: proj.v,
    out,
    counts,
    splits,
    kvMaps,
    groupOf,
    cache,
  };
}

/** Whether `e` is a structure error (the graph could not be mapped), as opposed to a bad request. */
export function isStructureError(e: unknown): e is ModelError {
  return e instanceof ModelError && e.code === 'unsupported';
}
