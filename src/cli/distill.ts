/**
 * `compression-studio distill TEACHER STUDENT -o OUT`: knowledge distillation on the training engine
 * (src/core/train). The teacher runs in onnxruntime-node; the student trains through its own graph;
 * the written model is the student's file with its float weights replaced (same graph, same names).
 * Held-out perplexity is measured by onnxruntime on the student before and on the written file after.
 * `--qat int4|int8|kmeans`: quantization-aware training (src/core/train/qat.ts); the written model is
 * then the quantized export of the trained weights, and 'before' the same quantization untrained.
 * `--learn-scales` (int4, int8): the scales train too, LSQ-style (src/core/train/lsq.ts), and the
 * written file stores the learned scales.
 */
import { dirname, join, resolve } from 'node:path';
import { ModelError } from '../core/errors.ts';
import { generateCalibrationSequences } from '../core/calibrate/generate.ts';
import { checkVocabulary } from '../core/compress/calibration.ts';
import { evaluatePerplexity } from '../core/eval/perplexity.ts';
import { parseModel, type OnnxModel } from '../core/onnx/model.ts';
import { summarizeInputs } from '../core/summary.ts';
import { loadTokenizer, parseIdsText } from '../core/tokenizer.ts';
import {
  TRAIN_SELECTIONS,
  checkTrainable,
  distill,
  sessionTeacher,
  withWeights,
  type DistillStep,
  type TrainSelection,
} from '../core/train/distill.ts';
import type { Schedule } from '../core/train/optim.ts';
import { QAT_METHODS, qatDistill, type QatMethod } from '../core/train/qat.ts';
import { resolveRecipe, type ResolvedStep } from '../core/compress/recipe.ts';
import { compressModel } from '../core/compress/pipeline.ts';
import { exportCompressed } from '../core/compress/export.ts';
import { INT4_BLOCK_SIZES } from '../methods/int4/index.ts';
import { createNodeSession, Tensor } from '../runtime/ort-node.ts';
import { UsageError, integerFlag, parseNumber, readTextFile, type ParsedArgs } from './args.ts';
import { checkOutputPlace, checkOutputsAreNotInputs, writeFilesAtomically } from './compress.ts';
import { modelSources, resolveModelPath } from './files.ts';
import { checkContext, modelContext } from '../core/eval/context.ts';
import { configContext, onnxruntime, readConfig, readTokenizerJson } from './ppl.ts';

const TRAIN_SOURCES = ['train-text', 'train-ids', 'train-generate'] as const;
const SCHEDULES: readonly Schedule[] = ['cosine', 'linear', 'constant'];

/** A decimal flag in (min, max] or [min, max], or `fallback` when not given. */
function numberFlag(
  args: ParsedArgs,
  key: string,
  fallback: number,
  ok: (n: number) => boolean,
  what: string,
): number {
  const v = args.flags.get(key);
  if (v === undefined) return fallback;
  const n = typeof v === 'string' ? parseNumber(v) : undefined;
  if (n === undefined || !ok(n)) throw new UsageError(`--${key} must be ${what}, got '${v}'.`);
  return n;
}

function choice<T extends string>(args: ParsedArgs, key: string, options: readonly T[], fallback: T): T {
  const v = args.flags.get(key);
  if (v === undefined) return fallback;
  if (typeof v !== 'string' || !options.includes(v as T))
    throw new UsageError(`--${key} must be one of ${options.join(', ')}, got '${String(v)}'.`);
  return v as T;
}

interface Settings {
  steps: number;
  batch: number;
  seq: number;
  lr: number;
  temperature: number;
  alpha: number;
  schedule: Schedule;
  warmup?: number;
  weightDecay: number;
  beta2: number;
  gradClip?: number;
  train: TrainSelection;
  seed: number;
}

/** Every flag checked (and the data source chosen) before a model is read. */
function settingsFromArgs(args: ParsedArgs, context: number | undefined): Settings {
  const sources = TRAIN_SOURCES.filter((s) => args.flags.has(s));
  if (sources.length === 0)
    throw new UsageError(
      'no training data: give --train-text FILE --tokenizer DIR_OR_JSON, --train-ids FILE or --train-generate N.',
    );
  if (sources.length > 1)
    throw new UsageError(
      `${sources.map((s) => `--${s}`).join(' and ')} are two sources of training data: choose one.`,
    );
  const needsTokenizer = args.flags.has('train-text') || args.flags.has('eval-text');
  if (needsTokenizer && !args.flags.has('tokenizer'))
    throw new UsageError(
      '--train-text and --eval-text need --tokenizer DIR_OR_JSON: a Hugging Face tokenizer.json, or the folder holding one.',
    );
  if (!needsTokenizer && args.flags.has('tokenizer'))
    throw new UsageError('--tokenizer is only read with --train-text or --eval-text.');
  if (args.flags.has('train-bos') && !args.flags.has('train-generate'))
    throw new UsageError('--train-bos is only read with --train-generate.');
  if (args.flags.has('eval-text') && args.flags.has('eval-ids'))
    throw new UsageError('--eval-text and --eval-ids both name held-out data: give one of them.');
  const steps = integerFlag(args, 'steps', 100, 1, 1_000_000);
  const warmupGiven = args.flags.has('warmup') ? integerFlag(args, 'warmup', 0, 0, steps) : undefined;
  return {
    steps,
    batch: integerFlag(args, 'batch', 8, 1, 4096),
    seq: integerFlag(args, 'seq', Math.min(128, context ?? 128), 2, 1_000_000),
    lr: numberFlag(args, 'lr', 1e-3, (n) => n > 0 && n < 10, 'a positive number below 10'),
    temperature: numberFlag(args, 'temperature', 2, (n) => n > 0 && n <= 100, 'a number in (0, 100]'),
    alpha: numberFlag(args, 'alpha', 0.5, (n) => n >= 0 && n <= 1, 'a number from 0 to 1'),
    schedule: choice(args, 'schedule', SCHEDULES, 'cosine'),
    warmup: warmupGiven,
    weightDecay: numberFlag(args, 'weight-decay', 0.01, (n) => n >= 0 && n < 1, 'a number in [0, 1)'),
    beta2: numberFlag(args, 'beta2', 0.999, (n) => n > 0 && n < 1, 'a number in (0, 1)'),
    ...(args.flags.has('grad-clip')
      ? { gradClip: numberFlag(args, 'grad-clip', 1, (n) => n > 0, 'a positive number') }
      : {}),
    train: choice(args, 'train', TRAIN_SELECTIONS, 'all'),
    seed: integerFlag(args, 'seed', 0, 0, 2 ** 32 - 1),
  };
}

/**
 * The quantization step --qat trains against (every linear weight, as `compress` selects them) and
 * k-means' re-fit interval, or null without --qat.
 */
function qatFromArgs(
  args: ParsedArgs,
): { step: ResolvedStep; refitEvery: number; learnScales: boolean; scaleLr?: number } | null {
  const only: Record<string, QatMethod[]> = {
    block: ['int4'],
    asym: ['int4', 'int8'],
    k: ['kmeans'],
    'refit-every': ['kmeans'],
    'learn-scales': ['int4', 'int8'],
    'scale-lr': ['int4', 'int8'],
  };
  if (!args.flags.has('qat')) {
    for (const key of Object.keys(only))
      if (args.flags.has(key)) throw new UsageError(`--${key} is only read with --qat.`);
    return null;
  }
  const method = choice(args, 'qat', QAT_METHODS, 'int4');
  for (const [key, methods] of Object.entries(only))
    if (args.flags.has(key) && !methods.includes(method))
      throw new UsageError(`--${key} is read with --qat ${methods.join(' or ')}, not --qat ${method}.`);
  const symmetric = !args.flags.has('asym');
  let options: Record<string, number | boolean>;
  if (method === 'int4') {
    const blockSize = integerFlag(args, 'block', 32, 16, 128);
    if (!(INT4_BLOCK_SIZES as readonly number[]).includes(blockSize))
      throw new UsageError(`--block must be one of ${INT4_BLOCK_SIZES.join(', ')}, got '${blockSize}'.`);
    options = { blockSize, symmetric };
  } else if (method === 'int8') options = { symmetric };
  else options = { clusters: integerFlag(args, 'k', 16, 2, 256) };
  const learnScales = args.flags.has('learn-scales');
  if (args.flags.has('scale-lr') && !learnScales)
    throw new UsageError('--scale-lr is only read with --learn-scales.');
  return {
    step: resolveRecipe({ steps: [{ method, options }] })[0],
    refitEvery: integerFlag(args, 'refit-every', 0, 0, 1_000_000),
    learnScales,
    ...(learnScales
      ? { scaleLr: numberFlag(args, 'scale-lr', 1, (n) => n > 0 && n <= 100, 'a number in (0, 100]') }
      : {}),
  };
}

interface Data {
  train: number[][];
  heldOut: number[][];
  /** Where the held-out sequences come from, for the report. */
  heldOutFrom: string;
}

/** The last tenth of the tokens (one text) or of the sequences (several) held out; the rest trains. */
function splitOff(sequences: number[][], what: string): Data {
  if (sequences.length === 1) {
    const ids = sequences[0];
    const cut = Math.floor(ids.length * 0.9);
    return { train: [ids.slice(0, cut)], heldOut: [ids.slice(cut)], heldOutFrom: `the last 10 % of ${what}` };
  }
  const keep = Math.max(1, Math.ceil(sequences.length * 0.1));
  if (sequences.length < 2)
    throw new ModelError(
      'invalid-argument',
      `${what} has no sequence to hold out: give --eval-ids or --eval-text.`,
    );
  return {
    train: sequences.slice(0, sequences.length - keep),
    heldOut: sequences.slice(sequences.length - keep),
    heldOutFrom: `the last ${keep} sequence${keep > 1 ? 's' : ''} of ${what}`,
  };
}

async function readData(
  args: ParsedArgs,
  teacherPath: string,
  teacher: OnnxModel,
  settings: Settings,
): Promise<Data> {
  const tokenizerPath = args.flags.get('tokenizer');
  const tokenizer =
    typeof tokenizerPath === 'string' ? loadTokenizer(readTokenizerJson(tokenizerPath)) : undefined;
  const flag = (k: string) => args.flags.get(k) as string | undefined;
  let data: Data;
  const evalIds = flag('eval-ids');
  const evalText = flag('eval-text');
  const given = evalIds
    ? parseIdsText(readTextFile(evalIds, '--eval-ids'))
    : evalText
      ? [tokenizer!.encode(readTextFile(evalText, '--eval-text'))]
      : undefined;
  const trainIds = flag('train-ids');
  const trainText = flag('train-text');
  const generate = flag('train-generate');
  if (generate !== undefined) {
    const count = integerFlag(args, 'train-generate', 0, 1, 100_000);
    const config = readConfig([dirname(teacherPath), join(dirname(teacherPath), '..')]);
    const bosFromConfig = config?.bos_token_id;
    const bos = integerFlag(
      args,
      'train-bos',
      Number.isInteger(bosFromConfig) ? (bosFromConfig as number) : 1,
      0,
      2 ** 31 - 1,
    );
    const held = given ? 0 : Math.max(1, Math.ceil(count / 10));
    const session = await onnxruntime('load the teacher', () => createNodeSession(teacherPath));
    try {
      process.stderr.write(
        `generating ${count + held} sequences of ${settings.seq} tokens with the teacher\n`,
      );
      const all = await onnxruntime('generate training sequences', () =>
        generateCalibrationSequences(session, Tensor, summarizeInputs(teacher.graph), {
          count: count + held,
          length: settings.seq,
          seed: settings.seed,
          bos,
        }),
      );
      data = given
        ? { train: all, heldOut: given, heldOutFrom: evalIds ?? evalText! }
        : {
            train: all.slice(0, count),
            heldOut: all.slice(count),
            heldOutFrom: `${held} more generated sequence${held > 1 ? 's' : ''}`,
          };
    } finally {
      await session.release();
    }
  } else {
    const sequences = trainIds
      ? parseIdsText(readTextFile(trainIds, '--train-ids'))
      : [tokenizer!.encode(readTextFile(trainText!, '--train-text'))];
    const what = trainIds ? `--train-ids ${trainIds}` : `--train-text ${trainText}`;
    checkVocabulary(teacher, sequences, what);
    data = given
      ? { train: sequences, heldOut: given, heldOutFrom: evalIds ?? evalText! }
      : splitOff(sequences, what);
  }
  checkVocabulary(teacher, data.heldOut, `held-out data (${data.heldOutFrom})`);
  return data;
}

function progressPrinter(steps: number): (s: DistillStep) => void {
  const every = Math.max(1, Math.round(steps / 10));
  return (s) => {
    if (s.step % every !== 0 && s.step !== 1 && s.step !== steps) return;
    process.stderr.write(
      `step ${s.step}/${steps} loss ${s.loss.toFixed(4)} (KL ${s.kl.toFixed(4)}, CE ${s.ce.toFixed(4)}) ` +
        `lr ${s.lr.toExponential(2)} ${Math.round(s.tokensPerSecond)} tokens/s\n`,
    );
  };
}

async function heldOutPerplexity(
  model: Uint8Array | string,
  sequences: number[][],
  ctx: number,
  graph: OnnxModel,
) {
  const session = await onnxruntime('load the student', () => createNodeSession(model));
  try {
    const stride = Math.max(1, Math.floor(ctx / 2));
    return await onnxruntime('run the student', () =>
      evaluatePerplexity(session, Tensor, summarizeInputs(graph.graph), sequences, { ctx, stride }),
    );
  } finally {
    await session.release();
  }
}

export async function distillCommand(args: ParsedArgs, out: (s: string) => void): Promise<number> {
  // a model folder is read as the other commands read it (onnx/model.onnx, …)
  const teacherPath = resolveModelPath(args.positional[0], undefined, undefined).path;
  const studentPath = resolveModelPath(args.positional[1], undefined, undefined).path;
  const output = args.flags.get('output');
  if (typeof output !== 'string')
    throw new UsageError('missing -o OUT.onnx: where to write the trained student.');
  const context = configContext([dirname(studentPath), join(dirname(studentPath), '..')]);
  const settings = settingsFromArgs(args, context);
  const qatSettings = qatFromArgs(args);
  const qat = qatSettings?.step ?? null;
  checkOutputPlace(output);
  checkOutputsAreNotInputs([output], [teacherPath, studentPath]);

  const studentSources = modelSources(studentPath);
  const student = parseModel(studentSources.main, studentSources.external);
  checkTrainable(student);
  checkContext(
    settings.seq,
    modelContext(student.graph, readConfig([dirname(studentPath), join(dirname(studentPath), '..')])),
    `--seq ${settings.seq}`,
  );
  const teacherSources = modelSources(teacherPath);
  const teacherModel = parseModel(teacherSources.main, teacherSources.external);
  checkOutputsAreNotInputs([output], [...studentSources.inputs(), ...teacherSources.inputs()]);

  const data = await readData(args, teacherPath, teacherModel, settings);
  const studentFile = studentSources.external.length
    ? resolve(studentPath)
    : studentSources.main.read(0, studentSources.main.size);
  // with --qat, 'before' is the same quantization of the student without training
  const before = await heldOutPerplexity(
    qat ? exportCompressed(student, compressModel(student, [qat])).model : studentFile,
    data.heldOut,
    settings.seq,
    student,
  );

  const teacherSession = await onnxruntime('load the teacher', () =>
    createNodeSession(
      teacherSources.external.length ? teacherPath : teacherSources.main.read(0, teacherSources.main.size),
    ),
  );
  let result: Awaited<ReturnType<typeof distill>>;
  let written: Uint8Array;
  let bitsPerWeight: number | undefined;
  try {
    const teacher = sessionTeacher(teacherSession, Tensor, summarizeInputs(teacherModel.graph));
    const options = { ...settings, onStep: progressPrinter(settings.steps) };
    if (qat) {
      const trained = await qatDistill(student, teacher, data.train, qat, {
        ...options,
        refitEvery: qatSettings!.refitEvery,
        ...(qatSettings!.learnScales ? { learnScales: true, scaleLr: qatSettings!.scaleLr } : {}),
      });
      result = trained;
      written = trained.exported;
      bitsPerWeight = trained.compression.totals.bitsPerWeight;
    } else {
      result = await distill(student, teacher, data.train, options);
      written = withWeights(student, result.weights);
    }
  } finally {
    await teacherSession.release();
  }
  writeFilesAtomically([{ path: output, chunks: [written] }]);
  const after = await heldOutPerplexity(written, data.heldOut, settings.seq, student);

  const first = result.history[0];
  const last = result.history[result.history.length - 1];
  if (args.flags.has('json')) {
    out(
      JSON.stringify({
        ...settings,
        ...(qat
          ? {
              qat: {
                method: qat.method,
                options: qat.options,
                ...(qat.method !== 'kmeans'
                  ? { learnScales: qatSettings!.learnScales, scaleLr: qatSettings!.scaleLr }
                  : {}),
                bitsPerWeight,
              },
            }
          : {}),
        trainable: result.trainable.length,
        perplexityBefore: before.perplexity,
        perplexityAfter: after.perplexity,
        heldOut: { from: data.heldOutFrom, tokens: after.tokens, ctx: after.ctx, stride: after.stride },
        loss: {
          first: first.loss,
          last: last.loss,
          klFirst: first.kl,
          klLast: last.kl,
          ceFirst: first.ce,
          ceLast: last.ce,
        },
        history: result.history.map((h) => ({ step: h.step, loss: h.loss, kl: h.kl, ce: h.ce, lr: h.lr })),
        tokensPerSecond: result.tokensPerSecond,
        seconds: result.seconds,
        output,
      }) + '\n',
    );
    return 0;
  }
  const what = qat
    ? `${qat.method} ${Object.entries(qat.options)
        .map(([k, v]) => `${k}=${v}`)
        .join(
          ' ',
        )}${qatSettings!.learnScales ? ', learned scales' : ''}, ${bitsPerWeight!.toFixed(2)} bits/weight`
    : '';
  out(
    (qat
      ? `quantization-aware training (${what}): perplexity before is the same quantization untrained\n`
      : '') +
      `trained ${result.trainable.length} weights for ${settings.steps} steps of ${settings.batch}×${settings.seq} tokens ` +
      `(${Math.round(result.tokensPerSecond)} tokens/s); loss ${first.loss.toFixed(4)} -> ${last.loss.toFixed(4)}\n` +
      `held-out perplexity ${before.perplexity.toFixed(4)} -> ${after.perplexity.toFixed(4)} ` +
      `(${after.tokens} tokens of ${data.heldOutFrom}; ctx ${after.ctx}, stride ${after.stride})\n` +
      `written to ${output}\n`,
  );
  return 0;
}
