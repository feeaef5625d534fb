// Launchers for RMSNorm: forward (saves rstd) and backward (dx, deterministic accumulated dw).
import { grid2d } from "./elementwise.ts";
import { isCpuAdapter } from "./matmul.ts";
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  packParams,
  type ParamArena,
} from "./runtime.ts";

const WG = 256; // WG in rmsnorm.wgsl

/** Invocations per row: the power of two ≥ C/4, between 32 and 256 (override ROW_WG). */
function rowWg(C: number): number {
  let w = 32;
  while (w < 256 && w * 4 < C) w *= 2;
  return w;
}
const ROWS = 64; // ROWS in rmsnorm.wgsl: rows per dw partial
const ROW_LANES = 8; // ROW_LANES in rmsnorm.wgsl: rows per workgroup of the "rows" kernels

/**
 * How forward and backward-dx run: "tree" (one workgroup per row, a barrier tree over its
 * channels: GPUs) or "rows" (one invocation per row, no barriers: CPU adapters, where barriers
 * cost more than a short row's arithmetic; 3–7× faster on lavapipe, bench/RESULTS.md), read as
 * vec4s when C is a multiple of 4 (and `gpu.vec4Forms`).
 */
export type RmsnormVariant = "tree" | "rows";

const variants = new WeakMap<Gpu, RmsnormVariant>();

/** The variant used for `gpu`: "rows" on CPU adapters, "tree" elsewhere, unless set. */
export function rmsnormVariant(gpu: Gpu): RmsnormVariant {
  return variants.get(gpu) ?? (isCpuAdapter(gpu) ? "rows" : "tree");
}

/** Force the variant for `gpu` (null: back to the adapter's default); applies to later launches. */
export function setRmsnormVariant(gpu: Gpu, v: RmsnormVariant | null): void {
  if (v === null) variants.delete(gpu);
  else variants.set(gpu, v);
}

/** The forward or backward-dx pipeline and its grid for T rows of C channels. */
function rowKernel(gpu: Gpu, entry: string, T: number, C: number, consts = {}) {
  if (rmsnormVariant(gpu) === "rows") {
    const four = C % 4 === 0 && gpu.vec4Forms ? "4" : "";
    return {
      kernel: gpu.kernel("rmsnorm", `${entry}_rows${four}`, consts),
      workgroups: grid2d(gpu, Math.ceil(T / ROW_LANES)),
    };
  }
  return {
    kernel: gpu.kernel("rmsnorm", entry, { ...consts, ROW_WG: rowWg(C) }),
    workgroups: grid2d(gpu, T),
  };
}

/** Bytes of the dw workspace of rmsnormBackward: one partial row (C) per block of 64 rows. */
export function rmsnormWorkspaceBytes(T: number, C: number): number {
  return Math.max(1, Math.ceil(T / ROWS)) * C * 4;
}

/** y (T, C) = x · rstd · w, rstd (T) = 1/sqrt(mean_c(x²) + eps) saved for the backward. */
export function rmsnormForward(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    y: BufferSlice;
    rstd: BufferSlice;
    x: BufferSlice;
    w: BufferSlice;
    T: number;
    C: number;
    eps: number;
  },
): Dispatch[] {
  const { y, rstd, x, w, T, C, eps } = args;
  if (T * C === 0) return [];
  const { kernel, workgroups } = rowKernel(gpu, "rmsnorm_forward", T, C);
  const p = arena.alloc(packParams([T, C, eps, 0], [2]));
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: y, 2: rstd, 3: x, 4: w }),
    workgroups,
  }];
}

/**
 * dx (T, C) = (or += when accumulateDx) the input gradient, and dw (C) += Σ_t dy·x·rstd, reduced
 * in a fixed order through `workspace` (rmsnormWorkspaceBytes(T, C)). Three dispatches.
 */
export function rmsnormBackward(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    dx: BufferSlice;
    dw: BufferSlice;
    dy: BufferSlice;
    x: BufferSlice;
    w: BufferSlice;
    rstd: BufferSlice;
    T: number;
    C: number;
    accumulateDx?: boolean;
    workspace: BufferSlice;
  },
): Dispatch[] {
  const { dx, dw, dy, x, w, rstd, T, C, workspace } = args;
  if (T * C === 0) return [];
  const blocks = Math.ceil(T / ROWS);
  const kdx = rowKernel(gpu, "rmsnorm_backward_dx", T, C, {
    ACCUMULATE: args.accumulateDx ? 1 : 0,
  });
  const kpart = gpu.kernel("rmsnorm", "rmsnorm_backward_dw_partial");
  const kred = gpu.kernel("rmsnorm", "rmsnorm_backward_dw_reduce");
  const p = arena.alloc(packParams([T, C, 0, blocks]));
  return [
    {
      kernel: kdx.kernel,
      bindGroup: gpu.bind(kdx.kernel, { 0: p, 1: dx, 2: dy, 3: x, 4: w, 5: rstd }),
      workgroups: kdx.workgroups,
    },
    {
      kernel: kpart,
      bindGroup: gpu.bind(kpart, { 0: p, 1: workspace, 2: dy, 3: x, 4: rstd }),
      workgroups: grid2d(gpu, blocks * Math.ceil(C / WG)),
    },
    {
      kernel: kred,
      bindGroup: gpu.bind(kred, { 0: p, 1: dw, 2: workspace }),
      workgroups: grid2d(gpu, Math.ceil(C / WG)),
    },
  ];
}
