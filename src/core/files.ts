/** Picking the model out of what a person dropped: one .onnx, its external data, or a whole HF folder. */
import { ModelError } from './errors.ts';

export interface DroppedFile<T> {
  /** Path relative to what was dropped ("onnx/model.onnx") or just the file name. */
  path: string;
  size: number;
  file: T;
}

export interface ModelFiles<T> {
  main: DroppedFile<T>;
  external: DroppedFile<T>[];
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
  const others = files.filter((f) => !/\.(onnx|json|txt|md)$/i.test(f.path));
  return {
    main,
    external: others,
    config: files.find((f) => base(f.path) === 'config.json'),
    tokenizer: files.find((f) => base(f.path) === 'tokenizer.json'),
    variants: onnx.slice(1),
  };
}
