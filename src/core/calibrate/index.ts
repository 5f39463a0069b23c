/** Calibration: sequences to run, activation statistics from running them, and the OBS machinery GPTQ and SparseGPT share. */
export * from './stats.ts';
export * from './generate.ts';
export * from './capture.ts';
export * from './linalg.ts';
export * from './obs.ts';
export * from './sequential.ts';
export * from './summary.ts';
export * from './overlap.ts';
