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
/** f32 slots of the stats buffer: [‖g‖, AdamW's gradient multiplier, finite flag, loss scale]. */
export const GRAD_STATS_FLOATS = 4;
/**
 * f32 slots of a loss-scale state buffer: [scale S, finite steps in a row, growth interval, AdamW
 * updates applied].
 */
export const LOSS_SCALE_FLOATS = 4;

/** Initial contents of a loss-scale state: scale `init`, doubled every `growthInterval` steps. */
export function lossScaleState(init: number, growthInterval: number): Float32Array {
  if (!(init > 0) || Math.log2(init) % 1 !== 0) {
    throw new GpuError(`loss scale must be a power of two, got ${init}`, "grad_norm_finalize");
  }
  return new Float32Array([init, 0, growthInterval, 0]);
}

const fixedScales = new WeakMap<Gpu, GPUBuffer>();

/** A loss-scale state fixed at 1 (unscaled training), shared per device and never written. */
export function fixedLossScale(gpu: Gpu): GPUBuffer {
  let b = fixedScales.get(gpu);
  if (!b) {
    // 32 bytes: also bound (never written) as the hyper-parameters of an unscaled finalize
    b = gpu.bufferFrom("adamw.fixedLossScale", new Float32Array([1, 0, 0, 0, 0, 0, 0, 0]));
    fixedScales.set(gpu, b);
  }
  return b;
}
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
 * [lr, β1, β2, eps, weightDecay, 1 − β1^step, 1 − β2^step, step].
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
    step,
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
 * Reduce `count` partials in a fixed order (Kahan per invocation, then a pairwise tree) of
 * gradients scaled by the loss scale S = lossScale[0] (default: fixed at 1) and write
 * stats[0] = ‖g‖ / S (before clipping), stats[1] = clip / S with clip = min(1, maxNorm /
 * (‖g‖ / S + 1e-6)) (1 when maxNorm ≤ 0 or the norm is not finite), stats[2] = 1 if ‖g‖ is finite
 * else 0, stats[3] = S. With `dynamic`, S is then halved after a non-finite norm and doubled after
 * lossScale[2] finite steps in a row (lossScale[1] counts them).
 */
export function gradNormFinalize(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    stats: BufferSlice;
    partials: BufferSlice;
    count: number;
    maxNorm: number;
    lossScale?: GPUBuffer | BufferSlice;
    dynamic?: boolean;
    /** The step's AdamW hyper-parameters: a dynamic finalize rewrites their bias corrections. */
    hp?: GPUBuffer | BufferSlice;
  },
): Dispatch[] {
  const { stats, partials, count, maxNorm } = args;
  if (args.dynamic && !(args.lossScale && args.hp)) {
    throw new GpuError(
      "a dynamic loss scale needs its state buffer and the AdamW hyper-parameters",
      "grad_norm_finalize",
    );
  }
  const kernel = gpu.kernel("adamw", "grad_norm_finalize");
  const p = arena.alloc(packParams([count, args.dynamic ? 1 : 0, maxNorm, 0], [2]));
  const scale = args.lossScale ?? fixedLossScale(gpu);
  // unscaled: never written, so the shared fixed state serves as a placeholder too
  const hp = args.hp ?? fixedLossScale(gpu);
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: stats, 2: partials, 3: scale, 4: hp }),
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
