/**
 * A compressed model as a Hugging Face / transformers.js folder — what the CLI's `compress -o DIR/`
 * writes to disk and the page's export writes to a directory or a zip: the model under `onnx/` by the
 * name transformers.js loads for its format (its `dtype`), the source folder's config and tokenizer
 * files, generation_config.json and tokenizer_config.json made from config.json when the source has
 * none, and a README.md model card (recipe, sizes, warnings, measured quality with its protocol, the
 * studio's version). Pure: file contents in, file contents out; the caller reads and writes them.
 */

/** The step fields the file name depends on (a recipe step, resolved or as the page holds it). */
export interface FormatStep {
  method: string;
  options?: Readonly<Record<string, unknown>>;
}

/** The file name transformers.js loads for the storage format the recipe ends with (its `dtype`). */
export function folderModelName(steps: readonly FormatStep[]): string {
  for (let i = steps.length - 1; i >= 0; i--) {
    const { method, options } = steps[i];
    if (method === 'fp16') return 'model_fp16.onnx';
    if (method === 'int4' || method === 'awq') return 'model_q4.onnx';
    if (method === 'gptq') return options?.bits === 8 ? 'model_quantized.onnx' : 'model_q4.onnx';
    if (method === 'int8' || method === 'llm-int8' || method === 'w8a8') return 'model_quantized.onnx';
  }
  return 'model.onnx';
}

/** Files of a model folder that travel with the model: configuration and tokenizer. */
export const FOLDER_SIDE_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'vocab.json',
  'merges.txt',
] as const;

/**
 * The side files (config, tokenizer) of the folder the model came from: those in the model's folder,
 * or in its parent when the model sits in `onnx/`; else any dropped file of that name.
 */
export function folderSideFiles<F extends { path: string }>(
  files: readonly F[],
  modelPath: string,
): Map<string, F> {
  const dir = modelPath.includes('/') ? modelPath.slice(0, modelPath.lastIndexOf('/')) : '';
  const root =
    dir.endsWith('/onnx') || dir === 'onnx' ? dir.slice(0, -'onnx'.length).replace(/\/$/, '') : dir;
  const at = (d: string, name: string) => files.find((f) => f.path === (d ? `${d}/${name}` : name));
  const out = new Map<string, F>();
  for (const name of FOLDER_SIDE_FILES) {
    const f =
      at(root, name) ??
      at(dir, name) ??
      [...files]
        .filter((x) => x.path.split('/').pop() === name)
        .sort((a, b) => a.path.length - b.path.length)[0];
    if (f) out.set(name, f);
  }
  return out;
}

/** Perplexity measured in the studio, with how (the report's protocol), for the card. */
export interface MeasuredQuality {
  original?: number;
  compressed?: number;
  /** KL(original ‖ compressed) per token, mean. */
  kl?: number;
  /** Top-1 agreement with the original, 0…1. */
  sameTop?: number;
  /** One line: text, tokens scored, ctx, stride, runtime. */
  protocol: string;
}

export interface ModelCard {
  /** The source model's name (folder or file). */
  source: string;
  /** The file under onnx/. */
  modelFile: string;
  /** The recipe as its JSON is written (version, calibration, structure, steps). */
  recipe: unknown;
  inputBytes: number;
  outputBytes: number;
  bitsPerWeight: number;
  tensors: number;
  warnings: string[];
  version: string;
  /** Who wrote it: "`compression-studio compress`" or "the studio's page". */
  writer?: string;
  quality?: MeasuredQuality;
}

export interface FolderFile {
  /** Relative to the folder, '/'-separated. */
  path: string;
  data: Uint8Array;
}

const utf8 = (s: string) => new TextEncoder().encode(s);

function parseJson(data: Uint8Array | undefined): Record<string, unknown> | undefined {
  if (!data) return undefined;
  try {
    const v: unknown = JSON.parse(new TextDecoder().decode(data));
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The files beside the model: the side files the source has (`sources`, by name), the two configs
 * transformers.js reads written from config.json when missing, and README.md, in that order.
 */
export function folderExtras(sources: ReadonlyMap<string, Uint8Array>, card: ModelCard): FolderFile[] {
  const files: FolderFile[] = [];
  for (const name of FOLDER_SIDE_FILES) {
    const data = sources.get(name);
    if (data) files.push({ path: name, data });
  }
  const has = (name: string) => files.some((f) => f.path === name);
  const config = parseJson(sources.get('config.json'));
  const pick = (keys: string[]) =>
    Object.fromEntries(keys.filter((k) => config?.[k] !== undefined).map((k) => [k, config?.[k]]));
  if (config && !has('generation_config.json'))
    files.push({
      path: 'generation_config.json',
      data: utf8(JSON.stringify(pick(['bos_token_id', 'eos_token_id', 'pad_token_id']), null, 2) + '\n'),
    });
  if (has('tokenizer.json') && !has('tokenizer_config.json')) {
    const context = config?.n_positions ?? config?.max_position_embeddings ?? config?.n_ctx;
    files.push({
      path: 'tokenizer_config.json',
      data: utf8(
        JSON.stringify(
          {
            tokenizer_class: 'PreTrainedTokenizerFast',
            ...(typeof context === 'number' ? { model_max_length: context } : {}),
            clean_up_tokenization_spaces: false,
          },
          null,
          2,
        ) + '\n',
      ),
    });
  }
  files.push({
    path: 'README.md',
    data: utf8(
      modelCard(
        card,
        files.map((f) => f.path),
      ),
    ),
  });
  return files;
}

function qualitySection(card: ModelCard): string[] {
  const q = card.quality;
  const measure = [
    'Measure the original and this model on the same held-out text:',
    '',
    '```sh',
    `npx compression-studio ppl ORIGINAL_FOLDER --text heldout.txt --json`,
    `npx compression-studio ppl THIS_FOLDER --file onnx/${card.modelFile} --text heldout.txt --base ORIGINAL_FOLDER --json`,
    '```',
  ];
  if (!q || (q.original === undefined && q.compressed === undefined))
    return [
      'Perplexity was not measured when this folder was written. The protocol the studio uses: the text',
      'tokenized whole, scored in windows of `ctx` tokens (config.json context) moved by `stride` = ctx/2,',
      'each token after the first window scored once with the context before it; perplexity is',
      'exp(mean negative log-likelihood).',
      ...measure,
    ];
  const f = (x: number | undefined, digits = 3) => (x === undefined ? '—' : x.toFixed(digits));
  return [
    '| model | perplexity |',
    '| --- | --- |',
    `| original | ${f(q.original)} |`,
    `| this folder | ${f(q.compressed)} |`,
    '',
    ...(q.kl !== undefined ? [`KL(original ‖ compressed) per token, mean: ${f(q.kl, 4)}`, ''] : []),
    ...(q.sameTop !== undefined
      ? [`Same top-1 token as the original: ${(q.sameTop * 100).toFixed(1)} %`, '']
      : []),
    `Protocol: ${q.protocol}`,
    '',
    ...measure,
  ];
}

/** README.md: a Hub model card (front matter) with what the folder holds and how it was made. */
export function modelCard(card: ModelCard, files: readonly string[]): string {
  const mb = (n: number) => `${(n / 1e6).toFixed(2)} MB`;
  return [
    '---',
    'library_name: transformers.js',
    'tags: [onnx, compressed, compression-studio]',
    '---',
    '',
    `# ${card.source}, compressed`,
    '',
    `Written by Compression Studio ${card.version} (${card.writer ?? '`compression-studio compress`'}) from \`${card.source}\`.`,
    '',
    `- model: \`onnx/${card.modelFile}\` (${mb(card.outputBytes)}; the source: ${mb(card.inputBytes)})`,
    `- ${card.tensors} weight matrices compressed, ${card.bitsPerWeight.toFixed(2)} bits per weight`,
    `- beside it: ${files.map((f) => `\`${f}\``).join(', ') || 'nothing'}`,
    ...(card.warnings.length ? ['', '## Warnings', '', ...card.warnings.map((w) => `- ${w}`)] : []),
    '',
    '## Recipe',
    '',
    '```json',
    JSON.stringify(card.recipe, null, 2),
    '```',
    '',
    '## Quality',
    '',
    ...qualitySection(card),
    '',
  ].join('\n');
}
