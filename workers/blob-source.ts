/** Byte sources over File/Blob inside a worker: FileReaderSync reads ranges without loading the whole file. */
import type { ByteSource } from '../src/core/onnx/model.ts';
import { ModelError, formatBytes } from '../src/core/errors.ts';

const CHUNK = 16 * 1024 * 1024;

export function blobSource(
  name: string,
  blob: Blob,
  onProgress?: (read: number, total: number) => void,
): ByteSource {
  const reader = new FileReaderSync();
  return {
    name,
    size: blob.size,
    read(offset, length) {
      // Large reads go in chunks so a progress bar can move while a big model loads.
      let out: Uint8Array;
      try {
        out = new Uint8Array(length);
      } catch (e) {
        // the browser's ArrayBuffer limit (or its memory): a typed error, not a RangeError
        throw new ModelError(
          'too-large',
          `${name}: ${formatBytes(length)} (${length} bytes) from offset ${offset} cannot be held in memory (${(e as Error).message}).`,
        );
      }
      for (let at = 0; at < length; at += CHUNK) {
        const n = Math.min(CHUNK, length - at);
        out.set(new Uint8Array(reader.readAsArrayBuffer(blob.slice(offset + at, offset + at + n))), at);
        if (length > CHUNK) onProgress?.(at + n, length);
      }
      return out;
    },
  };
}
