// Launchers for decoding with a GPU KV cache: RoPE + K/V append of one token, then attention of its query row (split-K, GQA).
import {
  alignUp,
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
} from "./runtime.ts";

/** Keys per partial workgroup (CHUNK in decode_attention.wgsl). */
export const DECODE_CHUNK = 64;
/** Largest head dim (the query row lives in workgroup memory; any D up to this works). */
export const DECODE_MAX_HEAD_DIM = 256;

/** Shape of a decode-attention launch. */
export interface DecodeShape {
  Hq: number;
  Hkv: number;
  D: number;
  /** Rows of the cache (the largest position + 1). */
  Lmax: number;
}

function check(kernel: string, s: DecodeShape): void {
  const { Hq, Hkv, D, Lmax } = s;
  if (!(Hq >= 1 && Hkv >= 1 && Lmax >= 1 && Number.isInteger(Lmax))) {
    throw new GpuError(`bad shape Hq=${Hq} Hkv=${Hkv} Lmax=${Lmax}`, kernel);
  }
  if (Hq % Hkv !== 0) throw new GpuError(`Hq=${Hq} is not a multiple of Hkv=${Hkv}`, kernel);
  if (!(D >= 1 && D <= DECODE_MAX_HEAD_DIM)) {
    throw new GpuError(`head dim ${D} outside 1..${DECODE_MAX_HEAD_DIM}`, kernel);
  }
}

/** Key chunks per head of the workspace: ceil(Lmax / 64). */
export function decodeAttentionChunks(Lmax: number): number {
  return Math.ceil(Lmax / DECODE_CHUNK);
}

/** Bytes of the partials workspace of decodeAttention: (Hq, chunks, D + 2) f32. */
export function decodeAttentionWorkspaceBytes(Hq: number, D: number, Lmax: number): number {
  return alignUp(Hq * decodeAttentionChunks(Lmax) * (D + 2) * 4, 256);
}

function params(arena: ParamArena, s: DecodeShape, scale: number): BufferSlice {
  const { Hq, Hkv, Lmax } = s;
  return arena.alloc(
    packParams([Hq, Hkv, Hq / Hkv, Lmax, scale, decodeAttentionChunks(Lmax), 0, 0], [4]),
  );
}

/**
 * RoPE and cache append of one token, in one dispatch, with pos = step[0] (u32) read on the GPU so
 * the same dispatch serves every decode step: q (Hq, D) is rotated in place, kCache[pos] =
 * RoPE(k) and vCache[pos] = v (k, v (Hkv, D); caches (Lmax, Hkv, D); table from ropeTable with at
 * least Lmax positions). The rotation is rope.wgsl's (HF rotate-half).
 */
export function ropeAppend(
  gpu: Gpu,
  arena: ParamArena,
  args: DecodeShape & {
    q: BufferSlice;
    kCache: BufferSlice;
    vCache: BufferSlice;
    k: BufferSlice;
    v: BufferSlice;
    step: BufferSlice;
    table: BufferSlice;
  },
): Dispatch[] {
  check("rope_append", args);
  if (args.D % 2 !== 0) throw new GpuError(`head dim ${args.D} is odd`, "rope_append");
  const { Hq, Hkv, D } = args;
  const kernel = gpu.kernel("decode_attention", "rope_append", { D });
  const p = params(arena, args, 1);
  const n = ((Hq + Hkv) * D) / 2 + Hkv * D;
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, {
      0: p,
      1: args.q,
      2: args.kCache,
      3: args.vCache,
      4: args.k,
      5: args.v,
      6: args.step,
      7: args.table,
    }),
    workgroups: [Math.ceil(n / 256), 1, 1],
  }];
}

/**
 * o (Hq, D) = softmax(scale · q·Kᵀ) · V over cache rows 0..pos (pos = step[0]), q head h reading
 * kv head h / (Hq / Hkv). Two dispatches: per (64-key chunk, q head) partials into `workspace`
 * (decodeAttentionWorkspaceBytes), then one workgroup per q head merges them in chunk order.
 * Chunks past pos exit at once, so the cost follows the context length, not Lmax.
 */
export function decodeAttention(
  gpu: Gpu,
  arena: ParamArena,
  args: DecodeShape & {
    o: BufferSlice;
    q: BufferSlice;
    kCache: BufferSlice;
    vCache: BufferSlice;
    step: BufferSlice;
    workspace: BufferSlice;
    scale: number;
  },
): Dispatch[] {
  check("decode_attention", args);
  const { Hq, D, Lmax } = args;
  const chunks = decodeAttentionChunks(Lmax);
  if (chunks > gpu.limits.maxComputeWorkgroupsPerDimension) {
    throw new GpuError(`Lmax=${Lmax} needs ${chunks} chunks: too many`, "decode_attention");
  }
  const need = decodeAttentionWorkspaceBytes(Hq, D, Lmax);
  const have = args.workspace.size ?? args.workspace.buffer.size - (args.workspace.offset ?? 0);
  if (have < need) {
    throw new GpuError(`workspace of ${have} bytes < ${need}`, "decode_attention");
  }
  const p = params(arena, args, args.scale);
  const kPart = gpu.kernel("decode_attention", "decode_attention_partial", { D });
  const kComb = gpu.kernel("decode_attention", "decode_attention_combine", { D });
  return [
    {
      kernel: kPart,
      bindGroup: gpu.bind(kPart, {
        0: p,
        1: args.workspace,
        2: args.q,
        3: args.kCache,
        4: args.vCache,
        5: args.step,
      }),
      workgroups: [chunks, Hq, 1],
    },
    {
      kernel: kComb,
      bindGroup: gpu.bind(kComb, { 0: p, 1: args.o, 2: args.workspace, 3: args.step }),
      workgroups: [Hq, 1, 1],
    },
  ];
}
