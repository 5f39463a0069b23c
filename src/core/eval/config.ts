/**
 * The context length a model's config.json declares (GPT-2's n_positions, Llama's
 * max_position_embeddings, older n_ctx, llama2.c's seq_len), or undefined when it declares none.
 */
export function contextFromConfig(config: unknown): number | undefined {
  if (typeof config !== 'object' || config === null) return undefined;
  const c = config as Record<string, unknown>;
  const n = c.n_positions ?? c.max_position_embeddings ?? c.n_ctx ?? c.seq_len;
  return Number.isInteger(n) && (n as number) > 1 ? (n as number) : undefined;
}
