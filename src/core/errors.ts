/** Every failure a person can cause with their input carries a code the UI and CLI can act on. */
export type ModelErrorCode =
  | 'empty-file'
  | 'not-onnx'
  | 'truncated'
  | 'corrupt'
  | 'too-large'
  | 'missing-external-data'
  /** An external-data location that leaves the model's folder or is not a regular file. */
  | 'unsafe-path'
  | 'unsupported-dtype'
  | 'invalid-argument'
  | 'unsupported'
  | 'invalid-recipe'
  /** A data-aware method (GPTQ, SparseGPT, Wanda) was asked to run without calibration statistics. */
  | 'needs-calibration'
  /** A distilling recipe was asked to preview or export trained weights that do not exist (train first). */
  | 'needs-training'
  | 'cancelled';

export class ModelError extends Error {
  readonly code: ModelErrorCode;
  constructor(code: ModelErrorCode, message: string) {
    super(message);
    this.name = 'ModelError';
    this.code = code;
  }
}

export function isModelError(e: unknown): e is ModelError {
  return e instanceof Error && e.name === 'ModelError' && 'code' in e;
}

/** Structured-clone-safe form, since Error subclasses lose their fields across postMessage. */
export interface SerializedError {
  name: string;
  code?: ModelErrorCode;
  message: string;
}

export function serializeError(e: unknown): SerializedError {
  if (isModelError(e)) return { name: e.name, code: e.code, message: e.message };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: 'Error', message: String(e) };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}
