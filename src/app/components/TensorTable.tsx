import { memo, useMemo, useState } from 'react';
import type { TensorSummary } from '../../core/summary.ts';
import { useStudio } from '../store.ts';
import { formatBytes, formatNumber } from './format.ts';

type Key = 'name' | 'dtype' | 'params' | 'bytes' | 'min' | 'max' | 'mean' | 'std' | 'zeros';
const COLUMNS: { key: Key; label: string; numeric: boolean }[] = [
  { key: 'name', label: 'Name', numeric: false },
  { key: 'dtype', label: 'Dtype', numeric: false },
  { key: 'params', label: 'Params', numeric: true },
  { key: 'bytes', label: 'Bytes', numeric: true },
  { key: 'min', label: 'Min', numeric: true },
  { key: 'max', label: 'Max', numeric: true },
  { key: 'mean', label: 'Mean', numeric: true },
  { key: 'std', label: 'Std', numeric: true },
  { key: 'zeros', label: 'Zeros', numeric: true },
];

/** Rows with their statistics, by the statistics object (one per row and batch). */
const merged = new WeakMap<object, { base: TensorSummary; row: Row }>();

export function TensorTable({ tensors: rowsWithoutStats }: { tensors: TensorSummary[] }) {
  const selected = useStudio((s) => s.selected);
  // statistics arrive after opening, in batches from the worker's pool
  const statistics = useStudio((s) => s.statistics);
  // a row keeps its object while its statistics do (TensorRow then skips it)
  const tensors = useMemo(
    () =>
      rowsWithoutStats.map((t) => {
        const stats = statistics[t.name];
        if (!stats) return t;
        const known = merged.get(stats);
        if (known?.base === t) return known.row;
        const row = { ...t, ...stats };
        merged.set(stats, { base: t, row });
        return row;
      }),
    [rowsWithoutStats, statistics],
  );
  const select = useStudio((s) => s.select);
  const [filter, setFilter] = useState('');
  const [sort, setSort] = useState<{ key: Key; desc: boolean }>({ key: 'bytes', desc: true });

  const rows = useMemo(() => {
    const f = filter.trim().toLowerCase();
    const kept = f
      ? tensors.filter((t) => `${t.name} ${t.dtype} ${t.consumers.join(' ')}`.toLowerCase().includes(f))
      : tensors;
    const dir = sort.desc ? -1 : 1;
    return [...kept].sort((a, b) => {
      const x = a[sort.key] ?? -Infinity;
      const y = b[sort.key] ?? -Infinity;
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
  }, [tensors, filter, sort]);

  return (
    <section className="card tensors">
      <div className="table-tools">
        <h2>Tensors</h2>
        <input
          type="search"
          placeholder="Filter by name, dtype or op…"
          value={filter}
          onChange={(e) => setFilter(e.target.value)}
          aria-label="Filter tensors"
          data-testid="tensor-filter"
        />
        <span className="muted">
          {rows.length} of {tensors.length}
        </span>
      </div>
      <div className="table-scroll">
        <table data-testid="tensor-table">
          <thead>
            <tr>
              {COLUMNS.map((c) => (
                <th
                  key={c.key}
                  className={c.numeric ? 'num' : undefined}
                  aria-sort={sort.key === c.key ? (sort.desc ? 'descending' : 'ascending') : 'none'}
                >
                  <button
                    type="button"
                    onClick={() => setSort({ key: c.key, desc: sort.key === c.key ? !sort.desc : c.numeric })}
                  >
                    {c.label}
                    {sort.key === c.key ? (sort.desc ? ' ▾' : ' ▴') : ''}
                  </button>
                </th>
              ))}
              <th>Shape</th>
              <th>Used by</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((t) => (
              <TensorRow key={t.name} t={t} selected={t.name === selected} select={select} />
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

/**
 * One row, rendered again only when its own props change: statistics arrive in batches while a big
 * model's first preview runs, and each batch re-rendered every row of the table (the page's main
 * thread spent about a second of a 2.7 GB model's preview on it, in the development build).
 */
type Row = TensorSummary & { error?: string };
const TensorRow = memo(function TensorRow({
  t,
  selected,
  select,
}: {
  t: Row;
  selected: boolean;
  select: (name: string) => unknown;
}) {
  return (
    <tr
      className={selected ? 'selected' : undefined}
      onClick={() => void select(t.name)}
      onKeyDown={(e) => e.key === 'Enter' && void select(t.name)}
      tabIndex={0}
      title={t.error}
    >
      <td className="name">{t.name}</td>
      <td>{t.dtype}</td>
      <td className="num">{t.params.toLocaleString('en-US')}</td>
      <td className="num">{formatBytes(t.bytes)}</td>
      <td className="num">{formatNumber(t.min)}</td>
      <td className="num">{formatNumber(t.max)}</td>
      <td className="num">{formatNumber(t.mean)}</td>
      <td className="num">{formatNumber(t.std)}</td>
      <td className="num">{t.zeros === undefined ? '—' : `${(t.zeros * 100).toFixed(1)}%`}</td>
      <td>[{t.shape.join('×')}]</td>
      <td>{t.consumers.join(', ')}</td>
    </tr>
  );
});
