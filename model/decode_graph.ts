// Forward-only generation graph: batched prompt prefill, then one-token decode steps with K/V cached on the GPU.
//
// Same op order as the training graph (model/llama_graph.ts): embedding (× embedding multiplier),
// per layer RMSNorm → q/k/v (+bias) → RoPE → causal attention → o_proj (+bias) added with the
// residual multiplier → RMSNorm → SwiGLU MLP added with the residual multiplier; final RMSNorm,
// lm_head, logits ÷ logits_scaling. A decode step is one submit of prebuilt dispatches; the
// position, the uniform draw and the temperature live in a 16-byte step buffer rewritten with
// queue.writeBuffer before each submit, and the next token is chosen on the GPU (argmax or
// sampling) and fed back as the next step's input, so many steps run between read-backs.
import { attentionForward } from "../kernels/attention.ts";
import {
  decodeAttention,
  decodeAttentionWorkspaceBytes,
  ropeAppend,
} from "../kernels/decode_attention.ts";
import { matvec, matvecSwiglu } from "../kernels/decode_matvec.ts";
import { sampleToken, STEP_BYTES, stepData } from "../kernels/decode_sample.ts";
import { axpy } from "../kernels/elementwise.ts";
import { embeddingForward } from "../kernels/embedding.ts";
import { matmulForward } from "../kernels/matmul.ts";
import { rmsnormForward } from "../kernels/rmsnorm.ts";
import { ropeForward, ropeTable } from "../kernels/rope.ts";
import {
  type BufferSlice,
  type Dispatch,
  encodeDispatches,
  type Gpu,
  GpuError,
  ParamArena,
} from "../kernels/runtime.ts";
import { swigluForward } from "../kernels/swiglu.ts";
import { type ModelConfig, parameterShapes, rowShards } from "./config.ts";
import { openHfModel } from "./hf_dir.ts";
import { TensorArena } from "./tensor_arena.ts";

/** Options of a decode graph. */
export interface DecodeGraphOptions {
  /**
   * Cache rows: the longest prompt plus generated tokens it must hold (capped at the sliding
   * window when the model has one, so attention over the cache is always exact).
   */
  maxTokens: number;
  /** Use these weights (e.g. a LlamaGraph's `params`) instead of allocating a copy. */
  weights?: Map<string, BufferSlice>;
  /**
   * With `weights`: the row shards of tensors too large for one binding (a LlamaGraph's
   * `pieces`); such tensors are absent from `weights`.
   */
  pieces?: Map<string, { v0: number; rows: number; w: BufferSlice }[]>;
  /** Cap on one storage binding when allocating weights (tests force row shards with it). */
  maxBindingBytes?: number;
}

/** Rows [v0, v0 + rows) of a row-sharded embedding or LM head. */
interface RowPiece {
  v0: number;
  rows: number;
  w: BufferSlice;
}

/** Options of one generation. */
export interface GenerateOptions {
  /** Tokens to generate at most. */
  maxNewTokens: number;
  /** 0 or absent: greedy; otherwise softmax sampling at this temperature. */
  temperature?: number;
  /** Seed of the uniform draws of sampling (default 0). */
  seed?: number;
  /** Token ids that end the generation (not returned); default: the config's eos ids. */
  stopIds?: readonly number[];
  /** Called after each read-back with every token so far; true stops (tokens kept as they are). */
  stop?: (tokens: readonly number[]) => boolean;
  /** Called with each newly read batch of tokens (streaming). */
  onTokens?: (tokens: readonly number[]) => void;
  /** Decode steps submitted between read-backs (default 16); the first read-back comes after 1. */
  chunk?: number;
  /** false: recompute the whole sequence for every token instead of using the cache (tests). */
  useCache?: boolean;
}

/** Why a generation ended. */
export type StopReason = "eos" | "stop" | "length" | "context";

/** A finished generation. */
export interface Generation {
  tokens: number[];
  reason: StopReason;
  /** Tokens computed by decode steps (including discarded ones after a stop), for throughput. */
  decodeSteps: number;
}

/** Per-layer weight slices by role. */
interface LayerW {
  ln1: BufferSlice;
  q: BufferSlice;
  k: BufferSlice;
  v: BufferSlice;
  o: BufferSlice;
  qb?: BufferSlice;
  kb?: BufferSlice;
  vb?: BufferSlice;
  ob?: BufferSlice;
  ln2: BufferSlice;
  gate: BufferSlice;
  up: BufferSlice;
  down: BufferSlice;
}

/** The dispatches and scratch of a prefill over Tp token slots. */
interface PrefillPlan {
  Tp: number;
  dispatches: Dispatch[];
  ids: GPUBuffer; // (capacity) u32 prompt ids, zero-padded
  x: GPUBuffer; // (capacity, C) final residual stream
  arena: ParamArena; // its uniform parameters
}

/** Uniform-arena bytes for one plan of L layers: 64 slots per layer (about 15 used) and 64 more. */
function paramBytes(L: number): number {
  return 256 * (64 * L + 64);
}

/** Smallest prefill capacity: shorter prompts are padded up to it. */
const MIN_PREFILL = 16;

/** mulberry32: the uniform draws of sampling, reproducible from a seed. */
function uniformStream(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A Llama-family model on the GPU for generation, with a KV cache of `maxTokens` rows. */
export class DecodeGraph {
  /** Cache rows (positions 0 .. Lmax − 1 can be fed; the token at Lmax is the last one made). */
  readonly Lmax: number;
  /** Every weight held in one binding, by HF name (row-sharded ones are in `shards`). */
  readonly params = new Map<string, BufferSlice>();
  /** The embedding and LM head as row shards (one shard unless larger than a binding). */
  readonly shards = new Map<string, RowPiece[]>();
  private readonly own: TensorArena | null;
  private readonly arena: ParamArena;
  private readonly layers: LayerW[] = [];
  private readonly kCache: GPUBuffer[] = [];
  private readonly vCache: GPUBuffer[] = [];
  private readonly buffers: GPUBuffer[] = [];
  private readonly stepBuf: GPUBuffer;
  private readonly ids: GPUBuffer;
  private readonly ring: GPUBuffer;
  private readonly xDecode: GPUBuffer;
  private readonly logits: GPUBuffer;
  private readonly ropeTab: GPUBuffer;
  private readonly step: Dispatch[] = [];
  private readonly tail: Dispatch[] = [];
  private prefillBuffers: GPUBuffer[] = [];
  private prefillPlans = new Map<number, PrefillPlan>();
  private prefillCapacity = 0;

  constructor(readonly gpu: Gpu, readonly cfg: ModelConfig, opts: DecodeGraphOptions) {
    const { hiddenSize: C, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D } = cfg;
    const V = cfg.vocabSize, L = cfg.numLayers;
    const Lmax = (this.Lmax = Math.min(opts.maxTokens, cfg.slidingWindow ?? Infinity));
    if (!(Number.isInteger(Lmax) && Lmax >= 2)) {
      throw new GpuError(`maxTokens must be an integer >= 2 (got ${opts.maxTokens})`, "decode");
    }
    this.arena = new ParamArena(gpu, "decode.params", paramBytes(L));

    // Weights: shared or owned; the embedding and head row-sharded when above one binding.
    const sharded = (name: string) =>
      name === "model.embed_tokens.weight" || name === "lm_head.weight";
    if (opts.weights) {
      this.own = null;
      for (const { name } of parameterShapes(cfg)) {
        const w = opts.weights.get(name);
        const pcs = opts.pieces?.get(name);
        if (w) this.params.set(name, w);
        else if (!(sharded(name) && pcs?.length)) {
          throw new GpuError(`shared weights lack ${name}`, "decode");
        }
        if (sharded(name)) {
          this.shards.set(
            name,
            w ? [{ v0: 0, rows: V, w }] : pcs!.map((pc) => ({ v0: pc.v0, rows: pc.rows, w: pc.w })),
          );
        }
      }
    } else {
      const own = (this.own = new TensorArena(gpu, "decode.weights"));
      const binding = Math.min(
        opts.maxBindingBytes ?? Infinity,
        gpu.limits.maxStorageBufferBindingSize,
        gpu.limits.maxBufferSize,
      );
      for (const { name, shape } of parameterShapes(cfg)) {
        const pcs = rowShards(name, shape, binding).map(({ v0, rows, cols }) => ({
          v0,
          rows,
          w: own.reserve(rows === shape[0] ? name : `${name}[${v0}:${v0 + rows}]`, rows * cols),
        }));
        if (pcs.length === 1) this.params.set(name, pcs[0].w);
        if (sharded(name)) this.shards.set(name, pcs);
      }
      own.allocate();
    }
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
        ln2: P(`${p}post_attention_layernorm.weight`),
        gate: P(`${p}mlp.gate_proj.weight`),
        up: P(`${p}mlp.up_proj.weight`),
        down: P(`${p}mlp.down_proj.weight`),
      });
    }

    // Every scratch tensor gets its own buffer: a dispatch may not bind one buffer both as
    // read-only and as writable storage.
    const buf = (label: string, floats: number) => {
      const b = gpu.buffer(`decode.${label}`, floats * 4);
      this.buffers.push(b);
      return b;
    };
    for (let l = 0; l < L; l++) {
      this.kCache.push(buf(`kCache${l}`, Lmax * Hkv * D));
      this.vCache.push(buf(`vCache${l}`, Lmax * Hkv * D));
    }
    this.stepBuf = buf("step", STEP_BYTES / 4);
    this.ids = buf("ids", 4);
    this.ring = buf("ring", Lmax + 1);
    this.ropeTab = gpu.bufferFrom(
      "decode.ropeTable",
      ropeTable(D, cfg.ropeTheta, cfg.ropeScaling as never, Lmax),
    );
    this.buffers.push(this.ropeTab);
    const x = (this.xDecode = buf("x", C));
    const n = buf("n", C), rstd = buf("rstd", 4);
    const q = buf("q", Hq * D), k = buf("k", Hkv * D), v = buf("v", Hkv * D);
    const o = buf("o", Hq * D);
    const act = buf("act", I);
    const h = buf("h", C);
    const logits = (this.logits = buf("logits", V));
    const ws = buf("attnWs", decodeAttentionWorkspaceBytes(Hq, D, Lmax) / 4);

    // ---- one decode step (T = 1) ----
    const g = gpu, ar = this.arena, rm = cfg.residualMultiplier;
    const s = { buffer: this.stepBuf, offset: 0, size: STEP_BYTES };
    const B = (b: GPUBuffer) => ({ buffer: b });
    const st = this.step;
    st.push(
      ...this.embed(ar, B(x), { buffer: this.ids, offset: 0, size: 4 }, 1),
    );
    const shape = { Hq, Hkv, D, Lmax };
    this.layers.forEach((w, l) => {
      st.push(
        ...rmsnormForward(g, ar, {
          y: B(n),
          rstd: B(rstd),
          x: B(x),
          w: w.ln1,
          T: 1,
          C,
          eps: cfg.rmsNormEps,
        }),
        ...matvec(g, ar, { y: B(q), x: B(n), w: w.q, bias: w.qb, N: Hq * D, K: C }),
        ...matvec(g, ar, { y: B(k), x: B(n), w: w.k, bias: w.kb, N: Hkv * D, K: C }),
        ...matvec(g, ar, { y: B(v), x: B(n), w: w.v, bias: w.vb, N: Hkv * D, K: C }),
        ...ropeAppend(g, ar, {
          ...shape,
          q: B(q),
          kCache: B(this.kCache[l]),
          vCache: B(this.vCache[l]),
          k: B(k),
          v: B(v),
          step: s,
          table: B(this.ropeTab),
        }),
        ...decodeAttention(g, ar, {
          ...shape,
          o: B(o),
          q: B(q),
          kCache: B(this.kCache[l]),
          vCache: B(this.vCache[l]),
          step: s,
          workspace: B(ws),
          scale: cfg.attentionScale,
        }),
        // x += rm · (o_proj(o) + b)
        ...matvec(g, ar, {
          y: B(x),
          x: B(o),
          w: w.o,
          bias: w.ob,
          N: C,
          K: Hq * D,
          alpha: rm,
          accumulate: true,
        }),
        ...rmsnormForward(g, ar, {
          y: B(n),
          rstd: B(rstd),
          x: B(x),
          w: w.ln2,
          T: 1,
          C,
          eps: cfg.rmsNormEps,
        }),
        ...matvecSwiglu(g, ar, { y: B(act), x: B(n), wGate: w.gate, wUp: w.up, N: I, K: C }),
        ...matvec(g, ar, {
          y: B(x),
          x: B(act),
          w: w.down,
          N: C,
          K: I,
          alpha: rm,
          accumulate: true,
        }),
      );
    });
    // ---- tail: final norm, lm_head, next-token choice (shared by prefill and decode) ----
    const head = this.shards.get("lm_head.weight") ?? this.shards.get("model.embed_tokens.weight")!;
    this.tail.push(
      ...rmsnormForward(g, ar, {
        y: B(h),
        rstd: B(rstd),
        x: B(x),
        w: P("model.norm.weight"),
        T: 1,
        C,
        eps: cfg.rmsNormEps,
      }),
      ...head.flatMap((pc) =>
        matvec(g, ar, { y: B(logits), yOffset: pc.v0, x: B(h), w: pc.w, N: pc.rows, K: C })
      ),
      ...sampleToken(g, ar, {
        ids: { buffer: this.ids, offset: 0, size: 4 },
        ring: B(this.ring),
        logits: B(logits),
        step: s,
        V,
        ringLen: Lmax + 1,
        logitScale: 1 / cfg.logitsScaling,
      }),
    );
  }

  /** Embedding lookup of T ids into out (T, C), one dispatch per row shard of the table. */
  private embed(ar: ParamArena, out: BufferSlice, ids: BufferSlice, T: number): Dispatch[] {
    const pcs = this.shards.get("model.embed_tokens.weight")!;
    const V = this.cfg.vocabSize;
    return pcs.flatMap((pc) =>
      embeddingForward(this.gpu, ar, {
        out,
        table: pc.w,
        ids,
        T,
        C: this.cfg.hiddenSize,
        scale: this.cfg.embeddingMultiplier,
        shard: pcs.length > 1 ? { v0: pc.v0, rows: pc.rows, vocab: V } : undefined,
      })
    );
  }

  /** Write one owned tensor by HF name: whole, or row shard by row shard. */
  private writeTensor(name: string, src: Float32Array): void {
    const pcs = this.shards.get(name);
    if (pcs && pcs.length > 1) {
      const cols = src.length / this.cfg.vocabSize;
      for (const pc of pcs) {
        this.gpu.write(
          pc.w.buffer,
          src.subarray(pc.v0 * cols, (pc.v0 + pc.rows) * cols),
          pc.w.offset ?? 0,
        );
      }
      return;
    }
    const t = this.params.get(name);
    if (!t) throw new Error(`tensor ${name} does not belong to this model`);
    this.gpu.write(t.buffer, src, t.offset ?? 0);
  }

  /** Upload weights by HF name (owned weights only; shared ones belong to their graph). */
  upload(tensors: Map<string, Float32Array>): void {
    if (!this.own) {
      throw new GpuError("weights are shared: upload them through their owner", "decode");
    }
    for (const { name, shape } of parameterShapes(this.cfg)) {
      const src = tensors.get(name);
      if (!src) throw new Error(`missing tensor ${name}`);
      const numel = shape.reduce((a, b) => a * b, 1);
      if (src.length !== numel) {
        throw new Error(`${name}: ${src.length} elements, expected ${numel}`);
      }
      this.writeTensor(name, src);
    }
  }

  /** Upload the weights of an HF model directory, one tensor at a time (owned weights only). */
  async uploadFromDir(dir: string): Promise<void> {
    if (!this.own) {
      throw new GpuError("weights are shared: upload them through their owner", "decode");
    }
    const r = await openHfModel(dir);
    try {
      const shapes = (c: ModelConfig) => JSON.stringify(parameterShapes(c));
      if (shapes(r.config) !== shapes(this.cfg)) {
        throw new GpuError(`${dir}: parameter shapes differ from this graph's model`, "decode");
      }
      for (const name of r.names) {
        if (!this.params.has(name) && !this.shards.has(name)) {
          throw new Error(`${dir}: tensor ${name} does not belong to this model`);
        }
        this.writeTensor(name, await r.read(name));
      }
    } finally {
      r.close();
    }
  }

  /** Prefill capacity for a prompt of n tokens: a power of two ≥ 16, at most Lmax. */
  private bucket(n: number): number {
    let t = MIN_PREFILL;
    while (t < n) t *= 2;
    return Math.min(t, this.Lmax);
  }

  /** The prefill plan of capacity Tp (built once; scratch sized for the largest one so far). */
  private prefillPlan(Tp: number): PrefillPlan {
    const hit = this.prefillPlans.get(Tp);
    if (hit) return hit;
    if (Tp > this.prefillCapacity) {
      // Grow: drop the smaller plans and their scratch.
      for (const b of this.prefillBuffers) b.destroy();
      for (const p of this.prefillPlans.values()) p.arena.destroy();
      this.prefillBuffers = [];
      this.prefillPlans.clear();
      this.prefillCapacity = Tp;
    }
    const cap = this.prefillCapacity;
    const cfg = this.cfg, g = this.gpu;
    const ar = new ParamArena(g, `decode.prefill${Tp}.params`, paramBytes(cfg.numLayers));
    const { hiddenSize: C, intermediateSize: I, numHeads: Hq, numKvHeads: Hkv, headDim: D } = cfg;
    const rm = cfg.residualMultiplier;
    const scratch = (label: string, floats: number) => {
      let b = this.prefillBuffers.find((x) => x.label === `decode.prefill.${label}`);
      if (!b) {
        b = g.buffer(`decode.prefill.${label}`, floats * 4);
        this.prefillBuffers.push(b);
      }
      return b;
    };
    const ids = scratch("ids", cap), pos = scratch("pos", cap), start = scratch("seqStart", cap);
    const end = scratch("seqEnd", cap);
    const x = scratch("x", cap * C), n = scratch("n", cap * C), rstd = scratch("rstd", cap);
    const q = scratch("q", cap * Hq * D),
      o = scratch("o", cap * Hq * D),
      lse = scratch("lse", cap * Hq);
    const gate = scratch("gate", cap * I),
      up = scratch("up", cap * I),
      act = scratch("act", cap * I);
    const tmp = scratch("tmp", cap * C);
    g.write(pos, Uint32Array.from({ length: cap }, (_, i) => i));
    g.write(start, new Uint32Array(cap));
    g.write(end, new Uint32Array(cap).fill(Tp));
    const B = (b: GPUBuffer, floats?: number) => ({
      buffer: b,
      offset: 0,
      size: floats ? floats * 4 : undefined,
    });
    const d: Dispatch[] = [];
    d.push(
      ...this.embed(ar, B(x, Tp * C), B(ids, Tp), Tp),
    );
    const branch = (
      y: GPUBuffer,
      inp: GPUBuffer,
      wt: BufferSlice,
      b: BufferSlice | undefined,
      K: number,
    ) => {
      if (rm === 1) {
        return matmulForward(g, ar, {
          y: B(y, Tp * C),
          x: B(inp, Tp * K),
          w: wt,
          bias: b,
          M: Tp,
          N: C,
          K,
          accumulate: true,
        });
      }
      return [
        ...matmulForward(g, ar, {
          y: B(tmp, Tp * C),
          x: B(inp, Tp * K),
          w: wt,
          bias: b,
          M: Tp,
          N: C,
          K,
        }),
        ...axpy(g, ar, { y: B(y, Tp * C), x: B(tmp, Tp * C), alpha: rm, N: Tp * C }),
      ];
    };
    this.layers.forEach((w, l) => {
      const kc = { buffer: this.kCache[l], offset: 0, size: Tp * Hkv * D * 4 };
      const vc = { buffer: this.vCache[l], offset: 0, size: Tp * Hkv * D * 4 };
      d.push(
        ...rmsnormForward(g, ar, {
          y: B(n, Tp * C),
          rstd: B(rstd, Tp),
          x: B(x, Tp * C),
          w: w.ln1,
          T: Tp,
          C,
          eps: cfg.rmsNormEps,
        }),
        ...matmulForward(g, ar, {
          y: B(q, Tp * Hq * D),
          x: B(n, Tp * C),
          w: w.q,
          bias: w.qb,
          M: Tp,
          N: Hq * D,
          K: C,
        }),
        ...matmulForward(g, ar, {
          y: kc,
          x: B(n, Tp * C),
          w: w.k,
          bias: w.kb,
          M: Tp,
          N: Hkv * D,
          K: C,
        }),
        ...matmulForward(g, ar, {
          y: vc,
          x: B(n, Tp * C),
          w: w.v,
          bias: w.vb,
          M: Tp,
          N: Hkv * D,
          K: C,
        }),
        ...ropeForward(g, ar, {
          out: B(q, Tp * Hq * D),
          x: B(q, Tp * Hq * D),
          pos: B(pos, Tp),
          table: B(this.ropeTab),
          T: Tp,
          H: Hq,
          D,
        }),
        ...ropeForward(g, ar, {
          out: kc,
          x: kc,
          pos: B(pos, Tp),
          table: B(this.ropeTab),
          T: Tp,
          H: Hkv,
          D,
        }),
        ...attentionForward(g, ar, {
          o: B(o, Tp * Hq * D),
          lse: B(lse, Tp * Hq),
          q: B(q, Tp * Hq * D),
          k: kc,
          v: vc,
          seqStart: B(start, Tp),
          seqEnd: B(end, Tp),
          T: Tp,
          Hq,
          Hkv,
          D,
          scale: cfg.attentionScale,
        }),
        ...branch(x, o, w.o, w.ob, Hq * D),
        ...rmsnormForward(g, ar, {
          y: B(n, Tp * C),
          rstd: B(rstd, Tp),
          x: B(x, Tp * C),
          w: w.ln2,
          T: Tp,
          C,
          eps: cfg.rmsNormEps,
        }),
        ...matmulForward(g, ar, {
          y: B(gate, Tp * I),
          x: B(n, Tp * C),
          w: w.gate,
          M: Tp,
          N: I,
          K: C,
        }),
        ...matmulForward(g, ar, { y: B(up, Tp * I), x: B(n, Tp * C), w: w.up, M: Tp, N: I, K: C }),
        ...swigluForward(g, ar, {
          out: B(act, Tp * I),
          gate: B(gate, Tp * I),
          up: B(up, Tp * I),
          T: Tp,
          I,
        }),
        ...branch(x, act, w.down, undefined, I),
      );
    });
    const plan = { Tp, dispatches: d, ids, x, arena: ar };
    this.prefillPlans.set(Tp, plan);
    return plan;
  }

  /**
   * Queue the prefill of `prompt` (positions 0 .. n−1 into the cache) and the choice of the token
   * at position n (into ids[0] and ring[n]), with draw `u` at `temperature`. No waiting.
   */
  private queuePrefill(prompt: readonly number[], u: number, temperature: number): void {
    const nTok = prompt.length;
    if (nTok < 1) throw new GpuError("empty prompt", "decode");
    if (nTok > this.Lmax) {
      throw new GpuError(`prompt of ${nTok} tokens exceeds the cache (${this.Lmax})`, "decode");
    }
    for (const t of prompt) {
      if (!(Number.isInteger(t) && t >= 0 && t < this.cfg.vocabSize)) {
        throw new GpuError(`token id ${t} outside the vocabulary`, "decode");
      }
    }
    const plan = this.prefillPlan(this.bucket(nTok));
    const ids = new Uint32Array(plan.Tp);
    ids.set(prompt);
    const g = this.gpu, C = this.cfg.hiddenSize;
    g.write(plan.ids, ids);
    g.write(this.stepBuf, stepData(nTok - 1, u, temperature));
    const enc = g.device.createCommandEncoder({ label: "decode.prefill" });
    const pass = enc.beginComputePass({ label: "decode.prefill" });
    encodeDispatches(pass, plan.dispatches);
    pass.end();
    enc.copyBufferToBuffer(plan.x, (nTok - 1) * C * 4, this.xDecode, 0, C * 4);
    const pass2 = enc.beginComputePass({ label: "decode.tail" });
    encodeDispatches(pass2, this.tail);
    pass2.end();
    g.device.queue.submit([enc.finish()]);
  }

  /** Queue one decode step: the token in ids[0] at position `pos` → the token at pos + 1. */
  private queueStep(pos: number, u: number, temperature: number): void {
    const g = this.gpu;
    g.write(this.stepBuf, stepData(pos, u, temperature));
    const enc = g.device.createCommandEncoder({ label: "decode.step" });
    const pass = enc.beginComputePass({ label: "decode.step" });
    encodeDispatches(pass, this.step);
    encodeDispatches(pass, this.tail);
    pass.end();
    g.device.queue.submit([enc.finish()]);
  }

  /** Read ring[from, to) (tokens at those positions). */
  private async readRing(from: number, to: number): Promise<number[]> {
    if (to <= from) return [];
    const [ab] = await this.gpu.read([{
      buffer: this.ring,
      offset: from * 4,
      size: (to - from) * 4,
    }]);
    return Array.from(new Uint32Array(ab, 0, to - from));
  }

  /**
   * Generate after `prompt`: prefill once, then decode steps fed by the GPU's own token choice,
   * `chunk` steps per read-back. Ends at a stop id (excluded), when `stop` says so, after
   * `maxNewTokens`, or when the cache is full.
   */
  async generate(prompt: readonly number[], o: GenerateOptions): Promise<Generation> {
    const temperature = o.temperature ?? 0;
    const draw = uniformStream(o.seed ?? 0);
    const stopIds = new Set(o.stopIds ?? this.cfg.eosTokenIds);
    const chunk = Math.max(1, o.chunk ?? 16);
    const n = prompt.length;
    // Positions n .. n + budget − 1 can be produced (the last one at Lmax at most).
    const budget = Math.min(o.maxNewTokens, this.Lmax + 1 - n);
    const out: number[] = [];
    let steps = 0;
    if (n > this.Lmax) {
      throw new RangeError(`prompt of ${n} tokens exceeds the cache of ${this.Lmax} positions`);
    }
    if (budget <= 0) return { tokens: out, reason: "length", decodeSteps: 0 };
    const finish = (fresh: number[]): StopReason | null => {
      for (const t of fresh) {
        if (stopIds.has(t)) {
          o.onTokens?.(fresh.slice(0, fresh.indexOf(t)));
          return "eos";
        }
        out.push(t);
      }
      if (fresh.length) o.onTokens?.(fresh);
      if (o.stop?.(out)) return "stop";
      return null;
    };
    if (o.useCache === false) {
      const seq = Array.from(prompt);
      while (out.length < budget) {
        this.queuePrefill(seq, draw(), temperature);
        const [t] = await this.readRing(seq.length, seq.length + 1);
        steps++;
        seq.push(t);
        const r = finish([t]);
        if (r) return { tokens: out, reason: r, decodeSteps: steps };
      }
      return {
        tokens: out,
        reason: budget < o.maxNewTokens ? "context" : "length",
        decodeSteps: steps,
      };
    }
    this.queuePrefill(prompt, draw(), temperature);
    steps = 1;
    let have = n + 1; // ring[n] is queued
    let read = n;
    let first = true;
    while (true) {
      // Queue more steps (after the first read-back, which comes as soon as possible).
      const target = Math.min(n + budget, first ? have : have + chunk);
      while (have < target) {
        this.queueStep(have - 1, draw(), temperature);
        have++;
        steps++;
      }
      first = false;
      const fresh = await this.readRing(read, have);
      read = have;
      const r = finish(fresh);
      if (r) return { tokens: out, reason: r, decodeSteps: steps };
      if (have >= n + budget) {
        return {
          tokens: out,
          reason: budget < o.maxNewTokens ? "context" : "length",
          decodeSteps: steps,
        };
      }
    }
  }

  /** Logits (V, ÷ logits_scaling) of the last prompt position after a prefill (tests, scoring). */
  async prefillLogits(prompt: readonly number[]): Promise<Float32Array> {
    this.queuePrefill(prompt, 0, 0);
    return await this.readLogits();
  }

  /**
   * Feed `token` at position `pos` through one cached decode step (the cache must hold rows
   * 0 .. pos − 1) and return the logits of the next token (tests, teacher-forced scoring).
   */
  async stepLogits(token: number, pos: number): Promise<Float32Array> {
    if (!(pos >= 0 && pos < this.Lmax)) {
      throw new GpuError(`position ${pos} outside the cache`, "decode");
    }
    this.gpu.write(this.ids, new Uint32Array([token]));
    this.queueStep(pos, 0, 0);
    return await this.readLogits();
  }

  private async readLogits(): Promise<Float32Array> {
    const l = await this.gpu.readF32(this.logits, 0, this.cfg.vocabSize);
    const s = 1 / this.cfg.logitsScaling;
    if (s !== 1) { for (let i = 0; i < l.length; i++) l[i] *= s; }
    return l;
  }

  /** Free every buffer this graph owns (shared weights stay). */
  destroy(): void {
    this.own?.destroy();
    for (const b of [...this.buffers, ...this.prefillBuffers]) b.destroy();
    this.arena.destroy();
    for (const p of this.prefillPlans.values()) p.arena.destroy();
  }
}
