/**
 * Weight sharing by k-means (palettization): every weight becomes one of K centroids. Exported as a
 * codebook plus bit-packed indices that the graph unpacks (BitShift) and looks up (Gather), or, in
 * compatibility mode, as the dense float32 weights the codebook decodes to.
 */
import { DataType } from '../../core/onnx/dtypes.ts';
import { bytesOf, int64Tensor, makeNode } from '../../core/onnx/build.ts';
import { rawTensor } from '../../core/onnx/write.ts';
import type { CompressionMethod, KernelSplit, WeightMatrix } from '../types.ts';
import type { GraphEditor } from '../../core/compress/graph-editor.ts';
import {
  assignByBins,
  binCounts,
  clusteredByHistogram,
  fitFromHistogram,
  histogramBinning,
  kmeans1d,
  type BinAssignment,
  type Binning,
  type KMeansOptions,
  type ValueRange,
} from './kernel.ts';
import { rangeAndZeros } from '../../core/simd/index.ts';

export interface KMeansMethodOptions {
  [key: string]: string | number | boolean;
  clusters: number;
  perChannel: boolean;
  keepZeros: boolean;
  export: 'palette' | 'dense';
}

export interface Palette {
  /** [books, bookSize] centroids, each book sorted. */
  codebook: Float32Array;
  books: number;
  bookSize: number;
  /** Index of each weight into its book, in the weight's own layout. */
  codes: Uint8Array;
  /** Bits per stored index: 1, 2, 4 or 8 (indices pack whole into bytes). */
  bits: number;
}

export function paletteIndexBits(clusters: number): number {
  return clusters <= 2 ? 1 : clusters <= 4 ? 2 : clusters <= 16 ? 4 : 8;
}

/** Bytes of the palette export: packed indices, float32 codebook, int32 per-channel offsets. */
export function paletteBytes(p: Palette, count: number): number {
  return Math.ceil((count * p.bits) / 8) + p.codebook.byteLength + (p.books > 1 ? p.books * 4 : 0);
}

/** The k-means settings of a tensor's codebook (per-channel books run one restart each). */
export function paletteKMeansOptions(options: KMeansMethodOptions): KMeansOptions {
  return { clusters: options.clusters, keepZeros: options.keepZeros, restarts: 3, seed: 1 };
}

export function buildPalette(t: WeightMatrix, options: KMeansMethodOptions): Palette {
  const [rows, cols] = t.shape;
  const codes = new Uint8Array(rows * cols);
  const km = paletteKMeansOptions(options);
  if (!options.perChannel) {
    const book = kmeans1d(t.values, codes, km);
    return { codebook: book, books: 1, bookSize: book.length, codes, bits: paletteIndexBits(book.length) };
  }
  const channels = t.channelAxis === 1 ? cols : rows;
  const length = t.channelAxis === 1 ? rows : cols;
  const books: Float32Array[] = [];
  for (let c = 0; c < channels; c++) {
    const at = t.channelAxis === 1 ? (i: number) => i * cols + c : (i: number) => c * cols + i;
    books.push(kmeans1d(t.values, codes, { ...km, restarts: 1 }, at, length));
  }
  const bookSize = Math.max(...books.map((b) => b.length));
  const codebook = new Float32Array(channels * bookSize);
  books.forEach((b, c) => {
    codebook.set(b, c * bookSize);
    codebook.fill(b[b.length - 1], c * bookSize + b.length, (c + 1) * bookSize);
  });
  return { codebook, books: channels, bookSize, codes, bits: paletteIndexBits(bookSize) };
}

export function decodePalette(t: WeightMatrix, p: Palette): Float32Array {
  const [rows, cols] = t.shape;
  const out = new Float32Array(rows * cols);
  const { codebook, codes, bookSize } = p;
  if (p.books === 1) {
    for (let i = 0; i < out.length; i++) out[i] = codebook[codes[i]];
    return out;
  }
  for (let r = 0; r < rows; r++) {
    for (let c = 0, i = r * cols; c < cols; c++, i++) {
      const book = t.channelAxis === 1 ? c : r;
      out[i] = codebook[book * bookSize + codes[i]];
    }
  }
  return out;
}

/** Indices packed `8 / bits` per byte, the first in the lowest bits. */
export function packIndices(codes: Uint8Array, bits: number): Uint8Array {
  const per = 8 / bits;
  const out = new Uint8Array(Math.ceil(codes.length / per));
  for (let i = 0; i < codes.length; i++) out[(i / per) | 0] |= codes[i] << ((i % per) * bits);
  return out;
}

function rewritePalette(t: WeightMatrix, p: Palette, editor: GraphEditor): void {
  const [rows, cols] = t.shape;
  const n = rows * cols;
  const per = 8 / p.bits;
  const name = (s: string) => editor.uniqueName(`${t.name}_${s}`);
  const node = (op: string, inputs: string[], attrs: Record<string, number | number[] | string> = {}) => {
    const out = name(`${op}_out`);
    editor.addDecodeNodes(makeNode(op, inputs, [out], attrs, { name: name(op) }));
    return out;
  };
  editor.removeInitializer(t.name);
  const packed = packIndices(p.codes, p.bits);
  const indicesName = name('palette_indices');
  const codebookName = name('palette_codebook');
  editor.setInitializer(
    rawTensor(indicesName, DataType.UINT8, p.bits === 8 ? [rows, cols] : [packed.length, 1], packed),
  );
  editor.setInitializer(rawTensor(codebookName, DataType.FLOAT, [p.codebook.length], bytesOf(p.codebook)));
  let idx = indicesName;
  if (p.bits < 8) {
    // value j of a byte sits in bits [j·b, (j+1)·b): shift it to the top, then down to the bottom
    const left = name('shift_left');
    const right = name('shift_right');
    const lefts = Uint8Array.from({ length: per }, (_, j) => 8 - (j + 1) * p.bits);
    editor.setInitializer(rawTensor(left, DataType.UINT8, [1, per], lefts));
    editor.setInitializer(rawTensor(right, DataType.UINT8, [1], Uint8Array.of(8 - p.bits)));
    const up = node('BitShift', [idx, left], { direction: 'LEFT' });
    idx = node('BitShift', [up, right], { direction: 'RIGHT' });
    const flat = name('flat_shape');
    editor.setInitializer(int64Tensor(flat, [1], [packed.length * per]));
    idx = node('Reshape', [idx, flat]);
    if (packed.length * per !== n) {
      const starts = name('slice_start');
      const ends = name('slice_end');
      editor.setInitializer(int64Tensor(starts, [1], [0]));
      editor.setInitializer(int64Tensor(ends, [1], [n]));
      idx = node('Slice', [idx, starts, ends]);
    }
    const shape = name('shape');
    editor.setInitializer(int64Tensor(shape, [2], [rows, cols]));
    idx = node('Reshape', [idx, shape]);
  }
  idx = node('Cast', [idx], { to: DataType.INT32 });
  if (p.books > 1) {
    const offsets = name('palette_offsets');
    const dims = t.channelAxis === 1 ? [1, cols] : [rows, 1];
    const data = Int32Array.from({ length: p.books }, (_, c) => c * p.bookSize);
    editor.setInitializer(rawTensor(offsets, DataType.INT32, dims, bytesOf(data)));
    idx = node('Add', [idx, offsets]);
  }
  editor.requireOpset('', 13);
  editor.addDecodeNodes(
    makeNode('Gather', [codebookName, idx], [t.name], { axis: 0 }, { name: name('Gather') }),
  );
}

/**
 * k-means with one codebook per tensor on parts of the tensor. The codebook is fitted on the whole
 * tensor's histogram, which the parts build in two survey rounds: each part's range and exact zeros
 * (the tensor's: their minimum, maximum and sum), then each part's bin counts over the tensor's bins
 * (summed). Then each part of the rows assigns its weights and decodes them, the bulk of the work,
 * straight into the whole tensor's codes and values.
 */
type FittedBook = { book: Float32Array; assignment: BinAssignment };
/** Round 0 gives the binning, round 1 the codebook. */
type KMeansSurvey = { binning: Binning; zeros: number } | FittedBook;

export const kmeansSplit: KernelSplit<KMeansMethodOptions, Palette, KMeansSurvey> = {
  partAxis(t, options) {
    // per-channel books are sized by the largest book; small tensors cluster their exact values
    if (options.perChannel || !clusteredByHistogram(t.shape[0] * t.shape[1])) return undefined;
    return { axis: 0, unit: 1 };
  },
  survey: {
    rounds: () => 2,
    part(t, part, _options, round, state) {
      const cols = t.shape[1];
      const values = t.values.subarray(part.start * cols, part.end * cols);
      if (round === 0) return rangeAndZeros(values);
      return binCounts(values, (state as { binning: Binning }).binning);
    },
    combine(_t, _parts, options, round, answers, state) {
      if (round === 0) {
        const ranges = answers as ValueRange[];
        const range = ranges.reduce((a, b) => ({
          lo: Math.min(a.lo, b.lo),
          hi: Math.max(a.hi, b.hi),
          zeros: a.zeros + b.zeros,
        }));
        return { binning: histogramBinning(range), zeros: range.zeros };
      }
      const counts = answers as Int32Array[];
      const total = counts[0];
      for (const c of counts.slice(1)) for (let b = 0; b < total.length; b++) total[b] += c[b];
      const { binning, zeros } = state as { binning: Binning; zeros: number };
      return fitFromHistogram(total, binning, zeros, paletteKMeansOptions(options));
    },
  },
  allocate(t, options, fitted, alloc) {
    const { book } = fitted as FittedBook;
    const n = t.shape[0] * t.shape[1];
    const palette: Palette = {
      codebook: book,
      books: 1,
      bookSize: book.length,
      codes: alloc(Uint8Array, n),
      bits: paletteIndexBits(book.length),
    };
    const storedBytes = options.export === 'dense' ? n * 4 : paletteBytes(palette, n);
    return { values: alloc(Float32Array, n), storedBytes, encoding: palette };
  },
  runPart(t, part, _options, fitted, out) {
    const { book, assignment } = fitted as FittedBook;
    // rows only (partAxis): the part is one contiguous run of the tensor
    const cols = t.shape[1];
    const from = part.start * cols;
    const to = part.end * cols;
    const codes = out.encoding!.codes.subarray(from, to);
    assignByBins(t.values.subarray(from, to), codes, assignment);
    const values = out.values;
    for (let i = from; i < to; i++) values[i] = book[codes[i - from]];
  },
};

export const kmeansMethod: CompressionMethod<KMeansMethodOptions, Palette> = {
  id: 'kmeans',
  label: 'k-means weight sharing',
  summary: 'Replace each weight by the nearest of K shared values (a palette), per tensor or per channel.',
  role: 'encode',
  options: [
    { key: 'clusters', label: 'Clusters (K)', type: 'number', min: 2, max: 256, step: 1, default: 16 },
    {
      key: 'perChannel',
      label: 'Codebook per output channel',
      type: 'boolean',
      default: false,
    },
    {
      key: 'keepZeros',
      label: 'Keep pruned zeros',
      type: 'boolean',
      default: true,
      help: 'Exact zeros (from a pruning step) keep a centroid of their own, so sparsity survives.',
    },
    {
      key: 'export',
      label: 'Export as',
      type: 'select',
      choices: [
        { value: 'palette', label: 'Codebook + packed indices (decoded in the graph)' },
        { value: 'dense', label: 'Compatibility: dense float32 weights' },
      ],
      default: 'palette',
    },
  ],
  apply(tensors, options) {
    return tensors.map((t) => {
      const encoding = buildPalette(t, options);
      const values = decodePalette(t, encoding);
      const storedBytes =
        options.export === 'dense' ? values.byteLength : paletteBytes(encoding, values.length);
      return { values, storedBytes, encoding };
    });
  },
  rewrite(t, palette, editor, options) {
    if (options.export === 'dense') {
      const current = editor.getInitializer(t.name);
      editor.setInitializer(
        rawTensor(t.name, DataType.FLOAT, current.dims.map(Number), bytesOf(decodePalette(t, palette))),
      );
      return;
    }
    rewritePalette(t, palette, editor);
  },
  split: kmeansSplit,
};
