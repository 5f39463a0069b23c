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

const PREFERRED = ['model.onnx', 'decoder_model_merged.onnx', 'decoder_model.onnx'];

export function pickModelFiles<T>(files: DroppedFile<T>[]): ModelFiles<T> {
  const onnx = files.filter((f) => /\.onnx$/i.test(f.path));
  const base = (p: string) => p.split('/').pop() ?? p;
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
  onnx.sort((a, b) => {
    const ra = PREFERRED.indexOf(base(a.path));
    const rb = PREFERRED.indexOf(base(b.path));
    return (ra < 0 ? 99 : ra) - (rb < 0 ? 99 : rb) || a.path.localeCompare(b.path);
  });
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
