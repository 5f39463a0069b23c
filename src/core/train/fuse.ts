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
import { ModelError } from '../errors.ts';
import type { NodeProto } from '../onnx/proto.ts';
import type { OpDef } from './ops.ts';
import { expandData, floats, type Value } from './tensor.ts';

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
 * y = softmax(where(mask, fill, s / c)) along the last axis: GPT-2's attention weights from its scores
 * (Div by √d, Where with the causal/padding mask, Softmax). One pass forward, one backward, and the
 * masked positions (half of a causal mask) skip their exp: their weight is exp(fill − max) = 0 for the
 * very negative fills exporters use. A row with every position masked gets the uniform weights that
 * the softmax of equal fills gives.
 */
function maskedSoftmaxOp(divisor: number, fillIsTrue: boolean): OpDef {
  const inv = 1 / divisor;
  return {
    forward(x, ctx) {
      const sv = x[0]!;
      const S = sv.data as Float32Array;
      const shape = sv.shape;
      const len = shape[shape.length - 1];
      const mask = x[1]!;
      checkMaskBroadcast(shape, mask.shape, ctx.where);
      const M = mask.data.length === S.length ? mask.data : expandData(mask, shape);
      // keep[i]: the position takes the score (not the fill)
      const keepWhen = fillIsTrue ? 0 : 1;
      const Y = floats(S.length);
      for (let o = 0; o < S.length; o += len) {
        let max = -Infinity;
        let kept = 0;
        for (let k = 0; k < len; k++)
          if ((M[o + k] ? 1 : 0) === keepWhen) {
            kept++;
            const v = S[o + k] * inv;
            if (v > max) max = v;
          }
        if (kept === 0) {
          Y.fill(1 / len, o, o + len);
          continue;
        }
        let z = 0;
        for (let k = 0; k < len; k++)
          if ((M[o + k] ? 1 : 0) === keepWhen) {
            const e = Math.exp(S[o + k] * inv - max);
            Y[o + k] = e;
            z += e;
          }
        const r = 1 / z;
        for (let k = 0; k < len; k++) Y[o + k] *= r;
      }
      return [{ dtype: 'float32', shape, data: Y }];
    },
    backward(x, y, gy) {
      const g = gy[0];
      if (!g) return [undefined, undefined];
      const Y = y[0].data as Float32Array;
      const shape = y[0].shape;
      const len = shape[shape.length - 1];
      const gs = floats(g.length);
      // ds = (1/c) · y ⊙ (g − Σ g·y); masked positions have y = 0 (or get no gradient through Where)
      const mask = x[1]!;
      const M = mask.data.length === Y.length ? mask.data : expandData(mask, shape);
      const keepWhen = fillIsTrue ? 0 : 1;
      for (let o = 0; o < g.length; o += len) {
        let dot = 0;
        for (let k = 0; k < len; k++) dot += g[o + k] * Y[o + k];
        for (let k = 0; k < len; k++)
          if ((M[o + k] ? 1 : 0) === keepWhen) gs[o + k] = inv * Y[o + k] * (g[o + k] - dot);
      }
      return [gs, undefined];
    },
  };
}

/**
 * How a value of shape `v` is read at position i of a tensor of shape `out`: 0 when it has out's
 * shape, p when it is out's trailing dimensions (v[i % p]; leading 1s count as absent), -1 otherwise.
 */
function trailingPeriod(v: readonly number[], out: readonly number[]): number {
  let k = 0;
  while (k < v.length && v[k] === 1) k++;
  const dims = v.slice(k);
  if (dims.length > out.length) return -1;
  for (let i = 1; i <= dims.length; i++) if (dims[dims.length - i] !== out[out.length - i]) return -1;
  const n = dims.reduce((p, d) => p * d, 1);
  return n === out.reduce((p, d) => p * d, 1) ? 0 : n;
}

/** Scores below the row's max by more than this give exp() = 0 in float32 (exp(−110) ≈ 1.7e−48). */
const UNDERFLOW = -110;

/**
 * y = softmax(c·s + m) along the last axis: Llama-style attention weights from the scores (Mul by the
 * 1/√d scale, or Div by √d), an additive mask m (0 where a key is seen, a large negative number where
 * it is not: −1e9 in stories260K's export) and Softmax. Unfused these are three passes forward and
 * three backward over [heads, T, T] — 45 % of a stories260K training step. Fused: one pass computes
 * c·s + m and the row's max, exp() runs only where the result is not drowned by the mask (the causal
 * half is skipped: there exp() underflows to 0 in float32, as the unfused Softmax's does), and the
 * backward is one pass. m broadcasts by its trailing dimensions (a [T, T] table over every head).
 * The mask gets its gradient too when something trains it (y ⊙ (g − Σ g·y)).
 */
function scaledMaskSoftmaxOp(scale: number): OpDef {
  const c = Math.fround(scale);
  return {
    forward(x, ctx) {
      const sv = x[0]!;
      const S = sv.data as Float32Array;
      const mv = x[1]!;
      const shape = broadcastLast(sv.shape, mv.shape, ctx.where);
      const len = shape[shape.length - 1];
      const p = trailingPeriod(mv.shape, shape);
      const M = (p < 0 ? expandData(mv, shape) : mv.data) as Float32Array;
      const period = p <= 0 ? S.length : p;
      const Y = floats(S.length);
      for (let o = 0; o < S.length; o += len) {
        const mo = o % period;
        let max = -Infinity;
        for (let k = 0; k < len; k++) {
          // the unfused graph's float32 values: Mul's output, then Add's
          const v = Math.fround(Math.fround(S[o + k] * c) + M[mo + k]);
          Y[o + k] = v;
          if (v > max) max = v;
        }
        let z = 0;
        for (let k = 0; k < len; k++) {
          const d = Y[o + k] - max;
          if (d > UNDERFLOW) {
            const e = Math.exp(d);
            Y[o + k] = e;
            z += e;
          } else Y[o + k] = 0;
        }
        const r = 1 / z;
        for (let k = 0; k < len; k++) Y[o + k] *= r;
      }
      return [{ dtype: 'float32', shape, data: Y }];
    },
    backward(x, y, gy, _ctx, wants) {
      const g = gy[0];
      if (!g) return [undefined, undefined];
      const Y = y[0].data as Float32Array;
      const shape = y[0].shape;
      const len = shape[shape.length - 1];
      // dz = y ⊙ (g − Σ g·y); ds = c · dz; dm = dz summed over m's broadcast
      const dz = floats(g.length);
      for (let o = 0; o < g.length; o += len) {
        let dot = 0;
        for (let k = 0; k < len; k++) dot += g[o + k] * Y[o + k];
        for (let k = 0; k < len; k++) {
          const yk = Y[o + k];
          if (yk !== 0) dz[o + k] = yk * (g[o + k] - dot);
        }
      }
      let gm: Float32Array | undefined;
      if (wants?.[1]) {
        const mv = x[1]!;
        const n = mv.data.length;
        gm = floats(n);
        if (n === dz.length) gm.set(dz);
        else {
          const p = trailingPeriod(mv.shape, shape);
          if (p <= 0)
            throw new ModelError('unsupported', `a trained additive mask of shape [${mv.shape.join(', ')}].`);
          for (let i = 0; i < dz.length; i++) gm[i % p] += dz[i];
        }
      }
      let gs: Float32Array | undefined;
      if (wants?.[0] ?? true) {
        gs = dz;
        for (let i = 0; i < gs.length; i++) gs[i] *= c;
      }
      return [gs, gm];
    },
  };
}

/** The shape of s + m where m broadcasts onto s (s keeps its shape: the scores are the full tensor). */
function broadcastLast(s: number[], m: number[], where: string): number[] {
  if (trailingPeriod(m, s) >= 0) return s;
  checkMaskBroadcast(s, m, where);
  return [...s];
}

/** Throws unless mask shape `m` broadcasts onto scores `s` (numpy rules, m no wider than s). */
function checkMaskBroadcast(s: readonly number[], m: readonly number[], where: string): void {
  const off = s.length - m.length;
  if (off < 0 || m.some((d, i) => d !== 1 && d !== s[off + i]))
    throw new ModelError(
      'unsupported',
      `${where}: a mask of shape [${m.join(', ')}] over scores [${s.join(', ')}].`,
    );
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
  opset = 17,
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
  for (const softmax of nodes) {
    // s / c → Where(mask, fill, ·) or Where(mask, ·, fill) → Softmax over the last axis
    if (softmax.op_type !== 'Softmax' || (softmax.domain && softmax.domain !== 'ai.onnx')) continue;
    const axis = softmax.attribute?.find((a) => a.name === 'axis');
    // opset < 13 Softmax flattens the trailing axes: only the explicit last axis is the same thing
    if (axis ? Number(axis.i) !== -1 : opset < 13) continue;
    const whereNode = producer.get(softmax.input[0]);
    const where = whereNode === undefined ? undefined : nodes[whereNode];
    if (!where || where.op_type !== 'Where' || where.input.length !== 3) continue;
    const [mask, onTrue, onFalse] = where.input;
    const fillIsTrue = scalar(onTrue) !== undefined;
    const fill = fillIsTrue ? scalar(onTrue) : scalar(onFalse);
    const div = nodeOf(fillIsTrue ? onFalse : onTrue, 'Div');
    const divisor = div && scalar(div.input[1]);
    // the fill must drown the scores (exp(fill − max) = 0 in float32)
    if (fill === undefined || fill > -1e30 || !div || divisor === undefined || !(divisor > 0)) continue;
    if (!inner(div.output[0]) || !inner(where.output[0])) continue;
    if ([div, where, softmax].some((n) => removed.has(n))) continue;
    removed.add(div);
    removed.add(where);
    replaced.set(softmax, {
      node: {
        ...softmax,
        op_type: 'MaskedSoftmax (fused)',
        input: [div.input[0], mask],
        output: [softmax.output[0]],
        attribute: [],
      },
      op: maskedSoftmaxOp(divisor, fillIsTrue),
    });
  }
  for (const softmax of nodes) {
    // s·c (or s / c) → + m → Softmax over the last axis (Llama-style exports, stories260K)
    if (softmax.op_type !== 'Softmax' || (softmax.domain && softmax.domain !== 'ai.onnx')) continue;
    if (removed.has(softmax) || replaced.has(softmax)) continue;
    const axis = softmax.attribute?.find((a) => a.name === 'axis');
    if (axis ? Number(axis.i) !== -1 : opset < 13) continue;
    const add = nodeOf(softmax.input[0], 'Add');
    if (!add) continue;
    let match: { scores: string; mask: string; scaled: NodeProto; scale: number } | undefined;
    for (const side of [0, 1]) {
      const scaledName = add.input[side];
      const mask = add.input[1 - side];
      const mul = nodeOf(scaledName, 'Mul');
      const sm = mul && scalarAnd(mul);
      if (mul && sm) {
        match = { scores: sm[1], mask, scaled: mul, scale: sm[0] };
        break;
      }
      const div = nodeOf(scaledName, 'Div');
      const divisor = div && scalar(div.input[1]);
      if (div && divisor !== undefined && divisor !== 0) {
        match = { scores: div.input[0], mask, scaled: div, scale: 1 / divisor };
        break;
      }
    }
    if (!match || !Number.isFinite(match.scale)) continue;
    // the scores' own shape is the result's: a mask that is the full tensor and scores that broadcast are left alone
    if (!inner(match.scaled.output[0]) || !inner(add.output[0])) continue;
    if ([match.scaled, add].some((n) => removed.has(n))) continue;
    removed.add(match.scaled);
    removed.add(add);
    replaced.set(softmax, {
      node: {
        ...softmax,
        op_type: 'ScaledMaskSoftmax (fused)',
        input: [match.scores, match.mask],
        output: [softmax.output[0]],
        attribute: [],
      },
      op: scaledMaskSoftmaxOp(match.scale),
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
