/**
 * The page's streaming export, worker side: the compressed model written into a folder through the
 * File System Access API (a folder the person picked, or the origin-private file system, from which
 * the page then downloads the files straight from disk), one tensor at a time, with the spool in the
 * origin-private file system (a synchronous access handle: workers only). Nothing here holds the
 * whole model.
 */
import { ModelError } from '../src/core/errors.ts';
import { memorySpool, type ExportSink, type Spool } from '../src/core/compress/stream-export.ts';

/** The parts of the File System Access API used here (lib.dom lacks the synchronous access handle). */
interface SyncAccessHandle {
  write(buffer: Uint8Array, options: { at: number }): number;
  read(buffer: Uint8Array, options: { at: number }): number;
  flush(): void;
  close(): void;
}
type SpoolFileHandle = FileSystemFileHandle & { createSyncAccessHandle?: () => Promise<SyncAccessHandle> };

/** A writable stream's writes must not run past the browser's queue: each is awaited in turn. */
export async function folderSink(
  dir: FileSystemDirectoryHandle,
  names: { model: string; data: string },
): Promise<ExportSink & { close(): Promise<void>; abort(): Promise<void> }> {
  const data = await (await dir.getFileHandle(names.data, { create: true })).createWritable();
  let model: FileSystemWritableFileStream | undefined;
  let modelBytes: Uint8Array | undefined;
  return {
    writeData: (bytes) => data.write(bytes as Uint8Array<ArrayBuffer>),
    writeModel: (bytes) => {
      modelBytes = bytes;
    },
    async close() {
      // the data file is complete before the .onnx that refers to it exists
      await data.close();
      model = await (await dir.getFileHandle(names.model, { create: true })).createWritable();
      if (modelBytes) await model.write(modelBytes as Uint8Array<ArrayBuffer>);
      await model.close();
    },
    async abort() {
      await data.abort().catch(() => {});
      await model?.abort().catch(() => {});
    },
  };
}

/**
 * A spool file in the origin-private file system, read and written synchronously; a spool in
 * memory where the browser has no synchronous access handles (then the compressed weights are held).
 */
export async function opfsSpool(): Promise<Spool & { close(): Promise<void> }> {
  const storage = (globalThis.navigator as Navigator | undefined)?.storage;
  if (storage?.getDirectory) {
    try {
      const root = await storage.getDirectory();
      const name = `export-spool-${Date.now()}-${Math.random().toString(36).slice(2)}`;
      const handle = (await root.getFileHandle(name, { create: true })) as SpoolFileHandle;
      if (handle.createSyncAccessHandle) {
        const access = await handle.createSyncAccessHandle();
        let size = 0;
        return {
          append(bytes) {
            const at = size;
            for (let done = 0; done < bytes.byteLength;)
              done += access.write(bytes.subarray(done), { at: at + done });
            size += bytes.byteLength;
            return at;
          },
          read(offset, length) {
            const out = new Uint8Array(length);
            for (let done = 0; done < length;) {
              const n = access.read(out.subarray(done), { at: offset + done });
              if (n === 0) throw new ModelError('truncated', `The export's spool ended at ${offset + done}.`);
              done += n;
            }
            return out;
          },
          async close() {
            access.close();
            await root.removeEntry(name).catch(() => {});
          },
        };
      }
      await root.removeEntry(name).catch(() => {});
    } catch {
      // no origin-private file system here (a private window, say): the spool stays in memory
    }
  }
  const spool = memorySpool();
  return { ...spool, close: async () => {} };
}
