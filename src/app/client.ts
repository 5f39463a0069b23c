/** The page's one door to the workers (comlink). Components never talk to a Worker directly. */
import * as Comlink from 'comlink';
import type { ModelWorkerApi, Progress, Result } from '../../workers/model.worker.ts';
import type { SerializedError } from '../core/errors.ts';

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

export async function tensorHistogram(name: string, bins: number) {
  return unwrap(await model().histogram(name, bins));
}
