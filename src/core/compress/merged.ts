/**
 * Hugging Face "merged" decoders (Optimum's decoder_model_merged.onnx): one `If` on the boolean input
 * `use_cache_branch` whose then-branch appends to `past_key_values.*` and whose else-branch runs
 * without a cache, both reading the weights the main graph holds. Perplexity and calibration feed
 * `use_cache_branch = false` and an empty cache, so what runs is the else-branch: this module gives
 * that branch as a plain graph, for the activation capture, which adds graph outputs and so cannot
 * reach inside a branch. Weights keep the names the merged model's candidates have (a branch's own
 * weight is renamed to its path, `If_0/else_branch/w`), so the statistics apply to the merged model.
 */
import { graphIndex } from '../onnx/graphs.ts';
import type { OnnxModel } from '../onnx/model.ts';
import type { GraphProto, NodeProto } from '../onnx/proto.ts';

export const USE_CACHE_BRANCH = 'use_cache_branch';

/** The `If` of a merged decoder: in the main graph, on the graph input `use_cache_branch`. */
export function mergedDecoderIf(graph: GraphProto): NodeProto | undefined {
  if (!graph.input.some((i) => i.name === USE_CACHE_BRANCH)) return undefined;
  return graph.node.find(
    (n) =>
      n.op_type === 'If' &&
      !n.domain &&
      n.input[0] === USE_CACHE_BRANCH &&
      n.attribute?.some((a) => a.name === 'else_branch' && a.g),
  );
}

/**
 * The model with its merged-decoder `If` replaced by the no-cache branch's nodes (outputs wired to
 * the If's by Identity nodes), or the model itself when it is not a merged decoder. The graph inputs
 * stay as they are: a session fed `use_cache_branch` and an empty cache computes what the merged
 * model computes with them.
 */
export function noCacheView(model: OnnxModel): OnnxModel {
  const ifNode = mergedDecoderIf(model.graph);
  if (!ifNode) return model;
  const branch = ifNode.attribute?.find((a) => a.name === 'else_branch')?.g as GraphProto;
  const label = graphIndex(model.graph).scopeOfGraph(branch)?.label ?? 'else_branch';
  // the branch's own names are renamed where they could meet the main graph's: its initializers
  // (to the merged model's weight names) and its node outputs
  const rename = new Map<string, string>();
  for (const t of branch.initializer) rename.set(t.name, `${label}/${t.name}`);
  for (const n of branch.node) for (const o of n.output) if (o) rename.set(o, `${label}/${o}`);
  const name = (x: string) => rename.get(x) ?? x;
  const nodes: NodeProto[] = branch.node.map((n) => ({
    ...n,
    ...(n.name ? { name: `${label}/${n.name}` } : {}),
    input: n.input.map((x) => (x ? name(x) : x)),
    output: n.output.map((x) => (x ? name(x) : x)),
  }));
  branch.output.forEach((o, i) => {
    const target = ifNode.output[i];
    if (target)
      nodes.push({ op_type: 'Identity', input: [name(o.name)], output: [target], name: `${label}/out_${i}` });
  });
  const at = model.graph.node.indexOf(ifNode);
  const graph: GraphProto = {
    ...model.graph,
    node: [...model.graph.node.slice(0, at), ...nodes, ...model.graph.node.slice(at + 1)],
    initializer: [
      ...model.graph.initializer,
      ...branch.initializer.map((t) => ({ ...t, name: name(t.name) })),
    ],
  };
  return { ...model, graph, proto: { ...model.proto, graph } };
}
