import { Bar, BarChart, CartesianGrid, ResponsiveContainer, Tooltip, XAxis, YAxis } from 'recharts';
import { useStudio } from '../store.ts';
import { formatCount, formatNumber, niceTicks, formatTick } from './format.ts';

export function HistogramPanel() {
  const selected = useStudio((s) => s.selected);
  const histogram = useStudio((s) => s.histogram);
  const bins = useStudio((s) => s.histogramBins);
  const log = useStudio((s) => s.histogramLog);
  const setBins = useStudio((s) => s.setBins);
  const setLog = useStudio((s) => s.setLog);
  const data = histogram?.counts.map((c, i) => ({
    x: (histogram.edges[i] + histogram.edges[i + 1]) / 2,
    // log1p keeps empty bins at zero height on the log view
    count: log ? Math.log10(1 + c) : c,
    raw: c,
  }));
  // the axis spans the bins' edges, labelled at round values
  const domain: [number, number] | undefined = histogram
    ? [histogram.edges[0], histogram.edges[histogram.edges.length - 1]]
    : undefined;
  const ticks = domain ? niceTicks(domain[0], domain[1]) : undefined;
  return (
    <section className="card histogram" data-testid="histogram">
      <div className="table-tools">
        <h2>Histogram</h2>
        <label>
          Bins{' '}
          <select
            value={bins}
            onChange={(e) => void setBins(Number(e.target.value))}
            aria-label="Histogram bins"
          >
            {[16, 32, 64, 128, 256].map((b) => (
              <option key={b} value={b}>
                {b}
              </option>
            ))}
          </select>
        </label>
        <label>
          <input type="checkbox" checked={log} onChange={(e) => setLog(e.target.checked)} /> log counts
        </label>
      </div>
      <p className="muted name" data-testid="histogram-tensor">
        {selected ?? 'Select a tensor'}
      </p>
      {data && (
        <div className="chart" data-testid="histogram-chart">
          <ResponsiveContainer width="100%" height={260}>
            <BarChart data={data} barCategoryGap={0}>
              <CartesianGrid strokeDasharray="3 3" opacity={0.3} />
              <XAxis
                dataKey="x"
                type="number"
                domain={domain}
                ticks={ticks}
                allowDataOverflow
                tickFormatter={formatTick}
              />
              <YAxis tickFormatter={(v: number) => (log ? `1e${v.toFixed(0)}` : formatCount(v))} width={60} />
              <Tooltip
                formatter={(_v, _n, item) => [String((item.payload as { raw: number }).raw), 'count']}
                labelFormatter={(v) => `≈ ${formatNumber(Number(v))}`}
              />
              <Bar dataKey="count" fill="var(--accent)" isAnimationActive={false} />
            </BarChart>
          </ResponsiveContainer>
        </div>
      )}
    </section>
  );
}
