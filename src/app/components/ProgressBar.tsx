export function ProgressBar({
  label,
  value,
  onCancel,
}: {
  label: string;
  value?: number;
  onCancel?: () => void;
}) {
  return (
    <div className="progress" data-testid="progress">
      <span>{label}</span>
      <progress max={1} value={value} aria-label={label} />
      {value !== undefined && <span className="pct">{Math.round(value * 100)}%</span>}
      {onCancel && (
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      )}
    </div>
  );
}
