// Launchers for the fused, vocabulary-chunked cross-entropy (the full T × V logits never exist).
import { grid2d, sumInto, sumIntoWorkspaceBytes } from "./elementwise.ts";
import { matmulBackwardInput, matmulBackwardWeight, matmulForward } from "./matmul.ts";
import {
  alignUp,
  type BufferSlice,
  type Dispatch,
  type Gpu,
  packParams,
  type ParamArena,
} from "./runtime.ts";

const STATS = 4; // floats per row of the running statistics

/**
 * Vocabulary chunk width: a multiple of 64 (so weight-chunk offsets stay 256-byte aligned), at
 * most 8192, and small enough that the (T, chunk) logits fit one storage binding.
 */
export function crossEntropyChunk(T: number, V: number, maxBinding = 128 * 2 ** 20): number {
  const fit = Math.floor(maxBinding / (Math.max(T, 1) * 4));
  let c = Math.min(V, 8192, fit);
  if (c < V) c = Math.max(64, c - (c % 64));
  return c;
}

/** The workspace: separate buffers, since a kernel may not write one buffer while reading it. */
export interface CrossEntropyWorkspace {
  chunk: number;
  logits: BufferSlice; // (T, chunk)
  stats: BufferSlice; // (T, 4)
  rowLoss: BufferSlice; // (T)
  sum: BufferSlice; // sumInto partials
  destroy(): void;
}

/** Allocate the workspace of a cross-entropy launch for T rows and vocabulary V. */
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
    gpu.buffer("cross_entropy.rowLoss", T * 4),
    gpu.buffer("cross_entropy.sum", sumIntoWorkspaceBytes(T)),
  ];
  return {
    chunk: c,
    logits: { buffer: bufs[0] },
    stats: { buffer: bufs[1] },
    rowLoss: { buffer: bufs[2] },
    sum: { buffer: bufs[3] },
    destroy: () => bufs.forEach((b) => b.destroy()),
  };
}

/** Workspace bytes of a cross-entropy launch (for memory plans). */
export function crossEntropyWorkspaceBytes(T: number, V: number, chunk?: number): number {
  const c = chunk ?? crossEntropyChunk(T, V);
  return T * c * 4 + T * STATS * 4 + T * 4 + sumIntoWorkspaceBytes(T);
}

/** Buffers and shape of a cross-entropy launch. */
export interface CrossEntropyArgs {
  h: BufferSlice; // (T, C) final hidden states
  w: BufferSlice; // (V, C) LM head (or tied embedding)
  labels: BufferSlice; // (T) i32, −100 = ignored
  lossAcc: BufferSlice; // (≥1) f32: lossAcc[0] += Σ token losses
  tokenLoss?: BufferSlice; // (T) per-token loss, 0 where ignored
  T: number;
  C: number;
  V: number;
  /** Multiplier of the logits (1/logits_scaling for Granite, else 1). */
  logitScale: number;
  workspace: CrossEntropyWorkspace;
}

function sub(s: BufferSlice, offset: number, size: number): BufferSlice {
  return { buffer: s.buffer, offset: (s.offset ?? 0) + offset, size };
}

function forwardPart(gpu: Gpu, arena: ParamArena, a: CrossEntropyArgs): Dispatch[] {
  const { T, C, V } = a;
  const out: Dispatch[] = [];
  const kStats = gpu.kernel("cross_entropy", "cross_entropy_stats");
  const kFwd = gpu.kernel("cross_entropy", "cross_entropy_forward");
  const L = a.workspace;
  const stats = L.stats;
  const rowLoss = a.tokenLoss ?? L.rowLoss;
  for (let v0 = 0; v0 < V; v0 += L.chunk) {
    const n = Math.min(L.chunk, V - v0);
    const logits = sub(L.logits, 0, T * n * 4);
    out.push(
      ...matmulForward(gpu, arena, {
        y: logits,
        x: a.h,
        w: sub(a.w, v0 * C * 4, n * C * 4),
        M: T,
        N: n,
        K: C,
      }),
    );
    const p = arena.alloc(packParams([T, n, v0, v0 === 0 ? 1 : 0, a.logitScale, V, 0, 0], [4]));
    out.push({
      kernel: kStats,
      bindGroup: gpu.bind(kStats, { 0: p, 1: stats, 2: logits, 3: a.labels }),
      workgroups: grid2d(gpu, T),
    });
  }
  const p = arena.alloc(packParams([T, 0, 0, 0, a.logitScale, V, 0, 0], [4]));
  out.push({
    kernel: kFwd,
    bindGroup: gpu.bind(kFwd, { 0: p, 1: rowLoss, 2: stats, 3: a.labels }),
    workgroups: grid2d(gpu, Math.ceil(T / 64)),
  });
  out.push(
    ...sumInto(gpu, arena, {
      acc: a.lossAcc,
      x: rowLoss,
      N: T,
      workspace: L.sum,
    }),
  );
  return out;
}

/**
 * Loss only (evaluation): lossAcc[0] += Σ token losses, and tokenLoss (T) when given. Logits are
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
 * Loss and gradients: pass 1 = crossEntropyForward; pass 2 recomputes each logits chunk, turns it
 * into dlogits = invTokens · scale · (softmax − onehot) in place, then dh (=, first chunk; += after)
 * and dw[chunk] += dlogitsᵀ·h.
 */
export function crossEntropyForwardBackward(
  gpu: Gpu,
  arena: ParamArena,
  args: CrossEntropyArgs & {
    dh: BufferSlice; // (T, C) written
    dw: BufferSlice; // (V, C) accumulated
    invTokens: BufferSlice; // (1) f32, rewritten each step
  },
): Dispatch[] {
  const { T, C, V } = args;
  const L = args.workspace;
  const out = forwardPart(gpu, arena, args);
  const kBwd = gpu.kernel("cross_entropy", "cross_entropy_backward");
  const stats = L.stats;
  for (let v0 = 0; v0 < V; v0 += L.chunk) {
    const n = Math.min(L.chunk, V - v0);
    const logits = sub(L.logits, 0, T * n * 4);
    const wChunk = sub(args.w, v0 * C * 4, n * C * 4);
    out.push(...matmulForward(gpu, arena, { y: logits, x: args.h, w: wChunk, M: T, N: n, K: C }));
    const p = arena.alloc(packParams([T, n, v0, 0, args.logitScale, V, 0, 0], [4]));
    out.push({
      kernel: kBwd,
      bindGroup: gpu.bind(kBwd, { 0: p, 1: logits, 2: stats, 3: args.labels, 4: args.invTokens }),
      workgroups: grid2d(gpu, T),
    });
    out.push(
      ...matmulBackwardInput(gpu, arena, {
        dx: args.dh,
        dy: logits,
        w: wChunk,
        M: T,
        N: n,
        K: C,
        accumulate: v0 > 0,
      }),
      ...matmulBackwardWeight(gpu, arena, {
        dw: sub(args.dw, v0 * C * 4, n * C * 4),
        dy: logits,
        x: args.h,
        M: T,
        N: n,
        K: C,
        accumulate: true,
      }),
    );
  }
  return out;
}
