/**
 * The command line refuses every mistake with a message that names it, and exits with the status the
 * README documents: 0 done, 1 the input is unusable or the work failed, 2 the command line is wrong,
 * 3 an error nobody anticipated. Everything runs `main` in-process on the real stories260K model.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EXIT, reportError } from '../../src/cli/main.ts';
import { UsageError, editDistance, nearest } from '../../src/cli/args.ts';
import { COMMAND_SPECS } from '../../src/cli/commands.ts';
import { ModelError } from '../../src/core/errors.ts';
import { tempDir } from '../helpers/ort.ts';
import { ROOT, STORIES_DIR, STORIES_MODEL } from '../helpers/fixtures.ts';
import { runCli as run } from '../helpers/cli.ts';

/** A usage error: status 2, nothing on stdout, the message and the pointer to --help on stderr. */
async function expectUsageError(args: string[], message: RegExp): Promise<string> {
  const r = await run(args);
  expect(r.err).toMatch(message);
  expect(r.code).toBe(EXIT.usage);
  expect(r.out).toBe('');
  expect(r.err).toMatch(/Run 'compression-studio( \w+)? --help' for usage/);
  return r.err;
}

/** Outputs of commands that must fail go here, never to the working directory, should one succeed. */
const SCRATCH = tempDir();
const scratch = (name: string) => join(SCRATCH, name);

const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;

describe('unknown flags and commands', () => {
  it('--blok 64 is an unknown option that suggests --block, and nothing is written', async () => {
    const out = join(tempDir(), 'q4.onnx');
    await expectUsageError(
      ['compress', STORIES_MODEL, '--int4', '--blok', '64', '-o', out],
      /compress: unknown option --blok \(did you mean --block\?\)/,
    );
    expect(existsSync(out)).toBe(false);
  });

  it('--int9 suggests both --int8 and --int4', async () => {
    await expectUsageError(
      ['compress', STORIES_MODEL, '--int9', '-o', join(tempDir(), 'x.onnx')],
      /unknown option --int9 \(did you mean --int8 or --int4\?\)/,
    );
  });

  it('a long option typed with one dash is suggested with two', async () => {
    await expectUsageError(
      ['inspect', STORIES_MODEL, '-json'],
      /unknown option -json \(did you mean --json\?\)/,
    );
  });

  it('an option far from every known one is named without a guess', async () => {
    const err = await expectUsageError(
      ['inspect', STORIES_MODEL, '--frobnicate'],
      /unknown option --frobnicate\./,
    );
    expect(err).not.toMatch(/did you mean/);
  });

  it('names of Object.prototype members are unknown options like any other', async () => {
    for (const flag of ['--constructor', '--__proto__', '--toString'])
      await expectUsageError(
        ['inspect', STORIES_MODEL, flag],
        new RegExp(`inspect: unknown option ${flag}\\.`),
      );
    await expectUsageError(['constructor'], /unknown command 'constructor'/);
  });

  it('an option of another command is unknown here', async () => {
    await expectUsageError(['inspect', STORIES_MODEL, '--int8'], /inspect: unknown option --int8/);
  });

  it('an unknown command suggests the nearest command, a transposition counting as one edit', async () => {
    await expectUsageError(
      ['inpsect', STORIES_MODEL],
      /unknown command 'inpsect' \(did you mean inspect\?\)/,
    );
    await expectUsageError(['compres'], /unknown command 'compres' \(did you mean compress\?\)/);
    const err = await expectUsageError(
      ['frobnicate'],
      /unknown command 'frobnicate'; commands: inspect, ppl, compress, distill, methods/,
    );
    expect(err).not.toMatch(/did you mean/);
  });

  it('an option before the command says the command comes first', async () => {
    await expectUsageError(
      ['--verison'],
      /unknown option --verison \(did you mean --version\?\); the command comes first/,
    );
    await expectUsageError(['--json', 'inspect'], /unknown option --json; the command comes first/);
  });

  it('no command at all prints the usage to stderr with status 2', async () => {
    const r = await run([]);
    expect(r.code).toBe(EXIT.usage);
    expect(r.err).toMatch(/Usage:\n {2}compression-studio inspect MODEL\.onnx/);
    expect(r.out).toBe('');
  });
});

describe('values', () => {
  it('an option that needs a value and has none says so, with what it expects', async () => {
    await expectUsageError(['ppl', STORIES_MODEL, '--ids'], /ppl: --ids needs a value \(FILE\)\./);
    await expectUsageError(
      ['compress', STORIES_MODEL, '--int4', '--block', '-o', scratch('x.onnx')],
      /--block needs a value \(N\), got the option -o; a value that starts with '-' is written --block=-o/,
    );
  });

  it('a value that starts with a dash is written with =, so a negative number is not taken for a flag', async () => {
    await expectUsageError(
      ['compress', STORIES_MODEL, '--prune', '-0.5', '-o', scratch('x.onnx')],
      /--prune needs a value \(S\), got '-0\.5'; a value that starts with '-' is written --prune=-0\.5\./,
    );
    await expectUsageError(
      ['compress', STORIES_MODEL, '--prune=-0.5', '-o', scratch('x.onnx')],
      /--prune -0\.5: prune\.sparsity must be between 0 and 0\.99, got -0\.5\./,
    );
  });

  it('a short option typed as a long one suggests the short one', async () => {
    await expectUsageError(
      ['compress', STORIES_MODEL, '--int8', '--o', 'x.onnx'],
      /unknown option --o \(did you mean -o\?\)/,
    );
  });

  it('a flag that takes no value refuses one, inline or following', async () => {
    await expectUsageError(['inspect', STORIES_MODEL, '--json=yes'], /--json takes no value, got 'yes'\./);
    await expectUsageError(
      ['compress', STORIES_MODEL, '--int4', '64', '-o', join(tempDir(), 'x.onnx')],
      /unexpected argument '64' \(--int4 takes no value\)/,
    );
  });

  it('the same option twice is refused rather than the last one silently winning', async () => {
    await expectUsageError(
      ['compress', STORIES_MODEL, '--int8', '-o', scratch('a.onnx'), '-o', scratch('b.onnx')],
      /-o is given twice\./,
    );
    expect(existsSync(scratch('a.onnx')) || existsSync(scratch('b.onnx'))).toBe(false);
    await expectUsageError(
      [
        'compress',
        STORIES_MODEL,
        '--int8',
        '--exclude',
        'l0.*',
        '--exclude',
        'l1.*',
        '-o',
        scratch('a.onnx'),
      ],
      /--exclude is given twice; separate patterns with commas/,
    );
  });

  const numbers: [string[], RegExp][] = [
    [['--int4', '--block', '33'], /--block 33: int4\.blockSize must be one of 16, 32, 64, 128, got 33\./],
    [['--int4', '--block', '0x20'], /--block must be one of 16, 32, 64, 128, got '0x20'\./],
    [['--prune', '1.5'], /--prune 1\.5: prune\.sparsity must be between 0 and 0\.99, got 1\.5\./],
    [['--prune', ''], /--prune must be a number from 0 to 0\.99, got ''\./],
    [['--kmeans', '300'], /--kmeans 300: kmeans\.clusters must be between 2 and 256, got 300\./],
    [['--kmeans', '2.5'], /--kmeans 2\.5: kmeans\.clusters must be a whole number, got 2\.5\./],
    [['--nm', '3:4'], /--nm must be 2:4 or 4:8, got '3:4'\./],
    [['--int4', '--format', 'gguf'], /--format must be matmulnbits or dequantize, got 'gguf'\./],
  ];
  for (const [flags, message] of numbers) {
    it(`compress ${flags.join(' ')} names the flag and the allowed values`, async () => {
      const out = join(tempDir(), 'x.onnx');
      await expectUsageError(['compress', STORIES_MODEL, ...flags, '-o', out], message);
      expect(existsSync(out)).toBe(false);
    });
  }

  it('ppl --ctx and --stride must be whole numbers in range', async () => {
    const ids = join(STORIES_DIR, 'ids.txt');
    await expectUsageError(
      ['ppl', STORIES_MODEL, '--ids', ids, '--ctx', 'abc'],
      /--ctx must be a whole number ≥ 2, got 'abc'\./,
    );
    await expectUsageError(
      ['ppl', STORIES_MODEL, '--ids', ids, '--ctx', '1'],
      /--ctx must be a whole number ≥ 2, got '1'\./,
    );
    await expectUsageError(
      ['ppl', STORIES_MODEL, '--ids', ids, '--ctx', '8', '--stride', '9'],
      /--stride must be a whole number from 1 to 8, got '9'\./,
    );
  });
});

describe('arguments that go together', () => {
  const out = () => join(tempDir(), 'x.onnx');

  it('a refinement without its method is refused, not ignored', async () => {
    await expectUsageError(
      ['compress', STORIES_MODEL, '--int8', '--block', '64', '-o', out()],
      /--block applies to --int4 or --gptq or --awq, which is not given; add it or drop --block\./,
    );
    await expectUsageError(
      ['compress', STORIES_MODEL, '--global', '--int8', '-o', out()],
      /--global applies to --prune/,
    );
    await expectUsageError(
      ['compress', STORIES_MODEL, '--fp16', '--asym', '-o', out()],
      /--asym applies to --int8 or --int4/,
    );
  });

  it('conflicting choices are refused', async () => {
    await expectUsageError(
      ['compress', STORIES_MODEL, '--int8', '--fp16', '-o', out()],
      /Choose one storage format/,
    );
    await expectUsageError(
      ['compress', STORIES_MODEL, '--prune', '0.5', '--nm', '2:4', '-o', out()],
      /--prune and --nm are each a pruning step: choose one/,
    );
    await expectUsageError(
      ['compress', STORIES_MODEL, '--recipe', 'r.json', '--int8', '-o', out()],
      /--recipe and --int8 can't be combined/,
    );
  });

  it('compress without a method, without -o or without a model says which is missing', async () => {
    await expectUsageError(
      ['compress', STORIES_MODEL, '-o', out()],
      /nothing to do: give a method \(--int8, --int4/,
    );
    await expectUsageError(
      ['compress', STORIES_MODEL, '--int8'],
      /missing -o OUT\.onnx: where to write the compressed model\./,
    );
    await expectUsageError(['compress', '--int8', '-o', out()], /missing MODEL\.onnx: the ONNX model/);
    await expectUsageError(['inspect', STORIES_MODEL, 'other.onnx'], /unexpected argument 'other\.onnx'\./);
  });

  it('ppl --text without --tokenizer says --tokenizer is missing and what it expects', async () => {
    await expectUsageError(
      ['ppl', STORIES_MODEL, '--text', join(STORIES_DIR, 'ids.txt')],
      /--text needs --tokenizer DIR_OR_JSON: a Hugging Face tokenizer\.json, or the folder holding one.*--ids FILE/,
    );
  });

  it('ppl with neither --text nor --ids names both ways of giving a text', async () => {
    await expectUsageError(
      ['ppl', STORIES_MODEL],
      /nothing to score: give --text FILE with --tokenizer DIR_OR_JSON, or --ids FILE/,
    );
    await expectUsageError(['ppl', STORIES_MODEL, '--tokenizer', STORIES_DIR], /missing --text FILE/);
    await expectUsageError(
      ['ppl', STORIES_MODEL, '--ids', 'a.txt', '--text', 'b.txt'],
      /--text and --ids both name a text to score: give one of them\./,
    );
  });
});

describe('--version and --help', () => {
  for (const args of [['--version'], ['-v'], ['version']]) {
    it(`${args[0]} prints the package.json version`, async () => {
      const r = await run(args);
      expect(r).toEqual({ code: EXIT.ok, out: `${VERSION}\n`, err: '' });
    });
  }

  for (const spec of COMMAND_SPECS) {
    for (const args of [
      [spec.name, '--help'],
      [spec.name, '-h'],
      ['help', spec.name],
    ]) {
      it(`${args.join(' ')} prints that command's usage and every option`, async () => {
        const r = await run(args);
        expect(r.code).toBe(EXIT.ok);
        expect(r.err).toBe('');
        expect(r.out).toMatch(new RegExp(`^compression-studio ${spec.name} — `));
        for (const flag of Object.keys(spec.options)) expect(r.out).toContain(`--${flag}`);
      });
    }
  }

  it('--help wins over the other arguments, even wrong ones', async () => {
    const r = await run(['compress', STORIES_MODEL, '--blok', '--help']);
    expect(r.code).toBe(EXIT.ok);
    expect(r.out).toMatch(/--block N/);
  });

  it('--help alone lists the commands and the exit statuses', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(EXIT.ok);
    expect(r.out).toMatch(/Commands:\n {2}inspect/);
    expect(r.out).toMatch(/Exit status: 0 .* 1 .*\n2 .* 3 /);
  });

  it('help of an unknown command is a usage error', async () => {
    await expectUsageError(['help', 'inpsect'], /unknown command 'inpsect' \(did you mean inspect\?\)/);
  });
});

describe('exit statuses', () => {
  it('0: a command that succeeds', async () => {
    const ids = join(tempDir(), 'ids.txt');
    // the first 40 ids of the fixture: one short window, so the run takes well under a second
    const first = readFileSync(join(STORIES_DIR, 'ids.txt'), 'utf8').split('\n')[0].split(/\s+/).slice(0, 40);
    writeFileSync(ids, first.join(' ') + '\n');
    const r = await run(['ppl', STORIES_MODEL, '--ids', ids, '--ctx', '64', '--json']);
    expect(r.err).toBe('');
    expect(r.code).toBe(EXIT.ok);
    const result = JSON.parse(r.out);
    expect(result).toMatchObject({ ctx: 64, stride: 32, tokens: 39, sequences: 1 });
    expect(result.perplexity).toBeGreaterThan(1);
  });

  it('1: an input file that is missing, a folder or not a recipe', async () => {
    const dir = tempDir();
    const out = join(dir, 'x.onnx');
    const missing = await run(['ppl', STORIES_MODEL, '--ids', join(dir, 'none.txt')]);
    expect(missing.code).toBe(EXIT.failed);
    expect(missing.err).toMatch(/--ids .*none\.txt: no such file\./);
    const folder = await run(['compress', STORIES_MODEL, '--recipe', dir, '-o', out]);
    expect(folder.code).toBe(EXIT.failed);
    expect(folder.err).toMatch(/--recipe .* is a folder, not a file\./);
    writeFileSync(join(dir, 'r.json'), '{"steps": [');
    const notJson = await run(['compress', STORIES_MODEL, '--recipe', join(dir, 'r.json'), '-o', out]);
    expect(notJson.code).toBe(EXIT.failed);
    expect(notJson.err).toMatch(/not JSON/);
    expect(notJson.err).not.toMatch(/--help/);
    const model = await run(['inspect', join(dir, 'r.json')]);
    expect(model.code).toBe(EXIT.failed);
    expect(existsSync(out)).toBe(false);
  });

  it('1: an -o in a folder that does not exist, or naming a folder, before any work is done', async () => {
    const dir = tempDir();
    const nowhere = await run(['compress', STORIES_MODEL, '--int8', '-o', join(dir, 'none', 'x.onnx')]);
    expect(nowhere.code).toBe(EXIT.failed);
    expect(nowhere.err).toMatch(/-o .*x\.onnx: the folder .*none does not exist\./);
    expect(existsSync(join(dir, 'none'))).toBe(false);
    const folder = await run(['compress', STORIES_MODEL, '--int8', '-o', dir]);
    expect(folder.code).toBe(EXIT.failed);
    expect(folder.err).toMatch(/is a folder: name the \.onnx file to write\./);
    writeFileSync(join(dir, 'file'), 'not a folder');
    const underFile = await run(['compress', STORIES_MODEL, '--int8', '-o', join(dir, 'file', 'x.onnx')]);
    expect(underFile.code).toBe(EXIT.failed);
    expect(underFile.err).toMatch(/file is not a folder\./);
  });

  it('1 for typed and file-system errors, 2 for usage errors, 3 for anything unanticipated', () => {
    const lines: string[] = [];
    const err = (s: string) => lines.push(s);
    expect(
      reportError(new ModelError('corrupt', 'm.onnx is corrupt.'), 'compression-studio inspect', err),
    ).toBe(1);
    const eacces = Object.assign(new Error("EACCES: permission denied, open 'out.onnx'"), { code: 'EACCES' });
    expect(reportError(eacces, 'compression-studio compress', err)).toBe(1);
    expect(reportError(new UsageError('unknown option --x.'), 'compression-studio inspect', err)).toBe(2);
    expect(
      reportError(
        new TypeError("Cannot read properties of undefined (reading 'dims')"),
        'compression-studio compress',
        err,
      ),
    ).toBe(3);
    expect(lines.join('')).toBe(
      'compression-studio inspect: m.onnx is corrupt.\n' +
        "compression-studio compress: EACCES: permission denied, open 'out.onnx'\n" +
        "compression-studio inspect: unknown option --x.\nRun 'compression-studio inspect --help' for usage.\n" +
        "compression-studio compress: internal error: Cannot read properties of undefined (reading 'dims')\n" +
        '(compression-studio did not anticipate this error; please report it with the command line.)\n',
    );
  });
});

describe('README', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(
    readme.indexOf('## Command line'),
    readme.indexOf('\n## ', readme.indexOf('## Command line') + 1),
  );

  it("the Command line section names every command's every option", () => {
    for (const spec of COMMAND_SPECS)
      for (const flag of Object.keys(spec.options)) expect(section, `--${flag}`).toContain(`--${flag}`);
    expect(section).toContain('--version');
  });

  it('the Command line section lists the exit statuses the code returns', () => {
    for (const [status, code] of Object.entries(EXIT))
      expect(section, status).toMatch(new RegExp(`\\| ${code} +\\|`));
  });
});

describe('suggestions', () => {
  it('edit distance counts insertions, deletions, substitutions and adjacent transpositions as one', () => {
    expect(editDistance('blok', 'block')).toBe(1);
    expect(editDistance('block', 'blok')).toBe(1);
    expect(editDistance('int9', 'int8')).toBe(1);
    expect(editDistance('inpsect', 'inspect')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('kitten', 'sitting')).toBe(3);
  });

  it('suggests only near candidates', () => {
    expect(nearest('ppl', ['inspect', 'ppl2', 'compress'])).toEqual(['ppl2']);
    expect(nearest('x', ['inspect', 'ppl', 'compress'])).toEqual([]);
  });
});
