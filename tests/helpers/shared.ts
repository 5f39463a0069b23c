/**
 * The project's shared real material (stories260K, tinyshakespeare) lives in a `shared/` folder beside the
 * checkout. Found by walking up from the repository (or at $COMPRESSION_STUDIO_SHARED), so a clone
 * anywhere under the workspace finds it.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const ROOT = resolve(__dirname, '../..');

function findShared(): string {
  const fromEnv = process.env.COMPRESSION_STUDIO_SHARED;
  if (fromEnv && existsSync(join(fromEnv, 'data'))) return fromEnv;
  for (let dir = ROOT; ; dir = dirname(dir)) {
    for (const candidate of [join(dir, 'shared'), join(dir, '..', 'shared')])
      if (existsSync(join(candidate, 'data', 'stories260K', 'model.onnx'))) return candidate;
    if (dirname(dir) === dir) break;
  }
  throw new Error(
    `The shared test material (shared/data/stories260K) was not found above ${ROOT}; ` +
      'set COMPRESSION_STUDIO_SHARED to the folder that holds data/.',
  );
}

export const SHARED = findShared();
export const STORIES_DIR = join(SHARED, 'data', 'stories260K');
export const STORIES_MODEL = join(STORIES_DIR, 'model.onnx');
