import type { ModelSummary } from '../../core/summary.ts';
import { formatBytes, formatCount } from './format.ts';

export function SummaryCard({ summary }: { summary: ModelSummary }) {
  const ops = Object.entries(summary.opTypes).sort((a, b) => b[1] - a[1]);
  return (
    <section className="card summary" data-testid="summary">
      <h2>{summary.name}</h2>
      <dl>
        <dt>File size</dt>
        <dd>{formatBytes(summary.totalSize)}</dd>
        <dt>Parameters</dt>
        <dd data-testid="param-count">{formatCount(summary.params)}</dd>
        <dt>Weights</dt>
        <dd>{formatBytes(summary.bytes)}</dd>
        <dt>Dtypes</dt>
        <dd>
          {Object.entries(summary.dtypes)
            .map(([k, v]) => `${k} ${((100 * v) / Math.max(summary.params, 1)).toFixed(1)}%`)
            .join(', ')}
        </dd>
        <dt>Inputs</dt>
        <dd>{summary.inputs.map((i) => `${i.name} [${i.shape.join(', ')}]`).join(', ')}</dd>
        <dt>Outputs</dt>
        <dd>{summary.outputs.map((i) => `${i.name} [${i.shape.join(', ')}]`).join(', ')}</dd>
        <dt>Opsets</dt>
        <dd>{summary.opsets.map((o) => `${o.domain} ${o.version}`).join(', ')}</dd>
      </dl>
      <div className="ops" aria-label="Operator types">
        {ops.map(([op, n]) => (
          <span key={op} className="chip">
            {op} <b>{n}</b>
          </span>
        ))}
      </div>
    </section>
  );
}
