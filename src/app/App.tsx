import { useEffect, useState } from 'react';
import { DropZone } from './components/DropZone.tsx';
import { SummaryCard } from './components/SummaryCard.tsx';
import { TensorTable } from './components/TensorTable.tsx';
import { HistogramPanel } from './components/HistogramPanel.tsx';
import { QualityPanel } from './components/QualityPanel.tsx';
import { TryItPanel } from './components/TryItPanel.tsx';
import { RecipePanel } from './components/RecipePanel.tsx';
import { StructureCard } from './components/StructureCard.tsx';
import { PreviewPanel } from './components/PreviewPanel.tsx';
import { ComparePanel } from './components/ComparePanel.tsx';
import { CalibrationCard } from './components/CalibrationCard.tsx';
import { DistilCard } from './components/DistilCard.tsx';
import { ActivationPanel } from './components/ActivationPanel.tsx';
import { PrecisionPanel } from './components/PrecisionPanel.tsx';
import { BackendPanel } from './components/BackendPanel.tsx';
import { useStudio } from './store.ts';
import { fetchDemo } from './demo.ts';

let demoRequested = false;

async function loadDemo(autoEvaluate: boolean, force = false) {
  try {
    const { files, heldout } = await fetchDemo();
    // a model the person dropped meanwhile wins over the demo
    if (!force && (useStudio.getState().summary || useStudio.getState().loading)) return;
    await useStudio
      .getState()
      .open(files, { isDemo: true, evalText: heldout, evalTextLabel: 'demo held-out text' });
    if (autoEvaluate && useStudio.getState().isDemo) await useStudio.getState().evaluate();
  } catch (e) {
    useStudio.setState({ error: (e as Error).message });
  }
}

const THEMES = ['auto', 'light', 'dark'] as const;

function ThemeToggle() {
  const [theme, setTheme] = useState<(typeof THEMES)[number]>(
    () => (localStorage.getItem('compression-studio:theme') as (typeof THEMES)[number]) ?? 'auto',
  );
  useEffect(() => {
    if (theme === 'auto') delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = theme;
    localStorage.setItem('compression-studio:theme', theme);
  }, [theme]);
  return (
    <button
      type="button"
      data-testid="theme"
      aria-label={`Colour theme: ${theme}`}
      onClick={() => setTheme(THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length])}
    >
      Theme: {theme}
    </button>
  );
}

export function App() {
  const summary = useStudio((s) => s.summary);
  const error = useStudio((s) => s.error);
  useEffect(() => {
    const params = new URLSearchParams(location.search);
    if (demoRequested || params.get('demo') === '0') return;
    demoRequested = true;
    void loadDemo(params.get('eval') !== '0');
  }, []);
  return (
    <div className="app">
      <header className="app-header">
        <h1>Compression Studio</h1>
        <p className="tagline">Compress language models in your browser. Nothing leaves your machine.</p>
        <button type="button" onClick={() => void loadDemo(true, true)}>
          Load demo model
        </button>
        <ThemeToggle />
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
          <div className="studio">
            <div className="studio-side">
              <StructureCard />
              <RecipePanel />
              <CalibrationCard />
              <DistilCard />
            </div>
            <div className="studio-main">
              <PreviewPanel />
              <ComparePanel />
              <PrecisionPanel />
              <ActivationPanel />
            </div>
          </div>
          <QualityPanel />
          <TryItPanel />
          <BackendPanel />
          <div className="columns">
            <TensorTable tensors={summary.tensors} />
            <HistogramPanel />
          </div>
        </main>
      )}
    </div>
  );
}
