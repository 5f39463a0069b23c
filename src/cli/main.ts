/** `compression-studio <command>`: the studio's core, headless. */
import { isModelError } from '../core/errors.ts';
import { inspectCommand } from './inspect.ts';

const USAGE = `compression-studio — inspect, evaluate and compress ONNX language models

Usage:
  compression-studio inspect MODEL.onnx [--json]
  compression-studio ppl MODEL.onnx (--text FILE --tokenizer DIR_OR_JSON | --ids FILE) [--ctx N] [--stride N] [--json]
  compression-studio compress MODEL.onnx (--recipe RECIPE.json | --int8 [--per-tensor] | --int4 [--block 32]
                     | --prune S [--global] [--nm 2:4] | --kmeans K [--per-channel] | --fp16) -o OUT.onnx [--json]
  compression-studio methods [--json]      list methods, their options and defaults
`;

export type Command = (args: string[], out: (s: string) => void) => Promise<number>;

const COMMANDS: Record<string, () => Promise<Command>> = {
  inspect: async () => inspectCommand,
  ppl: async () => (await import('./ppl.ts')).pplCommand,
  compress: async () => (await import('./compress.ts')).compressCommand,
  methods: async () => (await import('./methods.ts')).methodsCommand,
};

export async function main(
  argv: string[],
  out: (s: string) => void = (s) => process.stdout.write(s),
): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    out(USAGE);
    return name ? 0 : 2;
  }
  const load = COMMANDS[name];
  if (!load) {
    process.stderr.write(`compression-studio: unknown command '${name}'\n\n${USAGE}`);
    return 2;
  }
  try {
    return await (
      await load()
    )(rest, out);
  } catch (e) {
    const msg = isModelError(e) ? e.message : e instanceof Error ? e.message : String(e);
    process.stderr.write(`compression-studio ${name}: ${msg}\n`);
    return 1;
  }
}
