/**
 * The ONNX protobuf schema and a codec of our own over it, so that a model read and written back
 * comes out as it went in:
 * - int64 values stay exact. They decode to plain numbers (every dimension, offset and opset a
 *   browser can hold is below 2^53), and a value beyond 2^53 also keeps its exact bigint beside the
 *   message; the writer emits that exact value as long as the number in the field still matches it.
 *   Code may also put a bigint into an int64 field.
 * - fields the schema does not know (newer ONNX versions) are kept as their raw bytes and written back;
 * - a repeated number field keeps the packed or unpacked encoding it was read with.
 * protobufjs (light build) is used only for the schema's reflection; it would turn int64 into lossy
 * numbers and drop unknown fields.
 */
import protobuf from 'protobufjs/light.js';
import schema from './onnx-schema.json';

const root = protobuf.Root.fromJSON(schema as protobuf.INamespace).resolveAll();

export const DATA_LOCATION_EXTERNAL = 1;

export interface StringStringEntryProto {
  key: string;
  value: string;
}

export interface TensorProto {
  name: string;
  dims: number[];
  data_type: number;
  raw_data?: Uint8Array;
  float_data?: number[];
  int32_data?: number[];
  /** Numbers; a value beyond 2^53 keeps its exact value (see `exactInt64s`), or code may store bigints. */
  int64_data?: (number | bigint)[];
  double_data?: number[];
  uint64_data?: (number | bigint)[];
  string_data?: Uint8Array[];
  data_location?: number;
  external_data?: StringStringEntryProto[];
  doc_string?: string;
}

export interface AttributeProto {
  name: string;
  type: number;
  f?: number;
  i?: number | bigint;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  floats?: number[];
  ints?: (number | bigint)[];
  strings?: Uint8Array[];
  tensors?: TensorProto[];
  graphs?: GraphProto[];
}

export interface NodeProto {
  input: string[];
  output: string[];
  name?: string;
  op_type: string;
  domain?: string;
  attribute?: AttributeProto[];
  doc_string?: string;
}

export interface TensorShapeDimension {
  dim_value?: number;
  dim_param?: string;
}

export interface TypeProto {
  tensor_type?: { elem_type: number; shape?: { dim: TensorShapeDimension[] } };
}

export interface ValueInfoProto {
  name: string;
  type?: TypeProto;
  doc_string?: string;
}

export interface GraphProto {
  node: NodeProto[];
  name?: string;
  initializer: TensorProto[];
  doc_string?: string;
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  value_info?: ValueInfoProto[];
}

export interface OperatorSetIdProto {
  domain?: string;
  version: number;
}

export interface ModelProto {
  ir_version: number;
  opset_import: OperatorSetIdProto[];
  producer_name?: string;
  producer_version?: string;
  domain?: string;
  model_version?: number;
  doc_string?: string;
  graph?: GraphProto;
  metadata_props?: StringStringEntryProto[];
}

export const AttributeType = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
} as const;

// ---------------------------------------------------------------------------------------------
// Schema, compiled once from protobufjs' reflection.

type Kind =
  'int64' | 'uint64' | 'int32' | 'uint32' | 'bool' | 'float' | 'double' | 'string' | 'bytes' | 'message';

interface FieldSpec {
  name: string;
  id: number;
  kind: Kind;
  repeated: boolean;
  /** Whether a repeated number field is packed when nothing was read (the schema's option). */
  packed: boolean;
  message?: MessageSpec;
}

interface MessageSpec {
  fields: FieldSpec[];
  /** Repeated fields: every decoded message gets its own (empty) array for each, as protobufjs' do. */
  repeated: FieldSpec[];
  byId: Map<number, FieldSpec>;
  /** Prototype of decoded messages: absent fields read as their defaults, as protobufjs' messages do. */
  defaults: object;
}

const specs = new Map<protobuf.Type, MessageSpec>();

function specOf(type: protobuf.Type): MessageSpec {
  const known = specs.get(type);
  if (known) return known;
  const spec: MessageSpec = { fields: [], repeated: [], byId: new Map(), defaults: {} };
  specs.set(type, spec);
  const defaults: Record<string, unknown> = {};
  for (const f of [...type.fieldsArray].sort((a, b) => a.id - b.id)) {
    const resolved = f.resolvedType;
    let kind: Kind;
    if (resolved instanceof protobuf.Type) kind = 'message';
    else if (resolved instanceof protobuf.Enum) kind = 'int32';
    else if (
      ['int64', 'uint64', 'int32', 'uint32', 'bool', 'float', 'double', 'string', 'bytes'].includes(f.type)
    )
      kind = f.type as Kind;
    else throw new Error(`onnx schema: field ${type.name}.${f.name} has unsupported type ${f.type}`);
    const field: FieldSpec = {
      name: f.name,
      id: f.id,
      kind,
      repeated: f.repeated,
      packed: f.repeated && f.packed && isNumberKind(kind),
    };
    if (kind === 'message') field.message = specOf(resolved as protobuf.Type);
    spec.fields.push(field);
    if (field.repeated) spec.repeated.push(field);
    spec.byId.set(f.id, field);
    defaults[f.name] = f.repeated
      ? Object.freeze([])
      : kind === 'message'
        ? null
        : kind === 'string'
          ? ''
          : kind === 'bytes'
            ? new Uint8Array(0)
            : kind === 'bool'
              ? false
              : 0;
  }
  spec.defaults = defaults; // not frozen: a frozen prototype would forbid setting the field on a message
  return spec;
}

function isNumberKind(kind: Kind): boolean {
  return kind !== 'string' && kind !== 'bytes' && kind !== 'message';
}

const MODEL = specOf(root.lookupType('onnx.ModelProto'));
const TENSOR = specOf(root.lookupType('onnx.TensorProto'));

// ---------------------------------------------------------------------------------------------
// What a decoded message carries beside its fields, kept out of the object so that spreading,
// JSON and equality see only the ONNX fields.

interface Extras {
  /** Raw bytes (tag included) of fields the schema does not know, in the order read. */
  unknown?: Uint8Array[];
  /** Repeated number fields read with the other encoding than the schema's default. */
  packing?: Map<number, boolean>;
  /** Exact int64 values of fields holding one beyond 2^53 (the field holds their nearest number). */
  exact?: Map<string, bigint | bigint[]>;
  /** The bytes of strings that were not valid UTF-8 (decoding replaced them with U+FFFD). */
  rawStrings?: Map<string, Map<number, { text: string; bytes: Uint8Array }>>;
}

const extras = new WeakMap<object, Extras>();

function extrasOf(msg: object): Extras {
  let e = extras.get(msg);
  if (!e) extras.set(msg, (e = {}));
  return e;
}

/**
 * Lets `to`, a rewritten copy of the decoded message `from` (`{ ...from, field }`), keep what
 * `from` carried beside its fields: unknown fields, encodings, exact int64 values still equal.
 */
export function carryOver<T extends object>(from: object, to: T): T {
  const e = extras.get(from);
  if (e && from !== to && !extras.has(to)) extras.set(to, e);
  return to;
}

/** A scalar int64 field's exact value (undefined when absent), also where its number lost precision. */
export function exactInt64(msg: object, field: string): bigint | undefined {
  const v = (msg as Record<string, unknown>)[field];
  if (v === undefined || v === null) return undefined;
  const exact = extras.get(msg)?.exact?.get(field);
  if (typeof exact === 'bigint' && typeof v === 'number' && Number(exact) === v) return exact;
  return toBigInt(v);
}

/** An int64 field's exact values: bigints, also where the field's numbers lost precision. */
export function exactInt64s(msg: object, field: string): bigint[] {
  const values = (msg as Record<string, unknown>)[field];
  if (!Array.isArray(values)) return [];
  const exact = extras.get(msg)?.exact?.get(field);
  return values.map((v, i) => {
    const e = Array.isArray(exact) ? exact[i] : undefined;
    if (e !== undefined && typeof v === 'number' && Number(e) === v) return e;
    return toBigInt(v);
  });
}

/** Any int64 value code may hold (number, bigint, decimal string) as a bigint; NaN and garbage as 0. */
function toBigInt(v: unknown): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'string' && /^-?\d+$/.test(v.trim())) return BigInt(v.trim());
  const n = Number(v);
  return Number.isFinite(n) ? BigInt(Math.trunc(n)) : 0n;
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/** Nesting deeper than this is refused (protobuf's own default limit), not a stack overflow. */
const MAX_DEPTH = 100;

class DecodeError extends Error {}

const utf8Decoder = new TextDecoder('utf-8');
const TWO_64 = 1n << 64n;
const TWO_63 = 1n << 63n;

class Reader {
  readonly view: DataView;
  pos = 0;
  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  /** An unsigned varint: a number below 2^53, a bigint above. */
  varint(end: number): number | bigint {
    const buf = this.buf;
    let value = 0;
    let scale = 1;
    const start = this.pos;
    for (let i = 0; i < 7; i++) {
      if (this.pos >= end) throw new DecodeError(`truncated varint at byte ${start}`);
      const b = buf[this.pos++];
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
    // 8 or more bytes: beyond 49 bits, finish exactly in bigint
    let big = BigInt(value);
    let shift = 49n;
    for (let i = 7; i < 10; i++) {
      if (this.pos >= end) throw new DecodeError(`truncated varint at byte ${start}`);
      const b = buf[this.pos++];
      big |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) {
        big = BigInt.asUintN(64, big);
        return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
      }
      shift += 7n;
    }
    throw new DecodeError(`invalid varint (more than 10 bytes) at byte ${start}`);
  }

  length(end: number): number {
    const at = this.pos;
    const n = this.varint(end);
    if (typeof n !== 'number' || n > end - this.pos)
      throw new DecodeError(
        `truncated: a field at byte ${at} declares ${n} bytes but only ${end - this.pos} remain`,
      );
    return n;
  }

  skip(wireType: number, end: number, depth: number): void {
    switch (wireType) {
      case 0:
        this.varint(end);
        return;
      case 1:
        this.advance(8, end);
        return;
      case 5:
        this.advance(4, end);
        return;
      case 2:
        this.advance(this.length(end), end);
        return;
      case 3: {
        // a group: skip fields until its end tag
        if (depth > MAX_DEPTH) throw new DecodeError('groups nested too deeply');
        for (;;) {
          const tag = this.varint(end);
          if (typeof tag !== 'number') throw new DecodeError(`invalid tag at byte ${this.pos}`);
          if ((tag & 7) === 4) return;
          this.skip(tag & 7, end, depth + 1);
        }
      }
      default:
        throw new DecodeError(`invalid wire type ${wireType} at byte ${this.pos}`);
    }
  }

  advance(n: number, end: number): void {
    if (n > end - this.pos)
      throw new DecodeError(`truncated: ${n} bytes needed at byte ${this.pos}, ${end - this.pos} remain`);
    this.pos += n;
  }
}

function wireTypeOf(kind: Kind): number {
  switch (kind) {
    case 'double':
      return 1;
    case 'float':
      return 5;
    case 'string':
    case 'bytes':
    case 'message':
      return 2;
    default:
      return 0;
  }
}

/** Reads one number of `kind`: int64 as a number, plus its exact bigint when it is beyond 2^53. */
function readNumber(r: Reader, kind: Kind, end: number): { value: number | boolean; exact?: bigint } {
  switch (kind) {
    case 'float': {
      r.advance(4, end);
      return { value: r.view.getFloat32(r.pos - 4, true) };
    }
    case 'double': {
      r.advance(8, end);
      return { value: r.view.getFloat64(r.pos - 8, true) };
    }
  }
  const u = r.varint(end);
  switch (kind) {
    case 'bool':
      return { value: u !== 0 && u !== 0n };
    case 'int32':
      return { value: typeof u === 'number' ? (u % 2 ** 32) | 0 : Number(BigInt.asIntN(32, u)) };
    case 'uint32':
      return { value: typeof u === 'number' ? u % 2 ** 32 : Number(BigInt.asUintN(32, u)) };
    case 'uint64':
      return typeof u === 'number' ? { value: u } : { value: Number(u), exact: u };
    default: {
      // int64: two's complement in 64 bits
      if (typeof u === 'number') return { value: u };
      const signed = u >= TWO_63 ? u - TWO_64 : u;
      const n = Number(signed);
      return Number.isSafeInteger(n) ? { value: n } : { value: n, exact: signed };
    }
  }
}

function decodeMessage(spec: MessageSpec, r: Reader, end: number, depth: number): Record<string, unknown> {
  if (depth > MAX_DEPTH) throw new DecodeError(`messages nested deeper than ${MAX_DEPTH} levels`);
  const msg = Object.create(spec.defaults) as Record<string, unknown>;
  // own arrays: code that spreads a message ({ ...node }) or pushes to a list must not meet a shared default
  for (const f of spec.repeated) msg[f.name] = [];
  let own: Extras | undefined;
  const mine = () => (own ??= extrasOf(msg));
  while (r.pos < end) {
    const tagAt = r.pos;
    const tag = r.varint(end);
    if (typeof tag !== 'number' || tag > 0xffffffff) throw new DecodeError(`invalid tag at byte ${tagAt}`);
    const id = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (id === 0) throw new DecodeError(`invalid field number 0 at byte ${tagAt}`);
    const f = spec.byId.get(id);
    const natural = f ? wireTypeOf(f.kind) : -1;
    const packedHere = !!f && f.repeated && isNumberKind(f.kind) && wireType === 2;
    if (!f || (wireType !== natural && !packedHere)) {
      // unknown to this schema (or not in the shape it declares): keep its bytes as they are
      r.skip(wireType, end, depth);
      (mine().unknown ??= []).push(r.buf.subarray(tagAt, r.pos));
      continue;
    }
    if (f.kind === 'message') {
      const n = r.length(end);
      const child = decodeMessage(f.message!, r, r.pos + n, depth + 1);
      if (f.repeated) pushValue(msg, f.name, child);
      else msg[f.name] = child;
    } else if (f.kind === 'string' || f.kind === 'bytes') {
      const n = r.length(end);
      const bytes = r.buf.subarray(r.pos, r.pos + n);
      r.pos += n;
      const value = f.kind === 'string' ? utf8Decoder.decode(bytes) : bytes;
      const index = f.repeated ? pushValue(msg, f.name, value) : ((msg[f.name] = value), -1);
      if (typeof value === 'string' && value.includes('\ufffd')) {
        // possibly not UTF-8: keep the bytes, to write them back while the text is unchanged
        const raw = (mine().rawStrings ??= new Map());
        if (!raw.has(f.name)) raw.set(f.name, new Map());
        raw.get(f.name)!.set(index, { text: value, bytes });
      }
    } else if (f.repeated) {
      if (packedHere !== f.packed) (mine().packing ??= new Map()).set(f.id, packedHere);
      const values = (Object.prototype.hasOwnProperty.call(msg, f.name) ? msg[f.name] : []) as number[];
      msg[f.name] = values;
      let stop = end;
      if (packedHere) {
        const n = r.length(end);
        stop = r.pos + n;
      }
      do {
        const { value, exact } = readNumber(r, f.kind, stop);
        if (exact !== undefined) {
          const map = (mine().exact ??= new Map());
          let list = map.get(f.name) as bigint[] | undefined;
          if (!list) map.set(f.name, (list = values.map((v) => BigInt(v))));
          list[values.length] = exact;
        } else {
          const list = own?.exact?.get(f.name) as bigint[] | undefined;
          if (list) list[values.length] = BigInt(value as number);
        }
        values.push(value as number);
      } while (packedHere && r.pos < stop);
    } else {
      const { value, exact } = readNumber(r, f.kind, end);
      msg[f.name] = value;
      if (exact !== undefined) (mine().exact ??= new Map()).set(f.name, exact);
      else own?.exact?.delete(f.name); // a later occurrence wins
    }
  }
  return msg;
}

/** Appends to a repeated field; returns the value's index. */
function pushValue(msg: Record<string, unknown>, name: string, value: unknown): number {
  if (!Object.prototype.hasOwnProperty.call(msg, name)) msg[name] = [];
  return (msg[name] as unknown[]).push(value) - 1;
}

function decode(spec: MessageSpec, bytes: Uint8Array): Record<string, unknown> {
  const r = new Reader(bytes);
  return decodeMessage(spec, r, bytes.byteLength, 0);
}

export function decodeModelProto(bytes: Uint8Array): ModelProto {
  return decode(MODEL, bytes) as unknown as ModelProto;
}

export function decodeTensorProto(bytes: Uint8Array): TensorProto {
  return decode(TENSOR, bytes) as unknown as TensorProto;
}

// ---------------------------------------------------------------------------------------------
// Encoding: fields in field-number order (as protobuf's own serializers write them), then the
// unknown fields kept from reading. Large bytes fields are referenced, copied once at the end.

class Writer {
  readonly parts: Uint8Array[] = [];
  private scratch = new Uint8Array(256);
  private view = new DataView(this.scratch.buffer);
  private used = 0;

  private room(n: number): void {
    if (this.used + n <= this.scratch.length) return;
    this.flush();
    if (n > this.scratch.length) {
      this.scratch = new Uint8Array(Math.max(n, 4096));
      this.view = new DataView(this.scratch.buffer);
    }
  }

  flush(): void {
    if (this.used === 0) return;
    this.parts.push(this.scratch.slice(0, this.used));
    this.used = 0;
  }

  varint(v: number): void {
    // non-negative safe integers
    this.room(10);
    while (v >= 0x80) {
      this.scratch[this.used++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.scratch[this.used++] = v;
  }

  bigVarint(v: bigint): void {
    let u = BigInt.asUintN(64, v);
    this.room(10);
    while (u >= 0x80n) {
      this.scratch[this.used++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.scratch[this.used++] = Number(u);
  }

  float(v: number): void {
    this.room(4);
    this.view.setFloat32(this.used, v, true);
    this.used += 4;
  }

  double(v: number): void {
    this.room(8);
    this.view.setFloat64(this.used, v, true);
    this.used += 8;
  }

  bytes(b: Uint8Array): void {
    if (b.byteLength <= 64) {
      this.room(b.byteLength);
      this.scratch.set(b, this.used);
      this.used += b.byteLength;
    } else {
      this.flush();
      this.parts.push(b);
    }
  }

  append(w: Writer): void {
    this.flush();
    for (const p of w.parts) this.parts.push(p);
  }

  /** Total bytes written so far. */
  length(): number {
    return this.parts.reduce((s, p) => s + p.byteLength, 0) + this.used;
  }

  finish(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.length());
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
}

const utf8Encoder = new TextEncoder();

function tag(w: Writer, id: number, wireType: number): void {
  w.varint(id * 8 + wireType);
}

function writeNumber(w: Writer, kind: Kind, v: unknown, exact: bigint | undefined): void {
  switch (kind) {
    case 'float':
      w.float(Number(v));
      return;
    case 'double':
      w.double(Number(v));
      return;
    case 'bool':
      w.varint(v ? 1 : 0);
      return;
    case 'int32':
    case 'uint32': {
      const n = kind === 'int32' ? Number(v) | 0 : Number(v) >>> 0;
      if (n >= 0) w.varint(n);
      else w.bigVarint(BigInt(n)); // negative int32 is sign-extended to 64 bits, as protobuf does
      return;
    }
  }
  // int64 / uint64: the exact value read, if the field still holds it
  if (exact !== undefined && typeof v === 'number' && Number(exact) === v) {
    w.bigVarint(exact);
    return;
  }
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) w.varint(v);
  else w.bigVarint(toBigInt(v));
}

function encodeMessage(spec: MessageSpec, msg: Record<string, unknown>, depth: number): Writer {
  if (depth > MAX_DEPTH) throw new Error(`messages nested deeper than ${MAX_DEPTH} levels`);
  const w = new Writer();
  const e = extras.get(msg);
  const has = (name: string) => Object.prototype.hasOwnProperty.call(msg, name) && msg[name] != null;
  for (const f of spec.fields) {
    if (!has(f.name)) continue;
    const value = msg[f.name];
    const exact = e?.exact?.get(f.name);
    if (f.repeated) {
      const list = value as unknown[];
      if (!list.length) continue;
      if (isNumberKind(f.kind)) {
        const exactList = Array.isArray(exact) && exact.length === list.length ? exact : undefined;
        const packed = e?.packing?.get(f.id) ?? f.packed;
        if (packed) {
          const body = new Writer();
          list.forEach((v, i) => writeNumber(body, f.kind, v, exactList?.[i]));
          body.flush();
          tag(w, f.id, 2);
          w.varint(body.length());
          w.append(body);
        } else {
          const wt = wireTypeOf(f.kind);
          list.forEach((v, i) => {
            tag(w, f.id, wt);
            writeNumber(w, f.kind, v, exactList?.[i]);
          });
        }
      } else {
        const raw = e?.rawStrings?.get(f.name);
        list.forEach((v, i) => writeLengthDelimited(w, f, v, depth, raw?.get(i)));
      }
    } else if (isNumberKind(f.kind)) {
      tag(w, f.id, wireTypeOf(f.kind));
      writeNumber(w, f.kind, value, typeof exact === 'bigint' ? exact : undefined);
    } else {
      writeLengthDelimited(w, f, value, depth, e?.rawStrings?.get(f.name)?.get(-1));
    }
  }
  for (const raw of e?.unknown ?? []) w.bytes(raw);
  w.flush();
  return w;
}

function writeLengthDelimited(
  w: Writer,
  f: FieldSpec,
  v: unknown,
  depth: number,
  raw?: { text: string; bytes: Uint8Array },
): void {
  tag(w, f.id, 2);
  if (raw && raw.text === v) {
    w.varint(raw.bytes.byteLength);
    w.bytes(raw.bytes);
    return;
  }
  if (f.kind === 'message') {
    const child = encodeMessage(f.message!, v as Record<string, unknown>, depth + 1);
    w.varint(child.length());
    w.append(child);
    return;
  }
  const bytes = f.kind === 'string' ? utf8Encoder.encode(String(v)) : (v as Uint8Array);
  w.varint(bytes.byteLength);
  w.bytes(bytes);
}

export function encodeModelProto(model: ModelProto): Uint8Array {
  return encodeMessage(MODEL, model as unknown as Record<string, unknown>, 0).finish();
}

export function encodeTensorProto(tensor: TensorProto): Uint8Array {
  return encodeMessage(TENSOR, tensor as unknown as Record<string, unknown>, 0).finish();
}
