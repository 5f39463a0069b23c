/**
 * Writing a model back: weights embedded as raw_data, or moved to an external-data file
 * (4 KiB-aligned offsets, as onnxruntime mmaps them). Never mutates the model it is given.
 */
import { ModelError } from '../errors.ts';
import { elementCount, isExternal, MAX_PROTOBUF_BYTES, storedBytes, type OnnxModel } from './model.ts';
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

/**
 * Serialize `model` (or `graph` in place of its graph: exporters pass a rewritten one).
 * Tensors pass through exactly as they are stored (raw_data, typed fields, any dtype, fields this
 * studio does not know) unless they must move: with `externalData`, tensors of at least `threshold`
 * bytes go to the data file; tensors stored in the source's external files are embedded otherwise.
 * Only those moving tensors are read, from wherever they live now.
 */
export function writeModel(
  model: OnnxModel,
  options: {
    externalData?: ExternalDataOptions;
    graph?: GraphProto;
    /** Model-level fields to replace (opset_import, ir_version) when a rewrite needs newer ops. */
    proto?: Partial<Omit<ModelProto, 'graph'>>;
  } = {},
): WrittenModel {
  const graph = options.graph ?? model.graph;
  const ext = options.externalData;
  const threshold = ext?.threshold ?? 1024;
  const align = ext?.align ?? 4096;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  let embeddedBytes = 0;
  const initializer = graph.initializer.map((t): TensorProto => {
    const movesOut = ext !== undefined && storedByteLength(t) >= threshold && canExternalize(t);
    if (!movesOut && !isExternal(t)) {
      embeddedBytes += storedByteLength(t);
      return t; // untouched: written back exactly as it was read
    }
    const bytes = storedBytes(model, t);
    // the same tensor with its bytes as raw_data: storage fields go, every other field stays
    const embedded: TensorProto = carryOver(t, { ...t, raw_data: bytes });
    for (const field of STORAGE_FIELDS) delete embedded[field];
    if (!movesOut) {
      embeddedBytes += bytes.byteLength;
      return embedded;
    }
    const pad = (align - (offset % align)) % align;
    if (pad) chunks.push(new Uint8Array(pad));
    offset += pad;
    chunks.push(bytes);
    const entry: TensorProto = carryOver(t, {
      ...embedded,
      data_location: DATA_LOCATION_EXTERNAL,
      external_data: [
        { key: 'location', value: ext.location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes.byteLength) },
      ],
    });
    delete entry.raw_data;
    offset += bytes.byteLength;
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
    ? { model: bytes, externalData: { location: ext.location, chunks, size: offset } }
    : { model: bytes };
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
