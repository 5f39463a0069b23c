/** What the Quality panel and the store agree a model needs before it can be evaluated. */

/**
 * Why the open model cannot be evaluated with the current input, or undefined when it can: a model
 * without tokenizer.json scores only pre-tokenized ids, and an empty text scores nothing. One line,
 * shown beside the disabled Evaluate buttons.
 */
export function evaluationInputProblem(s: {
  evalIsIds: boolean;
  tokenizerJson?: unknown;
  evalText: string;
}): string | undefined {
  const empty = !s.evalText.trim();
  if (!s.tokenizerJson && !s.evalIsIds)
    return 'This model came without a tokenizer.json: load one, or give pre-tokenized ids.';
  if (!s.tokenizerJson && empty)
    return 'This model came without a tokenizer.json: paste token ids to score (one sequence per line), or load a tokenizer.json.';
  if (empty)
    return s.evalIsIds
      ? 'Paste token ids to score (one sequence per line).'
      : 'Paste a text to score, or load a .txt file.';
  return undefined;
}

/** A tokenizer.json the person loads is checked on the page, so a wrong file is named at once. */
export function parseTokenizerFile(name: string, text: string): unknown {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${name} is not JSON, so it is not a Hugging Face tokenizer.json.`);
  }
  if (!json || typeof json !== 'object' || !('model' in json))
    throw new Error(`${name} is not a Hugging Face tokenizer.json (it has no "model" section).`);
  return json;
}
