// Launchers for AdamW with global gradient-norm clipping (fp32 master weights and moments).
import { ELEMENTWISE_WG, grid2d } from "./elementwise.ts";
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
} from "./runtime.ts";

/** f32 slots of the per-step hyper-parameter buffer `hp` of adamwUpdate. */
export const ADAMW_HP_FLOATS = 8;
/** f32 slots of the stats buffer: [‖g‖, clip scale, finite flag, unused]. */
export const GRAD_STATS_FLOATS = 4;
/** Gradient elements summed into one partial by gradNormSquares (NORM_CHUNK in adamw.wgsl). */
export const GRAD_NORM_CHUNK = 256 * 64;

/** AdamW settings of one parameter group. */
export interface AdamwSettings {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/**
 * The `hp` buffer contents for optimizer step `step` (1-based, as torch counts):
 * [lr, β1, β2, eps, weightDecay, 1 − β1^step, 1 − β2^step, 0].
 */
export function adamwHyper(step: number, s: AdamwSettings): Float32Array {
  if (!(step >= 1)) throw new Error(`adamwHyper: step must be ≥ 1 (got ${step})`);
  return new Float32Array([
    s.lr,
    s.beta1,
    s.beta2,
    s.eps,
    s.weightDecay,
    1 - s.beta1 ** step,
    1 - s.beta2 ** step,
    0,
  ]);
}

/** Partial slots gradNormSquares uses for a tensor of N elements. */
export function gradNormPartialCount(N: number): number {
  return Math.ceil(N / GRAD_NORM_CHUNK);
}

/**
 * partials[partialOffset + k] = Σ grad² over the k-th chunk of GRAD_NORM_CHUNK elements of one
 * gradient tensor (N), for k < gradNormPartialCount(N). Tensors use disjoint slot ranges.
 */
export function gradNormSquares(
  gpu: Gpu,
  arena: ParamArena,
  args: { partials: BufferSlice; grad: BufferSlice; N: number; partialOffset: number },
): Dispatch[] {
  const { partials, grad, N, partialOffset } = args;
  if (N === 0) return [];
  const kernel = gpu.kernel("adamw", "grad_norm_squares");
  const p = arena.alloc(packParams([N, partialOffset, 0, 0]));
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: partials, 2: grad }),
    workgroups: grid2d(gpu, gradNormPartialCount(N)),
  }];
}

/**
 * Reduce `count` partials in a fixed order (Kahan per invocation, then a pairwise tree) and write
 * stats[0] = ‖g‖ (before clipping), stats[1] = min(1, maxNorm / (‖g‖ + 1e-6)) (1 when
 * maxNorm ≤ 0 or the norm is not finite), stats[2] = 1 if ‖g‖ is finite else 0.
 */
export function gradNormFinalize(
  gpu: Gpu,
  arena: ParamArena,
  args: { stats: BufferSlice; partials: BufferSlice; count: number; maxNorm: number },
): Dispatch[] {
  const { stats, partials, count, maxNorm } = args;
  const kernel = gpu.kernel("adamw", "grad_norm_finalize");
  const p = arena.alloc(packParams([count, 0, maxNorm, 0], [2]));
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: stats, 2: partials }),
    workgroups: [1, 1, 1],
  }];
}

/**
 * One AdamW step on param, m, v (N), torch.optim.AdamW semantics, with g = grad · stats[1]; hp
 * holds adamwHyper(step, ...) (rewritten every step). Skipped (param, m, v untouched) when
 * stats[2] == 0. With zeroGrad, grad is set to 0 after it is read (also on a skipped step).
 */
export function adamwUpdate(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    param: BufferSlice;
    grad: BufferSlice;
    m: BufferSlice;
    v: BufferSlice;
    stats: BufferSlice;
    hp: BufferSlice;
    N: number;
    zeroGrad?: boolean;
    /** Four elements per invocation (default: when N % 4 = 0 and the offsets are 16-byte aligned). */
    vec4?: boolean;
  },
): Dispatch[] {
  const { param, grad, m, v, stats, hp, N } = args;
  if (N === 0) return [];
  const aligned = [param, grad, m, v].every((s) => (s.offset ?? 0) % 16 === 0);
  const vec4 = args.vec4 ?? (N % 4 === 0 && aligned);
  if (vec4 && !(N % 4 === 0 && aligned)) {
    throw new GpuError(`vec4 needs N % 4 = 0 and 16-byte offsets (N = ${N})`, "adamw_update4");
  }
  const entry = vec4 ? "adamw_update4" : "adamw_update";
  const kernel = gpu.kernel("adamw", entry, { ZERO_GRAD: args.zeroGrad ? 1 : 0 });
  const n = vec4 ? N / 4 : N;
  const p = arena.alloc(packParams([n, 0, 0, 0]));
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: param, 2: m, 3: v, 4: grad, 5: stats, 6: hp }),
    workgroups: grid2d(gpu, Math.ceil(n / ELEMENTWISE_WG)),
  }];
}
