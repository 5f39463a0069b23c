/** `compression-studio <command>`: the studio's core, headless. */
import { readFileSync } from 'node:fs';
import { isModelError } from '../core/errors.ts';
import {
  UsageError,
  didYouMean,
  formatHelp,
  nearest,
  parseCommandArgs,
  synopsis,
  wantsHelp,
  type CommandSpec,
  type ParsedArgs,
} from './args.ts';
import { COMMAND_SPECS } from './commands.ts';
import { inspectCommand } from './inspect.ts';

/** Exit statuses, as the README's "Command line" section lists them. */
export const EXIT = {
  ok: 0,
  /** The model, text, tokenizer or recipe is unusable, or the work itself failed (a typed error). */
  failed: 1,
  /** The command line itself is wrong: unknown command or option, missing or malformed argument. */
  usage: 2,
  /** An error the code did not anticipate: a bug, reported with its message. */
  internal: 3,
} as const;

export type Command = (args: ParsedArgs, out: (s: string) => void) => Promise<number>;

const COMMANDS: Record<string, () => Promise<Command>> = {
  inspect: async () => inspectCommand,
  ppl: async () => (await import('./ppl.ts')).pplCommand,
  compress: async () => (await import('./compress.ts')).compressCommand,
  distill: async () => (await import('./distill.ts')).distillCommand,
  methods: async () => (await import('./methods.ts')).methodsCommand,
};

/** The options accepted before a command. */
const GLOBAL_OPTIONS = ['help', 'version'];

function usage(): string {
  const width = Math.max(...COMMAND_SPECS.map((s) => s.name.length));
  return [
    'compression-studio — inspect, evaluate and compress ONNX language models',
    '',
    'Usage:',
    ...COMMAND_SPECS.flatMap(synopsis),
    '  compression-studio help COMMAND | COMMAND --help',
    '  compression-studio --version',
    '',
    'Commands:',
    ...COMMAND_SPECS.map((s) => `  ${s.name.padEnd(width)}  ${s.summary}`),
    '',
    'Exit status: 0 done; 1 the model or an input file is unusable, or the work failed;',
    '2 the command line is wrong (unknown command or option, missing or bad argument); 3 an internal error.',
    '',
  ].join('\n');
}

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

function findSpec(name: string): CommandSpec {
  const spec = COMMAND_SPECS.find((s) => s.name === name);
  if (spec) return spec;
  const names = COMMAND_SPECS.map((s) => s.name);
  throw new UsageError(
    `unknown command '${name}'${didYouMean(nearest(name, names))}; commands: ${names.join(', ')}.`,
  );
}

/** A file-system failure (no such file, permission denied, disk full) carries a string code such as ENOENT. */
function isSystemError(e: unknown): e is Error & { code: string } {
  const code = e instanceof Error ? (e as Error & { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code);
}

/** Writes the message for a failure and returns its exit status: 2 usage, 1 typed or file-system, 3 anything else. */
export function reportError(e: unknown, where: string, err: (s: string) => void): number {
  if (e instanceof UsageError) {
    const help = where === 'compression-studio' ? 'compression-studio --help' : `${where} --help`;
    err(`${where}: ${e.message}\nRun '${help}' for usage.\n`);
    return EXIT.usage;
  }
  if (isModelError(e) || isSystemError(e)) {
    err(`${where}: ${e.message}\n`);
    return EXIT.failed;
  }
  const message = e instanceof Error ? e.message : String(e);
  err(
    `${where}: internal error: ${message}\n` +
      '(compression-studio did not anticipate this error; please report it with the command line.)\n',
  );
  return EXIT.internal;
}

export async function main(
  argv: string[],
  out: (s: string) => void = (s) => process.stdout.write(s),
  err: (s: string) => void = (s) => process.stderr.write(s),
): Promise<number> {
  const [name, ...rest] = argv;
  let where = 'compression-studio';
  try {
    if (name === undefined) {
      err(usage());
      return EXIT.usage;
    }
    if (name === '--help' || name === '-h' || (name === 'help' && rest.length === 0)) {
      out(usage());
      return EXIT.ok;
    }
    if (name === '--version' || name === '-v' || name === 'version') {
      if (rest.length) throw new UsageError(`${name} takes no arguments, got '${rest[0]}'.`);
      out(`${packageVersion()}\n`);
      return EXIT.ok;
    }
    if (name === 'help') {
      if (rest.length > 1) throw new UsageError(`help takes one command, got '${rest.join(' ')}'.`);
      out(formatHelp(findSpec(rest[0])));
      return EXIT.ok;
    }
    if (name.startsWith('-')) {
      const suggestions = nearest(name.replace(/^--?/, ''), GLOBAL_OPTIONS).map((o) => `--${o}`);
      throw new UsageError(
        `unknown option ${name.split('=', 1)[0]}${didYouMean(suggestions)}; ` +
          'the command comes first: compression-studio COMMAND [options].',
      );
    }
    const spec = findSpec(name);
    where = `compression-studio ${name}`;
    if (wantsHelp(rest)) {
      out(formatHelp(spec));
      return EXIT.ok;
    }
    // every argument is checked before the command loads its modules or opens a file
    const args = parseCommandArgs(spec, rest);
    return await (
      await COMMANDS[name]()
    )(args, out);
  } catch (e) {
    return reportError(e, where, err);
  }
}
