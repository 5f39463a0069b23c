/** A small argv parser: positional arguments, `--flag`, `--key value` and `--key=value`. */
import { ModelError } from '../core/errors.ts';

export interface ParsedArgs {
  positional: string[];
  flags: Map<string, string | true>;
}

export function parseArgs(argv: string[], valued: string[]): ParsedArgs {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('-') || a === '-') {
      positional.push(a);
      continue;
    }
    const [key, inline] = a.replace(/^--?/, '').split(/=(.*)/s, 2);
    if (valued.includes(key)) {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new ModelError('invalid-argument', `--${key} needs a value.`);
      flags.set(key, value);
    } else {
      flags.set(key, true);
    }
  }
  return { positional, flags };
}

export function numberFlag(args: ParsedArgs, key: string, fallback: number): number {
  const v = args.flags.get(key);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isFinite(n))
    throw new ModelError('invalid-argument', `--${key} must be a number, got '${v}'.`);
  return n;
}
