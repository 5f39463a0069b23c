/**
 * Real test material kept in the repository (tests/fixtures/), so a fresh clone needs nothing beside it.
 */
import { join, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '../..');
export const FIXTURES = join(ROOT, 'tests', 'fixtures');
export const STORIES_DIR = join(FIXTURES, 'stories260K');
export const STORIES_MODEL = join(STORIES_DIR, 'model.onnx');

/** The studio's demo model (public/models/, laid out as a Hugging Face/transformers.js folder). */
export const DEMO_DIR = join(ROOT, 'public', 'models', 'tiny-shakespeare-gpt2');
/** Its one ONNX file: GPT-2 with the KV cache (past_key_values.* in, present.* out). */
export const DEMO_MODEL = join(DEMO_DIR, 'onnx', 'model.onnx');
