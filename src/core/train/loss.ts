/**
 * The knowledge-distillation loss and its gradient with respect to the student's logits:
 *   loss = α · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α) · CE(z_s, y)
 * (Hinton et al.; T = 2, α = 0.5 by default). KL is averaged over every position the teacher scored,
 * CE over the positions that have a next token (all but the last of each row). Computed in float64.
 */
import { ModelError } from '../errors.ts';

export interface KdLossOptions {
  temperature: number;
  alpha: number;
}

export interface KdLoss {
  /** α·T²·KL + (1−α)·CE */
  loss: number;
  /** KL(teacher ‖ student) at temperature T (before α and T²), nats per position. */
  kl: number;
  /** Cross-entropy of the next token at T = 1, nats per predicted token. */
  ce: number;
  /** d loss / d student logits, same layout as the logits. */
  grad: Float32Array;
}

/**
 * student, teacher: logits [B, L, V]; ids [B, L] (targets are ids shifted by one).
 * teacher may be null: plain next-token fine-tuning (α is then ignored, loss = CE).
 */
export function kdLoss(
  student: Float32Array,
  teacher: Float32Array | null,
  ids: ArrayLike<number>,
  B: number,
  L: number,
  V: number,
  opts: KdLossOptions,
): KdLoss {
  const { temperature: T } = opts;
  const alpha = teacher ? opts.alpha : 0;
  if (!(T > 0) || !(alpha >= 0 && alpha <= 1))
    throw new ModelError('invalid-argument', `Need temperature > 0 and 0 ≤ alpha ≤ 1 (got ${T}, ${alpha}).`);
  if (student.length !== B * L * V || (teacher && teacher.length !== student.length))
    throw new ModelError('invalid-argument', 'Student and teacher logits differ in shape.');
  const grad = new Float32Array(student.length);
  const klRows = B * L;
  const ceRows = B * (L - 1);
  // per row: the softmax of each distribution once (one exp per element each), its log from the
  // normalizer (no exp of a log again): three exps per logit, not six
  const ps = new Float64Array(V);
  const pt = new Float64Array(V);
  let kl = 0;
  let ce = 0;
  const klScale = (alpha * T) / klRows;
  const ceScale = (1 - alpha) / Math.max(1, ceRows);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < L; t++) {
      const row = (b * L + t) * V;
      if (alpha > 0 && teacher) {
        // KL(pt ‖ ps) = Σ pt (log pt − log ps), log p = (z − max)/T − log Z
        const ls = softmaxInto(student, row, V, T, ps);
        const lt = softmaxInto(teacher, row, V, T, pt);
        let k = 0;
        for (let v = 0; v < V; v++) {
          const p = pt[v];
          if (p > 0) k += p * (teacher[row + v] / T - lt - (student[row + v] / T - ls));
          // d(T²·KL)/dz_s = T · (ps − pt)
          grad[row + v] += klScale * (ps[v] - p);
        }
        kl += k;
      }
      if (alpha < 1 && t < L - 1) {
        const target = ids[b * L + t + 1];
        const ls = softmaxInto(student, row, V, 1, ps);
        ce -= student[row + target] - ls;
        for (let v = 0; v < V; v++) grad[row + v] += ceScale * ps[v];
        grad[row + target] -= ceScale;
      }
    }
  kl /= klRows;
  ce /= Math.max(1, ceRows);
  return { loss: alpha * T * T * kl + (1 - alpha) * ce, kl, ce, grad };
}

/**
 * softmax(x[row…row+V] / T) into out (float64); returns the log-normalizer in the scale of x/T:
 * log softmax(x/T)[v] = x[v]/T − (the returned value).
 */
function softmaxInto(x: Float32Array, row: number, V: number, T: number, out: Float64Array): number {
  let max = -Infinity;
  for (let v = 0; v < V; v++) if (x[row + v] > max) max = x[row + v];
  const m = max / T;
  let z = 0;
  for (let v = 0; v < V; v++) z += out[v] = Math.exp(x[row + v] / T - m);
  const inv = 1 / z;
  for (let v = 0; v < V; v++) out[v] *= inv;
  return m + Math.log(z);
}
