import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  bytesSource,
  parseModel,
  readTensor,
  readTensorFloat32,
  findInitializer,
} from '../../src/core/onnx/model.ts';
import { writeModel } from '../../src/core/onnx/write.ts';
import { DataType, float16ToFloat32 } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { float16Model, mlpModel, seededFloats } from '../helpers/models.ts';
import { floatInput, idsInput, ort, runBytes, runPath, tempDir, writeFiles } from '../helpers/ort.ts';
import { STORIES_MODEL } from '../helpers/fixtures.ts';

const STORIES = STORIES_MODEL;

function exactlyEqual(a: ort.Tensor, b: ort.Tensor) {
  expect(a.dims).toEqual(b.dims);
  expect(
    Buffer.from((b.data as Float32Array).buffer).equals(Buffer.from((a.data as Float32Array).buffer)),
  ).toBe(true);
}

describe('ONNX read → write round trip, judged by onnxruntime-node', () => {
  it('an MLP with float32 weights gives bit-identical outputs', async () => {
    const original = mlpModel();
    const written = writeModel(parseModel(bytesSource('mlp.onnx', original))).model;
    const feeds = { x: floatInput([3, 16]) };
    exactlyEqual((await runBytes(original, feeds)).y, (await runBytes(written, feeds)).y);
  });

  it('float16 weights survive and decode to the values onnxruntime uses', async () => {
    const original = float16Model();
    const model = parseModel(bytesSource('f16.onnx', original));
    const w = findInitializer(model, 'w16');
    expect(w.data_type).toBe(DataType.FLOAT16);
    const decoded = readTensorFloat32(model, w);
    const raw = new Uint16Array(Uint8Array.from(w.raw_data!).buffer);
    for (let i = 0; i < raw.length; i++) expect(decoded[i]).toBe(float16ToFloat32(raw[i]));
    // Identity input through the graph exposes the weights onnxruntime actually used.
    const eye = new Float32Array(16 * 16);
    for (let i = 0; i < 16; i++) eye[i * 17] = 1;
    const y = (await runBytes(original, { x: new ort.Tensor('float32', eye, [16, 16]) })).y
      .data as Float32Array;
    expect(Array.from(y)).toEqual(Array.from(decoded));
    const written = writeModel(model).model;
    const feeds = { x: floatInput([2, 16], 9) };
    exactlyEqual((await runBytes(original, feeds)).y, (await runBytes(written, feeds)).y);
  });

  it('external data: write weights to .onnx_data, read them back, onnxruntime loads both ways', async () => {
    const original = mlpModel(64, 128, 32);
    const model = parseModel(bytesSource('mlp.onnx', original));
    const out = writeModel(model, { externalData: { location: 'mlp.onnx_data' } });
    expect(out.externalData!.size).toBeGreaterThan(64 * 128 * 4);
    const data = new Uint8Array(out.externalData!.size);
    let at = 0;
    for (const c of out.externalData!.chunks) {
      data.set(c, at);
      at += c.byteLength;
    }
    expect(out.model.byteLength).toBeLessThan(4096);
    const dir = tempDir();
    writeFiles(dir, { 'mlp.onnx': out.model, 'mlp.onnx_data': data });
    const feeds = { x: floatInput([4, 64], 3) };
    const reference = (await runBytes(original, feeds)).y;
    exactlyEqual(reference, (await runPath(join(dir, 'mlp.onnx'), feeds)).y);

    // Read the external model back (with its data file) and embed the weights again.
    const reread = parseModel(bytesSource('mlp.onnx', out.model), [bytesSource('mlp.onnx_data', data)]);
    const w1 = findInitializer(reread, 'w1');
    expect(w1.data_location).toBe(1);
    expect(Array.from(readTensorFloat32(reread, w1))).toEqual(Array.from(seededFloats(64 * 128, 1, 0.5)));
    exactlyEqual(reference, (await runBytes(writeModel(reread).model, feeds)).y);
  });

  it('the pretrained stories260K Llama model round-trips with identical logits', async () => {
    const original = new Uint8Array(readFileSync(STORIES));
    const written = writeModel(parseModel(bytesSource('model.onnx', original))).model;
    const feeds = idsInput([1, 403, 407, 261, 378, 383, 286, 261]);
    exactlyEqual((await runBytes(original, feeds)).logits, (await runBytes(written, feeds)).logits);
  });

  it('the original model object is not modified by writing', () => {
    const model = parseModel(bytesSource('mlp.onnx', mlpModel()));
    const before = JSON.stringify(
      model.graph.initializer.map((t) => [t.name, t.data_location, t.external_data]),
    );
    writeModel(model, { externalData: { location: 'x.onnx_data', threshold: 0 } });
    expect(
      JSON.stringify(model.graph.initializer.map((t) => [t.name, t.data_location, t.external_data])),
    ).toBe(before);
  });
});

describe('tensor decoding', () => {
  it('decodes every supported dtype from raw_data and from typed fields', () => {
    const le = (arr: ArrayBufferView) =>
      new Uint8Array(arr.buffer.slice(arr.byteOffset, arr.byteOffset + arr.byteLength));
    const model = parseModel(
      bytesSource(
        'dtypes.onnx',
        makeModelBytes({
          nodes: [makeNode('Identity', ['x'], ['y'])],
          inputs: [valueInfo('x', DataType.FLOAT, [1])],
          outputs: [valueInfo('y', DataType.FLOAT, [1])],
          initializers: [
            { name: 'i8', dims: [3], data_type: DataType.INT8, raw_data: le(Int8Array.of(-128, 0, 127)) },
            { name: 'u8', dims: [2], data_type: DataType.UINT8, raw_data: le(Uint8Array.of(0, 255)) },
            { name: 'i32', dims: [2], data_type: DataType.INT32, raw_data: le(Int32Array.of(-5, 1 << 30)) },
            {
              name: 'i64',
              dims: [2],
              data_type: DataType.INT64,
              raw_data: le(BigInt64Array.of(-3n, 1n << 40n)),
            },
            {
              name: 'f64',
              dims: [2],
              data_type: DataType.DOUBLE,
              raw_data: le(Float64Array.of(Math.PI, -1e300)),
            },
            {
              name: 'bf16',
              dims: [2],
              data_type: DataType.BFLOAT16,
              raw_data: le(Uint16Array.of(0x3f80, 0xc040)),
            },
            {
              name: 'f16',
              dims: [3],
              data_type: DataType.FLOAT16,
              raw_data: le(Uint16Array.of(0x3c00, 0xc000, 0x0001)),
            },
            { name: 'floats', dims: [2], data_type: DataType.FLOAT, float_data: [1.5, -2.25] },
            { name: 'ints', dims: [2], data_type: DataType.INT64, int64_data: [7, -9] },
            { name: 'halfs', dims: [1], data_type: DataType.FLOAT16, int32_data: [0x3800] },
            { name: 'i4', dims: [3], data_type: DataType.INT4, raw_data: Uint8Array.of(0xf7, 0x08) },
            floatTensor('unaligned-ok', [2], [1, 2]),
          ],
        }),
      ),
    );
    const values = (name: string) =>
      Array.from(readTensor(model, findInitializer(model, name)) as ArrayLike<number | bigint>);
    expect(values('i8')).toEqual([-128, 0, 127]);
    expect(values('u8')).toEqual([0, 255]);
    expect(values('i32')).toEqual([-5, 1 << 30]);
    expect(values('i64')).toEqual([-3n, 1n << 40n]);
    expect(values('f64')).toEqual([Math.PI, -1e300]);
    expect(values('bf16')).toEqual([1, -3]);
    expect(values('f16')).toEqual([1, -2, 2 ** -24]);
    expect(values('floats')).toEqual([1.5, -2.25]);
    expect(values('ints')).toEqual([7n, -9n]);
    expect(values('halfs')).toEqual([0.5]);
    expect(values('i4')).toEqual([7, -1, -8]);
    expect(values('unaligned-ok')).toEqual([1, 2]);
  });

  it('float32 raw data is zero-copy when aligned', () => {
    const bytes = mlpModel();
    const model = parseModel(bytesSource('mlp.onnx', bytes));
    const w = findInitializer(model, 'w1');
    const v = readTensor(model, w) as Float32Array;
    if (w.raw_data!.byteOffset % 4 === 0) expect(v.buffer).toBe(w.raw_data!.buffer);
    else expect(v.buffer).not.toBe(w.raw_data!.buffer);
    expect(v.length).toBe(16 * 32);
  });
});
