/** The page's one door to the workers (comlink). Components never talk to a Worker directly. */
import * as Comlink from 'comlink';
import type { ModelWorkerApi, Progress, Result } from '../../workers/model.worker.ts';
import type { SerializedError } from '../core/errors.ts';
import type { EvalRequest, EvalResult, EvalWorkerApi } from '../../workers/eval.worker.ts';
import type { PerplexityProgress } from '../core/eval/perplexity.ts';

let modelWorker: Comlink.Remote<ModelWorkerApi> | undefined;

function model(): Comlink.Remote<ModelWorkerApi> {
  modelWorker ??= Comlink.wrap<ModelWorkerApi>(
    new Worker(new URL('../../workers/model.worker.ts', import.meta.url), { type: 'module', name: 'model' }),
  );
  return modelWorker;
}

export class WorkerError extends Error {
  readonly code?: string;
  constructor(e: SerializedError) {
    super(e.message);
    this.name = e.name;
    this.code = e.code;
  }
}

function unwrap<T>(r: Result<T>): T {
  if (!r.ok) throw new WorkerError(r.error);
  return r.value;
}

export type { Progress };

export async function openModel(files: { path: string; file: File }[], onProgress: (p: Progress) => void) {
  return unwrap(await model().open(files, Comlink.proxy(onProgress)));
}

export type { StatisticsRow } from '../../workers/model.worker.ts';
import type { StatisticsRow } from '../../workers/model.worker.ts';

/** Every weight's statistics, computed in the worker's pool after opening: `priority` first, rows in batches. */
export async function tensorStatistics(priority: string[], onRows: (rows: StatisticsRow[]) => void) {
  return unwrap(await model().statistics(priority, Comlink.proxy(onRows)));
}

export async function tensorHistogram(name: string, bins: number) {
  return unwrap(await model().histogram(name, bins));
}

let evalWorker: Comlink.Remote<EvalWorkerApi> | undefined;

function evaluator(): Comlink.Remote<EvalWorkerApi> {
  evalWorker ??= Comlink.wrap<EvalWorkerApi>(
    new Worker(new URL('../../workers/eval.worker.ts', import.meta.url), { type: 'module', name: 'eval' }),
  );
  return evalWorker;
}

export type { EvalRequest, EvalResult, PerplexityProgress };

export async function evaluatePerplexity(req: EvalRequest, onProgress: (p: PerplexityProgress) => void) {
  return unwrap(await evaluator().evaluate(req, Comlink.proxy(onProgress)));
}

export async function cancelEvaluation() {
  await evaluator().cancel();
}

export type { Overlay, PreviewResult } from '../../workers/model.worker.ts';
import type { Overlay } from '../../workers/model.worker.ts';
import type { RecipeStep } from '../core/compress/recipe.ts';
import type { StructureSettings } from '../core/compress/structure.ts';
import type { ImportanceKind } from '../core/structure/importance.ts';

export async function weightCandidates() {
  return unwrap(await model().candidates());
}

/** Newer calls supersede older ones inside the worker (the older answers 'cancelled'). */
export async function previewRecipe(
  steps: RecipeStep[],
  structure: StructureSettings | null,
  selected: string | undefined,
  bins: number,
  onSelected: (o: Overlay) => void,
  onProgress?: (done: number, total: number) => void,
  trainedKey?: string,
) {
  return unwrap(
    await model().preview(
      steps,
      structure,
      selected,
      bins,
      Comlink.proxy(onSelected),
      onProgress ? Comlink.proxy(onProgress) : undefined,
      trainedKey,
    ),
  );
}

export async function previewOverlay(name: string, bins: number) {
  return unwrap(await model().overlay(name, bins));
}

/** `trainedKey`: the distillation run whose weights the steps after it compress (see train-slice.ts). */
export async function exportCompressedModel(
  steps: RecipeStep[],
  structure: StructureSettings | null,
  trainedKey?: string,
) {
  return unwrap(await model().exportModel(steps, structure, trainedKey));
}

/**
 * The compressed model streamed by the model worker into `dir` (a picked folder, or the origin-private
 * file system) as `names.model` + `names.data`: external data, one tensor at a time.
 */
export async function exportCompressedFiles(
  steps: RecipeStep[],
  structure: StructureSettings | null,
  trainedKey: string | undefined,
  dir: FileSystemDirectoryHandle,
  names: { model: string; data: string },
) {
  return unwrap(await model().exportFiles(steps, structure, trainedKey, dir, names));
}

/** Stops the model worker's streamed export at its next tensor (its workers lent for it end). */
export function cancelExportFiles(): void {
  void model().cancelExport();
}

export type { StructureInfo } from '../../workers/model.worker.ts';
/** The open model's blocks, heads and neurons with their importance (or the typed error why it has none). */
export async function modelStructure() {
  return unwrap(await model().structure());
}

/** The heat map's scores by `kind`; Taylor importance is measured in the worker, with progress per sequence. */
export async function structureImportance(
  kind: ImportanceKind,
  onProgress: (done: number, total: number) => void,
) {
  return unwrap(await model().structureImportance(kind, Comlink.proxy(onProgress)));
}

export async function cancelStructureImportance() {
  await model().cancelImportance();
}

export type { CalibrationRequest, CalibrationDone, OverlapSide } from '../../workers/model.worker.ts';
import type { CalibrationRequest, OverlapSide } from '../../workers/model.worker.ts';
import type { CalibrationProgress } from '../core/compress/calibration.ts';
export type { CalibrationProgress };

/** Captures activation statistics in the model worker; a newer call (or cancelCalibration) stops an older one. */
export async function calibrateModel(req: CalibrationRequest, onProgress: (p: CalibrationProgress) => void) {
  return unwrap(await model().calibrate(req, Comlink.proxy(onProgress)));
}

export async function cancelCalibration() {
  await model().cancelCalibration();
}

export async function calibrationOverlap(
  calib: OverlapSide,
  evaluation: OverlapSide,
  tokenizerJson?: unknown,
) {
  return unwrap(await model().calibrationOverlap(calib, evaluation, tokenizerJson));
}

export async function calibrationFootprint() {
  return unwrap(await model().calibrationFootprint());
}

export type { TrainRequest, TrainProgress, TrainDone, HeldOutPoint } from '../../workers/train.worker.ts';
import type { TrainRequest, TrainProgress, TrainWorkerApi } from '../../workers/train.worker.ts';

let trainWorker: Comlink.Remote<TrainWorkerApi> | undefined;

function trainer(): Comlink.Remote<TrainWorkerApi> {
  trainWorker ??= Comlink.wrap<TrainWorkerApi>(
    new Worker(new URL('../../workers/train.worker.ts', import.meta.url), { type: 'module', name: 'train' }),
  );
  return trainWorker;
}

/** The student of a distilling recipe (structure + steps before the first storage format) as ONNX bytes, from the model worker. */
export async function distillStudent(steps: RecipeStep[], structure: StructureSettings | null, key: string) {
  return unwrap(await model().distillStudent(steps, structure, key));
}

/** The training worker's WebGPU products against its wasm kernels on small shapes (for the Chromium test). */
export async function checkTrainKernels() {
  return unwrap(await trainer().checkKernels());
}

/** Distils in the training worker; a newer call (or cancelTraining) stops an older one between steps. */
export async function trainStudentInWorker(req: TrainRequest, onProgress: (p: TrainProgress) => void) {
  return unwrap(
    await trainer().train(
      Comlink.transfer(req, [req.student.buffer as ArrayBuffer]),
      Comlink.proxy(onProgress),
    ),
  );
}

export async function cancelTraining() {
  await trainer().cancel();
}

/** Hands the trained weights to the model worker, which previews and exports the rest of the recipe on them. */
export async function storeTrainedWeights(
  key: string,
  studentKey: string,
  weights: Map<string, Float32Array>,
) {
  unwrap(
    await model().setTrained(
      Comlink.transfer(
        { key, studentKey, weights },
        [...weights.values()].map((w) => w.buffer as ArrayBuffer),
      ),
    ),
  );
}

export type { GenerateRequest, GenerateUpdate } from '../../workers/generate.worker.ts';
import type { GenerateRequest, GenerateUpdate, GenerateWorkerApi } from '../../workers/generate.worker.ts';

let generateWorker: Comlink.Remote<GenerateWorkerApi> | undefined;

function generator(): Comlink.Remote<GenerateWorkerApi> {
  generateWorker ??= Comlink.wrap<GenerateWorkerApi>(
    new Worker(new URL('../../workers/generate.worker.ts', import.meta.url), {
      type: 'module',
      name: 'generate',
    }),
  );
  return generateWorker;
}

/** Generates from the request's models side by side in the Try-it worker; a newer call (or stopGeneration) ends an older one. */
export async function generateText(req: GenerateRequest, onUpdate: (u: GenerateUpdate) => void) {
  unwrap(await generator().generate(req, Comlink.proxy(onUpdate)));
}

export async function stopGeneration() {
  await generator().stop();
}

export type {
  AgreementDone,
  AgreementRequest,
  SensitivityDone,
  SensitivityProgress,
  SensitivityRequest,
} from '../../workers/precision.worker.ts';
import type {
  AgreementRequest,
  PrecisionWorkerApi,
  SensitivityProgress,
  SensitivityRequest,
} from '../../workers/precision.worker.ts';

let precisionWorker: Comlink.Remote<PrecisionWorkerApi> | undefined;

function precision(): Comlink.Remote<PrecisionWorkerApi> {
  precisionWorker ??= Comlink.wrap<PrecisionWorkerApi>(
    new Worker(new URL('../../workers/precision.worker.ts', import.meta.url), {
      type: 'module',
      name: 'precision',
    }),
  );
  return precisionWorker;
}

/** Per-tensor sensitivity in the precision worker; a newer call (or cancelPrecision) stops an older one. */
export async function measureTensorSensitivity(
  req: SensitivityRequest,
  onProgress: (p: SensitivityProgress) => void,
) {
  return unwrap(await precision().sensitivity(req, Comlink.proxy(onProgress)));
}

/** The model on wasm and on WebGPU on the same tokens (or why there is no WebGPU to compare with). */
export async function compareBackendsInWorker(
  req: AgreementRequest,
  onProgress: (done: number, total: number) => void,
) {
  return unwrap(await precision().agreement(req, Comlink.proxy(onProgress)));
}

export async function cancelPrecision() {
  await precision().cancel();
}
