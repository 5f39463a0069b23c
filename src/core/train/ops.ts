/**
 * The training engine's op table: for each ONNX op (default domain) its forward and, where it is
 * differentiable, its backward, side by side (llm.c's layout). Backward gets the op's inputs, its
 * outputs and the gradients of its outputs (undefined where nothing downstream needs one) and returns
 * the gradients of its inputs (undefined for integer, boolean and constant-only inputs). Gradients are
 * float32 arrays shaped like the value they belong to. Semantics follow the ONNX spec at opset 13–21;
 * ops whose attributes became inputs (Split, Squeeze, Unsqueeze, ReduceSum at 13, ReduceMean at 18)
 * accept both forms. tests/train/ops.test.ts checks every backward against finite differences.
 */
import { ModelError } from '../errors.ts';
import type { AttributeProto, NodeProto, TensorProto } from '../onnx/proto.ts';
import { DataType } from '../onnx/dtypes.ts';
import { matmulAcc, matmulNTAcc, matmulTNAcc } from './kernels.ts';
import {
  alloc,
  broadcastShapes,
  floats,
  broadcastStrides,
  expandData,
  gatherMap,
  normAxis,
  scatterMap,
  sizeOf,
  stridedMap,
  stridesOf,
  unbroadcast,
  type Data,
  type DType,
  type Value,
} from './tensor.ts';

export interface NodeContext {
  node: NodeProto;
  /** The node, for messages: `MatMul '/h.0/attn/MatMul'`. */
  where: string;
  /** The model's default-domain opset. */
  opset: number;
  /** Decodes a tensor held in an attribute (Constant, ConstantOfShape). */
  readTensor(t: TensorProto): Value;
}

type Grads = (Float32Array | undefined)[];
type MaybeValues = (Value | undefined)[];

export interface OpDef {
  forward(x: MaybeValues, ctx: NodeContext): Value[];
  /** Absent: the op has no gradient (its outputs are integers, booleans or constants). */
  /** `wants[i]`: whether input i needs a gradient (an op may skip the others' work). */
  backward?(x: MaybeValues, y: Value[], gy: Grads, ctx: NodeContext, wants?: boolean[]): Grads;
}

// ---------- attributes and inputs ----------

function attribute(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attribute?.find((a) => a.name === name);
}

function attrInt(node: NodeProto, name: string, fallback: number): number {
  const a = attribute(node, name);
  return a?.i !== undefined ? Number(a.i) : fallback;
}

function attrFloat(node: NodeProto, name: string, fallback: number): number {
  const a = attribute(node, name);
  return a?.f !== undefined ? a.f : fallback;
}

function attrInts(node: NodeProto, name: string): number[] | undefined {
  const a = attribute(node, name);
  return a?.ints && a.ints.length ? a.ints.map(Number) : undefined;
}

function attrString(node: NodeProto, name: string, fallback: string): string {
  const s = attribute(node, name)?.s;
  return s ? new TextDecoder().decode(s) : fallback;
}

function need(x: MaybeValues, i: number, ctx: NodeContext): Value {
  const v = x[i];
  if (!v) throw new ModelError('invalid-argument', `${ctx.where}: input ${i} is missing.`);
  return v;
}

function float(v: Value, ctx: NodeContext): Float32Array {
  if (!(v.data instanceof Float32Array))
    throw new ModelError('unsupported-dtype', `${ctx.where}: expected a float input, got ${v.dtype}.`);
  return v.data;
}

/** An integer list from an optional input (axes, shapes, split sizes). */
function ints(v: Value | undefined): number[] | undefined {
  return v ? Array.from(v.data, Number) : undefined;
}

function val(dtype: DType, shape: number[], data: Data): Value {
  return { dtype, shape, data };
}

// ---------- elementwise ----------

type BinaryKind = 'Add' | 'Sub' | 'Mul' | 'Div' | 'Pow';

/**
 * How x is read at output position i: period 0 means x has the output's shape (x[i]); period m ≥ 1
 * means x is the output's trailing dimensions (a bias [N], an RMSNorm weight, a scalar): x[i % m].
 * -1: any other broadcast (materialized).
 */
function period(x: Value, outShape: readonly number[]): number {
  const n = x.data.length;
  if (n === 1) return 1;
  let o = outShape.length;
  // leading unit dimensions broadcast like absent ones
  let k = 0;
  while (k < x.shape.length && x.shape[k] === 1) k++;
  const dims = x.shape.slice(k);
  if (dims.length === outShape.length && dims.every((d, i) => d === outShape[i])) return 0;
  if (dims.length > o) return -1;
  for (let i = dims.length - 1; i >= 0; i--) if (dims[i] !== outShape[--o]) return -1;
  return n;
}

/** out[i] = A[i] ∘ B[pb ? i % pb : i] for one of the binary kinds. */
function combine(kind: BinaryKind, A: Data, B: Data, pb: number, out: Data, integer: boolean): void {
  const n = out.length;
  if (pb === 0) {
    switch (kind) {
      case 'Add':
        for (let i = 0; i < n; i++) out[i] = A[i] + B[i];
        return;
      case 'Sub':
        for (let i = 0; i < n; i++) out[i] = A[i] - B[i];
        return;
      case 'Mul':
        for (let i = 0; i < n; i++) out[i] = A[i] * B[i];
        return;
      case 'Div':
        if (integer) for (let i = 0; i < n; i++) out[i] = Math.trunc(A[i] / B[i]);
        else for (let i = 0; i < n; i++) out[i] = A[i] / B[i];
        return;
      case 'Pow':
        for (let i = 0; i < n; i++) out[i] = Math.pow(A[i], B[i]);
        return;
    }
  }
  for (let r = 0; r < n; r += pb) {
    const m = Math.min(pb, n - r);
    switch (kind) {
      case 'Add':
        for (let j = 0; j < m; j++) out[r + j] = A[r + j] + B[j];
        break;
      case 'Sub':
        for (let j = 0; j < m; j++) out[r + j] = A[r + j] - B[j];
        break;
      case 'Mul':
        for (let j = 0; j < m; j++) out[r + j] = A[r + j] * B[j];
        break;
      case 'Div':
        if (integer) for (let j = 0; j < m; j++) out[r + j] = Math.trunc(A[r + j] / B[j]);
        else for (let j = 0; j < m; j++) out[r + j] = A[r + j] / B[j];
        break;
      case 'Pow':
        for (let j = 0; j < m; j++) out[r + j] = Math.pow(A[r + j], B[j]);
        break;
    }
  }
}

/** combine for float32 only: the same loops, kept monomorphic (one array type per loop) for speed. */
function combineFloat(
  kind: BinaryKind,
  A: Float32Array,
  B: Float32Array,
  pb: number,
  out: Float32Array,
): void {
  const n = out.length;
  if (pb === 0) {
    switch (kind) {
      case 'Add':
        for (let i = 0; i < n; i++) out[i] = A[i] + B[i];
        return;
      case 'Sub':
        for (let i = 0; i < n; i++) out[i] = A[i] - B[i];
        return;
      case 'Mul':
        for (let i = 0; i < n; i++) out[i] = A[i] * B[i];
        return;
      case 'Div':
        for (let i = 0; i < n; i++) out[i] = A[i] / B[i];
        return;
      case 'Pow':
        for (let i = 0; i < n; i++) out[i] = Math.pow(A[i], B[i]);
        return;
    }
  }
  for (let r = 0; r < n; r += pb) {
    const m = Math.min(pb, n - r);
    switch (kind) {
      case 'Add':
        for (let j = 0; j < m; j++) out[r + j] = A[r + j] + B[j];
        break;
      case 'Sub':
        for (let j = 0; j < m; j++) out[r + j] = A[r + j] - B[j];
        break;
      case 'Mul':
        for (let j = 0; j < m; j++) out[r + j] = A[r + j] * B[j];
        break;
      case 'Div':
        for (let j = 0; j < m; j++) out[r + j] = A[r + j] / B[j];
        break;
      case 'Pow':
        for (let j = 0; j < m; j++) out[r + j] = Math.pow(A[r + j], B[j]);
        break;
    }
  }
}

function binaryForward(kind: BinaryKind) {
  return (x: MaybeValues, ctx: NodeContext): Value[] => {
    let a = need(x, 0, ctx);
    let b = need(x, 1, ctx);
    const shape = broadcastShapes([a.shape, b.shape], ctx.where);
    const out = alloc(a.dtype, sizeOf(shape));
    const integer = a.dtype !== 'float32';
    // a commutative op with the small operand first (a scalar times x): swap it second
    if ((kind === 'Add' || kind === 'Mul') && period(a, shape) > 0 && period(b, shape) === 0) [a, b] = [b, a];
    const pa = period(a, shape);
    const pb = period(b, shape);
    if (pa === 0 && pb >= 0) {
      if (integer) combine(kind, a.data, b.data, pb, out, true);
      else combineFloat(kind, a.data as Float32Array, b.data as Float32Array, pb, out as Float32Array);
    } else combine(kind, expandData(a, shape), expandData(b, shape), 0, out, integer);
    return [val(a.dtype, shape, out)];
  };
}

/** Σ over broadcast positions of g onto an operand read with period p (0: same shape). */
function reduceToPeriod(g: Float32Array, p: number): Float32Array {
  if (p === 0) return g;
  const out = floats(p);
  for (let r = 0; r < g.length; r += p) for (let j = 0; j < p; j++) out[j] += g[r + j];
  return out;
}

/** out[i] = g[i] · w[p ? i % p : i] (w full when p is 0, periodic otherwise). */
function mulPeriodic(g: Float32Array, w: Float32Array, p: number): Float32Array {
  const n = g.length;
  const out = floats(n);
  if (p === 0) for (let i = 0; i < n; i++) out[i] = g[i] * w[i];
  else if (p === 1) {
    const s = w[0];
    for (let i = 0; i < n; i++) out[i] = g[i] * s;
  } else for (let r = 0; r < n; r += p) for (let j = 0; j < p; j++) out[r + j] = g[r + j] * w[j];
  return out;
}

/** out[j] = Σ_r g[r·p + j] · x[r·p + j] (the gradient of a periodic operand; x full). */
function dotPeriodic(g: Float32Array, x: Float32Array, p: number): Float32Array {
  if (p === 0) return mulPeriodic(g, x, 0);
  const out = floats(p);
  const n = g.length;
  if (p === 1) {
    let s = 0;
    for (let i = 0; i < n; i++) s += g[i] * x[i];
    out[0] = s;
  } else for (let r = 0; r < n; r += p) for (let j = 0; j < p; j++) out[j] += g[r + j] * x[r + j];
  return out;
}

function binaryBackward(kind: BinaryKind) {
  return (x: MaybeValues, y: Value[], gy: Grads, ctx: NodeContext, wants?: boolean[]): Grads => {
    const a = need(x, 0, ctx);
    const b = need(x, 1, ctx);
    const g = gy[0];
    if (!g || a.dtype !== 'float32') return [undefined, undefined];
    const wantA = wants?.[0] ?? true;
    const wantB = wants?.[1] ?? true;
    const shape = y[0].shape;
    const n = g.length;
    const pa = period(a, shape);
    const pb = period(b, shape);
    // the fast path: each operand either the output's shape or its trailing dimensions
    if (pa >= 0 && pb >= 0 && (pa === 0 || pb === 0) && kind !== 'Pow') {
      let ga: Float32Array | undefined;
      let gb: Float32Array | undefined;
      const A = a.data as Float32Array;
      const B = b.data as Float32Array;
      switch (kind) {
        case 'Add':
          if (wantA) ga = reduceToPeriod(g, pa);
          if (wantB) gb = reduceToPeriod(g, pb);
          break;
        case 'Sub':
          if (wantA) ga = reduceToPeriod(g, pa);
          if (wantB) {
            gb = reduceToPeriod(g, pb);
            gb = gb === g ? g.map((v) => -v) : gb.map((v) => -v);
          }
          break;
        case 'Mul':
          // one operand full (period 0), the other full or periodic: x·w with w a scalar or trailing weight
          if (pa === 0) {
            if (wantA) ga = mulPeriodic(g, B, pb);
            if (wantB) gb = dotPeriodic(g, A, pb);
          } else {
            if (wantA) ga = dotPeriodic(g, B, pa);
            if (wantB) gb = mulPeriodic(g, A, pa);
          }
          break;
        case 'Div': {
          const C = y[0].data as Float32Array;
          const inv = floats(B.length);
          for (let i = 0; i < B.length; i++) inv[i] = 1 / B[i];
          // d(a/b)/da = 1/b; d(a/b)/db = −c/b
          if (wantA) ga = pa === 0 ? mulPeriodic(g, inv, pb) : dotPeriodic(g, inv, pa);
          if (wantB) {
            const gc = mulPeriodic(g, C, 0);
            gb = pb === 0 ? mulPeriodic(gc, inv, 0) : reduceToPeriod(gc, pb);
            if (pb === 0) for (let i = 0; i < gb.length; i++) gb[i] = -gb[i];
            else for (let j = 0; j < pb; j++) gb[j] = -gb[j] * inv[j];
          }
          break;
        }
      }
      return [ga, gb];
    }
    let ga: Float32Array | undefined;
    let gb: Float32Array | undefined;
    switch (kind) {
      case 'Add':
        ga = g;
        gb = g;
        break;
      case 'Sub':
        ga = g;
        gb = floats(n);
        for (let i = 0; i < n; i++) gb[i] = -g[i];
        break;
      case 'Mul': {
        const A = expandData(a, shape);
        const B = expandData(b, shape);
        ga = floats(n);
        gb = floats(n);
        for (let i = 0; i < n; i++) {
          ga[i] = g[i] * B[i];
          gb[i] = g[i] * A[i];
        }
        break;
      }
      case 'Div': {
        const B = expandData(b, shape);
        const C = y[0].data;
        ga = floats(n);
        gb = floats(n);
        for (let i = 0; i < n; i++) {
          ga[i] = g[i] / B[i];
          gb[i] = (-g[i] * C[i]) / B[i];
        }
        break;
      }
      case 'Pow': {
        const A = expandData(a, shape);
        const B = expandData(b, shape);
        const C = y[0].data;
        ga = floats(n);
        gb = floats(n);
        for (let i = 0; i < n; i++) {
          ga[i] = B[i] === 0 ? 0 : g[i] * B[i] * Math.pow(A[i], B[i] - 1);
          gb[i] = A[i] > 0 ? g[i] * C[i] * Math.log(A[i]) : 0;
        }
        break;
      }
    }
    return [
      wantA ? unbroadcast(ga, shape, a.shape) : undefined,
      wantB ? unbroadcast(gb, shape, b.shape) : undefined,
    ];
  };
}

function binary(kind: BinaryKind): OpDef {
  return { forward: binaryForward(kind), backward: binaryBackward(kind) };
}

/** erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit): float32 needs no better. */
export function erf(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t *
                      (-0.18628806 +
                        t *
                          (0.27886807 +
                            t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - r : r - 1;
}

/**
 * A unary float op given as f(x) and f'(x) (from x and y = f(x)). Calls through these callbacks are
 * megamorphic (one loop for every op), so the ops decoders run on every element of every layer have
 * their own loops below (UNARY_LOOPS); this form is for the rest.
 */
function unary(f: (x: number) => number, derivative: (x: number, y: number) => number): OpDef {
  return {
    forward(x, ctx) {
      const a = need(x, 0, ctx);
      const X = float(a, ctx);
      const out = floats(X.length);
      for (let i = 0; i < X.length; i++) out[i] = f(X[i]);
      return [val('float32', a.shape, out)];
    },
    backward(x, y, gy) {
      const g = gy[0];
      if (!g) return [undefined];
      const X = x[0]!.data;
      const Y = y[0].data;
      const out = floats(g.length);
      for (let i = 0; i < g.length; i++) out[i] = g[i] * derivative(X[i], Y[i]);
      return [out];
    },
  };
}

type HotUnary = 'Tanh' | 'Sigmoid' | 'Sqrt' | 'Exp' | 'Neg';

/** y = f(x) for the hot unary ops, each its own monomorphic loop. */
function hotForward(kind: HotUnary, X: Float32Array, Y: Float32Array): void {
  const n = X.length;
  switch (kind) {
    case 'Tanh':
      for (let i = 0; i < n; i++) Y[i] = Math.tanh(X[i]);
      return;
    case 'Sigmoid':
      for (let i = 0; i < n; i++) Y[i] = 1 / (1 + Math.exp(-X[i]));
      return;
    case 'Sqrt':
      for (let i = 0; i < n; i++) Y[i] = Math.sqrt(X[i]);
      return;
    case 'Exp':
      for (let i = 0; i < n; i++) Y[i] = Math.exp(X[i]);
      return;
    case 'Neg':
      for (let i = 0; i < n; i++) Y[i] = -X[i];
      return;
  }
}

/** dx = g · f'(x), f' from y = f(x): 1 − y², y(1 − y), 1/(2y), y, −1. */
function hotBackward(kind: HotUnary, g: Float32Array, Y: Float32Array, out: Float32Array): void {
  const n = g.length;
  switch (kind) {
    case 'Tanh':
      for (let i = 0; i < n; i++) out[i] = g[i] * (1 - Y[i] * Y[i]);
      return;
    case 'Sigmoid':
      for (let i = 0; i < n; i++) out[i] = g[i] * Y[i] * (1 - Y[i]);
      return;
    case 'Sqrt':
      for (let i = 0; i < n; i++) out[i] = (0.5 * g[i]) / Y[i];
      return;
    case 'Exp':
      for (let i = 0; i < n; i++) out[i] = g[i] * Y[i];
      return;
    case 'Neg':
      for (let i = 0; i < n; i++) out[i] = -g[i];
      return;
  }
}

function hotUnary(kind: HotUnary): OpDef {
  return {
    forward(x, ctx) {
      const a = need(x, 0, ctx);
      const X = float(a, ctx);
      const Y = floats(X.length);
      hotForward(kind, X, Y);
      return [val('float32', a.shape, Y)];
    },
    backward(_x, y, gy) {
      const g = gy[0];
      if (!g) return [undefined];
      const out = floats(g.length);
      hotBackward(kind, g, y[0].data as Float32Array, out);
      return [out];
    },
  };
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

function gelu(approximate: boolean): OpDef {
  return unary(
    approximate
      ? (x) => 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
      : (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
    approximate
      ? (x) => {
          const u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
          const t = Math.tanh(u);
          return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x);
        }
      : (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI),
  );
}

function compare(test: (a: number, b: number) => boolean): OpDef {
  return {
    forward(x, ctx) {
      const a = need(x, 0, ctx);
      const b = need(x, 1, ctx);
      const shape = broadcastShapes([a.shape, b.shape], ctx.where);
      const A = expandData(a, shape);
      const B = expandData(b, shape);
      const out = new Uint8Array(sizeOf(shape));
      for (let i = 0; i < out.length; i++) out[i] = test(A[i], B[i]) ? 1 : 0;
      return [val('bool', shape, out)];
    },
  };
}

// ---------- MatMul / Gemm ----------

interface MatmulPlan {
  outShape: number[];
  M: number;
  K: number;
  N: number;
  /** Per output batch: offsets of a, b and c in elements. */
  aOff: Int32Array;
  bOff: Int32Array;
  cOff: Int32Array;
}

/** numpy matmul of a [..., M, K] and b [..., K, N] (rank ≥ 1; 1-D operands get a unit dimension). */
function planMatmul(aShape: number[], bShape: number[], where: string): MatmulPlan {
  const as = aShape.length === 1 ? [1, aShape[0]] : aShape;
  const bs = bShape.length === 1 ? [bShape[0], 1] : bShape;
  const M = as[as.length - 2];
  const K = as[as.length - 1];
  const N = bs[bs.length - 1];
  if (bs[bs.length - 2] !== K)
    throw new ModelError(
      'invalid-argument',
      `${where}: cannot multiply [${aShape.join(', ')}] by [${bShape.join(', ')}].`,
    );
  const aBatch = as.slice(0, -2);
  const bBatch = bs.slice(0, -2);
  if (bBatch.length === 0) {
    // the weight case: every row of a against one b; one product over all rows
    const rows = sizeOf(aBatch) * M;
    const outShape = [...aBatch, ...(aShape.length === 1 ? [] : [M]), ...(bShape.length === 1 ? [] : [N])];
    return {
      outShape,
      M: rows,
      K,
      N,
      aOff: Int32Array.of(0),
      bOff: Int32Array.of(0),
      cOff: Int32Array.of(0),
    };
  }
  const batch = broadcastShapes([aBatch, bBatch], where);
  const aOff = stridedMap(batch, broadcastStrides(batch, aBatch));
  const bOff = stridedMap(batch, broadcastStrides(batch, bBatch));
  for (let i = 0; i < aOff.length; i++) {
    aOff[i] *= M * K;
    bOff[i] *= K * N;
  }
  const cOff = new Int32Array(aOff.length);
  for (let i = 0; i < cOff.length; i++) cOff[i] = i * M * N;
  const outShape = [...batch, ...(aShape.length === 1 ? [] : [M]), ...(bShape.length === 1 ? [] : [N])];
  return { outShape, M, K, N, aOff, bOff, cOff };
}

const MatMul: OpDef = {
  forward(x, ctx) {
    const a = need(x, 0, ctx);
    const b = need(x, 1, ctx);
    const p = planMatmul(a.shape, b.shape, ctx.where);
    const A = float(a, ctx);
    const B = float(b, ctx);
    const C = floats(sizeOf(p.outShape));
    // every output block is written once: the kernel need not read C back in
    for (let i = 0; i < p.aOff.length; i++)
      matmulAcc(A, p.aOff[i], B, p.bOff[i], C, p.cOff[i], p.M, p.K, p.N, true);
    return [val('float32', p.outShape, C)];
  },
  backward(x, _y, gy, ctx, wants) {
    const g = gy[0];
    if (!g) return [undefined, undefined];
    const a = need(x, 0, ctx);
    const b = need(x, 1, ctx);
    const p = planMatmul(a.shape, b.shape, ctx.where);
    const A = a.data as Float32Array;
    const B = b.data as Float32Array;
    const gA = wants?.[0] === false ? undefined : floats(A.length);
    const gB = wants?.[1] === false ? undefined : floats(B.length);
    // a block of gA (gB) written by one product only is overwritten, not read back and added to;
    // a broadcast operand's block sums over the batch
    const onceA = new Set(p.aOff).size === p.aOff.length;
    const onceB = new Set(p.bOff).size === p.bOff.length;
    for (let i = 0; i < p.aOff.length; i++) {
      if (gA) matmulNTAcc(g, p.cOff[i], B, p.bOff[i], gA, p.aOff[i], p.M, p.N, p.K, onceA);
      if (gB) matmulTNAcc(A, p.aOff[i], g, p.cOff[i], gB, p.bOff[i], p.M, p.K, p.N, onceB);
    }
    return [gA, gB];
  },
};

function transpose2d(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = floats(x.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c];
  return out;
}

/** Y = alpha · A' · B' + beta · C, A' = transA ? Aᵀ : A, B' likewise. */
const Gemm: OpDef = {
  forward(x, ctx) {
    const a = need(x, 0, ctx);
    const b = need(x, 1, ctx);
    const { node } = ctx;
    const transA = attrInt(node, 'transA', 0);
    const transB = attrInt(node, 'transB', 0);
    const alpha = attrFloat(node, 'alpha', 1);
    const beta = attrFloat(node, 'beta', 1);
    const [M, K] = transA ? [a.shape[1], a.shape[0]] : a.shape;
    const N = transB ? b.shape[0] : b.shape[1];
    const A = transA ? transpose2d(float(a, ctx), a.shape[0], a.shape[1]) : float(a, ctx);
    const B = transB ? transpose2d(float(b, ctx), b.shape[0], b.shape[1]) : float(b, ctx);
    const Y = floats(M * N);
    matmulAcc(A, 0, B, 0, Y, 0, M, K, N);
    if (alpha !== 1) for (let i = 0; i < Y.length; i++) Y[i] *= alpha;
    const c = x[2];
    if (c) {
      const Cb = expandData(c, [M, N]);
      for (let i = 0; i < Y.length; i++) Y[i] += beta * Cb[i];
    }
    return [val('float32', [M, N], Y)];
  },
  backward(x, y, gy, ctx) {
    const g = gy[0];
    if (!g) return [undefined, undefined, undefined];
    const a = need(x, 0, ctx);
    const b = need(x, 1, ctx);
    const { node } = ctx;
    const transA = attrInt(node, 'transA', 0);
    const transB = attrInt(node, 'transB', 0);
    const alpha = attrFloat(node, 'alpha', 1);
    const beta = attrFloat(node, 'beta', 1);
    const [M, N] = y[0].shape;
    const K = transA ? a.shape[0] : a.shape[1];
    const A = transA ? transpose2d(a.data as Float32Array, a.shape[0], a.shape[1]) : (a.data as Float32Array);
    const B = transB ? transpose2d(b.data as Float32Array, b.shape[0], b.shape[1]) : (b.data as Float32Array);
    const ga = floats(M * K);
    const gb = floats(K * N);
    matmulNTAcc(g, 0, B, 0, ga, 0, M, N, K);
    matmulTNAcc(A, 0, g, 0, gb, 0, M, K, N);
    if (alpha !== 1) {
      for (let i = 0; i < ga.length; i++) ga[i] *= alpha;
      for (let i = 0; i < gb.length; i++) gb[i] *= alpha;
    }
    let gc: Float32Array | undefined;
    if (x[2]) {
      gc = unbroadcast(g, [M, N], x[2].shape);
      if (beta !== 1) gc = gc.map((v) => v * beta);
    }
    return [transA ? transpose2d(ga, M, K) : ga, transB ? transpose2d(gb, K, N) : gb, gc];
  },
};

// ---------- normalization, softmax ----------

function lastAxisSplit(shape: number[], axis: number): { rows: number; cols: number } {
  return { rows: sizeOf(shape.slice(0, axis)), cols: sizeOf(shape.slice(axis)) };
}

const LayerNormalization: OpDef = {
  forward(x, ctx) {
    const xv = need(x, 0, ctx);
    const X = float(xv, ctx);
    const axis = normAxis(attrInt(ctx.node, 'axis', -1), xv.shape.length, ctx.where);
    const eps = attrFloat(ctx.node, 'epsilon', 1e-5);
    const { rows, cols } = lastAxisSplit(xv.shape, axis);
    const S = expandData(need(x, 1, ctx), xv.shape.slice(axis)) as Float32Array;
    const Bv = x[2] ? (expandData(x[2], xv.shape.slice(axis)) as Float32Array) : undefined;
    const Y = floats(X.length);
    const mean = floats(rows);
    const rstd = floats(rows);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      let m = 0;
      for (let c = 0; c < cols; c++) m += X[o + c];
      m /= cols;
      let v = 0;
      for (let c = 0; c < cols; c++) v += (X[o + c] - m) * (X[o + c] - m);
      const rs = 1 / Math.sqrt(v / cols + eps);
      mean[r] = m;
      rstd[r] = rs;
      for (let c = 0; c < cols; c++) Y[o + c] = (X[o + c] - m) * rs * S[c] + (Bv ? Bv[c] : 0);
    }
    const statShape = xv.shape.map((d, i) => (i < axis ? d : 1));
    return [val('float32', xv.shape, Y), val('float32', statShape, mean), val('float32', statShape, rstd)];
  },
  backward(x, y, gy, ctx) {
    const g = gy[0];
    if (!g) return [undefined, undefined, undefined];
    const xv = need(x, 0, ctx);
    const X = xv.data as Float32Array;
    const axis = normAxis(attrInt(ctx.node, 'axis', -1), xv.shape.length, ctx.where);
    const { rows, cols } = lastAxisSplit(xv.shape, axis);
    const normShape = xv.shape.slice(axis);
    const S = expandData(x[1]!, normShape) as Float32Array;
    const mean = y[1].data;
    const rstd = y[2].data;
    const gx = floats(X.length);
    const gs = floats(cols);
    const gbias = floats(cols);
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      const m = mean[r];
      const rs = rstd[r];
      let sumD = 0;
      let sumDX = 0;
      for (let c = 0; c < cols; c++) {
        const xhat = (X[o + c] - m) * rs;
        const d = g[o + c] * S[c];
        gs[c] += g[o + c] * xhat;
        gbias[c] += g[o + c];
        sumD += d;
        sumDX += d * xhat;
      }
      sumD /= cols;
      sumDX /= cols;
      for (let c = 0; c < cols; c++) {
        const xhat = (X[o + c] - m) * rs;
        gx[o + c] = rs * (g[o + c] * S[c] - sumD - xhat * sumDX);
      }
    }
    return [
      gx,
      unbroadcast(gs, normShape, x[1]!.shape),
      x[2] ? unbroadcast(gbias, normShape, x[2].shape) : undefined,
    ];
  },
};

/** Softmax or LogSoftmax along one axis (opset ≥ 13), or over the flattened trailing axes (< 13). */
function softmaxOp(log: boolean): OpDef {
  const layout = (shape: number[], ctx: NodeContext) => {
    const legacy = ctx.opset < 13;
    const axis = normAxis(attrInt(ctx.node, 'axis', legacy ? 1 : -1), shape.length, ctx.where);
    if (legacy) return { outer: sizeOf(shape.slice(0, axis)), len: sizeOf(shape.slice(axis)), inner: 1 };
    return { outer: sizeOf(shape.slice(0, axis)), len: shape[axis], inner: sizeOf(shape.slice(axis + 1)) };
  };
  return {
    forward(x, ctx) {
      const xv = need(x, 0, ctx);
      const X = float(xv, ctx);
      const { outer, len, inner } = layout(xv.shape, ctx);
      const Y = floats(X.length);
      for (let o = 0; o < outer; o++)
        for (let i = 0; i < inner; i++) {
          const base = o * len * inner + i;
          let max = -Infinity;
          for (let k = 0; k < len; k++) max = Math.max(max, X[base + k * inner]);
          let z = 0;
          for (let k = 0; k < len; k++) z += Y[base + k * inner] = Math.exp(X[base + k * inner] - max);
          if (log) {
            const lz = Math.log(z) + max;
            for (let k = 0; k < len; k++) Y[base + k * inner] = X[base + k * inner] - lz;
          } else {
            const inv = 1 / z;
            for (let k = 0; k < len; k++) Y[base + k * inner] *= inv;
          }
        }
      return [val('float32', xv.shape, Y)];
    },
    backward(_x, y, gy, ctx) {
      const g = gy[0];
      if (!g) return [undefined];
      const Y = y[0].data;
      const { outer, len, inner } = layout(y[0].shape, ctx);
      const gx = floats(g.length);
      for (let o = 0; o < outer; o++)
        for (let i = 0; i < inner; i++) {
          const base = o * len * inner + i;
          let s = 0;
          if (log) {
            for (let k = 0; k < len; k++) s += g[base + k * inner];
            for (let k = 0; k < len; k++)
              gx[base + k * inner] = g[base + k * inner] - Math.exp(Y[base + k * inner]) * s;
          } else {
            for (let k = 0; k < len; k++) s += g[base + k * inner] * Y[base + k * inner];
            for (let k = 0; k < len; k++)
              gx[base + k * inner] = Y[base + k * inner] * (g[base + k * inner] - s);
          }
        }
      return [gx];
    },
  };
}

// ---------- reductions ----------

function reduceAxes(x: MaybeValues, ctx: NodeContext, attrUntil: number): number[] | undefined {
  return ctx.opset < attrUntil ? attrInts(ctx.node, 'axes') : ints(x[1]);
}

function reduce(mean: boolean, attrUntil: number): OpDef {
  const plan = (x: MaybeValues, ctx: NodeContext) => {
    const xv = need(x, 0, ctx);
    const rank = xv.shape.length;
    const keep = attrInt(ctx.node, 'keepdims', 1) !== 0;
    let axes = reduceAxes(x, ctx, attrUntil);
    if (!axes || axes.length === 0)
      axes = attrInt(ctx.node, 'noop_with_empty_axes', 0) ? [] : xv.shape.map((_, i) => i);
    const set = new Set(axes.map((a) => normAxis(a, rank, ctx.where)));
    const keptShape = xv.shape.map((d, i) => (set.has(i) ? 1 : d));
    const outShape = keep ? keptShape : xv.shape.filter((_, i) => !set.has(i));
    // for every input element, the output element it adds to
    const outStrides = stridesOf(keptShape).map((s, i) => (set.has(i) ? 0 : s));
    const map = stridedMap(xv.shape, outStrides);
    const count = xv.data.length / Math.max(1, sizeOf(keptShape));
    return { xv, outShape, map, count };
  };
  return {
    forward(x, ctx) {
      const { xv, outShape, map, count } = plan(x, ctx);
      const out = alloc(xv.dtype, sizeOf(outShape));
      const X = xv.data;
      for (let i = 0; i < X.length; i++) out[map[i]] += X[i];
      if (mean) for (let i = 0; i < out.length; i++) out[i] /= count;
      return [val(xv.dtype, outShape, out)];
    },
    backward(x, _y, gy, ctx) {
      const g = gy[0];
      if (!g) return [undefined];
      const { xv, map, count } = plan(x, ctx);
      const gx = floats(xv.data.length);
      const scale = mean ? 1 / count : 1;
      for (let i = 0; i < gx.length; i++) gx[i] = g[map[i]] * scale;
      return [gx];
    },
  };
}

// ---------- movement ----------

type MapPlan = { shape: number[]; map: Int32Array };

/**
 * An op that reads its input through an index map (Transpose, Slice, Expand): gather forward, scatter
 * back. The map depends only on the input's shape and the small integer inputs (starts, ends, a target
 * shape), so each node keeps the last one it built: a training step's forward and backward, and the
 * next step, reuse it instead of rebuilding a map as large as the tensor.
 */
function mapped(plan: (x: MaybeValues, ctx: NodeContext) => MapPlan): OpDef {
  const cache = new WeakMap<NodeContext, { key: string; plan: MapPlan }>();
  const planOf = (x: MaybeValues, ctx: NodeContext): MapPlan => {
    // the data's shape, and the values of the small integer inputs after it
    const key = x
      .map((v, i) =>
        !v ? '' : i === 0 ? v.shape.join(',') : `${v.shape.join(',')}:${Array.from(v.data).join(',')}`,
      )
      .join('|');
    const hit = cache.get(ctx);
    if (hit && hit.key === key) return hit.plan;
    const p = plan(x, ctx);
    cache.set(ctx, { key, plan: p });
    return p;
  };
  return {
    forward(x, ctx) {
      const v = need(x, 0, ctx);
      const { shape, map } = planOf(x, ctx);
      return [val(v.dtype, [...shape], gatherMap(v.data, map, v.dtype))];
    },
    backward(x, _y, gy, ctx) {
      const g = gy[0];
      if (!g) return [undefined];
      const { map } = planOf(x, ctx);
      return [scatterMap(g, map, x[0]!.data.length)];
    },
  };
}

const Transpose = mapped((x, ctx) => {
  const v = need(x, 0, ctx);
  const rank = v.shape.length;
  const perm = attrInts(ctx.node, 'perm') ?? v.shape.map((_, i) => rank - 1 - i);
  const own = stridesOf(v.shape);
  return {
    shape: perm.map((p) => v.shape[p]),
    map: stridedMap(
      perm.map((p) => v.shape[p]),
      perm.map((p) => own[p]),
    ),
  };
});

const Expand = mapped((x, ctx) => {
  const v = need(x, 0, ctx);
  const shape = broadcastShapes([v.shape, ints(need(x, 1, ctx))!], ctx.where);
  return { shape, map: stridedMap(shape, broadcastStrides(shape, v.shape)) };
});

const Slice = mapped((x, ctx) => {
  const v = need(x, 0, ctx);
  const rank = v.shape.length;
  const starts = ints(need(x, 1, ctx))!;
  const ends = ints(need(x, 2, ctx))!;
  const axes = ints(x[3]) ?? starts.map((_, i) => i);
  const steps = ints(x[4]) ?? starts.map(() => 1);
  const begin = v.shape.map(() => 0);
  const step = v.shape.map(() => 1);
  const shape = [...v.shape];
  axes.forEach((a0, i) => {
    const a = normAxis(a0, rank, ctx.where);
    const dim = v.shape[a];
    const s = steps[i];
    if (s === 0) throw new ModelError('invalid-argument', `${ctx.where}: a Slice step of 0.`);
    let st = starts[i] < 0 ? starts[i] + dim : starts[i];
    let en = ends[i] < 0 ? ends[i] + dim : ends[i];
    if (s > 0) {
      st = Math.min(Math.max(st, 0), dim);
      en = Math.min(Math.max(en, 0), dim);
      shape[a] = Math.max(0, Math.ceil((en - st) / s));
    } else {
      st = Math.min(Math.max(st, -1), dim - 1);
      en = Math.min(Math.max(en, -1), dim - 1);
      shape[a] = Math.max(0, Math.ceil((en - st) / s));
    }
    begin[a] = st;
    step[a] = s;
  });
  const own = stridesOf(v.shape);
  let offset = 0;
  for (let d = 0; d < rank; d++) offset += begin[d] * own[d];
  return {
    shape,
    map: stridedMap(
      shape,
      own.map((s, d) => s * step[d]),
      offset,
    ),
  };
});

/** Ops that only change the shape: the data (and the gradient) pass through unchanged. */
function reshaping(shapeOf: (x: MaybeValues, ctx: NodeContext) => number[]): OpDef {
  return {
    forward(x, ctx) {
      const v = need(x, 0, ctx);
      const shape = shapeOf(x, ctx);
      if (sizeOf(shape) !== v.data.length)
        throw new ModelError(
          'invalid-argument',
          `${ctx.where}: cannot reshape [${v.shape.join(', ')}] to [${shape.join(', ')}].`,
        );
      return [val(v.dtype, shape, v.data)];
    },
    backward(_x, _y, gy) {
      return [gy[0]];
    },
  };
}

const Reshape = reshaping((x, ctx) => {
  const v = need(x, 0, ctx);
  const target = ints(need(x, 1, ctx))!;
  const allowZero = attrInt(ctx.node, 'allowzero', 0) !== 0;
  const shape = target.map((d, i) => (d === 0 && !allowZero ? v.shape[i] : d));
  const known = shape.reduce((p, d) => (d === -1 ? p : p * d), 1);
  return shape.map((d) => (d === -1 ? v.data.length / known : d));
});

const Flatten = reshaping((x, ctx) => {
  const v = need(x, 0, ctx);
  const axis = normAxis(attrInt(ctx.node, 'axis', 1), v.shape.length + 1, ctx.where);
  return [sizeOf(v.shape.slice(0, axis)), sizeOf(v.shape.slice(axis))];
});

const Unsqueeze = reshaping((x, ctx) => {
  const v = need(x, 0, ctx);
  const axes = (ctx.opset < 13 ? attrInts(ctx.node, 'axes') : ints(x[1])) ?? [];
  const rank = v.shape.length + axes.length;
  const set = new Set(axes.map((a) => normAxis(a, rank, ctx.where)));
  const shape: number[] = [];
  let j = 0;
  for (let d = 0; d < rank; d++) shape.push(set.has(d) ? 1 : v.shape[j++]);
  return shape;
});

const Squeeze = reshaping((x, ctx) => {
  const v = need(x, 0, ctx);
  const axes = ctx.opset < 13 ? attrInts(ctx.node, 'axes') : ints(x[1]);
  if (!axes) return v.shape.filter((d) => d !== 1);
  const set = new Set(axes.map((a) => normAxis(a, v.shape.length, ctx.where)));
  return v.shape.filter((_, i) => !set.has(i));
});

const Identity: OpDef = {
  forward: (x, ctx) => [need(x, 0, ctx)],
  backward: (_x, _y, gy) => [gy[0]],
};

/**
 * dst[dstAt + o·dstStride + i] = src[srcAt + o·srcStride + i] for o < outer, i < block: the copies of
 * Concat and Split. Small blocks (RoPE's pairs) copy element by element: a subarray per block costs more.
 */
function copyBlocks(
  src: Data,
  srcAt: number,
  srcStride: number,
  dst: Data,
  dstAt: number,
  dstStride: number,
  outer: number,
  block: number,
): void {
  if (block >= 64) {
    for (let o = 0; o < outer; o++)
      dst.set(src.subarray(srcAt + o * srcStride, srcAt + o * srcStride + block), dstAt + o * dstStride);
    return;
  }
  for (let o = 0; o < outer; o++) {
    const s0 = srcAt + o * srcStride;
    const d0 = dstAt + o * dstStride;
    for (let i = 0; i < block; i++) dst[d0 + i] = src[s0 + i];
  }
}

/** outer × (size along axis) × inner layout of a shape around an axis. */
function around(shape: number[], axis: number): { outer: number; inner: number } {
  return { outer: sizeOf(shape.slice(0, axis)), inner: sizeOf(shape.slice(axis + 1)) };
}

const Concat: OpDef = {
  forward(x, ctx) {
    const parts = x.filter((v): v is Value => !!v && v.data.length >= 0);
    const first = parts[0];
    const axis = normAxis(attrInt(ctx.node, 'axis', 0), first.shape.length, ctx.where);
    const shape = [...first.shape];
    shape[axis] = parts.reduce((s, p) => s + p.shape[axis], 0);
    const { outer, inner } = around(shape, axis);
    const out = alloc(first.dtype, sizeOf(shape));
    const row = shape[axis] * inner;
    let at = 0;
    for (const p of parts) {
      const block = p.shape[axis] * inner;
      copyBlocks(p.data, 0, block, out, at, row, outer, block);
      at += block;
    }
    return [val(first.dtype, shape, out)];
  },
  backward(x, y, gy, ctx) {
    const g = gy[0];
    if (!g) return x.map(() => undefined);
    const shape = y[0].shape;
    const axis = normAxis(attrInt(ctx.node, 'axis', 0), shape.length, ctx.where);
    const { outer, inner } = around(shape, axis);
    const row = shape[axis] * inner;
    let at = 0;
    return x.map((p) => {
      if (!p) return undefined;
      const block = p.shape[axis] * inner;
      const gp = floats(p.data.length);
      copyBlocks(g, at, row, gp, 0, block, outer, block);
      at += block;
      return p.dtype === 'float32' ? gp : undefined;
    });
  },
};

function splitSizes(x: MaybeValues, ctx: NodeContext, v: Value, axis: number): number[] {
  const given = ctx.opset < 13 ? attrInts(ctx.node, 'split') : ints(x[1]);
  if (given) return given;
  const parts = attrInt(ctx.node, 'num_outputs', ctx.node.output.length);
  const each = Math.ceil(v.shape[axis] / parts);
  return Array.from({ length: parts }, (_, i) => Math.min(each, v.shape[axis] - i * each));
}

const Split: OpDef = {
  forward(x, ctx) {
    const v = need(x, 0, ctx);
    const axis = normAxis(attrInt(ctx.node, 'axis', 0), v.shape.length, ctx.where);
    const sizes = splitSizes(x, ctx, v, axis);
    const { outer, inner } = around(v.shape, axis);
    const row = v.shape[axis] * inner;
    let at = 0;
    return sizes.map((s) => {
      const shape = [...v.shape];
      shape[axis] = s;
      const block = s * inner;
      const out = alloc(v.dtype, outer * block);
      copyBlocks(v.data, at, row, out, 0, block, outer, block);
      at += block;
      return val(v.dtype, shape, out);
    });
  },
  backward(x, y, gy, ctx) {
    const v = need(x, 0, ctx);
    if (gy.every((g) => !g)) return [undefined];
    const axis = normAxis(attrInt(ctx.node, 'axis', 0), v.shape.length, ctx.where);
    const { outer, inner } = around(v.shape, axis);
    const row = v.shape[axis] * inner;
    const gx = floats(v.data.length);
    let at = 0;
    y.forEach((part, i) => {
      const block = part.shape[axis] * inner;
      const g = gy[i];
      if (g) copyBlocks(g, 0, block, gx, at, row, outer, block);
      at += block;
    });
    return [gx];
  },
};

const Gather: OpDef = {
  forward(x, ctx) {
    const data = need(x, 0, ctx);
    const idx = need(x, 1, ctx);
    const axis = normAxis(attrInt(ctx.node, 'axis', 0), data.shape.length, ctx.where);
    const dim = data.shape[axis];
    const { outer, inner } = around(data.shape, axis);
    const shape = [...data.shape.slice(0, axis), ...idx.shape, ...data.shape.slice(axis + 1)];
    const n = idx.data.length;
    const out = alloc(data.dtype, sizeOf(shape));
    for (let o = 0; o < outer; o++)
      for (let j = 0; j < n; j++) {
        let k = idx.data[j];
        if (k < 0) k += dim;
        if (!(k >= 0 && k < dim))
          throw new ModelError(
            'invalid-argument',
            `${ctx.where}: index ${idx.data[j]} is out of range 0…${dim - 1}.`,
          );
        const src = (o * dim + k) * inner;
        out.set(data.data.subarray(src, src + inner), (o * n + j) * inner);
      }
    return [val(data.dtype, shape, out)];
  },
  backward(x, _y, gy, ctx) {
    const g = gy[0];
    const data = need(x, 0, ctx);
    if (!g || data.dtype !== 'float32') return [undefined, undefined];
    const idx = need(x, 1, ctx);
    const axis = normAxis(attrInt(ctx.node, 'axis', 0), data.shape.length, ctx.where);
    const dim = data.shape[axis];
    const { outer, inner } = around(data.shape, axis);
    const n = idx.data.length;
    const gd = floats(data.data.length);
    for (let o = 0; o < outer; o++)
      for (let j = 0; j < n; j++) {
        let k = idx.data[j];
        if (k < 0) k += dim;
        const dst = (o * dim + k) * inner;
        const src = (o * n + j) * inner;
        for (let i = 0; i < inner; i++) gd[dst + i] += g[src + i];
      }
    return [gd, undefined];
  },
};

/**
 * Where's common shapes without materializing its broadcasts: each operand the output's shape (period
 * 0), a scalar (1) or the output's trailing dimensions (the causal mask [1, 1, L, L] against scores
 * [B, H, L, L]). -1 when some operand broadcasts otherwise.
 */
function wherePeriods(
  c: Value,
  a: Value,
  b: Value,
  shape: number[],
): { C: Data; pc: number; pa: number; pb: number } | undefined {
  const pa = period(a, shape);
  const pb = period(b, shape);
  if (pa < 0 || pb < 0) return undefined;
  // a condition broadcast otherwise (the padding mask [B, 1, L, L] over [B, H, L, L]) is expanded:
  // bytes, a quarter of the scores' size
  const pc = period(c, shape);
  return pc >= 0 ? { C: c.data, pc, pa, pb } : { C: expandData(c, shape), pc: 0, pa, pb };
}

const Where: OpDef = {
  forward(x, ctx) {
    const c = need(x, 0, ctx);
    const a = need(x, 1, ctx);
    const b = need(x, 2, ctx);
    const shape = broadcastShapes([c.shape, a.shape, b.shape], ctx.where);
    const out = alloc(a.dtype, sizeOf(shape));
    const ps = wherePeriods(c, a, b, shape);
    if (ps) {
      const { C, pc, pa, pb } = ps;
      const A = a.data;
      const B = b.data;
      const n = out.length;
      if (pa <= 1 && pb <= 1) {
        // a mask choosing between a scalar and a full tensor (or two full ones)
        const a0 = A[0];
        const b0 = B[0];
        const block = pc || n;
        for (let r = 0; r < n; r += block)
          for (let j = 0; j < block; j++) {
            const i = r + j;
            out[i] = C[pc ? j : i] ? (pa ? a0 : A[i]) : pb ? b0 : B[i];
          }
      } else
        for (let i = 0; i < n; i++) out[i] = C[pc ? i % pc : i] ? A[pa ? i % pa : i] : B[pb ? i % pb : i];
      return [val(a.dtype, shape, out)];
    }
    const C = expandData(c, shape);
    const A = expandData(a, shape);
    const B = expandData(b, shape);
    for (let i = 0; i < out.length; i++) out[i] = C[i] ? A[i] : B[i];
    return [val(a.dtype, shape, out)];
  },
  backward(x, y, gy, ctx, wants) {
    const g = gy[0];
    const c = need(x, 0, ctx);
    const a = need(x, 1, ctx);
    const b = need(x, 2, ctx);
    if (!g || a.dtype !== 'float32') return [undefined, undefined, undefined];
    const shape = y[0].shape;
    const wantA = wants?.[1] ?? true;
    const wantB = wants?.[2] ?? true;
    const ps = wherePeriods(c, a, b, shape);
    if (ps) {
      // the gradient goes through where the condition picked the operand
      const { C, pc } = ps;
      const n = g.length;
      const block = pc || n;
      const pick = (which: 1 | 0, p: number) => {
        const full = floats(n);
        for (let r = 0; r < n; r += block)
          for (let j = 0; j < block; j++) if ((C[pc ? j : r + j] ? 1 : 0) === which) full[r + j] = g[r + j];
        return p === 0 ? full : reduceToPeriod(full, p);
      };
      return [undefined, wantA ? pick(1, ps.pa) : undefined, wantB ? pick(0, ps.pb) : undefined];
    }
    const C = expandData(c, shape);
    const ga = floats(g.length);
    const gb = floats(g.length);
    for (let i = 0; i < g.length; i++)
      if (C[i]) ga[i] = g[i];
      else gb[i] = g[i];
    return [undefined, unbroadcast(ga, shape, a.shape), unbroadcast(gb, shape, b.shape)];
  },
};

/** Keeps the upper (or lower) triangle of the last two axes, k diagonals off; the gradient is masked alike. */
const Trilu: OpDef = {
  forward(x, ctx) {
    const v = need(x, 0, ctx);
    const out = alloc(v.dtype, v.data.length);
    trilu(v.data, out, v.shape, x[1] ? Number(x[1].data[0]) : 0, attrInt(ctx.node, 'upper', 1) !== 0);
    return [val(v.dtype, v.shape, out)];
  },
  backward(x, y, gy, ctx) {
    const g = gy[0];
    if (!g) return [undefined, undefined];
    const out = floats(g.length);
    trilu(g, out, y[0].shape, x[1] ? Number(x[1].data[0]) : 0, attrInt(ctx.node, 'upper', 1) !== 0);
    return [out, undefined];
  },
};

function trilu(src: Data, out: Data, shape: number[], k: number, upper: boolean): void {
  const rows = shape[shape.length - 2];
  const cols = shape[shape.length - 1];
  const mats = src.length / (rows * cols);
  for (let m = 0; m < mats; m++)
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        const i = (m * rows + r) * cols + c;
        const keep = upper ? c - r >= k : c - r <= k;
        out[i] = keep ? src[i] : 0;
      }
}

// ---------- sources and casts ----------

const FLOAT_CODES = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.DOUBLE, DataType.BFLOAT16]);

export function dtypeOfCode(code: number): DType {
  if (FLOAT_CODES.has(code)) return 'float32';
  if (code === DataType.BOOL) return 'bool';
  return 'int64';
}

const Cast: OpDef = {
  forward(x, ctx) {
    const v = need(x, 0, ctx);
    const to = dtypeOfCode(attrInt(ctx.node, 'to', DataType.FLOAT));
    const out = alloc(to, v.data.length);
    if (to === 'bool') for (let i = 0; i < out.length; i++) out[i] = v.data[i] ? 1 : 0;
    else if (to === 'int64' && v.dtype === 'float32')
      for (let i = 0; i < out.length; i++) out[i] = Math.trunc(v.data[i]);
    else out.set(v.data);
    return [val(to, v.shape, out)];
  },
  backward(x, y, gy) {
    return [x[0]!.dtype === 'float32' && y[0].dtype === 'float32' ? gy[0] : undefined];
  },
};

const Shape: OpDef = {
  forward(x, ctx) {
    const v = need(x, 0, ctx);
    const r = v.shape.length;
    const clamp = (a: number) => Math.min(Math.max(a < 0 ? a + r : a, 0), r);
    const start = clamp(attrInt(ctx.node, 'start', 0));
    const end = clamp(attrInt(ctx.node, 'end', r));
    const dims = v.shape.slice(start, end);
    return [val('int64', [dims.length], Float64Array.from(dims))];
  },
};

function attrValue(ctx: NodeContext): Value {
  const { node } = ctx;
  const t = attribute(node, 'value')?.t;
  if (t) return ctx.readTensor(t);
  const f = attribute(node, 'value_float')?.f;
  if (f !== undefined) return val('float32', [], Float32Array.of(f));
  const fs = attribute(node, 'value_floats')?.floats;
  if (fs) return val('float32', [fs.length], Float32Array.from(fs));
  const i = attribute(node, 'value_int')?.i;
  if (i !== undefined) return val('int64', [], Float64Array.of(Number(i)));
  const is = attribute(node, 'value_ints')?.ints;
  if (is) return val('int64', [is.length], Float64Array.from(is.map(Number)));
  throw new ModelError('unsupported', `${ctx.where}: a Constant without a tensor or number value.`);
}

const Constant: OpDef = { forward: (_x, ctx) => [attrValue(ctx)] };

const ConstantOfShape: OpDef = {
  forward(x, ctx) {
    const shape = ints(need(x, 0, ctx))!;
    const t = attribute(ctx.node, 'value')?.t;
    const fill = t ? ctx.readTensor(t) : val('float32', [1], Float32Array.of(0));
    const out = alloc(fill.dtype, sizeOf(shape));
    out.fill(fill.data[0]);
    return [val(fill.dtype, shape, out)];
  },
};

const Range: OpDef = {
  forward(x, ctx) {
    const start = need(x, 0, ctx);
    const s = start.data[0];
    const limit = need(x, 1, ctx).data[0];
    const delta = need(x, 2, ctx).data[0];
    const n = Math.max(Math.ceil((limit - s) / delta), 0);
    const out = alloc(start.dtype, n);
    for (let i = 0; i < n; i++) out[i] = s + i * delta;
    return [val(start.dtype, [n], out)];
  },
};

function logical(f: (a: boolean, b: boolean) => boolean): OpDef {
  return compare((a, b) => f(a !== 0, b !== 0));
}

const Not: OpDef = {
  forward(x, ctx) {
    const v = need(x, 0, ctx);
    const out = new Uint8Array(v.data.length);
    for (let i = 0; i < out.length; i++) out[i] = v.data[i] ? 0 : 1;
    return [val('bool', v.shape, out)];
  },
};

/** Max or Min of two tensors (broadcast); the gradient goes to the operand chosen (the first on ties). */
function extremum(max: boolean): OpDef {
  const pick = (a: number, b: number) => (max ? a >= b : a <= b);
  return {
    forward(x, ctx) {
      const inputs = x.filter((v): v is Value => !!v);
      if (inputs.length !== 2)
        throw new ModelError(
          'unsupported',
          `${ctx.where}: the training engine takes Max/Min of exactly two inputs.`,
        );
      const [a, b] = inputs;
      const shape = broadcastShapes([a.shape, b.shape], ctx.where);
      const A = expandData(a, shape);
      const B = expandData(b, shape);
      const out = alloc(a.dtype, sizeOf(shape));
      for (let i = 0; i < out.length; i++) out[i] = pick(A[i], B[i]) ? A[i] : B[i];
      return [val(a.dtype, shape, out)];
    },
    backward(x, y, gy, ctx) {
      const g = gy[0];
      const a = need(x, 0, ctx);
      const b = need(x, 1, ctx);
      if (!g || a.dtype !== 'float32') return [undefined, undefined];
      const shape = y[0].shape;
      const A = expandData(a, shape);
      const B = expandData(b, shape);
      const ga = floats(g.length);
      const gb = floats(g.length);
      for (let i = 0; i < g.length; i++)
        if (pick(A[i], B[i])) ga[i] = g[i];
        else gb[i] = g[i];
      return [unbroadcast(ga, shape, a.shape), unbroadcast(gb, shape, b.shape)];
    },
  };
}

/** Running sum along an axis (position ids from an attention mask); exclusive / reverse per attributes. */
const CumSum: OpDef = {
  forward(x, ctx) {
    const v = need(x, 0, ctx);
    const axis = normAxis(Number(need(x, 1, ctx).data[0]), v.shape.length, ctx.where);
    const out = alloc(v.dtype, v.data.length);
    cumsum(
      v.data,
      out,
      v.shape,
      axis,
      attrInt(ctx.node, 'exclusive', 0) !== 0,
      attrInt(ctx.node, 'reverse', 0) !== 0,
    );
    return [val(v.dtype, v.shape, out)];
  },
  backward(x, y, gy, ctx) {
    const g = gy[0];
    if (!g) return [undefined, undefined];
    // the adjoint of a running sum is the running sum the other way
    const axis = normAxis(Number(need(x, 1, ctx).data[0]), y[0].shape.length, ctx.where);
    const out = floats(g.length);
    cumsum(
      g,
      out,
      y[0].shape,
      axis,
      attrInt(ctx.node, 'exclusive', 0) !== 0,
      attrInt(ctx.node, 'reverse', 0) === 0,
    );
    return [out, undefined];
  },
};

function cumsum(
  src: Data,
  out: Data,
  shape: number[],
  axis: number,
  exclusive: boolean,
  reverse: boolean,
): void {
  const { outer, inner } = around(shape, axis);
  const len = shape[axis];
  for (let o = 0; o < outer; o++)
    for (let i = 0; i < inner; i++) {
      let acc = 0;
      for (let s = 0; s < len; s++) {
        const k = reverse ? len - 1 - s : s;
        const at = (o * len + k) * inner + i;
        if (exclusive) {
          out[at] = acc;
          acc += src[at];
        } else {
          acc += src[at];
          out[at] = acc;
        }
      }
    }
}

// ---------- the table ----------

export const OPS: Record<string, OpDef> = {
  Add: binary('Add'),
  Sub: binary('Sub'),
  Mul: binary('Mul'),
  Div: binary('Div'),
  Pow: binary('Pow'),
  Neg: hotUnary('Neg'),
  Sqrt: hotUnary('Sqrt'),
  Reciprocal: unary(
    (x) => 1 / x,
    (_x, y) => -y * y,
  ),
  Exp: hotUnary('Exp'),
  Log: unary(Math.log, (x) => 1 / x),
  Tanh: hotUnary('Tanh'),
  Sigmoid: hotUnary('Sigmoid'),
  Relu: unary(
    (x) => (x > 0 ? x : 0),
    (x) => (x > 0 ? 1 : 0),
  ),
  Abs: unary(Math.abs, (x) => (x > 0 ? 1 : x < 0 ? -1 : 0)),
  Cos: unary(Math.cos, (x) => -Math.sin(x)),
  Sin: unary(Math.sin, (x) => Math.cos(x)),
  Max: extremum(true),
  Min: extremum(false),
  CumSum,
  Erf: unary(erf, (x) => (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x)),
  Gelu: gelu(false),
  MatMul,
  Gemm,
  LayerNormalization,
  Softmax: softmaxOp(false),
  LogSoftmax: softmaxOp(true),
  ReduceMean: reduce(true, 18),
  ReduceSum: reduce(false, 13),
  Transpose,
  Expand,
  Slice,
  Reshape,
  Flatten,
  Unsqueeze,
  Squeeze,
  Identity,
  Concat,
  Split,
  Gather,
  Where,
  Trilu,
  Cast,
  Shape,
  Constant,
  ConstantOfShape,
  Range,
  Equal: compare((a, b) => a === b),
  Less: compare((a, b) => a < b),
  Greater: compare((a, b) => a > b),
  LessOrEqual: compare((a, b) => a <= b),
  GreaterOrEqual: compare((a, b) => a >= b),
  And: logical((a, b) => a && b),
  Or: logical((a, b) => a || b),
  Xor: logical((a, b) => a !== b),
  Not,
};

/** Gelu's tanh form is an attribute of the same op: the table entry is chosen per node. */
export function opFor(node: NodeProto): OpDef | undefined {
  if (node.domain && node.domain !== 'ai.onnx') return undefined;
  if (node.op_type === 'Gelu' && attrString(node, 'approximate', 'none') === 'tanh') return GELU_TANH;
  return Object.hasOwn(OPS, node.op_type) ? OPS[node.op_type] : undefined;
}

const GELU_TANH = gelu(true);
