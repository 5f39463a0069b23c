/** Byte sources over File/Blob inside a worker: FileReaderSync reads ranges without loading the whole file. */
import { allocateRead, type ByteSource } from '../src/core/onnx/model.ts';

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
      const out = allocateRead(name, offset, length);
      for (let at = 0; at < length; at += CHUNK) {
        const n = Math.min(CHUNK, length - at);
        out.set(new Uint8Array(reader.readAsArrayBuffer(blob.slice(offset + at, offset + at + n))), at);
        if (length > CHUNK) onProgress?.(at + n, length);
      }
      return out;
    },
  };
}
