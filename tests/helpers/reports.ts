/**
 * Reports compared field for field, the error figures (mse, snrDb) to float64 rounding: a kernel that
 * sums its error while encoding and a report measured on the decoded values add the same terms in
 * another order, so they may differ in the last bits.
 */
import { expect } from 'vitest';
import type { TensorReport } from '../../src/core/compress/pipeline.ts';

const rounded = (reports: readonly TensorReport[]) =>
  reports.map((r) => ({ ...r, mse: Number(r.mse.toPrecision(12)), snrDb: Number(r.snrDb.toPrecision(12)) }));

export function expectSameReports(actual: readonly TensorReport[], expected: readonly TensorReport[]): void {
  expect(rounded(actual)).toEqual(rounded(expected));
}
