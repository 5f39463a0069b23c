/** Node-side byte sources: files read by range through a descriptor, never slurped unless asked. */
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readSync,
  realpathSync,
  statSync,
  type Stats,
} from 'node:fs';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { preferredModelFile } from '../core/files.ts';
import { allocateRead, type ByteSource } from '../core/onnx/model.ts';
import { ModelError } from '../core/errors.ts';
import type { ParsedArgs } from './args.ts';

/**
 * Bytes per read call. Node reads at most 2 GiB per `readSync`, and a single external tensor may be
 * larger (2.5 GB is legal), so every range is read in pieces of at most this size.
 */
export const READ_PIECE_BYTES = 2 ** 30;

function statOrThrow(path: string, what: string): Stats {
  try {
    return statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ModelError(
      'invalid-argument',
      code === 'ENOENT'
        ? `${path}: no such file.`
        : `${path}: cannot read this ${what} (${code ?? String(e)}).`,
    );
  }
}

/** A regular file read by range; `name` is what messages call it, `pieceBytes` bounds each read call. */
export function fileSource(path: string, options: { name?: string; pieceBytes?: number } = {}): ByteSource {
  const st = statOrThrow(path, 'file');
  if (st.isDirectory()) throw new ModelError('invalid-argument', `${path} is a folder, not a model file.`);
  if (!st.isFile())
    throw new ModelError(
      'invalid-argument',
      `${path} is not a regular file (a FIFO, socket or device): the studio reads only files.`,
    );
  const name = options.name ?? basename(path);
  const piece = Math.max(1, Math.floor(options.pieceBytes ?? READ_PIECE_BYTES));
  return {
    name,
    size: st.size,
    fresh: true,
    read(offset, length) {
      const out = allocateRead(name, offset, length);
      const fd = openSync(path, 'r');
      try {
        let at = 0;
        while (at < length) {
          const n = readSync(fd, out, at, Math.min(piece, length - at), offset + at);
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

function inside(dir: string, path: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

export interface ModelSources {
  main: ByteSource;
  /** Opens an external-data file by its location relative to the model's folder (as parseModel asks). */
  external: (location: string) => ByteSource | undefined;
  /** Real paths of every file read so far: the .onnx and each external-data file opened. */
  inputs: () => string[];
}

/**
 * The .onnx and a lookup of the external-data files it names, each resolved inside the model's
 * folder: a location whose real path (symlinks followed) leaves the folder, a folder, or anything
 * but a regular file (a FIFO would block the read forever) is refused with an 'unsafe-path' error.
 */
export function modelSources(path: string, options: { pieceBytes?: number } = {}): ModelSources {
  const main = fileSource(path, options);
  const dir = dirname(resolve(path));
  const realDir = realpathSync(dir);
  const inputs = [realpathSync(path)];
  const refuse = (location: string, why: string) =>
    new ModelError(
      'unsafe-path',
      `${main.name}: its external-data location '${location}' ${why}; external data must be a regular file inside the model's folder (${dir}).`,
    );
  const external = (location: string): ByteSource | undefined => {
    const candidate = join(dir, location);
    let real: string;
    try {
      real = realpathSync(candidate);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw refuse(location, `cannot be opened (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
    if (!inside(realDir, real)) throw refuse(location, `is a link to ${real}, outside the model's folder`);
    const st = statSync(real);
    if (st.isDirectory()) throw refuse(location, 'is a folder, not a data file');
    if (!st.isFile()) throw refuse(location, 'is not a regular file (a FIFO, socket or device)');
    if (!inputs.includes(real)) inputs.push(real);
    return fileSource(real, { ...options, name: location });
  };
  return { main, external, inputs: () => [...inputs] };
}

/** Where a command's model is: the .onnx itself and the folders its config.json and tokenizer may sit in. */
export interface ModelLocation {
  /** The .onnx file to read. */
  path: string;
  /** Folders to look for config.json / tokenizer.json in, nearest first. */
  configDirs: string[];
  /** The model folder when a folder was given (its config and tokenizer files are the model's). */
  folder?: string;
}

/** Folders never searched for models: version control, caches. */
const SKIPPED_DIRS = new Set(['.git', '.cache', 'node_modules', '__pycache__']);

/** The .onnx files under a folder, '/'-separated and relative to it, a few levels deep. */
function onnxFilesUnder(dir: string, depth = 3): string[] {
  const found: string[] = [];
  const walk = (at: string, level: number) => {
    for (const entry of readdirSync(at, { withFileTypes: true })) {
      const full = join(at, entry.name);
      if (entry.isDirectory()) {
        if (level < depth && !SKIPPED_DIRS.has(entry.name)) walk(full, level + 1);
      } else if (/\.onnx$/i.test(entry.name) && (entry.isFile() || entry.isSymbolicLink())) {
        found.push(relative(dir, full).split(sep).join('/'));
      }
    }
  };
  walk(dir, 0);
  return found.sort();
}

/**
 * The model a command was given: an .onnx file, or a folder in the Hugging Face / transformers.js
 * layout, where `onnx/model.onnx` is read, else `decoder_model_merged.onnx`, else the only .onnx;
 * `file` (the `--file` option: a path relative to the folder) chooses when there are several.
 */
export function resolveModelPath(
  given: string,
  file?: string,
  fileFlag: string | undefined = '--file',
): ModelLocation {
  const st = statOrThrow(given, 'model');
  if (!st.isDirectory()) {
    if (file !== undefined)
      throw new ModelError(
        'invalid-argument',
        `${fileFlag} ${file} chooses a model inside a folder, but ${given} is a file: give the folder, or the file alone.`,
      );
    return { path: given, configDirs: [dirname(given), join(dirname(given), '..')] };
  }
  const onnx = onnxFilesUnder(given);
  let chosen: string | undefined;
  if (file !== undefined) {
    const wanted = file.split(sep).join('/').replace(/^\.\//, '');
    chosen = onnx.find((p) => p === wanted) ?? onnx.filter((p) => basename(p) === wanted).at(0);
    if (chosen === undefined)
      throw new ModelError(
        'invalid-argument',
        `${fileFlag} ${file}: no such model in ${given}` +
          (onnx.length ? `; its .onnx files: ${onnx.join(', ')}.` : ', which holds no .onnx file.'),
      );
  } else {
    if (onnx.length === 0)
      throw new ModelError(
        'invalid-argument',
        `${given} is a folder with no .onnx file in it: give a model file or a model folder (onnx/model.onnx).`,
      );
    chosen = preferredModelFile(onnx);
    if (chosen === undefined)
      throw new ModelError(
        'invalid-argument',
        `${given} holds several models and none is model.onnx or decoder_model_merged.onnx: ` +
          (fileFlag ? `choose one with ${fileFlag} NAME` : 'give the path of the one to read') +
          ` (${onnx.join(', ')}).`,
      );
  }
  const path = join(given, chosen);
  return { path, folder: given, configDirs: [...new Set([given, dirname(path)])] };
}

/** A file named `name` in the first of `dirs` that has one, if any. */
export function fileIn(dirs: readonly string[], name: string): string | undefined {
  for (const d of dirs) {
    const p = join(d, name);
    if (existsSync(p) && statSync(p).isFile()) return p;
  }
  return undefined;
}

/** The `--file` option: which model of a folder holding several. */
export function modelFileFlag(args: ParsedArgs): string | undefined {
  const file = args.flags.get('file');
  return typeof file === 'string' ? file : undefined;
}
