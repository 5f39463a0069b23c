/** Before/after quality, the history of evaluated recipes as a perplexity-vs-size chart, export and share. */
import { memo, useMemo, useState } from 'react';
import { formatTick, niceTicks } from './format.ts';
import { CartesianGrid, ResponsiveContainer, Scatter, ScatterChart, Tooltip, XAxis, YAxis } from 'recharts';
import { useShallow } from 'zustand/react/shallow';
import { useStudio } from '../store.ts';
import { ProgressBar } from './ProgressBar.tsx';
import { describeRecipe, shareLink, type HistoryEntry } from '../share.ts';
import { evaluationInputProblem } from '../eval-input.ts';
import { isCalibratedStep, sharedCalibration } from '../calibration-slice.ts';
import { formatEstimate, protocolLine } from '../../core/eval/compare.ts';
import { exportFolder } from '../folder-export.ts';

export function ComparePanel() {
  const s = useStudio(
    useShallow((x) => ({
      summary: x.summary,
      recipe: x.recipe,
      structure: x.structure,
      distill: x.distill,
      evaluation: x.evaluation,
      evalProblem: evaluationInputProblem(x),
      needsCalibration:
        !x.calibration.done && x.recipe.some(isCalibratedStep)
          ? 'The recipe’s calibrated steps need statistics: run Calibrate first.'
          : undefined,
      compressedEval: x.compressedEval,
      history: x.history,
      exporting: x.exporting,
      exportMessage: x.exportMessage,
      evaluateCompressed: x.evaluateCompressed,
      cancelCompressedEval: x.cancelCompressedEval,
      exportCompressed: x.exportCompressed,
      cancelExport: x.cancelExport,
      restoreRecipe: x.restoreRecipe,
    })),
  );
  const [copied, setCopied] = useState(false);
  const [withOriginal, setWithOriginal] = useState(false);
  const original = s.evaluation.result;
  const compressed = s.compressedEval;
  // memoised on the history: a slider move re-renders this panel (the recipe label), not its chart
  const modelName = s.summary?.name;
  const points = useMemo(
    () => s.history.filter((h) => h.model === modelName).map((h) => ({ ...h, mb: h.bytes / 1e6 })),
    [s.history, modelName],
  );
  const copyLink = async () => {
    try {
      const state = useStudio.getState();
      await navigator.clipboard.writeText(
        shareLink(state.recipe, sharedCalibration(state), state.structure, state.distill),
      );
      setCopied(true);
      setTimeout(() => setCopied(false), 1500);
    } catch {
      setCopied(false);
    }
  };
  return (
    <section className="card compare" data-testid="compare">
      <div className="table-tools">
        <h2>Before / after</h2>
        <span className="muted" data-testid="recipe-label">
          {describeRecipe(s.recipe, s.structure, s.distill)}
        </span>
      </div>
      <div className="buttons left">
        <button
          type="button"
          data-testid="evaluate-compressed"
          disabled={compressed.running || !!s.evalProblem || !!s.needsCalibration}
          title={s.needsCalibration ?? s.evalProblem}
          onClick={() => void s.evaluateCompressed()}
        >
          Evaluate compressed
        </button>
        <button
          type="button"
          data-testid="export"
          disabled={s.exporting || !!s.needsCalibration}
          title={s.needsCalibration}
          onClick={() => void s.exportCompressed()}
        >
          Export ONNX + report
        </button>
        <button
          type="button"
          data-testid="export-folder"
          disabled={s.exporting || !!s.needsCalibration}
          title={
            s.needsCalibration ??
            'A transformers.js folder: onnx/model_q4.onnx (…), config, tokenizer and a model card — into a folder you pick, or as a .zip'
          }
          onClick={() => void exportFolder({ withOriginal })}
        >
          Export folder
        </button>
        <label className="small" title="Also put the original model in the folder, as onnx/model.onnx">
          <input
            type="checkbox"
            data-testid="export-folder-original"
            checked={withOriginal}
            onChange={(e) => setWithOriginal(e.target.checked)}
          />{' '}
          with the original
        </label>
        <button type="button" data-testid="copy-link" onClick={() => void copyLink()}>
          {copied ? 'Link copied' : 'Copy link'}
        </button>
      </div>
      {s.needsCalibration && (
        <p className="muted small" data-testid="needs-calibration-reason">
          {s.needsCalibration}
        </p>
      )}
      {s.evalProblem && (
        <p className="muted small" data-testid="evaluate-compressed-reason">
          Evaluate needs input: {s.evalProblem}
        </p>
      )}
      {compressed.running && (
        <ProgressBar
          label={
            compressed.progress
              ? `Compressed model: ${Math.round(compressed.progress.tokensPerSecond).toLocaleString('en-US')} tokens/s`
              : 'Building the compressed model…'
          }
          value={
            compressed.progress
              ? compressed.progress.windowsDone / compressed.progress.windowsTotal
              : undefined
          }
          onCancel={() => s.cancelCompressedEval()}
        />
      )}
      {s.exporting && (
        <ProgressBar label={s.exportMessage ?? 'Exporting…'} onCancel={() => s.cancelExport()} />
      )}
      {s.exportMessage && !s.exporting && (
        <p className="small" data-testid="export-message">
          {s.exportMessage}
        </p>
      )}
      {compressed.error && (
        <div className="error" role="alert">
          {compressed.error}
        </div>
      )}
      <dl className="totals">
        <dt>Original</dt>
        <dd data-testid="ppl-original">{original ? original.perplexity.toFixed(3) : '—'}</dd>
        <dt>Compressed</dt>
        <dd data-testid="ppl-compressed">
          {compressed.result ? compressed.result.perplexity.toFixed(3) : '—'}
          {compressed.result && original && (
            <span className="muted">
              {' '}
              (
              {(((compressed.result.perplexity - original.perplexity) / original.perplexity) * 100).toFixed(
                1,
              )}{' '}
              %, {((compressed.bytes ?? 0) / 1e6).toFixed(2)} MB)
            </span>
          )}
        </dd>
        {compressed.result?.versus && (
          <>
            <dt>KL vs original</dt>
            <dd data-testid="kl-versus">
              {formatEstimate(compressed.result.versus.kl.mean, 5)}
              <span className="muted">
                {' '}
                (median {compressed.result.versus.kl.median.toFixed(5)}, 99 %{' '}
                {compressed.result.versus.kl.p99.toFixed(4)}, max {compressed.result.versus.kl.max.toFixed(3)}
                )
              </span>
            </dd>
            <dt>Same top</dt>
            <dd data-testid="same-top">
              {(compressed.result.versus.sameTop.value * 100).toFixed(2)} ±{' '}
              {(compressed.result.versus.sameTop.uncertainty * 100).toFixed(2)} %
            </dd>
            <dt>PPL ratio</dt>
            <dd data-testid="ppl-ratio">
              {formatEstimate(compressed.result.versus.ratio, 4)}
              <span className="muted">
                {' '}
                (RMS Δp {(compressed.result.versus.rmsDeltaP.value * 100).toFixed(2)} %)
              </span>
            </dd>
          </>
        )}
        <dt>tokens/s</dt>
        <dd>
          <span data-testid="speed-original">
            {original?.speed
              ? `${Math.round(original.speed.tokensPerSecond).toLocaleString('en-US')} tokens/s`
              : '—'}
          </span>
          {' → '}
          <span data-testid="speed-compressed">
            {compressed.result?.speed
              ? `${Math.round(compressed.result.speed.tokensPerSecond).toLocaleString('en-US')} tokens/s`
              : '—'}
          </span>
          {original?.speed && compressed.result?.speed && (
            <span className="muted">
              {' '}
              ({(compressed.result.speed.tokensPerSecond / original.speed.tokensPerSecond).toFixed(2)}×,
              forward pass on the same {original.speed.tokens} tokens, median of {original.speed.runs} runs)
            </span>
          )}
        </dd>
      </dl>
      {compressed.result?.versus && (
        <p className="muted small" data-testid="versus-protocol">
          Protocol: {protocolLine(compressed.result.versus.protocol)}
        </p>
      )}
      {points.length > 0 && <ParetoChart points={points} restoreRecipe={s.restoreRecipe} />}
    </section>
  );
}

type ParetoPoint = HistoryEntry & { mb: number };

/** The evaluated recipes as perplexity against size; a point or a line restores its recipe. */
const ParetoChart = memo(function ParetoChart({
  points,
  restoreRecipe,
}: {
  points: ParetoPoint[];
  restoreRecipe: (entry: HistoryEntry) => void;
}) {
  // round sizes on the axis (0, 1, 2, 3, 4 MB), up to the first round value past the largest point
  const maxMb = Math.max(0, ...points.map((p) => p.mb));
  const sizeTicks = useMemo(() => {
    const t = niceTicks(0, maxMb, 4);
    const step = t.length > 1 ? t[1] - t[0] : maxMb || 1;
    return t[t.length - 1] < maxMb ? [...t, Number(formatTick(t[t.length - 1] + step))] : t;
  }, [maxMb]);
  return (
    <div className="chart" data-testid="pareto-chart">
      <ResponsiveContainer width="100%" height={220}>
        <ScatterChart>
          <CartesianGrid strokeDasharray="3 3" opacity={0.3} />
          <XAxis
            type="number"
            dataKey="mb"
            name="size"
            unit=" MB"
            domain={[0, sizeTicks[sizeTicks.length - 1] ?? 'auto']}
            ticks={sizeTicks}
            tickFormatter={formatTick}
          />
          <YAxis type="number" dataKey="perplexity" name="perplexity" width={56} domain={['auto', 'auto']} />
          <Tooltip formatter={(v) => (typeof v === 'number' ? v.toFixed(3) : String(v))} />
          <Scatter
            data={points}
            fill="var(--accent-2)"
            isAnimationActive={false}
            onClick={(p) => restoreRecipe(p as unknown as HistoryEntry)}
          />
        </ScatterChart>
      </ResponsiveContainer>
      <ul className="history" data-testid="history">
        {points.map((h) => (
          <li key={h.id}>
            <button type="button" className="link" onClick={() => restoreRecipe(h)}>
              {h.label}
            </button>{' '}
            <span className="muted">
              ppl {h.perplexity.toFixed(3)} · {h.mb.toFixed(2)} MB
              {h.kl !== undefined && h.sameTop !== undefined && (
                <span title={h.protocol ? protocolLine(h.protocol) : undefined}>
                  {' '}
                  · KL {h.kl.toFixed(4)} · same top {(h.sameTop * 100).toFixed(1)} %
                </span>
              )}
            </span>
          </li>
        ))}
      </ul>
    </div>
  );
});
