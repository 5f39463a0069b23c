/**
 * Structured pruning in the page: how many heads, MLP neurons and blocks the recipe's "structure"
 * pre-pass removes, the parameters and file size it leaves, and where the heads' importance lies.
 */
import type { StructureSettings } from '../../core/compress/structure.ts';
import type { ImportanceKind } from '../../core/structure/importance.ts';
import { useStudio } from '../store.ts';
import { formatBytes, formatCount } from './format.ts';
import { defaultDistill } from '../train-slice.ts';
import { ProgressBar } from './ProgressBar.tsx';

const IMPORTANCE_LABELS: Record<ImportanceKind, string> = {
  magnitude: 'weight magnitude',
  activation: 'activation (calibration statistics)',
  taylor: 'taylor (gradients on the calibration sequences)',
};

type Amounts = Pick<StructureSettings, 'heads' | 'neurons' | 'blocks'>;

/** The settings with the amounts changed, or null when nothing is removed any more. */
function withAmounts(
  s: StructureSettings | null,
  amounts: Amounts,
  importance: ImportanceKind,
): StructureSettings | null {
  const heads = amounts.heads ?? 0;
  const neurons = amounts.neurons ?? 0;
  const blocks = amounts.blocks ?? 0;
  if (!heads && !neurons && !blocks) return null;
  // the field order of resolveStructureSettings: the link reads as the CLI's recipe files do
  return {
    ...(heads > 0 ? { heads } : {}),
    ...(neurons > 0 ? { neurons } : {}),
    ...(blocks > 0 ? { blocks } : {}),
    importance: s?.importance ?? importance,
    scope: s?.scope ?? 'layer',
    ...(s?.multiple !== undefined ? { multiple: s.multiple } : {}),
  };
}

function heatColor(v: number): string {
  // low importance (pruned first) pale, high importance dark
  return `hsl(210 70% ${Math.round(92 - v * 60)}%)`;
}

export function StructureCard() {
  const info = useStudio((s) => s.structureInfo);
  const error = useStudio((s) => s.structureError);
  const structure = useStudio((s) => s.structure);
  const setStructure = useStudio((s) => s.setStructure);
  const preview = useStudio((s) => s.preview);
  const summary = useStudio((s) => s.summary);
  const distill = useStudio((s) => s.distill);
  const setDistill = useStudio((s) => s.setDistill);
  const ctx = useStudio((s) => s.ctx);
  const hasTokenizer = useStudio((s) => !!s.tokenizerJson);
  const calibrated = useStudio((s) => !!s.calibration.done);
  const run = useStudio((s) => s.importanceRun);
  const importanceError = useStudio((s) => s.importanceError);
  const chooseImportance = useStudio((s) => s.chooseImportance);
  const cancelImportance = useStudio((s) => s.cancelImportance);
  if (!summary) return null;
  const importance: ImportanceKind = structure?.importance ?? info?.importance ?? 'magnitude';
  const disabled = !info;
  const amounts: Amounts = {
    heads: structure?.heads ?? 0,
    neurons: structure?.neurons ?? 0,
    blocks: structure?.blocks ?? 0,
  };
  const change = (patch: Partial<Amounts>) =>
    setStructure(withAmounts(structure, { ...amounts, ...patch }, importance));
  const report = preview?.structure;
  const maxHeads = info ? Math.max(...info.heads) : 0;
  return (
    <section className="card" data-testid="structure-card">
      <h2>Structure</h2>
      <p className="muted small">
        Removes whole attention heads, MLP neurons and blocks before the recipe&apos;s steps: the matrices
        shrink, so the file and the runtime do too.
      </p>
      {error && (
        <p className="error small" data-testid="structure-error">
          {error}
        </p>
      )}
      <label className="option">
        heads removed {Math.round((amounts.heads ?? 0) * 100)} %{' '}
        <input
          type="range"
          data-testid="structure-heads"
          min={0}
          max={0.875}
          step={0.125}
          value={amounts.heads}
          disabled={disabled}
          onChange={(e) => change({ heads: Number(e.target.value) })}
        />
      </label>
      <label className="option">
        MLP neurons removed {Math.round((amounts.neurons ?? 0) * 100)} %{' '}
        <input
          type="range"
          data-testid="structure-neurons"
          min={0}
          max={0.9}
          step={0.05}
          value={amounts.neurons}
          disabled={disabled}
          onChange={(e) => change({ neurons: Number(e.target.value) })}
        />
      </label>
      <label className="option">
        blocks dropped {amounts.blocks}{' '}
        <input
          type="range"
          data-testid="structure-blocks"
          min={0}
          max={info ? Math.max(0, info.blocks - 1) : 0}
          step={1}
          value={amounts.blocks}
          disabled={disabled}
          onChange={(e) => change({ blocks: Number(e.target.value) })}
        />
      </label>
      <label className="option">
        importance{' '}
        <select
          data-testid="structure-importance"
          value={run?.kind ?? importance}
          disabled={disabled || !!run}
          onChange={(e) => void chooseImportance(e.target.value as ImportanceKind)}
        >
          {(['magnitude', 'activation', 'taylor'] as const).map((kind) => (
            <option
              key={kind}
              value={kind}
              disabled={kind !== 'magnitude' && !calibrated}
              title={kind !== 'magnitude' && !calibrated ? 'needs calibration: run the Calibration card' : ''}
            >
              {IMPORTANCE_LABELS[kind]}
              {kind !== 'magnitude' && !calibrated ? ' — calibrate first' : ''}
            </option>
          ))}
        </select>
      </label>
      {run && (
        <div data-testid="structure-importance-progress">
          <ProgressBar
            label={`Taylor importance: forward and backward passes, sequence ${run.done} of ${run.total || '…'}`}
            value={run.total ? run.done / run.total : undefined}
            onCancel={cancelImportance}
          />
        </div>
      )}
      {importanceError && (
        <p className="error small" data-testid="structure-importance-error">
          {importanceError}
        </p>
      )}
      <label className="option">
        scope{' '}
        <select
          data-testid="structure-scope"
          value={structure?.scope ?? 'layer'}
          disabled={disabled || !structure}
          onChange={(e) =>
            structure && setStructure({ ...structure, scope: e.target.value as 'layer' | 'global' })
          }
        >
          <option value="layer">per layer</option>
          <option value="global">global</option>
        </select>
      </label>
      {info && (
        <p className="small" data-testid="structure-params" data-params={info.params}>
          parameters {formatCount(report?.paramsBefore ?? info.params)}
          {report && (
            <>
              {' '}
              →{' '}
              <strong data-testid="structure-params-after" data-params={report.paramsAfter}>
                {formatCount(report.paramsAfter)}
              </strong>
              {'; '}heads {report.headsBefore} → {report.headsAfter}, neurons {report.neuronsBefore} →{' '}
              {report.neuronsAfter}, blocks {report.blocksBefore} → {report.blocksAfter}
              {'; '}file {formatBytes(summary.totalSize)} → {formatBytes(report.prunedBytes)} pruned
              {preview && <> → {formatBytes(preview.totals.estimatedOutputBytes)} compressed</>}
            </>
          )}
        </p>
      )}
      {structure && (
        <div className="buttons left">
          <button
            type="button"
            data-testid="structure-then-distil"
            disabled={!!distill}
            title={distill ? 'The recipe already distils (Distil card)' : undefined}
            onClick={() => {
              setDistill(defaultDistill(ctx, hasTokenizer));
              document.querySelector('[data-testid=distil]')?.scrollIntoView({ behavior: 'smooth' });
            }}
          >
            {distill ? 'Distilled after pruning ✓' : 'Then distil (heal the pruned model)'}
          </button>
        </div>
      )}
      {info && (
        <details data-testid="structure-heatmap">
          <summary>
            Head and neuron importance ({IMPORTANCE_LABELS[info.importance]}, each block scaled to its
            maximum)
          </summary>
          <div
            className="small"
            style={{ display: 'grid', gridTemplateColumns: `4em repeat(${maxHeads}, 1.2em) 1fr`, gap: 2 }}
          >
            {info.headImportance.map((heads, b) => (
              <div key={b} style={{ display: 'contents' }}>
                <span className="muted">block {b}</span>
                {Array.from({ length: maxHeads }, (_, h) => (
                  <span
                    key={h}
                    title={heads[h] === undefined ? '' : `block ${b} head ${h}: ${heads[h].toFixed(2)}`}
                    style={{ background: heads[h] === undefined ? 'transparent' : heatColor(heads[h]) }}
                  />
                ))}
                <span className="muted">
                  neurons {info.neurons[b]}: min {info.neuronSummary[b].min.toFixed(2)}, mean{' '}
                  {info.neuronSummary[b].mean.toFixed(2)}
                </span>
              </div>
            ))}
          </div>
        </details>
      )}
    </section>
  );
}
