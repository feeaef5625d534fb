// Llama-family training graph on the WGSL kernels: parameters, activations, forward, backward, AdamW.
import {
  adamwHyper,
  adamwUpdate,
  gradNormFinalize,
  gradNormPartialCount,
  gradNormSquares,
  lossScaleState,
} from "../kernels/adamw.ts";
import {
  attentionBackward,
  attentionBackwardWorkspaceBytes,
  attentionForward,
  attentionVariant,
  denseQkvLayout,
  type KvDense,
  kvDenseFloats,
  kvWindowsTake,
  type QkvLayout,
} from "../kernels/attention.ts";
import {
  crossEntropyForward,
  crossEntropyForwardBackward,
  type CrossEntropyWorkspace,
  crossEntropyWorkspace,
} from "../kernels/cross_entropy.ts";
import { axpy, copy, copyRows, fill, scaleCopy } from "../kernels/elementwise.ts";
import {
  buildEmbeddingIndex,
  embeddingBackward,
  embeddingForward,
  embeddingIndexLength,
} from "../kernels/embedding.ts";
import {
  biasBackward,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulForward,
  matmulTuning,
} from "../kernels/matmul.ts";
import { rmsnormBackward, rmsnormForward, rmsnormWorkspaceBytes } from "../kernels/rmsnorm.ts";
import { ropeBackward, ropeForward, ropeTable } from "../kernels/rope.ts";
import { type BufferSlice, type Dispatch, type Gpu, ParamArena } from "../kernels/runtime.ts";
import { swigluBackward, swigluForward } from "../kernels/swiglu.ts";
import { type ModelConfig, numel, parameterShapes, rowShards } from "./config.ts";
import { type ArenaTensor, TensorArena } from "./tensor_arena.ts";

/** One micro-batch: T token slots (samples packed, the tail padded with ignored tokens). */
export interface MicroBatch {
  ids: Uint32Array; // (T)
  labels: Int32Array; // (T), −100 = no loss
  pos: Uint32Array; // (T) position within its sample
  seqStart: Uint32Array; // (T) first token of its sample
  seqEnd: Uint32Array; // (T) one past the last token of its sample
  lossTokens: number;
  samples: number;
  /** Slots holding real tokens (the rest is padding). */
  used: number;
}

/** A sample as the data stage writes it: token ids and labels (already shifted or not, see below). */
export interface TokenizedSample {
  ids: ArrayLike<number>;
  labels: ArrayLike<number>;
}

/**
 * Pack samples into one row of T slots. Labels follow the Hugging Face convention of the data
 * stage (labels[i] is the target of position i, unshifted): the next-token target of position i
 * is labels[i + 1] within the same sample, so the last token of each sample predicts nothing.
 * Padding forms its own segments of ignored tokens.
 */
export function packMicroBatch(samples: TokenizedSample[], T: number, padId = 0): MicroBatch {
  const mb: MicroBatch = {
    ids: new Uint32Array(T).fill(padId),
    labels: new Int32Array(T).fill(-100),
    pos: new Uint32Array(T),
    seqStart: new Uint32Array(T),
    seqEnd: new Uint32Array(T),
    lossTokens: 0,
    samples: samples.length,
    used: 0,
  };
  let t = 0;
  for (const s of samples) {
    const n = s.ids.length;
    if (t + n > T) throw new Error(`micro-batch overflow: ${t + n} tokens > capacity ${T}`);
    for (let i = 0; i < n; i++) {
      mb.ids[t + i] = s.ids[i];
      const target = i + 1 < n ? s.labels[i + 1] : -100;
      mb.labels[t + i] = target;
      if (target !== -100) mb.lossTokens++;
      mb.pos[t + i] = i;
      mb.seqStart[t + i] = t;
      mb.seqEnd[t + i] = t + n;
    }
    t += n;
  }
  mb.used = t;
  for (let i = t; i < T; i++) {
    mb.pos[i] = i - t;
    mb.seqStart[i] = t;
    mb.seqEnd[i] = T;
  }
  return mb;
}

/**
 * The sample bounds of `mb` with no segment longer than `maxSample` tokens: a longer sample is an
 * error (the graph was planned for shorter ones), and padding past `used` (its own segment, no
 * labels) is cut into segments of at most maxSample tokens. Returns `mb` itself when nothing
 * changes.
 */
export function boundSegments(
  mb: MicroBatch,
  maxSample: number,
): { seqStart: Uint32Array; seqEnd: Uint32Array } {
  for (let t = 0; t < mb.used; t = mb.seqEnd[t]) {
    if (mb.seqEnd[t] <= t) throw new Error(`micro-batch seqEnd[${t}] = ${mb.seqEnd[t]} <= ${t}`);
    if (mb.seqEnd[t] - t > maxSample) {
      throw new Error(
        `micro-batch sample at token ${t} has ${mb.seqEnd[t] - t} tokens, more than the ` +
          `${maxSample} the graph was built for (maxSampleTokens)`,
      );
    }
  }
  const T = mb.seqStart.length;
  if (T - mb.used <= maxSample) return mb;
  const seqStart = mb.seqStart.slice(), seqEnd = mb.seqEnd.slice();
  for (let t = mb.used; t < T; t++) {
    seqStart[t] = mb.used + Math.floor((t - mb.used) / maxSample) * maxSample;
    seqEnd[t] = Math.min(T, seqStart[t] + maxSample);
  }
  return { seqStart, seqEnd };
}

/** Per-layer weights (slices into the parameter arena), by HF name suffix. */
interface LayerParams {
  ln1: ArenaTensor;
  q: ArenaTensor;
  k: ArenaTensor;
  v: ArenaTensor;
  o: ArenaTensor;
  qb?: ArenaTensor;
  kb?: ArenaTensor;
  vb?: ArenaTensor;
  ob?: ArenaTensor;
  /** q_proj, k_proj, v_proj back to back, (Hq·D + 2·Hkv·D, C), when fused; biases likewise. */
  qkv?: ArenaTensor;
  qkvGrad?: ArenaTensor;
  qkvBias?: ArenaTensor;
  qkvBiasGrad?: ArenaTensor;
  ln2: ArenaTensor;
  gate: ArenaTensor;
  up: ArenaTensor;
  /** gate_proj and up_proj back to back, (2I, C), when fused; its gradient likewise. */
  gateUp?: ArenaTensor;
  gateUpGrad?: ArenaTensor;
  down: ArenaTensor;
}

/** Saved activations of one layer. */
interface LayerActs {
  xIn: ArenaTensor; // (T, C) input of the layer (residual stream)
  n1: ArenaTensor; // (T, C)
  rstd1: ArenaTensor; // (T)
  // (T, Hq·D), (T, Hkv·D) after RoPE, (T, Hkv·D); or, fused, one (T, Hq·D + 2·Hkv·D) for all three
  q: ArenaTensor;
  k: ArenaTensor;
  v: ArenaTensor;
  o: ArenaTensor; // (T, Hq·D) attention output before o_proj
  lse: ArenaTensor; // (Hq, T)
  xMid: ArenaTensor; // (T, C)
  n2: ArenaTensor; // (T, C)
  rstd2: ArenaTensor; // (T)
  gate: ArenaTensor; // (T, I), or (T, 2I) with up when the projections are fused
  up: ArenaTensor; // (T, I), or the same (T, 2I) tensor as gate
  act: ArenaTensor; // (T, I)
  // CPU row attention with fused q/k/v: dense (T, Hkv·D) copies of k (after RoPE) and v, each at
  // least 64 KiB, which the row kernels read through uniform windows (kernels/attention.ts)
  kvDense?: KvDense;
}

/** Hyper-parameters of one optimizer step. */
export interface StepHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  maxGradNorm: number;
}

/** Options of a graph. */
export interface GraphOptions {
  /** Token slots per micro-batch. */
  tokens: number;
  /** Keep only each layer's input and recompute the rest during backward. */
  recompute?: boolean;
  /** "train" allocates gradients and optimizer state; "eval" only the forward. */
  mode?: "train" | "eval";
  /** Largest tensor per buffer (default: the adapter's storage binding limit); tests lower it. */
  maxBindingBytes?: number;
  /**
   * Dynamic loss scaling of the gradients (train mode): start at `init` (a power of two), halve
   * and skip the step on a non-finite gradient, double after `growthInterval` finite steps in a
   * row. Default: DYNAMIC_LOSS_SCALE when the matmul precision is f16, else none (null).
   */
  lossScale?: { init: number; growthInterval: number } | null;
  /**
   * Run q/k/v_proj as one GEMM and gate_proj/up_proj as one, over weights stored back to back
   * (default true; the graph falls back to separate GEMMs when sizes do not align or exceed one
   * binding).
   */
  fuse?: boolean;
  /**
   * Longest sample a micro-batch holds, in tokens (the trainer passes its longest sample, the bench
   * its row length). On CPU adapters it lets the row attention read K and V through uniform windows
   * in chunks of queries when a micro-batch is longer than one window (kernels/attention.ts);
   * setBatch then refuses longer samples and cuts padding into segments no longer than this.
   */
  maxSampleTokens?: number;
}

/**
 * torch.amp.GradScaler's defaults: 2^16 lifts loss gradients (~1/tokens per logit) far above f16's
 * subnormals; growth every 2,000 finite steps.
 */
export const DYNAMIC_LOSS_SCALE = { init: 65536, growthInterval: 2000 };

/** Rows [v0, v0 + rows) of a parameter, held in one binding (with its gradient in train mode). */
export interface ParamPiece {
  v0: number;
  rows: number;
  cols: number;
  w: ArenaTensor;
  g?: ArenaTensor;
}

/**
 * Slots of the metrics ring per step: loss sum, grad norm, AdamW's gradient multiplier (clip / loss
 * scale), finite flag, loss scale used.
 */
export const METRIC_FIELDS = 5;
const RING = 1024;

/** The model on the GPU with every buffer, bind group and dispatch list built once. */
export class LlamaGraph {
  readonly T: number;
  /** GraphOptions.maxSampleTokens, when given. */
  readonly maxSample?: number;
  readonly params = new Map<string, ArenaTensor>();
  readonly grads = new Map<string, ArenaTensor>();
  /** Every parameter as its row pieces (one piece unless sharded). */
  readonly pieces = new Map<string, ParamPiece[]>();
  readonly weights: TensorArena;
  readonly gradArena: TensorArena | null;
  readonly mArena: TensorArena | null;
  readonly vArena: TensorArena | null;
  readonly acts: TensorArena;
  readonly arena: ParamArena;
  readonly forwardBackward: Dispatch[] = [];
  readonly forwardOnly: Dispatch[] = [];
  readonly optimizer: Dispatch[] = [];
  readonly zeroLoss: Dispatch[] = [];
  private readonly firstForwardBackward: Dispatch[] = [];
  private readonly evalPass: Dispatch[] = [];
  /** Per-token loss (T) of the last forward (eval mode), 0 on ignored tokens. */
  readonly tokenLoss: ArenaTensor;
  readonly lossAcc: GPUBuffer;
  readonly stats: GPUBuffer;
  readonly ring: GPUBuffer;
  readonly hp: GPUBuffer;
  readonly invTokens: GPUBuffer;
  /** Dynamic loss-scale state (kernels/adamw.ts LOSS_SCALE_FLOATS), null when unscaled. */
  readonly lossScale: GPUBuffer | null;
  private readonly inputs: Record<
    "ids" | "labels" | "pos" | "seqStart" | "seqEnd" | "embIndex",
    GPUBuffer
  >;
  private readonly mode: "train" | "eval";
  private layers: LayerParams[] = [];
  private ceWs: CrossEntropyWorkspace;
  private layerActs: LayerActs[] = [];

  constructor(readonly gpu: Gpu, readonly cfg: ModelConfig, opts: GraphOptions) {
    const T = (this.T = opts.tokens);
    this.maxSample = opts.maxSampleTokens;
    this.mode = opts.mode ?? "train";
    const train = this.mode === "train";
    const { hiddenSize: C, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D } = cfg;
    const V = cfg.vocabSize, L = cfg.numLayers;
    this.arena = new ParamArena(gpu, "graph.params", 1 << 20);

    // Parameters (and, in train mode, gradients and Adam moments with the same layout).
    this.weights = new TensorArena(gpu, "weights");
    this.gradArena = train ? new TensorArena(gpu, "grads") : null;
    this.mArena = train ? new TensorArena(gpu, "adam.m") : null;
    this.vArena = train ? new TensorArena(gpu, "adam.v") : null;
    // A tensor larger than one binding (a large vocabulary's embedding or head) is split into
    // row shards, each bound on its own; every other tensor is one piece.
    const binding = Math.min(
      opts.maxBindingBytes ?? Infinity,
      gpu.limits.maxStorageBufferBindingSize,
      gpu.limits.maxBufferSize,
    );
    const shapes = parameterShapes(cfg);
    const done = new Set<string>(); // reserved ahead with a fused group
    for (let si = 0; si < shapes.length; si++) {
      const { name, shape } = shapes[si];
      if (done.has(name)) continue;
      if (opts.fuse !== false && name.endsWith("self_attn.q_proj.weight")) {
        const pre = name.slice(0, -"q_proj.weight".length);
        // q, k, v weights (and biases, Qwen2): both groups fuse, or neither
        const group = (kind: string) =>
          ["q", "k", "v"].flatMap((x) =>
            shapes.filter((s) => s.name === `${pre}${x}_proj.${kind}`)
          );
        const weights = group("weight"), biases = group("bias");
        const ok = (gr: { shape: number[] }[]) => {
          const n = gr.map((s) => numel(s.shape));
          return this.weights.groupable(n) && n.reduce((a, b) => a + b, 0) * 4 <= binding;
        };
        if (ok(weights) && (biases.length === 0 || ok(biases))) {
          this.reserveFused(`${pre}qkv_proj.weight`, weights, binding);
          if (biases.length) this.reserveFused(`${pre}qkv_proj.bias`, biases, binding);
          for (const s of [...weights, ...biases]) done.add(s.name);
          continue;
        }
      }
      if (
        opts.fuse !== false && name.endsWith("mlp.gate_proj.weight") &&
        this.reserveFused(
          `${name.slice(0, -16)}gate_up_proj.weight`,
          shapes.slice(si, si + 2),
          binding,
        )
      ) {
        si++; // up_proj reserved with it
        continue;
      }
      const pieces: ParamPiece[] = [];
      for (const { v0, rows, cols } of rowShards(name, shape, binding)) {
        const label = rows === shape[0] ? name : `${name}[${v0}:${v0 + rows}]`;
        const numel = rows * cols;
        const piece: ParamPiece = { v0, rows, cols, w: this.weights.reserve(label, numel) };
        if (train) {
          piece.g = this.gradArena!.reserve(label, numel);
          this.mArena!.reserve(label, numel);
          this.vArena!.reserve(label, numel);
        }
        pieces.push(piece);
      }
      this.pieces.set(name, pieces);
      if (pieces.length === 1) {
        this.params.set(name, pieces[0].w);
        if (train) this.grads.set(name, pieces[0].g!);
      }
    }
    for (const a of [this.weights, this.gradArena, this.mArena, this.vArena]) a?.allocate();
    const P = (n: string) => this.params.get(n)!;
    for (let l = 0; l < L; l++) {
      const p = `model.layers.${l}.`;
      this.layers.push({
        ln1: P(`${p}input_layernorm.weight`),
        q: P(`${p}self_attn.q_proj.weight`),
        k: P(`${p}self_attn.k_proj.weight`),
        v: P(`${p}self_attn.v_proj.weight`),
        o: P(`${p}self_attn.o_proj.weight`),
        qb: this.params.get(`${p}self_attn.q_proj.bias`),
        kb: this.params.get(`${p}self_attn.k_proj.bias`),
        vb: this.params.get(`${p}self_attn.v_proj.bias`),
        ob: this.params.get(`${p}self_attn.o_proj.bias`),
        qkv: this.fused.get(`${p}self_attn.qkv_proj.weight`)?.w,
        qkvGrad: this.fused.get(`${p}self_attn.qkv_proj.weight`)?.g,
        qkvBias: this.fused.get(`${p}self_attn.qkv_proj.bias`)?.w,
        qkvBiasGrad: this.fused.get(`${p}self_attn.qkv_proj.bias`)?.g,
        ln2: P(`${p}post_attention_layernorm.weight`),
        gate: P(`${p}mlp.gate_proj.weight`),
        up: P(`${p}mlp.up_proj.weight`),
        gateUp: this.fused.get(`${p}mlp.gate_up_proj.weight`)?.w,
        gateUpGrad: this.fused.get(`${p}mlp.gate_up_proj.weight`)?.g,
        down: P(`${p}mlp.down_proj.weight`),
      });
    }

    // Inputs rewritten every micro-batch.
    const u32 = (label: string, n: number) => gpu.buffer(`graph.${label}`, n * 4);
    this.inputs = {
      ids: u32("ids", T),
      labels: u32("labels", T),
      pos: u32("pos", T),
      seqStart: u32("seqStart", T),
      seqEnd: u32("seqEnd", T),
      embIndex: u32("embIndex", embeddingIndexLength(T)),
    };
    this.lossAcc = gpu.buffer("graph.lossAcc", 16);
    this.stats = gpu.buffer("graph.stats", 16);
    this.ring = gpu.buffer("graph.metricsRing", RING * METRIC_FIELDS * 4);
    this.hp = gpu.buffer("graph.adamHyper", 32);
    this.invTokens = gpu.buffer("graph.invTokens", 16);
    const scaling = train
      ? (opts.lossScale === undefined
        ? (matmulTuning(gpu).precision === "f16" ? DYNAMIC_LOSS_SCALE : null)
        : opts.lossScale)
      : null;
    this.lossScale = scaling
      ? gpu.bufferFrom("graph.lossScale", lossScaleState(scaling.init, scaling.growthInterval))
      : null;
    const ropeTab = gpu.bufferFrom(
      "graph.ropeTable",
      ropeTable(D, cfg.ropeTheta, cfg.ropeScaling as never, Math.max(T, 1)),
    );

    // Activations.
    const acts = (this.acts = new TensorArena(gpu, "acts", undefined, true));
    // Fused q/k/v: one (T, Hq·D + 2·Hkv·D) activation (q, k, v column blocks), gradient alike.
    const fusedQkv = this.layers.length > 0 && this.layers.every((w) => w.qkv);
    const NQ = Hq * D, NKV = Hkv * D, NQKV = NQ + 2 * NKV;
    const qkvActs = (label: string) => {
      if (!fusedQkv) {
        return {
          q: acts.reserve(`${label}q`, T * NQ),
          k: acts.reserve(`${label}k`, T * NKV),
          v: acts.reserve(`${label}v`, T * NKV),
        };
      }
      const t = acts.reserve(`${label}qkv`, T * NQKV);
      return { q: t, k: t, v: t };
    };
    /** Where q, k, v (and dq, dk, dv) sit: column blocks of the fused tensor, or dense tensors. */
    const layout: QkvLayout = fusedQkv
      ? { ldQ: NQKV, ldKv: NQKV, qOff: 0, kOff: NQ, vOff: NQ + NKV }
      : denseQkvLayout({ Hq, Hkv, D });
    // Fused gate/up: one (T, 2I) activation (gate columns, then up columns), one gradient alike.
    const fusedMlp = this.layers.length > 0 && this.layers.every((w) => w.gateUp);
    const gateUpActs = (label: string) => {
      if (!fusedMlp) {
        return { gate: acts.reserve(`${label}gate`, T * I), up: acts.reserve(`${label}up`, T * I) };
      }
      const t = acts.reserve(`${label}gateUp`, T * 2 * I);
      return { gate: t, up: t };
    };
    // the row attention reads K and V through uniform windows from dense copies of them
    const kvCopies = fusedQkv && attentionVariant(gpu) === "row" &&
      kvWindowsTake(gpu, { T, Hkv, D, layout, maxSample: this.maxSample });
    const kvDense = (): KvDense | undefined =>
      kvCopies
        ? {
          k: acts.reserve("kDense", kvDenseFloats(T, Hkv, D)),
          v: acts.reserve("vDense", kvDenseFloats(T, Hkv, D)),
          maxSample: this.maxSample,
        }
        : undefined;
    const layerActs = (): LayerActs => ({
      xIn: acts.reserve("xIn", T * C),
      n1: acts.reserve("n1", T * C),
      rstd1: acts.reserve("rstd1", T),
      ...qkvActs(""),
      o: acts.reserve("o", T * Hq * D),
      lse: acts.reserve("lse", Hq * T),
      xMid: acts.reserve("xMid", T * C),
      n2: acts.reserve("n2", T * C),
      rstd2: acts.reserve("rstd2", T),
      ...gateUpActs(""),
      act: acts.reserve("act", T * I),
      kvDense: kvDense(),
    });
    const keepAll = !opts.recompute || !train;
    const shared = keepAll ? null : layerActs();
    for (let l = 0; l < L; l++) {
      if (keepAll) this.layerActs.push(layerActs());
      else this.layerActs.push({ ...shared!, xIn: acts.reserve("xIn", T * C) });
    }
    const xFinal = acts.reserve("xFinal", T * C);
    const hFinal = acts.reserve("hFinal", T * C);
    const rstdF = acts.reserve("rstdF", T);
    this.tokenLoss = acts.reserve("tokenLoss", T);
    const tmpC = acts.reserve("tmpC", T * C);
    // Backward scratch.
    const dx = train ? acts.reserve("dx", T * C) : null;
    const dh = train ? acts.reserve("dh", T * C) : null;
    const dtmp = train ? acts.reserve("dtmp", T * C) : null;
    const dn = train ? acts.reserve("dn", T * C) : null;
    const { q: dq, k: dk, v: dv } = train ? qkvActs("d") : { q: null, k: null, v: null };
    const dO = train ? acts.reserve("do", T * Hq * D) : null;
    const { gate: dgate, up: dup } = train ? gateUpActs("d") : { gate: null, up: null };
    const dact = train ? acts.reserve("dact", T * I) : null;
    const normWs = acts.reserve("normWs", rmsnormWorkspaceBytes(T, Math.max(C, 1)) / 4);
    const attnWs = train
      ? acts.reserve("attnWs", attentionBackwardWorkspaceBytes(T, Hq) / 4)
      : null;
    const ceWs = (this.ceWs = crossEntropyWorkspace(gpu, T, V));
    acts.allocate();

    // ---- forward ----
    const g = gpu, ar = this.arena, inp = this.inputs;
    const resMult = cfg.residualMultiplier;
    const fwd: Dispatch[] = [];
    /**
     * RoPE in place on q (which "q") or k of the q/k/v layout at the micro-batch's positions
     * (backward: the transpose, on dq or dk).
     */
    const rope = (x: BufferSlice, which: "q" | "k", dir: "forward" | "backward"): Dispatch[] => {
      const pos = { buffer: inp.pos }, table = { buffer: ropeTab };
      const at = which === "q"
        ? { H: Hq, ld: layout.ldQ, off: layout.qOff }
        : { H: Hkv, ld: layout.ldKv, off: layout.kOff };
      return dir === "forward"
        ? ropeForward(g, ar, { out: x, x, pos, table, T, D, ...at })
        : ropeBackward(g, ar, { dx: x, dout: x, pos, table, T, D, ...at });
    };
    const layerForward = (l: number, out: Dispatch[]) => {
      const w = this.layers[l], a = this.layerActs[l];
      const xOut = l + 1 < L ? this.layerActs[l + 1].xIn : xFinal;
      out.push(
        ...rmsnormForward(g, ar, {
          y: a.n1,
          rstd: a.rstd1,
          x: a.xIn,
          w: w.ln1,
          T,
          C,
          eps: cfg.rmsNormEps,
        }),
        ...(w.qkv
          ? matmulForward(g, ar, {
            y: a.q,
            x: a.n1,
            w: w.qkv,
            bias: w.qkvBias,
            M: T,
            N: NQKV,
            K: C,
          })
          : [
            ...matmulForward(g, ar, { y: a.q, x: a.n1, w: w.q, bias: w.qb, M: T, N: NQ, K: C }),
            ...matmulForward(g, ar, { y: a.k, x: a.n1, w: w.k, bias: w.kb, M: T, N: NKV, K: C }),
            ...matmulForward(g, ar, { y: a.v, x: a.n1, w: w.v, bias: w.vb, M: T, N: NKV, K: C }),
          ]),
        ...rope(a.q, "q", "forward"),
        ...rope(a.k, "k", "forward"),
        ...(a.kvDense
          ? [a.kvDense.k, a.kvDense.v].flatMap((y, i) =>
            copyRows(g, ar, {
              y,
              x: a.k,
              rows: T,
              cols: NKV,
              ldx: layout.ldKv,
              offx: i === 0 ? layout.kOff : layout.vOff,
            })
          )
          : []),
        ...attentionForward(g, ar, {
          o: a.o,
          lse: a.lse,
          q: a.q,
          k: a.k,
          v: a.v,
          seqStart: { buffer: inp.seqStart },
          seqEnd: { buffer: inp.seqEnd },
          T,
          Hq,
          Hkv,
          D,
          scale: cfg.attentionScale,
          layout,
          kvDense: a.kvDense,
          maxSample: this.maxSample,
        }),
      );
      // xMid = xIn + resMult · o_proj(o)
      out.push(...residualBranch(a.xMid, a.xIn, a.o, w.o, w.ob, Hq * D));
      out.push(
        ...rmsnormForward(g, ar, {
          y: a.n2,
          rstd: a.rstd2,
          x: a.xMid,
          w: w.ln2,
          T,
          C,
          eps: cfg.rmsNormEps,
        }),
        ...(w.gateUp
          ? matmulForward(g, ar, { y: a.gate, x: a.n2, w: w.gateUp, M: T, N: 2 * I, K: C })
          : [
            ...matmulForward(g, ar, { y: a.gate, x: a.n2, w: w.gate, M: T, N: I, K: C }),
            ...matmulForward(g, ar, { y: a.up, x: a.n2, w: w.up, M: T, N: I, K: C }),
          ]),
        ...swigluForward(g, ar, { out: a.act, gate: a.gate, up: a.up, T, I, fused: !!w.gateUp }),
      );
      out.push(...residualBranch(xOut, a.xMid, a.act, w.down, undefined, I));
    };
    // y = x + resMult · (inp · Wᵀ + b)
    const residualBranch = (
      y: BufferSlice,
      x: BufferSlice,
      inpAct: BufferSlice,
      wt: BufferSlice,
      b: BufferSlice | undefined,
      K: number,
    ): Dispatch[] => {
      if (resMult === 1) {
        return [
          ...copy(g, ar, { y, x, N: T * C }),
          ...matmulForward(g, ar, {
            y,
            x: inpAct,
            w: wt,
            bias: b,
            M: T,
            N: C,
            K,
            accumulate: true,
          }),
        ];
      }
      return [
        ...matmulForward(g, ar, { y: tmpC, x: inpAct, w: wt, bias: b, M: T, N: C, K }),
        ...copy(g, ar, { y, x, N: T * C }),
        ...axpy(g, ar, { y, x: tmpC, alpha: resMult, N: T * C }),
      ];
    };

    const embedPieces = this.pieces.get("model.embed_tokens.weight")!;
    const headPieces = this.pieces.get("lm_head.weight") ?? embedPieces;
    const sharded = (ps: ParamPiece[]) => ps.length > 1;
    for (const pc of embedPieces) {
      fwd.push(
        ...embeddingForward(g, ar, {
          out: this.layerActs[0].xIn,
          table: pc.w,
          ids: { buffer: inp.ids },
          T,
          C,
          scale: cfg.embeddingMultiplier,
          shard: sharded(embedPieces) ? { v0: pc.v0, rows: pc.rows, vocab: V } : undefined,
        }),
      );
    }
    const head = headPieces[0].w;
    const headShards = (withGrad: boolean) =>
      sharded(headPieces)
        ? headPieces.map((pc) => ({
          v0: pc.v0,
          rows: pc.rows,
          w: pc.w,
          dw: withGrad ? pc.g : undefined,
        }))
        : undefined;
    const fwdLayers: Dispatch[][] = [];
    for (let l = 0; l < L; l++) {
      const d: Dispatch[] = [];
      layerForward(l, d);
      fwdLayers.push(d);
      if (keepAll) fwd.push(...d);
    }
    if (!keepAll) {
      // Forward still has to run every layer to produce the next layer's input.
      for (const d of fwdLayers) fwd.push(...d);
    }
    fwd.push(
      ...rmsnormForward(g, ar, {
        y: hFinal,
        rstd: rstdF,
        x: xFinal,
        w: P("model.norm.weight"),
        T,
        C,
        eps: cfg.rmsNormEps,
      }),
    );
    const logitScale = 1 / cfg.logitsScaling;
    this.zeroLoss.push(...fill(g, ar, { y: { buffer: this.lossAcc }, value: 0, N: 4 }));
    this.forwardOnly.push(
      ...fwd,
      ...crossEntropyForward(g, ar, {
        h: hFinal,
        w: head,
        labels: { buffer: inp.labels },
        lossAcc: { buffer: this.lossAcc },
        tokenLoss: this.tokenLoss,
        T,
        C,
        V,
        logitScale,
        workspace: ceWs,
        shards: headShards(false),
      }),
    );
    if (!train) return;

    // ---- backward ----
    const G = (n: string) => this.grads.get(n)!;
    const gHead = headPieces[0].g!;
    const bwd: Dispatch[] = [];
    bwd.push(
      ...crossEntropyForwardBackward(g, ar, {
        h: hFinal,
        w: head,
        labels: { buffer: inp.labels },
        dh: dh!,
        dw: gHead,
        lossAcc: { buffer: this.lossAcc },
        invTokens: { buffer: this.invTokens },
        lossScale: this.lossScale ?? undefined,
        T,
        C,
        V,
        logitScale,
        workspace: ceWs,
        shards: headShards(true),
      }),
      ...rmsnormBackward(g, ar, {
        dx: dx!,
        dw: G("model.norm.weight"),
        dy: dh!,
        x: xFinal,
        w: P("model.norm.weight"),
        rstd: rstdF,
        T,
        C,
        workspace: normWs,
      }),
    );
    // Fused gate/up: dW (2I, C) += dGUᵀ·n2 and dn2 = dGU·W over the (T, 2I) gradient, one GEMM each.
    const fusedMlpBackward = (w: LayerParams, a: LayerActs): Dispatch[] => [
      ...matmulBackwardWeight(g, ar, {
        dw: w.gateUpGrad!,
        dy: dgate!,
        x: a.n2,
        M: T,
        N: 2 * I,
        K: C,
        accumulate: true,
      }),
      ...matmulBackwardInput(g, ar, { dx: dn!, dy: dgate!, w: w.gateUp!, M: T, N: 2 * I, K: C }),
    ];
    for (let l = L - 1; l >= 0; l--) {
      const w = this.layers[l], a = this.layerActs[l];
      const pre = `model.layers.${l}.`;
      if (!keepAll) bwd.push(...fwdLayers[l]); // recompute this layer's activations
      // x_{l+1} = xMid + m · down(act)
      const dBranch = resMult === 1 ? dx! : dtmp!;
      if (resMult !== 1) {
        bwd.push(...scaleCopy(g, ar, { y: dtmp!, x: dx!, alpha: resMult, N: T * C }));
      }
      bwd.push(
        ...matmulBackwardWeight(g, ar, {
          dw: G(`${pre}mlp.down_proj.weight`),
          dy: dBranch,
          x: a.act,
          M: T,
          N: C,
          K: I,
          accumulate: true,
        }),
        ...matmulBackwardInput(g, ar, { dx: dact!, dy: dBranch, w: w.down, M: T, N: C, K: I }),
        ...swigluBackward(g, ar, {
          dgate: dgate!,
          dup: dup!,
          dout: dact!,
          gate: a.gate,
          up: a.up,
          T,
          I,
          fused: !!w.gateUp,
        }),
        ...(w.gateUp ? fusedMlpBackward(w, a) : [
          ...matmulBackwardWeight(g, ar, {
            dw: G(`${pre}mlp.gate_proj.weight`),
            dy: dgate!,
            x: a.n2,
            M: T,
            N: I,
            K: C,
            accumulate: true,
          }),
          ...matmulBackwardWeight(g, ar, {
            dw: G(`${pre}mlp.up_proj.weight`),
            dy: dup!,
            x: a.n2,
            M: T,
            N: I,
            K: C,
            accumulate: true,
          }),
          ...matmulBackwardInput(g, ar, { dx: dn!, dy: dgate!, w: w.gate, M: T, N: I, K: C }),
          ...matmulBackwardInput(g, ar, {
            dx: dn!,
            dy: dup!,
            w: w.up,
            M: T,
            N: I,
            K: C,
            accumulate: true,
          }),
        ]),
        ...rmsnormBackward(g, ar, {
          dx: dx!,
          dw: G(`${pre}post_attention_layernorm.weight`),
          dy: dn!,
          x: a.xMid,
          w: w.ln2,
          rstd: a.rstd2,
          T,
          C,
          accumulateDx: true,
          workspace: normWs,
        }),
      );
      // xMid = xIn + m · o_proj(o)
      if (resMult !== 1) {
        bwd.push(...scaleCopy(g, ar, { y: dtmp!, x: dx!, alpha: resMult, N: T * C }));
      }
      bwd.push(
        ...matmulBackwardWeight(g, ar, {
          dw: G(`${pre}self_attn.o_proj.weight`),
          dy: dBranch,
          x: a.o,
          M: T,
          N: C,
          K: Hq * D,
          accumulate: true,
        }),
      );
      if (w.ob) {
        bwd.push(
          ...biasBackward(g, ar, {
            db: G(`${pre}self_attn.o_proj.bias`),
            dy: dBranch,
            M: T,
            N: C,
            accumulate: true,
          }),
        );
      }
      bwd.push(
        ...matmulBackwardInput(g, ar, { dx: dO!, dy: dBranch, w: w.o, M: T, N: C, K: Hq * D }),
        ...attentionBackward(g, ar, {
          dq: dq!,
          dk: dk!,
          dv: dv!,
          dout: dO!,
          o: a.o,
          lse: a.lse,
          q: a.q,
          k: a.k,
          v: a.v,
          seqStart: { buffer: inp.seqStart },
          seqEnd: { buffer: inp.seqEnd },
          T,
          Hq,
          Hkv,
          D,
          scale: cfg.attentionScale,
          workspace: attnWs!,
          layout,
          kvDense: a.kvDense,
          maxSample: this.maxSample,
        }),
        ...rope(dq!, "q", "backward"),
        ...rope(dk!, "k", "backward"),
      );
      const proj: [string, ArenaTensor, ArenaTensor | undefined, BufferSlice, number][] = w.qkv
        ? [] // one GEMM each below
        : [
          ["q", w.q, w.qb, dq!, Hq * D],
          ["k", w.k, w.kb, dk!, Hkv * D],
          ["v", w.v, w.vb, dv!, Hkv * D],
        ];
      if (w.qkv) {
        // dW (q+k+v, C) += dQKVᵀ·n1, dn1 = dQKV·W, db += Σ dQKV over the (T, q+k+v) gradient
        bwd.push(
          ...matmulBackwardWeight(g, ar, {
            dw: w.qkvGrad!,
            dy: dq!,
            x: a.n1,
            M: T,
            N: NQKV,
            K: C,
            accumulate: true,
          }),
          ...matmulBackwardInput(g, ar, { dx: dn!, dy: dq!, w: w.qkv, M: T, N: NQKV, K: C }),
          ...(w.qkvBias
            ? biasBackward(g, ar, { db: w.qkvBiasGrad!, dy: dq!, M: T, N: NQKV, accumulate: true })
            : []),
        );
      }
      proj.forEach(([name, wt, b, dy, N], i) => {
        bwd.push(
          ...matmulBackwardWeight(g, ar, {
            dw: G(`${pre}self_attn.${name}_proj.weight`),
            dy,
            x: a.n1,
            M: T,
            N,
            K: C,
            accumulate: true,
          }),
          ...matmulBackwardInput(g, ar, { dx: dn!, dy, w: wt, M: T, N, K: C, accumulate: i > 0 }),
        );
        if (b) {
          bwd.push(
            ...biasBackward(g, ar, {
              db: G(`${pre}self_attn.${name}_proj.bias`),
              dy,
              M: T,
              N,
              accumulate: true,
            }),
          );
        }
      });
      bwd.push(
        ...rmsnormBackward(g, ar, {
          dx: dx!,
          dw: G(`${pre}input_layernorm.weight`),
          dy: dn!,
          x: a.xIn,
          w: w.ln1,
          rstd: a.rstd1,
          T,
          C,
          accumulateDx: true,
          workspace: normWs,
        }),
      );
    }
    bwd.push(
      ...embedPieces.flatMap((pc) =>
        embeddingBackward(g, ar, {
          dtable: pc.g!,
          dout: dx!,
          index: { buffer: inp.embIndex },
          T,
          C,
          scale: cfg.embeddingMultiplier,
          shard: sharded(embedPieces) ? { v0: pc.v0, rows: pc.rows, vocab: V } : undefined,
        })
      ),
    );
    this.forwardBackward.push(...fwd, ...bwd);
    this.firstForwardBackward.push(...this.zeroLoss, ...this.forwardBackward);

    // ---- optimizer: global grad norm, clip, AdamW over whole arena buffers ----
    const flatG = this.gradArena!.flat(), flatW = this.weights.flat();
    const flatM = this.mArena!.flat(), flatV = this.vArena!.flat();
    let parts = 0;
    const counts = flatG.map((c) => gradNormPartialCount(c.numel));
    const partials = gpu.buffer("graph.gradNormPartials", counts.reduce((a, b) => a + b, 0) * 4);
    flatG.forEach((c, i) => {
      this.optimizer.push(
        ...gradNormSquares(g, ar, {
          partials: { buffer: partials },
          grad: { buffer: c.buffer },
          N: c.numel,
          partialOffset: parts,
        }),
      );
      parts += counts[i];
    });
    this.optimizer.push(
      ...gradNormFinalize(g, ar, {
        stats: { buffer: this.stats },
        partials: { buffer: partials },
        count: parts,
        maxNorm: 0,
        lossScale: this.lossScale ?? undefined,
        dynamic: !!this.lossScale,
        hp: this.hp,
      }),
    );
    this.gradNormFinalizeIndex = this.optimizer.length - 1;
    flatG.forEach((c, i) => {
      this.optimizer.push(
        ...adamwUpdate(g, ar, {
          param: { buffer: flatW[i].buffer },
          grad: { buffer: c.buffer },
          m: { buffer: flatM[i].buffer },
          v: { buffer: flatV[i].buffer },
          stats: { buffer: this.stats },
          hp: { buffer: this.hp },
          N: c.numel,
          zeroGrad: true,
        }),
      );
    });
    this.partials = partials;
    this.partialCount = parts;
  }

  /** Fused parameter groups (weights and gradients back to back), by fused name. */
  private readonly fused = new Map<string, { w: ArenaTensor; g?: ArenaTensor }>();

  /**
   * Reserve `group`'s parameters back to back (weights, gradients, Adam moments alike) so one GEMM
   * covers them all; false (nothing reserved) when they cannot be.
   */
  private reserveFused(
    label: string,
    group: { name: string; shape: number[] }[],
    binding: number,
  ): boolean {
    const parts = group.map(({ name, shape }) => ({ label: name, numel: numel(shape) }));
    if (parts.reduce((s, p) => s + p.numel, 0) * 4 > binding) return false;
    const w = this.weights.reserveGroup(label, parts);
    if (!w) return false;
    const g = this.gradArena?.reserveGroup(label, parts);
    this.mArena?.reserveGroup(label, parts);
    this.vArena?.reserveGroup(label, parts);
    group.forEach(({ name, shape }, i) => {
      const piece: ParamPiece = {
        v0: 0,
        rows: shape[0],
        cols: shape[1] ?? 1,
        w: w.parts[i],
        g: g?.parts[i],
      };
      this.pieces.set(name, [piece]);
      this.params.set(name, piece.w);
      if (g) this.grads.set(name, piece.g!);
    });
    this.fused.set(label, { w: w.whole, g: g?.whole });
    return true;
  }

  private gradNormFinalizeIndex = -1;
  private partials: GPUBuffer | null = null;
  private partialCount = 0;
  private maxNormBuilt = 0;

  /** Rebuild the clip threshold of the finalize dispatch when it changes. */
  private ensureMaxNorm(maxNorm: number): void {
    if (maxNorm === this.maxNormBuilt || this.gradNormFinalizeIndex < 0) return;
    const d = gradNormFinalize(this.gpu, this.arena, {
      stats: { buffer: this.stats },
      partials: { buffer: this.partials! },
      count: this.partialCount,
      maxNorm,
      lossScale: this.lossScale ?? undefined,
      dynamic: !!this.lossScale,
      hp: this.hp,
    });
    this.optimizer.splice(this.gradNormFinalizeIndex, d.length, ...d);
    this.maxNormBuilt = maxNorm;
  }

  /** Upload weights by HF name (every parameter must be present). */
  upload(tensors: Map<string, Float32Array>): void {
    this.writePieces((pc) => pc.w, tensors, "tensor");
  }

  private writePieces(
    pick: (pc: ParamPiece) => ArenaTensor,
    tensors: Map<string, Float32Array>,
    what: string,
  ): void {
    for (const [name, pieces] of this.pieces) {
      const src = tensors.get(name);
      if (!src) throw new Error(`missing ${what} ${name}`);
      const numel = pieces.reduce((n, pc) => n + pc.w.numel, 0);
      if (src.length !== numel) {
        throw new Error(`${name}: ${src.length} elements, expected ${numel}`);
      }
      for (const pc of pieces) {
        const t = pick(pc);
        const from = pc.v0 * pc.cols;
        this.gpu.write(t.buffer, src.subarray(from, from + t.numel), t.offset);
      }
    }
  }

  /** Read every parameter back, by HF name. */
  async download(
    which: "weights" | "grads" | "m" | "v" = "weights",
  ): Promise<Map<string, Float32Array>> {
    const pick = (pc: ParamPiece): ArenaTensor =>
      which === "weights" ? pc.w : which === "grads" ? pc.g! : this.momentSlice(which, pc.w);
    const list: { name: string; pc: ParamPiece; t: ArenaTensor }[] = [];
    for (const [name, pieces] of this.pieces) {
      for (const pc of pieces) list.push({ name, pc, t: pick(pc) });
    }
    const out = new Map<string, Float32Array>();
    for (const [name, pieces] of this.pieces) {
      out.set(name, new Float32Array(pieces.reduce((n, pc) => n + pc.w.numel, 0)));
    }
    // Read in groups to bound the staging buffer.
    for (let i = 0; i < list.length;) {
      let bytes = 0, j = i;
      while (j < list.length && (j === i || bytes + list[j].t.numel * 4 < 1 << 28)) {
        bytes += list[j++].t.numel * 4;
      }
      const abs = await this.gpu.read(
        list.slice(i, j).map(({ t }) => ({
          buffer: t.buffer,
          offset: t.offset,
          size: t.numel * 4,
        })),
      );
      abs.forEach((ab, k) => {
        const { name, pc } = list[i + k];
        out.get(name)!.set(new Float32Array(ab), pc.v0 * pc.cols);
      });
      i = j;
    }
    return out;
  }

  /** Write Adam moments (for resuming). */
  uploadMoments(which: "m" | "v", tensors: Map<string, Float32Array>): void {
    this.writePieces((pc) => this.momentSlice(which, pc.w), tensors, `moment ${which} of`);
  }

  private momentSlice(which: "m" | "v", w: ArenaTensor): ArenaTensor {
    // Same layout as the weights arena: same chunk index and offset.
    const arena = which === "m" ? this.mArena! : this.vArena!;
    const ci = this.weights.chunks.findIndex((c) => c.buffer === w.buffer);
    return { ...w, buffer: arena.chunks[ci].buffer! };
  }

  /** The loss-scale state [S, finite steps in a row, growth interval, 0], or null when unscaled. */
  async readLossScale(): Promise<Float32Array | null> {
    if (!this.lossScale) return null;
    return new Float32Array((await this.gpu.read([{ buffer: this.lossScale }]))[0]);
  }

  /** Restore a loss-scale state read by readLossScale (resume). */
  writeLossScale(state: ArrayLike<number>): void {
    if (!this.lossScale) throw new Error("this graph trains without loss scaling");
    this.gpu.write(this.lossScale, Float32Array.from(state));
  }

  /** Write one micro-batch's inputs (queued before the next submit). */
  setBatch(mb: MicroBatch): void {
    const g = this.gpu, i = this.inputs;
    const seg = this.maxSample ? boundSegments(mb, this.maxSample) : mb;
    g.write(i.ids, mb.ids);
    g.write(i.labels, mb.labels);
    g.write(i.pos, mb.pos);
    g.write(i.seqStart, seg.seqStart);
    g.write(i.seqEnd, seg.seqEnd);
    if (this.mode === "train") {
      // Padding carries no gradient (its own segments, no labels): leave it out of the index.
      g.write(
        i.embIndex,
        buildEmbeddingIndex(mb.ids.subarray(0, mb.used), this.T, this.cfg.vocabSize),
      );
    }
  }

  /**
   * Queue one optimizer step over `microBatches` (no waiting, no read-back): loss is the token
   * mean over the whole step; metrics land in ring slot `step % 1024`.
   */
  queueStep(step: number, microBatches: MicroBatch[], hyper: StepHyper): void {
    const lossTokens = microBatches.reduce((s, m) => s + m.lossTokens, 0);
    const g = this.gpu;
    this.ensureMaxNorm(hyper.maxGradNorm);
    g.write(this.invTokens, new Float32Array([lossTokens > 0 ? 1 / lossTokens : 0]));
    g.write(this.hp, adamwHyper(step + 1, hyper));
    microBatches.forEach((mb, i) => {
      this.setBatch(mb);
      // The step's first pass also zeroes the loss accumulator: no submit of its own.
      g.run(i === 0 ? this.firstForwardBackward : this.forwardBackward, "graph.forwardBackward");
    });
    if (microBatches.length === 0) g.run(this.zeroLoss, "graph.zeroLoss");
    const enc = g.device.createCommandEncoder({ label: "graph.optimizer" });
    const pass = enc.beginComputePass({ label: "graph.optimizer" });
    for (const d of this.optimizer) {
      pass.setPipeline(d.kernel.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(...d.workgroups);
    }
    pass.end();
    const slot = (step % RING) * METRIC_FIELDS * 4;
    enc.copyBufferToBuffer(this.lossAcc, 0, this.ring, slot, 4);
    enc.copyBufferToBuffer(this.stats, 0, this.ring, slot + 4, 16);
    g.device.queue.submit([enc.finish()]);
  }

  /**
   * Read metrics of steps [from, to) from the ring: loss sum, grad norm, AdamW's gradient
   * multiplier, finite flag, loss scale (see METRIC_FIELDS).
   */
  async readMetrics(from: number, to: number): Promise<Float32Array[]> {
    if (to - from > RING) throw new Error("metrics window larger than the ring");
    const all = new Float32Array((await this.gpu.read([{ buffer: this.ring }]))[0]);
    const out: Float32Array[] = [];
    for (let s = from; s < to; s++) {
      const o = (s % RING) * METRIC_FIELDS;
      out.push(all.slice(o, o + METRIC_FIELDS));
    }
    return out;
  }

  /** Forward only over one micro-batch; returns per-token losses (T) and their sum. */
  async evalLoss(mb: MicroBatch): Promise<{ tokenLoss: Float32Array; lossSum: number }> {
    this.setBatch(mb);
    if (!this.evalPass.length) this.evalPass.push(...this.zeroLoss, ...this.forwardOnly);
    this.gpu.run(this.evalPass, "graph.eval");
    const [tl, acc] = await this.gpu.read([
      { buffer: this.tokenLoss.buffer, offset: this.tokenLoss.offset, size: this.T * 4 },
      { buffer: this.lossAcc, size: 4 },
    ]);
    return { tokenLoss: new Float32Array(tl), lossSum: new Float32Array(acc)[0] };
  }

  /** Free every buffer. */
  destroy(): void {
    for (const a of [this.weights, this.gradArena, this.mArena, this.vArena, this.acts]) {
      a?.destroy();
    }
    for (const b of Object.values(this.inputs)) b.destroy();
    for (
      const b of [
        this.lossAcc,
        this.stats,
        this.ring,
        this.hp,
        this.invTokens,
        this.partials,
        this.lossScale,
      ]
    ) {
      b?.destroy();
    }
    this.arena.destroy();
    this.ceWs.destroy();
  }
}
