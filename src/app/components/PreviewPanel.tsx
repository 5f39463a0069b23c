/** What the recipe does to the weights: totals, a per-layer chart, and the selected tensor before/after. */
import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from 'recharts';
import { useStudio } from '../store.ts';
import { formatBytes, formatNumber } from './format.ts';

const METRICS = {
  snrDb: { label: 'SNR (dB)', f: (x: number) => (Number.isFinite(x) ? x : 0) },
  bitsPerWeight: { label: 'bits / weight', f: (x: number) => x },
  sparsity: { label: 'sparsity (%)', f: (x: number) => x * 100 },
} as const;

export function PreviewPanel() {
  const preview = useStudio((s) => s.preview);
  const previewing = useStudio((s) => s.previewing);
  const error = useStudio((s) => s.previewError);
  const overlay = useStudio((s) => s.overlay);
  const showOverlay = useStudio((s) => s.showOverlay);
  const t = preview?.totals;
  const layers = preview?.reports.map((r) => ({
    name: r.name,
    snrDb: METRICS.snrDb.f(r.snrDb),
    bitsPerWeight: r.bitsPerWeight,
    sparsity: METRICS.sparsity.f(r.sparsity),
  }));
  const hist = overlay?.original.map((c, i) => ({
    x: (overlay.edges[i] + overlay.edges[i + 1]) / 2,
    original: c,
    compressed: overlay.compressed[i],
  }));
  const report = preview?.reports.find((r) => r.name === overlay?.name);
  return (
    <section className="card preview" data-testid="preview" aria-busy={previewing}>
      <div className="table-tools">
        <h2>Preview</h2>
        <span className="muted" data-testid="preview-status">
          {previewing
            ? 'updating…'
            : preview
              ? `${preview.computed} tensors recomputed in ${preview.millis.toFixed(0)} ms`
              : ''}
        </span>
      </div>
      {error && (
        <div className="error" role="alert">
          {error}
        </div>
      )}
      {t && (
        <dl className="totals" data-testid="preview-totals">
          <dt>Size</dt>
          <dd data-testid="total-size">
            {formatBytes(t.inputBytes)} → {formatBytes(t.estimatedOutputBytes)} (
            {(t.inputBytes / t.estimatedOutputBytes).toFixed(2)}× smaller)
          </dd>
          <dt>Bits / weight</dt>
          <dd data-testid="total-bits">{t.bitsPerWeight.toFixed(2)}</dd>
          <dt>Sparsity</dt>
          <dd data-testid="total-sparsity">{(t.sparsity * 100).toFixed(1)} %</dd>
          <dt>Tensors</dt>
          <dd>
            {t.tensors} ({(t.params / 1e6).toFixed(2)} M weights)
          </dd>
        </dl>
      )}
      <div className="columns">
        <div>
          <h3 className="small">Selected tensor</h3>
          <p className="muted name" data-testid="overlay-tensor">
            {overlay?.name ?? '—'}
          </p>
          {report && (
            <p className="small" data-testid="overlay-stats">
              {report.method} · {report.bitsPerWeight.toFixed(2)} bits · sparsity{' '}
              {(report.sparsity * 100).toFixed(1)} % · SNR{' '}
              {Number.isFinite(report.snrDb) ? report.snrDb.toFixed(1) : '∞'} dB · MSE{' '}
              {formatNumber(report.mse)} · max |err| {formatNumber(report.maxAbsError)}
            </p>
          )}
          {hist && (
            <div className="chart" data-testid="overlay-chart">
              <ResponsiveContainer width="100%" height={220}>
                <BarChart data={hist} barCategoryGap={0} barGap={0}>
                  <CartesianGrid strokeDasharray="3 3" opacity={0.3} />
                  <XAxis dataKey="x" tickFormatter={(v: number) => formatNumber(v)} minTickGap={24} />
                  <YAxis width={48} />
                  <Tooltip labelFormatter={(v) => `≈ ${formatNumber(Number(v))}`} />
                  <Legend />
                  <Bar dataKey="original" fill="var(--accent)" opacity={0.55} isAnimationActive={false} />
                  <Bar dataKey="compressed" fill="var(--accent-2)" opacity={0.8} isAnimationActive={false} />
                </BarChart>
              </ResponsiveContainer>
            </div>
          )}
        </div>
        <div>
          <h3 className="small">By layer (click a bar)</h3>
          {layers && (
            <div className="chart" data-testid="layer-chart">
              <ResponsiveContainer width="100%" height={250}>
                <BarChart
                  data={layers}
                  onClick={(e) => e?.activeLabel && void showOverlay(String(e.activeLabel))}
                >
                  <CartesianGrid strokeDasharray="3 3" opacity={0.3} />
                  <XAxis dataKey="name" hide />
                  <YAxis yAxisId="l" width={40} />
                  <YAxis yAxisId="r" orientation="right" width={40} />
                  <Tooltip />
                  <Legend />
                  <Bar
                    yAxisId="l"
                    dataKey="snrDb"
                    name={METRICS.snrDb.label}
                    fill="var(--accent)"
                    isAnimationActive={false}
                  />
                  <Bar
                    yAxisId="r"
                    dataKey="bitsPerWeight"
                    name={METRICS.bitsPerWeight.label}
                    fill="var(--accent-2)"
                    isAnimationActive={false}
                  />
                  <Bar
                    yAxisId="l"
                    dataKey="sparsity"
                    name={METRICS.sparsity.label}
                    fill="#7a9a5a"
                    isAnimationActive={false}
                  />
                </BarChart>
              </ResponsiveContainer>
            </div>
          )}
        </div>
      </div>
    </section>
  );
}
