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
 * also capped by the device's storage binding and buffer sizes). A shape whose band is larger runs
 * in blocks of heads (whole GQA groups), one block after another through the same band; when one
 * group alone is larger, the flash form runs.
 */
export const BAND_MAX_BYTES = 1 << 30;

let capOverride: number | null = null;

/** Lower the band cap (bytes; null: BAND_MAX_BYTES): for tests of the head blocks. */
export function setAttentionBandCap(bytes: number | null): void {
  capOverride = bytes;
}

/** The band cap on a device with these limits. */
export function attentionBandCap(
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number },
): number {
  return Math.min(
    capOverride ?? BAND_MAX_BYTES,
    limits.maxStorageBufferBindingSize,
    limits.maxBufferSize,
  );
}

/** Key tiles per query tile: enough for a sample of `maxSample` tokens starting anywhere. */
export function bandSlots(T: number, maxSample?: number): number {
  const nqt = Math.ceil(T / BAND_TILE);
  const S = Math.max(1, Math.min(T, maxSample ?? T));
  return Math.min(nqt, Math.ceil((S - 1) / BAND_TILE) + 1);
}

/** Fewest key tiles a workgroup of the split P·V and dQ walks (4 tiles: 256 keys, 16 steps). */
export const BAND_KEY_CHUNK_MIN = 4;
/** Most chunks the split P·V and dQ cut a query tile's key tiles into (bounds their scratch). */
export const BAND_KEY_CHUNKS_MAX = 8;

/**
 * How the split band form ("band-split") cuts each query tile's key tiles for P·V and dQ: `kchunk`
 * key tiles per workgroup (0: no cut) into at most `chunks` partial sums. Without the cut, the
 * workgroup of a query tile at the end of a long sample walks every key tile of the sample while
 * one at its start walks one, and the longest set the pace.
 */
export function bandKeyChunks(T: number, maxSample?: number): { kchunk: number; chunks: number } {
  const slots = bandSlots(T, maxSample);
  const kchunk = chunkOverride ??
    Math.max(BAND_KEY_CHUNK_MIN, Math.ceil(slots / BAND_KEY_CHUNKS_MAX));
  if (slots <= kchunk) return { kchunk: 0, chunks: 1 };
  return { kchunk, chunks: Math.ceil(slots / kchunk) };
}

let chunkOverride: number | null = null;

/** Force the key tiles per chunk of the split P·V and dQ (null: bandKeyChunks' rule): for tests. */
export function setAttentionBandKeyChunk(tiles: number | null): void {
  if (tiles !== null && !(Number.isInteger(tiles) && tiles >= 1)) {
    throw new Error(`attention_band: key chunk must be a whole number of tiles ≥ 1, got ${tiles}`);
  }
  chunkOverride = tiles;
}

/** Bytes of the split P·V's and dQ's partial sums in `chunks`, (chunks, T, Hq, D) f32; 0 unsplit. */
export function bandPartialBytes(a: { T: number; Hq: number; D: number }, chunks: number): number {
  return chunks > 1 ? chunks * a.T * a.Hq * a.D * 4 : 0;
}

/** How a shape's band is cut: kv heads (and their q heads) per block, blocks, bytes of one band. */
export interface BandBlocks {
  kvHeads: number;
  blocks: number;
  bytes: number;
}

/**
 * The head blocks of a shape's band under `cap` bytes: as few blocks as fit, of equal size (the
 * last one smaller); null when one GQA group's band alone exceeds the cap.
 */
export function bandBlocks(
  a: { T: number; Hq: number; Hkv: number; maxSample?: number },
  cap: number,
): BandBlocks | null {
  const group = a.Hq / a.Hkv;
  const perKv = group * Math.ceil(a.T / BAND_TILE) * bandSlots(a.T, a.maxSample) * BAND_TILE *
    BAND_TILE * 4;
  const fit = Math.min(a.Hkv, Math.floor(cap / perKv));
  if (fit < 1) return null;
  const blocks = Math.ceil(a.Hkv / fit);
  const kvHeads = Math.ceil(a.Hkv / blocks);
  return { kvHeads, blocks, bytes: kvHeads * perKv };
}

/** Whether the band form runs on `gpu` for this shape (in one or more head blocks). */
export function attentionBandFits(
  gpu: Gpu,
  a: { T: number; Hq: number; Hkv: number; maxSample?: number },
): boolean {
  return bandBlocks(a, attentionBandCap(gpu.limits)) !== null;
}

/** The blocks of `a` on `gpu`; throws where the band form does not run. */
function blocksOf(gpu: Gpu, a: { T: number; Hq: number; Hkv: number; maxSample?: number }) {
  const b = bandBlocks(a, attentionBandCap(gpu.limits));
  if (!b) throw new Error(`attention_band: one GQA group's band exceeds the cap`);
  return b;
}

/** First q head and q heads of each head block: [h0, heads][]. */
function headBlocks(a: { Hq: number; Hkv: number }, b: BandBlocks): [number, number][] {
  const group = a.Hq / a.Hkv, out: [number, number][] = [];
  for (let kv = 0; kv < a.Hkv; kv += b.kvHeads) {
    out.push([kv * group, Math.min(b.kvHeads, a.Hkv - kv) * group]);
  }
  return out;
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
 * Free both bands of `gpu` (up to 2 × BAND_MAX_BYTES) and the split form's partial sums: for the
 * autotune once it has timed the band forms and kept flash everywhere, when no graph holds
 * dispatches that read them.
 */
export function releaseAttentionBands(gpu: Gpu): void {
  releaseSharedScratch(gpu, "attention_band.p");
  releaseSharedScratch(gpu, "attention_band.ds");
  releaseSharedScratch(gpu, "attention_band.parts");
}

/**
 * The P·V or dQ dispatch of one head block (`entry`, writing `out` unsplit), cut into `chunks` of
 * key tiles when chunks > 1: it then writes partial sums to the shared scratch, and `reduce` (one
 * dispatch for every head block, after them) sums them into `out`. `prm` carries p.kchunk.
 */
function pvDq(
  gpu: Gpu,
  entry: "pv" | "dq",
  a: BandShape & { out: BufferSlice },
  chunks: number,
) {
  const kernel = gpu.kernel("attention_band", `attention_band_${entry}`);
  const partBytes = bandPartialBytes(a, chunks);
  const parts = partBytes ? sharedScratch(gpu, "attention_band.parts", partBytes, 1 << 16) : null;
  const out = parts ? { buffer: parts, offset: 0, size: partBytes } : a.out;
  const grid = Math.ceil(a.D / BAND_TILE) * chunks;
  const dispatch = (p: BufferSlice, heads: number, band: BufferSlice): Dispatch => ({
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: out, 4: a.k, 5: a.v, 6: a.seqStart, 12: band }),
    workgroups: [grid, Math.ceil(a.T / BAND_TILE), heads],
  });
  const reduce = (p: BufferSlice): Dispatch[] => {
    if (!parts) return [];
    const kRed = gpu.kernel("attention_band", "attention_band_reduce", {
      REDUCE_DQ: entry === "dq" ? 1 : 0,
    });
    const groups = Math.ceil((a.T * a.Hq * a.D) / 64);
    const gx = Math.min(groups, 65535);
    return [{
      kernel: kRed,
      bindGroup: gpu.bind(kRed, { 0: p, 1: a.out, 6: a.seqStart, 11: parts }),
      workgroups: [gx, Math.ceil(groups / gx), 1],
    }];
  };
  return { dispatch, reduce };
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
 * The forward in three dispatches per head block: scores into the band, row softmax in place
 * (writes lse), O = P·V. `prm(h0)` is attention.ts's Params with `slots` = bandSlots(T, maxSample),
 * the block's first q head and `kchunk` (bandKeyChunks when `chunks` > 1, else 0). With `chunks`
 * > 1 (the split form) P·V writes partial sums per chunk of key tiles and a last dispatch sums them.
 */
export function attentionBandForward(
  gpu: Gpu,
  prm: (h0: number) => BufferSlice,
  a: BandShape & { o: BufferSlice; lse: BufferSlice },
  chunks = 1,
): Dispatch[] {
  const nqt = Math.ceil(a.T / BAND_TILE), slots = bandSlots(a.T, a.maxSample);
  const blocks = blocksOf(gpu, a);
  const b = band(gpu, "p", blocks.bytes);
  const kS = gpu.kernel("attention_band", "attention_band_scores");
  const kSm = gpu.kernel("attention_band", "attention_band_softmax");
  const pv = pvDq(gpu, "pv", { ...a, out: a.o }, chunks);
  const heads = headBlocks(a, blocks).map(([h0, n]) => ({ p: prm(h0), n }));
  return [
    ...heads.flatMap(({ p, n: heads }): Dispatch[] => {
      return [
        {
          kernel: kS,
          bindGroup: gpu.bind(kS, { 0: p, 1: b, 3: a.q, 4: a.k, 6: a.seqStart }),
          workgroups: [slots, nqt, heads],
        },
        {
          kernel: kSm,
          bindGroup: gpu.bind(kSm, { 0: p, 1: b, 2: a.lse, 6: a.seqStart }),
          workgroups: [Math.ceil(a.T / 4), heads, 1],
        },
        pv.dispatch(p, heads, b),
      ];
    }),
    ...pv.reduce(heads[0].p), // the reduce reads no head fields
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
 * The backward after attention.ts's delta pass, in three dispatches per head block: P and dS into
 * two bands, dQ = scale · dS·K, and dK/dV (one workgroup column each) over the q heads of every kv
 * head. With `parts` > 1 (it must divide the group, and `prm` must carry it and dkvSplitLayout's
 * dvOff / 4), each kv head's q heads are split over that many workgroups whose partial dK and dV
 * go to a scratch, and a last dispatch (attention_gpu_dkv_reduce) sums them. With `chunks` > 1
 * (`prm` carrying bandKeyChunks' kchunk), dQ is cut into chunks of key tiles as the forward's P·V.
 */
export function attentionBandBackward(
  gpu: Gpu,
  prm: (h0: number) => BufferSlice,
  a: BandShape & {
    dq: BufferSlice;
    dk: BufferSlice;
    dv: BufferSlice;
    dout: BufferSlice;
    lse: BufferSlice;
    delta: BufferSlice;
  },
  parts = 1,
  chunks = 1,
): Dispatch[] {
  const nqt = Math.ceil(a.T / BAND_TILE), slots = bandSlots(a.T, a.maxSample);
  const blocks = blocksOf(gpu, a);
  const bp = band(gpu, "p", blocks.bytes), bds = band(gpu, "ds", blocks.bytes);
  const kS = gpu.kernel("attention_band", "attention_band_backward_scores");
  const dq = pvDq(gpu, "dq", { ...a, out: a.dq }, chunks);
  const kKv = gpu.kernel("attention_band", "attention_band_dkv");
  const dTiles = Math.ceil(a.D / BAND_TILE);
  const heads = headBlocks(a, blocks).map(([h0, n]) => ({ p: prm(h0), n }));
  const split = dkvSplit(gpu, heads[0].p, a, parts); // the reduce reads no head fields
  const group = a.Hq / a.Hkv;
  return [
    ...heads.flatMap(({ p, n: heads }): Dispatch[] => {
      return [
        {
          kernel: kS,
          bindGroup: gpu.bind(kS, {
            0: p,
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
          workgroups: [slots, nqt, heads],
        },
        dq.dispatch(p, heads, bds),
        {
          kernel: kKv,
          bindGroup: gpu.bind(kKv, {
            0: p,
            ...split.outputs,
            3: a.q,
            6: a.seqStart,
            8: a.dout,
            12: bp,
            13: bds,
          }),
          workgroups: [dTiles, nqt, (2 * heads / group) * parts],
        },
      ];
    }),
    ...dq.reduce(heads[0].p),
    ...split.reduce,
  ];
}
