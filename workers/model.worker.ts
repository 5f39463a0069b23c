/** The model worker: owns the parsed model; the page gets summaries and histograms, never the weights. */
import * as Comlink from 'comlink';
import { parseModel, findInitializer, readTensorFloat32, type OnnxModel } from '../src/core/onnx/model.ts';
import { summarizeModel, type ModelSummary } from '../src/core/summary.ts';
import { histogram, type Histogram } from '../src/core/stats.ts';
import { pickModelFiles, type DroppedFile } from '../src/core/files.ts';
import { serializeError, type SerializedError } from '../src/core/errors.ts';
import { blobSource } from './blob-source.ts';

export interface Progress {
  phase: 'reading' | 'parsing' | 'statistics';
  done: number;
  total: number;
}

export type Result<T> = { ok: true; value: T } | { ok: false; error: SerializedError };

let current: OnnxModel | undefined;

function wrap<T>(fn: () => T): Result<T> {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    return { ok: false, error: serializeError(e) };
  }
}

const api = {
  open(files: { path: string; file: File }[], onProgress?: (p: Progress) => void): Result<ModelSummary> {
    return wrap(() => {
      current = undefined;
      const dropped: DroppedFile<File>[] = files.map((f) => ({
        path: f.path,
        size: f.file.size,
        file: f.file,
      }));
      const picked = pickModelFiles(dropped);
      const name = picked.main.path.split('/').pop() ?? picked.main.path;
      const main = blobSource(name, picked.main.file, (done, total) =>
        onProgress?.({ phase: 'reading', done, total }),
      );
      const external = picked.external.map((f) => blobSource(f.path.split('/').pop() ?? f.path, f.file));
      onProgress?.({ phase: 'parsing', done: 0, total: 1 });
      const model = parseModel(main, external);
      const summary = summarizeModel(model, (done, total) => {
        if (done % 8 === 0 || done === total) onProgress?.({ phase: 'statistics', done, total });
      });
      current = model;
      return summary;
    });
  },

  histogram(name: string, bins: number): Result<Histogram> {
    return wrap(() => {
      if (!current) throw new Error('No model is open.');
      return histogram(readTensorFloat32(current, findInitializer(current, name)), bins);
    });
  },
};

export type ModelWorkerApi = typeof api;
Comlink.expose(api);
