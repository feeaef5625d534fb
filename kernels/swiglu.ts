// Launchers for the SwiGLU activation: out = silu(gate) · up and its backward.
import { ELEMENTWISE_WG, grid2d } from "./elementwise.ts";
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  packParams,
  type ParamArena,
} from "./runtime.ts";

/** out (N) = silu(gate) · up, with gate, up (N) (N = T · intermediate size). */
export function swigluForward(
  gpu: Gpu,
  arena: ParamArena,
  args: { out: BufferSlice; gate: BufferSlice; up: BufferSlice; N: number },
): Dispatch[] {
  const { out, gate, up, N } = args;
  if (N === 0) return [];
  const kernel = gpu.kernel("swiglu", "swiglu_forward");
  const p = arena.alloc(packParams([N, 0, 0, 0]));
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: out, 2: gate, 3: up }),
    workgroups: grid2d(gpu, Math.ceil(N / ELEMENTWISE_WG)),
  }];
}

/** dgate (N) = dout · up · silu'(gate), dup (N) = dout · silu(gate) (both overwritten). */
export function swigluBackward(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    dgate: BufferSlice;
    dup: BufferSlice;
    dout: BufferSlice;
    gate: BufferSlice;
    up: BufferSlice;
    N: number;
  },
): Dispatch[] {
  const { dgate, dup, dout, gate, up, N } = args;
  if (N === 0) return [];
  const kernel = gpu.kernel("swiglu", "swiglu_backward");
  const p = arena.alloc(packParams([N, 0, 0, 0]));
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: dgate, 2: dup, 3: dout, 4: gate, 5: up }),
    workgroups: grid2d(gpu, Math.ceil(N / ELEMENTWISE_WG)),
  }];
}
