/**
 * 1-D k-means for weight sharing. Weights are first reduced to sorted weighted points (the distinct
 * values of a small tensor, or the bin centres of a 16,384-bin histogram of a large one); k-means++
 * seeding and Lloyd iterations then run on prefix sums over those points, so one iteration costs
 * O(K log P) whatever the tensor size. A last exact pass assigns every weight and recomputes each
 * centroid as the mean of its weights.
 */

import { assignCodesByBins, histogramCounts, rangeAndZeros } from '../../core/simd/index.ts';
import { checkCancelled } from '../../core/cancel.ts';

/** Sorted 1-D points with weights (how many weights each stands for) and prefix sums. */
interface Points {
  v: Float64Array;
  w: Float64Array;
  /** prefix sums of w, w·v, w·v², length P + 1 */
  cw: Float64Array;
  cs: Float64Array;
  cq: Float64Array;
}

const HISTOGRAM_BINS = 1 << 14;
/** Tensors up to this size are clustered on their exact sorted values. */
const EXACT_LIMIT = 1 << 13;

/**
 * Reused storage for the histogram path's points: five arrays of 16 k doubles allocated per tensor
 * (fresh pages each time) cost more than clustering a small tensor. Points never outlive a call.
 */
let pointScratch: Float64Array = new Float64Array(0);

/** v, w and the three prefix sums for p points, as views of the scratch storage. */
function scratchPoints(p: number): [Float64Array, Float64Array, Float64Array, Float64Array, Float64Array] {
  const n = p + 1;
  if (pointScratch.length < 5 * n) pointScratch = new Float64Array(5 * n);
  const at = (i: number) => pointScratch.subarray(i * n, i * n + (i < 2 ? p : n));
  return [at(0), at(1), at(2), at(3), at(4)];
}

function withPrefixSums(
  v: Float64Array,
  w: Float64Array,
  cw: Float64Array = new Float64Array(v.length + 1),
  cs: Float64Array = new Float64Array(v.length + 1),
  cq: Float64Array = new Float64Array(v.length + 1),
): Points {
  const p = v.length;
  cw[0] = cs[0] = cq[0] = 0;
  for (let i = 0; i < p; i++) {
    cw[i + 1] = cw[i] + w[i];
    cs[i + 1] = cs[i] + w[i] * v[i];
    cq[i + 1] = cq[i] + w[i] * v[i] * v[i];
  }
  return { v, w, cw, cs, cq };
}

/** Distinct values of x (zeros skipped when asked), weighted by multiplicity. */
function exactPoints(x: Float32Array, skipZeros: boolean): Points {
  const sorted = Float32Array.from(x).sort();
  const v: number[] = [];
  const w: number[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const a = sorted[i];
    if (skipZeros && a === 0) continue;
    if (v.length && v[v.length - 1] === a) w[w.length - 1]++;
    else {
      v.push(a);
      w.push(1);
    }
  }
  return withPrefixSums(Float64Array.from(v), Float64Array.from(w));
}

export interface Binning {
  lo: number;
  hi: number;
  /** bins per unit of value */
  scale: number;
}

/** The bin of a value, as the SIMD histogram and code assignment compute it (float64, clamped). */
function binOf({ lo, scale }: Binning, v: number): number {
  return Math.max(0, Math.min(HISTOGRAM_BINS - 1, Math.trunc((v - lo) * scale)));
}

/** Values' range and exact zeros (lo > hi when there is no number), as rangeAndZeros gives them. */
export interface ValueRange {
  lo: number;
  hi: number;
  zeros: number;
}

/** The fine histogram's bins over a range; all NaN (or empty): one bin at 0. */
export function histogramBinning(range: ValueRange): Binning {
  const lo = range.lo <= range.hi ? range.lo : 0;
  const hi = range.lo <= range.hi ? range.hi : 0;
  return { lo, hi, scale: hi > lo ? HISTOGRAM_BINS / (hi - lo) : 0 };
}

/** How many of x fall in each bin (counts of parts of a tensor add up to the tensor's). */
export function binCounts(x: Float32Array, { lo, hi, scale }: Binning): Int32Array {
  return histogramCounts(x, lo, hi, scale, HISTOGRAM_BINS);
}

/**
 * One point per non-empty bin of a fine histogram, at the bin's centre: a bin is 1/16384 of the range,
 * far finer than any cluster, and counting alone keeps the pass cache-resident. `count` loses the
 * exact zeros when they keep a centroid of their own.
 */
function histogramPoints(
  count: Int32Array,
  binning: Binning,
  zeros: number,
  keepZeros: boolean,
): { points: Points; binning: Binning; hasZeros: boolean } {
  const { lo, hi, scale } = binning;
  const hasZeros = keepZeros && zeros > 0;
  // exact zeros have a centroid of their own: take them out of the clustering
  if (hasZeros) count[binOf({ lo, hi, scale }, 0)] -= zeros;
  let p = 0;
  for (let b = 0; b < HISTOGRAM_BINS; b++) if (count[b] > 0) p++;
  const [v, w, cw, cs, cq] = scratchPoints(p);
  const width = scale > 0 ? 1 / scale : 0;
  for (let b = 0, j = 0; b < HISTOGRAM_BINS; b++) {
    if (count[b] <= 0) continue;
    v[j] = lo + (b + 0.5) * width;
    w[j++] = count[b];
  }
  return { points: withPrefixSums(v, w, cw, cs, cq), binning: { lo, hi, scale }, hasZeros };
}

// mulberry32: a small seeded generator so the same recipe gives the same codebook everywhere
function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** First index i with v[i] > x (v sorted). */
function upperBound(v: Float64Array, x: number, from = 0, to = v.length): number {
  let lo = from;
  let hi = to;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (v[mid] > x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Σ w·(v − c)² over points a..b−1, from the prefix sums. */
function segmentCost(p: Points, a: number, b: number, c: number): number {
  const cost = p.cq[b] - p.cq[a] - 2 * c * (p.cs[b] - p.cs[a]) + c * c * (p.cw[b] - p.cw[a]);
  return cost > 0 ? cost : 0;
}

// k-means++: each next centroid drawn with probability ∝ w · D², D the distance to the nearest chosen
// one. On sorted points the points nearest each chosen centroid form a run between midpoints, so the
// D² mass of a run comes from prefix sums and the draw is a walk over runs plus a binary search inside
// one: O(K log P) per centroid instead of a sweep over all points.
function seedPlusPlus(p: Points, k: number, random: () => number): Float64Array {
  const n = p.v.length;
  const chosen = [p.v[Math.min(n - 1, upperBound(p.cw, random() * p.cw[n]) - 1)]];
  const cuts = new Int32Array(k + 1);
  const mass = new Float64Array(k);
  while (chosen.length < k) {
    const m = chosen.length;
    cuts[m] = n;
    for (let j = 1; j < m; j++) cuts[j] = upperBound(p.v, (chosen[j - 1] + chosen[j]) / 2, cuts[j - 1], n);
    let total = 0;
    for (let j = 0; j < m; j++) total += mass[j] = segmentCost(p, cuts[j], cuts[j + 1], chosen[j]);
    let pick = n - 1;
    if (total > 0) {
      let target = random() * total;
      let j = 0;
      while (j < m - 1 && target > mass[j]) target -= mass[j++];
      // the first point of run j whose running mass reaches the target
      let lo = cuts[j];
      let hi = cuts[j + 1] - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (segmentCost(p, cuts[j], mid + 1, chosen[j]) >= target) hi = mid;
        else lo = mid + 1;
      }
      pick = Math.min(lo, n - 1); // rounding can leave the target just past an empty last run
    }
    const c = p.v[pick];
    let at = m;
    while (at > 0 && chosen[at - 1] > c) at--;
    chosen.splice(at, 0, c);
  }
  return Float64Array.from(chosen);
}

/**
 * Lloyd iterations on sorted points: cluster j owns the points between the midpoints to its
 * neighbours, its new centroid is their weighted mean. Stops when no boundary moves. Boundaries move
 * little once the first pass has placed them, so later passes walk from where they were.
 */
function lloyd(
  p: Points,
  init: Float64Array,
  maxIterations: number,
): { centroids: Float64Array; inertia: number } {
  const k = init.length;
  const n = p.v.length;
  const v = p.v;
  const c = init.slice().sort();
  const cut = new Int32Array(k + 1);
  cut[k] = n;
  for (let iter = 0; iter < maxIterations; iter++) {
    // a pool worker's kernel stops here when its preview was superseded
    checkCancelled();
    let moved = false;
    for (let j = 1; j < k; j++) {
      const mid = (c[j - 1] + c[j]) / 2;
      let t = cut[j];
      if (iter === 0 || t < cut[j - 1]) t = upperBound(v, mid, cut[j - 1], n);
      else {
        while (t < n && v[t] <= mid) t++;
        while (t > cut[j - 1] && v[t - 1] > mid) t--;
      }
      if (t !== cut[j]) moved = true;
      cut[j] = t;
    }
    if (!moved && iter > 0) break;
    for (let j = 0; j < k; j++) {
      const w = p.cw[cut[j + 1]] - p.cw[cut[j]];
      if (w > 0) c[j] = (p.cs[cut[j + 1]] - p.cs[cut[j]]) / w; // an empty cluster keeps its centroid
    }
    // means of ordered runs stay ordered; only an empty cluster's kept centroid can be out of place
    for (let j = 1; j < k; j++) if (c[j] < c[j - 1]) c.sort();
  }
  let inertia = 0;
  for (let j = 0; j < k; j++) {
    const w = p.cw[cut[j + 1]] - p.cw[cut[j]];
    const s = p.cs[cut[j + 1]] - p.cs[cut[j]];
    if (w > 0) inertia += p.cq[cut[j + 1]] - p.cq[cut[j]] - (s * s) / w;
  }
  return { centroids: c, inertia };
}

/** codes[i] = index of the centroid nearest x[i] (centroids sorted; midpoints decide). */
function assignNearest(x: Float32Array, centroids: Float64Array, codes: Uint8Array): void {
  const k = centroids.length;
  const mids = new Float64Array(Math.max(0, k - 1));
  for (let j = 0; j + 1 < k; j++) mids[j] = (centroids[j] + centroids[j + 1]) / 2;
  for (let i = 0; i < x.length; i++) {
    const a = x[i];
    let lo = 0;
    let hi = k - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (a > mids[mid]) lo = mid + 1;
      else hi = mid;
    }
    codes[i] = lo;
  }
}

export interface KMeansOptions {
  clusters: number;
  /** Keep exact zeros (from pruning) as a centroid of their own so sparsity survives. */
  keepZeros: boolean;
  restarts: number;
  seed: number;
  maxIterations?: number;
}

function bestLloyd(points: Points, k: number, opts: KMeansOptions): Float64Array {
  if (points.v.length <= k) return points.v.slice();
  const random = seededRandom(opts.seed);
  let best: { centroids: Float64Array; inertia: number } | null = null;
  for (let r = 0; r < Math.max(1, opts.restarts); r++) {
    const run = lloyd(points, seedPlusPlus(points, k, random), opts.maxIterations ?? 300);
    if (!best || run.inertia < best.inertia) best = run;
  }
  return (best as { centroids: Float64Array }).centroids;
}

/** Sorted codebook with a pinned 0 when zeros are kept; `shift(j)` maps a nonzero-centroid index into it. */
function withZero(centroids: Float64Array, hasZeros: boolean): { book: Float32Array; zeroCode: number } {
  if (!hasZeros) return { book: Float32Array.from(centroids), zeroCode: -1 };
  let zeroCode = 0;
  while (zeroCode < centroids.length && centroids[zeroCode] < 0) zeroCode++;
  const book = new Float32Array(centroids.length + 1);
  book.set(centroids.subarray(0, zeroCode), 0);
  book.set(centroids.subarray(zeroCode), zeroCode + 1);
  return { book, zeroCode };
}

/** Whether `count` weights are clustered on a histogram (a codebook fit, then an assignment pass per weight). */
export function clusteredByHistogram(count: number): boolean {
  return count > EXACT_LIMIT;
}

/**
 * How each weight of a histogram-clustered tensor gets its code: the histogram's binning, the bin →
 * code table (0xffff where a midpoint cuts the bin), the midpoints between centroids and the code of
 * exact zeros (−1 when zeros are not kept). Elementwise, so any range of weights can be assigned alone.
 */
export interface BinAssignment {
  lo: number;
  hi: number;
  scale: number;
  lut: Uint16Array;
  mids: Float64Array;
  zeroCode: number;
}

/** The codebook of a large tensor (Lloyd on its histogram) and the table that assigns its weights. */
export function fitByHistogram(
  values: Float32Array,
  opts: KMeansOptions,
): { book: Float32Array; assignment: BinAssignment } {
  const range = rangeAndZeros(values);
  const binning = histogramBinning(range);
  return fitFromHistogram(binCounts(values, binning), binning, range.zeros, opts);
}

/** fitByHistogram from the tensor's bin counts (taken over, zeros removed), binning and exact zeros. */
export function fitFromHistogram(
  count: Int32Array,
  bins: Binning,
  zeros: number,
  opts: KMeansOptions,
): { book: Float32Array; assignment: BinAssignment } {
  const { points, binning, hasZeros } = histogramPoints(count, bins, zeros, opts.keepZeros);
  let centroids = bestLloyd(points, hasZeros ? opts.clusters - 1 : opts.clusters, opts);
  if (centroids.length === 0) centroids = new Float64Array([0]);
  const fround = Float64Array.from(centroids, Math.fround).sort();
  const { book, zeroCode } = withZero(fround, hasZeros);
  const k = fround.length;
  const mids = new Float64Array(k);
  for (let j = 0; j + 1 < k; j++) mids[j] = (fround[j] + fround[j + 1]) / 2;
  mids[k - 1] = Infinity;
  // lut[b]: the code of every value in bin b, or 0xffff where a midpoint cuts the bin
  const lut = new Uint16Array(HISTOGRAM_BINS);
  const { lo, hi, scale } = binning;
  const width = scale > 0 ? 1 / scale : 0;
  for (let b = 0, j = 0; b < HISTOGRAM_BINS; b++) {
    const left = lo + b * width;
    const right = lo + (b + 1) * width;
    while (mids[j] < left) j++;
    const code = j + (zeroCode >= 0 && j >= zeroCode ? 1 : 0);
    lut[b] = mids[j] >= right ? code : 0xffff;
  }
  // exact zeros take their own code: their bin goes to the exact comparison too
  if (zeroCode >= 0) lut[binOf(binning, 0)] = 0xffff;
  return { book, assignment: { lo, hi, scale, lut, mids, zeroCode } };
}

/** codes[i] = the code of values[i] under `a` (any range of the fitted tensor's weights). */
export function assignByBins(values: Float32Array, codes: Uint8Array, a: BinAssignment): void {
  assignCodesByBins(values, codes, a.lo, a.hi, a.scale, a.lut, a.mids, a.zeroCode);
}

/**
 * Cluster the `count` values x[at(0..count−1)] into at most `clusters` centroids. Writes codes
 * (indices into the sorted codebook it returns) at the same positions.
 */
export function kmeans1d(
  x: Float32Array,
  codes: Uint8Array,
  opts: KMeansOptions,
  at: (i: number) => number = (i) => i,
  count: number = x.length,
): Float32Array {
  const identity = count === x.length && (count < 2 || at(1) === 1);
  const values = identity ? x : Float32Array.from({ length: count }, (_, i) => x[at(i)]);
  if (values.length > EXACT_LIMIT) {
    // large tensors: Lloyd on the histogram, then one pass that assigns each weight through a
    // bin → code table (only bins a boundary cuts need a comparison)
    const { book, assignment } = fitByHistogram(values, opts);
    // codes land in `out` (the caller's array when its layout is ours), zeros on their own code
    const out = identity ? codes : new Uint8Array(count);
    assignByBins(values, out, assignment);
    if (!identity) for (let i = 0; i < count; i++) codes[at(i)] = out[i];
    return book;
  }

  // small tensors (and per-channel codebooks): Lloyd on the exact sorted values, then an exact update
  let hasZeros = false;
  if (opts.keepZeros) for (let i = 0; i < values.length && !hasZeros; i++) hasZeros = values[i] === 0;
  const points = exactPoints(values, hasZeros);
  let centroids = bestLloyd(points, hasZeros ? opts.clusters - 1 : opts.clusters, opts);
  if (centroids.length === 0) centroids = new Float64Array([0]);
  const local = new Uint8Array(count);
  const nonzero = Float64Array.from(centroids);
  assignNearest(values, nonzero, local);
  const sum = new Float64Array(nonzero.length);
  const num = new Float64Array(nonzero.length);
  for (let i = 0; i < count; i++) {
    if (hasZeros && values[i] === 0) continue;
    sum[local[i]] += values[i];
    num[local[i]]++;
  }
  for (let j = 0; j < nonzero.length; j++) if (num[j] > 0) nonzero[j] = Math.fround(sum[j] / num[j]);
  nonzero.sort();
  // nonzero weights choose among the nonzero centroids only, so the sparsity pattern is kept exactly
  assignNearest(values, nonzero, local);
  const { book, zeroCode } = withZero(nonzero, hasZeros);
  for (let i = 0; i < count; i++) {
    let code = local[i];
    if (hasZeros) code = values[i] === 0 ? zeroCode : code >= zeroCode ? code + 1 : code;
    codes[identity ? i : at(i)] = code;
  }
  return book;
}
