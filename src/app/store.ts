/** The studio's one store: every panel reads from here and changes it through its actions. */
import { create } from 'zustand';
import type { ModelSummary } from '../core/summary.ts';
import type { Histogram } from '../core/stats.ts';
import { openModel, tensorHistogram, type Progress } from './client.ts';

export interface StudioState {
  summary?: ModelSummary;
  loading?: Progress & { fileName: string };
  error?: string;
  selected?: string;
  histogram?: Histogram;
  histogramBins: number;
  histogramLog: boolean;
  open(files: { path: string; file: File }[]): Promise<void>;
  select(name: string): Promise<void>;
  setBins(bins: number): Promise<void>;
  setLog(log: boolean): void;
}

let openSeq = 0;
let histSeq = 0;

export const useStudio = create<StudioState>((set, get) => ({
  histogramBins: 64,
  histogramLog: false,

  async open(files) {
    const seq = ++openSeq;
    const fileName = files.map((f) => f.path).find((p) => p.endsWith('.onnx')) ?? files[0]?.path ?? '';
    set({ loading: { phase: 'reading', done: 0, total: 1, fileName }, error: undefined });
    let finished = false;
    try {
      const summary = await openModel(files, (p) => {
        // progress messages can arrive after the result: never let one resurrect a finished bar
        if (seq === openSeq && !finished) set({ loading: { ...p, fileName } });
      });
      finished = true;
      if (seq !== openSeq) return;
      set({ summary, loading: undefined, selected: undefined, histogram: undefined });
      const firstWeight = summary.tensors.find((t) =>
        t.consumers.some((c) => c === 'MatMul' || c === 'Gemm'),
      );
      if (firstWeight) await get().select(firstWeight.name);
    } catch (e) {
      finished = true;
      if (seq === openSeq) set({ loading: undefined, error: (e as Error).message });
    }
  },

  async select(name) {
    const seq = ++histSeq;
    set({ selected: name });
    try {
      const histogram = await tensorHistogram(name, get().histogramBins);
      if (seq === histSeq) set({ histogram });
    } catch (e) {
      if (seq === histSeq) set({ histogram: undefined, error: (e as Error).message });
    }
  },

  async setBins(bins) {
    set({ histogramBins: bins });
    const { selected } = get();
    if (selected) await get().select(selected);
  },

  setLog(log) {
    set({ histogramLog: log });
  },
}));
