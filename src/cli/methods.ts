import { METHODS } from '../methods/registry.ts';
import type { ParsedArgs } from './args.ts';

/** `methods`: what the registry holds, so recipes can be written without reading the source. */
export async function methodsCommand(args: ParsedArgs, out: (s: string) => void): Promise<number> {
  if (args.flags.has('json')) {
    out(
      JSON.stringify(
        METHODS.map((m) => ({
          id: m.id,
          label: m.label,
          role: m.role,
          summary: m.summary,
          options: m.options,
          // the statistics a calibrated method reads; [] for methods that look only at the weights
          needs: m.needs ?? [],
        })),
      ) + '\n',
    );
    return 0;
  }
  for (const m of METHODS) {
    out(`${m.id} — ${m.summary}\n`);
    for (const o of m.options) {
      const range =
        o.type === 'number'
          ? o.choices
            ? `one of ${o.choices.join(', ')}`
            : `${o.min}…${o.max}`
          : o.type === 'select'
            ? o.choices.map((c) => c.value).join(' | ')
            : 'true | false';
      out(`    ${o.key.padEnd(12)} ${range.padEnd(40)} default ${String(o.default)}\n`);
    }
  }
  return 0;
}
