// Launchers for packed varlen causal attention: forward (saves LSE) and backward (delta, dQ, dK/dV).
import {
  alignUp,
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
} from "./runtime.ts";

/** Largest head dim (the kernels take any D in 1..128). */
export const ATTENTION_MAX_HEAD_DIM = 128;

/** Buffers and shape of the attention forward. */
export interface AttentionForwardArgs {
  o: BufferSlice; // (T, Hq, D) output
  lse: BufferSlice; // (Hq, T) log-sum-exp of the scaled scores, saved for the backward
  q: BufferSlice; // (T, Hq, D)
  k: BufferSlice; // (T, Hkv, D)
  v: BufferSlice; // (T, Hkv, D)
  seqStart: BufferSlice; // (T) u32: first token of the token's sample
  seqEnd: BufferSlice; // (T) u32: one past the last token of the token's sample
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale: number; // usually 1/sqrt(D)
}

/** Buffers and shape of the attention backward (dq, dk, dv are written, not accumulated). */
export interface AttentionBackwardArgs {
  dq: BufferSlice; // (T, Hq, D)
  dk: BufferSlice; // (T, Hkv, D)
  dv: BufferSlice; // (T, Hkv, D)
  dout: BufferSlice; // (T, Hq, D)
  o: BufferSlice; // (T, Hq, D) forward output
  lse: BufferSlice; // (Hq, T) from the forward
  q: BufferSlice; // (T, Hq, D)
  k: BufferSlice; // (T, Hkv, D)
  v: BufferSlice; // (T, Hkv, D)
  seqStart: BufferSlice; // (T) u32
  seqEnd: BufferSlice; // (T) u32
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale: number;
  workspace: BufferSlice; // attentionBackwardWorkspaceBytes(T, Hq) bytes
}

/** Bytes of scratch the backward needs: delta = rowsum(dO∘O), (Hq, T) f32. */
export function attentionBackwardWorkspaceBytes(T: number, Hq: number): number {
  return alignUp(T * Hq * 4, 256);
}

/** Throws GpuError for shapes the kernels do not take. */
function checkShape(kernel: string, a: { T: number; Hq: number; Hkv: number; D: number }) {
  const { T, Hq, Hkv, D } = a;
  if (!(Number.isInteger(T) && T >= 1 && Hq >= 1 && Hkv >= 1)) {
    throw new GpuError(`bad shape T=${T} Hq=${Hq} Hkv=${Hkv}`, kernel);
  }
  if (Hq % Hkv !== 0) throw new GpuError(`Hq=${Hq} is not a multiple of Hkv=${Hkv}`, kernel);
  if (!(Number.isInteger(D) && D >= 1 && D <= ATTENTION_MAX_HEAD_DIM)) {
    throw new GpuError(`head dim ${D} outside 1..${ATTENTION_MAX_HEAD_DIM}`, kernel);
  }
  if (Math.ceil(T / 4) > 65535 || Hq > 65535) {
    throw new GpuError(`T=${T} or Hq=${Hq} exceeds the dispatch limits`, kernel);
  }
}

/**
 * Override constants of one attention entry point: DM, the head-dim capacity of its workgroup
 * arrays (D rounded up to 16, 32, 64 or 128, so nearby head dims share a pipeline); RQ threads
 * of 4 rows; NG groups of 16 rows per staged tile.
 */
interface TileConfig extends Record<string, number> {
  DM: number;
  RQ: number;
  NG: number;
}

/**
 * Tile sizes for `entry` at head dim D that fit the device's workgroup memory: accumulators of
 * RQ·4 rows × DM floats (two of them in dK/dV) and two staged tiles of NG·16 rows × DM floats.
 * Prefers NG = 2, then 16 or 8 threads, then NG = 1 with as many threads as fit.
 */
function tileConfig(gpu: Gpu, entry: "forward" | "dq" | "dkv", D: number): TileConfig {
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  const DM = D <= 16 ? 16 : D <= 32 ? 32 : D <= 64 ? 64 : 128;
  const accs = entry === "dkv" ? 2 : 1;
  const bytes = (rq: number, ng: number) => accs * 16 * DM * rq + ng * 128 * DM;
  // whole 8-lane groups first (CPU drivers run 8 invocations per SIMD vector)
  for (const ng of [2, 1]) {
    for (const rq of [16, 8]) if (bytes(rq, ng) <= limit) return { DM, RQ: rq, NG: ng };
  }
  for (let rq = 7; rq >= 1; rq--) if (bytes(rq, 1) <= limit) return { DM, RQ: rq, NG: 1 };
  throw new GpuError(`head dim ${D} needs more than ${limit} bytes of workgroup memory`, entry);
}

/** Uniform parameters shared by the attention entry points (Params in attention.wgsl). */
function params(
  arena: ParamArena,
  a: { T: number; Hq: number; Hkv: number; D: number; scale: number },
) {
  return arena.alloc(packParams([a.T, a.Hq, a.Hkv, a.Hq / a.Hkv, a.scale, a.D, 0, 0], [4]));
}

/**
 * o = softmax(scale · q·kᵀ + mask) · v per q head over the block-diagonal causal mask
 * (token i sees keys seqStart[i] ≤ j ≤ i), and lse = log Σ_j exp(scale · q_i·k_j).
 * One workgroup per (4·RQ queries, q head); key tiles outside the queries' ranges are never
 * visited. Samples must be contiguous (seqStart, seqEnd non-decreasing).
 */
export function attentionForward(
  gpu: Gpu,
  arena: ParamArena,
  args: AttentionForwardArgs,
): Dispatch[] {
  checkShape("attention_forward", args);
  const { T, Hq, D } = args;
  const c = tileConfig(gpu, "forward", D);
  const kernel = gpu.kernel("attention", "attention_forward", c);
  const bindGroup = gpu.bind(kernel, {
    0: params(arena, args),
    1: args.o,
    2: args.lse,
    3: args.q,
    4: args.k,
    5: args.v,
    6: args.seqStart,
  });
  return [{ kernel, bindGroup, workgroups: [Math.ceil(T / (4 * c.RQ)), Hq, 1] }];
}

/**
 * dq, dk, dv of the attention (written, not accumulated), in three dispatches without float
 * atomics: delta = rowsum(dO∘O) into the workspace; dQ per (query tile, q head); dK and dV per
 * (key tile, kv head), looping over the q heads of its group and the query tiles that see it.
 */
export function attentionBackward(
  gpu: Gpu,
  arena: ParamArena,
  args: AttentionBackwardArgs,
): Dispatch[] {
  checkShape("attention_backward", args);
  const { T, Hq, Hkv, D } = args;
  const need = T * Hq * 4;
  const wsSize = args.workspace.size ?? args.workspace.buffer.size - (args.workspace.offset ?? 0);
  if (wsSize < need) {
    throw new GpuError(`workspace of ${wsSize} bytes < ${need}`, "attention_backward");
  }
  const delta: BufferSlice = { ...args.workspace, size: alignUp(need, 4) };
  const prm = params(arena, args);

  const kDelta = gpu.kernel("attention", "attention_backward_delta");
  const groups = Math.ceil((T * Hq) / 64);
  const gx = Math.min(groups, 65535);
  const dDelta: Dispatch = {
    kernel: kDelta,
    bindGroup: gpu.bind(kDelta, { 0: prm, 1: delta, 8: args.dout, 11: args.o }),
    workgroups: [gx, Math.ceil(groups / gx), 1],
  };

  const cDq = tileConfig(gpu, "dq", D);
  const kDq = gpu.kernel("attention", "attention_backward_dq", cDq);
  const dDq: Dispatch = {
    kernel: kDq,
    bindGroup: gpu.bind(kDq, {
      0: prm,
      1: args.dq,
      3: args.q,
      4: args.k,
      5: args.v,
      6: args.seqStart,
      8: args.dout,
      9: args.lse,
      10: delta,
    }),
    workgroups: [Math.ceil(T / (4 * cDq.RQ)), Hq, 1],
  };

  const cDkv = tileConfig(gpu, "dkv", D);
  const kDkv = gpu.kernel("attention", "attention_backward_dkv", cDkv);
  const dDkv: Dispatch = {
    kernel: kDkv,
    bindGroup: gpu.bind(kDkv, {
      0: prm,
      1: args.dk,
      2: args.dv,
      3: args.q,
      4: args.k,
      5: args.v,
      6: args.seqStart,
      7: args.seqEnd,
      8: args.dout,
      9: args.lse,
      10: delta,
    }),
    workgroups: [Math.ceil(T / (4 * cDkv.RQ)), Hkv, 1],
  };
  return [dDelta, dDq, dDkv];
}
