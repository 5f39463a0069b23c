/**
 * int64 values beyond 2^53 survive read → write exactly, and a model with nothing to rewrite is
 * written back byte for byte (both real fixtures), judged by the bytes and by onnxruntime-node.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import {
  bytesSource,
  findInitializer,
  parseModel,
  readTensor,
  type OnnxModel,
} from '../../src/core/onnx/model.ts';
import { writeModel } from '../../src/core/onnx/write.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import {
  AttributeType,
  decodeModelProto,
  exactInt64,
  exactInt64s,
  type AttributeProto,
} from '../../src/core/onnx/proto.ts';
import { totalsFor, type CompressionResult } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { isModelError } from '../../src/core/errors.ts';
import { DEMO_MODEL, STORIES_MODEL } from '../helpers/fixtures.ts';
import { idsInput, runBytes } from '../helpers/ort.ts';

const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
const UINT64_MAX = (1n << 64n) - 1n;
const BEYOND_2_53 = (1n << 53n) + 1n; // the first integer a double cannot hold
const BIG_VALUES = [INT64_MAX, INT64_MIN, BEYOND_2_53, -BEYOND_2_53, 5n];

/** Constant nodes whose attributes hold the big values, and an int64 initializer in int64_data. */
function bigIntModel(): Uint8Array {
  const ints: AttributeProto = { name: 'value_ints', type: AttributeType.INTS, ints: BIG_VALUES };
  const one: AttributeProto = { name: 'value_int', type: AttributeType.INT, i: INT64_MAX };
  return makeModelBytes({
    nodes: [
      { op_type: 'Constant', input: [], output: ['ints_out'], attribute: [ints] },
      { op_type: 'Constant', input: [], output: ['int_out'], attribute: [one] },
      makeNode('Identity', ['typed'], ['typed_out']),
    ],
    inputs: [],
    outputs: [
      valueInfo('ints_out', DataType.INT64, [BIG_VALUES.length]),
      valueInfo('int_out', DataType.INT64, []),
      valueInfo('typed_out', DataType.INT64, [BIG_VALUES.length]),
    ],
    initializers: [
      { name: 'typed', dims: [BIG_VALUES.length], data_type: DataType.INT64, int64_data: BIG_VALUES },
      { name: 'unsigned', dims: [2], data_type: DataType.UINT64, uint64_data: [UINT64_MAX, 1n << 60n] },
    ],
  });
}

/** What compress --copy exports: a result with no tensor rewritten. */
function nothingDone(model: OnnxModel): CompressionResult {
  return { outcomes: [], reports: [], totals: totalsFor(model, []), warnings: [] };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a).equals(Buffer.from(b));
}

describe('int64 values are exact from read to write', () => {
  it('attributes i and ints, and int64_data/uint64_data, keep 2^63−1, −2^63 and 2^53+1', () => {
    const original = bigIntModel();
    const model = parseModel(bytesSource('big.onnx', original));
    const [intsNode, intNode] = model.graph.node;
    expect(exactInt64s(intsNode.attribute![0], 'ints')).toEqual(BIG_VALUES);
    // the field itself holds the nearest number; the exact value rides beside it
    expect(Number(intNode.attribute![0].i)).toBe(Number(INT64_MAX));
    expect(exactInt64(intNode.attribute![0], 'i')).toBe(INT64_MAX);
    expect(Array.from(readTensor(model, findInitializer(model, 'typed')) as BigInt64Array)).toEqual(
      BIG_VALUES,
    );
    expect(Array.from(readTensor(model, findInitializer(model, 'unsigned')) as BigUint64Array)).toEqual([
      UINT64_MAX,
      1n << 60n,
    ]);

    const written = writeModel(model).model;
    expect(sameBytes(written, original)).toBe(true);
    const again = decodeModelProto(written);
    expect(exactInt64s(again.graph!.node[0].attribute![0], 'ints')).toEqual(BIG_VALUES);
    expect(exactInt64s(again.graph!.initializer[0], 'int64_data')).toEqual(BIG_VALUES);
  });

  it('onnxruntime reads the exact values back from the written model', async () => {
    const written = writeModel(parseModel(bytesSource('big.onnx', bigIntModel()))).model;
    const out = await runBytes(written, {});
    expect(Array.from(out.ints_out.data as BigInt64Array)).toEqual(BIG_VALUES);
    expect(Array.from(out.int_out.data as BigInt64Array)).toEqual([INT64_MAX]);
    expect(Array.from(out.typed_out.data as BigInt64Array)).toEqual(BIG_VALUES);
  });

  it('a value the code changed is written as changed, not as the exact value it replaced', () => {
    const model = parseModel(bytesSource('big.onnx', bigIntModel()));
    const attr = model.graph.node[1].attribute![0];
    attr.i = 7;
    const again = decodeModelProto(writeModel(model).model);
    expect(again.graph!.node[1].attribute![0].i).toBe(7);
  });

  it('fields this schema does not know are written back as they were read', () => {
    const base = bigIntModel();
    // ModelProto field 26 (newer ONNX, unknown to this schema), length-delimited: 'abc'
    const original = new Uint8Array([...base, 0xd2, 0x01, 3, 0x61, 0x62, 0x63]); // tag 26·8+2 as a varint
    const written = writeModel(parseModel(bytesSource('u.onnx', original))).model;
    expect(sameBytes(written, original)).toBe(true);
  });

  it('a name that is not valid UTF-8 is written back with its own bytes', () => {
    const base = Buffer.from(
      makeModelBytes({
        nodes: [makeNode('Identity', ['x'], ['y'], {}, { name: 'NODE_X' })],
        inputs: [valueInfo('x', DataType.FLOAT, [1])],
        outputs: [valueInfo('y', DataType.FLOAT, [1])],
      }),
    );
    const at = base.indexOf('NODE_X');
    base[at + 4] = 0xff; // "NODE\xff\xfe": not UTF-8, decoded with U+FFFD
    base[at + 5] = 0xfe;
    const original = new Uint8Array(base);
    const model = parseModel(bytesSource('n.onnx', original));
    expect(model.graph.node[0].name).toBe('NODE\ufffd\ufffd');
    expect(sameBytes(writeModel(model).model, original)).toBe(true);
  });

  it('nesting deeper than protobuf allows is a typed error, not a stack overflow', () => {
    // graph → node → attribute g → graph → … 60 times: 180 nested messages
    let graph = new Uint8Array(0);
    const field = (id: number, body: Uint8Array) => {
      const len: number[] = [];
      for (let n = body.length; ; n >>>= 7) {
        if (n < 0x80) {
          len.push(n);
          break;
        }
        len.push((n & 0x7f) | 0x80);
      }
      return new Uint8Array([(id << 3) | 2, ...len, ...body]);
    };
    for (let i = 0; i < 60; i++) graph = field(1, field(5, field(6, graph))); // node, attribute, g
    const bytes = new Uint8Array([0x08, 0x08, ...field(7, graph)]);
    let error: unknown;
    try {
      parseModel(bytesSource('deep.onnx', bytes));
    } catch (e) {
      error = e;
    }
    expect(isModelError(error)).toBe(true);
    expect((error as Error).message).toMatch(/nested deeper than 100/);
  });
});

describe('a model with nothing to rewrite comes out byte-identical', () => {
  for (const [label, path] of [
    ['stories260K (packed int64 attributes)', STORIES_MODEL],
    ['the demo GPT-2 model', DEMO_MODEL],
  ] as const) {
    it(`${label}: writeModel and an export with no step reproduce every byte`, () => {
      const original = new Uint8Array(readFileSync(path));
      const model = parseModel(bytesSource('model.onnx', original));
      expect(sameBytes(writeModel(model).model, original)).toBe(true);
      expect(sameBytes(exportCompressed(model, nothingDone(model)).model, original)).toBe(true);
    });
  }

  it('onnxruntime gives the same logits for the rewritten stories260K', async () => {
    const original = new Uint8Array(readFileSync(STORIES_MODEL));
    const model = parseModel(bytesSource('model.onnx', original));
    const copy = exportCompressed(model, nothingDone(model)).model;
    const feeds = idsInput([1, 403, 407, 261]);
    const a = (await runBytes(original, feeds)).logits.data as Float32Array;
    const b = (await runBytes(copy, feeds)).logits.data as Float32Array;
    expect(Array.from(b)).toEqual(Array.from(a));
  });
});
