/**
 * Mutations of a model's files: blind byte damage (bit flips, overwrites, truncations, inflated
 * protobuf length prefixes) and damage that knows ONNX (decode with the project's proto, break one
 * field, re-encode): wrong dtypes and dims, raw_data of the wrong length, typed data fields that
 * disagree with the dtype, external_data pointing at odd places, nodes missing inputs or outputs,
 * output names shared by many nodes, int64 attributes at their extremes, hostile op types.
 * Each mutation returns a line saying what it did, so a failure can be read and replayed.
 */
import { decodeModelProto, encodeModelProto } from '../../src/core/onnx/proto.ts';
import type {
  AttributeProto,
  GraphProto,
  ModelProto,
  NodeProto,
  TensorProto,
} from '../../src/core/onnx/proto.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { DATA_FILE, MAIN_FILE, type SeedModel } from './models.ts';
import type { Rng } from './prng.ts';

/** Where the mutant will live, so external-data locations can point inside, beside and outside it. */
export interface MutationEnv {
  /** Absolute folder the mutant's files are written to. */
  modelDir: string;
  /** Absolute path of a file outside modelDir that must never be read as the model's data. */
  outsideFile: string;
  /**
   * Whether each mutant runs in its own process (the long runner), which allows mutations that may
   * block or exhaust time and memory: modelDir then holds a FIFO named 'fifo', and shared-output
   * chains grow long.
   */
  isolated: boolean;
}

export interface Mutant {
  files: Record<string, Uint8Array>;
  /** One line per mutation applied, in order. */
  mutations: string[];
  /** Files to extend (sparse, so no disk is used) to this many bytes after writing them. */
  sparseSizes: Record<string, number>;
}

const INT64_MAX = 2 ** 63 - 1; // a double: 2^63 exactly, which an int64 encoder wraps to -2^63
const INT64_MIN = -(2 ** 63);
const EXTREME_INTS = [INT64_MAX, INT64_MIN, 2 ** 31, 2 ** 31 - 1, -(2 ** 31), 2 ** 32, 2 ** 53 + 1, -1, 0, 1];
const ODD_DIMS = [0, 1, -1, 3, 7, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 60, INT64_MAX, INT64_MIN];
const ODD_OP_TYPES = [
  '',
  'constructor',
  '__proto__',
  'toString',
  'hasOwnProperty',
  'MatMul',
  'Gemm',
  'Gather',
  'Transpose',
  'MatMulNBits',
  'DequantizeLinear',
  'ReduceMean',
  'If',
  'Loop',
  'Constant',
];
const ODD_DOMAINS = ['', 'ai.onnx', 'com.microsoft', 'ai.onnx.ml', 'constructor', 'x.y'];
const ODD_NAMES = ['', '__proto__', 'constructor', 'toString', 'x', 'y', '../w', 'w\u0000', 'é'];

function encodeVarint(value: number | bigint): number[] {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v) byte |= 0x80;
    out.push(byte);
  } while (v);
  return out;
}

interface LengthPrefix {
  /** Offset of the varint. */
  pos: number;
  /** Bytes the varint takes. */
  size: number;
  value: number;
}

function readVarint(b: Uint8Array, at: number, end: number): { value: number; size: number } | null {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10 && at + i < end; i++) {
    const byte = b[at + i];
    value += (byte & 0x7f) * scale;
    scale *= 128;
    if (!(byte & 0x80)) return { value, size: i + 1 };
  }
  return null;
}

/**
 * The length prefixes of every length-delimited field, recursing into those whose bytes parse as a
 * message (ModelProto → GraphProto → NodeProto → …). False if [start, end) is not a message.
 */
function collectLengthPrefixes(
  b: Uint8Array,
  start: number,
  end: number,
  depth: number,
  out: LengthPrefix[],
): boolean {
  let at = start;
  const found: LengthPrefix[] = [];
  while (at < end) {
    const tag = readVarint(b, at, end);
    if (!tag || tag.value < 8) return false;
    at += tag.size;
    const wire = tag.value % 8;
    if (wire === 0) {
      const v = readVarint(b, at, end);
      if (!v) return false;
      at += v.size;
    } else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const len = readVarint(b, at, end);
      if (!len || at + len.size + len.value > end) return false;
      found.push({ pos: at, size: len.size, value: len.value });
      const body = at + len.size;
      if (depth < 6 && len.value >= 2) collectLengthPrefixes(b, body, body + len.value, depth + 1, found);
      at = body + len.value;
      if (found.length > 200_000) break;
    } else return false;
  }
  if (at > end) return false;
  out.push(...found);
  return true;
}

function splice(b: Uint8Array, pos: number, remove: number, insert: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(b.byteLength - remove + insert.length);
  out.set(b.subarray(0, pos), 0);
  out.set(insert, pos);
  out.set(b.subarray(pos + remove), pos + insert.length);
  return out;
}

/** Blind damage to one file's bytes. */
function mutateBytes(b: Uint8Array, rng: Rng, file: string): { bytes: Uint8Array; what: string } {
  if (b.byteLength === 0)
    return { bytes: Uint8Array.of(rng.int(256)), what: `${file}: one byte instead of none` };
  const kind = rng.pick([
    'bitflip',
    'overwrite',
    'truncate',
    'inflate-length',
    'inflate-length',
    'copy-chunk',
  ]);
  const out = new Uint8Array(b); // a plain copy: protobufjs hands back Buffers, whose fill() throws past the end
  if (kind === 'bitflip') {
    const n = 1 + rng.int(8);
    const at: number[] = [];
    for (let i = 0; i < n; i++) {
      const bit = rng.int(out.byteLength * 8);
      out[bit >> 3] ^= 1 << (bit & 7);
      at.push(bit);
    }
    return { bytes: out, what: `${file}: flip bits ${at.join(',')}` };
  }
  if (kind === 'overwrite') {
    const n = 1 + rng.int(8);
    const pos = rng.int(out.byteLength);
    const value = rng.pick([0x00, 0xff, 0x7f, 0x80, rng.int(256)]);
    out.fill(value, pos, Math.min(pos + n, out.byteLength));
    return { bytes: out, what: `${file}: bytes ${pos}..${pos + n} = 0x${value.toString(16)}` };
  }
  if (kind === 'truncate') {
    const keep = rng.chance(0.3)
      ? out.byteLength - 1 - rng.int(Math.min(64, out.byteLength))
      : rng.int(out.byteLength);
    return {
      bytes: out.subarray(0, Math.max(0, keep)),
      what: `${file}: truncate to ${Math.max(0, keep)} bytes`,
    };
  }
  if (kind === 'copy-chunk') {
    const from = rng.int(out.byteLength);
    const len = Math.min(1 + rng.int(256), out.byteLength - from);
    const to = rng.int(out.byteLength);
    return {
      bytes: splice(out, to, 0, out.subarray(from, from + len)),
      what: `${file}: insert a copy of bytes ${from}..${from + len} at ${to}`,
    };
  }
  const prefixes: LengthPrefix[] = [];
  collectLengthPrefixes(b, 0, b.byteLength, 0, prefixes);
  if (!prefixes.length) return mutateBytes(b, rng, file);
  const p = rng.pick(prefixes);
  const value = rng.pick([
    p.value + 1,
    p.value - 1,
    p.value * 2,
    p.value + 65536,
    2 ** 31 - 1,
    2 ** 31,
    2 ** 32 + p.value,
    2 ** 53,
    2 ** 63,
    0,
  ]);
  return {
    bytes: splice(b, p.pos, p.size, encodeVarint(Math.max(0, value))),
    what: `${file}: length prefix at ${p.pos} ${p.value} -> ${value}`,
  };
}

/** Every graph in the model: the main one and each If/Loop/Scan body, depth first. */
function allGraphs(g: GraphProto, out: GraphProto[] = []): GraphProto[] {
  out.push(g);
  for (const n of g.node ?? [])
    for (const a of n.attribute ?? []) {
      if (a.g) allGraphs(a.g, out);
      for (const sub of a.graphs ?? []) allGraphs(sub, out);
    }
  return out;
}

function allNodes(graphs: GraphProto[]): NodeProto[] {
  return graphs.flatMap((g) => g.node ?? []);
}

/** Initializers of every graph and the tensors held by node attributes (Constant values). */
function allTensors(graphs: GraphProto[]): { tensor: TensorProto; where: string }[] {
  const out: { tensor: TensorProto; where: string }[] = [];
  for (const g of graphs) {
    for (const t of g.initializer ?? [])
      out.push({ tensor: t, where: `initializer '${t.name}' of graph '${g.name ?? ''}'` });
    for (const n of g.node ?? [])
      for (const a of n.attribute ?? [])
        if (a.t) out.push({ tensor: a.t, where: `attribute ${a.name} of node '${n.name ?? n.op_type}'` });
  }
  return out;
}

function elementCountOf(t: TensorProto): number {
  return (t.dims ?? []).reduce((n, d) => n * Number(d), 1);
}

/** The tensor's values as plain numbers (from raw_data as float32 when it is one), for the typed fields. */
function someValues(t: TensorProto, n: number, rng: Rng): number[] {
  const count = Math.max(0, Math.min(n, 1 << 16));
  const raw = t.raw_data instanceof Uint8Array ? t.raw_data : undefined;
  if (raw && t.data_type === DataType.FLOAT && raw.byteLength >= count * 4) {
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    return Array.from({ length: count }, (_, i) => view.getFloat32(i * 4, true));
  }
  return Array.from({ length: count }, () => rng.int(200) - 100);
}

const TYPED_FIELDS = ['float_data', 'int32_data', 'int64_data', 'double_data', 'uint64_data'] as const;
type TypedField = (typeof TYPED_FIELDS)[number];
const TYPED_DTYPES = [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 16, 21, 22];

/** The field onnx.proto says holds a dtype's values (float_data for float32, int32_data for int8 …). */
function typedFieldFor(code: number): TypedField {
  if (code === DataType.FLOAT) return 'float_data';
  if (code === DataType.DOUBLE) return 'double_data';
  if (code === DataType.INT64) return 'int64_data';
  if (code === DataType.UINT32 || code === DataType.UINT64) return 'uint64_data';
  return 'int32_data';
}

function mutateTensor(t: TensorProto, rng: Rng, where: string, env: MutationEnv): string {
  const kind = rng.pick([
    'dtype',
    'dims',
    'raw-length',
    'typed-fields',
    'typed-fields',
    'external',
    'external',
    'string',
  ]);
  if (kind === 'dtype') {
    const from = t.data_type;
    t.data_type = rng.pick([
      0,
      1,
      2,
      3,
      5,
      6,
      7,
      8,
      9,
      10,
      11,
      12,
      13,
      14,
      15,
      16,
      17,
      19,
      21,
      22,
      23,
      24,
      99,
      -1,
      2 ** 31,
    ]);
    return `${where}: data_type ${from} -> ${t.data_type}`;
  }
  if (kind === 'dims') {
    const before = `[${(t.dims ?? []).join(',')}]`;
    const dims = [...(t.dims ?? [])];
    const op = rng.int(4);
    if (op === 0 && dims.length) dims[rng.int(dims.length)] = rng.pick(ODD_DIMS);
    else if (op === 1) dims.push(rng.pick([1, 2, 0, 2 ** 20]));
    else if (op === 2) dims.pop();
    else dims.reverse();
    t.dims = dims;
    return `${where}: dims ${before} -> [${dims.join(',')}]`;
  }
  if (kind === 'raw-length') {
    const raw = t.raw_data instanceof Uint8Array ? t.raw_data : new Uint8Array(0);
    const len = Math.max(
      0,
      rng.pick([
        0,
        raw.byteLength - 1,
        raw.byteLength + 1,
        raw.byteLength >> 1,
        raw.byteLength * 2,
        raw.byteLength - 4,
      ]),
    );
    const next = new Uint8Array(len);
    next.set(raw.subarray(0, Math.min(len, raw.byteLength)));
    t.raw_data = next;
    return `${where}: raw_data ${raw.byteLength} -> ${len} bytes`;
  }
  if (kind === 'typed-fields') {
    // Values move from raw_data into the typed fields (float_data, int32_data, …), in one of four
    // layouts: consistent (valid ONNX), the dtype's field with a wrong count, only a field the dtype
    // does not use, or a decoy: another field with the right count beside the dtype's wrong one.
    const count = Math.min(elementCountOf(t), 1 << 16);
    const values = someValues(t, count, rng);
    const fill = (field: TypedField, n: number) => {
      const vals = Array.from({ length: n }, (_, i) => values[i % Math.max(1, values.length)] ?? 0);
      (t as unknown as Record<TypedField, number[]>)[field] =
        field === 'float_data' || field === 'double_data' ? vals : vals.map((v) => Math.trunc(v));
    };
    t.raw_data = new Uint8Array(0);
    if (rng.chance(0.5)) t.data_type = rng.pick(TYPED_DTYPES);
    const own = typedFieldFor(t.data_type);
    const others = TYPED_FIELDS.filter((f) => f !== own);
    const layout = rng.pick(['consistent', 'wrong-count', 'wrong-field', 'decoy', 'decoy']);
    const badCount = rng.pick([count + 1, Math.max(0, count - 1), count * 3, 0]);
    if (layout === 'consistent') fill(own, count);
    else if (layout === 'wrong-count') fill(own, badCount);
    else if (layout === 'wrong-field') fill(rng.pick(others), count);
    else {
      // the decoy sits in the field a reader that scans fields in order meets first
      fill(own === 'float_data' ? 'int32_data' : 'float_data', count);
      fill(own, rng.chance(0.7) ? rng.pick([count + 1, count * 3]) : badCount);
    }
    return `${where}: raw_data moved to typed fields, layout ${layout}, data_type ${t.data_type}, ${count} values; fields ${TYPED_FIELDS.map(
      (f) => `${f}=${(t as unknown as Record<TypedField, number[] | undefined>)[f]?.length ?? 0}`,
    ).join(' ')}`;
  }
  if (kind === 'string') {
    t.data_type = rng.pick([DataType.STRING, DataType.FLOAT8E4M3FN, DataType.COMPLEX64]);
    if (t.data_type === DataType.STRING) {
      t.raw_data = new Uint8Array(0);
      t.string_data = Array.from({ length: Math.min(elementCountOf(t), 64) }, () =>
        new TextEncoder().encode('s'),
      );
    }
    return `${where}: data_type -> ${t.data_type} (string/float8/complex)`;
  }
  // external data at odd places
  const locations = [
    DATA_FILE,
    `./${DATA_FILE}`,
    'missing.bin',
    'sibling.bin',
    'link.bin',
    'subdir',
    'subdir/../sibling.bin',
    '../secret.bin',
    'a/../../secret.bin',
    '..\\secret.bin',
    env.outsideFile,
    '/dev/zero',
    '.',
    '',
    MAIN_FILE,
    `${DATA_FILE}\u0000.x`,
    ...(env.isolated ? ['fifo'] : []),
  ];
  const count = elementCountOf(t);
  const need = Math.max(0, Math.ceil(count * 4));
  const location = rng.pick(locations);
  const offset = rng.pick([
    '0',
    '1',
    '4096',
    '-1',
    '2147483648',
    '9007199254740993',
    'abc',
    '1e3',
    '',
    '0x10',
  ]);
  const length = rng.pick([
    String(need),
    String(need - 1),
    String(need + 1),
    '0',
    '-1',
    '2684354560',
    'x',
    undefined,
  ]);
  const entries = [
    { key: 'location', value: location },
    { key: 'offset', value: offset },
    ...(length === undefined ? [] : [{ key: 'length', value: length }]),
  ];
  if (rng.chance(0.2))
    entries.push({
      key: rng.pick(['location', 'checksum', '__proto__']),
      value: rng.pick(['sibling.bin', 'x']),
    });
  t.data_location = rng.chance(0.9) ? 1 : rng.pick([0, 2, -1]);
  t.external_data = entries;
  if (rng.chance(0.7)) t.raw_data = new Uint8Array(0);
  return `${where}: external_data location='${location}' offset='${offset}' length='${length}' data_location=${t.data_location}`;
}

function mutateNode(graphs: GraphProto[], rng: Rng): string {
  const nodes = allNodes(graphs);
  if (!nodes.length) return 'no nodes to mutate';
  // Nodes that read a weight, or that a rewrite edits (Reduce*), are where the compress path looks.
  const weights = new Set(graphs.flatMap((g) => (g.initializer ?? []).map((t) => t.name)));
  const weighty = nodes.filter(
    (n) => n.input.some((x) => weights.has(x)) || /^(Reduce|Constant|If|Loop)/.test(n.op_type),
  );
  // The nodes export rewrites: MatMuls reading a weight as B (MatMulNBits) and Reduce ops (opset 18).
  const rewritten = nodes.filter(
    (n) => (n.op_type === 'MatMul' && weights.has(n.input[1])) || n.op_type.startsWith('Reduce'),
  );
  const node =
    rng.chance(0.4) && rewritten.length
      ? rng.pick(rewritten)
      : rng.chance(0.7) && weighty.length
        ? rng.pick(weighty)
        : rng.pick(nodes);
  const label = `node '${node.name ?? ''}' (${node.op_type})`;
  const kind = rng.pick([
    'inputs',
    'inputs',
    'outputs',
    'outputs',
    'op-type',
    'domain',
    'attribute',
    'attribute',
  ]);
  if (kind === 'inputs') {
    const before = node.input.length;
    const op = rng.int(4);
    if (op === 0) node.input = [];
    else if (op === 1) node.input = node.input.slice(0, 1);
    else if (op === 2) node.input = [...node.input, ''];
    else if (node.input.length) node.input = ['', ...node.input.slice(1)];
    return `${label}: inputs ${before} -> [${node.input.map((x) => `'${x}'`).join(',')}]`;
  }
  if (kind === 'outputs') {
    const op = rng.int(3);
    if (op === 0) node.output = [];
    else if (op === 1) node.output = [''];
    else node.output = [...node.output, node.output[0] ?? 'extra'];
    return `${label}: outputs -> [${node.output.map((x) => `'${x}'`).join(',')}]`;
  }
  if (kind === 'op-type') {
    node.op_type = rng.pick(ODD_OP_TYPES);
    return `${label}: op_type -> '${node.op_type}'`;
  }
  if (kind === 'domain') {
    node.domain = rng.pick(ODD_DOMAINS);
    return `${label}: domain -> '${node.domain}'`;
  }
  const attrs = (node.attribute ??= []);
  const name =
    attrs.length && rng.chance(0.6)
      ? rng.pick(attrs).name
      : rng.pick(['axis', 'axes', 'transB', 'keepdims', 'perm', 'to', 'value', 'then_branch', 'body']);
  const value = rng.pick(EXTREME_INTS);
  const shape = rng.int(5);
  let attr: AttributeProto;
  if (shape === 0) attr = { name, type: 2, i: value };
  else if (shape === 1) attr = { name, type: 7, ints: [value, rng.pick(EXTREME_INTS)] };
  else if (shape === 2)
    attr = { name, type: rng.pick([1, 3, 4, 5, 0, 99]) }; // declared type, no value
  else if (shape === 3)
    attr = { name, type: 5, g: { name: 'empty', node: [], initializer: [], input: [], output: [] } };
  else attr = { name, type: 2, f: 1.5 };
  const i = attrs.findIndex((a) => a.name === name);
  if (i >= 0) attrs[i] = attr;
  else attrs.push(attr);
  return `${label}: attribute ${name} -> ${JSON.stringify({ ...attr, g: attr.g ? '<empty graph>' : undefined })}`;
}

function mutateGraph(model: ModelProto, graphs: GraphProto[], rng: Rng, env: MutationEnv): string {
  const g = rng.pick(graphs);
  const where = `graph '${g.name ?? ''}'`;
  const kind = rng.pick(['shared-outputs', 'shared-outputs', 'initializers', 'io', 'opset', 'order']);
  if (kind === 'shared-outputs') {
    const nodes = g.node ?? [];
    if (!nodes.length) return `${where}: no nodes`;
    const weights = new Set((g.initializer ?? []).map((t) => t.name));
    const matmuls = nodes.filter((n) => n.op_type === 'MatMul' && weights.has(n.input[1]) && n.output[0]);
    const shared = (matmuls.length ? rng.pick(matmuls) : rng.pick(nodes)).output[0] || 'shared';
    const n = Math.min(nodes.length, 2 + rng.int(env.isolated && rng.chance(0.3) ? 200 : 6));
    if (rng.chance(0.5)) {
      // pass-through nodes that read and write the same name: a walk from the MatMul toward the
      // graph output meets each of them again at every hop
      for (let i = 0; i < n; i++)
        nodes.push({
          op_type: rng.pick(['Identity', 'Add', 'Reshape', 'Cast']),
          input: [shared],
          output: [shared],
        });
      return `${where}: ${n} pass-through nodes read and write '${shared}'`;
    }
    for (let i = 0; i < n; i++) {
      const node = rng.pick(nodes);
      node.output = [shared, ...node.output.slice(1)];
    }
    return `${where}: ${n} nodes write output '${shared}'`;
  }
  if (kind === 'initializers') {
    const inits = g.initializer ?? [];
    if (!inits.length) return `${where}: no initializers`;
    const t = rng.pick(inits);
    const op = rng.int(4);
    if (op === 0) {
      g.initializer = [...inits, { ...t }];
      return `${where}: initializer '${t.name}' listed twice`;
    }
    if (op === 1) {
      g.initializer = inits.filter((x) => x !== t);
      return `${where}: initializer '${t.name}' removed`;
    }
    const from = t.name;
    t.name = op === 2 ? rng.pick(ODD_NAMES) : rng.pick(inits).name;
    return `${where}: initializer '${from}' renamed '${t.name}'`;
  }
  if (kind === 'io') {
    const op = rng.int(3);
    if (op === 0) g.output = [];
    else if (op === 1 && g.initializer?.length)
      g.output = [...g.output, { name: rng.pick(g.initializer).name }];
    else g.input = [...g.input, ...(g.initializer ?? []).map((t) => ({ name: t.name }))];
    return `${where}: graph inputs/outputs changed (${op})`;
  }
  if (kind === 'opset') {
    const op = rng.int(4);
    if (op === 0) model.opset_import = [];
    else if (op === 1) model.ir_version = rng.pick([0, 1, 3, 7, 10, 11, 64, 65, INT64_MAX]);
    else if (op === 2)
      model.opset_import = [
        ...model.opset_import,
        { domain: rng.pick(ODD_DOMAINS), version: rng.pick(EXTREME_INTS) },
      ];
    else
      for (const o of model.opset_import) o.version = rng.pick([0, 1, 12, 13, 17, 18, 20, 21, 22, 1e9, -1]);
    return `model: opset/ir_version changed (${op}) -> ir ${model.ir_version}, ${JSON.stringify(model.opset_import)}`;
  }
  const nodes = [...(g.node ?? [])];
  for (let i = nodes.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [nodes[i], nodes[j]] = [nodes[j], nodes[i]];
  }
  g.node = nodes;
  return `${where}: node order shuffled`;
}

function mutateProto(
  bytes: Uint8Array,
  rng: Rng,
  env: MutationEnv,
): { bytes: Uint8Array; what: string } | null {
  let model: ModelProto;
  try {
    model = decodeModelProto(bytes);
  } catch {
    return null; // already broken past decoding: byte mutations only
  }
  if (!model.graph) return null;
  const graphs = allGraphs(model.graph);
  const tensors = allTensors(graphs);
  const kind = rng.pick(['tensor', 'tensor', 'node', 'node', 'graph']);
  let what: string;
  if (kind === 'tensor' && tensors.length) {
    const { tensor, where } = rng.pick(tensors);
    what = mutateTensor(tensor, rng, where, env);
  } else if (kind === 'graph') what = mutateGraph(model, graphs, rng, env);
  else what = mutateNode(graphs, rng);
  try {
    return { bytes: encodeModelProto(model), what };
  } catch {
    return null; // a value the encoder itself refuses is no mutant
  }
}

/** Bytes of the tensor made too large for any array: 2^40, the size of the sparse data file. */
const HUGE_BYTES = 2 ** 40;

/**
 * A float32 weight re-declared as [2^20, 2^18] in external data, with model.onnx_data extended
 * (sparse) to hold it: every declared length checks out, but no ArrayBuffer can take the tensor.
 */
function hugeExternalTensor(bytes: Uint8Array, rng: Rng): { bytes: Uint8Array; what: string } | null {
  let model: ModelProto;
  try {
    model = decodeModelProto(bytes);
  } catch {
    return null;
  }
  const weights = (model.graph?.initializer ?? []).filter(
    (t) => t.data_type === DataType.FLOAT && t.dims.length === 2,
  );
  if (!weights.length) return null;
  const t = rng.pick(weights);
  t.dims = [2 ** 20, 2 ** 18];
  t.raw_data = new Uint8Array(0);
  t.data_location = 1;
  t.external_data = [
    { key: 'location', value: DATA_FILE },
    { key: 'offset', value: '0' },
    { key: 'length', value: String(HUGE_BYTES) },
  ];
  return {
    bytes: encodeModelProto(model),
    what: `initializer '${t.name}': [2^20, 2^18] float32 in ${DATA_FILE}, 1 TiB (sparse)`,
  };
}

/** One mutant of `seed`: one to three mutations, most of them ONNX-aware. */
export function mutate(seed: SeedModel, rng: Rng, env: MutationEnv): Mutant {
  const files: Record<string, Uint8Array> = { ...seed.files };
  const mutations: string[] = [];
  const sparseSizes: Record<string, number> = {};
  if (rng.chance(0.03)) {
    const huge = hugeExternalTensor(files[MAIN_FILE], rng);
    if (huge) {
      files[MAIN_FILE] = huge.bytes;
      files[DATA_FILE] ??= new Uint8Array(0);
      sparseSizes[DATA_FILE] = HUGE_BYTES;
      return { files, mutations: [huge.what], sparseSizes };
    }
  }
  const n = 1 + (rng.chance(0.35) ? 1 : 0) + (rng.chance(0.1) ? 1 : 0);
  for (let i = 0; i < n; i++) {
    if (rng.chance(0.8)) {
      const done = mutateProto(files[MAIN_FILE], rng, env);
      if (done) {
        files[MAIN_FILE] = done.bytes;
        mutations.push(done.what);
        continue;
      }
    }
    const target = files[DATA_FILE] && rng.chance(0.25) ? DATA_FILE : MAIN_FILE;
    const done = mutateBytes(files[target], rng, target);
    files[target] = done.bytes;
    mutations.push(done.what);
  }
  return { files, mutations, sparseSizes };
}
