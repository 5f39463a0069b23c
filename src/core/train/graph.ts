/**
 * An interpreter of a model's own ONNX graph that also runs it backwards: forward evaluates the nodes
 * in order with the op table (ops.ts) and records what each differentiable node saw; backward walks
 * that record in reverse, handing each node the gradients of its outputs and accumulating those of its
 * inputs, down to the trainable initializers. Any decoder built from the table's ops trains, not a
 * hand-coded architecture.
 *
 * Why own kernels and not an array library (measured on the 2-core build machine, Node 20, busy):
 * jax-js 0.1.25's wasm backend ran a jit'd [1024×192]·[192×768] product with its weight gradient at
 * about 8 GFLOP/s against 0.27 GFLOP/s for a plain JavaScript loop, and the issue measured it at
 * ~400 tokens/s on the demo model; but its gradient of gather fails inside jit (every embedding lookup
 * needs it), every array is reference-counted by hand (an interpreter hands one value to many
 * consumers), and Node lacks the `navigator` it reads. TensorFlow.js's wasm backend lacks gather's
 * gradient and ran at ~50 tokens/s. So the engine owns its ops: each forward with its backward,
 * checked against finite differences (tests/train/ops.test.ts), with the products in a WASM SIMD
 * kernel (kernels.ts, matmul.wat) that a WebGPU backend can replace without touching the interpreter.
 * Measured (same machine, load average ~14 on its 2 cores, so read as lower bounds): demo model,
 * forward + backward + loss, batch 8 × 128: 16 tokens/s with the products in plain JavaScript,
 * 80–160 tokens/s with the first wasm kernel. Since then (issue 11's speed work, profiled with
 * tools/bench/train-profile.ts): a register-tiled kernel for all three products, float arrays
 * recycled between steps (tensor.ts `floats`, `release`), GELU and the attention softmax fused
 * (fuse.ts), masks and index maps without per-step materialization, a KD loss with half the exps —
 * a distillation step went from 0.43× to 0.74× PyTorch CPU's tokens per CPU-second (median of three
 * rounds, 0.50–0.79; one thread each, back to back; `npm run bench -- --only training`), with a matmul
 * that packs b in column panels. The products are ~45 % of a step and run near
 * what 128-bit wasm SIMD without FMA allows; PyTorch's AVX2/FMA GEMM is what the rest of the gap is.
 *
 * On a GPU (WebGPU backend: kernels.ts `useGemmDevice`, webgpu-kernels.ts, webgpu-bridge.ts) the
 * products — MatMul/Gemm forward and both backward products, ≥ 2^16 multiply-adds, ~45 % of a step
 * and the only part whose work grows with d² — run as a WGSL tiled GEMM; every other op stays on the
 * CPU. Why only those: the interpreter is synchronous, WebGPU reads back only through promises, so
 * the device sits in a worker of its own and the engine blocks on shared memory per product (a round
 * trip: operands in, product out; the weights stay resident for the whole step). Moving the cheap
 * elementwise ops too would add a round trip each for little work; keeping activations resident
 * across ops would need the whole op table on the GPU. The page picks WebGPU when a hardware adapter
 * exists ('auto'), wasm otherwise; SwiftShader (software) only when asked. Measured in Chromium's
 * training worker on SwiftShader (2-core machine, load ~30, back to back; tests/e2e/train-webgpu):
 * the demo model, 10 steps of 2 × 32 with the teacher, 12–15 s on wasm, 75–120 s on WebGPU (6–8× slower;
 * 25× with the first shader, one output per thread), losses equal to 4 decimals, 1,150 products
 * sent. Only correctness is measured here: no hardware GPU was at hand to time.
 *
 * Quantization-aware training hooks in at `forward`'s `weightTransform`: the forward pass reads
 * transform(w) (fake-quantized weights) and the gradient flows to w unchanged (straight-through).
 */
import { ModelError } from '../errors.ts';
import { readTensor, type OnnxModel } from '../onnx/model.ts';
import type { NodeProto, TensorProto } from '../onnx/proto.ts';
import { planFusions } from './fuse.ts';
import { dtypeOfCode, opFor, type NodeContext, type OpDef } from './ops.ts';
import { recycle, sizeOf, type Value } from './tensor.ts';

interface CompiledNode {
  node: NodeProto;
  op: OpDef;
  ctx: NodeContext;
  /** Some input depends on a trainable weight and the op has a gradient: record it, run it backwards. */
  differentiable: boolean;
  /** Which inputs need a gradient. */
  wants: boolean[];
}

interface TapeEntry {
  index: number;
  inputs: (Value | undefined)[];
  outputs: Value[];
}

export interface ForwardResult {
  values: Map<string, Value>;
  tape: TapeEntry[];
}

export interface ForwardOptions {
  /** Record what backward needs (default true). */
  record?: boolean;
  /** QAT: the forward pass reads weightTransform(name, w) in place of w; gradients pass straight through. */
  weightTransform?: (name: string, w: Float32Array) => Float32Array;
}

function nodeLabel(node: NodeProto, index: number): string {
  return `${node.op_type} '${node.name || node.output[0] || `#${index}`}'`;
}

/** A decoded tensor as an engine value (float32, int64-as-float64 or bool). */
export function tensorValue(model: OnnxModel, t: TensorProto): Value {
  const raw = readTensor(model, t);
  const dtype = dtypeOfCode(t.data_type);
  const shape = t.dims.map(Number);
  const n = raw.length;
  if (dtype === 'float32') {
    if (raw instanceof Float32Array) return { dtype, shape, data: raw };
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = Number(raw[i]);
    return { dtype, shape, data };
  }
  const data = dtype === 'bool' ? new Uint8Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = dtype === 'bool' ? (Number(raw[i]) ? 1 : 0) : Number(raw[i]);
  return { dtype, shape, data };
}

/** Op types the engine lacks, each with the first node that uses it: empty when the graph can train. */
export function unsupportedOps(graph: { node: NodeProto[] }): { opType: string; node: string }[] {
  const seen = new Map<string, string>();
  graph.node.forEach((node, i) => {
    if (opFor(node)) return;
    const key = node.domain && node.domain !== 'ai.onnx' ? `${node.domain}.${node.op_type}` : node.op_type;
    if (!seen.has(key)) seen.set(key, node.name || node.output[0] || `#${i}`);
  });
  return [...seen].map(([opType, node]) => ({ opType, node }));
}

export class TrainGraph {
  readonly model: OnnxModel;
  /** The trainable weights, by initializer name: the engine's own copies, updated in place by the optimizer. */
  readonly params = new Map<string, Float32Array>();
  readonly shapes = new Map<string, number[]>();
  private readonly constants = new Map<string, Value>();
  private readonly nodes: CompiledNode[];
  private readonly needsGrad = new Set<string>();

  constructor(model: OnnxModel, trainable: Iterable<string>) {
    this.model = model;
    const graph = model.graph;
    const missing = unsupportedOps(graph);
    if (missing.length)
      throw new ModelError(
        'unsupported',
        `${model.name}: the training engine does not support ${missing
          .map((m) => `op ${m.opType} (node '${m.node}')`)
          .join(', ')}.`,
      );
    const opset = model.proto.opset_import?.find((o) => !o.domain || o.domain === 'ai.onnx')?.version ?? 17;
    const wanted = new Set(trainable);
    for (const t of graph.initializer) {
      const v = tensorValue(model, t);
      if (wanted.has(t.name)) {
        if (v.dtype !== 'float32')
          throw new ModelError(
            'invalid-argument',
            `${model.name}: weight '${t.name}' is not a float tensor.`,
          );
        // the engine's own copy: the optimizer writes it, the model's bytes stay as loaded
        this.params.set(t.name, Float32Array.from(v.data as Float32Array));
        this.shapes.set(t.name, v.shape);
        this.needsGrad.add(t.name);
      } else this.constants.set(t.name, v);
    }
    for (const name of wanted)
      if (!this.params.has(name))
        throw new ModelError('invalid-argument', `${model.name} has no float initializer named '${name}'.`);
    const readAttrTensor = (t: TensorProto) => tensorValue(model, t);
    const planned = planFusions(
      graph.node,
      new Set(graph.output.map((o) => o.name)),
      (name) => this.scalarConstant(name, graph.node, readAttrTensor),
      opset,
    );
    this.nodes = planned.map(({ node, op: fused }, i) => {
      const op = fused ?? opFor(node)!;
      const differentiable = !!op.backward && node.input.some((n) => this.needsGrad.has(n));
      if (differentiable) for (const o of node.output) if (o) this.needsGrad.add(o);
      return {
        node,
        op,
        differentiable,
        wants: node.input.map((n) => this.needsGrad.has(n)),
        ctx: { node, where: `${model.name}: ${nodeLabel(node, i)}`, opset, readTensor: readAttrTensor },
      };
    });
  }

  /** The value of a one-element float constant (a fixed initializer or a Constant node's output). */
  private scalarConstant(
    name: string,
    nodes: readonly NodeProto[],
    readAttrTensor: (t: TensorProto) => Value,
  ): number | undefined {
    const fixed = this.constants.get(name);
    if (fixed) return fixed.dtype === 'float32' && fixed.data.length === 1 ? fixed.data[0] : undefined;
    const node = nodes.find((n) => n.op_type === 'Constant' && n.output[0] === name);
    const t = node?.attribute?.find((a) => a.name === 'value')?.t;
    if (t) {
      const v = readAttrTensor(t);
      return v.dtype === 'float32' && v.data.length === 1 ? v.data[0] : undefined;
    }
    const f = node?.attribute?.find((a) => a.name === 'value_float')?.f;
    return f ?? undefined;
  }

  /** Runs the graph on `feeds` (input name → value); the result holds every value by name. */
  forward(feeds: Record<string, Value>, opts: ForwardOptions = {}): ForwardResult {
    const record = opts.record ?? true;
    const values = new Map<string, Value>(this.constants);
    for (const [name, w] of this.params) {
      const data = opts.weightTransform ? opts.weightTransform(name, w) : w;
      values.set(name, { dtype: 'float32', shape: this.shapes.get(name)!, data });
    }
    for (const input of this.model.graph.input) {
      if (values.has(input.name) && !(input.name in feeds)) continue;
      const v = feeds[input.name];
      if (!v)
        throw new ModelError(
          'invalid-argument',
          `${this.model.name}: no value for the graph input '${input.name}'.`,
        );
      values.set(input.name, v);
    }
    const tape: TapeEntry[] = [];
    this.nodes.forEach((c, index) => {
      const inputs = c.node.input.map((name) => {
        if (!name) return undefined;
        const v = values.get(name);
        if (!v)
          throw new ModelError(
            'invalid-argument',
            `${c.ctx.where}: its input '${name}' is not computed before it.`,
          );
        return v;
      });
      const outputs = c.op.forward(inputs, c.ctx);
      c.node.output.forEach((name, i) => {
        if (name && outputs[i]) values.set(name, outputs[i]);
      });
      if (record && c.differentiable) tape.push({ index, inputs, outputs });
    });
    return { values, tape };
  }

  /**
   * Gradients of the trainable weights given the gradients of some values (the loss's gradient with
   * respect to the logits, say), accumulated over the recorded forward pass. Adds into `into` when
   * given (gradient accumulation over several forward passes).
   */
  backward(
    fwd: ForwardResult,
    seeds: Record<string, Float32Array>,
    into?: Map<string, Float32Array>,
  ): Map<string, Float32Array> {
    const grads = new Map<string, Float32Array>();
    // arrays this pass allocated itself may be added into in place; others may be shared with a value
    const owned = new Set<Float32Array>();
    const accumulate = (name: string, g: Float32Array) => {
      const prev = grads.get(name);
      if (!prev) {
        grads.set(name, g);
        return;
      }
      if (owned.has(prev)) {
        for (let i = 0; i < g.length; i++) prev[i] += g[i];
        return;
      }
      const sum = new Float32Array(prev.length);
      for (let i = 0; i < g.length; i++) sum[i] = prev[i] + g[i];
      owned.add(sum);
      grads.set(name, sum);
    };
    for (const [name, g] of Object.entries(seeds)) accumulate(name, g);
    // every gradient an op made: given back to the pool once the pass is done with them
    const made = new Set<Float32Array>();
    for (let t = fwd.tape.length - 1; t >= 0; t--) {
      const entry = fwd.tape[t];
      const c = this.nodes[entry.index];
      const gy = c.node.output.map((name) => (name ? grads.get(name) : undefined));
      if (gy.every((g) => !g)) continue;
      const gx = c.op.backward!(entry.inputs, entry.outputs, gy, c.ctx, c.wants);
      for (const g of gx) if (g) made.add(g);
      for (const name of c.node.output) if (name) grads.delete(name);
      c.node.input.forEach((name, i) => {
        const g = gx[i];
        if (!name || !g || !this.needsGrad.has(name) || entry.inputs[i]?.dtype !== 'float32') return;
        if (g.length !== sizeOf(entry.inputs[i]!.shape))
          throw new ModelError(
            'invalid-argument',
            `${c.ctx.where}: gradient of input ${i} has the wrong size.`,
          );
        accumulate(name, g);
      });
    }
    const out = into ?? new Map<string, Float32Array>();
    for (const [name] of this.params) {
      const g = grads.get(name);
      if (!g) continue;
      const acc = out.get(name);
      if (acc) for (let i = 0; i < g.length; i++) acc[i] += g[i];
      else out.set(name, owned.has(g) ? g : Float32Array.from(g));
    }
    // what the caller gets is its own arrays (copies or owned sums): the rest is dead now
    const seeded = new Set(Object.values(seeds));
    for (const g of made) if (!seeded.has(g)) recycle(g);
    return out;
  }

  /**
   * Gives a finished forward pass's arrays back for the next pass to reuse (tensor.ts `floats`): call
   * it once nothing reads `fwd` any more (after backward, and after reading the outputs wanted).
   * Weights, constants and feeds are never recycled; `fwd` must not be used afterwards.
   */
  release(fwd: ForwardResult): void {
    for (const v of fwd.values.values()) if (v.data instanceof Float32Array) recycle(v.data);
    for (const entry of fwd.tape)
      for (const v of entry.outputs) if (v?.data instanceof Float32Array) recycle(v.data);
    fwd.values.clear();
    fwd.tape.length = 0;
  }
}
