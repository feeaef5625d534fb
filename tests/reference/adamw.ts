// Plain f64 reference of gradient-norm clipping and torch.optim.AdamW (single-tensor path), tests only.

/** Global L2 norm over several gradient tensors (torch.nn.utils.clip_grad_norm_'s total_norm). */
export function gradNormRef(grads: ArrayLike<number>[]): number {
  let s = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  return Math.sqrt(s);
}

/** clip_grad_norm_'s factor: min(1, maxNorm / (norm + 1e-6)); 1 when maxNorm ≤ 0 (no clipping). */
export function clipScaleRef(norm: number, maxNorm: number): number {
  return maxNorm > 0 ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
}

/** AdamW settings (torch names: lr, betas, eps, weight_decay). */
export interface AdamwRefSettings {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** Parameter and moments of one tensor, with the step counter (0 before the first step). */
export interface AdamwRefState {
  param: Float64Array;
  m: Float64Array;
  v: Float64Array;
  step: number;
}

/**
 * One torch.optim.AdamW step (foreach=False) on `state` in place, in f64, with the gradient
 * scaled by `clip` first (as clip_grad_norm_ does):
 *   step += 1; param *= 1 − lr·wd; m.lerp_(g, 1 − β1); v = β2·v + (1 − β2)·g²;
 *   param −= lr / (1 − β1^step) · m / (sqrt(v) / sqrt(1 − β2^step) + eps).
 */
export function adamwStepRef(
  state: AdamwRefState,
  grad: ArrayLike<number>,
  s: AdamwRefSettings,
  clip = 1,
): void {
  state.step += 1;
  const bc1 = 1 - s.beta1 ** state.step;
  const bc2 = 1 - s.beta2 ** state.step;
  const stepSize = s.lr / bc1;
  const bc2Sqrt = Math.sqrt(bc2);
  const { param, m, v } = state;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i] * clip;
    param[i] *= 1 - s.lr * s.weightDecay;
    m[i] += (1 - s.beta1) * (g - m[i]);
    v[i] = s.beta2 * v[i] + (1 - s.beta2) * g * g;
    param[i] -= stepSize * m[i] / (Math.sqrt(v[i]) / bc2Sqrt + s.eps);
  }
}
