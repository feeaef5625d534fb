// Launchers for the elementwise kernels: axpy, scaleCopy, fill, copy and the deterministic sumInto.
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
} from "./runtime.ts";

/** Invocations per workgroup of every elementwise kernel (WG in elementwise.wgsl). */
export const ELEMENTWISE_WG = 256;
/** Elements reduced into one partial by sumInto's first pass (SUM_CHUNK in elementwise.wgsl). */
export const SUM_CHUNK = 256 * 64;

let gridMaxOverride: number | null = null;

/**
 * Tests only: cap the grid's x dimension at `max` (null restores the adapter limit), so the 2-D
 * path and the early exit of surplus workgroups run at small shapes.
 */
export function setGridMaxForTesting(max: number | null): void {
  gridMaxOverride = max;
}

/** Workgroups per grid dimension: the adapter's limit, or the cap set for tests. */
export function gridMax(gpu: Gpu): number {
  return gridMaxOverride ?? gpu.limits.maxComputeWorkgroupsPerDimension;
}

/**
 * Workgroup counts [x, y, 1] covering `groups` workgroups on a 2-D grid (x fastest, at most the
 * adapter's maxComputeWorkgroupsPerDimension); kernels compute `wid.x + wid.y * nwg.x` and the
 * few workgroups past `groups` exit early.
 */
export function grid2d(gpu: Gpu, groups: number): [number, number, number] {
  const max = gridMax(gpu);
  if (groups <= 0) return [0, 1, 1];
  const x = Math.min(groups, max);
  const y = Math.ceil(groups / x);
  if (y > max) throw new GpuError(`${groups} workgroups exceed a ${max}² grid`, "grid2d");
  return [x, y, 1];
}

function params(arena: ParamArena, n: number, alpha: number, index = 0): BufferSlice {
  return arena.alloc(packParams([n, alpha, index, 0], [1]));
}

function simple(
  gpu: Gpu,
  arena: ParamArena,
  entry: string,
  y: BufferSlice,
  x: BufferSlice | null,
  n: number,
  alpha: number,
): Dispatch[] {
  if (n === 0) return [];
  // four elements per invocation through vec4 views (slices are 256-aligned), fill excepted
  if (x && n % 4 === 0 && gpu.vec4Forms) {
    entry = `${entry}4`;
    n /= 4;
  }
  const kernel = gpu.kernel("elementwise", entry);
  const entries: Record<number, BufferSlice> = { 0: params(arena, n, alpha), 1: y };
  if (x) entries[2] = x;
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, entries),
    workgroups: grid2d(gpu, Math.ceil(n / ELEMENTWISE_WG)),
  }];
}

/** y (N) += alpha · x (N). */
export function axpy(
  gpu: Gpu,
  arena: ParamArena,
  args: { y: BufferSlice; x: BufferSlice; alpha: number; N: number },
): Dispatch[] {
  return simple(gpu, arena, "axpy", args.y, args.x, args.N, args.alpha);
}

/** y (N) = alpha · x (N). */
export function scaleCopy(
  gpu: Gpu,
  arena: ParamArena,
  args: { y: BufferSlice; x: BufferSlice; alpha: number; N: number },
): Dispatch[] {
  return simple(gpu, arena, "scale_copy", args.y, args.x, args.N, args.alpha);
}

/**
 * y (rows, cols) = the columns [offx, offx + cols) of x's rows (ldx apart), dense: cols, ldx and
 * offx multiples of 4 (vec4 copies).
 */
export function copyRows(
  gpu: Gpu,
  arena: ParamArena,
  args: { y: BufferSlice; x: BufferSlice; rows: number; cols: number; ldx: number; offx: number },
): Dispatch[] {
  const { rows, cols, ldx, offx } = args;
  if (![cols, ldx, offx].every((v) => v % 4 === 0)) {
    throw new GpuError(
      `cols ${cols}, ldx ${ldx}, offx ${offx} must be multiples of 4`,
      "copy_rows4",
    );
  }
  const n = rows * (cols / 4);
  if (n === 0) return [];
  const kernel = gpu.kernel("elementwise", "copy_rows4");
  const p = arena.alloc(packParams([rows, cols / 4, ldx / 4, offx / 4]));
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: args.y, 2: args.x }),
    workgroups: grid2d(gpu, Math.ceil(n / ELEMENTWISE_WG)),
  }];
}

/** y (N) = x (N). */
export function copy(
  gpu: Gpu,
  arena: ParamArena,
  args: { y: BufferSlice; x: BufferSlice; N: number },
): Dispatch[] {
  return simple(gpu, arena, "copy", args.y, args.x, args.N, 0);
}

/** y (N) = value (f32), e.g. to zero a gradient inside a compute pass. */
export function fill(
  gpu: Gpu,
  arena: ParamArena,
  args: { y: BufferSlice; value: number; N: number },
): Dispatch[] {
  return simple(gpu, arena, "fill", args.y, null, args.N, args.value);
}

/** Bytes of the workspace sumInto needs for N elements (one f32 partial per SUM_CHUNK). */
export function sumIntoWorkspaceBytes(N: number): number {
  return Math.max(1, Math.ceil(N / SUM_CHUNK)) * 4;
}

/**
 * acc[index] += Σ x (N), in a fixed order: per-workgroup partials of SUM_CHUNK elements into
 * `workspace` (sumIntoWorkspaceBytes(N)), then one workgroup adds them up. Deterministic.
 */
export function sumInto(
  gpu: Gpu,
  arena: ParamArena,
  args: { acc: BufferSlice; x: BufferSlice; N: number; index?: number; workspace: BufferSlice },
): Dispatch[] {
  const { acc, x, N, workspace } = args;
  if (N === 0) return [];
  const parts = Math.ceil(N / SUM_CHUNK);
  const k1 = gpu.kernel("elementwise", "sum_partials");
  const k2 = gpu.kernel("elementwise", "sum_finalize");
  return [
    {
      kernel: k1,
      bindGroup: gpu.bind(k1, { 0: params(arena, N, 0), 1: workspace, 2: x }),
      workgroups: grid2d(gpu, parts),
    },
    {
      kernel: k2,
      bindGroup: gpu.bind(k2, {
        0: params(arena, parts, 0, args.index ?? 0),
        1: acc,
        2: workspace,
      }),
      workgroups: [1, 1, 1],
    },
  ];
}
