/**
 * Writing a model back: weights embedded as raw_data, or moved to an external-data file
 * (4 KiB-aligned offsets, as onnxruntime mmaps them). Never mutates the model it is given.
 */
import { ModelError } from '../errors.ts';
import { elementCount, MAX_PROTOBUF_BYTES, tensorBytes, type OnnxModel } from './model.ts';
import {
  DATA_LOCATION_EXTERNAL,
  encodeModelProto,
  type GraphProto,
  type ModelProto,
  type TensorProto,
} from './proto.ts';
import { rawByteLength } from './dtypes.ts';

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
 * Tensor bytes are read from wherever they live now, including the source model's external files.
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
  const initializer = graph.initializer.map((t): TensorProto => {
    const count = elementCount(t.dims);
    const bytes = tensorBytes(model, t);
    const base: TensorProto = { name: t.name, dims: t.dims, data_type: t.data_type };
    if (t.doc_string) base.doc_string = t.doc_string;
    if (!ext || rawByteLength(t.data_type, count) < threshold) return { ...base, raw_data: bytes };
    const pad = (align - (offset % align)) % align;
    if (pad) chunks.push(new Uint8Array(pad));
    offset += pad;
    chunks.push(bytes);
    const entry: TensorProto = {
      ...base,
      data_location: DATA_LOCATION_EXTERNAL,
      external_data: [
        { key: 'location', value: ext.location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes.byteLength) },
      ],
    };
    offset += bytes.byteLength;
    return entry;
  });
  const embeddedBytes = initializer.reduce((s, t) => s + (t.raw_data?.byteLength ?? 0), 0);
  if (embeddedBytes > MAX_PROTOBUF_BYTES) {
    throw new ModelError(
      'too-large',
      `The model's weights (${embeddedBytes} bytes) do not fit in one ONNX file (2 GiB limit): export with external data.`,
    );
  }
  const bytes = encodeModelProto({ ...model.proto, ...options.proto, graph: { ...graph, initializer } });
  return ext
    ? { model: bytes, externalData: { location: ext.location, chunks, size: offset } }
    : { model: bytes };
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
