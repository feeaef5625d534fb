// Launchers for the SwiGLU activation: out = silu(gate) · up and its backward.
import { gridMax } from "./elementwise.ts";
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
} from "./runtime.ts";

/**
 * Layout of gate and up (and their gradients): T rows of I columns, as separate dense tensors, or
 * as the two halves of one (T, 2I) tensor (`fused`: gate columns 0..I−1, up columns I..2I−1), the
 * output of a fused gate/up projection.
 */
export interface SwigluShape {
  T: number;
  I: number;
  fused?: boolean;
}

const WG = 64; // WG in swiglu.wgsl

function launch(
  gpu: Gpu,
  arena: ParamArena,
  entry: string,
  s: SwigluShape,
  entries: Record<number, BufferSlice>,
): Dispatch[] {
  const { T, I } = s;
  if (T === 0 || I === 0) return [];
  // four columns per invocation through vec4 views when the rows allow (slices are 256-aligned)
  const w = I % 4 === 0 && gpu.vec4Forms ? 4 : 1;
  const cols = I / w;
  const max = gridMax(gpu);
  const gx = Math.ceil(cols / WG), gy = Math.min(T, max), gz = Math.ceil(T / gy);
  if (gx > max || gz > max) throw new GpuError(`T=${T} I=${I} exceeds the dispatch grid`, entry);
  const kernel = gpu.kernel("swiglu", w === 4 ? `${entry}4` : entry);
  const p = arena.alloc(packParams([T, cols, (s.fused ? 2 * I : I) / w, s.fused ? I / w : 0]));
  return [{ kernel, bindGroup: gpu.bind(kernel, { 0: p, ...entries }), workgroups: [gx, gy, gz] }];
}

/**
 * out (T, I) = silu(gate) · up. Fused: gate and up are the same (T, 2I) tensor (pass it as both).
 */
export function swigluForward(
  gpu: Gpu,
  arena: ParamArena,
  args: SwigluShape & { out: BufferSlice; gate: BufferSlice; up: BufferSlice },
): Dispatch[] {
  return launch(gpu, arena, "swiglu_forward", args, { 1: args.out, 2: args.gate, 3: args.up });
}

/**
 * dgate = dout · up · silu'(gate), dup = dout · silu(gate) (both overwritten), dout (T, I).
 * Fused: gate/up and dgate/dup are (T, 2I) tensors (pass each as both of its pair).
 */
export function swigluBackward(
  gpu: Gpu,
  arena: ParamArena,
  args: SwigluShape & {
    dgate: BufferSlice;
    dup: BufferSlice;
    dout: BufferSlice;
    gate: BufferSlice;
    up: BufferSlice;
  },
): Dispatch[] {
  const { dgate, dup, dout, gate, up } = args;
  return launch(gpu, arena, "swiglu_backward", args, { 1: dgate, 2: dup, 3: dout, 4: gate, 5: up });
}
