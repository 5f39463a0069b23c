/**
 * compress never writes the user's files: an output that is a source (by path, symlink, hard link,
 * or the source's external-data file) is refused before any work; the output folder is checked
 * first; files are written to a temporary name and renamed; --copy rewrites a model byte for byte.
 */
import { describe, expect, it } from 'vitest';
import {
  copyFileSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { bytesSource, parseModel } from '../../src/core/onnx/model.ts';
import { writeModel } from '../../src/core/onnx/write.ts';
import { mlpModel } from '../helpers/models.ts';
import { DEMO_MODEL, STORIES_MODEL } from '../helpers/fixtures.ts';
import { cacheFeeds } from '../helpers/demo.ts';
import { floatInput, idsInput, runBytes, runPath, tempDir } from '../helpers/ort.ts';
import { runCli as run, sha256File } from '../helpers/cli.ts';

const sha = sha256File;

/** A folder holding mlp.onnx with its weights in mlp.onnx_data. */
function externalModelFolder(): { dir: string; model: string; data: string } {
  const dir = tempDir('cs-out-');
  const parsed = parseModel(bytesSource('mlp.onnx', mlpModel(64, 128, 32)));
  const written = writeModel(parsed, { externalData: { location: 'mlp.onnx_data' } });
  const model = join(dir, 'mlp.onnx');
  const data = join(dir, 'mlp.onnx_data');
  writeFileSync(model, written.model);
  writeFileSync(data, Buffer.concat(written.externalData!.chunks));
  return { dir, model, data };
}

function copyOfStories(): { dir: string; model: string } {
  const dir = tempDir('cs-out-');
  const model = join(dir, 'model.onnx');
  copyFileSync(STORIES_MODEL, model);
  return { dir, model };
}

describe('compress refuses outputs that are inputs, before any work', () => {
  it('-o a hard link or a symlink to the source', async () => {
    const { dir, model } = copyOfStories();
    const before = sha(model);
    linkSync(model, join(dir, 'hard.onnx'));
    symlinkSync(model, join(dir, 'soft.onnx'));
    for (const name of ['hard.onnx', 'soft.onnx']) {
      const r = await run(['compress', model, '--int8', '-o', join(dir, name)]);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(
        new RegExp(`Refusing to overwrite the source model: .*${name} is the same file as .*model\\.onnx`),
      );
    }
    expect(sha(model)).toBe(before);
  });

  it("-o naming the source's own external-data file, or an output whose data file is the source's", async () => {
    const { dir, model, data } = externalModelFolder();
    const before = [sha(model), sha(data)];
    // the .onnx output would be the source's data file
    let r = await run(['compress', model, '--int8', '-o', data]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/Refusing to overwrite the source model: .*mlp\.onnx_data/);
    // out.onnx beside a hard link named out.onnx_data → the output's data file is the source's
    linkSync(data, join(dir, 'out.onnx_data'));
    r = await run(['compress', model, '--int8', '-o', join(dir, 'out.onnx')]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/out\.onnx_data is the same file as .*mlp\.onnx_data/);
    expect([sha(model), sha(data)]).toEqual(before);
    expect(readdirSync(dir).sort()).toEqual(['mlp.onnx', 'mlp.onnx_data', 'out.onnx_data']);
  });

  it('a missing output folder, or -o naming a folder, is an error before the model is read', async () => {
    const dir = tempDir('cs-out-');
    let r = await run([
      'compress',
      join(dir, 'no-such-model.onnx'),
      '--int8',
      '-o',
      join(dir, 'nope', 'x.onnx'),
    ]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/the folder .*nope does not exist/);
    mkdirSync(join(dir, 'sub'));
    r = await run(['compress', STORIES_MODEL, '--int8', '-o', join(dir, 'sub')]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/sub is a folder: name the \.onnx file to write/);
  });
});

describe('writing the output', () => {
  it('replaces an existing output by rename: a file hard-linked to it elsewhere keeps its bytes', async () => {
    const { dir, model } = copyOfStories();
    const keep = join(dir, 'keep.bin');
    writeFileSync(keep, 'precious');
    const out = join(dir, 'out.onnx');
    linkSync(keep, out); // writing through out.onnx would change keep.bin
    const r = await run(['compress', model, '--int8', '-o', out]);
    expect(r.code).toBe(0);
    expect(readFileSync(keep, 'utf8')).toBe('precious');
    expect(statSync(out).ino).not.toBe(statSync(keep).ino);
    // no temporary file is left behind
    expect(readdirSync(dir).sort()).toEqual(['keep.bin', 'model.onnx', 'out.onnx']);
    const logits = (await runPath(out, idsInput([1, 300, 40]))).logits;
    expect(logits.dims).toEqual([1, 3, 512]);
  });

  it('an external-data model compresses into a new .onnx + data pair onnxruntime loads', async () => {
    const { dir, model } = externalModelFolder();
    const out = join(dir, 'q.onnx');
    const r = await run(['compress', model, '--int8', '--lm-head', '-o', out]);
    expect(r.code).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['mlp.onnx', 'mlp.onnx_data', 'q.onnx', 'q.onnx_data']);
    const y = (await runPath(out, { x: floatInput([2, 64]) })).y;
    expect(y.dims).toEqual([2, 32]);
  });
});

describe('compress --copy', () => {
  it('with a method flag is an error, not a silent copy', async () => {
    const r = await run(['compress', STORIES_MODEL, '--copy', '--int8', '-o', join(tempDir(), 'x.onnx')]);
    expect(r.code).toBe(2); // a usage error
    expect(r.err).toMatch(/--copy rewrites the model unchanged: drop --int8, or drop --copy/);
  });

  for (const [label, source] of [
    ['stories260K', STORIES_MODEL],
    ['the demo GPT-2 model', DEMO_MODEL],
  ] as const) {
    it(`rewrites ${label} byte-identical, and onnxruntime runs the copy`, async () => {
      const out = join(tempDir('cs-copy-'), 'copy.onnx');
      const r = await run(['compress', source, '--copy', '-o', out]);
      expect(r.code).toBe(0);
      expect(sha(out)).toBe(sha(source));
      const bytes = new Uint8Array(readFileSync(source));
      // the demo's KV cache fed empty, with its mask and positions
      const feeds = source === DEMO_MODEL ? cacheFeeds(bytes, [1, 20, 30, 40]) : idsInput([1, 20, 30, 40]);
      const a = (await runBytes(bytes, feeds)).logits.data as Float32Array;
      const b = (await runPath(out, feeds)).logits.data as Float32Array;
      expect(Array.from(b)).toEqual(Array.from(a));
    });
  }
});
