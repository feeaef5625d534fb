// GPU memory plan of a training run: weights, gradients, AdamW state, activations, workspaces, buffer sharding.
import { kvDenseFloats } from "../kernels/attention.ts";
import {
  attentionBandCap,
  bandBlocks,
  bandKeyChunks,
  bandPartialBytes,
} from "../kernels/attention_band.ts";
import { type ModelConfig, numel, parameterCount, parameterShapes } from "./config.ts";

/** Device limits that decide buffer sharding. */
export interface PlanLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
}

/** Inputs of planMemory. */
export interface PlanOptions {
  /** Tokens of one micro-batch (one packed row). */
  microBatchTokens: number;
  /** Recompute each layer's activations in backward (keep only the layer inputs). */
  recompute: boolean;
  limits: PlanLimits;
  /** Memory the device can give us, when known. */
  deviceBytes?: number;
  /** Vocabulary chunk of the fused cross-entropy (default: what fits one storage binding, ≤ 8192). */
  logitsChunk?: number;
  /**
   * CPU adapters: each layer also keeps dense copies of K and V (at least 64 KiB each) that the
   * row attention reads through uniform windows (kernels/attention.ts KvDense).
   */
  kvCopies?: boolean;
  /**
   * GPU adapters: the two score bands of the band attention form (kernels/attention_band.ts), used
   * when the autotune finds it faster than flash and each band stays within BAND_MAX_BYTES. The
   * longest sample sizes them (default: the whole micro-batch).
   */
  attentionBands?: { maxSampleTokens?: number };
}

/** One line of the plan. */
export interface PlanRow {
  what: string;
  bytes: number;
}

/** The memory plan. */
export interface MemoryPlan {
  rows: PlanRow[];
  totalBytes: number;
  /** Tensors larger than one storage binding: how many row-aligned pieces each needs. */
  shardsNeeded: { tensor: string; shards: number }[];
  /** totalBytes fits deviceBytes (true when unknown) and every activation fits one binding. */
  fits: boolean;
  advice: string;
  /** Inputs, for formatPlan. */
  microBatchTokens: number;
  recompute: boolean;
  deviceBytes?: number;
}

const F32 = 4;

/** Bytes of f32 activations one layer saves for backward, for T tokens (see the README table). */
export function layerActivationBytes(cfg: ModelConfig, T: number): number {
  const C = cfg.hiddenSize, I = cfg.intermediateSize, D = cfg.headDim;
  const q = cfg.numHeads * D, kv = cfg.numKvHeads * D;
  const floats = T * C + // x_in
    T * C + // n1
    T * q + // q
    2 * T * kv + // k, v
    T * q + // o
    cfg.numHeads * T + // lse
    T * C + // x_mid
    T * C + // n2
    3 * T * I + // gate, up, act
    2 * T; // rstd ×2
  return floats * F32;
}

/** The default vocabulary chunk of the fused cross-entropy for T tokens. */
export function defaultLogitsChunk(cfg: ModelConfig, T: number, limits: PlanLimits): number {
  const fit = Math.floor(limits.maxStorageBufferBindingSize / (T * F32));
  return Math.max(1, Math.min(cfg.vocabSize, 8192, fit));
}

function shardsFor(rows: number, rowBytes: number, limit: number): number {
  const perShard = Math.floor(limit / rowBytes);
  if (perShard < 1) return Infinity;
  return Math.ceil(rows / perShard);
}

function planRaw(cfg: ModelConfig, o: PlanOptions): Omit<MemoryPlan, "advice" | "fits"> & {
  activationOver: string[];
} {
  const T = o.microBatchTokens;
  if (!Number.isInteger(T) || T <= 0) {
    throw new Error(`microBatchTokens must be a positive integer`);
  }
  const P = parameterCount(cfg);
  const C = cfg.hiddenSize, I = cfg.intermediateSize, L = cfg.numLayers;
  const perLayer = layerActivationBytes(cfg, T);
  const chunk = o.logitsChunk ?? defaultLogitsChunk(cfg, T, o.limits);
  const rows: PlanRow[] = [
    { what: "weights (f32)", bytes: P * F32 },
    { what: "gradients (f32)", bytes: P * F32 },
    { what: "adam m (f32)", bytes: P * F32 },
    { what: "adam v (f32)", bytes: P * F32 },
  ];
  if (o.recompute) {
    rows.push({ what: `activations: x_in (T,C) × ${L} layers`, bytes: L * T * C * F32 });
    rows.push({ what: "activations: one layer recomputed", bytes: perLayer });
  } else {
    rows.push({
      what: `activations: ${fmtBytes(perLayer)} per layer × ${L} layers`,
      bytes: L * perLayer,
    });
  }
  if (o.kvCopies) {
    const copies = o.recompute ? 1 : L;
    rows.push({
      what: `dense K and V copies for the CPU row attention × ${copies}`,
      bytes: copies * 2 * kvDenseFloats(T, cfg.numKvHeads, cfg.headDim) * F32,
    });
  }
  rows.push({
    what: `logits chunk workspace (T × ${chunk} vocab)`,
    bytes: T * chunk * F32 + 3 * T * F32,
  });
  // backward transients: gradients of one layer's activations, plus attention's delta (Hq,T)
  rows.push({ what: "backward scratch (one layer's activation gradients)", bytes: perLayer });
  // a dK/dV split over the q heads of a GQA group (autotuned, GPU kernels): partial dK and dV
  const group = cfg.numHeads / cfg.numKvHeads;
  if (group > 1) {
    rows.push({
      what: `attention dK/dV split scratch (at most ${group} parts)`,
      bytes: 2 * group * T * cfg.numKvHeads * cfg.headDim * F32,
    });
  }
  if (o.attentionBands) {
    const b = bandBlocks({
      T,
      Hq: cfg.numHeads,
      Hkv: cfg.numKvHeads,
      maxSample: o.attentionBands.maxSampleTokens,
    }, attentionBandCap(o.limits));
    if (b) { // else the band form is not offered (kernels/attention_band.ts)
      const blocks = b.blocks > 1 ? `, in ${b.blocks} blocks of heads` : "";
      rows.push({
        what: `attention score bands (GPU band form, if the autotune picks it${blocks})`,
        bytes: 2 * b.bytes,
      });
      const { chunks } = bandKeyChunks(T, o.attentionBands.maxSampleTokens);
      const partBytes = bandPartialBytes({ T, Hq: cfg.numHeads, D: cfg.headDim }, chunks);
      if (partBytes > 0) {
        rows.push({
          what:
            `attention P·V / dQ partial sums (GPU band-split form, ${chunks} chunks of key tiles)`,
          bytes: partBytes,
        });
      }
    }
  }
  rows.push({
    what: "misc (final norm out, ids/labels/pos/seq, grad-norm partials, params)",
    bytes: (T * C + T) * F32 + 5 * T * 4 + 64 * 1024 + 1024 * 1024,
  });
  const totalBytes = rows.reduce((s, r) => s + r.bytes, 0);

  const limit = Math.min(o.limits.maxStorageBufferBindingSize, o.limits.maxBufferSize);
  const shardsNeeded: { tensor: string; shards: number }[] = [];
  const seen = new Set<string>();
  for (const { name, shape } of parameterShapes(cfg)) {
    const key = name.replace(/^model\.layers\.\d+\./, "model.layers.*.");
    if (seen.has(key)) continue;
    seen.add(key);
    if (numel(shape) * F32 <= limit) continue;
    const rowBytes = (shape.length > 1 ? shape[1] : 1) * F32;
    shardsNeeded.push({ tensor: key, shards: shardsFor(shape[0], rowBytes, limit) });
  }
  const activationOver: string[] = [];
  const acts: [string, number, number][] = [
    ["activation gate/up/act (T,I)", T, I],
    ["activation q/o (T,Hq·D)", T, cfg.numHeads * cfg.headDim],
    ["activation x (T,C)", T, C],
    ["logits chunk (T,chunk)", T, chunk],
  ];
  for (const [what, r, c] of acts) {
    if (r * c * F32 > limit) {
      activationOver.push(what);
      shardsNeeded.push({ tensor: what, shards: shardsFor(r, c * F32, limit) });
    }
  }
  return {
    rows,
    totalBytes,
    shardsNeeded,
    microBatchTokens: T,
    recompute: o.recompute,
    deviceBytes: o.deviceBytes,
    activationOver,
  };
}

function fitsIn(p: { totalBytes: number; activationOver: string[] }, deviceBytes?: number) {
  return p.activationOver.length === 0 &&
    (deviceBytes === undefined || p.totalBytes <= deviceBytes);
}

/** Largest micro-batch (tokens, multiple of 64, ≥ 64) that fits, or 0. */
function largestFittingT(cfg: ModelConfig, o: PlanOptions): number {
  let lo = 0, hi = Math.max(64, o.microBatchTokens);
  const ok = (t: number) => fitsIn(planRaw(cfg, { ...o, microBatchTokens: t }), o.deviceBytes);
  if (!ok(64)) return 0;
  lo = 64;
  while (hi - lo > 64) {
    const mid = Math.floor((lo + hi) / 2 / 64) * 64;
    if (mid <= lo) break;
    if (ok(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/**
 * Estimate the device memory of training `cfg` with AdamW in f32: every buffer the trainer holds, which
 * tensors need sharding across bindings, whether it fits, and what to change when it does not.
 */
export function planMemory(cfg: ModelConfig, o: PlanOptions): MemoryPlan {
  const p = planRaw(cfg, o);
  const fits = fitsIn(p, o.deviceBytes);
  const tips: string[] = [];
  if (p.activationOver.length > 0) {
    tips.push(
      `${p.activationOver.join(", ")} exceed${
        p.activationOver.length === 1 ? "s" : ""
      } one storage ` +
        `binding (${
          fmtBytes(o.limits.maxStorageBufferBindingSize)
        }); use fewer tokens per micro-batch`,
    );
  }
  if (o.deviceBytes !== undefined && p.totalBytes > o.deviceBytes) {
    tips.push(`needs ${fmtBytes(p.totalBytes)} but the device has ${fmtBytes(o.deviceBytes)}`);
    if (!o.recompute) {
      const r = planRaw(cfg, { ...o, recompute: true });
      tips.push(
        `turn on activation recomputation: ${fmtBytes(r.totalBytes)}` +
          (fitsIn(r, o.deviceBytes) ? " (fits)" : " (still too much)"),
      );
    }
    const best = largestFittingT(cfg, o);
    if (best > 0) tips.push(`at most ${best} tokens per micro-batch fit with these settings`);
    else {
      tips.push(
        "even 64 tokens per micro-batch do not fit: the weights, gradients and AdamW state alone " +
          `take ${
            fmtBytes(p.rows.slice(0, 4).reduce((s, r) => s + r.bytes, 0))
          }; use a smaller model`,
      );
    }
  }
  let advice: string;
  if (fits) {
    advice = o.deviceBytes === undefined
      ? `needs ${fmtBytes(p.totalBytes)}; the device's memory size is unknown`
      : `fits: ${fmtBytes(p.totalBytes)} of ${fmtBytes(o.deviceBytes)} ` +
        `(${((100 * p.totalBytes) / o.deviceBytes).toFixed(0)}%)`;
  } else advice = tips.join("; ");
  const { activationOver: _a, ...rest } = p;
  return { ...rest, fits, advice };
}

/** Human-readable bytes (KiB, MiB, GiB). */
export function fmtBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}

/** The plan as a small table plus its advice (for logs and the out-of-memory error message). */
export function formatPlan(plan: MemoryPlan): string {
  const w = Math.max(...plan.rows.map((r) => r.what.length), 5);
  const lines = [
    `memory plan: ${plan.microBatchTokens} tokens per micro-batch, recompute ${
      plan.recompute ? "on" : "off"
    }`,
    ...plan.rows.map((r) => `  ${r.what.padEnd(w)}  ${fmtBytes(r.bytes).padStart(10)}`),
    `  ${"total".padEnd(w)}  ${fmtBytes(plan.totalBytes).padStart(10)}` +
    (plan.deviceBytes !== undefined ? ` of ${fmtBytes(plan.deviceBytes)}` : ""),
  ];
  if (plan.shardsNeeded.length > 0) {
    lines.push(
      "  sharded across bindings: " +
        plan.shardsNeeded.map((s) => `${s.tensor} ×${s.shards}`).join(", "),
    );
  }
  lines.push(`  ${plan.fits ? "" : "does not fit: "}${plan.advice}`);
  return lines.join("\n");
}
