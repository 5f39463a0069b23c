/** A bench progress line: to stderr, so stdout stays the markdown report. */
export const log = (s: string) => process.stderr.write(s + '\n');
