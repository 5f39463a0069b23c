/** Picking the model out of what a person dropped: one .onnx, its external data, or a whole HF folder. */
import { ModelError } from './errors.ts';

export interface DroppedFile<T> {
  /** Path relative to what was dropped ("onnx/model.onnx") or just the file name. */
  path: string;
  size: number;
  file: T;
}

/** A file beside the model that its external-data locations may name. */
export interface ExternalFile<T> extends DroppedFile<T> {
  /** Its path relative to the model's folder: what an ONNX external-data `location` names it by. */
  location: string;
}

export interface ModelFiles<T> {
  main: DroppedFile<T>;
  /** Files in the model's folder or below it (ONNX locations are relative to the model file). */
  external: ExternalFile<T>[];
  config?: DroppedFile<T>;
  tokenizer?: DroppedFile<T>;
  /** Other .onnx files in a folder (quantized variants, decoder_with_past…), for the user to switch to. */
  variants: DroppedFile<T>[];
}

/**
 * Model file names in the order a folder's model is chosen (the Hugging Face / transformers.js
 * layout: `onnx/model.onnx`, else the merged decoder, else optimum's older no-cache decoder).
 */
export const PREFERRED_MODEL_FILES = ['model.onnx', 'decoder_model_merged.onnx', 'decoder_model.onnx'];

const baseName = (p: string) => p.split('/').pop() ?? p;

/**
 * The model file a folder holding these .onnx paths ('/'-separated, relative to the folder) means:
 * a preferred name (the shallowest first), else the only one; undefined when several are left.
 */
export function preferredModelFile(onnxPaths: readonly string[]): string | undefined {
  for (const name of PREFERRED_MODEL_FILES) {
    const hits = onnxPaths
      .filter((p) => baseName(p) === name)
      .sort((a, b) => a.split('/').length - b.split('/').length || a.localeCompare(b));
    if (hits.length) return hits[0];
  }
  return onnxPaths.length === 1 ? onnxPaths[0] : undefined;
}

export function pickModelFiles<T>(files: DroppedFile<T>[]): ModelFiles<T> {
  const onnx = files.filter((f) => /\.onnx$/i.test(f.path));
  const base = baseName;
  if (onnx.length === 0) {
    const names = files
      .map((f) => base(f.path))
      .slice(0, 5)
      .join(', ');
    throw new ModelError(
      'not-onnx',
      files.length === 0
        ? 'Nothing was dropped.'
        : `No .onnx file among what was dropped (${names}${files.length > 5 ? ', …' : ''}). Drop an .onnx model or a model folder.`,
    );
  }
  // the CLI's rule; where it leaves several, the page opens the first by name and lists the others
  const preferred = preferredModelFile(onnx.map((f) => f.path));
  onnx.sort(
    (a, b) => Number(b.path === preferred) - Number(a.path === preferred) || a.path.localeCompare(b.path),
  );
  const main = onnx[0];
  const folder = main.path.includes('/') ? main.path.slice(0, main.path.lastIndexOf('/') + 1) : '';
  const external: ExternalFile<T>[] = files
    .filter((f) => !/\.(onnx|json|txt|md)$/i.test(f.path) && f.path.startsWith(folder))
    .map((f) => ({ ...f, location: f.path.slice(folder.length) }));
  return {
    main,
    external,
    config: files.find((f) => base(f.path) === 'config.json'),
    tokenizer: files.find((f) => base(f.path) === 'tokenizer.json'),
    variants: onnx.slice(1),
  };
}
