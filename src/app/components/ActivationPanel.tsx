/**
 * What calibration saw, per captured activation (a MatMul/Gemm input, shared by the weights that read
 * it): its range, and how many input features are outliers (max |x| above a threshold, LLM.int8's 6 by
 * default) — the features LLM.int8 keeps in float and that make activation int8 hard.
 */
import { memo, useMemo, useState } from 'react';
import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from 'recharts';
import { useStudio } from '../store.ts';
import { countOutlierFeatures, type ActivationSummary } from '../../core/calibrate/summary.ts';
import { DEFAULT_OUTLIER_THRESHOLD } from '../../methods/llm-int8/index.ts';
import { formatNumber } from './format.ts';

/** A short label for an activation: its weights' common layer path, else the tensor name. */
function labelOf(a: ActivationSummary): string {
  const w = a.weights[0] ?? a.input;
  return a.weights.length > 1 ? `${w.replace(/\.[^.]*\.weight$|\.weight$/, '')} (${a.weights.length})` : w;
}

const RangeChart = memo(function RangeChart({
  data,
}: {
  data: { name: string; min: number; max: number }[];
}) {
  return (
    <div className="chart" data-testid="activation-range-chart">
      <ResponsiveContainer width="100%" height={200}>
        <BarChart data={data} stackOffset="sign">
          <CartesianGrid strokeDasharray="3 3" opacity={0.3} />
          <XAxis dataKey="name" hide />
          <YAxis width={50} tickFormatter={(v: number) => formatNumber(v)} />
          <Tooltip formatter={(v) => formatNumber(Number(v))} />
          <Legend />
          <Bar dataKey="max" name="max x" stackId="r" fill="var(--accent)" isAnimationActive={false} />
          <Bar dataKey="min" name="min x" stackId="r" fill="var(--accent-2)" isAnimationActive={false} />
        </BarChart>
      </ResponsiveContainer>
    </div>
  );
});

const OutlierChart = memo(function OutlierChart({ data }: { data: { name: string; outliers: number }[] }) {
  return (
    <div className="chart" data-testid="activation-outlier-chart">
      <ResponsiveContainer width="100%" height={200}>
        <BarChart data={data}>
          <CartesianGrid strokeDasharray="3 3" opacity={0.3} />
          <XAxis dataKey="name" hide />
          <YAxis width={40} allowDecimals={false} />
          <Tooltip />
          <Legend />
          <Bar dataKey="outliers" name="outlier features" fill="#c0504d" isAnimationActive={false} />
        </BarChart>
      </ResponsiveContainer>
    </div>
  );
});

export function ActivationPanel() {
  const activations = useStudio((s) => s.calibration.done?.activations);
  // the recipe's LLM.int8 threshold when it has that step: the chart then shows what it keeps in float
  const recipeThreshold = useStudio((s) => {
    const step = s.recipe.find((x) => x.method === 'llm-int8');
    return step ? Number(step.options?.threshold ?? DEFAULT_OUTLIER_THRESHOLD) : undefined;
  });
  const [chosen, setChosen] = useState<number>();
  const threshold = chosen ?? recipeThreshold ?? DEFAULT_OUTLIER_THRESHOLD;
  const ranges = useMemo(
    () => (activations ?? []).map((a) => ({ name: labelOf(a), min: a.min, max: a.max })),
    [activations],
  );
  const outliers = useMemo(
    () =>
      (activations ?? []).map((a) => ({
        name: labelOf(a),
        outliers: countOutlierFeatures(a.featureAbsMax, threshold),
      })),
    [activations, threshold],
  );
  if (!activations) return null;
  const total = outliers.reduce((n, o) => n + o.outliers, 0);
  const features = activations.reduce((n, a) => n + a.k, 0);
  return (
    <section className="card activations" data-testid="activations">
      <div className="table-tools">
        <h2>Activations</h2>
        <span className="muted">per MatMul input, from calibration (hover for names)</span>
      </div>
      <div className="columns">
        <div>
          <h3 className="small">Range (min … max)</h3>
          <RangeChart data={ranges} />
        </div>
        <div>
          <h3 className="small">
            Outlier features: max |x| &gt;{' '}
            <input
              type="number"
              className="inline-number"
              data-testid="outlier-threshold"
              aria-label="Outlier threshold"
              min={0}
              step={0.5}
              value={threshold}
              onChange={(e) => Number.isFinite(Number(e.target.value)) && setChosen(Number(e.target.value))}
            />{' '}
            <span className="muted" data-testid="outlier-total">
              {total} of {features.toLocaleString('en-US')}
            </span>
          </h3>
          <OutlierChart data={outliers} />
        </div>
      </div>
    </section>
  );
}
