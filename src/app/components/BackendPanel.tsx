/**
 * Backend agreement in the Evaluate area: the compressed model (or the open one) on onnxruntime-web's
 * wasm and on its WebGPU provider, on the same tokens: max |Δlogit|, KL and top-1 agreement, with a
 * warning beyond tolerance, or a clear line when the browser has no WebGPU adapter.
 */
import { useShallow } from 'zustand/react/shallow';
import { useStudio } from '../store.ts';
import { ProgressBar } from './ProgressBar.tsx';
import { evaluationInputProblem } from '../eval-input.ts';
import { protocolLine } from '../../core/eval/compare.ts';
import { AGREEMENT_TOLERANCE } from '../../core/eval/agreement.ts';

export function BackendPanel() {
  const s = useStudio(
    useShallow((x) => ({
      run: x.agreementRun,
      tokens: x.autoTokens,
      problem: evaluationInputProblem(x),
      check: x.checkBackends,
      cancel: x.cancelAgreement,
    })),
  );
  const result = s.run.result;
  const a = result?.available ? result.agreement : undefined;
  return (
    <section className="card backends" data-testid="backends">
      <div className="table-tools">
        <h2>Backends: wasm vs WebGPU</h2>
        <span className="muted">the same model, the same {s.tokens} tokens, two execution providers</span>
      </div>
      <div className="buttons left">
        <button
          type="button"
          data-testid="backend-check-compressed"
          disabled={s.run.running || !!s.problem}
          title={s.problem}
          onClick={() => void s.check('compressed')}
        >
          Compare backends: compressed model
        </button>
        <button
          type="button"
          data-testid="backend-check-original"
          disabled={s.run.running || !!s.problem}
          title={s.problem}
          onClick={() => void s.check('original')}
        >
          Compare backends: open model
        </button>
      </div>
      {s.run.running && (
        <ProgressBar
          label={
            s.run.progress
              ? `WebGPU: window ${s.run.progress.done} of ${s.run.progress.total}`
              : 'Starting both backends…'
          }
          value={s.run.progress ? s.run.progress.done / s.run.progress.total : undefined}
          onCancel={() => s.cancel()}
        />
      )}
      {s.run.error && (
        <div className="error" role="alert" data-testid="backend-error">
          {s.run.error}
        </div>
      )}
      {result && !result.available && (
        <p className="notice" data-testid="backend-unavailable">
          {result.label}: {result.reason}
        </p>
      )}
      {a && result?.available && (
        <div data-testid="backend-result">
          <dl className="totals">
            <dt>Model</dt>
            <dd data-testid="backend-label">{result.label}</dd>
            <dt>max |Δlogit|</dt>
            <dd data-testid="backend-max-delta">{a.maxAbsLogit.toExponential(3)}</dd>
            <dt>KL(wasm ‖ WebGPU)</dt>
            <dd data-testid="backend-kl">
              {a.kl.mean.value.toExponential(2)} ± {a.kl.mean.uncertainty.toExponential(1)}{' '}
              <span className="muted">(max {a.kl.max.toExponential(2)})</span>
            </dd>
            <dt>top-1 agreement</dt>
            <dd data-testid="backend-top1">
              {(a.sameTop.value * 100).toFixed(2)} ± {(a.sameTop.uncertainty * 100).toFixed(2)} %
            </dd>
          </dl>
          {a.warnings.length ? (
            <div className="error" role="alert" data-testid="backend-warning">
              The backends disagree beyond tolerance: {a.warnings.join('; ')}. A kernel of one of them
              computes this model differently: check the exported model on the runtime you deploy to.
            </div>
          ) : (
            <p className="small" data-testid="backend-ok">
              The backends agree within tolerance (max |Δlogit| ≤ {AGREEMENT_TOLERANCE.maxAbsLogit}, mean KL ≤{' '}
              {AGREEMENT_TOLERANCE.klMean}, top-1 ≥ {AGREEMENT_TOLERANCE.sameTop * 100} %).
            </p>
          )}
          <p className="muted small" data-testid="backend-protocol">
            Protocol: {protocolLine(a.protocol)}; against {a.other.provider} ({a.other.reason})
          </p>
        </div>
      )}
    </section>
  );
}
