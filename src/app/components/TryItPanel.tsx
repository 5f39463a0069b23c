/**
 * "Try it": a prompt, and the original and the compressed model continuing it side by side — the
 * quickest way to see what a recipe did. Generation runs in its own worker (greedy or seeded
 * sampling, the KV cache when the model has one), streams each token, shows each model's tokens/s,
 * and stops on Stop or when another model is opened.
 */
import { useEffect, useRef, useState } from 'react';
import { useShallow } from 'zustand/react/shallow';
import { useStudio, originalModelBytes } from '../store.ts';
import { compressedModel } from '../compress-slice.ts';
import { isCalibratedStep } from '../calibration-slice.ts';
import { describeRecipe } from '../share.ts';
import { contextFromConfig } from '../../core/eval/config.ts';
import { generateText, stopGeneration, type GenerateUpdate } from '../client.ts';
import type { ModelSummary } from '../../core/summary.ts';

type Side = Omit<GenerateUpdate, 'model'>;

interface Generation {
  owner?: ModelSummary;
  sides: (Side | undefined)[];
  running: boolean;
  error?: string;
}

const IDLE: Generation = { sides: [], running: false };

/** config.json's eos_token_id (a number or a list), which ends the text. */
function eosIds(config: Record<string, unknown> | undefined): number[] {
  const eos = config?.eos_token_id;
  if (typeof eos === 'number') return [eos];
  return Array.isArray(eos) ? eos.filter((x): x is number => typeof x === 'number') : [];
}

const STOPS: Record<string, string> = {
  length: 'reached max new tokens',
  eos: 'end of text',
  cancelled: 'stopped',
};

function Output({ side, label, index }: { side?: Side; label: string; index: number }) {
  return (
    <div className="tryit-side">
      <div className="table-tools">
        <b>{label}</b>
        <span className="muted small" data-testid={`tryit-speed-${index}`}>
          {side && side.ids.length > 0 && `${side.tokensPerSecond.toFixed(1)} tokens/s`}
          {side?.done &&
            ` · ${side.ids.length} tokens, ${STOPS[side.done.stop]} · ${side.done.cached ? 'KV cache' : 'recomputes the prefix each token'}`}
        </span>
      </div>
      <pre className="tryit-output" data-testid={`tryit-output-${index}`}>
        {side ? (side.text ?? side.ids.join(' ')) : ''}
      </pre>
    </div>
  );
}

export function TryItPanel() {
  const s = useStudio(
    useShallow((x) => ({
      summary: x.summary,
      tokenizerJson: x.tokenizerJson,
      // a string: a slider move re-renders this panel only when the label changes
      recipeLabel: describeRecipe(x.recipe, x.structure, x.distill),
      needsCalibration: !x.calibration.done && x.recipe.some(isCalibratedStep),
    })),
  );
  const [prompt, setPrompt] = useState('');
  const [maxNew, setMaxNew] = useState(40);
  const [sampled, setSampled] = useState(false);
  const [temperature, setTemperature] = useState(0.8);
  const [topK, setTopK] = useState(40);
  const [seed, setSeed] = useState(0);
  // one generation's state, and the model it was for: another model's outputs are not shown
  const [out, setOut] = useState<Generation>({ sides: [], running: false });
  const run = useRef(0);
  const noTokenizer = !s.tokenizerJson;
  const current = out.owner === s.summary ? out : IDLE;
  const { running, error, sides } = current;

  // another model opened (or the panel gone): a generation still running belonged to the last one
  useEffect(
    () => () => {
      run.current++;
      void stopGeneration();
    },
    [s.summary],
  );

  const start = async () => {
    const mine = ++run.current;
    const owner = useStudio.getState().summary;
    const update = (f: (g: Generation) => Partial<Generation>) => {
      if (mine === run.current) setOut((g) => ({ ...g, ...f(g) }));
    };
    setOut({ owner, sides: [], running: true });
    try {
      const state = useStudio.getState();
      if (!state.summary) return;
      const original = originalModelBytes(state.summary, state.files, state.modelFiles);
      const { model: compressed } = await compressedModel(state);
      if (mine !== run.current) return;
      await generateText(
        {
          models: [original, compressed],
          prompt,
          tokenizerJson: state.tokenizerJson,
          maxNewTokens: maxNew,
          sampling: sampled ? { temperature, topK, seed } : undefined,
          // what the model reads, not the evaluation window
          ctx: contextFromConfig(state.config) ?? state.ctx,
          eosTokenIds: eosIds(state.config),
        },
        ({ model, ...side }) =>
          update((g) => {
            const next = [...g.sides];
            next[model] = side;
            return { sides: next };
          }),
      );
    } catch (e) {
      update(() => ({ error: (e as Error).message }));
    } finally {
      update(() => ({ running: false }));
    }
  };

  const reason = s.needsCalibration
    ? 'The recipe’s calibrated steps need statistics: run Calibrate first.'
    : !prompt.trim()
      ? 'Type a prompt first.'
      : undefined;
  return (
    <section className="card tryit" data-testid="tryit">
      <div className="table-tools">
        <h2>Try it</h2>
        <span className="muted">
          the original and the compressed model continue your prompt, side by side
        </span>
      </div>
      <label className="field">
        Prompt
        <textarea
          rows={2}
          value={prompt}
          data-testid="tryit-prompt"
          aria-label="Prompt"
          placeholder={
            noTokenizer ? 'Token ids separated by spaces, e.g. 1 403 407' : 'Type the start of a text'
          }
          onChange={(e) => setPrompt(e.target.value)}
        />
      </label>
      {noTokenizer && (
        <p className="muted small" data-testid="tryit-ids-note">
          This model came without a tokenizer.json: type the prompt as token ids; the models’ output is shown
          as ids.
        </p>
      )}
      <div className="buttons left tryit-controls">
        <label className="field">
          Max new tokens
          <input
            type="number"
            min={1}
            max={1024}
            value={maxNew}
            data-testid="tryit-max"
            onChange={(e) => setMaxNew(Math.max(1, Math.min(1024, Math.floor(Number(e.target.value)) || 1)))}
          />
        </label>
        <label className="field">
          Decoding
          <select
            value={sampled ? 'sampled' : 'greedy'}
            data-testid="tryit-mode"
            onChange={(e) => setSampled(e.target.value === 'sampled')}
          >
            <option value="greedy">greedy</option>
            <option value="sampled">sampled</option>
          </select>
        </label>
        {sampled && (
          <>
            <label className="field">
              Temperature
              <input
                type="number"
                min={0.05}
                max={5}
                step={0.05}
                value={temperature}
                onChange={(e) => setTemperature(Math.max(0.05, Number(e.target.value) || 1))}
              />
            </label>
            <label className="field">
              Top-k (0: all)
              <input
                type="number"
                min={0}
                value={topK}
                onChange={(e) => setTopK(Math.max(0, Math.floor(Number(e.target.value)) || 0))}
              />
            </label>
            <label className="field">
              Seed
              <input
                type="number"
                value={seed}
                onChange={(e) => setSeed(Math.floor(Number(e.target.value)) || 0)}
              />
            </label>
          </>
        )}
        <button
          type="button"
          className="primary"
          data-testid="tryit-generate"
          disabled={running || !!reason}
          title={reason}
          onClick={() => void start()}
        >
          Generate
        </button>
        <button
          type="button"
          data-testid="tryit-stop"
          disabled={!running}
          onClick={() => void stopGeneration()}
        >
          Stop
        </button>
      </div>
      {error && (
        <div className="error" role="alert" data-testid="tryit-error">
          {error}
        </div>
      )}
      <div className="tryit-sides">
        <Output side={sides[0]} label="Original" index={0} />
        <Output side={sides[1]} label={`Compressed: ${s.recipeLabel}`} index={1} />
      </div>
    </section>
  );
}
