/** Text -> token ids with a Hugging Face tokenizer.json, through the maintained @huggingface/tokenizers. */
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelError } from './errors.ts';

export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: number[]): string;
  vocabSize: number;
}

export function loadTokenizer(tokenizerJson: unknown, tokenizerConfig: unknown = {}): TextTokenizer {
  if (!tokenizerJson || typeof tokenizerJson !== 'object' || !('model' in tokenizerJson)) {
    throw new ModelError(
      'invalid-argument',
      'tokenizer.json is not a Hugging Face tokenizer (no "model" section).',
    );
  }
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokenizerJson as object, (tokenizerConfig ?? {}) as object);
  } catch (e) {
    throw new ModelError('invalid-argument', `tokenizer.json could not be loaded: ${(e as Error).message}`);
  }
  const vocab = (tokenizerJson as { model: { vocab?: Record<string, number> | unknown[] } }).model.vocab;
  const vocabSize = Array.isArray(vocab) ? vocab.length : vocab ? Object.keys(vocab).length : 0;
  return {
    // Perplexity is measured on the text itself: no BOS/EOS the text did not contain.
    encode: (text) => tok.encode(text, { add_special_tokens: false }).ids,
    decode: (ids) => tok.decode(ids),
    vocabSize,
  };
}

/**
 * Pre-tokenized ids, for models that ship no tokenizer.json: one sequence per line (space/comma
 * separated), or JSON — one array of ids (a single sequence) or an array of such arrays (the demo's
 * heldout_ids.json).
 */
export function parseIdsText(text: string): number[][] {
  if (text.trimStart().startsWith('[')) return parseIdsJson(text);
  const sequences: number[][] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const parts = line
      .trim()
      .split(/[\s,]+/)
      .filter(Boolean);
    if (parts.length === 0) return;
    const ids = parts.map(Number);
    const bad = ids.findIndex((x) => !Number.isInteger(x) || x < 0);
    if (bad >= 0)
      throw new ModelError('invalid-argument', `ids file line ${i + 1}: '${parts[bad]}' is not a token id.`);
    sequences.push(ids);
  });
  return sequences;
}

function parseIdsJson(text: string): number[][] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ModelError('invalid-argument', `ids file: not valid JSON (${(e as Error).message}).`);
  }
  const isId = (x: unknown) => Number.isInteger(x) && (x as number) >= 0;
  const shape = 'a JSON ids file holds one array of token ids, or an array of such arrays (one per sequence)';
  if (!Array.isArray(value)) throw new ModelError('invalid-argument', `ids file: ${shape}.`);
  const rows: unknown[][] = value.every((x) => Array.isArray(x)) ? (value as unknown[][]) : [value];
  rows.forEach((row, i) => {
    const bad = row.findIndex((x) => !isId(x));
    if (bad >= 0)
      throw new ModelError(
        'invalid-argument',
        `ids file: sequence ${i + 1}, item ${bad + 1} (${JSON.stringify(row[bad])}) is not a token id; ${shape}.`,
      );
  });
  return (rows as number[][]).filter((row) => row.length > 0);
}
