/**
 * `compress -o DIR/`: the compressed model written as a Hugging Face / transformers.js folder —
 * `onnx/model_q4.onnx` (int4), `onnx/model_quantized.onnx` (int8), `onnx/model_fp16.onnx` (fp16), else
 * `onnx/model.onnx` (weights stored as float32) — beside the source's config.json, generation_config.json
 * and tokenizer files, and a README.md model card: the recipe, sizes, warnings, the studio's version
 * and how to measure perplexity.
 */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { ModelError } from '../core/errors.ts';
import type { ResolvedRecipe, ResolvedStep } from '../core/compress/recipe.ts';
import { FOLDER_SIDE_FILES, folderExtras, folderModelName, type ModelCard } from '../core/compress/folder.ts';

/** An -o ending in a path separator names a folder to write the model into. */
export function isFolderOutput(output: string): boolean {
  return output.endsWith('/') || output.endsWith(sep);
}

/** The .onnx path inside the folder -o names, checked before any work (the folder is made only to write). */
export function folderOutputModel(output: string, steps: readonly ResolvedStep[]): string {
  const dir = resolve(output);
  if (existsSync(dir) && !statSync(dir).isDirectory())
    throw new ModelError('invalid-argument', `-o ${output}: ${dir} is a file, not a folder.`);
  if (!existsSync(dirname(dir)))
    throw new ModelError('invalid-argument', `-o ${output}: the folder ${dirname(dir)} does not exist.`);
  return join(dir, 'onnx', folderModelName(steps));
}

/** Makes the folder and its onnx/ before the model is written into it. */
export function makeFolderOutput(modelPath: string): void {
  mkdirSync(dirname(modelPath), { recursive: true });
}

/**
 * Copies the source folder's config and tokenizer files (the first of `sourceDirs` that has each),
 * writes generation_config.json and tokenizer_config.json from config.json when the source has none
 * (transformers.js reads both), and the model card (src/core/compress/folder.ts decides what).
 * Returns the files written, relative to `dir`.
 */
export function writeFolderExtras(
  dir: string,
  sourceDirs: readonly string[],
  card: Omit<ModelCard, 'recipe'> & { recipe: ResolvedRecipe },
): string[] {
  const sources = new Map<string, Uint8Array>();
  for (const name of FOLDER_SIDE_FILES) {
    const from = sourceDirs.map((d) => join(d, name)).find((p) => existsSync(p) && statSync(p).isFile());
    if (from) sources.set(name, readFileSync(from));
  }
  const recipe = {
    version: 1,
    ...(card.recipe.calibration ? { calibration: card.recipe.calibration } : {}),
    ...(card.recipe.structure ? { structure: card.recipe.structure } : {}),
    steps: card.recipe.steps,
  };
  const files = folderExtras(sources, { ...card, recipe });
  for (const f of files) writeFileSync(join(dir, f.path), f.data);
  return files.map((f) => f.path);
}
