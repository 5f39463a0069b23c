/** The calibration card's rules, without a browser: when Run may start, and what a shared recipe carries. */
import { describe, expect, it } from 'vitest';
import {
  bosOf,
  calibrationProblem,
  isCalibratedStep,
  sharedCalibration,
  type CalibrationState,
} from '../../src/app/calibration-slice.ts';

const state = (
  c: Partial<CalibrationState['form']> = {},
  extra: Partial<CalibrationState> = {},
): CalibrationState => ({
  form: { source: 'generate', samples: 8, length: 32, seed: 0, bos: 1, ...c },
  running: false,
  ...extra,
});

describe('calibration card', () => {
  it('says why Run is disabled', () => {
    const summary = {};
    expect(calibrationProblem({ calibration: state() })).toBe('Open a model first.');
    expect(calibrationProblem({ summary, calibration: state() })).toBeUndefined();
    expect(calibrationProblem({ summary, calibration: state({ source: 'ids' }) })).toMatch(
      /file of token ids/,
    );
    expect(calibrationProblem({ summary, calibration: state({ source: 'text' }) })).toMatch(
      /tokenizer\.json/,
    );
    expect(calibrationProblem({ summary, tokenizerJson: {}, calibration: state({ source: 'text' }) })).toBe(
      'Choose a text file first.',
    );
    const file = { name: 'a.txt', text: 'hello' };
    expect(
      calibrationProblem({ summary, tokenizerJson: {}, calibration: state({ source: 'text' }, { file }) }),
    ).toBeUndefined();
    expect(calibrationProblem({ summary, calibration: state({}, { running: true }) })).toBe('Calibrating…');
    expect(calibrationProblem({ summary, calibration: state({ length: 1 }) })).toMatch(/length ≥ 2/);
  });

  it('shares the settings the statistics in use came from, only for a calibrated recipe or importance', () => {
    const gptq = [{ method: 'gptq' }];
    expect(sharedCalibration({ recipe: [{ method: 'int4' }], calibration: state() })).toBeUndefined();
    expect(sharedCalibration({ recipe: gptq, calibration: state({ samples: 4 }) })).toEqual({
      source: 'generate',
      samples: 4,
      length: 32,
      seed: 0,
      bos: 1,
      sequential: false,
    });
    // after a run, the card may show other settings: the link names those of the run
    const done = {
      activations: [],
      sequences: 16,
      tokens: 512,
      runs: 1,
      fromCache: false,
      millis: 1,
      form: state({ samples: 16 }).form,
      key: 'k',
    };
    expect(sharedCalibration({ recipe: gptq, calibration: state({ samples: 4 }, { done }) })?.samples).toBe(
      16,
    );
    // structured pruning by activation or Taylor importance is measured on the calibration data too
    const int4 = [{ method: 'int4' }];
    for (const importance of ['activation', 'taylor'])
      expect(
        sharedCalibration({ recipe: int4, calibration: state({ samples: 4 }), structure: { importance } })
          ?.samples,
      ).toBe(4);
    expect(
      sharedCalibration({ recipe: int4, calibration: state(), structure: { importance: 'magnitude' } }),
    ).toBeUndefined();
    expect(isCalibratedStep({ method: 'wanda' })).toBe(true);
    expect(isCalibratedStep({ method: 'prune' })).toBe(false);
    expect(isCalibratedStep({ method: 'no-such-method' })).toBe(false);
  });

  it('starts generated sequences at the config’s BOS, else 1', () => {
    expect(bosOf({ bos_token_id: 0 })).toBe(0);
    expect(bosOf({ bos_token_id: 50256 })).toBe(50256);
    expect(bosOf({ bos_token_id: null })).toBe(1);
    expect(bosOf(undefined)).toBe(1);
  });
});
