/**
 * Reading external data safely: locations resolve inside the model's folder (never by basename,
 * never out of it), non-regular files are refused without blocking, big ranges are read in pieces,
 * and tensors the recipe does not touch pass through whatever their dtype.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  bytesSource,
  findInitializer,
  normalizeLocation,
  parseModel,
  readTensor,
  readTensorFloat32,
  type ByteSource,
} from '../../src/core/onnx/model.ts';
import { writeModel } from '../../src/core/onnx/write.ts';
import { DataType } from '../../src/core/onnx/dtypes.ts';
import { floatTensor, makeModelBytes, makeNode, valueInfo } from '../../src/core/onnx/build.ts';
import { decodeModelProto, type TensorProto } from '../../src/core/onnx/proto.ts';
import { pickModelFiles } from '../../src/core/files.ts';
import { compressModel } from '../../src/core/compress/pipeline.ts';
import { exportCompressed } from '../../src/core/compress/export.ts';
import { resolveRecipe } from '../../src/core/compress/recipe.ts';
import { isModelError, type ModelErrorCode } from '../../src/core/errors.ts';
import { fileSource, modelSources } from '../../src/cli/files.ts';
import { main } from '../../src/cli/main.ts';
import { seededFloats } from '../helpers/models.ts';
import { ort, runBytes, tempDir } from '../helpers/ort.ts';

function expectModelError(fn: () => unknown, code: ModelErrorCode, message: RegExp): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(isModelError(error), `expected a ModelError, got ${String(error)}`).toBe(true);
  expect((error as { code: string }).code).toBe(code);
  expect((error as Error).message).toMatch(message);
}

/** A float32 tensor of `n` values stored externally at `location`. */
function externalTensor(name: string, n: number, location: string, offset = 0): TensorProto {
  return {
    name,
    dims: [n],
    data_type: DataType.FLOAT,
    data_location: 1,
    external_data: [
      { key: 'location', value: location },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(n * 4) },
    ],
  };
}

function modelWith(initializers: TensorProto[]): Uint8Array {
  return makeModelBytes({
    nodes: [makeNode('Identity', ['x'], ['y'])],
    inputs: [valueInfo('x', DataType.FLOAT, [1])],
    outputs: [valueInfo('y', DataType.FLOAT, [1])],
    initializers,
  });
}

const floatBytes = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);

describe('external-data locations', () => {
  it('resolve relative to the model folder; anything leaving it is refused by name', () => {
    expect(normalizeLocation('m.onnx', 'a/./b/../w.bin')).toBe('a/w.bin');
    expect(normalizeLocation('m.onnx', 'weights\\w.bin')).toBe('weights/w.bin');
    for (const [location, why] of [
      ['../secret.bin', /climbs out of the model's folder/],
      ['a/../../secret.bin', /climbs out/],
      ['/etc/passwd', /absolute path/],
      ['C:\\Windows\\win.ini', /absolute path/],
      ['\\\\server\\share\\w.bin', /absolute path/],
    ] as const) {
      expectModelError(
        () => parseModel(bytesSource('m.onnx', modelWith([externalTensor('w', 2, location)])), []),
        'unsafe-path',
        new RegExp(`'${location.replace(/[\\.]/g, '\\$&')}'.*${why.source}`),
      );
    }
  });

  it('a location in a subfolder reads that file, not a sibling with the same basename', () => {
    const bytes = modelWith([externalTensor('w', 2, 'sub/w.bin')]);
    const decoy = bytesSource('w.bin', floatBytes([666, 666]));
    const real = bytesSource('sub/w.bin', floatBytes([1.5, -2]));
    const model = parseModel(bytesSource('m.onnx', bytes), [decoy, real]);
    expect(Array.from(readTensorFloat32(model, findInitializer(model, 'w')))).toEqual([1.5, -2]);
    // with only the same-named sibling, the file is missing: it is not read in its place
    expectModelError(
      () => parseModel(bytesSource('m.onnx', bytes), [decoy]),
      'missing-external-data',
      /'sub\/w\.bin', which was not provided \(got: w\.bin\)/,
    );
  });

  it('the page names dropped files by their path inside the model folder', () => {
    const f = (path: string) => ({ path, size: 1, file: path });
    const picked = pickModelFiles(
      ['m/onnx/model.onnx', 'm/onnx/data/w.bin', 'm/onnx/model.onnx_data', 'm/other.bin'].map(f),
    );
    expect(picked.external.map((e) => e.location)).toEqual(['data/w.bin', 'model.onnx_data']);
  });
});

describe('external data on disk (CLI)', () => {
  function folderWithModel(location: string): { dir: string; model: string } {
    const dir = tempDir('cs-io-');
    const model = join(dir, 'model.onnx');
    writeFileSync(model, modelWith([externalTensor('w', 2, location)]));
    return { dir, model };
  }
  const open = (model: string) => {
    const s = modelSources(model);
    return parseModel(s.main, s.external);
  };

  it('reads a data file in a subfolder of the model', () => {
    const { dir, model } = folderWithModel('weights/w.bin');
    mkdirSync(join(dir, 'weights'));
    writeFileSync(join(dir, 'weights', 'w.bin'), floatBytes([3, 4]));
    writeFileSync(join(dir, 'w.bin'), floatBytes([666, 666])); // same basename, other folder
    const m = open(model);
    expect(Array.from(readTensorFloat32(m, findInitializer(m, 'w')))).toEqual([3, 4]);
  });

  it('refuses a symlink that leads out of the model folder', () => {
    const outside = tempDir('cs-outside-');
    writeFileSync(join(outside, 'secret.bin'), floatBytes([7, 8]));
    const { dir, model } = folderWithModel('w.bin');
    symlinkSync(join(outside, 'secret.bin'), join(dir, 'w.bin'));
    expectModelError(
      () => open(model),
      'unsafe-path',
      /'w\.bin' is a link to .*secret\.bin, outside the model's folder/,
    );
  });

  it('refuses a folder and a FIFO as a location, without blocking on the FIFO', () => {
    const a = folderWithModel('data');
    mkdirSync(join(a.dir, 'data'));
    expectModelError(() => open(a.model), 'unsafe-path', /'data' is a folder, not a data file/);
    const b = folderWithModel('pipe.bin');
    execFileSync('mkfifo', [join(b.dir, 'pipe.bin')]);
    expectModelError(() => open(b.model), 'unsafe-path', /'pipe\.bin' is not a regular file/);
  });

  it('refuses ../ and absolute locations, and the CLI exits 1 with that message', async () => {
    const outside = tempDir('cs-outside-');
    writeFileSync(join(outside, 'w.bin'), floatBytes([1, 2]));
    const up = folderWithModel(`../${outside.split('/').pop()}/w.bin`);
    expectModelError(() => open(up.model), 'unsafe-path', /climbs out of the model's folder/);
    const abs = folderWithModel(join(outside, 'w.bin'));
    expectModelError(() => open(abs.model), 'unsafe-path', /is an absolute path/);
    let err = '';
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => ((err += s), true)) as typeof process.stderr.write;
    try {
      expect(await main(['inspect', abs.model], () => {})).toBe(1);
    } finally {
      process.stderr.write = write;
    }
    expect(err).toMatch(/is an absolute path: external data must be a file inside the model's folder/);
  });

  it('reads a range in pieces of the given size, and at offsets beyond 2 GiB of a sparse file', () => {
    const dir = tempDir('cs-io-');
    const path = join(dir, 'big.bin');
    const fd = openSync(path, 'w');
    const beyond = 2 ** 31 + 12345; // past what one 32-bit offset holds
    try {
      ftruncateSync(fd, 2 ** 31 + 2 ** 20); // sparse: no disk blocks, nothing allocated in memory
      writeSync(
        fd,
        Uint8Array.from({ length: 100 }, (_, i) => i),
        0,
        100,
        beyond,
      );
    } finally {
      closeSync(fd);
    }
    const src = fileSource(path, { pieceBytes: 7 });
    expect(src.size).toBe(2 ** 31 + 2 ** 20);
    expect(Array.from(src.read(beyond + 3, 30))).toEqual(Array.from({ length: 30 }, (_, i) => i + 3));
  });

  it('a tensor too large for one array is a typed error naming it, not a RangeError', () => {
    const n = 2 ** 31; // 8 GiB of float32
    // a data file that size, never read: the size check must come before any allocation
    const huge: ByteSource = {
      name: 'huge.bin',
      size: n * 4,
      read: () => {
        throw new Error('must not be read');
      },
    };
    const model = parseModel(bytesSource('m.onnx', modelWith([externalTensor('giant', n, 'huge.bin')])), [
      huge,
    ]);
    expectModelError(
      () => readTensor(model, findInitializer(model, 'giant')),
      'too-large',
      /tensor 'giant' holds 8\.6 GB \(8589934592 bytes\) in 'huge\.bin'/,
    );
  });
});

describe('tensors the recipe does not touch pass through', () => {
  function mixedModel(): Uint8Array {
    const strings: TensorProto = {
      name: 'labels',
      dims: [2],
      data_type: DataType.STRING,
      string_data: [new TextEncoder().encode('yes'), new TextEncoder().encode('no')],
    };
    const float8: TensorProto = {
      name: 'f8',
      dims: [4],
      data_type: DataType.FLOAT8E4M3FN,
      raw_data: Uint8Array.of(0x38, 0x40, 0xb8, 0x00),
    };
    return makeModelBytes({
      nodes: [makeNode('MatMul', ['x', 'w'], ['y']), makeNode('Identity', ['labels'], ['names'])],
      inputs: [valueInfo('x', DataType.FLOAT, ['batch', 32])],
      outputs: [valueInfo('y', DataType.FLOAT, ['batch', 16]), valueInfo('names', DataType.STRING, [2])],
      initializers: [floatTensor('w', [32, 16], seededFloats(32 * 16, 5, 0.5)), strings, float8],
    });
  }

  it('a string and a float8 initializer do not stop int8 compression, and come out as they were', async () => {
    const model = parseModel(bytesSource('mixed.onnx', mixedModel()));
    const result = compressModel(
      model,
      resolveRecipe({ steps: [{ method: 'int8', select: { lmHead: true } }] }),
    );
    expect(result.reports.map((r) => r.name)).toEqual(['w']);
    const out = exportCompressed(model, result).model;
    const inits = decodeModelProto(out).graph!.initializer;
    const labels = inits.find((t) => t.name === 'labels')!;
    expect(labels.string_data!.map((b) => new TextDecoder().decode(b))).toEqual(['yes', 'no']);
    expect(Array.from(inits.find((t) => t.name === 'f8')!.raw_data!)).toEqual([0x38, 0x40, 0xb8, 0x00]);
    const run = await runBytes(out, { x: new ort.Tensor('float32', new Float32Array(32), [1, 32]) });
    expect(run.names.data).toEqual(['yes', 'no']);
  });

  it('with external data, the string stays embedded and the float8 bytes move out unchanged', () => {
    const model = parseModel(bytesSource('mixed.onnx', mixedModel()));
    const written = writeModel(model, { externalData: { location: 'mixed.onnx_data', threshold: 0 } });
    const reread = parseModel(bytesSource('mixed.onnx', written.model), [
      bytesSource('mixed.onnx_data', Buffer.concat(written.externalData!.chunks)),
    ]);
    const labels = findInitializer(reread, 'labels');
    expect(labels.data_location ?? 0).toBe(0);
    expect(labels.string_data!.length).toBe(2);
    const f8 = findInitializer(reread, 'f8');
    expect(f8.data_location).toBe(1);
    const again = writeModel(reread).model; // embedded again: the bytes come back from the data file
    const back = decodeModelProto(again).graph!.initializer.find((t) => t.name === 'f8')!;
    expect(Array.from(back.raw_data!)).toEqual([0x38, 0x40, 0xb8, 0x00]);
  });
});
