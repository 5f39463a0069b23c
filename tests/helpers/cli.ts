/** The CLI run in-process, its stdout and stderr captured. */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { main } from '../../src/cli/main.ts';

export async function runCli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(
    args,
    (s) => (out += s),
    (s) => (err += s),
  );
  return { code, out, err };
}

/** A file's sha256, to show the source was never written. */
export const sha256File = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/** runCli with process.stderr captured too: calibration progress is written there, not through main's err. */
export async function runCliCapturingStderr(
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  let progress = '';
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string) => ((progress += s), true)) as typeof process.stderr.write;
  try {
    const r = await runCli(args);
    return { ...r, err: r.err + progress };
  } finally {
    process.stderr.write = write;
  }
}

/** `distill`'s training flags for a test: 3 steps of 2 × 32 tokens on 6 generated sequences, JSON report. */
export const QUICK_DISTILL_ARGS = [
  '--train-generate',
  '6',
  '--steps',
  '3',
  '--batch',
  '2',
  '--seq',
  '32',
  '--lr',
  '3e-4',
  '--json',
];
