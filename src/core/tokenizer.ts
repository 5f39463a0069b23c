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

/** Pre-tokenized ids, one sequence per line (space/comma separated), for models that ship no tokenizer.json. */
export function parseIdsText(text: string): number[][] {
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
