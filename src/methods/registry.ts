/** Every compression method the studio knows. Adding one: a folder under src/methods and a line here. */
import type { CompressionMethod, OptionSpec, OptionValues } from './types.ts';
import { ModelError } from '../core/errors.ts';
import { fp16Method } from './fp16/index.ts';
import { int8Method } from './int8/index.ts';
import { int4Method } from './int4/index.ts';
import { pruneMethod } from './prune/index.ts';
import { kmeansMethod } from './kmeans/index.ts';
import { gptqMethod } from './gptq/index.ts';
import { sparsegptMethod } from './sparsegpt/index.ts';
import { wandaMethod } from './wanda/index.ts';
import { llmInt8Method } from './llm-int8/index.ts';
import { w8a8Method } from './w8a8/index.ts';
import { awqMethod } from './awq/index.ts';

export const METHODS: readonly CompressionMethod[] = [
  pruneMethod as unknown as CompressionMethod,
  int8Method as unknown as CompressionMethod,
  int4Method as unknown as CompressionMethod,
  kmeansMethod as unknown as CompressionMethod,
  fp16Method as unknown as CompressionMethod,
  // data-aware: they declare `needs`, and the orchestrator gives them calibration statistics
  gptqMethod as unknown as CompressionMethod,
  sparsegptMethod as unknown as CompressionMethod,
  wandaMethod as unknown as CompressionMethod,
  llmInt8Method as unknown as CompressionMethod,
  w8a8Method as unknown as CompressionMethod,
  awqMethod as unknown as CompressionMethod,
];

export function getMethod(id: string): CompressionMethod {
  const m = METHODS.find((x) => x.id === id);
  if (!m)
    throw new ModelError(
      'invalid-argument',
      `Unknown compression method '${id}' (known: ${METHODS.map((x) => x.id).join(', ')}).`,
    );
  return m;
}

function checkOption(methodId: string, spec: OptionSpec, value: unknown): number | string | boolean {
  const where = `${methodId}.${spec.key}`;
  if (spec.type === 'number') {
    if (typeof value !== 'number' || !Number.isFinite(value))
      throw new ModelError('invalid-argument', `${where} must be a number, got ${JSON.stringify(value)}.`);
    if (value < spec.min || value > spec.max)
      throw new ModelError(
        'invalid-argument',
        `${where} must be between ${spec.min} and ${spec.max}, got ${value}.`,
      );
    if (spec.choices && !spec.choices.includes(value))
      throw new ModelError(
        'invalid-argument',
        `${where} must be one of ${spec.choices.join(', ')}, got ${value}.`,
      );
    if (spec.step >= 1 && !Number.isInteger(value))
      throw new ModelError('invalid-argument', `${where} must be a whole number, got ${value}.`);
    return value;
  }
  if (spec.type === 'boolean') {
    if (typeof value !== 'boolean')
      throw new ModelError(
        'invalid-argument',
        `${where} must be true or false, got ${JSON.stringify(value)}.`,
      );
    return value;
  }
  if (typeof value !== 'string' || !spec.choices.some((c) => c.value === value))
    throw new ModelError(
      'invalid-argument',
      `${where} must be one of ${spec.choices.map((c) => c.value).join(', ')}, got ${JSON.stringify(value)}.`,
    );
  return value;
}

/** The method's defaults overlaid with `given`, every value checked against its schema. */
export function resolveOptions(method: CompressionMethod, given: Record<string, unknown> = {}): OptionValues {
  const known = new Set(method.options.map((o) => o.key));
  for (const key of Object.keys(given))
    if (!known.has(key))
      throw new ModelError(
        'invalid-argument',
        `${method.id} has no option '${key}' (options: ${[...known].join(', ') || 'none'}).`,
      );
  const out: OptionValues = {};
  for (const spec of method.options)
    out[spec.key] = checkOption(method.id, spec, given[spec.key] ?? spec.default);
  return out;
}
