/**
 * The streaming export's Node side: a spool in a temporary file and the two outputs written through
 * file descriptors as the tensors come, each to a temporary file renamed into place at the end
 * (the data file first, the .onnx last), as `writeFilesAtomically` does for bytes held in memory.
 */
import { closeSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { ModelError } from '../core/errors.ts';
import { allocateRead } from '../core/onnx/model.ts';
import type { ExportSink, Spool } from '../core/compress/stream-export.ts';
import { READ_PIECE_BYTES } from './files.ts';

/** Writes all of `bytes` at `position` (or at the descriptor's end when null), in pieces Node accepts. */
function writeAll(fd: number, bytes: Uint8Array, position: number | null): void {
  for (let at = 0; at < bytes.byteLength;) {
    const n = Math.min(READ_PIECE_BYTES, bytes.byteLength - at);
    at += writeSync(fd, bytes, at, n, position === null ? null : position + at);
  }
}

function tempBeside(path: string, tag: string): string {
  return join(
    dirname(resolve(path)),
    `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.${tag}`,
  );
}

/** A spool in a temporary file beside `near` (same disk as the output); removed by `close`. */
export function fileSpool(near: string): Spool & { close(): void } {
  const path = tempBeside(near, 'spool');
  const fd = openSync(path, 'wx+');
  let size = 0;
  return {
    append(bytes) {
      const at = size;
      writeAll(fd, bytes, at);
      size += bytes.byteLength;
      return at;
    },
    read(offset, length) {
      const out = allocateRead(path, offset, length);
      for (let at = 0; at < length;) {
        const n = readSync(fd, out, at, Math.min(READ_PIECE_BYTES, length - at), offset + at);
        if (n === 0)
          throw new ModelError(
            'truncated',
            `The export's spool ended at ${offset + at} of ${offset + length}.`,
          );
        at += n;
      }
      return out;
    },
    close() {
      closeSync(fd);
      rmSync(path, { force: true });
    },
  };
}

/**
 * Runs `write` with a sink whose data and model bytes go to temporary files beside `dataPath` and
 * `modelPath`; on success they are renamed over those names, on failure removed.
 */
export async function streamFilesAtomically<T>(
  modelPath: string,
  dataPath: string,
  write: (sink: ExportSink) => Promise<T>,
): Promise<T> {
  const dataTemp = tempBeside(dataPath, 'tmp');
  const modelTemp = tempBeside(modelPath, 'tmp');
  let dataFd: number | undefined;
  let modelFd: number | undefined;
  try {
    dataFd = openSync(dataTemp, 'wx'); // exclusive: never follows or reuses an existing file
    modelFd = openSync(modelTemp, 'wx');
    const data = dataFd;
    const model = modelFd;
    const out = await write({
      writeData: (bytes) => writeAll(data, bytes, null),
      writeModel: (bytes) => writeAll(model, bytes, null),
    });
    closeSync(dataFd);
    dataFd = undefined;
    closeSync(modelFd);
    modelFd = undefined;
    renameSync(dataTemp, dataPath);
    renameSync(modelTemp, modelPath);
    return out;
  } catch (e) {
    if (dataFd !== undefined) closeSync(dataFd);
    if (modelFd !== undefined) closeSync(modelFd);
    rmSync(dataTemp, { force: true });
    rmSync(modelTemp, { force: true });
    if (e instanceof ModelError) throw e;
    const err = e as NodeJS.ErrnoException;
    if (!err.code) throw e;
    throw new ModelError('invalid-argument', `Could not write the output: ${err.code} ${err.message}`);
  }
}
