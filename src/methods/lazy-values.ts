/**
 * Kernel results whose dense `values` are decoded from their encoding only when something reads them.
 * An encoding method (int4, int8) returns its codes and the error statistics it measured while
 * encoding (`KernelResult.error`); the float32 decode of a whole tensor, which a report or an export
 * does not need, is then paid only for the tensors that are viewed or worked on further. Everything
 * that reads `values` sees the decoded array, as before: the laziness is invisible but for the time.
 */
import type { KernelResult } from './types.ts';

/**
 * `result` with `values` as an enumerable accessor: the first read calls `decode` and keeps its array
 * (an ordinary data property from then on); a write replaces it.
 */
export function withLazyValues<R extends object>(
  result: R,
  decode: () => Float32Array,
): R & { values: Float32Array } {
  const keep = (target: object, values: Float32Array) =>
    Object.defineProperty(target, 'values', {
      value: values,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  Object.defineProperty(result, 'values', {
    get(this: object) {
      const values = decode();
      keep(this, values);
      return values;
    },
    set(this: object, values: Float32Array) {
      keep(this, values);
    },
    enumerable: true,
    configurable: true,
  });
  return result as R & { values: Float32Array };
}

/** Whether `x.values` is still to be decoded (reading it would decode it now). */
export function valuesPending(x: object): boolean {
  const d = Object.getOwnPropertyDescriptor(x, 'values');
  return !!d && d.get !== undefined;
}

/**
 * A shallow copy of `result` without its pending `values` (the copy a worker posts back: a structured
 * clone reads every property, and would decode), or `result` itself when its values are decoded.
 */
export function withoutPendingValues<E>(
  result: KernelResult<E>,
): KernelResult<E> | Omit<KernelResult<E>, 'values'> {
  if (!valuesPending(result)) return result;
  const copy: Record<string, unknown> = {};
  for (const key of Object.keys(result))
    if (key !== 'values') copy[key] = (result as unknown as Record<string, unknown>)[key];
  return copy as Omit<KernelResult<E>, 'values'>;
}
