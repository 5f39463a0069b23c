/**
 * `compress -o DIR/`: the compressed model written as a Hugging Face / transformers.js folder —
 * `onnx/model_q4.onnx` (int4), `onnx/model_quantized.onnx` (int8), `onnx/model_fp16.onnx` (fp16), else
 * `onnx/model.onnx` (weights stored as float32) — beside the source's config.json, generation_config.json
 * and tokenizer files, and a README.md model card: the recipe, sizes, warnings, the studio's version
 * and how to measure perplexity.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { ModelError } from '../core/errors.ts';
import type { ResolvedRecipe, ResolvedStep } from '../core/compress/recipe.ts';

/** An -o ending in a path separator names a folder to write the model into. */
export function isFolderOutput(output: string): boolean {
  return output.endsWith('/') || output.endsWith(sep);
}

/** The file name transformers.js loads for the storage format the recipe ends with (its `dtype`). */
export function folderModelName(steps: readonly ResolvedStep[]): string {
  for (let i = steps.length - 1; i >= 0; i--) {
    const { method, options } = steps[i];
    if (method === 'fp16') return 'model_fp16.onnx';
    if (method === 'int4' || method === 'awq') return 'model_q4.onnx';
    if (method === 'gptq') return options.bits === 8 ? 'model_quantized.onnx' : 'model_q4.onnx';
    if (method === 'int8' || method === 'llm-int8' || method === 'w8a8') return 'model_quantized.onnx';
  }
  return 'model.onnx';
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

/** Files of a model folder that travel with the model: configuration and tokenizer. */
const SIDE_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'vocab.json',
  'merges.txt',
];

function readJsonFile(path: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(readFileSync(path, 'utf8'));
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export interface ModelCard {
  source: string;
  modelFile: string;
  recipe: ResolvedRecipe;
  inputBytes: number;
  outputBytes: number;
  bitsPerWeight: number;
  tensors: number;
  warnings: string[];
  version: string;
}

/**
 * Copies the source folder's config and tokenizer files (the first of `sourceDirs` that has each),
 * writes generation_config.json and tokenizer_config.json from config.json when the source has none
 * (transformers.js reads both), and the model card. Returns the files written, relative to `dir`.
 */
export function writeFolderExtras(dir: string, sourceDirs: readonly string[], card: ModelCard): string[] {
  const written: string[] = [];
  for (const name of SIDE_FILES) {
    const from = sourceDirs.map((d) => join(d, name)).find((p) => existsSync(p) && statSync(p).isFile());
    if (!from) continue;
    copyFileSync(from, join(dir, name));
    written.push(name);
  }
  const config = written.includes('config.json') ? readJsonFile(join(dir, 'config.json')) : undefined;
  const pick = (keys: string[]) =>
    Object.fromEntries(keys.filter((k) => config?.[k] !== undefined).map((k) => [k, config?.[k]]));
  if (config && !written.includes('generation_config.json')) {
    writeFileSync(
      join(dir, 'generation_config.json'),
      JSON.stringify({ ...pick(['bos_token_id', 'eos_token_id', 'pad_token_id']) }, null, 2) + '\n',
    );
    written.push('generation_config.json');
  }
  if (written.includes('tokenizer.json') && !written.includes('tokenizer_config.json')) {
    const context = config?.n_positions ?? config?.max_position_embeddings ?? config?.n_ctx;
    writeFileSync(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify(
        {
          tokenizer_class: 'PreTrainedTokenizerFast',
          ...(typeof context === 'number' ? { model_max_length: context } : {}),
          clean_up_tokenization_spaces: false,
        },
        null,
        2,
      ) + '\n',
    );
    written.push('tokenizer_config.json');
  }
  writeFileSync(join(dir, 'README.md'), modelCard(card, written));
  written.push('README.md');
  return written;
}

function modelCard(card: ModelCard, files: string[]): string {
  const mb = (n: number) => `${(n / 1e6).toFixed(2)} MB`;
  const recipe = {
    version: 1,
    ...(card.recipe.calibration ? { calibration: card.recipe.calibration } : {}),
    ...(card.recipe.structure ? { structure: card.recipe.structure } : {}),
    steps: card.recipe.steps,
  };
  return [
    '---',
    'library_name: transformers.js',
    'tags: [onnx, compressed, compression-studio]',
    '---',
    '',
    `# ${card.source}, compressed`,
    '',
    `Written by Compression Studio ${card.version} (\`compression-studio compress\`) from \`${card.source}\`.`,
    '',
    `- model: \`onnx/${card.modelFile}\` (${mb(card.outputBytes)}; the source: ${mb(card.inputBytes)})`,
    `- ${card.tensors} weight matrices compressed, ${card.bitsPerWeight.toFixed(2)} bits per weight`,
    `- beside it: ${files.map((f) => `\`${f}\``).join(', ') || 'nothing'}`,
    ...(card.warnings.length ? ['', '## Warnings', '', ...card.warnings.map((w) => `- ${w}`)] : []),
    '',
    '## Recipe',
    '',
    '```json',
    JSON.stringify(recipe, null, 2),
    '```',
    '',
    '## Quality',
    '',
    'Perplexity was not measured when this folder was written. The protocol the studio uses: the text',
    'tokenized whole, scored in windows of `ctx` tokens (config.json context) moved by `stride` = ctx/2,',
    'each token after the first window scored once with the context before it; perplexity is',
    'exp(mean negative log-likelihood). Measure the original and this model on the same held-out text:',
    '',
    '```sh',
    `npx compression-studio ppl ORIGINAL_FOLDER --text heldout.txt --json`,
    `npx compression-studio ppl THIS_FOLDER --file onnx/${card.modelFile} --text heldout.txt --json`,
    '```',
    '',
  ].join('\n');
}
