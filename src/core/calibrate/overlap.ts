/**
 * Whether calibration data overlaps the evaluation data: calibrating on the text perplexity is then
 * measured on flatters the compressed model. Counts the calibration's spans of `span` symbols
 * (characters or token ids) that also occur anywhere in the evaluation data.
 */

/** Symbols per span: long enough that common words and phrases do not count as overlap. */
export const TEXT_OVERLAP_SPAN = 64;
export const IDS_OVERLAP_SPAN = 16;

/** A string's UTF-16 code units, as the symbols overlap compares. */
export function textSymbols(text: string): Uint16Array {
  const out = new Uint16Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** Two 32-bit polynomial hashes of every window of `span` symbols, folded into one number key. */
function spanKeys(seq: ArrayLike<number>, span: number, visit: (key: number) => void): void {
  if (seq.length < span) return;
  const B1 = 0x01000193;
  const B2 = 0x5bd1e995;
  // B^span mod 2^32, to remove the symbol leaving the window
  let p1 = 1;
  let p2 = 1;
  for (let i = 0; i < span; i++) {
    p1 = Math.imul(p1, B1);
    p2 = Math.imul(p2, B2);
  }
  let h1 = 0;
  let h2 = 0;
  for (let i = 0; i < seq.length; i++) {
    const x = seq[i] + 1;
    h1 = (Math.imul(h1, B1) + x) | 0;
    h2 = (Math.imul(h2, B2) + x) | 0;
    if (i >= span) {
      const y = seq[i - span] + 1;
      h1 = (h1 - Math.imul(y, p1)) | 0;
      h2 = (h2 - Math.imul(y, p2)) | 0;
    }
    // 32 + 21 bits: a false match needs both hashes to collide
    if (i >= span - 1) visit((h1 >>> 0) * 2 ** 21 + (h2 >>> 11));
  }
}

/**
 * The fraction (0…1) of the calibration's spans of `span` symbols that also occur in the evaluation
 * data; 0 when either is shorter than one span.
 */
export function overlapFraction(
  calibration: readonly ArrayLike<number>[],
  evaluation: readonly ArrayLike<number>[],
  span: number,
): number {
  const seen = new Set<number>();
  for (const seq of evaluation) spanKeys(seq, span, (k) => seen.add(k));
  if (!seen.size) return 0;
  let total = 0;
  let shared = 0;
  for (const seq of calibration)
    spanKeys(seq, span, (k) => {
      total++;
      if (seen.has(k)) shared++;
    });
  return total ? shared / total : 0;
}
