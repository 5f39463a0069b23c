import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { contextFromConfig } from '../../src/core/eval/config.ts';
import { DEMO_DIR } from '../helpers/fixtures.ts';

describe('context length from config.json', () => {
  it('reads the names the model families use, in order of precedence', () => {
    const demo = JSON.parse(readFileSync(join(DEMO_DIR, 'config.json'), 'utf8'));
    expect(contextFromConfig(demo)).toBe(128); // GPT-2: n_positions
    expect(contextFromConfig({ max_position_embeddings: 2048 })).toBe(2048); // Llama
    expect(contextFromConfig({ n_ctx: 1024 })).toBe(1024);
    expect(contextFromConfig({ seq_len: 512 })).toBe(512); // llama2.c
    expect(contextFromConfig({ n_positions: 256, seq_len: 512 })).toBe(256);
  });

  it('declares nothing for a missing, odd or useless value', () => {
    for (const config of [
      undefined,
      null,
      'text',
      {},
      { n_positions: 1 },
      { n_positions: 1.5 },
      { n_ctx: '512' },
    ])
      expect(contextFromConfig(config)).toBeUndefined();
  });
});
