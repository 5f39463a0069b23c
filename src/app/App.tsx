import { DropZone } from './components/DropZone.tsx';
import { SummaryCard } from './components/SummaryCard.tsx';
import { TensorTable } from './components/TensorTable.tsx';
import { HistogramPanel } from './components/HistogramPanel.tsx';
import { useStudio } from './store.ts';

export function App() {
  const summary = useStudio((s) => s.summary);
  const error = useStudio((s) => s.error);
  return (
    <div className="app">
      <header className="app-header">
        <h1>Compression Studio</h1>
        <p className="tagline">Compress language models in your browser. Nothing leaves your machine.</p>
      </header>
      <DropZone />
      {error && (
        <div className="error" role="alert" data-testid="error">
          {error}
        </div>
      )}
      {summary && (
        <main className="workspace">
          <SummaryCard summary={summary} />
          <div className="columns">
            <TensorTable tensors={summary.tensors} />
            <HistogramPanel />
          </div>
        </main>
      )}
    </div>
  );
}
