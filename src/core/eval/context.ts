/**
 * How many positions a model can read: what its config.json declares, else the row count of its
 * learned position-embedding table (GPT-2's wpe). A window longer than that makes onnxruntime fail
 * deep inside a Gather, so the studio checks a requested length against it first.
 */
import { ModelError } from '../errors.ts';
import { graphIndex } from '../onnx/graphs.ts';
import type { GraphProto } from '../onnx/proto.ts';
import { contextFromConfig } from './config.ts';

export interface ModelContext {
  /** The most positions the model reads. */
  positions: number;
  /** Where that number comes from, for messages: "config.json's n_positions", "the position table 'wpe'". */
  source: string;
}

const CONFIG_KEYS = ['n_positions', 'max_position_embeddings', 'n_ctx', 'seq_len'];

/** The context config.json declares, with the key it came from. */
export function configModelContext(config: unknown): ModelContext | undefined {
  const positions = contextFromConfig(config);
  if (positions === undefined) return undefined;
  const c = config as Record<string, unknown>;
  const key = CONFIG_KEYS.find((k) => c[k] !== undefined) ?? 'context';
  return { positions, source: `config.json's ${key}` };
}

/**
 * The learned position-embedding table: a 2-D weight gathered along axis 0 by indices that are
 * neither the token ids (that is the token embedding) nor a constant (a fixed selection of rows),
 * wherever the graph or one of its subgraphs reads it. Its row count bounds the positions.
 */
export function positionTableContext(graph: GraphProto): ModelContext | undefined {
  const index = graphIndex(graph);
  const inputs = new Set((graph.input ?? []).map((i) => i.name));
  let best: ModelContext | undefined;
  for (const scope of index.scopes) {
    const constants = new Set([
      ...(scope.graph.initializer ?? []).map((t) => t.name),
      ...(scope.graph.node ?? []).filter((n) => n.op_type === 'Constant').flatMap((n) => n.output ?? []),
    ]);
    for (const node of scope.graph.node ?? []) {
      if (node.op_type !== 'Gather' || (node.domain && node.domain !== 'ai.onnx')) continue;
      const axis = node.attribute?.find((a) => a.name === 'axis');
      if (axis && Number(axis.i ?? 0) !== 0) continue;
      const [data, indices] = node.input ?? [];
      if (!indices || indices === 'input_ids' || constants.has(indices)) continue;
      const label = scope.label ? `${scope.label}/${data}` : data;
      const weight = index.weight(label) ?? index.weight(data);
      if (!weight || weight.tensor.dims.length !== 2) continue;
      // token ids reach the token table straight from the graph's input; other inputs (position_ids) are positions
      if (inputs.has(indices) && !/position/i.test(indices)) continue;
      const rows = Number(weight.tensor.dims[0]);
      if (rows > 1 && (best === undefined || rows < best.positions))
        best = { positions: rows, source: `the rows of its position-embedding table '${weight.name}'` };
    }
  }
  return best;
}

/** The model's context: config.json's when it declares one, else the position table's, else undefined. */
export function modelContext(graph: GraphProto, config?: unknown): ModelContext | undefined {
  return configModelContext(config) ?? positionTableContext(graph);
}

/**
 * Refuses a window longer than the model reads, naming the limit and where it comes from, before
 * onnxruntime fails on an out-of-range Gather index. `what` names the setting ("--ctx 256").
 */
export function checkContext(requested: number, context: ModelContext | undefined, what: string): void {
  if (context && requested > context.positions)
    throw new ModelError(
      'invalid-argument',
      `${what} is longer than the model's context: it reads at most ${context.positions} positions (${context.source}). ` +
        `Use ${context.positions} or less.`,
    );
}
