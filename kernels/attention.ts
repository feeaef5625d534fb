// Launchers for packed varlen causal attention: forward (saves LSE) and backward (delta, dQ, dK/dV).
import {
  alignUp,
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
  UNIFORM_WINDOW_BYTES,
} from "./runtime.ts";
import { isCpuAdapter } from "./matmul.ts";
import { ROW_MAX_HEAD_DIM } from "./attention_row_gen.ts";
import {
  attentionBandBackward,
  attentionBandFits,
  attentionBandForward,
  bandKeyChunks,
  bandSlots,
  dkvSplit,
  dkvSplitLayout,
} from "./attention_band.ts";

/** Largest head dim (the kernels take any D in 1..128). */
export const ATTENTION_MAX_HEAD_DIM = 128;

/**
 * Which implementation runs: "row" (attention_row.wgsl: 8 rows per invocation in registers, the
 * other side walked one row at a time, unrolled in the source; head dims up to 8, larger ones run
 * "cpu"), "cpu" (attention.wgsl: 16-thread workgroups, accumulators in workgroup memory, any head
 * dim), both shaped for lavapipe; or "gpu" (attention_gpu.wgsl: flash-attention tiles of up to 256
 * threads with accumulators in registers; head dims that are not a multiple of 4 run "cpu").
 */
export type AttentionVariant = "row" | "cpu" | "gpu";

/**
 * Rows per invocation of the "row" kernels: each K/V (or Q/dO) row loaded serves this many, and row
 * groups past the causal edge skip their work (measured on lavapipe at D = 8: 16 beats 8 by about
 * 10 %, 8 beat 4 and 2; 16 doubles the compile time of the entry points, about 20 s each).
 */
const ROW_RR = 16;
/** Invocations per workgroup of the "row" kernels: one 8-lane SIMD vector on llvmpipe. */
const ROW_WG = 8;

/** Whether the "row" variant takes head dim D. */
export function attentionRowTakes(D: number): boolean {
  return D <= ROW_MAX_HEAD_DIM;
}

const variants = new WeakMap<Gpu, AttentionVariant>();

/** The variant used for `gpu`: "row" on CPU adapters, "gpu" elsewhere, unless set explicitly. */
export function attentionVariant(gpu: Gpu): AttentionVariant {
  let v = variants.get(gpu);
  if (!v) {
    v = isCpuAdapter(gpu) ? "row" : "gpu";
    variants.set(gpu, v);
  }
  return v;
}

/** Force the variant for `gpu` (null: back to the adapter's default); applies to later launches. */
export function setAttentionVariant(gpu: Gpu, v: AttentionVariant | null): void {
  if (v === null) variants.delete(gpu);
  else variants.set(gpu, v);
}

/**
 * Where Q, K and V (and dQ, dK, dV) sit in their bindings, in elements: row strides and offsets of
 * token 0. Default: dense tensors (Q (T, Hq·D), K and V (T, Hkv·D), offsets 0); a fused q/k/v
 * projection binds one (T, Hq·D + 2·Hkv·D) tensor for all three, with the column offsets of each.
 */
export interface QkvLayout {
  ldQ: number;
  ldKv: number;
  qOff: number;
  kOff: number;
  vOff: number;
}

/** The dense layout of shape (Hq, Hkv, D). */
export function denseQkvLayout(a: { Hq: number; Hkv: number; D: number }): QkvLayout {
  return { ldQ: a.Hq * a.D, ldKv: a.Hkv * a.D, qOff: 0, kOff: 0, vOff: 0 };
}

/**
 * Dense (T, Hkv, D) copies of K and V (after RoPE) that the row kernels' forward and dQ read
 * through 64 KiB uniform windows (`_u` entry points; on lavapipe a uniform load is a branch-free
 * gather, a storage load a per-lane loop): kvDenseFloats(T, Hkv, D) floats each. Used when
 * `kvWindowsTake` says so; otherwise ignored.
 */
export interface KvDense {
  k: BufferSlice;
  v: BufferSlice;
  /**
   * Longest sample of a micro-batch in tokens, padding segments included: when T·Hkv·D floats
   * exceed one window, the forward and dQ run in chunks of queries whose keys all fit one window,
   * which needs this bound. Unset: only micro-batches within one window use the windows.
   */
  maxSample?: number;
  /** Tokens one window holds (default and cap: 64 KiB / (Hkv·D·4)); tests lower it. */
  windowTokens?: number;
}

/** One dispatch of the windowed row kernels: queries [qBase, qEnd) see keys from token w on. */
interface KvChunk {
  qBase: number;
  qEnd: number;
  w: number;
}

/**
 * The query chunks of the windowed forward and dQ, or null when windows do not apply (the row
 * kernels' `_v4` conditions; several chunks also need K rows a multiple of the uniform offset
 * alignment): one chunk when all T keys fit one window; otherwise chunks of whole query blocks
 * (ROW_RR·ROW_WG) whose earliest visible key (at most maxSample − 1 tokens before the chunk) and
 * last query both fall in the window of windowTokens keys from w.
 */
function kvChunks(
  gpu: Gpu,
  a: { T: number; Hkv: number; D: number; layout?: QkvLayout },
  kv: { maxSample?: number; windowTokens?: number },
): KvChunk[] | null {
  // the runtime gives buffers UNIFORM usage on CPU adapters only
  if (!(gpu.isCpu && attentionRowTakes(a.D) && attentionGpuTakes(a.D, a.layout) && gpu.vec4Forms)) {
    return null;
  }
  const row = 4 * a.Hkv * a.D;
  const cap = Math.floor(UNIFORM_WINDOW_BYTES / row);
  const W = Math.min(kv.windowTokens ?? cap, cap);
  if (a.T <= W) return [{ qBase: 0, qEnd: a.T, w: 0 }];
  // windows from token w > 0 start w rows into the copy: only on aligned offsets
  if (!kv.maxSample || row % gpu.limits.minUniformBufferOffsetAlignment !== 0) return null;
  const block = ROW_RR * ROW_WG;
  const C = Math.floor((W - (kv.maxSample - 1)) / block) * block;
  if (C < block) return null;
  const chunks: KvChunk[] = [];
  for (let q = 0; q < a.T; q += C) {
    // no later than T − cap, so that the 64 KiB binding ends inside a copy of max(T, cap) tokens
    const w = Math.max(0, Math.min(q - (W - C), a.T - cap));
    chunks.push({ qBase: q, qEnd: Math.min(a.T, q + C), w });
  }
  return chunks;
}

/**
 * Whether the row kernels read K and V through uniform windows (their `_u` entry points): a head
 * dim they take, the `_v4` conditions (head dim, strides and offsets multiples of 4), and every
 * query's keys in one window: all T keys, or chunks of queries when maxSample bounds how far back
 * a query sees (KvDense).
 */
export function kvWindowsTake(
  gpu: Gpu,
  a: {
    T: number;
    Hkv: number;
    D: number;
    layout?: QkvLayout;
    maxSample?: number;
    windowTokens?: number;
  },
): boolean {
  return kvChunks(gpu, a, a) !== null;
}

/** Floats of each dense K or V copy (KvDense): T tokens, and at least one whole window. */
export function kvDenseFloats(T: number, Hkv: number, D: number): number {
  return Math.max(T * Hkv * D, UNIFORM_WINDOW_BYTES / 4);
}

/**
 * The windowed dispatches of a row-attention `_u` entry point, one per chunk (kvChunks), or null
 * when the windows do not apply, or a copy is too short or sits off the uniform offset alignment
 * (not with the graph's 256-byte aligned copies); `bindings` are the chunk-free ones.
 */
function windowedDispatches(
  gpu: Gpu,
  arena: ParamArena,
  entry: string,
  args: {
    T: number;
    Hq: number;
    Hkv: number;
    D: number;
    scale: number;
    layout?: QkvLayout;
    kvDense?: KvDense;
  },
  bindings: Record<number, BufferSlice>,
): Dispatch[] | null {
  const kv = args.kvDense;
  const chunks = kv ? kvChunks(gpu, args, kv) : null;
  if (!kv || !chunks) return null;
  const row = args.Hkv * args.D * 4;
  const align = gpu.limits.minUniformBufferOffsetAlignment;
  const fits = (x: BufferSlice, w: number) =>
    ((x.offset ?? 0) + w * row) % align === 0 &&
    x.buffer.size - (x.offset ?? 0) - w * row >= UNIFORM_WINDOW_BYTES;
  if (!chunks.every((c) => fits(kv.k, c.w) && fits(kv.v, c.w))) return null;
  const win = (x: BufferSlice, w: number) => ({
    buffer: x.buffer,
    offset: (x.offset ?? 0) + w * row,
    size: UNIFORM_WINDOW_BYTES,
  });
  const kernel = gpu.kernel("attention_row", entry, rowConfig(args.D));
  const l = args.layout ?? denseQkvLayout(args);
  return chunks.map((c) => {
    // key j sits at window row j − w: the offsets −w·Hkv·D wrap around in u32 (attention_row.wgsl)
    const off = (2 ** 32 - c.w * args.Hkv * args.D) % 2 ** 32;
    const layout = { ...l, ldKv: args.Hkv * args.D, kOff: off, vOff: off };
    const bindGroup = gpu.bind(kernel, {
      0: params(arena, { ...args, layout }, undefined, c),
      ...bindings,
      12: win(kv.k, c.w),
      13: win(kv.v, c.w),
    });
    const blocks = Math.ceil((c.qEnd - c.qBase) / (ROW_RR * ROW_WG));
    return { kernel, bindGroup, workgroups: [blocks, args.Hq, 1] as [number, number, number] };
  });
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
  layout?: QkvLayout; // default: denseQkvLayout
  kvDense?: KvDense; // dense copies of K and V for the row kernels' uniform windows
  maxSample?: number; // bounds every sample's length (the tune times such samples; band size)
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
  layout?: QkvLayout; // of q, k, v and of dq, dk, dv alike; default: denseQkvLayout
  kvDense?: KvDense; // dense copies of K and V for the row kernels' uniform windows (dQ)
  maxSample?: number; // bounds every sample's length (the tune times such samples; band size)
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

/** The head-dim capacity the attention kernels are built for: D rounded up to 16, 32, 64 or 128. */
function headDimCapacity(D: number): number {
  return D <= 16 ? 16 : D <= 32 ? 32 : D <= 64 ? 64 : 128;
}

/** Dim quads per attention_gpu thread at capacity DM and TC threads per row: NK. */
function dimQuads(DM: number, TC: number): number {
  return Math.ceil(DM / (4 * TC));
}

/** The fixed accumulator form is written out for this many dim quads per thread. */
const ACC_FIXED_MAX_QUADS = 4;

/**
 * Tile sizes for `entry` at head dim D that fit the device's workgroup memory: accumulators of
 * RQ·4 rows × DM floats (two of them in dK/dV) and two staged tiles of NG·16 rows × DM floats.
 * Prefers NG = 2, then 16 or 8 threads, then NG = 1 with as many threads as fit.
 */
function tileConfig(gpu: Gpu, entry: "forward" | "dq" | "dkv", D: number): TileConfig {
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  const DM = headDimCapacity(D);
  const accs = entry === "dkv" ? 2 : 1;
  const bytes = (rq: number, ng: number) => accs * 16 * DM * rq + ng * 128 * DM;
  // whole 8-lane groups first (CPU drivers run 8 invocations per SIMD vector)
  for (const ng of [2, 1]) {
    for (const rq of [16, 8]) if (bytes(rq, ng) <= limit) return { DM, RQ: rq, NG: ng };
  }
  for (let rq = 7; rq >= 1; rq--) if (bytes(rq, 1) <= limit) return { DM, RQ: rq, NG: 1 };
  throw new GpuError(`head dim ${D} needs more than ${limit} bytes of workgroup memory`, entry);
}

/** Override constants of the "row" kernels at head dim D. */
function rowConfig(D: number): Record<string, number> {
  return { HD: D, RR: ROW_RR, WG: ROW_WG };
}

/**
 * The row kernel's entry point: its `_v4` form (head rows read as vec4s: about 1.2× faster on
 * lavapipe at D = 8, bit-identical) when the head dim and the layout's strides and offsets are
 * multiples of 4.
 */
function rowEntry(gpu: Gpu, entry: string, D: number, layout?: QkvLayout): string {
  return attentionGpuTakes(D, layout) && gpu.vec4Forms ? `${entry}_v4` : entry;
}

/**
 * Override constants of one attention_gpu entry point: TR × TC threads (own rows BR = 4·TR, tile
 * rows BC = 4·TC), DM the head-dim capacity, HD the head dim as a compile-time constant (0: read
 * at run time), NK dim quads per thread in the accumulators, ACC_FIXED their form (1: constant
 * indices only, see AttentionAcc; NK <= 4 only), and the vec4 counts of its workgroup arrays (attention_gpu.wgsl
 * names them).
 */
interface GpuTileConfig extends Record<string, number> {
  DM: number;
  HD: number;
  TR: number;
  TC: number;
  NK: number;
  ACC_FIXED: number;
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

/**
 * Whether the "gpu" variant takes head dim D (it reads Q, K, V and dO as vec4s), and the layout's
 * strides and offsets (multiples of 4).
 */
export function attentionGpuTakes(D: number, layout?: QkvLayout): boolean {
  return [D, ...Object.values(layout ?? {})].every((x) => x % 4 === 0);
}

/** An attention_gpu entry point. */
export type AttentionGpuEntry = "forward" | "dq" | "dkv";

/**
 * A thread grid (TR, TC) and, for dK/dV only, the number of parts its group of q heads is split
 * into (absent: 1). A split runs group / parts q heads per workgroup, so the grid has `parts` times
 * as many workgroups, and adds a pass that sums the partial dK and dV.
 */
export type AttentionGrid = [number, number] | [number, number, number];

/**
 * How attention_gpu indexes its per-thread accumulators (same bits either way): "loop", by the
 * counter of a loop over the dim quads, or "fixed", by constants only (written out). The autotune
 * times both on GPUs: wgpu's loop bounding keeps drivers from unrolling the loop, and an array
 * indexed in a rolled loop may live in local memory instead of registers.
 */
export type AttentionAcc = "loop" | "fixed";

const forcedShapes = new WeakMap<Gpu, Partial<Record<AttentionGpuEntry, AttentionGrid>>>();
const forcedAcc = new WeakMap<Gpu, AttentionAcc>();

/**
 * Force the thread grid of attention_gpu entry points on `gpu` (null: back to the first fitting
 * grid of ATTENTION_GPU_SHAPES, unsplit); applies to later launches. For sweeps and tests: a grid
 * that does not fit the device, or a dK/dV split that does not divide the group, makes the launch
 * throw.
 */
export function setAttentionGpuShapes(
  gpu: Gpu,
  shapes: Partial<Record<AttentionGpuEntry, AttentionGrid>> | null,
): void {
  if (shapes === null) forcedShapes.delete(gpu);
  else forcedShapes.set(gpu, shapes);
}

/** Accumulator forms a thread grid (TR, TC, ...) offers at head dim D: "fixed" needs NK <= 4. */
export function attentionAccForms(D: number, grid: AttentionGrid): AttentionAcc[] {
  return dimQuads(headDimCapacity(D), grid[1]) <= ACC_FIXED_MAX_QUADS
    ? ["loop", "fixed"]
    : ["loop"];
}

/** Force the accumulator form of every later attention_gpu launch on `gpu` (null: tuned or "loop"). */
export function setAttentionAcc(gpu: Gpu, acc: AttentionAcc | null): void {
  if (acc === null) forcedAcc.delete(gpu);
  else forcedAcc.set(gpu, acc);
}

const tunedShapes = new WeakMap<Gpu, Map<string, AttentionGrid>>();
const tunedAcc = new WeakMap<Gpu, Map<string, AttentionAcc>>();

/** Accumulator forms measured by the autotune, by attentionKey (absent: "loop"). */
export function setAttentionTunedAcc(gpu: Gpu, forms: Map<string, AttentionAcc>): void {
  tunedAcc.set(gpu, forms);
}

/** The measured accumulator forms in use on `gpu` (empty until an autotuned build). */
export function attentionTunedAcc(gpu: Gpu): Map<string, AttentionAcc> {
  return tunedAcc.get(gpu) ?? new Map();
}

/** Thread grids measured by the autotune (kernels/matmul_tune.ts), by attentionKey. */
export function setAttentionTunedShapes(gpu: Gpu, shapes: Map<string, AttentionGrid>): void {
  tunedShapes.set(gpu, shapes);
}

/** The measured thread grids in use on `gpu` (empty until an autotuned build). */
export function attentionTunedShapes(gpu: Gpu): Map<string, AttentionGrid> {
  return tunedShapes.get(gpu) ?? new Map();
}

/**
 * How the "gpu" variant computes a forward or a backward: "flash" (attention_gpu.wgsl: scores in
 * registers, never written) or "band" (attention_band.wgsl: 64×64 score tiles written to a scratch
 * band and every product a tiled GEMM, as eager PyTorch does; more memory, see bandBlocks);
 * "band-split" is "band" with its long reductions cut into partial sums that a last pass adds: P·V
 * and dQ over chunks of key tiles (bandKeyChunks), the backward's dK/dV over every q head of a GQA
 * group, which evens out the work per workgroup. The autotune times them per launch and keeps the
 * fastest; "flash" otherwise.
 */
export type AttentionForm = "flash" | "band" | "band-split";

/** Whether "band-split" cuts anything in `pass` of shape `a` (else it is "band"). */
export function bandSplitTakes(
  pass: AttentionPass,
  a: { T: number; Hq: number; Hkv: number; maxSample?: number },
): boolean {
  return bandKeyChunks(a.T, a.maxSample).chunks > 1 || (pass === "backward" && a.Hq > a.Hkv);
}

/** The forms worth timing for a pass (`split`: bandSplitTakes). */
export function attentionForms(split: boolean): AttentionForm[] {
  return split ? ["flash", "band", "band-split"] : ["flash", "band"];
}

/** A pass of the attention, the unit the form is chosen for. */
export type AttentionPass = "forward" | "backward";

const forcedForm = new WeakMap<Gpu, AttentionForm>();
const tunedForm = new WeakMap<Gpu, Map<string, AttentionForm>>();

/** Force the form of every later "gpu" attention launch on `gpu` (null: tuned, else "flash"). */
export function setAttentionForm(gpu: Gpu, form: AttentionForm | null): void {
  if (form === null) forcedForm.delete(gpu);
  else forcedForm.set(gpu, form);
}

/** The form forced with setAttentionForm, or null. */
export function attentionForcedForm(gpu: Gpu): AttentionForm | null {
  return forcedForm.get(gpu) ?? null;
}

/** Forms measured by the autotune, by attentionFormKey (absent: "flash"). */
export function setAttentionTunedForms(gpu: Gpu, forms: Map<string, AttentionForm>): void {
  tunedForm.set(gpu, forms);
}

/** The measured forms in use on `gpu` (empty until an autotuned build). */
export function attentionTunedForms(gpu: Gpu): Map<string, AttentionForm> {
  return tunedForm.get(gpu) ?? new Map();
}

/** The autotune key of one pass's form: pass and shape. */
export function attentionFormKey(
  pass: AttentionPass,
  a: { T: number; Hq: number; Hkv: number; D: number; maxSample?: number },
): string {
  return attentionKey(`${pass} form`, a);
}

/** The form a "gpu" launch of `key` runs: forced, else tuned, else "flash"; "band" only where it fits. */
function formFor(
  gpu: Gpu,
  pass: AttentionPass,
  key: string,
  a: { T: number; Hq: number; Hkv: number; maxSample?: number },
): AttentionForm {
  const form = forcedForm.get(gpu) ?? tunedForm.get(gpu)?.get(key) ?? "flash";
  if (form === "flash" || !attentionBandFits(gpu, a)) return "flash";
  return form === "band-split" && bandSplitTakes(pass, a) ? "band-split" : "band";
}

/**
 * What the band launchers of form `form` take: Params per head block (`prm(h0)`: the band's slots,
 * the block's first q head, the key-tile chunk and, backward, the dK/dV split) and the number of
 * key-tile chunks of P·V and dQ (cut in "band-split" only).
 */
function bandLaunch(
  arena: ParamArena,
  a: AttentionForwardArgs | AttentionBackwardArgs,
  form: AttentionForm,
  split?: { parts: number; dvOff: number },
): { prm: (h0: number) => BufferSlice; chunks: number } {
  const slots = bandSlots(a.T, a.maxSample);
  const { kchunk, chunks } = form === "band-split"
    ? bandKeyChunks(a.T, a.maxSample)
    : { kchunk: 0, chunks: 1 };
  return { prm: (h0) => params(arena, a, split, undefined, { slots, h0, kchunk }), chunks };
}

/** `fn` with the form forced to `form`, then the forced form as it was. */
function withForm<T>(gpu: Gpu, form: AttentionForm, fn: () => T): T {
  const prev = forcedForm.get(gpu);
  forcedForm.set(gpu, form);
  try {
    return fn();
  } finally {
    if (prev) forcedForm.set(gpu, prev);
    else forcedForm.delete(gpu);
  }
}

/** One recorded pass, rebuildable in each form, for the autotune to time them against each other. */
export interface RecordedAttentionForm {
  pass: AttentionPass;
  /** The form it got. */
  form: AttentionForm;
  /** Whether "band-split" cuts anything in this pass (bandSplitTakes). */
  split: boolean;
  /** Whether the band fits this launch (else only "flash" is offered). */
  bandFits: boolean;
  /** The pass's dispatches in `form` (grids and accumulators as tuned now). */
  rebuild(arena: ParamArena, form: AttentionForm): Dispatch[];
  segments: RecordedAttention["segments"];
}

const formRecorders = new WeakMap<Gpu, Map<string, RecordedAttentionForm>>();

/**
 * The form a "gpu" launch of `pass` runs, recorded for the autotune while recording; `build`
 * rebuilds the pass's dispatches in the "gpu" variant.
 */
function passForm(
  gpu: Gpu,
  pass: AttentionPass,
  args: {
    T: number;
    Hq: number;
    Hkv: number;
    D: number;
    maxSample?: number;
    seqStart: BufferSlice;
    seqEnd: BufferSlice;
  },
  build: (arena: ParamArena) => Dispatch[],
): AttentionForm {
  const key = attentionFormKey(pass, args);
  const form = formFor(gpu, pass, key, args);
  const rec = formRecorders.get(gpu);
  if (rec && !rec.has(key)) {
    rec.set(key, {
      pass,
      form,
      split: bandSplitTakes(pass, args),
      bandFits: attentionBandFits(gpu, args),
      rebuild: (a, f) => withForm(gpu, f, () => build(a)),
      segments: segmentsOf(args),
    });
  }
  return form;
}

/** The passes recorded since startAttentionRecording, by attentionFormKey; stops their recording. */
export function stopAttentionFormRecording(gpu: Gpu): Map<string, RecordedAttentionForm> {
  const rec = formRecorders.get(gpu) ?? new Map();
  formRecorders.delete(gpu);
  return rec;
}

/** The dK/dV split of a GQA group of `group` q heads worth trying: every divisor above 1. */
export function dkvSplits(group: number): number[] {
  const out: number[] = [];
  for (let d = 2; d <= group; d++) if (group % d === 0) out.push(d);
  return out;
}

/**
 * How many parts the dK/dV launch `key` splits its q-head group into: the forced grid's, else the
 * tuned one's (when it still divides the group), else 1.
 */
function dkvPartsFor(gpu: Gpu, key: string, group: number): number {
  const forced = forcedShapes.get(gpu)?.dkv;
  if (forced) {
    const parts = forced[2] ?? 1;
    if (!(Number.isInteger(parts) && parts >= 1 && group % parts === 0)) {
      throw new GpuError(`dK/dV split ${parts} does not divide the group of ${group}`, "dkv");
    }
    return parts;
  }
  const tuned = tunedShapes.get(gpu)?.get(key)?.[2] ?? 1;
  return group % tuned === 0 ? tuned : 1;
}

/** The autotune key of one attention_gpu launch (entry point and shape), or of a pass's form. */
export function attentionKey(
  entry: AttentionGpuEntry | `${AttentionPass} form`,
  a: { T: number; Hq: number; Hkv: number; D: number; maxSample?: number },
): string {
  const s = a.maxSample && a.maxSample < a.T ? ` S${a.maxSample}` : "";
  return `${entry} T${a.T} H${a.Hq}/${a.Hkv} D${a.D}${s}`;
}

/** An attention_gpu launch seen while recording: rebuilds its entry's dispatches on demand. */
export interface RecordedAttention {
  entry: AttentionGpuEntry;
  D: number;
  /** q heads per kv head (the dK/dV splits divide it). */
  group: number;
  /** The grid it got. */
  grid: AttentionGrid;
  /** The accumulator form it got. */
  acc: AttentionAcc;
  /** The entry's dispatches (dK/dV: with its reduce when split), grids in force now. */
  rebuild(arena: ParamArena): Dispatch[];
  /**
   * The launch's segment buffers, (T) u32 each, and the sample length to time on. The autotune
   * writes samples of `sample` tokens into them before timing: a graph that has seen no batch yet
   * holds zeros, under which dK/dV (which walks queries up to seqEnd) times no work at all, and the
   * best grid for one T-token sample is not the best for the shorter samples a batch packs.
   */
  segments: { T: number; sample: number; seqStart: BufferSlice; seqEnd: BufferSlice };
}

const attnRecorders = new WeakMap<Gpu, Map<string, RecordedAttention>>();

function segmentsOf(
  a: { T: number; maxSample?: number; seqStart: BufferSlice; seqEnd: BufferSlice },
): RecordedAttention["segments"] {
  const sample = Math.max(1, Math.min(a.T, a.maxSample ?? a.T));
  return { T: a.T, sample, seqStart: a.seqStart, seqEnd: a.seqEnd };
}

/**
 * Start recording the attention_gpu launches built on `gpu` (their grids: stopAttentionRecording;
 * their forms: stopAttentionFormRecording).
 */
export function startAttentionRecording(gpu: Gpu): void {
  attnRecorders.set(gpu, new Map());
  formRecorders.set(gpu, new Map());
}

/** Stop recording; the distinct launches seen, by attentionKey. */
export function stopAttentionRecording(gpu: Gpu): Map<string, RecordedAttention> {
  const rec = attnRecorders.get(gpu) ?? new Map();
  attnRecorders.delete(gpu);
  return rec;
}

function record(gpu: Gpu, key: string, r: RecordedAttention) {
  const rec = attnRecorders.get(gpu);
  if (rec && !rec.has(key)) rec.set(key, r);
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
  acc: AttentionAcc = "loop",
): GpuTileConfig | null {
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  const maxThreads = gpu.limits.maxComputeInvocationsPerWorkgroup;
  const DM = headDimCapacity(D);
  const HD = D === DM && !isCpuAdapter(gpu) ? D : 0;
  if (TR * TC > maxThreads || TC % 4 !== 0) return null; // tile loops take 4 quads per iteration
  const NK = dimQuads(DM, TC);
  if (NK > 8) return null;
  const oth = DM * TC, tile = 4 * TR * TC;
  const ACC_FIXED = acc === "fixed" && NK <= ACC_FIXED_MAX_QUADS ? 1 : 0;
  const c: GpuTileConfig = {
    DM,
    HD,
    TR,
    TC,
    NK,
    ACC_FIXED,
    OWN_N: 1,
    OA_N: oth,
    OB_N: 1,
    TILE_N: tile,
  };
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

/**
 * The thread grids of ATTENTION_GPU_SHAPES[entry] that fit the device at head dim D, in order; for
 * dK/dV with a q-head group of `group` (default 1), each grid also with every split of dkvSplits.
 */
export function attentionGpuShapeCandidates(
  gpu: Gpu,
  entry: AttentionGpuEntry,
  D: number,
  group = 1,
): AttentionGrid[] {
  const fit = ATTENTION_GPU_SHAPES[entry].filter(([tr, tc]) => gpuTileFor(gpu, entry, D, tr, tc));
  if (entry !== "dkv") return fit;
  return fit.flatMap(([tr, tc]): AttentionGrid[] => [
    [tr, tc],
    ...dkvSplits(group).map((s): AttentionGrid => [tr, tc, s]),
  ]);
}

/**
 * The tile configuration of `entry`: the grid forced with setAttentionGpuShapes, else the one the
 * autotune measured for `key` (attentionKey), else the first grid of ATTENTION_GPU_SHAPES that
 * fits; the accumulator form likewise (forced, tuned, else "loop"). At D = 64 on 48 KiB: forward
 * 16×16 (BR = BC = 64, 48 KiB), dQ 16×16 (64×64, 48 KiB), dK/dV 8×16 (BR = 32, BC = 64, 48 KiB);
 * at D = 128 8×8, 16×8 and 16×8.
 */
export function gpuTileConfig(
  gpu: Gpu,
  entry: AttentionGpuEntry,
  D: number,
  key?: string,
): GpuTileConfig {
  const acc = forcedAcc.get(gpu) ?? (key ? tunedAcc.get(gpu)?.get(key) : undefined) ?? "loop";
  const forced = forcedShapes.get(gpu)?.[entry];
  if (forced) {
    const c = gpuTileFor(gpu, entry, D, forced[0], forced[1], acc);
    if (!c) {
      throw new GpuError(`thread grid ${forced.join("×")} does not fit at head dim ${D}`, entry);
    }
    return c;
  }
  const tuned = key ? tunedShapes.get(gpu)?.get(key) : undefined;
  const t = tuned && gpuTileFor(gpu, entry, D, tuned[0], tuned[1], acc);
  if (t) return t;
  for (const [TR, TC] of ATTENTION_GPU_SHAPES[entry]) {
    const c = gpuTileFor(gpu, entry, D, TR, TC, acc);
    if (c) return c;
  }
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  throw new GpuError(`head dim ${D} needs more than ${limit} bytes of workgroup memory`, entry);
}

/**
 * Uniform parameters shared by the attention entry points (Params in attention.wgsl): shape, the
 * dK/dV split's parts and dV partials offset (attention_gpu.wgsl) when given, the Q/K/V layout,
 * the queries of a chunked row-attention dispatch, the band's key tiles per query tile and the
 * first q head of its head block (attention_band.wgsl).
 */
function params(
  arena: ParamArena,
  a: { T: number; Hq: number; Hkv: number; D: number; scale: number; layout?: QkvLayout },
  split = { parts: 0, dvOff: 0 },
  rows = { qBase: 0, qEnd: a.T },
  band = { slots: 0, h0: 0, kchunk: 0 },
) {
  const l = a.layout ?? denseQkvLayout(a);
  const v = [a.T, a.Hq, a.Hkv, a.Hq / a.Hkv, a.scale, a.D, split.parts, split.dvOff];
  const tail = [l.ldQ, l.ldKv, l.qOff, l.kOff, l.vOff, rows.qBase, rows.qEnd, band.slots];
  tail.push(band.h0, band.kchunk, 0, 0);
  return arena.alloc(packParams([...v, ...tail], [4]));
}

/**
 * o = softmax(scale · q·kᵀ + mask) · v per q head over the block-diagonal causal mask
 * (token i sees keys seqStart[i] ≤ j ≤ i), and lse = log Σ_j exp(scale · q_i·k_j).
 * One workgroup per (4·RQ queries, q head); key tiles outside the queries' ranges are never
 * visited. Samples must be contiguous (seqStart, seqEnd non-decreasing). The "gpu" variant runs the
 * form forced or tuned for this shape (AttentionForm: flash, or the band's three dispatches).
 */
export function attentionForward(
  gpu: Gpu,
  arena: ParamArena,
  args: AttentionForwardArgs,
): Dispatch[] {
  checkShape("attention_forward", args);
  const { T, Hq, D } = args;
  const variant = args.variant ?? attentionVariant(gpu);
  const rowVariant = variant === "row" && attentionRowTakes(D);
  const gpuVariant = variant === "gpu" && attentionGpuTakes(D, args.layout);
  const key = attentionKey("forward", args);
  if (gpuVariant) {
    const form = passForm(
      gpu,
      "forward",
      args,
      (a) => attentionForward(gpu, a, { ...args, variant: "gpu" }),
    );
    if (form !== "flash") {
      const { prm, chunks } = bandLaunch(arena, args, form);
      return attentionBandForward(gpu, prm, args, chunks);
    }
  }
  const c = gpuVariant ? gpuTileConfig(gpu, "forward", D, key) : tileConfig(gpu, "forward", D);
  const rowsPerGroup = rowVariant ? ROW_RR * ROW_WG : gpuVariant ? 4 * c.TR : 4 * c.RQ;
  const windowed = rowVariant &&
    windowedDispatches(gpu, arena, "attention_row_forward_u", args, {
      1: args.o,
      2: args.lse,
      3: args.q,
      6: args.seqStart,
    });
  if (windowed) return windowed;
  const kernel = rowVariant
    ? gpu.kernel(
      "attention_row",
      rowEntry(gpu, "attention_row_forward", D, args.layout),
      rowConfig(D),
    )
    : gpuVariant
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
    record(gpu, key, {
      entry: "forward",
      D,
      group: args.Hq / args.Hkv,
      grid: [c.TR, c.TC],
      acc: c.ACC_FIXED ? "fixed" : "loop",
      rebuild: (a) => attentionForward(gpu, a, { ...args, variant: "gpu" }),
      segments: segmentsOf(args),
    });
  }
  return [{ kernel, bindGroup, workgroups: [Math.ceil(T / rowsPerGroup), Hq, 1] }];
}

/**
 * dq, dk, dv of the attention (written, not accumulated), in three dispatches without float
 * atomics: delta = rowsum(dO∘O) into the workspace; dQ per (query tile, q head); dK and dV per
 * (key tile, kv head), looping over the q heads of its group and the query tiles that see it.
 * A split dK/dV (attention_gpu, AttentionGrid) runs per (key tile, kv head, part of the group) and
 * adds a fourth dispatch that sums the parts. The "gpu" variant's band forms (AttentionForm) run the
 * delta pass, then attention_band.wgsl's P/dS, dQ and dK/dV (and the reduce when split).
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

  const variant = args.variant ?? attentionVariant(gpu);
  if (variant === "row" && attentionRowTakes(D)) {
    const blocks = Math.ceil(T / (ROW_RR * ROW_WG));
    const dq = rowEntry(gpu, "attention_row_backward_dq", D, args.layout);
    const dkv = rowEntry(gpu, "attention_row_backward_dkv", D, args.layout);
    const kDq = gpu.kernel("attention_row", dq, rowConfig(D));
    const kDkv = gpu.kernel("attention_row", dkv, rowConfig(D));
    const inputs = { 3: args.q, 4: args.k, 5: args.v, 8: args.dout, 9: args.lse, 10: delta };
    const dqDispatches = windowedDispatches(gpu, arena, "attention_row_backward_dq_u", args, {
      1: args.dq,
      3: args.q,
      6: args.seqStart,
      8: args.dout,
      9: args.lse,
      10: delta,
    }) ?? [{
      kernel: kDq,
      bindGroup: gpu.bind(kDq, { 0: prm, 1: args.dq, 6: args.seqStart, ...inputs }),
      workgroups: [blocks, Hq, 1] as [number, number, number],
    }];
    return [dDelta, ...dqDispatches, {
      kernel: kDkv,
      bindGroup: gpu.bind(kDkv, { 0: prm, 1: args.dk, 2: args.dv, 7: args.seqEnd, ...inputs }),
      workgroups: [blocks, Hkv, 1],
    }];
  }
  const gpuVariant = variant === "gpu" && attentionGpuTakes(D, args.layout);
  if (gpuVariant) {
    const form = passForm(
      gpu,
      "backward",
      args,
      (a) => attentionBackward(gpu, a, { ...args, variant: "gpu" }),
    );
    if (form !== "flash") {
      const parts = form === "band-split" ? Hq / Hkv : 1;
      const split = { parts, dvOff: dkvSplitLayout(args, parts).dvOff / 4 };
      const { prm, chunks } = bandLaunch(arena, args, form, split);
      return [dDelta, ...attentionBandBackward(gpu, prm, { ...args, delta }, parts, chunks)];
    }
  }
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
  // A split dK/dV writes `parts` partial dK and dV into the scratch, then one pass sums them.
  const group = Hq / Hkv;
  const parts = gpuVariant ? dkvPartsFor(gpu, keyDkv, group) : 1;
  const { dvOff } = dkvSplitLayout(args, parts);
  const prmDkv = parts > 1 ? params(arena, args, { parts, dvOff: dvOff / 4 }) : prm;
  const split = dkvSplit(gpu, prmDkv, args, parts);
  const dDkv: Dispatch = {
    kernel: kDkv,
    bindGroup: gpu.bind(kDkv, {
      0: prmDkv,
      ...split.outputs,
      3: args.q,
      4: args.k,
      5: args.v,
      6: args.seqStart,
      7: args.seqEnd,
      8: args.dout,
      9: args.lse,
      10: delta,
    }),
    workgroups: [Math.ceil(T / (4 * (gpuVariant ? cDkv.TR : cDkv.RQ))), Hkv * parts, 1],
  };
  const out = [dDelta, dDq, dDkv, ...split.reduce];
  if (gpuVariant && attnRecorders.has(gpu)) {
    const again = (a: ParamArena) => attentionBackward(gpu, a, { ...args, variant: "gpu" });
    record(gpu, keyDq, {
      entry: "dq",
      D,
      group,
      grid: [cDq.TR, cDq.TC],
      acc: cDq.ACC_FIXED ? "fixed" : "loop",
      rebuild: (a) => [again(a)[1]],
      segments: segmentsOf(args),
    });
    record(gpu, keyDkv, {
      entry: "dkv",
      D,
      group,
      grid: parts > 1 ? [cDkv.TR, cDkv.TC, parts] : [cDkv.TR, cDkv.TC],
      acc: cDkv.ACC_FIXED ? "fixed" : "loop",
      rebuild: (a) => again(a).slice(2),
      segments: segmentsOf(args),
    });
  }
  return out;
}
