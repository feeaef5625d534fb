// Launchers for the fused, vocabulary-chunked cross-entropy (the full T × V logits never exist).
import { fixedLossScale } from "./adamw.ts";
import { dummyBuffer, matmulGemm, type Tensor } from "./matmul.ts";
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
} from "./runtime.ts";

const STATS = 4; // floats per token of the running statistics: max, Σexp, z[label], lse

/**
 * Default vocabulary chunk width: all of V when it fits, else a multiple of 64 of at most 8192,
 * small enough that the (T, chunk) logits fit one storage binding of `maxBinding` bytes.
 */
export function crossEntropyChunk(T: number, V: number, maxBinding = 128 * 2 ** 20): number {
  const fit = Math.floor(maxBinding / (Math.max(T, 1) * 4));
  let c = Math.min(V, 8192, fit);
  if (c < V) c = Math.max(64, c - (c % 64));
  return c;
}

/** The workspace of one cross-entropy launch: a logits chunk and per-token statistics. */
export interface CrossEntropyWorkspace {
  chunk: number;
  logits: BufferSlice; // (T, chunk)
  stats: BufferSlice; // (T, 4)
  destroy(): void;
}

/** Allocate the workspace of a cross-entropy launch for T tokens and vocabulary V. */
export function crossEntropyWorkspace(
  gpu: Gpu,
  T: number,
  V: number,
  chunk?: number,
): CrossEntropyWorkspace {
  const c = chunk ?? crossEntropyChunk(T, V, gpu.limits.maxStorageBufferBindingSize);
  const bufs = [
    gpu.buffer("cross_entropy.logits", T * c * 4),
    gpu.buffer("cross_entropy.stats", T * STATS * 4),
  ];
  return {
    chunk: c,
    logits: { buffer: bufs[0] },
    stats: { buffer: bufs[1] },
    destroy: () => bufs.forEach((b) => b.destroy()),
  };
}

/** Workspace bytes of a cross-entropy launch (for memory plans). */
export function crossEntropyWorkspaceBytes(T: number, V: number, chunk?: number): number {
  const c = chunk ?? crossEntropyChunk(T, V);
  return T * c * 4 + T * STATS * 4;
}

/** Buffers and shape of a cross-entropy launch. */
export interface CrossEntropyArgs {
  h: Tensor; // (T, C) final hidden states (after the final norm)
  w: Tensor; // (V, C) LM head (or tied embedding)
  labels: Tensor; // (T) i32, −100 = ignored
  lossAcc?: Tensor; // (≥1) f32: lossAcc[0] += Σ token losses
  tokenLoss?: Tensor; // (T) per-token loss, 0 where ignored
  T: number;
  C: number;
  V: number;
  /** Multiplier of the logits (1/logits_scaling for Granite, else 1). */
  logitScale: number;
  workspace: CrossEntropyWorkspace;
  /**
   * A head larger than one storage binding, as row shards [v0, v0 + rows) of w (and of dw):
   * chunks never cross a shard. When given, `w` (and `dw`) are ignored.
   */
  shards?: VocabShard[];
}

/** Rows [v0, v0 + rows) of the (V, C) head and of its gradient, each in one binding. */
export interface VocabShard {
  v0: number;
  rows: number;
  w: Tensor;
  dw?: Tensor;
}

/** The vocabulary chunks of a launch: [v0, v0 + n) inside one shard, with element offsets. */
function chunksOf(a: CrossEntropyArgs, dw?: Tensor) {
  const shards = a.shards ?? [{ v0: 0, rows: a.V, w: a.w, dw }];
  const out: { v0: number; n: number; w: Tensor; dw?: Tensor; off: number }[] = [];
  for (const s of shards) {
    for (let r = 0; r < s.rows; r += a.workspace.chunk) {
      const n = Math.min(a.workspace.chunk, s.rows - r);
      out.push({ v0: s.v0 + r, n, w: s.w, dw: s.dw, off: r * a.C });
    }
  }
  return out;
}

function check(gpu: Gpu, a: CrossEntropyArgs): void {
  for (const [k, v] of Object.entries({ T: a.T, C: a.C, V: a.V })) {
    if (!Number.isInteger(v) || v < 1) {
      throw new GpuError(`${k} must be a positive integer, got ${v}`, "cross_entropy");
    }
  }
  const { chunk } = a.workspace;
  if (!Number.isInteger(chunk) || chunk < 1) {
    throw new GpuError(`bad workspace chunk ${chunk}`, "cross_entropy");
  }
  const bytes = a.T * Math.min(chunk, a.V) * 4;
  if (bytes > gpu.limits.maxStorageBufferBindingSize) {
    throw new GpuError(
      `logits chunk of ${bytes} bytes exceeds maxStorageBufferBindingSize; use a smaller chunk`,
      "cross_entropy",
    );
  }
}

/** Workgroup grid covering `n` groups in x and y (x first, at most the per-dimension limit). */
function grid(gpu: Gpu, n: number): [number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const x = Math.min(n, max);
  return [x, Math.ceil(n / x)];
}

/** z chunk = logitScale · h · w[off : off + n·C]ᵀ into the workspace (T, n). */
function logitsChunk(
  gpu: Gpu,
  arena: ParamArena,
  a: CrossEntropyArgs,
  w: Tensor,
  off: number,
  n: number,
) {
  return matmulGemm(gpu, arena, {
    c: a.workspace.logits,
    a: a.h,
    b: w,
    M: a.T,
    N: n,
    K: a.C,
    sAi: a.C,
    sAp: 1,
    sBp: 1,
    sBj: a.C,
    offB: off,
    ldc: n,
    alpha: a.logitScale,
  });
}

/** Pass 1: statistics over every chunk, then loss per token and lossAcc[0] += Σ loss. */
function forwardPart(gpu: Gpu, arena: ParamArena, a: CrossEntropyArgs): Dispatch[] {
  check(gpu, a);
  const { T, V } = a;
  const ws = a.workspace;
  const out: Dispatch[] = [];
  const kStats = gpu.kernel("cross_entropy", "cross_entropy_stats");
  const [gx, gy] = grid(gpu, T);
  for (const { v0, n, w, off } of chunksOf(a)) {
    out.push(...logitsChunk(gpu, arena, a, w, off, n));
    const params = arena.alloc(
      packParams([T, n, n, v0, V, v0 === 0 ? 1 : 0, a.logitScale, 0], [6]),
    );
    out.push({
      kernel: kStats,
      bindGroup: gpu.bind(kStats, { 0: params, 1: ws.stats, 2: ws.logits, 3: a.labels }),
      workgroups: [gx, gy, 1],
    });
  }
  const kFin = gpu.kernel("cross_entropy", "cross_entropy_finalize");
  const flags = (a.tokenLoss ? 1 : 0) | (a.lossAcc ? 2 : 0);
  const params = arena.alloc(packParams([T, 0, 0, 0, V, flags, a.logitScale, 0], [6]));
  out.push({
    kernel: kFin,
    bindGroup: gpu.bind(kFin, {
      0: params,
      1: ws.stats,
      2: a.lossAcc ?? dummyBuffer(gpu),
      3: a.tokenLoss ?? dummyBuffer(gpu),
      4: a.labels,
    }),
    workgroups: [1, 1, 1],
  });
  return out;
}

/**
 * Loss only (evaluation): lossAcc[0] += Σ token losses and tokenLoss (T) when given. Logits are
 * computed one vocabulary chunk at a time into the workspace.
 */
export function crossEntropyForward(
  gpu: Gpu,
  arena: ParamArena,
  args: CrossEntropyArgs,
): Dispatch[] {
  return forwardPart(gpu, arena, args);
}

/**
 * Loss and gradients: pass 1 as crossEntropyForward; pass 2 recomputes each logits chunk, turns
 * it into dlogits = logitScale · invTokens · lossScale · (softmax − onehot) in place (0 on ignored
 * rows), then
 * dh (= on the first chunk, += after) and dw[chunk rows] += dlogitsᵀ·h.
 */
export function crossEntropyForwardBackward(
  gpu: Gpu,
  arena: ParamArena,
  args: CrossEntropyArgs & {
    dh: Tensor; // (T, C) written
    dw: Tensor; // (V, C) accumulated
    invTokens: Tensor; // (1) f32: 1 / loss tokens of the optimizer step, rewritten every step
    /** Loss-scale state (kernels/adamw.ts), [0] multiplies dlogits; default: fixed at 1. */
    lossScale?: Tensor;
  },
): Dispatch[] {
  const { T, C, V } = args;
  const ws = args.workspace;
  const out = forwardPart(gpu, arena, args);
  const [gy, gz] = grid(gpu, T);
  for (const { v0, n, w, dw, off } of chunksOf(args, args.dw)) {
    out.push(...logitsChunk(gpu, arena, args, w, off, n));
    const params = arena.alloc(packParams([T, n, n, v0, V, 0, args.logitScale, 0], [6]));
    // four logits per invocation when the chunk allows (bit-identical; gpu.vec4Forms = false
    // keeps the scalar form for the tests)
    const four = gpu.vec4Forms && n % 4 === 0;
    const kGrad = gpu.kernel("cross_entropy", four ? "cross_entropy_grad4" : "cross_entropy_grad");
    out.push({
      kernel: kGrad,
      bindGroup: gpu.bind(kGrad, {
        0: params,
        1: ws.logits,
        2: ws.stats,
        3: args.labels,
        4: args.invTokens,
        5: args.lossScale ?? fixedLossScale(gpu),
      }),
      workgroups: [Math.ceil(n / (four ? 256 : 64)), gy, gz],
    });
    // dh (T, C) (+)= dlogits (T, n) · w[v0 : v0 + n] (n, C)
    out.push(...matmulGemm(gpu, arena, {
      c: args.dh,
      a: ws.logits,
      b: w,
      M: T,
      N: C,
      K: n,
      sAi: n,
      sAp: 1,
      sBp: C,
      sBj: 1,
      offB: off,
      ldc: C,
      accumulate: v0 > 0,
    }));
    // dw[v0 : v0 + n] (n, C) += dlogitsᵀ (n, T) · h (T, C)
    out.push(...matmulGemm(gpu, arena, {
      c: dw ?? args.dw,
      a: ws.logits,
      b: args.h,
      M: n,
      N: C,
      K: T,
      sAi: 1,
      sAp: n,
      sBp: C,
      sBj: 1,
      offC: off,
      ldc: C,
      accumulate: true,
    }));
  }
  return out;
}
