import { useRef, useState } from 'react';
import { useShallow } from 'zustand/react/shallow';
import { useStudio } from '../store.ts';
import { ProgressBar } from './ProgressBar.tsx';
import { evaluationInputProblem, parseTokenizerFile } from '../eval-input.ts';

export function QualityPanel() {
  // only what this panel shows: a preview update elsewhere in the store must not re-render it
  const s = useStudio(
    useShallow((x) => ({
      evaluation: x.evaluation,
      evalIsIds: x.evalIsIds,
      tokenizerJson: x.tokenizerJson,
      evalText: x.evalText,
      evalTextLabel: x.evalTextLabel,
      setEvalText: x.setEvalText,
      setTokenizer: x.setTokenizer,
      ctx: x.ctx,
      stride: x.stride,
      setWindow: x.setWindow,
      evaluate: x.evaluate,
      cancelEvaluate: x.cancelEvaluate,
    })),
  );
  const textFile = useRef<HTMLInputElement>(null);
  const tokFile = useRef<HTMLInputElement>(null);
  const { evaluation: ev } = s;
  const problem = evaluationInputProblem(s);
  const [tokenizerError, setTokenizerError] = useState<string>();
  const tokens = s.evalIsIds ? undefined : s.evalText.length;
  return (
    <section className="card quality" data-testid="quality">
      <div className="table-tools">
        <h2>Quality</h2>
        <span className="muted">perplexity, strided sliding window</span>
      </div>
      <div className="quality-grid">
        <div>
          <label className="field">
            Text{' '}
            <span className="muted" data-testid="eval-text-label">
              {s.evalTextLabel || 'pasted'}{' '}
              {tokens !== undefined && `· ${tokens.toLocaleString('en-US')} chars`}
            </span>
            <textarea
              value={s.evalText}
              rows={4}
              aria-label="Evaluation text"
              data-testid="eval-text"
              placeholder="Paste text to evaluate on, or load a .txt file"
              onChange={(e) => s.setEvalText(e.target.value, 'pasted', s.evalIsIds)}
            />
          </label>
          <div className="buttons left">
            <button type="button" onClick={() => textFile.current?.click()}>
              Load text…
            </button>
            <button type="button" onClick={() => tokFile.current?.click()}>
              Load tokenizer.json…
            </button>
            <label>
              <input
                type="checkbox"
                checked={s.evalIsIds}
                onChange={(e) => s.setEvalText(s.evalText, s.evalTextLabel, e.target.checked)}
              />{' '}
              pre-tokenized ids (one sequence per line)
            </label>
          </div>
          <input
            ref={textFile}
            type="file"
            accept=".txt,text/plain"
            hidden
            onChange={async (e) => {
              const f = e.target.files?.[0];
              if (f) s.setEvalText(await f.text(), f.name, s.evalIsIds);
            }}
          />
          <input
            ref={tokFile}
            type="file"
            accept=".json"
            hidden
            onChange={async (e) => {
              const f = e.target.files?.[0];
              e.target.value = ''; // the same file chosen again (after fixing it) fires again
              if (!f) return;
              try {
                s.setTokenizer(parseTokenizerFile(f.name, await f.text()));
                setTokenizerError(undefined);
              } catch (err) {
                setTokenizerError((err as Error).message);
              }
            }}
          />
        </div>
        <div className="quality-controls">
          <label className="field">
            Context
            <input
              type="number"
              min={2}
              max={8192}
              value={s.ctx}
              onChange={(e) =>
                s.setWindow(Number(e.target.value), Math.min(s.stride, Number(e.target.value)))
              }
            />
          </label>
          <label className="field">
            Stride
            <input
              type="number"
              min={1}
              max={s.ctx}
              value={s.stride}
              onChange={(e) => s.setWindow(s.ctx, Number(e.target.value))}
            />
          </label>
          <button
            type="button"
            className="primary"
            disabled={ev.running || !!problem}
            title={problem}
            onClick={() => void s.evaluate()}
            data-testid="evaluate"
          >
            Evaluate
          </button>
        </div>
      </div>
      {problem && !ev.running && (
        <p className="muted" data-testid="eval-disabled-reason">
          {problem}
        </p>
      )}
      {tokenizerError && (
        <div className="error" role="alert" data-testid="tokenizer-error">
          {tokenizerError}
        </div>
      )}
      {ev.running && (
        <ProgressBar
          label={
            ev.progress
              ? `Scoring: ${ev.progress.tokensScored.toLocaleString('en-US')} tokens · ${Math.round(ev.progress.tokensPerSecond).toLocaleString('en-US')} tokens/s`
              : 'Preparing the model…'
          }
          value={ev.progress ? ev.progress.windowsDone / ev.progress.windowsTotal : undefined}
          onCancel={() => s.cancelEvaluate()}
        />
      )}
      {ev.error && (
        <div className="error" role="alert" data-testid="eval-error">
          {ev.error}
        </div>
      )}
      {ev.result && (
        <div className="result" data-testid="eval-result">
          <div className="big">
            <span className="muted">perplexity</span>{' '}
            <b data-testid="perplexity">{ev.result.perplexity.toFixed(3)}</b>{' '}
            <span className="muted">forward pass</span>{' '}
            <b data-testid="speed">
              {Math.round(ev.result.speed.tokensPerSecond).toLocaleString('en-US')} tokens/s
            </b>
          </div>
          <div className="muted small" data-testid="speed-protocol">
            speed: {ev.result.speed.tokens} tokens as one sequence, median of {ev.result.speed.runs} runs
            after {ev.result.speed.warmup} warm-up runs
          </div>
          <div className="muted">
            {ev.result.tokens.toLocaleString('en-US')} tokens scored · ctx {ev.result.protocol.ctx}, stride{' '}
            {ev.result.protocol.stride} ·{' '}
            <span data-testid="eval-rate" data-value={ev.result.tokensPerSecond}>
              {Math.round(ev.result.tokensPerSecond).toLocaleString('en-US')} tokens/s
            </span>{' '}
            ·{' '}
            <span data-testid="runtime">
              {ev.result.runtime.provider}
              {ev.result.runtime.provider === 'wasm' &&
                `, ${ev.result.runtime.threads} thread${ev.result.runtime.threads > 1 ? 's' : ''}`}
              {ev.result.runtime.reason && ` — ${ev.result.runtime.reason}`}
            </span>
          </div>
          {ev.result.runtime.notice && <div className="notice">{ev.result.runtime.notice}</div>}
        </div>
      )}
    </section>
  );
}
