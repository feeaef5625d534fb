// Launchers for rotary position embeddings (HF rotate-half) and the CPU cos/sin table with Llama-3 scaling.
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  GpuError,
  packParams,
  type ParamArena,
} from "./runtime.ts";

/** Llama-3 frequency scaling, as `rope_scaling` in a Hugging Face config.json. */
export interface Llama3RopeScaling {
  type: "llama3";
  factor: number;
  low_freq_factor: number;
  high_freq_factor: number;
  original_max_position_embeddings: number;
}

const f32 = Math.fround;

/**
 * Inverse frequencies (D/2) in float32, rounded step by step as transformers computes them:
 * `1 / theta ** (arange(0, D, 2).float() / D)`, then `_compute_llama3_parameters` when scaled
 * (where `c / t` on a tensor is `t.reciprocal() * c` and scalars are cast to float32).
 */
export function ropeInvFreq(
  headDim: number,
  theta: number,
  scaling: Llama3RopeScaling | null = null,
): Float32Array {
  if (headDim % 2 !== 0) throw new GpuError(`head_dim ${headDim} is odd`, "rope");
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const e = f32(f32(2 * i) / f32(headDim));
    inv[i] = f32(1 / f32(Math.pow(f32(theta), e)));
  }
  if (!scaling) return inv;
  if (scaling.type !== "llama3") {
    throw new GpuError(`unsupported rope_scaling type ${String(scaling.type)}`, "rope");
  }
  const factor = f32(scaling.factor);
  const low = scaling.low_freq_factor, high = scaling.high_freq_factor;
  const old = scaling.original_max_position_embeddings;
  const lowFreqWavelen = old / low;
  const highFreqWavelen = old / high;
  const twoPi = f32(2 * Math.PI);
  for (let i = 0; i < half; i++) {
    const f = inv[i];
    const wavelen = f32(f32(1 / f) * twoPi);
    let g = wavelen > lowFreqWavelen ? f32(f / factor) : f;
    if (!(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen)) {
      const smooth = f32(f32(f32(f32(1 / wavelen) * f32(old)) - f32(low)) / f32(high - low));
      const a = f32(f32(f32(1 - smooth) * g) / factor);
      const b = f32(smooth * g);
      g = f32(a + b);
    }
    inv[i] = g;
  }
  return inv;
}

/**
 * cos/sin table (maxPos, D/2, 2) in float32: angle = fround(inv_freq · pos) as the float32
 * outer product of transformers' rotary embedding, then cos and sin rounded to float32.
 */
export function ropeTable(
  headDim: number,
  theta: number,
  scaling: Llama3RopeScaling | null,
  maxPos: number,
): Float32Array {
  const inv = ropeInvFreq(headDim, theta, scaling);
  const half = headDim / 2;
  const out = new Float32Array(maxPos * half * 2);
  for (let t = 0; t < maxPos; t++) {
    for (let i = 0; i < half; i++) {
      const a = f32(inv[i] * t);
      out[(t * half + i) * 2] = f32(Math.cos(a));
      out[(t * half + i) * 2 + 1] = f32(Math.sin(a));
    }
  }
  return out;
}

/** Buffers and shape of a RoPE launch. */
export interface RopeArgs {
  out: BufferSlice; // (T, H, D); may be the same slice as `x` (in place)
  x: BufferSlice; // (T, H, D)
  pos: BufferSlice; // (T) u32, < maxPos of the table
  table: BufferSlice; // (maxPos, D/2, 2) from ropeTable
  T: number;
  H: number;
  D: number;
  /** Elements between tokens (default H·D) and the offset of token 0 (default 0), in x and out. */
  ld?: number;
  off?: number;
}

function ropeLaunch(gpu: Gpu, arena: ParamArena, a: RopeArgs, dir: "forward" | "backward") {
  if (a.D % 2 !== 0) throw new GpuError(`head dim ${a.D} is odd`, `rope.${dir}`);
  const half = a.D / 2;
  const rows = a.T * a.H;
  const inplace = a.out.buffer === a.x.buffer;
  if (inplace && (a.out.offset ?? 0) !== (a.x.offset ?? 0)) {
    throw new GpuError("out and x share a buffer at different offsets", `rope.${dir}`);
  }
  const ld = a.ld ?? a.H * a.D, off = a.off ?? 0;
  // in place with D/2, ld and off multiples of 4 (slices are 256-aligned): the vec4 form
  const four = inplace && [half, ld, off].every((v) => v % 4 === 0) && gpu.vec4Forms;
  const kernel = gpu.kernel("rope", `rope_${dir}${inplace ? "_inplace" : ""}${four ? "4" : ""}`);
  const params = arena.alloc(packParams([rows, a.H, half, ld, off, 0, 0, 0]));
  const entries: Record<number, BufferSlice> = { 0: params, 1: a.out, 3: a.pos, 4: a.table };
  if (!inplace) entries[2] = a.x;
  const groups = Math.ceil(rows / 64);
  const gx = Math.max(1, Math.min(groups, 65535));
  const dispatch: Dispatch = {
    kernel,
    bindGroup: gpu.bind(kernel, entries),
    workgroups: [gx, Math.max(1, Math.ceil(groups / gx)), 1],
  };
  return [dispatch];
}

/**
 * out = RoPE(x): for i < D/2, out[i] = x[i]·cos − x[i+D/2]·sin and
 * out[i+D/2] = x[i+D/2]·cos + x[i]·sin at angle table[pos[t], i]. In place when out is x.
 */
export function ropeForward(gpu: Gpu, arena: ParamArena, args: RopeArgs): Dispatch[] {
  return ropeLaunch(gpu, arena, args, "forward");
}

/** Buffers and shape of a RoPE backward launch (dx may be the same slice as dout). */
export interface RopeBackwardArgs {
  dx: BufferSlice; // (T, H, D)
  dout: BufferSlice; // (T, H, D)
  pos: BufferSlice; // (T) u32
  table: BufferSlice; // (maxPos, D/2, 2)
  T: number;
  H: number;
  D: number;
  ld?: number;
  off?: number;
}

/** dx = Rᵀ·dout, the transposed rotation (sin negated); in place when dx is dout. */
export function ropeBackward(gpu: Gpu, arena: ParamArena, args: RopeBackwardArgs): Dispatch[] {
  const { dx, dout, ...rest } = args;
  return ropeLaunch(gpu, arena, { out: dx, x: dout, ...rest }, "backward");
}
