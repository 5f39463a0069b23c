import { describe, expect, it } from 'vitest';
import {
  bytesSource,
  parseModel,
  readTensor,
  findInitializer,
  type ByteSource,
} from '../../src/core/onnx/model.ts';
import { writeModel, concatChunks } from '../../src/core/onnx/write.ts';
import { summarizeModel } from '../../src/core/summary.ts';
import { makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { ModelError } from '../../src/core/errors.ts';
import { pickModelFiles } from '../../src/core/files.ts';
import { mlpModel } from '../helpers/models.ts';
import { decodeModelProto, encodeModelProto } from '../../src/core/onnx/proto.ts';

function expectModelError(fn: () => unknown, code: string, message: RegExp) {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a ModelError').toBeInstanceOf(ModelError);
  expect((caught as ModelError).code).toBe(code);
  expect((caught as ModelError).message).toMatch(message);
}

const PNG = Uint8Array.from([
  0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1,
]);

describe('bad input gives a typed error a person understands', () => {
  it('a zero-byte file', () => {
    expectModelError(
      () => parseModel(bytesSource('empty.onnx', new Uint8Array())),
      'empty-file',
      /empty\.onnx is empty \(0 bytes\)/,
    );
  });

  it('a truncated ONNX file', () => {
    const whole = mlpModel();
    const cut = whole.slice(0, Math.floor(whole.length * 0.6));
    expectModelError(
      () => parseModel(bytesSource('cut.onnx', cut)),
      'truncated',
      /cut\.onnx is truncated or corrupt/,
    );
  });

  it('an image renamed .onnx', () => {
    expectModelError(
      () => parseModel(bytesSource('cat.onnx', PNG)),
      'not-onnx',
      /cat\.onnx is not an ONNX model: it looks like a PNG image/,
    );
  });

  it('random bytes that are not a protobuf', () => {
    const junk = new Uint8Array(256).map((_, i) => (i * 37 + 11) & 0xff);
    junk[0] = 0x0f; // a field number 1 / wire type 7 tag: invalid
    expectModelError(
      () => parseModel(bytesSource('junk.onnx', junk)),
      'not-onnx',
      /junk\.onnx is not (a valid ONNX model|an ONNX model)/,
    );
  });

  it('an ONNX whose external-data file is missing', () => {
    const out = writeModel(parseModel(bytesSource('m.onnx', mlpModel())), {
      externalData: { location: 'm.onnx_data' },
    });
    expectModelError(
      () => parseModel(bytesSource('m.onnx', out.model)),
      'missing-external-data',
      /external file 'm\.onnx_data', which was not provided/,
    );
  });

  it('an external-data file shorter than the model says', () => {
    const out = writeModel(parseModel(bytesSource('m.onnx', mlpModel())), {
      externalData: { location: 'm.onnx_data' },
    });
    const data = concatChunks(out.externalData!.chunks).slice(0, 100);
    expectModelError(
      () => parseModel(bytesSource('m.onnx', out.model), [bytesSource('m.onnx_data', data)]),
      'truncated',
      /'m\.onnx_data', which has only 100 bytes/,
    );
  });

  it('an unsupported dtype: the model opens, the tensor says why it has no statistics', () => {
    const bytes = makeModelBytes({
      nodes: [makeNode('Identity', ['x'], ['y'])],
      inputs: [valueInfo('x', DataType.FLOAT, [1])],
      outputs: [valueInfo('y', DataType.FLOAT, [1])],
      initializers: [{ name: 'c', dims: [2], data_type: DataType.COMPLEX64, float_data: [1, 2, 3, 4] }],
    });
    const model = parseModel(bytesSource('complex.onnx', bytes));
    expectModelError(
      () => readTensor(model, findInitializer(model, 'c')),
      'unsupported-dtype',
      /tensor 'c' has data type complex64, which the studio cannot read/,
    );
    const row = summarizeModel(model).tensors[0];
    expect(row.error).toMatch(/complex64/);
    expect(row.mean).toBeUndefined();
  });

  it('a declared length beyond the buffer (raw_data shorter than the shape needs)', () => {
    const bytes = makeModelBytes({
      nodes: [makeNode('Identity', ['x'], ['y'])],
      inputs: [valueInfo('x', DataType.FLOAT, [1])],
      outputs: [valueInfo('y', DataType.FLOAT, [1])],
      initializers: [
        { name: 'w', dims: [1000, 1000], data_type: DataType.FLOAT, raw_data: new Uint8Array(16) },
      ],
    });
    expectModelError(
      () => parseModel(bytesSource('lie.onnx', bytes)),
      'corrupt',
      /tensor 'w': shape \[1000, 1000\] of float32 needs 4000000 bytes but raw_data holds 16/,
    );
  });

  it('a protobuf length prefix that points past the end of the file', () => {
    // field 7 (graph), wire type 2, declared length 2^20, followed by 3 bytes
    const bytes = Uint8Array.from([0x08, 0x08, 0x3a, 0x80, 0x80, 0x40, 1, 2, 3]);
    expectModelError(
      () => parseModel(bytesSource('liar.onnx', bytes)),
      'truncated',
      /more bytes than the file holds/,
    );
  });

  it('a file far larger than memory allows is refused before any byte is read', () => {
    let reads = 0;
    const huge: ByteSource = { name: 'huge.onnx', size: 5e12, read: () => (reads++, new Uint8Array()) };
    expectModelError(
      () => parseModel(huge),
      'too-large',
      /huge\.onnx is 5\.0 TB, but a single ONNX protobuf file cannot exceed 2 GiB/,
    );
    expect(reads).toBe(0);
  });

  it('a read that fails for lack of memory is reported, not thrown raw', () => {
    const failing: ByteSource = {
      name: 'big.onnx',
      size: 1.5e9,
      read: () => {
        throw new RangeError('Array buffer allocation failed');
      },
    };
    expectModelError(
      () => parseModel(failing),
      'too-large',
      /could not be read into memory: Array buffer allocation failed/,
    );
  });

  it('two initializers of one name (readers would be ambiguous)', () => {
    const proto = decodeModelProto(mlpModel());
    const [first, second] = proto.graph!.initializer;
    second.name = first.name;
    expectModelError(
      () => parseModel(bytesSource('dup.onnx', encodeModelProto(proto))),
      'corrupt',
      new RegExp(`dup\\.onnx has two initializers named '${first.name}'`),
    );
  });

  it('a drop with no .onnx in it', () => {
    expectModelError(
      () => pickModelFiles([{ path: 'photo.png', size: 3, file: null }]),
      'not-onnx',
      /No \.onnx file among what was dropped \(photo\.png\)/,
    );
  });
});

describe('picking files from a dropped folder', () => {
  it('prefers onnx/model.onnx and keeps config, tokenizer and data files', () => {
    const f = (path: string) => ({ path, size: 1, file: path });
    const picked = pickModelFiles(
      [
        'm/config.json',
        'm/tokenizer.json',
        'm/onnx/model_q4.onnx',
        'm/onnx/model.onnx',
        'm/onnx/model.onnx_data',
      ].map(f),
    );
    expect(picked.main.path).toBe('m/onnx/model.onnx');
    expect(picked.variants.map((v) => v.path)).toEqual(['m/onnx/model_q4.onnx']);
    expect(picked.external.map((v) => v.path)).toEqual(['m/onnx/model.onnx_data']);
    expect(picked.config?.path).toBe('m/config.json');
    expect(picked.tokenizer?.path).toBe('m/tokenizer.json');
  });
});
