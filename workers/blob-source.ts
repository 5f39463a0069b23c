/** Byte sources over File/Blob inside a worker: FileReaderSync reads ranges without loading the whole file. */
import { allocateRead, type ByteSource } from '../src/core/onnx/model.ts';

const CHUNK = 16 * 1024 * 1024;
/**
 * Reads up to this size go in one piece: the reader's own buffer is the answer (a tensor read costs
 * one buffer of its size, not 16 MiB chunks copied into a second one). Larger ones, and reads that
 * report progress, go in chunks.
 */
const ONE_PIECE = 1024 * 1024 * 1024;

export function blobSource(
  name: string,
  blob: Blob,
  onProgress?: (read: number, total: number) => void,
): ByteSource {
  const reader = new FileReaderSync();
  return {
    name,
    size: blob.size,
    // FileReaderSync answers a buffer of its own; chunked reads fill one allocated here
    fresh: true,
    read(offset, length) {
      if (!onProgress && length <= ONE_PIECE) {
        try {
          const bytes = new Uint8Array(reader.readAsArrayBuffer(blob.slice(offset, offset + length)));
          if (bytes.byteLength === length) return bytes;
        } catch {
          // read again in chunks below: a failure there is the typed error (allocateRead's 'too-large')
        }
      }
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
