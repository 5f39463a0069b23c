import { formatBytes } from '../core/errors.ts';
import { parseModel } from '../core/onnx/model.ts';
import { summarizeModel } from '../core/summary.ts';
import type { ParsedArgs } from './args.ts';
import { modelFileFlag, modelSources, resolveModelPath } from './files.ts';

export async function inspectCommand(args: ParsedArgs, out: (s: string) => void): Promise<number> {
  const { main, external } = modelSources(resolveModelPath(args.positional[0], modelFileFlag(args)).path);
  const summary = summarizeModel(parseModel(main, external));
  if (args.flags.has('json')) {
    out(
      JSON.stringify({
        params: summary.params,
        bytes: summary.bytes,
        opTypes: summary.opTypes,
        tensors: summary.tensors.map((t) => ({
          name: t.name,
          dtype: t.dtype,
          shape: t.shape,
          params: t.params,
          bytes: t.bytes,
          min: t.min ?? null,
          max: t.max ?? null,
          mean: t.mean ?? null,
          std: t.std ?? null,
          zeros: t.zeros ?? null,
          // where a weight outside the main graph's initializers lives
          ...(t.graph ? { graph: t.graph } : {}),
          ...(t.source ? { source: t.source } : {}),
          ...(t.error ? { error: t.error } : {}),
        })),
      }) + '\n',
    );
    return 0;
  }
  out(
    `${summary.name}: ${summary.params.toLocaleString('en-US')} parameters, ${formatBytes(summary.bytes)} of weights\n`,
  );
  out(
    `dtypes: ${Object.entries(summary.dtypes)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}\n`,
  );
  out(`inputs: ${summary.inputs.map((i) => `${i.name} ${i.dtype}[${i.shape.join(', ')}]`).join('; ')}\n`);
  out(`outputs: ${summary.outputs.map((i) => `${i.name} ${i.dtype}[${i.shape.join(', ')}]`).join('; ')}\n`);
  out(
    `ops: ${Object.entries(summary.opTypes)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k}×${v}`)
      .join(' ')}\n\n`,
  );
  const fmt = (x: number | undefined) => (x === undefined ? '—' : x.toPrecision(4));
  for (const t of summary.tensors) {
    out(
      [
        t.name,
        t.dtype,
        `[${t.shape.join('×')}]`,
        t.params,
        fmt(t.min),
        fmt(t.max),
        fmt(t.mean),
        fmt(t.std),
        t.zeros === undefined ? '—' : `${(t.zeros * 100).toFixed(1)}%`,
        t.consumers.join('/'),
        t.error ?? '',
      ]
        .join('\t')
        .trimEnd() + '\n',
    );
  }
  return 0;
}
