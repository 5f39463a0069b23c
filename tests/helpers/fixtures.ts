/**
 * Real test material kept in the repository (tests/fixtures/), so a fresh clone needs nothing beside it.
 */
import { join, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '../..');
export const FIXTURES = join(ROOT, 'tests', 'fixtures');
export const STORIES_DIR = join(FIXTURES, 'stories260K');
export const STORIES_MODEL = join(STORIES_DIR, 'model.onnx');
