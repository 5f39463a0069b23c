/**
 * Reading an ONNX model defensively (Netron-style): every declared length is checked against the bytes
 * that exist, tensor values are decoded only when asked for, and each failure names the file and field.
 */
import { ModelError } from '../errors.ts';
import { formatBytes } from '../errors.ts';
import {
  DataType,
  bfloat16ToFloat32,
  dtypeInfo,
  dtypeName,
  castFloat16ToFloat32,
  rawByteLength,
} from './dtypes.ts';
import {
  DATA_LOCATION_EXTERNAL,
  decodeModelProto,
  exactInt64s,
  type GraphProto,
  type ModelProto,
  type TensorProto,
} from './proto.ts';
import { allStoredTensors, graphIndex } from './graphs.ts';

/** A file the parser can read ranges of without holding all of it (a Blob in a worker, an fd in Node). */
export interface ByteSource {
  name: string;
  size: number;
  read(offset: number, length: number): Uint8Array;
  /**
   * Each read answers bytes in a buffer of their own, which nothing else holds (a file read into a
   * fresh buffer), so the reader may give it away (transfer it to a worker). Absent: a read may be a
   * view on memory others use (an in-memory model's bytes).
   */
  fresh?: boolean;
}

/**
 * A buffer for `length` bytes a byte source is about to read: the engine's ArrayBuffer limit (or its
 * memory) becomes a typed 'too-large' error naming the file and range, not a RangeError.
 */
export function allocateRead(name: string, offset: number, length: number): Uint8Array {
  try {
    return new Uint8Array(length);
  } catch (e) {
    throw new ModelError(
      'too-large',
      `${name}: ${formatBytes(length)} (${length} bytes) from offset ${offset} cannot be held in memory (${(e as Error).message}).`,
    );
  }
}

export function bytesSource(name: string, bytes: Uint8Array): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    read: (offset, length) => bytes.subarray(offset, offset + length),
  };
}

/** protobuf's hard limit: a single message cannot exceed 2 GiB. */
export const MAX_PROTOBUF_BYTES = 2 ** 31 - 1;

/**
 * The largest tensor the studio reads into one typed array. V8 and the browsers refuse bigger
 * ArrayBuffers (or fail to allocate them); past this a tensor gets a 'too-large' error naming it.
 */
export const MAX_TENSOR_BYTES = 2 ** 32 - 1;

/**
 * The external-data files a model may read: a list whose names are paths relative to the model's
 * folder ("model.onnx_data", "weights/w0.bin"), or a lookup by such a path (the CLI opens files
 * lazily). A lookup may throw a ModelError for a location it refuses (a directory, a symlink out).
 */
export type ExternalFiles = ByteSource[] | ((location: string) => ByteSource | undefined);

export interface OnnxModel {
  name: string;
  fileSize: number;
  proto: ModelProto;
  graph: GraphProto;
  /** The external-data files the model reads, by their location (relative to the model's folder). */
  external: Map<string, ByteSource>;
}

export type TensorValues =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

const SIGNATURES: [string, number[]][] = [
  ['a PNG image', [0x89, 0x50, 0x4e, 0x47]],
  ['a JPEG image', [0xff, 0xd8, 0xff]],
  ['a GIF image', [0x47, 0x49, 0x46, 0x38]],
  ['a WebP/RIFF file', [0x52, 0x49, 0x46, 0x46]],
  ['a PDF document', [0x25, 0x50, 0x44, 0x46]],
  ['a ZIP archive (PyTorch .pt/.bin or .npz?)', [0x50, 0x4b, 0x03, 0x04]],
  ['a gzip file', [0x1f, 0x8b]],
  ['a GGUF model (llama.cpp), not ONNX', [0x47, 0x47, 0x55, 0x46]],
  ['a Python pickle (PyTorch checkpoint?)', [0x80]],
  ['a JSON/text file', [0x7b]],
];

function sniff(head: Uint8Array): string | undefined {
  for (const [what, magic] of SIGNATURES) if (magic.every((b, i) => head[i] === b)) return what;
  // safetensors: 8-byte little-endian header length, then '{'
  if (head.length > 9 && head[8] === 0x7b && head[7] === 0 && head[6] === 0) return 'a safetensors file';
  return undefined;
}

/**
 * An external-data `location` as a path relative to the model's folder, '/'-separated, or a
 * ModelError when it is empty or would leave that folder (absolute, a drive, `..` above it).
 * ONNX defines locations relative to the model file; they must not reach anything else.
 */
export function normalizeLocation(modelName: string, location: string): string {
  const refuse = (why: string) =>
    new ModelError(
      'unsafe-path',
      `${modelName} names the external-data location '${location}', which ${why}: ` +
        `external data must be a file inside the model's folder.`,
    );
  if (!location) throw new ModelError('corrupt', `${modelName} has an external tensor with no location.`);
  if (location.includes('\0')) throw refuse('contains a NUL character');
  if (/^[\\/]/.test(location) || /^[A-Za-z]:/.test(location)) throw refuse('is an absolute path');
  const parts: string[] = [];
  for (const part of location.split(/[\\/]/)) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (!parts.length) throw refuse("climbs out of the model's folder with '..'");
      parts.pop();
    } else parts.push(part);
  }
  if (!parts.length) throw refuse('names the folder itself');
  return parts.join('/');
}

const resolvers = new WeakMap<OnnxModel, (location: string) => ByteSource | undefined>();

/** The file behind a tensor's location, opened once per location and remembered in `model.external`. */
function externalFile(model: OnnxModel, location: string): ByteSource | undefined {
  const key = normalizeLocation(model.name, location);
  const known = model.external.get(key);
  if (known) return known;
  const found = resolvers.get(model)?.(key);
  if (found) model.external.set(key, found);
  return found;
}

function missingExternal(model: OnnxModel, location: string, have: string[]): ModelError {
  return new ModelError(
    'missing-external-data',
    `${model.name} keeps its weights in the external file '${location}', which was not provided` +
      (have.length ? ` (got: ${have.join(', ')})` : '') +
      `. Open the .onnx together with '${location}' (or its whole folder).`,
  );
}

/** Parse the main .onnx file; `externalFiles` are the external-data files it may read. */
export function parseModel(main: ByteSource, externalFiles: ExternalFiles = []): OnnxModel {
  const file = main.name;
  if (main.size === 0)
    throw new ModelError('empty-file', `${file} is empty (0 bytes): there is no model in it.`);
  if (main.size > MAX_PROTOBUF_BYTES) {
    throw new ModelError(
      'too-large',
      `${file} is ${formatBytes(main.size)}, but a single ONNX protobuf file cannot exceed 2 GiB. ` +
        `Models this large store their weights as external data (a small .onnx plus .onnx_data): drop those files together.`,
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = main.read(0, main.size);
  } catch (e) {
    throw new ModelError(
      'too-large',
      `${file} (${formatBytes(main.size)}) could not be read into memory: ${(e as Error).message}`,
    );
  }
  if (bytes.byteLength < main.size) {
    throw new ModelError(
      'truncated',
      `${file}: only ${bytes.byteLength} of ${main.size} bytes could be read.`,
    );
  }
  const looksLike = sniff(bytes.subarray(0, 16));
  if (looksLike)
    throw new ModelError('not-onnx', `${file} is not an ONNX model: it looks like ${looksLike}.`);

  let proto: ModelProto;
  try {
    proto = decodeModelProto(bytes);
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    if (/index out of range|premature|truncat/i.test(msg)) {
      throw new ModelError(
        'truncated',
        `${file} is truncated or corrupt: a field declares more bytes than the file holds (${msg}). ` +
          `Was the download or copy interrupted?`,
      );
    }
    throw new ModelError(
      'not-onnx',
      `${file} is not a valid ONNX model: its bytes are not an ONNX protobuf (${msg}).`,
    );
  }
  const graph = proto.graph;
  if (!graph || !proto.ir_version || proto.ir_version < 1 || proto.ir_version > 64) {
    throw new ModelError(
      'not-onnx',
      `${file} is not an ONNX model: it has no ${!graph ? 'graph' : 'valid ir_version'} (ModelProto fields missing).`,
    );
  }

  const model: OnnxModel = { name: file, fileSize: main.size, proto, graph, external: new Map() };
  if (typeof externalFiles === 'function') resolvers.set(model, externalFiles);
  else {
    const byLocation = new Map<string, ByteSource>();
    for (const f of externalFiles) {
      let key = f.name;
      try {
        key = normalizeLocation(file, f.name);
      } catch {
        // a provided name no location can match: it is simply never read
      }
      byLocation.set(key, f);
    }
    const have = [...byLocation.keys()];
    resolvers.set(model, (location) => {
      const found = byLocation.get(location);
      if (!found) throw missingExternal(model, location, have);
      return found;
    });
  }
  checkUniqueInitializers(model);
  // subgraph initializers and Constant-node tensors are read as weights too: check them alike
  for (const t of allStoredTensors(graph)) validateTensor(model, t);
  return model;
}

/**
 * Two initializers of one name in a graph make every reader ambiguous (the ONNX checker and
 * onnxruntime refuse such a model); compressing one of them would silently pick either.
 */
function checkUniqueInitializers(model: OnnxModel): void {
  for (const scope of graphIndex(model.graph).scopes) {
    const seen = new Set<string>();
    for (const t of scope.graph.initializer ?? []) {
      if (seen.has(t.name)) {
        const where = scope.label ? ` in subgraph ${scope.label}` : '';
        throw new ModelError(
          'corrupt',
          `${model.name} has two initializers named '${t.name}'${where}: the model is damaged (ONNX needs each name once).`,
        );
      }
      seen.add(t.name);
    }
  }
}

function externalInfo(t: TensorProto): { location: string; offset: number; length: number | undefined } {
  let location = '';
  let offset = 0;
  let length: number | undefined;
  for (const { key, value } of t.external_data ?? []) {
    if (key === 'location') location = value;
    else if (key === 'offset') offset = Number(value);
    else if (key === 'length') length = Number(value);
  }
  return { location, offset, length };
}

export function isExternal(t: TensorProto): boolean {
  return t.data_location === DATA_LOCATION_EXTERNAL;
}

export function elementCount(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= Number(d);
  return n;
}

/** Checks a tensor's declared shape and storage against the bytes behind it, without decoding it. */
function validateTensor(model: OnnxModel, t: TensorProto): void {
  const where = `${model.name}: tensor '${t.name}'`;
  for (const d of t.dims) {
    if (!Number.isSafeInteger(Number(d)) || Number(d) < 0) {
      throw new ModelError(
        'corrupt',
        `${where} has an invalid dimension ${d} in shape [${t.dims.join(', ')}].`,
      );
    }
  }
  const info = dtypeInfo(t.data_type);
  if (!info) throw new ModelError('corrupt', `${where} has an unknown data type code ${t.data_type}.`);
  const count = elementCount(t.dims);
  if (!info.supported) return; // reported when its values are asked for
  const need = rawByteLength(t.data_type, count);
  if (isExternal(t)) {
    const { location, offset, length } = externalInfo(t);
    const src = externalFile(model, location);
    if (!src) throw missingExternal(model, location, []);
    const len = length ?? need;
    if (len !== need) {
      throw new ModelError('corrupt', `${where} declares ${len} external bytes but its shape needs ${need}.`);
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + len > src.size) {
      throw new ModelError(
        'truncated',
        `${where} reads bytes ${offset}..${offset + len} of '${location}', which has only ${src.size} bytes: the external-data file is truncated or belongs to another model.`,
      );
    }
    return;
  }
  const raw = t.raw_data;
  if (raw && raw.byteLength > 0) {
    if (raw.byteLength !== need) {
      throw new ModelError(
        'corrupt',
        `${where}: shape [${t.dims.join(', ')}] of ${dtypeName(t.data_type)} needs ${need} bytes but raw_data holds ${raw.byteLength}.`,
      );
    }
    return;
  }
  // Without raw_data, values live in the one typed field the dtype uses (ONNX's TensorProto rules);
  // that field is the one checked here and the one encodeTypedFields decodes.
  const field = typedFieldOf(t.data_type);
  const stored = typedFieldLength(t);
  const expected = expectedTypedLength(t.data_type, count);
  if (count > 0 && stored !== expected) {
    const elsewhere = TYPED_FIELDS.filter((f) => f !== field && (t[f]?.length ?? 0) > 0);
    throw new ModelError(
      'corrupt',
      `${where}: shape [${t.dims.join(', ')}] of ${dtypeName(t.data_type)} needs ${expected} values in ${field ?? 'raw_data'} but it stores ${stored}` +
        (elsewhere.length
          ? ` (values were found in ${elsewhere.join(', ')}, which ${dtypeName(t.data_type)} tensors do not use).`
          : '.'),
    );
  }
}

type TypedField = 'float_data' | 'int32_data' | 'int64_data' | 'double_data' | 'uint64_data';
const TYPED_FIELDS: readonly TypedField[] = [
  'float_data',
  'int32_data',
  'int64_data',
  'double_data',
  'uint64_data',
];

/** The TensorProto field that holds a dtype's values when raw_data is absent (onnx.proto's comments). */
function typedFieldOf(code: number): TypedField | undefined {
  switch (code) {
    case DataType.FLOAT:
      return 'float_data';
    case DataType.DOUBLE:
      return 'double_data';
    case DataType.INT64:
      return 'int64_data';
    case DataType.UINT32:
    case DataType.UINT64:
      return 'uint64_data';
    case DataType.INT32:
    case DataType.INT16:
    case DataType.INT8:
    case DataType.UINT16:
    case DataType.UINT8:
    case DataType.BOOL:
    case DataType.FLOAT16:
    case DataType.BFLOAT16:
    case DataType.INT4:
    case DataType.UINT4:
      return 'int32_data';
  }
  return undefined;
}

/** How many entries the dtype's own typed field holds (other fields are not the tensor's values). */
function typedFieldLength(t: TensorProto): number {
  const field = typedFieldOf(t.data_type);
  return field ? (t[field]?.length ?? 0) : 0;
}

function expectedTypedLength(code: number, count: number): number {
  // int4/uint4 pack two values per int32_data entry
  return code === DataType.INT4 || code === DataType.UINT4 ? Math.ceil(count / 2) : count;
}

/** The tensor's little-endian bytes as raw_data would hold them, wherever they are stored. */
export function tensorBytes(model: OnnxModel, t: TensorProto): Uint8Array {
  const info = dtypeInfo(t.data_type);
  if (!info || !info.supported) {
    throw new ModelError(
      'unsupported-dtype',
      `${model.name}: tensor '${t.name}' has data type ${dtypeName(t.data_type)}, which the studio cannot read ` +
        `(supported: float32, float16, bfloat16, float64, int4/8/16/32/64, uint4/8/16/32/64, bool).`,
    );
  }
  const count = elementCount(t.dims);
  const need = rawByteLength(t.data_type, count);
  if (isExternal(t)) return externalBytes(model, t);
  if (t.raw_data && t.raw_data.byteLength > 0) return t.raw_data;
  return encodeTypedFields(t, count, need);
}

/**
 * The bytes an external tensor stores, read as they are (any dtype whose size is known): its
 * declared `length`, or what its shape needs. `part`: only those bytes of them (a writer copying a
 * big tensor in bounded pieces), after the same checks of the whole.
 */
export function externalBytes(
  model: OnnxModel,
  t: TensorProto,
  part?: { start: number; length: number },
): Uint8Array {
  const { location, offset, length } = externalInfo(t);
  const need = length ?? rawByteLength(t.data_type, elementCount(t.dims));
  const src = externalFile(model, location);
  if (!src) throw missingExternal(model, location, []);
  if (!Number.isSafeInteger(need) || need > MAX_TENSOR_BYTES) {
    throw new ModelError(
      'too-large',
      `${model.name}: tensor '${t.name}' holds ${formatBytes(need)} (${need} bytes) in '${location}', ` +
        `more than one array can hold here (${formatBytes(MAX_TENSOR_BYTES)}).`,
    );
  }
  if (!Number.isSafeInteger(offset) || offset < 0 || need < 0 || offset + need > src.size) {
    throw new ModelError(
      'truncated',
      `${model.name}: tensor '${t.name}' reads bytes ${offset}..${offset + need} of '${location}', which has only ${src.size} bytes.`,
    );
  }
  if (part) {
    if (part.start < 0 || part.length < 0 || part.start + part.length > need)
      throw new ModelError(
        'invalid-argument',
        `${model.name}: bytes ${part.start}..${part.start + part.length} are outside tensor '${t.name}' (${need} bytes).`,
      );
    const bytes = src.read(offset + part.start, part.length);
    if (bytes.byteLength !== part.length)
      throw new ModelError(
        'truncated',
        `${model.name}: only ${bytes.byteLength} of ${part.length} bytes of tensor '${t.name}' could be read from '${location}'.`,
      );
    return bytes;
  }
  let bytes: Uint8Array;
  try {
    bytes = src.read(offset, need);
  } catch (e) {
    if (e instanceof RangeError) {
      throw new ModelError(
        'too-large',
        `${model.name}: tensor '${t.name}' (${formatBytes(need)}) could not be held in memory: ${e.message}`,
      );
    }
    throw e;
  }
  if (bytes.byteLength !== need) {
    throw new ModelError(
      'truncated',
      `${model.name}: only ${bytes.byteLength} of the ${need} bytes of tensor '${t.name}' could be read from '${location}'.`,
    );
  }
  return bytes;
}

/**
 * A tensor's bytes as it stores them, to move it between embedded and external data: external or
 * raw bytes of any dtype as they are, typed fields (supported dtypes) as raw bytes.
 */
export function storedBytes(model: OnnxModel, t: TensorProto): Uint8Array {
  if (isExternal(t)) return externalBytes(model, t);
  if (t.raw_data && t.raw_data.byteLength > 0) return t.raw_data;
  return tensorBytes(model, t);
}

function encodeTypedFields(t: TensorProto, count: number, need: number): Uint8Array {
  const out = new Uint8Array(need);
  const view = new DataView(out.buffer);
  const code = t.data_type;
  const field = typedFieldOf(code);
  if (count === 0 || !field) return out;
  // validateTensor checked this field's length; the bound keeps a tensor built after parsing in bounds too
  const values = (t[field] ?? []).slice(0, expectedTypedLength(code, count));
  switch (code) {
    case DataType.FLOAT:
      values.forEach((v, i) => view.setFloat32(i * 4, Number(v), true));
      break;
    case DataType.DOUBLE:
      values.forEach((v, i) => view.setFloat64(i * 8, Number(v), true));
      break;
    case DataType.INT64:
      // exact values: a number field beyond 2^53 would round (2^63 - 1 would wrap to -2^63)
      exactInt64s(t, 'int64_data')
        .slice(0, values.length)
        .forEach((v, i) => view.setBigInt64(i * 8, BigInt.asIntN(64, v), true));
      break;
    case DataType.UINT64:
      exactInt64s(t, 'uint64_data')
        .slice(0, values.length)
        .forEach((v, i) => view.setBigUint64(i * 8, BigInt.asUintN(64, v), true));
      break;
    case DataType.UINT32:
      values.forEach((v, i) => view.setUint32(i * 4, Number(v) >>> 0, true));
      break;
    case DataType.INT32:
      values.forEach((v, i) => view.setInt32(i * 4, Number(v), true));
      break;
    case DataType.INT16:
    case DataType.UINT16:
    case DataType.FLOAT16:
    case DataType.BFLOAT16:
      values.forEach((v, i) => view.setUint16(i * 2, Number(v) & 0xffff, true));
      break;
    default: // int8, uint8, bool, and int4/uint4 (one byte, two nibbles, per entry)
      values.forEach((v, i) => view.setUint8(i, Number(v) & 0xff));
  }
  return out;
}

/**
 * The tensor's values as a typed array of its own type; float16/bfloat16 widen to float32 and
 * int4/uint4 unpack to one Int8Array/Uint8Array entry per value. float32 is zero-copy when aligned.
 */
export function readTensor(model: OnnxModel, t: TensorProto): TensorValues {
  try {
    return decodeTensor(model, t);
  } catch (e) {
    // an array the engine cannot allocate (a huge float16 tensor widened to float32, say)
    if (e instanceof RangeError) {
      const count = elementCount(t.dims);
      throw new ModelError(
        'too-large',
        `${model.name}: tensor '${t.name}' (${count} values of ${dtypeName(t.data_type)}) is too large to decode in memory here: ${e.message}`,
      );
    }
    throw e;
  }
}

function decodeTensor(model: OnnxModel, t: TensorProto): TensorValues {
  const bytes = tensorBytes(model, t);
  const n = elementCount(t.dims);
  const view = <T>(ctor: {
    new (b: ArrayBufferLike, o: number, l: number): T;
    BYTES_PER_ELEMENT: number;
  }): T => {
    if (bytes.byteOffset % ctor.BYTES_PER_ELEMENT === 0) return new ctor(bytes.buffer, bytes.byteOffset, n);
    const copy = new Uint8Array(n * ctor.BYTES_PER_ELEMENT);
    copy.set(bytes.subarray(0, copy.byteLength));
    return new ctor(copy.buffer, 0, n);
  };
  switch (t.data_type) {
    case DataType.FLOAT:
      return view(Float32Array);
    case DataType.DOUBLE:
      return view(Float64Array);
    case DataType.INT8:
      return view(Int8Array);
    case DataType.UINT8:
    case DataType.BOOL:
      return view(Uint8Array);
    case DataType.INT16:
      return view(Int16Array);
    case DataType.UINT16:
      return view(Uint16Array);
    case DataType.INT32:
      return view(Int32Array);
    case DataType.UINT32:
      return view(Uint32Array);
    case DataType.INT64:
      return view(BigInt64Array);
    case DataType.UINT64:
      return view(BigUint64Array);
    case DataType.FLOAT16:
      return castFloat16ToFloat32(view(Uint16Array));
    case DataType.BFLOAT16: {
      const half = view(Uint16Array);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = bfloat16ToFloat32(half[i]);
      return out;
    }
    case DataType.INT4:
    case DataType.UINT4: {
      const signed = t.data_type === DataType.INT4;
      const out = signed ? new Int8Array(n) : new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const nib = (bytes[i >> 1] >> ((i & 1) * 4)) & 0xf; // first value in the low nibble
        out[i] = signed && nib >= 8 ? nib - 16 : nib;
      }
      return out;
    }
  }
  throw new ModelError('unsupported-dtype', `tensor '${t.name}' has data type ${dtypeName(t.data_type)}.`);
}

/** Any numeric tensor as float32 (copies unless it already is float32). */
export function readTensorFloat32(model: OnnxModel, t: TensorProto): Float32Array {
  return readTensorFloat32Owned(model, t).values;
}

/**
 * readTensor, and whether the answer's buffer is the caller's alone (`owned`: nothing in the model or
 * its sources holds it, so it may be given away, e.g. transferred to a worker): values read from an
 * external file whose source reads into fresh buffers, or converted from the stored type. A tensor
 * stored in the model's bytes (raw_data) is a view on them: not owned.
 */
export function readTensorOwned(model: OnnxModel, t: TensorProto): { values: TensorValues; owned: boolean } {
  const v = readTensor(model, t);
  const stored = isExternal(t) ? externalFile(model, externalInfo(t).location) : undefined;
  const whole = v.byteOffset === 0 && v.byteLength === v.buffer.byteLength && v.buffer instanceof ArrayBuffer;
  // half precision is widened into a fresh float32 array wherever it is stored
  const widened = t.data_type === DataType.FLOAT16 || t.data_type === DataType.BFLOAT16;
  return { values: v, owned: whole && (widened || stored?.fresh === true) };
}

/** readTensorFloat32 with readTensorOwned's `owned` (values converted to float32 are always the caller's). */
export function readTensorFloat32Owned(
  model: OnnxModel,
  t: TensorProto,
): { values: Float32Array; owned: boolean } {
  const { values: v, owned } = readTensorOwned(model, t);
  if (v instanceof Float32Array) return { values: v, owned };
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
  return { values: out, owned: true };
}

export function findInitializer(model: OnnxModel, name: string): TensorProto {
  const t = model.graph.initializer.find((x) => x.name === name);
  if (!t) throw new ModelError('invalid-argument', `${model.name} has no initializer named '${name}'.`);
  return t;
}
