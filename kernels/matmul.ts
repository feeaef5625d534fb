// Launchers for the linear-layer products (forward, dX, dW, bias grad) on one strided GEMM kernel.
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
  sharedScratch,
  UNIFORM_WINDOW_BYTES,
} from "./runtime.ts";

/** A tensor argument: a whole buffer or a slice of one (offset aligned to 256 bytes). */
export type Tensor = GPUBuffer | BufferSlice;

/** Which GEMM implementation runs, and its tile sizes (override constants). */
export interface MatmulTuning {
  /**
   * "gpu": per shape, matmul_big (128x128 tiles) for large grids, matmul_tiled (64x64) otherwise,
   * split along K when the grid is too small to fill the device (GPU default); "tiled" / "big":
   * always that kernel; "cpu": matmul_vec where `vec` and the shape allow, else matmul_wide, with
   * per-shape block sizes from `wideChoices` (CPU default); "wide": matmul_wide with exactly
   * wideWg / wideRows / wideCols; "vec": matmul_vec with exactly vecRows / vecCols where the shape
   * allows, matmul_wide (as "wide") elsewhere.
   */
  variant: "gpu" | "tiled" | "big" | "cpu" | "wide" | "vec";
  /** "tiled" / "big": split K into this many slices (1: no split); ignored by "gpu" and "wide". */
  splitK: number;
  /** Use the 16-byte-load kernels (matmul_*_v4) when strides and offsets allow. */
  vec4: boolean;
  /**
   * Arithmetic of the GPU kernels: "f32" (default), or "f16" where the adapter offers
   * `shader-f16`: operands rounded to f16 in the staged tiles, f16 multiply-adds summed in f32 every
   * 16 products (matmul_f16.wgsl), for the shapes the 16-byte kernels take. Storage stays f32.
   * CPU adapters' matmul_wide ignores it.
   */
  precision: "f32" | "f16";
  /** "gpu": use matmul_big when its grid has at least this many workgroups. */
  bigMinWorkgroups: number;
  /** "gpu": split K while the grid has fewer workgroups than this (and K ≥ 1024). */
  splitMinWorkgroups: number;
  /**
   * "gpu": per-shape choices (tile, K slices) measured by kernels/matmul_tune.ts, keyed by
   * gemmKey; shapes not in it fall back to the grid thresholds.
   */
  choices?: Map<string, GemmChoice>;
  /** "cpu": per-shape matmul_vec / matmul_wide blocks measured by kernels/matmul_tune.ts, by gemmKey. */
  wideChoices?: Map<string, WideConfig>;
  /**
   * "cpu": run matmul_vec (16-byte loads, operands through 64 KiB uniform windows where they fit)
   * for the GEMMs whose operands and C allow it (`vecForms`); matmul_wide otherwise.
   */
  vec: boolean;
  /** matmul_vec: rows per invocation (4, 8, 12 or 16) unless the autotune chose per shape. */
  vecRows: number;
  /** matmul_vec: columns per workgroup (a multiple of 4, 4..32) unless chosen per shape. */
  vecCols: number;
  /** matmul_vec: elements per uniform window (16384 = 64 KiB; smaller only to test the cutting). */
  vecWindow: number;
  /**
   * matmul_vec's uniform windows: "auto" (the cheapest plan by planVec's cost model), "force"
   * (every operand whose buffer allows one, the cheapest such plan: for tests), "off" (storage).
   */
  vecWindows: "auto" | "force" | "off";
  /** matmul_wide: invocations per workgroup. */
  wideWg: number;
  /** matmul_wide: rows per workgroup (1..16). */
  wideRows: number;
  /** matmul_wide: columns per invocation (4, 8, 12 or 16). */
  wideCols: number;
}

// Grid thresholds: an H100 runs 132 SMs, 2 resident 128x128 workgroups each (register bound).
const GPU_DEFAULT = {
  splitK: 1,
  vec4: true,
  precision: "f32" as const,
  bigMinWorkgroups: 256,
  splitMinWorkgroups: 256,
};
/** Elements in matmul_vec's uniform windows (UNIFORM_WINDOW_BYTES of f32). */
export const VEC_WINDOW_ELEMENTS = UNIFORM_WINDOW_BYTES / 4;
const WIDE_DEFAULT = {
  wideWg: 8,
  wideRows: 16,
  wideCols: 16,
  vec: true,
  vecRows: 8, // 8 x 32: within the noise of 16 x 32 at the stories260K GEMMs, compiles in 2/3 the time
  vecCols: 32,
  vecWindow: VEC_WINDOW_ELEMENTS,
  vecWindows: "auto" as const,
};
/** Largest split-K scratch (partial products), well under the 2 GiB binding limit. */
const SPLIT_SCRATCH_MAX_BYTES = 256 * 2 ** 20;
const tunings = new WeakMap<Gpu, MatmulTuning>();

/** True for CPU adapters (lavapipe / llvmpipe / SwiftShader), where matmul_wide is faster. */
export function isCpuAdapter(gpu: Gpu): boolean {
  return gpu.isCpu;
}

/** The tuning used for `gpu`: chosen from the adapter on first use unless set explicitly. */
export function matmulTuning(gpu: Gpu): MatmulTuning {
  let t = tunings.get(gpu);
  if (!t) {
    t = { variant: isCpuAdapter(gpu) ? "cpu" : "gpu", ...GPU_DEFAULT, ...WIDE_DEFAULT };
    tunings.set(gpu, t);
  }
  return t;
}

/** Override (part of) the tuning for `gpu`; applies to dispatches built afterwards. */
export function setMatmulTuning(gpu: Gpu, t: Partial<MatmulTuning>): MatmulTuning {
  const next = { ...matmulTuning(gpu), ...t };
  if (!["gpu", "tiled", "big", "cpu", "wide", "vec"].includes(next.variant)) {
    throw new GpuError(
      `variant must be gpu, tiled, big, cpu, wide or vec, got ${next.variant}`,
      "matmul",
    );
  }
  if (next.precision !== "f32" && next.precision !== "f16") {
    throw new GpuError(`precision must be f32 or f16, got ${next.precision}`, "matmul");
  }
  if (next.precision === "f16" && !gpu.hasF16) {
    throw new GpuError(
      "matmul precision f16 needs the adapter feature shader-f16, which this adapter lacks",
      "matmul",
    );
  }
  if (!Number.isInteger(next.splitK) || next.splitK < 1 || next.splitK > 64) {
    throw new GpuError(`splitK must be 1..64, got ${next.splitK}`, "matmul");
  }
  if (!Number.isInteger(next.wideRows) || next.wideRows < 1 || next.wideRows > 16) {
    throw new GpuError(`wideRows must be 1..16, got ${next.wideRows}`, "matmul");
  }
  if (![4, 8, 12, 16].includes(next.wideCols)) {
    throw new GpuError(`wideCols must be 4, 8, 12 or 16, got ${next.wideCols}`, "matmul");
  }
  if (![4, 8, 12, 16].includes(next.vecRows)) {
    throw new GpuError(`vecRows must be 4, 8, 12 or 16, got ${next.vecRows}`, "matmul");
  }
  if (
    !Number.isInteger(next.vecCols) || next.vecCols % 4 || next.vecCols < 4 || next.vecCols > 32
  ) {
    throw new GpuError(`vecCols must be a multiple of 4 in 4..32, got ${next.vecCols}`, "matmul");
  }
  if (!["auto", "force", "off"].includes(next.vecWindows)) {
    throw new GpuError(`vecWindows must be auto, force or off, got ${next.vecWindows}`, "matmul");
  }
  if (
    !Number.isInteger(next.vecWindow) || next.vecWindow < 64 ||
    next.vecWindow > VEC_WINDOW_ELEMENTS
  ) {
    throw new GpuError(
      `vecWindow must be 64..${VEC_WINDOW_ELEMENTS} elements, got ${next.vecWindow}`,
      "matmul",
    );
  }
  const maxWg = gpu.limits.maxComputeInvocationsPerWorkgroup;
  if (!Number.isInteger(next.wideWg) || next.wideWg < 1 || next.wideWg > maxWg) {
    throw new GpuError(`wideWg must be 1..${maxWg}, got ${next.wideWg}`, "matmul");
  }
  tunings.set(gpu, next);
  return next;
}

/**
 * True when both operands can be read as vec4s: the unit-stride axis (K, or i / j) has a length,
 * the other stride and the offset that are multiples of 4, as in every transformer shape.
 */
export function gemmVec4Ok(g: GemmArgs): boolean {
  const m4 = (...xs: number[]) => xs.every((x) => x % 4 === 0);
  const offA = g.offA ?? 0, offB = g.offB ?? 0;
  const aOk = (g.sAp === 1 && m4(g.K, g.sAi, offA)) || (g.sAi === 1 && m4(g.M, g.sAp, offA));
  const bOk = (g.sBp === 1 && m4(g.K, g.sBj, offB)) || (g.sBj === 1 && m4(g.N, g.sBp, offB));
  return aOk && bOk;
}

/**
 * CPU-adapter block sizes: matmul_wide's invocations per workgroup, rows per workgroup and columns
 * per invocation, or with `vec`, matmul_vec's rows per invocation and columns per workgroup (wg 8).
 */
export interface WideConfig {
  wg: number;
  rows: number;
  cols: number;
  vec?: boolean;
}

/** A measured choice for one GEMM shape: output tile edge and number of K slices. */
export interface GemmChoice {
  tile: 64 | 128;
  slices: number;
  /** Use the 16-byte-load kernel when the shape allows it (absent: true). */
  vec4?: boolean;
  /** Use the f16-arithmetic kernel (precision "f16" and 16-byte loads only; absent: false). */
  f16?: boolean;
}

/**
 * The autotune key of a GEMM: its sizes, which operand axes are contiguous, whether the 16-byte
 * kernels apply and, if so, whether f16 arithmetic is allowed (offsets and leading strides do not
 * change the choice).
 */
export function gemmKey(g: GemmArgs, vec4Ok = gemmVec4Ok(g), f16 = false): string {
  const a = g.sAp === 1 ? "k" : "i", b = g.sBj === 1 ? "j" : "k";
  return `${g.M}x${g.N}x${g.K}:a${a}b${b}${vec4Ok ? (f16 ? ":v4:h" : ":v4") : ""}`;
}

/** How one GEMM runs on the GPU kernels: which one, its grid, and the K split. */
export interface GemmPlan {
  entry:
    | "matmul_tiled"
    | "matmul_tiled_v4"
    | "matmul_tiled_h"
    | "matmul_big"
    | "matmul_big_v4"
    | "matmul_big_h";
  tile: number;
  slices: number;
  kSlice: number;
}

/** The GPU kernel, tile and K split for an (M, N, K) product under tuning `t`. */
export function planGemm(
  t: MatmulTuning,
  M: number,
  N: number,
  K: number,
  vec4Ok = false,
  key?: string,
): GemmPlan {
  const grid = (tile: number) => Math.ceil(M / tile) * Math.ceil(N / tile);
  const chosen = t.variant === "gpu" && key ? t.choices?.get(key) : undefined;
  let tile = t.variant === "big" ? 128 : 64;
  if (t.variant === "gpu" && grid(128) >= t.bigMinWorkgroups) tile = 128;
  if (chosen) tile = chosen.tile;
  let slices = t.variant === "gpu" ? (chosen?.slices ?? 1) : t.splitK;
  if (!chosen && t.variant === "gpu" && grid(tile) < t.splitMinWorkgroups && K >= 1024) {
    // at least 512 of K per slice, enough slices to reach the target grid
    slices = Math.min(Math.floor(K / 512), Math.ceil(t.splitMinWorkgroups / grid(tile)));
  }
  slices = Math.max(1, Math.min(slices, Math.floor(SPLIT_SCRATCH_MAX_BYTES / (4 * M * N))));
  let kSlice = K;
  if (slices > 1) {
    kSlice = Math.ceil(K / slices / 16) * 16; // whole staged slices
    slices = Math.ceil(K / kSlice);
  }
  if (slices <= 1) kSlice = K;
  const v4 = t.vec4 && vec4Ok && (chosen?.vec4 ?? true);
  // f16 where allowed, unless the autotune measured f32 faster for this shape
  const h = v4 && t.precision === "f16" && (chosen ? chosen.f16 ?? false : true);
  const entry = tile === 64
    ? (h ? "matmul_tiled_h" : v4 ? "matmul_tiled_v4" : "matmul_tiled")
    : (h ? "matmul_big_h" : v4 ? "matmul_big_v4" : "matmul_big");
  return { entry, tile, slices, kSlice };
}

/** A GEMM seen while recording: the arguments of its first call and the plan it got. */
export interface RecordedGemm {
  args: GemmArgs;
  /** GPU kernels: the plan used; null on matmul_wide. */
  plan: GemmPlan | null;
  /** matmul_wide: the block sizes used. */
  wide?: WideConfig;
}

const recorders = new WeakMap<Gpu, Map<string, RecordedGemm>>();

/** Start recording the distinct GEMM shapes built on `gpu` (GPU kernels only). */
export function startGemmRecording(gpu: Gpu): void {
  recorders.set(gpu, new Map());
}

/** Stop recording and return the distinct GEMMs seen, by gemmKey. */
export function stopGemmRecording(gpu: Gpu): Map<string, RecordedGemm> {
  const rec = recorders.get(gpu) ?? new Map();
  recorders.delete(gpu);
  return rec;
}

const dummies = new WeakMap<Gpu, GPUBuffer>();

/** A 16-byte storage buffer bound where a kernel declares an optional input that is unused. */
export function dummyBuffer(gpu: Gpu): GPUBuffer {
  let d = dummies.get(gpu);
  if (!d) {
    d = gpu.buffer("matmul.dummy", 16);
    dummies.set(gpu, d);
  }
  return d;
}

/** Arguments of the generic GEMM (all strides and offsets in elements). */
export interface GemmArgs {
  c: Tensor; // output (M, ldc)
  a: Tensor; // A (i, p) = a[offA + i*sAi + p*sAp]
  b: Tensor; // B (p, j) = b[offB + p*sBp + j*sBj]
  bias?: Tensor; // (N), added to every row
  M: number;
  N: number;
  K: number;
  sAi: number;
  sAp: number;
  sBp: number;
  sBj: number;
  ldc: number;
  offA?: number;
  offB?: number;
  offC?: number;
  offBias?: number;
  alpha?: number;
  accumulate?: boolean;
}

function checkDims(what: string, dims: Record<string, number>): void {
  for (const [k, v] of Object.entries(dims)) {
    if (!Number.isInteger(v) || v < 1 || v >= 2 ** 32) {
      throw new GpuError(`${k} must be a positive integer, got ${v}`, what);
    }
  }
}

/** How matmul_vec reads a GEMM's operands: A along K (0) or across rows (1), B alike. */
export interface VecForms {
  av: 0 | 1;
  bv: 0 | 1;
}

/**
 * The 16-byte forms matmul_vec can read this GEMM with, or null (matmul_wide then): A needs unit
 * stride along K or along i, B along K or along j, with the other stride, the offset and the
 * unit-stride length multiples of 4; C needs ldc, offC and N multiples of 4.
 */
export function vecForms(g: GemmArgs): VecForms | null {
  const m4 = (...xs: number[]) => xs.every((x) => x % 4 === 0);
  const offA = g.offA ?? 0, offB = g.offB ?? 0;
  if (!m4(g.offC ?? 0, g.ldc, g.N)) return null;
  const av = g.sAp === 1 && m4(g.K, g.sAi, offA) ? 0 : g.sAi === 1 && m4(g.M, g.sAp, offA) ? 1 : -1;
  const bv = g.sBp === 1 && m4(g.K, g.sBj, offB) ? 0 : g.sBj === 1 && m4(g.N, g.sBp, offB) ? 1 : -1;
  return av < 0 || bv < 0 ? null : { av: av as 0 | 1, bv: bv as 0 | 1 };
}

/**
 * How one GEMM is cut for matmul_vec: chunks of rc rows, jc columns and pc of K, one dispatch
 * each, with A and/or B read through 64 KiB uniform windows (au / bu).
 */
export interface VecPlan {
  au: boolean;
  bu: boolean;
  rc: number;
  jc: number;
  pc: number;
  dispatches: number;
  /** Modelled cost (instructions, see planVec); lower is better. */
  cost: number;
}

// Cost model of planVec, in x86 instructions per 8-lane vector on lavapipe (counted in the
// GALLIVM_DEBUG=asm output of matmul_vec): a vec4 load from storage (8 lanes × (mask test +
// 4 × bounds-checked scalar load)), from a uniform window (branch-free gather), the multiply-add
// of one accumulator (with its spill), and one dispatch (about 35 µs on 2 cores).
const COST_STORAGE_V4 = 336;
const COST_UNIFORM_V4 = 112;
const COST_MAC = 2.5;
const COST_DISPATCH = 140_000;

function tensorBinding(t: Tensor): { buffer: GPUBuffer; offset: number } {
  return t instanceof GPUBuffer
    ? { buffer: t, offset: 0 }
    : { buffer: t.buffer, offset: t.offset ?? 0 };
}

/** Whether `t`'s buffer can back a 64 KiB uniform window. */
function windowable(t: Tensor): boolean {
  const { buffer } = tensorBinding(t);
  return (buffer.usage & GPUBufferUsage.UNIFORM) !== 0 && buffer.size >= UNIFORM_WINDOW_BYTES;
}

/**
 * The cheapest way (by the cost model) to run `g` on matmul_vec with VR rows per invocation and
 * VC columns per workgroup, given which operands may use windows of `window` elements (less the
 * offset-alignment slack `slack`): tries K whole and K cut so that B or A fits, each operand with
 * and without a window (with `force`, the plans with the most windows). `threads`: how many threads
 * the adapter runs a dispatch's workgroups on (lavapipe: one per CPU).
 */
export function planVec(
  g: GemmArgs,
  cfg: { rows: number; cols: number },
  allow: { a: boolean; b: boolean },
  window: number,
  slack: number,
  force = false,
  threads = 1,
): VecPlan {
  const { M, N, K, sAi, sAp, sBp, sBj } = g;
  const cap = window - slack;
  const rowsUnit = 8 * cfg.rows, colsUnit = cfg.cols;
  const spanA = (rc: number, pc: number) => (rc - 1) * sAi + (pc - 1) * sAp + 1;
  const spanB = (pc: number, jc: number) => (pc - 1) * sBp + (jc - 1) * sBj + 1;
  const down4 = (x: number) => Math.floor(x / 4) * 4;
  // largest chunk length n along one axis (stride) with rest + (n - 1) * stride + 1 <= cap
  const fit = (rest: number, stride: number) =>
    stride === 0 ? Infinity : Math.floor((cap - 1 - rest) / stride) + 1;
  const pcs = new Set<number>([K]);
  const addPc = (pc: number) => {
    const v = down4(Math.min(pc, K));
    if (v >= 4 && v < K) pcs.add(v);
  };
  if (allow.b) {
    addPc(fit((Math.min(N, colsUnit) - 1) * sBj, sBp));
    addPc(fit((N - 1) * sBj, sBp));
  }
  if (allow.a) {
    addPc(fit((Math.min(M, rowsUnit) - 1) * sAi, sAp));
    addPc(fit((M - 1) * sAi, sAp));
  }
  // one axis's chunk: the whole axis if it fits, else whole units (workgroups) that fit, else a
  // multiple of 4 (part of a workgroup), else infeasible (0)
  const chunk = (n: number, unit: number, maxFit: number) =>
    maxFit >= n ? n : maxFit >= unit ? Math.floor(maxFit / unit) * unit : down4(maxFit);
  // workgroups along an axis of n cut into chunks of c, `unit` per workgroup
  const units = (n: number, c: number, unit: number) =>
    Math.floor(n / c) * Math.ceil(c / unit) + (n % c ? Math.ceil((n % c) / unit) : 0);
  let best: VecPlan | null = null, forced: VecPlan | null = null;
  for (const pc of pcs) {
    const nP = Math.ceil(K / pc);
    for (const au of allow.a ? [false, true] : [false]) {
      for (const bu of allow.b ? [false, true] : [false]) {
        const rc = au ? chunk(M, rowsUnit, fit((pc - 1) * sAp, sAi)) : M;
        const jc = bu ? chunk(N, colsUnit, fit((pc - 1) * sBp, sBj)) : N;
        if (rc <= 0 || jc <= 0) continue;
        if ((au && spanA(rc, pc) > cap) || (bu && spanB(pc, jc) > cap)) continue;
        const dispatches = Math.ceil(M / rc) * Math.ceil(N / jc) * nP;
        // every chunk runs whole workgroups: a chunk of fewer rows (columns) than a workgroup
        // covers costs a whole workgroup's work all the same
        let steps = units(M, rc, rowsUnit) * units(N, jc, colsUnit) * Math.ceil(K / 4);
        // and the adapter's `threads` share a dispatch's workgroups: a dispatch of 3 workgroups
        // on 2 threads takes as long as one of 4
        const wgs = Math.ceil(Math.min(rc, M) / rowsUnit) * Math.ceil(Math.min(jc, N) / colsUnit);
        steps *= (Math.ceil(wgs / threads) * threads) / wgs;
        const perStep = cfg.rows * (au ? COST_UNIFORM_V4 : COST_STORAGE_V4) +
          cfg.cols * (bu ? COST_UNIFORM_V4 : COST_STORAGE_V4) + cfg.rows * cfg.cols * COST_MAC;
        const accumulate = (nP - 1) * (M * N / 4) * 2 * (COST_STORAGE_V4 / 8);
        const cost = steps * perStep + accumulate + dispatches * COST_DISPATCH;
        const plan = { au, bu, rc, jc, pc, dispatches, cost };
        const windows = Number(au) + Number(bu);
        const forcedWindows = forced ? Number(forced.au) + Number(forced.bu) : -1;
        if (
          force && (windows > forcedWindows || (windows === forcedWindows && cost < forced!.cost))
        ) {
          forced = plan;
        }
        if (!best || cost < best.cost) best = plan;
      }
    }
  }
  return forced ?? best!; // pc = K without windows is always feasible
}

const dummyUniforms = new WeakMap<Gpu, GPUBuffer>();

/** A 64 KiB uniform buffer bound to matmul_vec's window slots that a dispatch does not read. */
function dummyUniform(gpu: Gpu): GPUBuffer {
  let d = dummyUniforms.get(gpu);
  if (!d) {
    d = gpu.device.createBuffer({
      label: "matmul_vec.dummy_window",
      size: UNIFORM_WINDOW_BYTES,
      usage: GPUBufferUsage.UNIFORM,
    });
    dummyUniforms.set(gpu, d);
  }
  return d;
}

/**
 * The 64 KiB window of `t`'s buffer that holds its elements [first, first + span) (relative to
 * the tensor's binding): the window's byte offset (aligned, and inside the buffer) and the
 * element offset of `first` within it.
 */
function windowAt(gpu: Gpu, t: Tensor, first: number): { offset: number; rel: number } {
  const { buffer, offset } = tensorBinding(t);
  const align = gpu.limits.minUniformBufferOffsetAlignment;
  const bytes = UNIFORM_WINDOW_BYTES;
  const at = offset + 4 * first;
  const start = Math.min(
    Math.floor(at / align) * align,
    Math.floor((buffer.size - bytes) / align) * align,
  );
  return { offset: start, rel: (at - start) / 4 };
}

/** The chunks of `plan` (first row, column and K index, and lengths), in dispatch order. */
function* vecChunks(g: GemmArgs, plan: VecPlan) {
  for (let i0 = 0; i0 < g.M; i0 += plan.rc) {
    for (let j0 = 0; j0 < g.N; j0 += plan.jc) {
      for (let p0 = 0; p0 < g.K; p0 += plan.pc) {
        const Mc = Math.min(plan.rc, g.M - i0), Nc = Math.min(plan.jc, g.N - j0);
        yield { i0, j0, p0, Mc, Nc, Kc: Math.min(plan.pc, g.K - p0) };
      }
    }
  }
}

/** Whether every chunk of `plan` lies inside the 64 KiB uniform window bound for it. */
export function vecPlanFits(gpu: Gpu, g: GemmArgs, plan: VecPlan): boolean {
  const window = UNIFORM_WINDOW_BYTES / 4;
  const offA = g.offA ?? 0, offB = g.offB ?? 0;
  for (const { i0, j0, p0, Mc, Nc, Kc } of vecChunks(g, plan)) {
    if (plan.au) {
      const { rel } = windowAt(gpu, g.a, offA + i0 * g.sAi + p0 * g.sAp);
      if (rel + (Mc - 1) * g.sAi + (Kc - 1) * g.sAp + 1 > window) return false;
    }
    if (plan.bu) {
      const { rel } = windowAt(gpu, g.b, offB + p0 * g.sBp + j0 * g.sBj);
      if (rel + (Kc - 1) * g.sBp + (Nc - 1) * g.sBj + 1 > window) return false;
    }
  }
  return true;
}

/** matmul_vec dispatches for `g` (see VecPlan): one per chunk, in K order within each block. */
function matmulVec(
  gpu: Gpu,
  arena: ParamArena,
  g: GemmArgs,
  forms: VecForms,
  cfg: { rows: number; cols: number },
): Dispatch[] {
  const t = matmulTuning(gpu);
  const on = t.vecWindows !== "off";
  const allow = { a: on && windowable(g.a), b: on && windowable(g.b) };
  const force = t.vecWindows === "force";
  // Windows start at an aligned offset: a chunk that starts off alignment loses up to `slack`
  // elements of its window. Plan for full windows first (the common case: aligned tensors and
  // strides, up to twice the rows per window at K = 64, so half the dispatches), and keep the
  // plan only if every chunk really fits.
  const slack = gpu.limits.minUniformBufferOffsetAlignment / 4;
  const threads = navigator.hardwareConcurrency ?? 1; // lavapipe's worker threads
  let plan = planVec(g, cfg, allow, t.vecWindow, 0, force, threads);
  if (!vecPlanFits(gpu, g, plan)) {
    plan = planVec(g, cfg, allow, t.vecWindow, slack, force, threads);
    // a window shifted back from the end of a buffer whose size is not aligned: no windows
    if (!vecPlanFits(gpu, g, plan)) {
      plan = planVec(g, cfg, { a: false, b: false }, t.vecWindow, slack, false, threads);
    }
  }
  const out: Dispatch[] = [];
  const offA = g.offA ?? 0, offB = g.offB ?? 0, offC = g.offC ?? 0, offBias = g.offBias ?? 0;
  const win = (u: boolean, x: Tensor, first: number) => {
    if (!u) return { bind: dummyUniform(gpu) as Tensor, rel: first };
    const w = windowAt(gpu, x, first);
    const bind: Tensor = {
      buffer: tensorBinding(x).buffer,
      offset: w.offset,
      size: UNIFORM_WINDOW_BYTES,
    };
    return { bind, rel: w.rel };
  };
  for (const { i0, j0, p0, Mc, Nc, Kc } of vecChunks(g, plan)) {
    const accumulate = !!g.accumulate || p0 > 0;
    const bias = !!g.bias && p0 === 0;
    const flags = (accumulate ? 1 : 0) | (bias ? 2 : 0);
    const wa = win(plan.au, g.a, offA + i0 * g.sAi + p0 * g.sAp);
    const wb = win(plan.bu, g.b, offB + p0 * g.sBp + j0 * g.sBj);
    const params = arena.alloc(packParams([
      Mc,
      Nc,
      Kc,
      g.ldc,
      g.sAi,
      g.sAp,
      g.sBp,
      g.sBj,
      wa.rel,
      wb.rel,
      offC + i0 * g.ldc + j0,
      flags,
      g.alpha ?? 1,
      offBias + j0,
      Kc,
      0,
    ], [12]));
    const kernel = gpu.kernel("matmul_vec", "matmul_vec", {
      VR: cfg.rows,
      VC: cfg.cols,
      AV: forms.av,
      BV: forms.bv,
      AU: plan.au ? 1 : 0,
      BU: plan.bu ? 1 : 0,
      VFLAGS: flags,
    });
    const bindGroup = gpu.bind(kernel, {
      0: params,
      1: g.c,
      2: g.a,
      3: g.b,
      4: g.bias ?? dummyBuffer(gpu),
      5: wb.bind,
      6: wa.bind,
    });
    out.push({
      kernel,
      bindGroup,
      workgroups: [Math.ceil(Nc / cfg.cols), Math.ceil(Mc / (8 * cfg.rows)), 1],
    });
  }
  return out;
}

/**
 * One GEMM dispatch: C[i, j] (+)= alpha * sum_p A(i, p) * B(p, j) (+ bias[j]) with arbitrary
 * strides, so transposed operands need no copies. The building block of every launcher here and
 * of the chunked cross-entropy.
 */
export function matmulGemm(gpu: Gpu, arena: ParamArena, g: GemmArgs): Dispatch[] {
  checkDims("matmul", { M: g.M, N: g.N, K: g.K });
  if (g.ldc < g.N) throw new GpuError(`ldc ${g.ldc} < N ${g.N}`, "matmul");
  const flags = (g.accumulate ? 1 : 0) | (g.bias ? 2 : 0);
  const t = matmulTuning(gpu);
  const v4ok = gemmVec4Ok(g);
  const onWide = t.variant === "wide" || t.variant === "cpu" || t.variant === "vec";
  const key = gemmKey(g, v4ok, !onWide && t.precision === "f16");
  const plan = onWide ? null : planGemm(t, g.M, g.N, g.K, v4ok, key);
  const forms = onWide ? vecForms(g) : null;
  const wideFixed: WideConfig = { wg: t.wideWg, rows: t.wideRows, cols: t.wideCols };
  const vecFixed: WideConfig = { wg: 8, rows: t.vecRows, cols: t.vecCols, vec: true };
  let wide: WideConfig = t.variant === "vec" && forms ? vecFixed : wideFixed;
  if (t.variant === "cpu") {
    const chosen = t.wideChoices?.get(key);
    const vecOk = t.vec && forms !== null;
    wide = chosen && (!chosen.vec || vecOk) ? chosen : vecOk ? vecFixed : wideFixed;
  }
  const rec = recorders.get(gpu);
  if (rec && !rec.has(key)) rec.set(key, { args: g, plan, wide: onWide ? wide : undefined });
  if (wide.vec && forms) return matmulVec(gpu, arena, g, forms, wide);
  const slices = plan?.slices ?? 1;
  const sliceStride = g.M * g.N;
  const pack = (over: { flags: number; K: number }) =>
    arena.alloc(packParams([
      g.M,
      g.N,
      over.K,
      g.ldc,
      g.sAi,
      g.sAp,
      g.sBp,
      g.sBj,
      g.offA ?? 0,
      g.offB ?? 0,
      g.offC ?? 0,
      over.flags,
      g.alpha ?? 1,
      g.offBias ?? 0,
      plan && slices > 1 ? plan.kSlice : g.K,
      sliceStride,
    ], [12]));
  const maxWg = gpu.limits.maxComputeWorkgroupsPerDimension;
  const file = plan?.entry.endsWith("_h") ? "matmul_f16" : "matmul";
  const kernel = plan ? gpu.kernel(file, plan.entry) : gpu.kernel("matmul", "matmul_wide", {
    WIDE_WG: wide.wg,
    WIDE_TR: wide.rows,
    WIDE_TC: wide.cols,
  });
  const workgroups: [number, number, number] = plan
    ? [Math.ceil(g.N / plan.tile), Math.ceil(g.M / plan.tile), slices]
    : [Math.ceil(g.N / (wide.wg * wide.cols)), Math.ceil(g.M / wide.rows), 1];
  if (workgroups[0] > maxWg || workgroups[1] > maxWg) {
    throw new GpuError(`grid ${workgroups} exceeds ${maxWg} workgroups per dimension`, kernel.name);
  }
  if (slices === 1) {
    const bindGroup = gpu.bind(kernel, {
      0: pack({ flags, K: g.K }),
      1: g.c,
      2: g.a,
      3: g.b,
      4: g.bias ?? dummyBuffer(gpu),
    });
    return [{ kernel, bindGroup, workgroups }];
  }
  // Split K: partial products into the scratch, then one pass sums them into C.
  const scratch = sharedScratch(gpu, "matmul.splitk_scratch", 4 * slices * sliceStride, 1 << 20);
  const partial: Dispatch = {
    kernel,
    bindGroup: gpu.bind(kernel, {
      0: pack({ flags: 0, K: g.K }),
      1: scratch,
      2: g.a,
      3: g.b,
      4: dummyBuffer(gpu),
    }),
    workgroups,
  };
  const kReduce = gpu.kernel("matmul", "matmul_splitk_reduce");
  const groups = Math.ceil(sliceStride / 64);
  const gx = Math.min(groups, maxWg);
  const reduce: Dispatch = {
    kernel: kReduce,
    bindGroup: gpu.bind(kReduce, {
      0: pack({ flags, K: slices }),
      1: g.c,
      2: scratch,
      4: g.bias ?? dummyBuffer(gpu),
    }),
    workgroups: [gx, Math.ceil(groups / gx), 1],
  };
  return [partial, reduce];
}

/** Y (+)= X·Wᵀ (+ bias): X (M,K), W (N,K), Y (M, ldy ≥ N), bias (N). */
export function matmulForward(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    y: Tensor; // (M, ldy)
    x: Tensor; // (M, K)
    w: Tensor; // (N, K)
    bias?: Tensor; // (N)
    M: number;
    N: number;
    K: number;
    accumulate?: boolean;
    ldy?: number;
  },
): Dispatch[] {
  const { M, N, K } = args;
  return matmulGemm(gpu, arena, {
    c: args.y,
    a: args.x,
    b: args.w,
    bias: args.bias,
    M,
    N,
    K,
    sAi: K,
    sAp: 1,
    sBp: 1,
    sBj: K,
    ldc: args.ldy ?? N,
    accumulate: args.accumulate,
  });
}

/** dX (+)= dY·W: dY (M, lddy ≥ N), W (N,K), dX (M,K). */
export function matmulBackwardInput(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    dx: Tensor; // (M, K)
    dy: Tensor; // (M, lddy)
    w: Tensor; // (N, K)
    M: number;
    N: number;
    K: number;
    accumulate?: boolean;
    lddy?: number;
  },
): Dispatch[] {
  const { M, N, K } = args;
  return matmulGemm(gpu, arena, {
    c: args.dx,
    a: args.dy,
    b: args.w,
    M,
    N: K,
    K: N,
    sAi: args.lddy ?? N,
    sAp: 1,
    sBp: K,
    sBj: 1,
    ldc: K,
    accumulate: args.accumulate,
  });
}

/** dW (+)= dYᵀ·X: dY (M, lddy ≥ N), X (M,K), dW (N,K). */
export function matmulBackwardWeight(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    dw: Tensor; // (N, K)
    dy: Tensor; // (M, lddy)
    x: Tensor; // (M, K)
    M: number;
    N: number;
    K: number;
    accumulate?: boolean;
    lddy?: number;
  },
): Dispatch[] {
  const { M, N, K } = args;
  return matmulGemm(gpu, arena, {
    c: args.dw,
    a: args.dy,
    b: args.x,
    M: N,
    N: K,
    K: M,
    sAi: 1,
    sAp: args.lddy ?? N,
    sBp: K,
    sBj: 1,
    ldc: K,
    accumulate: args.accumulate,
  });
}

/** db (+)= Σ_m dY[m, :]: dY (M, lddy ≥ N), db (N); summed in a fixed order (deterministic). */
export function biasBackward(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    db: Tensor; // (N)
    dy: Tensor; // (M, lddy)
    M: number;
    N: number;
    accumulate?: boolean;
    lddy?: number;
  },
): Dispatch[] {
  const { M, N } = args;
  checkDims("matmul_bias_backward", { M, N });
  const lddy = args.lddy ?? N;
  if (lddy < N) throw new GpuError(`lddy ${lddy} < N ${N}`, "matmul_bias_backward");
  const params = arena.alloc(packParams([
    M,
    N,
    1,
    N,
    lddy,
    1,
    0,
    0,
    0,
    0,
    0,
    args.accumulate ? 1 : 0,
    1,
    0,
    0,
    0,
  ], [12]));
  const kernel = gpu.kernel("matmul", "matmul_bias_backward");
  const bindGroup = gpu.bind(kernel, { 0: params, 1: args.db, 2: args.dy });
  return [{ kernel, bindGroup, workgroups: [Math.ceil(N / 64), 1, 1] }];
}
