// Launchers of attention_band.wgsl: attention through materialised 64×64 score tiles (GPU form).
import {
  alignUp,
  type BufferSlice,
  type Dispatch,
  type Gpu,
  releaseSharedScratch,
  sharedScratch,
} from "./runtime.ts";

/** Rows of a query or key tile of the band (BT in attention_band.wgsl). */
export const BAND_TILE = 64;

/**
 * Largest band the launchers allocate, in bytes (each of the forward's one and the backward's two;
 * also capped by the device's storage binding size): beyond it the flash form runs.
 */
export const BAND_MAX_BYTES = 1 << 30;

/** Key tiles per query tile: enough for a sample of `maxSample` tokens starting anywhere. */
export function bandSlots(T: number, maxSample?: number): number {
  const nqt = Math.ceil(T / BAND_TILE);
  const S = Math.max(1, Math.min(T, maxSample ?? T));
  return Math.min(nqt, Math.ceil((S - 1) / BAND_TILE) + 1);
}

/** Bytes of one score band: Hq × query tiles × slots × 64·64 floats. */
export function attentionBandBytes(a: { T: number; Hq: number; maxSample?: number }): number {
  return a.Hq * Math.ceil(a.T / BAND_TILE) * bandSlots(a.T, a.maxSample) * BAND_TILE * BAND_TILE *
    4;
}

/** Whether the band form fits `gpu` for this shape (one band within the binding and size caps). */
export function attentionBandFits(
  gpu: Gpu,
  a: { T: number; Hq: number; maxSample?: number },
): boolean {
  const bytes = attentionBandBytes(a);
  return bytes <= BAND_MAX_BYTES && bytes <= gpu.limits.maxStorageBufferBindingSize &&
    bytes <= gpu.limits.maxBufferSize;
}

/** The shared band buffer `which` ("p": scores / P, "ds": dS), at least `bytes` long. */
function band(gpu: Gpu, which: "p" | "ds", bytes: number): BufferSlice {
  return {
    buffer: sharedScratch(gpu, `attention_band.${which}`, alignUp(bytes, 256)),
    offset: 0,
    size: bytes,
  };
}

/**
 * Free both bands of `gpu` (up to 2 × BAND_MAX_BYTES): for the autotune once it has timed the band
 * form and kept flash everywhere, when no graph holds dispatches that read them.
 */
export function releaseAttentionBands(gpu: Gpu): void {
  releaseSharedScratch(gpu, "attention_band.p");
  releaseSharedScratch(gpu, "attention_band.ds");
}

/** Shape and buffers the band launchers read (a subset of attention.ts's forward/backward args). */
interface BandShape {
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  maxSample?: number;
  q: BufferSlice;
  k: BufferSlice;
  v: BufferSlice;
  seqStart: BufferSlice;
}

/**
 * The forward in three dispatches: scores into the band, row softmax in place (writes lse), O =
 * P·V. `prm` is attention.ts's Params with `slots` = bandSlots(T, maxSample).
 */
export function attentionBandForward(
  gpu: Gpu,
  prm: BufferSlice,
  a: BandShape & { o: BufferSlice; lse: BufferSlice },
): Dispatch[] {
  const nqt = Math.ceil(a.T / BAND_TILE), slots = bandSlots(a.T, a.maxSample);
  const b = band(gpu, "p", attentionBandBytes(a));
  const kS = gpu.kernel("attention_band", "attention_band_scores");
  const kSm = gpu.kernel("attention_band", "attention_band_softmax");
  const kPv = gpu.kernel("attention_band", "attention_band_pv");
  const inputs = { 3: a.q, 4: a.k, 6: a.seqStart };
  return [
    {
      kernel: kS,
      bindGroup: gpu.bind(kS, { 0: prm, 1: b, ...inputs }),
      workgroups: [slots, nqt, a.Hq],
    },
    {
      kernel: kSm,
      bindGroup: gpu.bind(kSm, { 0: prm, 1: b, 2: a.lse, 6: a.seqStart }),
      workgroups: [Math.ceil(a.T / 4), a.Hq, 1],
    },
    {
      kernel: kPv,
      bindGroup: gpu.bind(kPv, { 0: prm, 1: a.o, 4: a.k, 5: a.v, 6: a.seqStart, 12: b }),
      workgroups: [Math.ceil(a.D / BAND_TILE), nqt, a.Hq],
    },
  ];
}

/**
 * Bytes of the partial dK (and as many of dV, from `dvOff`) of a backward whose q-head groups are
 * split in `parts`: (parts, T, Hkv, D) f32 each. Both GPU forms (flash and band) split this way.
 */
export function dkvSplitLayout(
  a: { T: number; Hkv: number; D: number },
  parts: number,
): { partBytes: number; dvOff: number } {
  const partBytes = parts * a.T * a.Hkv * a.D * 4;
  return { partBytes, dvOff: alignUp(partBytes, 256) };
}

/**
 * A split dK/dV's scratch (null when unsplit), the bindings its dK/dV kernel writes (1: partial dK,
 * 2: partial dV, or dk and dv themselves when unsplit), and the dispatch that sums the partials in
 * part order (attention_gpu_dkv_reduce; `prm` carries parts and dvOff / 4).
 */
export function dkvSplit(
  gpu: Gpu,
  prm: BufferSlice,
  a: { T: number; Hkv: number; D: number; dk: BufferSlice; dv: BufferSlice },
  parts: number,
): { outputs: Record<1 | 2, BufferSlice>; reduce: Dispatch[] } {
  if (parts <= 1) return { outputs: { 1: a.dk, 2: a.dv }, reduce: [] };
  const { partBytes, dvOff } = dkvSplitLayout(a, parts);
  const scratch = sharedScratch(gpu, "attention_gpu.dkv_scratch", dvOff + partBytes, 1 << 16);
  const kRed = gpu.kernel("attention_gpu", "attention_gpu_dkv_reduce");
  const groups = Math.ceil((a.T * a.Hkv * a.D) / 64);
  const gx = Math.min(groups, 65535);
  return {
    outputs: {
      1: { buffer: scratch, offset: 0, size: partBytes },
      2: { buffer: scratch, offset: dvOff, size: partBytes },
    },
    reduce: [{
      kernel: kRed,
      bindGroup: gpu.bind(kRed, { 0: prm, 1: a.dk, 2: a.dv, 11: scratch }),
      workgroups: [gx, Math.ceil(groups / gx), 1],
    }],
  };
}

/**
 * The backward after attention.ts's delta pass, in three dispatches: P and dS into two bands, dQ =
 * scale · dS·K, and dK/dV (one workgroup column each) over the q heads of every kv head. With
 * `parts` > 1 (it must divide the group, and `prm` must carry it and dkvSplitLayout's dvOff / 4),
 * each kv head's q heads are split over that many workgroups whose partial dK and dV go to a scratch,
 * and a fourth dispatch (attention_gpu_dkv_reduce) sums them.
 */
export function attentionBandBackward(
  gpu: Gpu,
  prm: BufferSlice,
  a: BandShape & {
    dq: BufferSlice;
    dk: BufferSlice;
    dv: BufferSlice;
    dout: BufferSlice;
    lse: BufferSlice;
    delta: BufferSlice;
  },
  parts = 1,
): Dispatch[] {
  const nqt = Math.ceil(a.T / BAND_TILE), slots = bandSlots(a.T, a.maxSample);
  const bytes = attentionBandBytes(a);
  const bp = band(gpu, "p", bytes), bds = band(gpu, "ds", bytes);
  const kS = gpu.kernel("attention_band", "attention_band_backward_scores");
  const kDq = gpu.kernel("attention_band", "attention_band_dq");
  const kKv = gpu.kernel("attention_band", "attention_band_dkv");
  const dTiles = Math.ceil(a.D / BAND_TILE);
  const split = dkvSplit(gpu, prm, a, parts);
  return [
    {
      kernel: kS,
      bindGroup: gpu.bind(kS, {
        0: prm,
        1: bp,
        2: bds,
        3: a.q,
        4: a.k,
        5: a.v,
        6: a.seqStart,
        8: a.dout,
        9: a.lse,
        10: a.delta,
      }),
      workgroups: [slots, nqt, a.Hq],
    },
    {
      kernel: kDq,
      bindGroup: gpu.bind(kDq, { 0: prm, 1: a.dq, 4: a.k, 5: a.v, 6: a.seqStart, 12: bds }),
      workgroups: [dTiles, nqt, a.Hq],
    },
    {
      kernel: kKv,
      bindGroup: gpu.bind(kKv, {
        0: prm,
        ...split.outputs,
        3: a.q,
        6: a.seqStart,
        8: a.dout,
        12: bp,
        13: bds,
      }),
      workgroups: [dTiles, nqt, 2 * a.Hkv * parts],
    },
    ...split.reduce,
  ];
}
