/**
 * Command-line parsing: one declared schema per command, read by `node:util` parseArgs in strict mode,
 * so a typo is an error that names the flag and suggests the nearest one instead of being ignored.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { parseArgs as nodeParseArgs } from 'node:util';
import { ModelError } from '../core/errors.ts';

/**
 * A mistake in how the command was called (unknown flag or command, missing or malformed value),
 * as opposed to a bad model or input file: the CLI exits with status 2 and points at `--help`.
 */
export class UsageError extends ModelError {
  constructor(message: string) {
    super('invalid-argument', message);
  }
}

export interface FlagSpec {
  type: 'string' | 'boolean';
  /** One-letter alias, `-o` for `--output`. */
  short?: string;
  /** The value's placeholder in the usage text (FILE, N, S). */
  value?: string;
  help: string;
}

export interface CommandSpec {
  name: string;
  summary: string;
  /** Synopsis lines, each following `compression-studio `; one starting with a space continues the line above. */
  usage: string[];
  /** Every positional argument is required, in this order; no others are accepted. */
  positionals: { name: string; help: string }[];
  options: Record<string, FlagSpec>;
  /** Paragraphs printed after the option list. */
  notes?: string[];
}

export interface ParsedArgs {
  positional: string[];
  /** Options given, by long name; booleans are `true`. */
  flags: Map<string, string | true>;
}

/** True when the arguments ask for help (`--help`/`-h` anywhere before a `--` terminator). */
export function wantsHelp(argv: string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

/** Optimal string alignment distance: Levenshtein plus adjacent transpositions (`inpsect`). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The candidates nearest to `word`, all of them when several tie (`int9` → int8, int4); none when
 * even the nearest differs in more than about a third of its letters, so a guess is never absurd.
 */
export function nearest(word: string, candidates: readonly string[]): string[] {
  let best = Infinity;
  let found: string[] = [];
  for (const c of candidates) {
    const dist = editDistance(word.toLowerCase(), c.toLowerCase());
    if (dist < best) [best, found] = [dist, [c]];
    else if (dist === best) found.push(c);
  }
  const limit = Math.max(1, Math.ceil(Math.max(word.length, 3) / 3));
  return best <= limit ? found : [];
}

export function didYouMean(options: string[]): string {
  if (options.length === 0) return '';
  const list = options.length === 1 ? options[0] : `${options.slice(0, -1).join(', ')} or ${options.at(-1)}`;
  return ` (did you mean ${list}?)`;
}

/** The declared flag of that name; an own-property lookup, so `--constructor` is unknown like any other. */
function flagSpec(spec: CommandSpec, name: string): FlagSpec | undefined {
  return Object.hasOwn(spec.options, name) ? spec.options[name] : undefined;
}

/** The flag as the person typed it, without an `=value` part. */
function typedFlag(raw: string): string {
  return raw.split('=', 1)[0];
}

/** Explains the first thing in `argv` that strict parsing refused, in the user's own spelling. */
function explain(spec: CommandSpec, argv: string[], strictError: unknown): UsageError {
  const options = spec.options;
  const flagNames = Object.entries(options).flatMap(([k, f]) => [
    `--${k}`,
    ...(f.short ? [`-${f.short}`] : []),
  ]);
  const { tokens } = nodeParseArgs({
    args: argv,
    options: nodeOptions(spec),
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  for (const t of tokens) {
    if (t.kind !== 'option') continue;
    const raw = argv[t.index];
    const flag = flagSpec(spec, t.name);
    if (!flag) {
      const typed = typedFlag(raw);
      // `-json` is read as the short flags -j -s -o -n: compare what was typed as a whole
      const bare = typed.replace(/^--?/, '');
      const short = Object.values(options).find((f) => f.short === bare);
      const suggestions = short ? [`-${bare}`] : nearest(bare, Object.keys(options)).map((k) => `--${k}`);
      return new UsageError(`unknown option ${typed}${didYouMean(suggestions)}.`);
    }
    const name = t.rawName;
    if (flag.type === 'boolean' && t.value !== undefined)
      return new UsageError(`${name} takes no value, got '${t.value}'.`);
    if (flag.type === 'string') {
      const needs = `${name} needs a value${flag.value ? ` (${flag.value})` : ''}`;
      if (t.value === undefined) return new UsageError(`${needs}.`);
      // parseArgs will not take a following argument that starts with '-' as a value: it may be a flag
      if (!t.inlineValue && t.value.startsWith('-')) {
        const got = flagNames.includes(typedFlag(t.value)) ? `the option ${t.value}` : `'${t.value}'`;
        return new UsageError(
          `${needs}, got ${got}; a value that starts with '-' is written --${t.name}=${t.value}.`,
        );
      }
    }
  }
  // the loose reading found nothing wrong, which strict parsing contradicts: pass its message on
  const message = strictError instanceof Error ? strictError.message.split('\n')[0] : String(strictError);
  return new UsageError(message);
}

function nodeOptions(spec: CommandSpec) {
  return Object.fromEntries(
    Object.entries(spec.options).map(([k, f]) => [
      k,
      f.short ? { type: f.type, short: f.short } : { type: f.type },
    ]),
  );
}

function strictParse(spec: CommandSpec, argv: string[]) {
  return nodeParseArgs({
    args: argv,
    options: nodeOptions(spec),
    strict: true,
    allowPositionals: true,
    tokens: true,
  });
}

/**
 * Parses `argv` against the command's schema. Unknown options, missing or unexpected values, repeated
 * options and missing or extra positional arguments throw a UsageError that names them.
 */
export function parseCommandArgs(spec: CommandSpec, argv: string[]): ParsedArgs {
  let parsed: ReturnType<typeof strictParse>;
  try {
    parsed = strictParse(spec, argv);
  } catch (e) {
    throw explain(spec, argv, e);
  }
  const flags = new Map<string, string | true>();
  let previous: (typeof parsed.tokens)[number] | undefined;
  let positionals = 0;
  for (const t of parsed.tokens) {
    if (t.kind === 'option') {
      // parseArgs keeps the last of a repeated option; a second -o or --block is more likely a slip
      if (flags.has(t.name))
        throw new UsageError(
          `${t.rawName} is given twice${t.name === 'include' || t.name === 'exclude' ? '; separate patterns with commas' : ''}.`,
        );
      flags.set(t.name, t.value ?? true);
    } else if (t.kind === 'positional' && ++positionals > spec.positionals.length) {
      const after =
        previous?.kind === 'option' && flagSpec(spec, previous.name)?.type === 'boolean'
          ? ` (${previous.rawName} takes no value)`
          : '';
      throw new UsageError(`unexpected argument '${t.value}'${after}.`);
    }
    previous = t;
  }
  const missing = spec.positionals[parsed.positionals.length];
  if (missing) throw new UsageError(`missing ${missing.name}: ${missing.help}.`);
  return { positional: parsed.positionals, flags };
}

/** The command's usage lines, continuation lines aligned under the command name. */
export function synopsis(spec: CommandSpec): string[] {
  const program = 'compression-studio ';
  return spec.usage.map((u) => `  ${u.startsWith(' ') ? ' '.repeat(program.length) : program}${u}`);
}

/** The text `compression-studio COMMAND --help` prints. */
export function formatHelp(spec: CommandSpec): string {
  const options = Object.entries(spec.options).map(([name, f]) => ({
    left: `${f.short ? `-${f.short}, ` : '    '}--${name}${f.value ? ` ${f.value}` : ''}`,
    help: f.help,
  }));
  const positionals = spec.positionals.map((p) => ({ left: p.name, help: p.help }));
  const width = Math.max(...[...options, ...positionals].map((row) => row.left.length));
  const rows = (list: { left: string; help: string }[]) =>
    list.map((row) => `  ${row.left.padEnd(width)}  ${row.help}`);
  const lines = [`compression-studio ${spec.name} — ${spec.summary}`, '', 'Usage:', ...synopsis(spec)];
  if (positionals.length) lines.push('', 'Arguments:', ...rows(positionals));
  lines.push('', 'Options:', ...rows(options));
  for (const n of spec.notes ?? []) lines.push('', n);
  return lines.join('\n') + '\n';
}

/** A decimal number as typed (`0.5`, `32`, `1e-3`); `Number` alone would also take '', ' ' and '0x20'. */
export function parseNumber(text: string): number | undefined {
  return /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text.trim()) ? Number(text) : undefined;
}

/** A whole-number flag in [min, max], or `fallback` when it is not given. */
export function integerFlag(
  args: ParsedArgs,
  key: string,
  fallback: number,
  min: number,
  max?: number,
): number {
  const v = args.flags.get(key);
  if (v === undefined) return fallback;
  const n = typeof v === 'string' ? parseNumber(v) : undefined;
  const allowed = max === undefined ? `a whole number ≥ ${min}` : `a whole number from ${min} to ${max}`;
  if (n === undefined || !Number.isInteger(n) || n < min || (max !== undefined && n > max))
    throw new UsageError(`--${key} must be ${allowed}, got '${v}'.`);
  return n;
}

/**
 * A text file named by a flag, read whole. A missing file or a folder is a ModelError naming the
 * flag: it is the input that is wrong, not how the command was called.
 */
export function readTextFile(path: string, flag: string): string {
  if (!existsSync(path)) throw new ModelError('invalid-argument', `${flag} ${path}: no such file.`);
  if (statSync(path).isDirectory())
    throw new ModelError('invalid-argument', `${flag} ${path} is a folder, not a file.`);
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ModelError('invalid-argument', `${flag} ${path} could not be read (${(e as Error).message}).`);
  }
}
