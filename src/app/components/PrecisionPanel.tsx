/**
 * Mixed precision: the per-tensor sensitivity chart (KL of compressing one tensor alone with a chosen
 * step, sorted), the plan under a budget (bits/weight, MB or KL) written into the recipe, and the
 * recipe as an editable per-tensor table (each row's method and options), which the share link carries.
 */
import { memo, useEffect, useMemo, useState } from 'react';
import { Bar, BarChart, CartesianGrid, ResponsiveContainer, Tooltip, XAxis, YAxis } from 'recharts';
import { useShallow } from 'zustand/react/shallow';
import { useStudio } from '../store.ts';
import { ProgressBar } from './ProgressBar.tsx';
import { formatNumber } from './format.ts';
import { METHODS, getMethod } from '../../methods/registry.ts';
import type { OptionSpec, OptionValues } from '../../methods/types.ts';
import { DEFAULT_CANDIDATES, assignmentsOfRecipe } from '../../core/compress/auto.ts';
import type { RecipeStep } from '../../core/compress/recipe.ts';
import { evaluationInputProblem } from '../eval-input.ts';
import type { BudgetKind } from '../precision-slice.ts';

const CHART_STEPS = DEFAULT_CANDIDATES.split(',').filter((c) => c !== 'keep');

const SensitivityChart = memo(function SensitivityChart({
  data,
  step,
}: {
  data: { name: string; kl: number }[];
  step: string;
}) {
  return (
    <div className="chart" data-testid="sensitivity-chart" data-bars={data.length}>
      <ResponsiveContainer width="100%" height={Math.max(120, data.length * 16 + 40)}>
        <BarChart data={data} layout="vertical" margin={{ left: 8, right: 16 }}>
          <CartesianGrid strokeDasharray="3 3" opacity={0.3} />
          <XAxis type="number" tickFormatter={(v: number) => formatNumber(v)} />
          <YAxis type="category" dataKey="name" width={220} interval={0} tick={{ fontSize: 10 }} />
          <Tooltip formatter={(v) => formatNumber(Number(v))} />
          <Bar dataKey="kl" name={`KL with ${step}`} fill="var(--accent)" isAnimationActive={false} />
        </BarChart>
      </ResponsiveContainer>
    </div>
  );
});

/** A compact control for one option in a table row: a select for choices, a checkbox, a number box. */
function RowOption(props: {
  spec: OptionSpec;
  value: number | string | boolean;
  id: string;
  onChange: (v: number | string | boolean) => void;
}) {
  const { spec, value, id, onChange } = props;
  if (spec.type === 'boolean')
    return (
      <label className="option" title={spec.label}>
        <input
          type="checkbox"
          data-testid={id}
          checked={Boolean(value)}
          onChange={(e) => onChange(e.target.checked)}
        />{' '}
        {spec.label}
      </label>
    );
  const choices =
    spec.type === 'select'
      ? spec.choices.map((c) => ({ value: c.value, label: c.label }))
      : spec.choices?.map((c) => ({ value: String(c), label: String(c) }));
  if (choices)
    return (
      <label className="option">
        {spec.label}{' '}
        <select
          data-testid={id}
          value={String(value)}
          onChange={(e) => onChange(spec.type === 'number' ? Number(e.target.value) : e.target.value)}
        >
          {choices.map((c) => (
            <option key={c.value} value={c.value}>
              {c.label}
            </option>
          ))}
        </select>
      </label>
    );
  const num = spec as Extract<OptionSpec, { type: 'number' }>;
  return (
    <label className="option">
      {spec.label}{' '}
      <input
        type="number"
        data-testid={id}
        min={num.min}
        max={num.max}
        step={num.step}
        value={Number(value)}
        style={{ width: '5em' }}
        onChange={(e) => onChange(Number(e.target.value))}
      />
    </label>
  );
}

export function PrecisionPanel() {
  const s = useStudio(
    useShallow((x) => ({
      summary: x.summary,
      step: x.sensitivityStep,
      candidates: x.autoCandidates,
      tokens: x.autoTokens,
      budget: x.autoBudget,
      run: x.sensitivityRun,
      sensitivity: x.sensitivity,
      plan: x.planSummary,
      problem: evaluationInputProblem(x),
      setSettings: x.setPrecisionSettings,
      runSensitivity: x.runSensitivity,
      planPrecision: x.planPrecision,
      cancel: x.cancelSensitivity,
    })),
  );
  const chart = useMemo(
    () =>
      (s.sensitivity?.table ?? [])
        .flatMap((t) => {
          const e = t.entries.find((x) => x.candidate === s.step);
          return e ? [{ name: t.name, kl: e.kl }] : [];
        })
        .sort((a, b) => b.kl - a.kl),
    [s.sensitivity, s.step],
  );
  const busy = s.run.running;
  const progress = s.run.progress;
  return (
    <section className="card precision" data-testid="precision">
      <div className="table-tools">
        <h2>Mixed precision</h2>
        <span className="muted">per-tensor sensitivity and a plan under a budget</span>
      </div>
      <div className="buttons left">
        <label className="option">
          KL of compressing each tensor alone with{' '}
          <select
            data-testid="sensitivity-step"
            value={s.step}
            onChange={(e) => s.setSettings({ sensitivityStep: e.target.value })}
          >
            {[...new Set([...CHART_STEPS, s.step])].map((c) => (
              <option key={c} value={c}>
                {c}
              </option>
            ))}
          </select>
        </label>
        <label className="option">
          on the first{' '}
          <input
            type="number"
            data-testid="sensitivity-tokens"
            min={16}
            max={4096}
            step={16}
            value={s.tokens}
            style={{ width: '5em' }}
            onChange={(e) => s.setSettings({ autoTokens: Math.max(2, Number(e.target.value) || 2) })}
          />{' '}
          tokens of the evaluation text
        </label>
        <button
          type="button"
          data-testid="sensitivity-run"
          disabled={busy || !!s.problem}
          title={s.problem}
          onClick={() => void s.runSensitivity()}
        >
          Sensitivity
        </button>
      </div>
      {s.problem && <p className="muted small">Sensitivity needs input: {s.problem}</p>}
      {busy && (
        <ProgressBar
          label={
            progress
              ? `${s.run.purpose === 'plan' ? 'Planning' : 'Sensitivity'}: ${progress.name} with ${progress.candidate} (${progress.done}/${progress.total})`
              : 'Running the original model on the slice…'
          }
          value={progress ? progress.done / progress.total : undefined}
          onCancel={() => s.cancel()}
        />
      )}
      {s.run.error && (
        <div className="error" role="alert" data-testid="sensitivity-error">
          {s.run.error}
        </div>
      )}
      {chart.length > 0 && <SensitivityChart data={chart} step={s.step} />}
      {s.sensitivity && (
        <p className="muted small" data-testid="sensitivity-protocol">
          KL(original ‖ one tensor compressed), mean per token: {s.sensitivity.protocol.tokens} tokens, ctx{' '}
          {s.sensitivity.protocol.ctx}, text sha256 {s.sensitivity.protocol.textHash.slice(0, 12)},{' '}
          {s.sensitivity.protocol.provider}, onnxruntime-web {s.sensitivity.protocol.onnxruntime}
          {s.sensitivity.cached ? ` · ${s.sensitivity.cached} from the cache` : ''}
        </p>
      )}
      <div className="buttons left">
        <label className="option">
          Budget{' '}
          <select
            data-testid="plan-budget-kind"
            value={s.budget.kind}
            onChange={(e) =>
              s.setSettings({ autoBudget: { ...s.budget, kind: e.target.value as BudgetKind } })
            }
          >
            <option value="bits">bits / weight</option>
            <option value="mb">MB (model file)</option>
            <option value="kl">KL (summed)</option>
          </select>{' '}
          <input
            type="number"
            data-testid="plan-budget"
            min={0}
            step="any"
            value={s.budget.value}
            style={{ width: '6em' }}
            onChange={(e) => s.setSettings({ autoBudget: { ...s.budget, value: Number(e.target.value) } })}
          />
        </label>
        <label className="option">
          candidates{' '}
          <input
            type="text"
            data-testid="plan-candidates"
            value={s.candidates}
            size={36}
            onChange={(e) => s.setSettings({ autoCandidates: e.target.value })}
          />
        </label>
        <button
          type="button"
          className="primary"
          data-testid="plan-run"
          disabled={busy || !!s.problem}
          onClick={() => void s.planPrecision()}
        >
          Plan
        </button>
      </div>
      {s.plan && (
        <p className="small" data-testid="plan-summary">
          Plan ({s.plan.budget}): {s.plan.bitsPerWeight.toFixed(3)} bits/weight over the planned tensors,
          predicted KL {s.plan.predictedKl.toPrecision(3)}; written to the recipe.
          {s.plan.warning && <span className="notice"> {s.plan.warning}</span>}
        </p>
      )}
      <TensorPlanTable />
    </section>
  );
}

/**
 * The recipe as one storage per tensor, editable row by row. Its own component: it follows the recipe
 * and the preview's reports, which change on every slider move, while the rest of the card does not.
 */
const TensorPlanTable = memo(function TensorPlanTable() {
  const s = useStudio(
    useShallow((x) => ({
      recipe: x.recipe,
      weights: x.precisionWeights,
      reports: x.preview?.reports,
      calibrated: !!x.calibration.done,
      sensitivity: x.sensitivity,
      setTensorStep: x.setTensorStep,
      loadWeights: x.loadPrecisionWeights,
    })),
  );
  const { weights, loadWeights } = s;
  useEffect(() => {
    if (!weights) void loadWeights();
  }, [weights, loadWeights]);
  const assignments = useMemo(
    () => (weights ? assignmentsOfRecipe(s.recipe, weights) : undefined),
    [weights, s.recipe],
  );
  // the table opens by itself for a per-tensor recipe (a plan, an edit, a link to one); otherwise it
  // stays closed and unrendered, so a slider drag on a uniform recipe does not redraw ~30 rows of controls
  const perTensor = s.recipe.some((x) => x.select?.include?.some((p) => p.startsWith('/^')));
  const [openChoice, setOpenChoice] = useState<boolean>();
  const open = openChoice ?? perTensor;
  // storage formats only: a per-tensor table gives each tensor one storage
  const methods = METHODS.filter((m) => m.role === 'encode' && (s.calibrated || !m.needs?.length));
  return (
    <>
      {assignments ? (
        <details
          open={open}
          className="selector"
          data-testid="tensor-plan-details"
          onToggle={(e) => {
            const now = (e.currentTarget as HTMLDetailsElement).open;
            if (now !== open) setOpenChoice(now);
          }}
        >
          <summary>
            Per-tensor storage ({assignments.filter((a) => a.step).length} of {assignments.length} compressed)
          </summary>
          {open && (
            <div className="plan-scroll">
              <table className="plan-table" data-testid="tensor-plan">
                <thead>
                  <tr>
                    <th>tensor</th>
                    <th>method</th>
                    <th>options</th>
                    <th>bits/w</th>
                    <th>KL alone</th>
                  </tr>
                </thead>
                <tbody>
                  {assignments.map((a, i) => {
                    const report = s.reports?.find((r) => r.name === a.name);
                    const options: OptionValues = a.step?.options ?? {};
                    const method = a.step ? getMethod(a.step.method) : undefined;
                    const entry = s.sensitivity?.table
                      .find((t) => t.name === a.name)
                      ?.entries.find((e) =>
                        a.step ? sameStep(e.candidate, a.step) : e.candidate === 'keep',
                      );
                    return (
                      <tr key={a.name} data-testid={`plan-row-${i}`} data-name={a.name}>
                        <td className="name">{a.name}</td>
                        <td>
                          <select
                            data-testid={`plan-method-${i}`}
                            aria-label={`${a.name} method`}
                            value={a.step?.method ?? 'keep'}
                            onChange={(e) =>
                              s.setTensorStep(
                                a.name,
                                e.target.value === 'keep' ? null : { method: e.target.value },
                              )
                            }
                          >
                            <option value="keep">keep (float)</option>
                            {[...methods, ...(method && !methods.includes(method) ? [method] : [])].map(
                              (m) => (
                                <option key={m.id} value={m.id}>
                                  {m.label}
                                </option>
                              ),
                            )}
                          </select>
                        </td>
                        <td className="plan-options">
                          {method?.options.map((spec) => (
                            <RowOption
                              key={spec.key}
                              spec={spec}
                              id={`plan-opt-${i}-${spec.key}`}
                              value={options[spec.key] ?? spec.default}
                              onChange={(v) =>
                                s.setTensorStep(a.name, {
                                  method: a.step!.method,
                                  options: { ...options, [spec.key]: v },
                                })
                              }
                            />
                          ))}
                        </td>
                        <td data-testid={`plan-bits-${i}`}>
                          {report ? report.bitsPerWeight.toFixed(2) : '32.00'}
                        </td>
                        <td>{entry ? formatNumber(entry.kl) : '—'}</td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
          )}
        </details>
      ) : (
        weights && (
          <p className="muted small" data-testid="tensor-plan-none">
            The recipe gives some tensors more than one step (e.g. prune, then int4): the per-tensor table
            shows recipes with one storage per tensor. Plan, or edit the recipe.
          </p>
        )
      )}
    </>
  );
});

/** Whether a candidate id ('int4b32', 'kmeans16c', …) names this step (its options as the grammar writes them). */
function sameStep(candidate: string, step: Omit<RecipeStep, 'select'>): boolean {
  const o = step.options ?? {};
  if (step.method === 'fp16' || (step.method === 'int8' && !Object.keys(o).length))
    return candidate === step.method;
  if (step.method === 'int4' && (o.format === undefined || o.format === 'matmulnbits'))
    return candidate === `int4b${o.blockSize ?? 32}${o.symmetric === false ? 'a' : ''}`;
  if (step.method === 'kmeans' && o.dense === undefined)
    return candidate === `kmeans${o.clusters ?? 16}${o.perChannel ? 'c' : ''}`;
  return false;
}
