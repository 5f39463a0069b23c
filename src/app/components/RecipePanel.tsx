/** The recipe editor, generated from the method registry: every option control comes from a schema. */
import { METHODS, getMethod } from '../../methods/registry.ts';
import type { OptionSpec } from '../../methods/types.ts';

import type { RecipeStep } from '../../core/compress/recipe.ts';
import { useStudio } from '../store.ts';

// Calibrated methods (GPTQ, SparseGPT, Wanda, LLM.int8, W8A8) read activation statistics: the page
// offers them once the Calibration card has captured some.
const WEIGHT_ONLY_METHODS = METHODS.filter((m) => !m.needs?.length);
const CALIBRATED_METHODS = METHODS.filter((m) => m.needs?.length);
const CALIBRATE_FIRST = `${CALIBRATED_METHODS.map((m) => m.label.split(' (')[0]).join(', ')}: calibrate first (Calibration card).`;

function OptionControl(props: {
  spec: OptionSpec;
  value: number | string | boolean;
  id: string;
  onChange: (v: number | string | boolean) => void;
}) {
  const { spec, value, id, onChange } = props;
  if (spec.type === 'boolean')
    return (
      <label className="option">
        <input
          id={id}
          data-testid={id}
          type="checkbox"
          checked={Boolean(value)}
          onChange={(e) => onChange(e.target.checked)}
        />{' '}
        {spec.label}
      </label>
    );
  if (spec.type === 'select')
    return (
      <label className="option">
        {spec.label}{' '}
        <select id={id} data-testid={id} value={String(value)} onChange={(e) => onChange(e.target.value)}>
          {spec.choices.map((c) => (
            <option key={c.value} value={c.value}>
              {c.label}
            </option>
          ))}
        </select>
      </label>
    );
  // numbers with a fixed set of allowed values slide through that set
  const choices = spec.choices;
  const index = choices ? Math.max(0, choices.indexOf(Number(value))) : 0;
  return (
    <label className="option">
      {spec.label}{' '}
      <input
        id={id}
        data-testid={id}
        type="range"
        min={choices ? 0 : spec.min}
        max={choices ? choices.length - 1 : spec.max}
        step={choices ? 1 : spec.step}
        value={choices ? index : Number(value)}
        aria-valuetext={String(value)}
        onChange={(e) => onChange(choices ? choices[Number(e.target.value)] : Number(e.target.value))}
      />{' '}
      <output data-testid={`${id}-value`}>
        {spec.step < 1 ? `${Math.round(Number(value) * 100)} %` : String(value)}
      </output>
    </label>
  );
}

/**
 * A new transform (pruning) goes before the first encoder: after int4/int8/k-means/fp16 its zeros
 * would be stored in the encoder's format at the same size, and the size would not change. Encoders
 * go last, as the recipe's storage format.
 */
export function withStep(recipe: RecipeStep[], step: RecipeStep): RecipeStep[] {
  const isEncoder = (s: RecipeStep) => METHODS.find((m) => m.id === s.method)?.role === 'encode';
  if (getMethod(step.method).role !== 'transform') return [...recipe, step];
  const at = recipe.findIndex(isEncoder);
  return at < 0 ? [...recipe, step] : [...recipe.slice(0, at), step, ...recipe.slice(at)];
}

/** Transform steps placed after an encoder: they change the values, never the stored size. */
function lateTransforms(recipe: RecipeStep[]): number[] {
  const firstEncoder = recipe.findIndex((s) => METHODS.find((m) => m.id === s.method)?.role === 'encode');
  if (firstEncoder < 0) return [];
  return recipe
    .map((s, i) =>
      i > firstEncoder && METHODS.find((m) => m.id === s.method)?.role === 'transform' ? i : -1,
    )
    .filter((i) => i >= 0);
}

export function RecipePanel() {
  const recipe = useStudio((s) => s.recipe);
  const setRecipe = useStudio((s) => s.setRecipe);
  const notice = useStudio((s) => s.recipeNotice);
  const calibrated = useStudio((s) => !!s.calibration.done);
  const offered = calibrated ? METHODS : WEIGHT_ONLY_METHODS;
  const dismissNotice = useStudio((s) => s.dismissRecipeNotice);
  const update = (i: number, step: RecipeStep) => setRecipe(recipe.map((s, j) => (j === i ? step : s)));
  const move = (i: number, d: number) => {
    const next = [...recipe];
    const [x] = next.splice(i, 1);
    next.splice(i + d, 0, x);
    setRecipe(next);
  };
  const late = lateTransforms(recipe);
  return (
    <section className="card recipe" data-testid="recipe">
      <div className="table-tools">
        <h2>Recipe</h2>
        <span className="muted">steps run top to bottom</span>
      </div>
      {notice && (
        <div className="error" role="alert" data-testid="recipe-notice">
          {notice}{' '}
          <button type="button" className="link" onClick={dismissNotice}>
            Dismiss
          </button>
        </div>
      )}
      <ol className="steps">
        {recipe.map((step, i) => {
          const method = getMethod(step.method);
          const options = step.options ?? {};
          const select = step.select ?? {};
          return (
            <li key={i} className="step" data-testid={`step-${i}`}>
              <div className="step-head">
                <select
                  aria-label={`Step ${i + 1} method`}
                  data-testid={`step-${i}-method`}
                  value={step.method}
                  onChange={(e) => update(i, { method: e.target.value, select: step.select })}
                >
                  {METHODS.filter((m) => offered.includes(m) || m.id === step.method).map((m) => (
                    <option key={m.id} value={m.id}>
                      {m.label}
                    </option>
                  ))}
                </select>
                <span className="buttons">
                  <button
                    type="button"
                    aria-label="Move step up"
                    disabled={i === 0}
                    onClick={() => move(i, -1)}
                  >
                    ↑
                  </button>
                  <button
                    type="button"
                    aria-label="Move step down"
                    disabled={i === recipe.length - 1}
                    onClick={() => move(i, 1)}
                  >
                    ↓
                  </button>
                  <button
                    type="button"
                    aria-label="Remove step"
                    disabled={recipe.length === 1}
                    onClick={() => setRecipe(recipe.filter((_, j) => j !== i))}
                  >
                    ✕
                  </button>
                </span>
              </div>
              <p className="muted small">{method.summary}</p>
              {late.includes(i) && (
                <p className="notice small" data-testid={`step-${i}-late`}>
                  This step runs after an encoder, so it changes the weights but not the size: the encoder has
                  already chosen how they are stored. Move it up to shrink the model.
                </p>
              )}
              {method.options.map((spec) => (
                <OptionControl
                  key={spec.key}
                  spec={spec}
                  id={`opt-${i}-${spec.key}`}
                  value={options[spec.key] ?? spec.default}
                  onChange={(v) => update(i, { ...step, options: { ...options, [spec.key]: v } })}
                />
              ))}
              <details className="selector">
                <summary>Tensors</summary>
                <label className="option">
                  <input
                    type="checkbox"
                    checked={Boolean(select.embeddings)}
                    onChange={(e) =>
                      update(i, { ...step, select: { ...select, embeddings: e.target.checked } })
                    }
                  />{' '}
                  include embeddings (and a tied LM head)
                </label>
                <label className="option">
                  <input
                    type="checkbox"
                    checked={Boolean(select.lmHead)}
                    onChange={(e) => update(i, { ...step, select: { ...select, lmHead: e.target.checked } })}
                  />{' '}
                  include the LM head
                </label>
                <label className="option">
                  exclude{' '}
                  <input
                    type="text"
                    placeholder="e.g. *.attn.*"
                    defaultValue={(select.exclude ?? []).join(',')}
                    onBlur={(e) => {
                      const exclude = e.target.value
                        .split(',')
                        .map((x) => x.trim())
                        .filter(Boolean);
                      update(i, { ...step, select: { ...select, exclude } });
                    }}
                  />
                </label>
              </details>
            </li>
          );
        })}
      </ol>
      <label className="option">
        Add step{' '}
        <select
          aria-label="Add step"
          data-testid="add-step"
          value=""
          onChange={(e) => e.target.value && setRecipe(withStep(recipe, { method: e.target.value }))}
        >
          <option value="">choose a method…</option>
          {offered.map((m) => (
            <option key={m.id} value={m.id}>
              {m.label}
            </option>
          ))}
        </select>
      </label>
      {!calibrated && (
        <p className="muted small" data-testid="calibrate-first">
          {CALIBRATE_FIRST}
        </p>
      )}
    </section>
  );
}
