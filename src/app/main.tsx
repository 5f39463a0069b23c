import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App.tsx';
import './styles.css';
import { useStudio } from './store.ts';

// Exposed for end-to-end tests to read exact values the page rounds for display.
(window as unknown as { __studio: typeof useStudio }).__studio = useStudio;

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
