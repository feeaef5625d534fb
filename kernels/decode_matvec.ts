// Launchers of the decode matrix-vector products for one token: y = [y +] alpha · (W·x + b), fused SwiGLU.
import { grid2d } from "./elementwise.ts";
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
} from "./runtime.ts";

const WG = 256; // WG in decode_matvec.wgsl

/**
 * Threads per row: enough that each sums about 8 loads of W (32 at most, the coalescing width),
 * so short rows do not pay a deep reduction for little work.
 */
export function matvecLanes(loadsPerRow: number): number {
  let lanes = 1;
  while (lanes < 32 && lanes * 8 < loadsPerRow) lanes *= 2;
  return lanes;
}

/**
 * y (N) = alpha · (W (N, K) · x (K) + b) — or y += that when `accumulate` — for a single row, as
 * a memory-bound GEMV (the M = 1 case of matmulForward). Uses vec4 loads when K is a multiple of
 * 4 and every slice offset is 16-byte aligned. Deterministic (fixed reduction order).
 */
export function matvec(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    y: BufferSlice;
    x: BufferSlice;
    w: BufferSlice;
    bias?: BufferSlice;
    N: number;
    K: number;
    alpha?: number;
    accumulate?: boolean;
    /** Write y[yOffset + n] (elements): a row shard of W fills its part of a longer y. */
    yOffset?: number;
  },
): Dispatch[] {
  const { y, x, w, bias, N, K } = args;
  if (!(N >= 1 && K >= 1)) throw new GpuError(`bad shape N=${N} K=${K}`, "decode_matvec");
  const aligned = (s: BufferSlice) => (s.offset ?? 0) % 16 === 0;
  const vec4 = K % 4 === 0 && aligned(x) && aligned(w);
  const entry = `matvec${vec4 ? "4" : ""}${bias ? "_bias" : ""}`;
  const lanes = matvecLanes(vec4 ? K / 4 : K);
  const kernel = gpu.kernel("decode_matvec", entry, {
    ACCUMULATE: args.accumulate ? 1 : 0,
    LANES: lanes,
  });
  const p = arena.alloc(packParams([N, K, args.alpha ?? 1, args.yOffset ?? 0], [2]));
  const entries: Record<number, BufferSlice> = { 0: p, 1: y, 2: x, 3: w };
  if (bias) entries[4] = bias;
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, entries),
    workgroups: grid2d(gpu, Math.ceil(N / (WG / lanes))),
  }];
}

/**
 * act (N) = silu(Wg·x) · (Wu·x) with gate and up weights (N, K) and x (K): the SwiGLU MLP input of
 * one token in one dispatch (what two matvecs and swigluForward compute).
 */
export function matvecSwiglu(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    y: BufferSlice;
    x: BufferSlice;
    wGate: BufferSlice;
    wUp: BufferSlice;
    N: number;
    K: number;
  },
): Dispatch[] {
  const { y, x, wGate, wUp, N, K } = args;
  if (!(N >= 1 && K >= 1)) throw new GpuError(`bad shape N=${N} K=${K}`, "decode_matvec");
  const aligned = (s: BufferSlice) => (s.offset ?? 0) % 16 === 0;
  const vec4 = K % 4 === 0 && aligned(x) && aligned(wGate) && aligned(wUp);
  const lanes = matvecLanes(vec4 ? K / 4 : K);
  const kernel = gpu.kernel("decode_matvec", vec4 ? "matvec4_swiglu" : "matvec_swiglu", {
    LANES: lanes,
  });
  const p = arena.alloc(packParams([N, K, 1, 0], [2]));
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: y, 2: x, 3: wGate, 4: wUp }),
    workgroups: grid2d(gpu, Math.ceil(N / (WG / lanes))),
  }];
}
