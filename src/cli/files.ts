/** Node-side byte sources: files read by range through a descriptor, never slurped unless asked. */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import type { ByteSource } from '../core/onnx/model.ts';
import { ModelError } from '../core/errors.ts';

export function fileSource(path: string): ByteSource {
  if (!existsSync(path)) throw new ModelError('invalid-argument', `${path}: no such file.`);
  const size = statSync(path).size;
  return {
    name: basename(path),
    size,
    read(offset, length) {
      const out = new Uint8Array(length);
      const fd = openSync(path, 'r');
      try {
        let at = 0;
        while (at < length) {
          const n = readSync(fd, out, at, length - at, offset + at);
          if (n === 0) break;
          at += n;
        }
        return at === length ? out : out.subarray(0, at);
      } finally {
        closeSync(fd);
      }
    },
  };
}

/** The .onnx and the external-data files beside it that it may refer to (every other file in its folder). */
export function modelSources(path: string): { main: ByteSource; external: ByteSource[] } {
  const main = fileSource(path);
  const dir = dirname(path);
  const external: ByteSource[] = [];
  // Only files named as the HF/onnx exporters name external data, so a folder of models stays cheap to open.
  for (const candidate of [
    `${basename(path)}_data`,
    `${basename(path)}.data`,
    `${basename(path, '.onnx')}.onnx_data`,
  ]) {
    const p = join(dir, candidate);
    if (existsSync(p) && candidate !== basename(path)) external.push(fileSource(p));
  }
  return { main, external };
}
