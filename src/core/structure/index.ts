/**
 * Structured pruning, as pure functions a worker or the CLI calls in turn:
 * detectStructure(model) → a JSON description of the blocks; magnitudeImportance / activationImportance
 * → per-block scores; planPruning(structure, importance, request) → which heads, neurons and blocks
 * stay; applyStructuredPruning(model, plan) → a new, smaller model.
 */
export * from './detect.ts';
export * from './importance.ts';
export * from './influence.ts';
export * from './plan.ts';
export * from './rewrite.ts';
