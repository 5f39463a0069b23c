/**
 * A zip archive written as a stream (fflate): each file's bytes pushed in 1 MiB pieces, the archive's
 * chunks handed on as they are produced, the event loop given a turn between pieces (a page exporting
 * a large model stays responsive and a Cancel gets through). The model is stored, text deflated.
 */
import { Zip, ZipDeflate, ZipPassThrough } from 'fflate';
import { yieldToEventLoop } from '../eval/yield.ts';
import type { FolderFile } from './folder.ts';

const PIECE = 1 << 20;

/**
 * Writes `files` as one zip, streamed: `onChunk` receives the archive's bytes as they are produced.
 * The model (already compressed) is stored; text files are deflated.
 */
export async function streamZip(
  files: readonly FolderFile[],
  onChunk: (chunk: Uint8Array) => void,
  signal?: AbortSignal,
): Promise<void> {
  let failed: Error | undefined;
  let finished = false;
  const zip = new Zip((err, chunk, final) => {
    if (err) failed = err;
    else {
      onChunk(chunk);
      if (final) finished = true;
    }
  });
  for (const f of files) {
    const entry =
      f.path.endsWith('.onnx') || f.path.endsWith('_data')
        ? new ZipPassThrough(f.path)
        : new ZipDeflate(f.path);
    zip.add(entry);
    if (f.data.length === 0) entry.push(new Uint8Array(0), true);
    for (let at = 0; at < f.data.length; at += PIECE) {
      if (signal?.aborted) {
        zip.terminate();
        throw new DOMException('Export cancelled.', 'AbortError');
      }
      entry.push(f.data.subarray(at, at + PIECE), at + PIECE >= f.data.length);
      if (failed) throw failed;
      await yieldToEventLoop();
    }
  }
  zip.end();
  if (failed) throw failed;
  if (!finished) throw new Error('The zip archive was not completed.');
}
