/**
 * Cancellation that reaches inside a running kernel. A kernel pool worker is handed a shared
 * Int32Array (SharedArrayBuffer) holding the pool's cancel generation; every task carries the
 * generation it was started in, and kernels call `checkCancelled()` in their outer loops (per channel,
 * per block row, per Lloyd iteration). When the pool cancels it bumps the generation with Atomics, and
 * the worker's running kernel throws a 'cancelled' ModelError at its next check — the worker stays
 * alive and takes the next task. Without a shared flag (a page that is not cross-origin isolated),
 * and in the model worker's own thread, the check costs one comparison and never fires.
 */
import { ModelError } from './errors.ts';

let flag: Int32Array | undefined;
let cell = 0;
let generation = 0;

/**
 * Installs the pool's shared generations (one cell per cancel scope) and the scope and generation
 * of the task now running on this thread.
 */
export function setCancelScope(shared: Int32Array | undefined, scope: number, taskGeneration: number): void {
  flag = shared;
  cell = scope;
  generation = taskGeneration;
}

/** Throws 'cancelled' when the task running on this thread was cancelled since it started. */
export function checkCancelled(): void {
  if (flag && Atomics.load(flag, cell) !== generation)
    throw new ModelError('cancelled', 'Kernel cancelled: a newer request superseded it.');
}
