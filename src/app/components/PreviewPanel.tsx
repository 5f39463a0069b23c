/** What the recipe does to the weights: totals, a per-layer chart, and the selected tensor before/after. */
import { memo, useCallback, useDeferredValue, useMemo } from 'react';
import type { Overlay } from '../client.ts';
import type { TensorReport } from '../../core/compress/pipeline.ts';
import { HistogramChart, LinesChart, type LineSeries } from './svg-chart.tsx';
import { useStudio } from '../store.ts';
import { formatBytes, formatCount, formatNumber, niceTicks, formatTick } from './format.ts';
import { ProgressBar } from './ProgressBar.tsx';

const METRICS = {
  snrDb: { label: 'SNR (dB)', f: (x: number) => (Number.isFinite(x) ? x : 0) },
  bitsPerWeight: { label: 'bits / weight', f: (x: number) => x },
  sparsity: { label: 'sparsity (%)', f: (x: number) => x * 100 },
} as const;

const binRange = (a: number, b: number) => `${formatNumber(a)} … ${formatNumber(b)}`;

// Charts are memoised on their data: a store update that leaves the data alone must not redraw them.
const OverlayChart = memo(function OverlayChart({ overlay }: { overlay: Overlay }) {
  const series = useMemo(
    () => [
      { name: 'original', values: overlay.original, color: 'var(--accent)' },
      { name: 'compressed', values: overlay.compressed, color: 'var(--accent-2)' },
    ],
    [overlay],
  );
  // the axis spans the bins' edges, labelled at round values
  const lo = overlay.edges[0];
  const hi = overlay.edges[overlay.edges.length - 1];
  const ticks = useMemo(() => niceTicks(lo, hi), [lo, hi]);
  return (
    <HistogramChart
      testId="overlay-chart"
      edges={overlay.edges}
      series={series}
      height={220}
      xTicks={ticks}
      formatX={formatTick}
      formatY={formatCount}
      formatBin={binRange}
    />
  );
});

const roundValue = (v: number) => (Number.isFinite(v) ? String(Number(v.toPrecision(4))) : '—');

const LayerChart = memo(function LayerChart({
  reports,
  onSelect,
}: {
  reports: TensorReport[];
  onSelect: (name: string) => void;
}) {
  const { labels, series } = useMemo(() => {
    const series: LineSeries[] = [
      {
        name: METRICS.snrDb.label,
        values: reports.map((r) => METRICS.snrDb.f(r.snrDb)),
        color: 'var(--accent)',
        axis: 'left',
      },
      {
        name: METRICS.bitsPerWeight.label,
        values: reports.map((r) => r.bitsPerWeight),
        color: 'var(--accent-2)',
        axis: 'right',
      },
      {
        name: METRICS.sparsity.label,
        values: reports.map((r) => METRICS.sparsity.f(r.sparsity)),
        color: '#7a9a5a',
        axis: 'left',
      },
    ];
    return { labels: reports.map((r) => r.name), series };
  }, [reports]);
  return (
    <LinesChart
      testId="layer-chart"
      labels={labels}
      series={series}
      height={250}
      formatY={roundValue}
      onSelect={onSelect}
    />
  );
});

export function PreviewPanel() {
  const preview = useStudio((s) => s.preview);
  const previewing = useStudio((s) => s.previewing);
  const error = useStudio((s) => s.previewError);
  const overlay = useStudio((s) => s.overlay);
  // charts render as interruptible transitions: React slices their work so input never waits on them
  const chartOverlay = useDeferredValue(overlay);
  const chartReports = useDeferredValue(preview?.reports);
  const showOverlay = useStudio((s) => s.showOverlay);
  const onSelect = useCallback((name: string) => void showOverlay(name), [showOverlay]);
  const progress = useStudio((s) => s.previewProgress);
  const t = preview?.totals;
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
      {previewing && progress && progress.total > 8 && (
        <ProgressBar
          label={`Compressing ${progress.done} / ${progress.total} tensors`}
          value={progress.done / progress.total}
        />
      )}
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
              {report.method} · {formatBytes(report.originalBytes)} → {formatBytes(report.storedBytes)} ·{' '}
              {report.bitsPerWeight.toFixed(2)} bits · sparsity {(report.sparsity * 100).toFixed(1)} % · SNR{' '}
              {Number.isFinite(report.snrDb) ? report.snrDb.toFixed(1) : '∞'} dB · MSE{' '}
              {formatNumber(report.mse)} · max |err| {formatNumber(report.maxAbsError)}
            </p>
          )}
          {chartOverlay && <OverlayChart overlay={chartOverlay} />}
        </div>
        <div>
          <h3 className="small">By layer (click to inspect)</h3>
          {chartReports && <LayerChart reports={chartReports} onSelect={onSelect} />}
        </div>
      </div>
    </section>
  );
}
