/**
 * lo[c] = min(lo[c], x[r][c]), hi[c] = max(hi[c], x[r][c]) over rows r0..r1−1 of a row-major matrix
 * with `cols` columns. Four rows per sweep so each lo/hi entry is loaded and stored a quarter as often.
 */
export function updateColumnRanges(
  x: Float32Array,
  r0: number,
  r1: number,
  cols: number,
  lo: Float32Array,
  hi: Float32Array,
): void {
  let r = r0;
  for (; r + 4 <= r1; r += 4) {
    const b0 = r * cols;
    const b1 = b0 + cols;
    const b2 = b1 + cols;
    const b3 = b2 + cols;
    for (let c = 0; c < cols; c++) {
      const a = x[b0 + c];
      const b = x[b1 + c];
      const d = x[b2 + c];
      const e = x[b3 + c];
      lo[c] = Math.min(lo[c], a, b, d, e);
      hi[c] = Math.max(hi[c], a, b, d, e);
    }
  }
  for (; r < r1; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const v = x[base + c];
      if (v < lo[c]) lo[c] = v;
      if (v > hi[c]) hi[c] = v;
    }
  }
}

/**
 * out[r][c] = min(floor(x[r][c] · inv[c] + offset[c]), max) − bias for rows r0..r1−1: round to nearest
 * of x / s shifted by a zero point (offset = z + 0.5). The caller guarantees x · inv + offset ≥ 0, so
 * `| 0` is the floor and no lower clamp is needed; `max` caps the side a symmetric scheme may overshoot.
 */
export function quantizeColumns(
  x: Float32Array,
  out: Uint8Array | Int8Array,
  r0: number,
  r1: number,
  cols: number,
  inv: Float32Array,
  offset: Float32Array,
  max: number,
  bias: number,
): void {
  let r = r0;
  for (; r + 4 <= r1; r += 4) {
    const b0 = r * cols;
    const b1 = b0 + cols;
    const b2 = b1 + cols;
    const b3 = b2 + cols;
    for (let c = 0; c < cols; c++) {
      const s = inv[c];
      const o = offset[c];
      out[b0 + c] = Math.min(max, (x[b0 + c] * s + o) | 0) - bias;
      out[b1 + c] = Math.min(max, (x[b1 + c] * s + o) | 0) - bias;
      out[b2 + c] = Math.min(max, (x[b2 + c] * s + o) | 0) - bias;
      out[b3 + c] = Math.min(max, (x[b3 + c] * s + o) | 0) - bias;
    }
  }
  for (; r < r1; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++)
      out[base + c] = Math.min(max, (x[base + c] * inv[c] + offset[c]) | 0) - bias;
  }
}

/** m[c] = max(m[c], |x[r][c]|) over rows r0..r1−1: what a symmetric scale needs, in one array. */
export function updateColumnAbsMax(
  x: Float32Array,
  r0: number,
  r1: number,
  cols: number,
  m: Float32Array,
): void {
  let r = r0;
  for (; r + 4 <= r1; r += 4) {
    const b0 = r * cols;
    const b1 = b0 + cols;
    const b2 = b1 + cols;
    const b3 = b2 + cols;
    for (let c = 0; c < cols; c++) {
      m[c] = Math.max(
        m[c],
        Math.abs(x[b0 + c]),
        Math.abs(x[b1 + c]),
        Math.abs(x[b2 + c]),
        Math.abs(x[b3 + c]),
      );
    }
  }
  for (; r < r1; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) m[c] = Math.max(m[c], Math.abs(x[base + c]));
  }
}
