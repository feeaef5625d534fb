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
import { isCpuAdapter } from "./matmul.ts";

/** Largest head dim (the kernels take any D in 1..128). */
export const ATTENTION_MAX_HEAD_DIM = 128;

/**
 * Which implementation runs: "cpu" (attention.wgsl: 16-thread workgroups, accumulators in
 * workgroup memory, shaped for lavapipe) or "gpu" (attention_gpu.wgsl: flash-attention tiles of
 * up to 256 threads with accumulators in registers; head dims that are not a multiple of 4 run
 * the "cpu" kernels).
 */
export type AttentionVariant = "cpu" | "gpu";

const variants = new WeakMap<Gpu, AttentionVariant>();

/** The variant used for `gpu`: "cpu" on CPU adapters, "gpu" elsewhere, unless set explicitly. */
export function attentionVariant(gpu: Gpu): AttentionVariant {
  let v = variants.get(gpu);
  if (!v) {
    v = isCpuAdapter(gpu) ? "cpu" : "gpu";
    variants.set(gpu, v);
  }
  return v;
}

/** Force the variant for `gpu` (null: back to the adapter's default); applies to later launches. */
export function setAttentionVariant(gpu: Gpu, v: AttentionVariant | null): void {
  if (v === null) variants.delete(gpu);
  else variants.set(gpu, v);
}

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
  variant?: AttentionVariant; // default: attentionVariant(gpu)
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
  variant?: AttentionVariant; // default: attentionVariant(gpu)
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

/**
 * Override constants of one attention_gpu entry point: TR × TC threads (own rows BR = 4·TR, tile
 * rows BC = 4·TC), DM the head-dim capacity, HD the head dim as a compile-time constant (0: read
 * at run time), NK dim quads per thread in the accumulators, and the vec4 counts of its workgroup
 * arrays (attention_gpu.wgsl names them).
 */
interface GpuTileConfig extends Record<string, number> {
  DM: number;
  HD: number;
  TR: number;
  TC: number;
  NK: number;
  OWN_N: number;
  OA_N: number;
  OB_N: number;
  TILE_N: number;
}

/**
 * (TR, TC) candidates per attention_gpu entry point, preferred first (4·TC > DM/8 keeps NK <= 8).
 * dK/dV puts TC = 16 first: its grid has only T·Hkv/(4·TR) workgroups, so the threads per tile
 * row decide how full the GPU gets.
 */
export const ATTENTION_GPU_SHAPES: Record<AttentionGpuEntry, [number, number][]> = {
  forward: [[16, 16], [16, 8], [8, 16], [8, 8], [16, 4], [4, 16], [8, 4], [4, 8], [4, 4], [2, 4]],
  dq: [[16, 16], [8, 16], [16, 8], [8, 8], [16, 4], [4, 16], [8, 4], [4, 8], [4, 4], [2, 4]],
  dkv: [[8, 16], [16, 8], [8, 8], [4, 16], [16, 4], [4, 8], [8, 4], [4, 4], [2, 4], [1, 4]],
};

/** Whether the "gpu" variant takes head dim D (it reads Q, K, V and dO as vec4s). */
export function attentionGpuTakes(D: number): boolean {
  return D % 4 === 0;
}

/** An attention_gpu entry point. */
export type AttentionGpuEntry = "forward" | "dq" | "dkv";

const forcedShapes = new WeakMap<Gpu, Partial<Record<AttentionGpuEntry, [number, number]>>>();

/**
 * Force the (TR, TC) thread grid of attention_gpu entry points on `gpu` (null: back to the first
 * fitting grid of ATTENTION_GPU_SHAPES); applies to later launches. For sweeps and tests: a grid
 * that does not fit the device makes the launch throw.
 */
export function setAttentionGpuShapes(
  gpu: Gpu,
  shapes: Partial<Record<AttentionGpuEntry, [number, number]>> | null,
): void {
  if (shapes === null) forcedShapes.delete(gpu);
  else forcedShapes.set(gpu, shapes);
}

const tunedShapes = new WeakMap<Gpu, Map<string, [number, number]>>();

/** Thread grids measured by the autotune (kernels/matmul_tune.ts), by attentionKey. */
export function setAttentionTunedShapes(gpu: Gpu, shapes: Map<string, [number, number]>): void {
  tunedShapes.set(gpu, shapes);
}

/** The measured thread grids in use on `gpu` (empty until an autotuned build). */
export function attentionTunedShapes(gpu: Gpu): Map<string, [number, number]> {
  return tunedShapes.get(gpu) ?? new Map();
}

/** The autotune key of one attention_gpu launch: entry point and shape. */
export function attentionKey(
  entry: AttentionGpuEntry,
  a: { T: number; Hq: number; Hkv: number; D: number },
): string {
  return `${entry} T${a.T} H${a.Hq}/${a.Hkv} D${a.D}`;
}

/** An attention_gpu launch seen while recording: rebuilds its entry's dispatch on demand. */
export interface RecordedAttention {
  entry: AttentionGpuEntry;
  D: number;
  /** The grid it got. */
  grid: [number, number];
  /** The entry's dispatch with the grids in force now, on the recorded buffers. */
  rebuild(arena: ParamArena): Dispatch;
}

const attnRecorders = new WeakMap<Gpu, Map<string, RecordedAttention>>();

/** Start recording the attention_gpu launches built on `gpu`. */
export function startAttentionRecording(gpu: Gpu): void {
  attnRecorders.set(gpu, new Map());
}

/** Stop recording; the distinct launches seen, by attentionKey. */
export function stopAttentionRecording(gpu: Gpu): Map<string, RecordedAttention> {
  const rec = attnRecorders.get(gpu) ?? new Map();
  attnRecorders.delete(gpu);
  return rec;
}

function record(
  gpu: Gpu,
  key: string,
  entry: AttentionGpuEntry,
  D: number,
  grid: [number, number],
  rebuild: (arena: ParamArena) => Dispatch,
) {
  const rec = attnRecorders.get(gpu);
  if (rec && !rec.has(key)) rec.set(key, { entry, D, grid, rebuild });
}

/**
 * The tile configuration of thread grid (TR, TC) for `entry` at head dim D, or null when it does
 * not fit the device (vec4s × 16 bytes of workgroup memory): forward Q (DM·TR) + K/V tile (DM·TC)
 * + P (4·TR·TC); dQ K and V tiles (2·DM·TC) + dS (4·TR·TC); dK/dV Q and dO tiles (2·DM·TC) + Pᵀ
 * and dSᵀ (2 · 4·TR·TC). The backward reads its own rows from global memory. HD = D when D fills
 * its bucket DM on a GPU (unrolled d loops), else 0 (one pipeline per bucket, rolled loops; CPU
 * adapters always, so lavapipe compiles fast).
 */
function gpuTileFor(
  gpu: Gpu,
  entry: AttentionGpuEntry,
  D: number,
  TR: number,
  TC: number,
): GpuTileConfig | null {
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  const maxThreads = gpu.limits.maxComputeInvocationsPerWorkgroup;
  const DM = D <= 16 ? 16 : D <= 32 ? 32 : D <= 64 ? 64 : 128;
  const HD = D === DM && !isCpuAdapter(gpu) ? D : 0;
  if (TR * TC > maxThreads) return null;
  const NK = Math.ceil(DM / (4 * TC));
  if (NK > 8) return null;
  const oth = DM * TC, tile = 4 * TR * TC;
  const c: GpuTileConfig = { DM, HD, TR, TC, NK, OWN_N: 1, OA_N: oth, OB_N: 1, TILE_N: tile };
  let vec4s: number;
  if (entry === "forward") {
    c.OWN_N = DM * TR;
    c.OA_N = Math.max(oth, TR * TC); // also holds the row-max / row-sum partials
    vec4s = c.OWN_N + c.OA_N + tile;
  } else if (entry === "dq") {
    c.OB_N = oth;
    vec4s = 2 * oth + tile;
  } else {
    c.OB_N = oth;
    vec4s = 2 * oth + 2 * tile;
  }
  return vec4s * 16 <= limit ? c : null;
}

/** The thread grids of ATTENTION_GPU_SHAPES[entry] that fit the device at head dim D, in order. */
export function attentionGpuShapeCandidates(
  gpu: Gpu,
  entry: AttentionGpuEntry,
  D: number,
): [number, number][] {
  return ATTENTION_GPU_SHAPES[entry].filter(([tr, tc]) => gpuTileFor(gpu, entry, D, tr, tc));
}

/**
 * The tile configuration of `entry`: the grid forced with setAttentionGpuShapes, else the one the
 * autotune measured for `key` (attentionKey), else the first grid of ATTENTION_GPU_SHAPES that
 * fits. At D = 64 on 48 KiB: forward 16×16 (BR = BC = 64,
 * 48 KiB), dQ 16×16 (64×64, 48 KiB), dK/dV 8×16 (BR = 32, BC = 64, 48 KiB); at D = 128 8×8, 16×8
 * and 16×8.
 */
export function gpuTileConfig(
  gpu: Gpu,
  entry: AttentionGpuEntry,
  D: number,
  key?: string,
): GpuTileConfig {
  const forced = forcedShapes.get(gpu)?.[entry];
  if (forced) {
    const c = gpuTileFor(gpu, entry, D, forced[0], forced[1]);
    if (!c) {
      throw new GpuError(`thread grid ${forced.join("×")} does not fit at head dim ${D}`, entry);
    }
    return c;
  }
  const tuned = key ? tunedShapes.get(gpu)?.get(key) : undefined;
  const t = tuned && gpuTileFor(gpu, entry, D, tuned[0], tuned[1]);
  if (t) return t;
  for (const [TR, TC] of ATTENTION_GPU_SHAPES[entry]) {
    const c = gpuTileFor(gpu, entry, D, TR, TC);
    if (c) return c;
  }
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
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
  const gpuVariant = (args.variant ?? attentionVariant(gpu)) === "gpu" && attentionGpuTakes(D);
  const key = attentionKey("forward", args);
  const c = gpuVariant ? gpuTileConfig(gpu, "forward", D, key) : tileConfig(gpu, "forward", D);
  const rowsPerGroup = gpuVariant ? 4 * c.TR : 4 * c.RQ;
  const kernel = gpuVariant
    ? gpu.kernel("attention_gpu", "attention_gpu_forward", c)
    : gpu.kernel("attention", "attention_forward", c);
  const bindGroup = gpu.bind(kernel, {
    0: params(arena, args),
    1: args.o,
    2: args.lse,
    3: args.q,
    4: args.k,
    5: args.v,
    6: args.seqStart,
  });
  if (gpuVariant && attnRecorders.has(gpu)) {
    record(
      gpu,
      key,
      "forward",
      D,
      [c.TR, c.TC],
      (a) => attentionForward(gpu, a, { ...args, variant: "gpu" })[0],
    );
  }
  return [{ kernel, bindGroup, workgroups: [Math.ceil(T / rowsPerGroup), Hq, 1] }];
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

  const gpuVariant = (args.variant ?? attentionVariant(gpu)) === "gpu" && attentionGpuTakes(D);
  const keyDq = attentionKey("dq", args), keyDkv = attentionKey("dkv", args);
  const cDq = gpuVariant ? gpuTileConfig(gpu, "dq", D, keyDq) : tileConfig(gpu, "dq", D);
  const kDq = gpuVariant
    ? gpu.kernel("attention_gpu", "attention_gpu_backward_dq", cDq)
    : gpu.kernel("attention", "attention_backward_dq", cDq);
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
    workgroups: [Math.ceil(T / (4 * (gpuVariant ? cDq.TR : cDq.RQ))), Hq, 1],
  };

  const cDkv = gpuVariant ? gpuTileConfig(gpu, "dkv", D, keyDkv) : tileConfig(gpu, "dkv", D);
  const kDkv = gpuVariant
    ? gpu.kernel("attention_gpu", "attention_gpu_backward_dkv", cDkv)
    : gpu.kernel("attention", "attention_backward_dkv", cDkv);
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
    workgroups: [Math.ceil(T / (4 * (gpuVariant ? cDkv.TR : cDkv.RQ))), Hkv, 1],
  };
  if (gpuVariant && attnRecorders.has(gpu)) {
    const again = (a: ParamArena) => attentionBackward(gpu, a, { ...args, variant: "gpu" });
    record(gpu, keyDq, "dq", D, [cDq.TR, cDq.TC], (a) => again(a)[1]);
    record(gpu, keyDkv, "dkv", D, [cDkv.TR, cDkv.TC], (a) => again(a)[2]);
  }
  return [dDelta, dDq, dDkv];
}
