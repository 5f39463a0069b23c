/**
 * Writing a model back: weights embedded as raw_data, or moved to an external-data file
 * (4 KiB-aligned offsets, as onnxruntime mmaps them). Never mutates the model it is given.
 */
import { ModelError } from '../errors.ts';
import {
  elementCount,
  externalBytes,
  isExternal,
  MAX_PROTOBUF_BYTES,
  storedBytes,
  type OnnxModel,
} from './model.ts';
import {
  carryOver,
  DATA_LOCATION_EXTERNAL,
  encodeModelProto,
  type GraphProto,
  type ModelProto,
  type TensorProto,
} from './proto.ts';
import { dtypeInfo, rawByteLength } from './dtypes.ts';

export interface ExternalDataOptions {
  /** File name the .onnx refers to, e.g. "model.onnx_data". */
  location: string;
  /** Tensors smaller than this stay embedded (default 1 KiB). */
  threshold?: number;
  /** Offset alignment (default 4096). */
  align?: number;
}

export interface WrittenModel {
  /** The .onnx bytes. */
  model: Uint8Array;
  /** Present when external data was requested: the data file as chunks (a Blob or a stream takes them as-is). */
  externalData?: { location: string; chunks: Uint8Array[]; size: number };
}

/** A bare TensorProto holding `bytes` as raw_data (the shape of every tensor the studio writes). */
export function rawTensor(name: string, dataType: number, dims: number[], bytes: Uint8Array): TensorProto {
  return { name, data_type: dataType, dims, raw_data: bytes };
}

/** One tensor's place in the external-data file: its bytes are read only when they are written. */
export interface ExternalPiece {
  name: string;
  offset: number;
  length: number;
  read(): Uint8Array;
  /**
   * `length` bytes of the piece from `start`: a tensor copied from the source file (an embedding
   * of hundreds of MB) is read and written a bounded part at a time, never whole.
   */
  readPart(start: number, length: number): Uint8Array;
}

/** The written model with its external data as a list of pieces to read and write one at a time. */
export interface PlannedModel {
  model: Uint8Array;
  externalData?: { location: string; pieces: ExternalPiece[]; size: number };
}

/** Where a tensor's stored bytes come from when they are not in the source model (a spool, say). */
export type StoredBytesLookup = (
  t: TensorProto,
) => { length: number; read(): Uint8Array; readPart?(start: number, length: number): Uint8Array } | undefined;

export interface WriteOptions {
  externalData?: ExternalDataOptions;
  graph?: GraphProto;
  /** Model-level fields to replace (opset_import, ir_version) when a rewrite needs newer ops. */
  proto?: Partial<Omit<ModelProto, 'graph'>>;
  /** Bytes of tensors held outside the model (the streaming export's spool); asked first. */
  stored?: StoredBytesLookup;
}

/**
 * Serialize `model` (or `graph` in place of its graph: exporters pass a rewritten one).
 * Tensors pass through exactly as they are stored (raw_data, typed fields, any dtype, fields this
 * studio does not know) unless they must move: with `externalData`, tensors of at least `threshold`
 * bytes go to the data file; tensors stored in the source's external files are embedded otherwise.
 * Only those moving tensors are read, from wherever they live now.
 */
export function writeModel(model: OnnxModel, options: WriteOptions = {}): WrittenModel {
  const planned = planModel(model, options);
  if (!planned.externalData) return { model: planned.model };
  const chunks: Uint8Array[] = [];
  let at = 0;
  for (const piece of planned.externalData.pieces) {
    if (piece.offset > at) chunks.push(new Uint8Array(piece.offset - at));
    chunks.push(piece.read());
    at = piece.offset + piece.length;
  }
  const { location, size } = planned.externalData;
  return { model: planned.model, externalData: { location, chunks, size } };
}

/**
 * What `writeModel` writes, with the external-data file left as pieces (offset, length, a reader)
 * instead of bytes: the streaming export reads and writes them one at a time. The .onnx bytes and
 * every offset are the ones `writeModel` gives, by construction (it is this function).
 */
export function planModel(model: OnnxModel, options: WriteOptions = {}): PlannedModel {
  const graph = options.graph ?? model.graph;
  const ext = options.externalData;
  const threshold = ext?.threshold ?? 1024;
  const align = ext?.align ?? 4096;
  const pieces: ExternalPiece[] = [];
  let offset = 0;
  let embeddedBytes = 0;
  const bytesOf = (t: TensorProto): Uint8Array => options.stored?.(t)?.read() ?? storedBytes(model, t);
  const initializer = graph.initializer.map((t): TensorProto => {
    const held = options.stored?.(t);
    const movesOut = ext !== undefined && storedByteLength(t) >= threshold && (!!held || canExternalize(t));
    if (!movesOut && !isExternal(t) && !held) {
      embeddedBytes += storedByteLength(t);
      return t; // untouched: written back exactly as it was read
    }
    if (!movesOut) {
      const bytes = bytesOf(t);
      embeddedBytes += bytes.byteLength;
      return embeddedCopy(t, bytes);
    }
    const length = held ? held.length : movingLength(t);
    offset += (align - (offset % align)) % align;
    pieces.push({
      name: t.name,
      offset,
      length,
      read: () => checkedLength(t, bytesOf(t), length),
      readPart: (start, n) => {
        if (held?.readPart) return held.readPart(start, n);
        // the source's external file read a range at a time; bytes in memory are viewed
        if (!held && isExternal(t) && start + n <= length)
          return externalBytes(model, t, { start, length: n });
        return checkedLength(t, bytesOf(t), length).subarray(start, start + n);
      },
    });
    const entry: TensorProto = carryOver(t, {
      ...embeddedCopy(t, undefined),
      data_location: DATA_LOCATION_EXTERNAL,
      external_data: [
        { key: 'location', value: ext.location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ],
    });
    delete entry.raw_data;
    offset += length;
    return entry;
  });
  if (embeddedBytes > MAX_PROTOBUF_BYTES) {
    throw new ModelError(
      'too-large',
      `The model's weights (${embeddedBytes} bytes) do not fit in one ONNX file (2 GiB limit): export with external data.`,
    );
  }
  // the rewritten graph and model keep what the source's carried beside their fields (unknown fields)
  const outGraph = carryOver(model.graph, carryOver(graph, { ...graph, initializer }));
  const outProto = carryOver(model.proto, { ...model.proto, ...options.proto, graph: outGraph });
  const bytes = encodeModelProto(outProto);
  return ext
    ? { model: bytes, externalData: { location: ext.location, pieces, size: offset } }
    : { model: bytes };
}

/** The same tensor with `bytes` as raw_data: storage fields go, every other field stays. */
function embeddedCopy(t: TensorProto, bytes: Uint8Array | undefined): TensorProto {
  const embedded: TensorProto = carryOver(t, { ...t, raw_data: bytes });
  for (const field of STORAGE_FIELDS) delete embedded[field];
  if (!bytes) delete embedded.raw_data;
  return embedded;
}

/**
 * The byte length `storedBytes` will return for a tensor about to move, known before reading it:
 * the declared external length, the raw bytes, or what the shape needs (typed fields).
 */
function movingLength(t: TensorProto): number {
  if (isExternal(t)) {
    const declared = t.external_data?.find((e) => e.key === 'length')?.value;
    return declared !== undefined ? Number(declared) : storedByteLength(t);
  }
  if (t.raw_data && t.raw_data.byteLength > 0) return t.raw_data.byteLength;
  return storedByteLength(t);
}

/** A piece whose bytes differ in length from the plan would shift every later offset: refuse it. */
function checkedLength(t: TensorProto, bytes: Uint8Array, length: number): Uint8Array {
  if (bytes.byteLength !== length)
    throw new ModelError(
      'corrupt',
      `Tensor '${t.name}' holds ${bytes.byteLength} bytes where ${length} were planned: its stored length disagrees with its shape.`,
    );
  return bytes;
}

const STORAGE_FIELDS = [
  'float_data',
  'int32_data',
  'int64_data',
  'double_data',
  'uint64_data',
  'data_location',
  'external_data',
] as const;

/** Bytes a tensor's values take as raw data (0 for strings, which are never moved). */
function storedByteLength(t: TensorProto): number {
  return rawByteLength(t.data_type, elementCount(t.dims));
}

/** Whether the tensor's bytes can be read to move them: a dtype the studio decodes, or raw bytes as stored. */
function canExternalize(t: TensorProto): boolean {
  if (dtypeInfo(t.data_type)?.supported) return true;
  return (dtypeInfo(t.data_type)?.bits ?? 0) > 0 && (t.raw_data?.byteLength ?? 0) > 0;
}

export function concatChunks(chunks: Uint8Array[]): Uint8Array {
  const size = chunks.reduce((s, c) => s + c.byteLength, 0);
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
