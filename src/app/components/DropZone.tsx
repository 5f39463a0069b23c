import { useRef, useState, type DragEvent } from 'react';
import { useStudio } from '../store.ts';
import { ProgressBar } from './ProgressBar.tsx';

type Picked = { path: string; file: File };

// Walks a dropped folder (Chrome/Firefox/Safari's FileSystemEntry API) into path-tagged files.
async function entryFiles(entry: FileSystemEntry, prefix = ''): Promise<Picked[]> {
  if (entry.isFile) {
    const file = await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej));
    return [{ path: prefix + entry.name, file }];
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  const children: FileSystemEntry[] = [];
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
    if (batch.length === 0) break;
    children.push(...batch);
  }
  const nested = await Promise.all(children.map((c) => entryFiles(c, `${prefix}${entry.name}/`)));
  return nested.flat();
}

async function droppedFiles(e: DragEvent): Promise<Picked[]> {
  const items = [...e.dataTransfer.items].filter((i) => i.kind === 'file');
  const entries = items.map((i) => i.webkitGetAsEntry?.()).filter((x): x is FileSystemEntry => !!x);
  if (entries.length === items.length && entries.some((x) => x.isDirectory)) {
    return (await Promise.all(entries.map((x) => entryFiles(x)))).flat();
  }
  return [...e.dataTransfer.files].map((file) => ({ path: file.name, file }));
}

export function DropZone() {
  const open = useStudio((s) => s.open);
  const loading = useStudio((s) => s.loading);
  const [over, setOver] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const folderInput = useRef<HTMLInputElement>(null);

  const onFiles = (list: FileList | null) => {
    if (!list || list.length === 0) return;
    void open([...list].map((file) => ({ path: file.webkitRelativePath || file.name, file })));
  };

  return (
    <section
      className={`dropzone${over ? ' over' : ''}`}
      data-testid="dropzone"
      onDragOver={(e) => {
        e.preventDefault();
        setOver(true);
      }}
      onDragLeave={() => setOver(false)}
      onDrop={(e) => {
        e.preventDefault();
        setOver(false);
        void droppedFiles(e).then((files) => {
          if (files.length) void open(files);
        });
      }}
    >
      <p>
        Drop an <strong>.onnx</strong> model (with its <code>.onnx_data</code> files) or a model folder here
      </p>
      <div className="buttons">
        <button type="button" onClick={() => fileInput.current?.click()}>
          Choose files…
        </button>
        <button type="button" onClick={() => folderInput.current?.click()}>
          Choose folder…
        </button>
      </div>
      <input
        ref={fileInput}
        type="file"
        multiple
        accept=".onnx,.onnx_data,.data,.json,.bin"
        hidden
        data-testid="file-input"
        onChange={(e) => onFiles(e.target.files)}
      />
      <input
        ref={folderInput}
        type="file"
        hidden
        data-testid="folder-input"
        // @ts-expect-error non-standard but universally supported folder picker
        webkitdirectory=""
        onChange={(e) => onFiles(e.target.files)}
      />
      {loading && (
        <ProgressBar
          label={`${loading.phase === 'reading' ? 'Reading' : loading.phase === 'parsing' ? 'Parsing' : 'Measuring tensors of'} ${loading.fileName}`}
          value={loading.phase === 'parsing' ? undefined : loading.done / Math.max(loading.total, 1)}
        />
      )}
    </section>
  );
}
