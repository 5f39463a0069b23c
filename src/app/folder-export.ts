/**
 * The page's "Export folder": the compressed model as a transformers.js-ready folder (the layout
 * `compress -o DIR/` writes, decided by src/core/compress/folder.ts) — into a directory the person
 * picks through the File System Access API where the browser has it, else as a `.zip` built as a
 * stream (fflate: each file's bytes pushed in pieces, the zip's chunks collected as they come, the
 * event loop given a turn between pieces so the page stays responsive).
 */
import { version as studioVersion } from '../../package.json';
import {
  folderExtras,
  folderSideFiles,
  type FolderFile,
  folderModelName,
  type MeasuredQuality,
} from '../core/compress/folder.ts';
import { protocolLine } from '../core/eval/compare.ts';
import { streamZip } from '../core/compress/zip.ts';
import { useStudio, type StudioState } from './store.ts';
import { compressedModel } from './compress-slice.ts';
import { recipeJson } from './share.ts';
import { sharedCalibration } from './calibration-slice.ts';

/** The card's quality: the measured perplexities and KL, with their protocol, when the person evaluated. */
function measuredQuality(s: StudioState): MeasuredQuality | undefined {
  const original = s.evaluation.result;
  const compressed = s.compressedEval.result;
  if (!original && !compressed) return undefined;
  const versus = compressed?.versus;
  const run = compressed ?? original!;
  const text = `text: ${s.evalTextLabel || 'pasted'}`;
  return {
    original: original?.perplexity,
    compressed: compressed?.perplexity,
    kl: versus?.kl.mean.value,
    sameTop: versus?.sameTop.value,
    protocol: versus
      ? `${text}; ${protocolLine(versus.protocol)} (Compression Studio page)`
      : `${text}; ${run.tokens} tokens scored, ctx ${run.protocol.ctx}, stride ${run.protocol.stride}, ${run.runtime.provider}, onnxruntime-web (Compression Studio page)`,
  };
}

interface DirectoryHandle {
  getDirectoryHandle(name: string, o?: { create?: boolean }): Promise<DirectoryHandle>;
  getFileHandle(name: string, o?: { create?: boolean }): Promise<FileSystemFileHandle>;
}

async function writeToDirectory(
  root: DirectoryHandle,
  name: string,
  files: readonly FolderFile[],
  signal: AbortSignal,
) {
  const top = await root.getDirectoryHandle(name, { create: true });
  for (const f of files) {
    if (signal.aborted) throw new DOMException('Export cancelled.', 'AbortError');
    const parts = f.path.split('/');
    let dir = top;
    for (const p of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(p, { create: true });
    const writable = await (
      await dir.getFileHandle(parts[parts.length - 1], { create: true })
    ).createWritable();
    await writable.write(f.data as Uint8Array<ArrayBuffer>);
    await writable.close();
  }
}

/**
 * The files of the folder for the current recipe: onnx/<dtype file>, config and tokenizer, README.md;
 * with `withOriginal`, the original too as onnx/model.onnx (and its external data beside it), as Hub
 * folders hold every variant — unless the compressed model is itself stored as onnx/model.onnx.
 */
export async function currentFolderFiles(s: StudioState, withOriginal = false) {
  const { summary } = s;
  if (!summary) throw new Error('Open a model first.');
  const { bytes, totals, warnings, structure } = await compressedModel(s);
  const modelFile = folderModelName(s.recipe);
  const mainPath = s.modelFiles?.main.path ?? summary.name;
  const sideFiles = folderSideFiles(s.files, mainPath);
  const sources = new Map<string, Uint8Array>();
  for (const [name, f] of sideFiles) sources.set(name, new Uint8Array(await f.file.arrayBuffer()));
  const top = mainPath.split('/')[0];
  const source = mainPath.includes('/') ? top : summary.name.replace(/\.onnx$/i, '');
  const extras = folderExtras(sources, {
    source,
    modelFile,
    recipe: recipeJson(s.recipe, sharedCalibration(s), structure, s.distill),
    inputBytes: totals.inputBytes,
    outputBytes: bytes.byteLength,
    bitsPerWeight: totals.bitsPerWeight,
    tensors: s.preview?.reports.length ?? 0,
    warnings,
    version: studioVersion,
    writer: 'the studio’s page',
    quality: measuredQuality(s),
  });
  const dtype = modelFile.replace(/^model_?/, '').replace(/\.onnx$/, '') || 'compressed';
  const original: FolderFile[] = [];
  if (withOriginal && modelFile !== 'model.onnx' && s.modelFiles) {
    original.push({
      path: 'onnx/model.onnx',
      data: new Uint8Array(await s.modelFiles.main.file.arrayBuffer()),
    });
    for (const e of s.modelFiles.external)
      original.push({ path: `onnx/${e.location}`, data: new Uint8Array(await e.file.arrayBuffer()) });
  }
  return {
    name: `${source}-${dtype}`,
    files: [{ path: `onnx/${modelFile}`, data: bytes }, ...original, ...extras],
    bytes,
    warnings,
  };
}

/** Export folder: a directory through showDirectoryPicker where it exists, else a streamed .zip download. */
export async function exportFolder(opts: { withOriginal?: boolean } = {}): Promise<void> {
  const set = useStudio.setState;
  const get = useStudio.getState;
  if (!get().summary) return;
  set({ exporting: true, exportMessage: 'Building the compressed model folder…' });
  // the export's Cancel sets exporting false: nothing more is written after that
  const cancelled = () => !get().exporting;
  const controller = new AbortController();
  const unsubscribe = useStudio.subscribe((st) => {
    if (!st.exporting) controller.abort();
  });
  try {
    const { name, files, warnings } = await currentFolderFiles(get(), opts.withOriginal);
    if (cancelled()) return;
    const picker = (window as { showDirectoryPicker?: (o: unknown) => Promise<DirectoryHandle> })
      .showDirectoryPicker;
    let how: string;
    if (picker && !navigator.webdriver) {
      let root: DirectoryHandle;
      try {
        root = await picker({ mode: 'readwrite' });
      } catch (e) {
        if ((e as Error).name === 'AbortError') {
          set({ exporting: false, exportMessage: 'Export cancelled.' });
          return;
        }
        throw e;
      }
      await writeToDirectory(root, name, files, controller.signal);
      how = `Wrote the folder ${name}/`;
    } else {
      const chunks: Uint8Array[] = [];
      await streamZip(files, (c) => chunks.push(c), controller.signal);
      const url = URL.createObjectURL(new Blob(chunks as BlobPart[], { type: 'application/zip' }));
      const a = document.createElement('a');
      a.href = url;
      a.download = `${name}.zip`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      how = `Exported ${name}.zip`;
    }
    set({
      exporting: false,
      exportMessage:
        `${how} (${files.map((f) => f.path).join(', ')}).` + warnings.map((w) => ` Warning: ${w}`).join(''),
    });
  } catch (e) {
    if ((e as Error).name === 'AbortError' || cancelled()) return;
    set({ exporting: false, exportMessage: `Export failed: ${(e as Error).message}` });
  } finally {
    unsubscribe();
  }
}
