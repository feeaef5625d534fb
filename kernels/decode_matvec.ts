// Launcher of the decode matrix-vector product y = [y +] alpha · (W·x + b) for one token.
import { grid2d } from "./elementwise.ts";
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
} from "./runtime.ts";

const ROWS = 8; // ROWS in decode_matvec.wgsl

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
  },
): Dispatch[] {
  const { y, x, w, bias, N, K } = args;
  if (!(N >= 1 && K >= 1)) throw new GpuError(`bad shape N=${N} K=${K}`, "decode_matvec");
  const aligned = (s: BufferSlice) => (s.offset ?? 0) % 16 === 0;
  const vec4 = K % 4 === 0 && aligned(x) && aligned(w);
  const entry = `matvec${vec4 ? "4" : ""}${bias ? "_bias" : ""}`;
  const kernel = gpu.kernel("decode_matvec", entry, { ACCUMULATE: args.accumulate ? 1 : 0 });
  const p = arena.alloc(packParams([N, K, args.alpha ?? 1, 0], [2]));
  const entries: Record<number, BufferSlice> = { 0: p, 1: y, 2: x, 3: w };
  if (bias) entries[4] = bias;
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, entries),
    workgroups: grid2d(gpu, Math.ceil(N / ROWS)),
  }];
}
