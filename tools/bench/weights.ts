/** Weight sets the speed benches share. */

export interface WeightSet {
  name: string;
  /** the set the k-means target (≥ 100× sklearn) is defined on */
  kmeansTarget?: boolean;
  tensors: { name: string; shape: [number, number]; values: Float32Array }[];
}

// GPT-2 small: 12 blocks of c_attn [768, 2304], attn c_proj [768, 768], c_fc [768, 3072], mlp c_proj [3072, 768];
// wte [50257, 768], wpe [1024, 768]. Normal(0, 0.02) like GPT-2's initialisation (Box–Muller, seeded).
export function gpt2SmallSynthetic(): WeightSet {
  const shapes: [string, [number, number]][] = [
    ['wte', [50257, 768]],
    ['wpe', [1024, 768]],
  ];
  for (let i = 0; i < 12; i++) {
    shapes.push([`h.${i}.attn.c_attn`, [768, 2304]], [`h.${i}.attn.c_proj`, [768, 768]]);
    shapes.push([`h.${i}.mlp.c_fc`, [768, 3072]], [`h.${i}.mlp.c_proj`, [3072, 768]]);
  }
  let s = 12345;
  const uniform = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  const tensors = shapes.map(([name, shape]) => {
    const n = shape[0] * shape[1];
    const values = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const r = Math.sqrt(-2 * Math.log(uniform())) * 0.02;
      const a = 2 * Math.PI * uniform();
      values[i] = r * Math.cos(a);
      if (i + 1 < n) values[i + 1] = r * Math.sin(a);
    }
    return { name, shape, values };
  });
  return { name: 'GPT-2-small-shaped synthetic weights (124 M parameters)', tensors, kmeansTarget: true };
}
