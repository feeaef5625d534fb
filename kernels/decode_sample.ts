// Launcher of the GPU next-token choice (greedy argmax or temperature sampling) and the step-buffer layout.
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
} from "./runtime.ts";

/** Bytes of the per-step storage buffer: [pos u32, u f32, inv_temp f32, 0]. */
export const STEP_BYTES = 16;

/**
 * The step buffer contents for one decode step: position of the input token, the uniform draw
 * `u` in [0, 1) and the temperature (≤ 0: greedy).
 */
export function stepData(pos: number, u: number, temperature: number): Uint32Array {
  const out = new Uint32Array(4);
  const f = new Float32Array(out.buffer);
  out[0] = pos;
  f[1] = u;
  f[2] = temperature > 0 ? 1 / temperature : 0;
  return out;
}

/**
 * Pick the next token from logits (V): the first argmax when the step's inv_temp ≤ 0, else a draw
 * from softmax(logitScale · logits / temperature) by inverse CDF with the step's u. Writes it to
 * ids[0] and to ring[pos + 1] (ring of ringLen u32, skipped when past the end). One workgroup.
 */
export function sampleToken(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    ids: BufferSlice;
    ring: BufferSlice;
    logits: BufferSlice;
    step: BufferSlice;
    V: number;
    ringLen: number;
    logitScale?: number;
  },
): Dispatch[] {
  if (!(args.V >= 1)) throw new GpuError(`bad vocabulary size ${args.V}`, "decode_sample");
  const kernel = gpu.kernel("decode_sample", "sample_token");
  const p = arena.alloc(packParams([args.V, args.ringLen, args.logitScale ?? 1, 0], [2]));
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, {
      0: p,
      1: args.ids,
      2: args.ring,
      3: args.logits,
      4: args.step,
    }),
    workgroups: [1, 1, 1],
  }];
}
