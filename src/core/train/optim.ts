/**
 * AdamW (Loshchilov & Hutter: decoupled weight decay) and the learning-rate schedules, as PyTorch's
 * torch.optim.AdamW computes them (bias-corrected moments, decay lr·λ·w applied before the step).
 * Weights whose zeros a pruning step made keep them: `masks` re-zeroes those entries after each step,
 * so a 2:4 or 50 % sparse student stays exactly as sparse as it came.
 */

export type Schedule = 'cosine' | 'linear' | 'constant';

export interface ScheduleOptions {
  lr: number;
  steps: number;
  warmup: number;
  schedule: Schedule;
}

/** The learning rate of step s (0-based): linear warm-up to lr, then cosine or linear decay to 0, or flat. */
export function learningRate(s: number, o: ScheduleOptions): number {
  if (s < o.warmup) return (o.lr * (s + 1)) / o.warmup;
  if (o.schedule === 'constant') return o.lr;
  const span = Math.max(1, o.steps - o.warmup);
  const progress = Math.min(1, (s - o.warmup) / span);
  return o.schedule === 'linear' ? o.lr * (1 - progress) : o.lr * 0.5 * (1 + Math.cos(Math.PI * progress));
}

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay λ (PyTorch's default 0.01), on matrices only (not norms, biases). */
  weightDecay?: number;
}

export interface AdamWState {
  step: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export class AdamW {
  state: AdamWState = { step: 0, m: new Map(), v: new Map() };
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly eps: number;
  private readonly weightDecay: number;

  constructor(opts: AdamWOptions = {}) {
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
  }

  /** A copy of the state (step count and moments), for a checkpoint. */
  snapshot(): AdamWState {
    const copy = (m: Map<string, Float32Array>) => new Map([...m].map(([k, v]) => [k, Float32Array.from(v)]));
    return { step: this.state.step, m: copy(this.state.m), v: copy(this.state.v) };
  }

  /** Continues from a snapshot (copied, so the snapshot stays as it was). */
  load(state: AdamWState): void {
    const copy = (m: Map<string, Float32Array>) => new Map([...m].map(([k, v]) => [k, Float32Array.from(v)]));
    this.state = { step: state.step, m: copy(state.m), v: copy(state.v) };
  }

  /** One update of every weight that has a gradient; `rank` tells matrices (decayed) from vectors. */
  step(
    params: Map<string, Float32Array>,
    grads: Map<string, Float32Array>,
    lr: number,
    rank: (name: string) => number,
    masks?: Map<string, Uint8Array>,
  ): void {
    const s = ++this.state.step;
    const c1 = 1 - Math.pow(this.beta1, s);
    const c2 = 1 - Math.pow(this.beta2, s);
    for (const [name, w] of params) {
      const g = grads.get(name);
      if (!g) continue;
      let m = this.state.m.get(name);
      let v = this.state.v.get(name);
      if (!m || !v) {
        this.state.m.set(name, (m = new Float32Array(w.length)));
        this.state.v.set(name, (v = new Float32Array(w.length)));
      }
      const decay = rank(name) >= 2 ? 1 - lr * this.weightDecay : 1;
      const { beta1: b1, beta2: b2, eps } = this;
      for (let i = 0; i < w.length; i++) {
        const gi = g[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        w[i] = w[i] * decay - (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + eps);
      }
      const mask = masks?.get(name);
      if (mask) for (let i = 0; i < w.length; i++) if (!mask[i]) w[i] = 0;
    }
  }
}

/**
 * Scales every gradient by min(1, maxNorm / (‖g‖ + 1e-6)), ‖g‖ the L2 norm of all of them together, as
 * torch.nn.utils.clip_grad_norm_ does; returns ‖g‖ before clipping. A few steps with outsized gradients
 * (the first steps after pruning half of every weight) then move the weights no further than the rest.
 */
export function clipGradNorm(grads: Map<string, Float32Array>, maxNorm: number): number {
  let sq = 0;
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  const norm = Math.sqrt(sq);
  const scale = maxNorm / (norm + 1e-6);
  if (scale < 1) for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] *= scale;
  return norm;
}
