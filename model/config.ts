// Hugging Face config.json → normalized ModelConfig for Llama-family models; parameter names and shapes.
import { UserError } from "../pipeline/errors.ts";

/** The architectures this project trains (HF `architectures[0]`). */
export const SUPPORTED_ARCHITECTURES = [
  "LlamaForCausalLM",
  "MistralForCausalLM",
  "GraniteForCausalLM",
  "Qwen2ForCausalLM",
] as const;

/** One of SUPPORTED_ARCHITECTURES. */
export type Architecture = typeof SUPPORTED_ARCHITECTURES[number];

/**
 * Llama-3 RoPE frequency scaling, with HF's key names (the shape `ropeTable` in kernels/rope.ts takes).
 */
export interface RopeScaling {
  type: "llama3";
  factor: number;
  low_freq_factor: number;
  high_freq_factor: number;
  original_max_position_embeddings: number;
}

/** A validated, normalized model config; `raw` is the original JSON, saved back unchanged. */
export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  tieWordEmbeddings: boolean;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  initializerRange: number;
  /** Biases on q/k/v projections (Qwen2 always; Llama/Granite when attention_bias). */
  qkvBias: boolean;
  /** Bias on o_proj (Llama/Granite attention_bias; never Qwen2). */
  oBias: boolean;
  /** Granite: token embeddings are multiplied by this (1 otherwise). */
  embeddingMultiplier: number;
  /** Granite: each residual branch is multiplied by this before the add (1 otherwise). */
  residualMultiplier: number;
  /** Softmax scale of attention: attention_multiplier for Granite, 1/sqrt(headDim) otherwise. */
  attentionScale: number;
  /** Granite: logits are divided by this (1 otherwise). */
  logitsScaling: number;
  /** Attention window in tokens (Mistral/Qwen2 sliding window), null = full causal attention. */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
  /** "float32", "bfloat16", "float16" or null when absent. */
  torchDtype: string | null;
  /** The original config.json object. */
  raw: Record<string, unknown>;
  /** Where it came from (for error messages). */
  file: string;
}

type Json = Record<string, unknown>;

function fail(file: string, field: string, msg: string, hint?: string): never {
  throw new UserError(`${file}: field '${field}' ${msg}`, hint);
}

function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

function posInt(j: Json, file: string, key: string, dflt?: number): number {
  const v = j[key] ?? dflt;
  if (v === undefined) fail(file, key, "is missing");
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    fail(file, key, `must be a positive integer (got ${show(v)})`);
  }
  return v;
}

function posNum(j: Json, file: string, key: string, dflt: number): number {
  const v = j[key] ?? dflt;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    fail(file, key, `must be a positive number (got ${show(v)})`);
  }
  return v;
}

function bool(j: Json, file: string, key: string, dflt: boolean): boolean {
  const v = j[key] ?? dflt;
  if (typeof v !== "boolean") fail(file, key, `must be true or false (got ${show(v)})`);
  return v;
}

function tokenId(j: Json, file: string, key: string): number | null {
  const v = j[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    fail(file, key, `must be a token id (got ${show(v)})`);
  }
  return v;
}

function tokenIds(j: Json, file: string, key: string): number[] {
  const v = j[key];
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const x of list) {
    if (typeof x !== "number" || !Number.isInteger(x) || x < 0) {
      fail(file, key, `must be a token id or a list of them (got ${show(v)})`);
    }
  }
  return list as number[];
}

function architectureOf(j: Json, file: string): Architecture {
  const archs = j.architectures;
  let arch: unknown;
  if (Array.isArray(archs) && archs.length > 0) {
    if (archs.length > 1) {
      fail(file, "architectures", `must name one architecture (got ${show(archs)})`);
    }
    arch = archs[0];
  } else if (archs === undefined || archs === null) {
    const byType: Record<string, Architecture> = {
      llama: "LlamaForCausalLM",
      mistral: "MistralForCausalLM",
      granite: "GraniteForCausalLM",
      qwen2: "Qwen2ForCausalLM",
    };
    const mt = j.model_type;
    if (typeof mt !== "string" || !(mt in byType)) {
      fail(
        file,
        "model_type",
        `is ${show(mt)} and 'architectures' is missing`,
        `supported: ${SUPPORTED_ARCHITECTURES.join(", ")}`,
      );
    }
    arch = byType[mt];
  } else {
    fail(file, "architectures", `must be a list of names (got ${show(archs)})`);
  }
  if (!(SUPPORTED_ARCHITECTURES as readonly unknown[]).includes(arch)) {
    fail(
      file,
      "architectures",
      `is ${show(arch)}, which this trainer does not support`,
      `supported: ${SUPPORTED_ARCHITECTURES.join(", ")}`,
    );
  }
  return arch as Architecture;
}

function ropeScalingOf(j: Json, file: string): RopeScaling | null {
  const rs = j.rope_scaling;
  if (rs === undefined || rs === null) return null;
  if (typeof rs !== "object" || Array.isArray(rs)) {
    fail(file, "rope_scaling", `must be null or an object (got ${show(rs)})`);
  }
  const r = rs as Json;
  const type = r.rope_type ?? r.type;
  if (type === "default") return null;
  if (type !== "llama3") {
    fail(
      file,
      "rope_scaling.rope_type",
      `is ${show(type)}; only "llama3" RoPE scaling is supported`,
      "remove rope_scaling or use a model without linear/dynamic/yarn scaling",
    );
  }
  const num = (k: string) => {
    const v = r[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      fail(file, `rope_scaling.${k}`, `must be a positive number (got ${show(v)})`);
    }
    return v;
  };
  const out: RopeScaling = {
    type: "llama3",
    factor: num("factor"),
    low_freq_factor: num("low_freq_factor"),
    high_freq_factor: num("high_freq_factor"),
    original_max_position_embeddings: num("original_max_position_embeddings"),
  };
  if (out.high_freq_factor <= out.low_freq_factor) {
    fail(file, "rope_scaling.high_freq_factor", "must be greater than low_freq_factor");
  }
  return out;
}

/**
 * Validate and normalize an HF config.json object (`file` names it in errors). Refuses anything the
 * trainer would silently get wrong: other architectures, activations, MLP biases, RoPE scalings.
 */
export function parseModelConfig(json: unknown, file: string): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new UserError(`${file}: not a JSON object`);
  }
  const j = json as Json;
  const architecture = architectureOf(j, file);
  const granite = architecture === "GraniteForCausalLM";
  const qwen2 = architecture === "Qwen2ForCausalLM";

  const hiddenSize = posInt(j, file, "hidden_size");
  const numHeads = posInt(j, file, "num_attention_heads");
  const numKvHeads = posInt(j, file, "num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) {
    fail(
      file,
      "num_key_value_heads",
      `(${numKvHeads}) must divide num_attention_heads (${numHeads})`,
    );
  }
  let headDim: number;
  if (j.head_dim === undefined || j.head_dim === null) {
    if (hiddenSize % numHeads !== 0) {
      fail(
        file,
        "hidden_size",
        `(${hiddenSize}) is not a multiple of num_attention_heads (${numHeads})`,
      );
    }
    headDim = hiddenSize / numHeads;
  } else {
    headDim = posInt(j, file, "head_dim");
  }
  if (headDim % 2 !== 0) fail(file, "head_dim", `must be even for RoPE (got ${headDim})`);

  const act = j.hidden_act ?? "silu";
  if (act !== "silu") {
    fail(file, "hidden_act", `is ${show(act)}; only "silu" (SwiGLU) is supported`);
  }
  if (bool(j, file, "mlp_bias", false)) {
    fail(file, "mlp_bias", "is true; MLP biases are not supported");
  }
  const prf = j.partial_rotary_factor;
  if (prf !== undefined && prf !== null && prf !== 1 && prf !== 1.0) {
    fail(
      file,
      "partial_rotary_factor",
      `is ${show(prf)}; only full rotary embeddings are supported`,
    );
  }

  const attentionBias = bool(j, file, "attention_bias", false);
  const qkvBias = qwen2 || attentionBias;
  const oBias = !qwen2 && attentionBias;
  if (architecture === "MistralForCausalLM" && attentionBias) {
    fail(file, "attention_bias", "is true but Mistral has no attention biases");
  }

  let slidingWindow: number | null = null;
  if (architecture === "MistralForCausalLM") {
    slidingWindow = j.sliding_window == null ? null : posInt(j, file, "sliding_window");
  } else if (qwen2 && bool(j, file, "use_sliding_window", false)) {
    // HF Qwen2: layers from max_window_layers (default 28) on use the window; we keep the window
    // whenever any layer uses it (checkTrainingLength then refuses samples longer than it).
    const mwl = j.max_window_layers ?? 28;
    if (typeof mwl !== "number" || !Number.isInteger(mwl) || mwl < 0) {
      fail(file, "max_window_layers", `must be a non-negative integer (got ${show(mwl)})`);
    }
    if (mwl < posInt(j, file, "num_hidden_layers")) {
      slidingWindow = posInt(j, file, "sliding_window");
    }
  }

  const torchDtype = (j.torch_dtype ?? j.dtype ?? null) as unknown;
  if (torchDtype !== null && typeof torchDtype !== "string") {
    fail(file, "torch_dtype", `must be a string (got ${show(torchDtype)})`);
  }

  const cfg: ModelConfig = {
    architecture,
    vocabSize: posInt(j, file, "vocab_size"),
    hiddenSize,
    intermediateSize: posInt(j, file, "intermediate_size"),
    numLayers: posInt(j, file, "num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    tieWordEmbeddings: bool(j, file, "tie_word_embeddings", false),
    ropeTheta: posNum(j, file, "rope_theta", 10000),
    ropeScaling: ropeScalingOf(j, file),
    rmsNormEps: posNum(j, file, "rms_norm_eps", 1e-6),
    maxPositionEmbeddings: posInt(j, file, "max_position_embeddings", 2048),
    initializerRange: posNum(j, file, "initializer_range", 0.02),
    qkvBias,
    oBias,
    embeddingMultiplier: granite ? posNum(j, file, "embedding_multiplier", 1) : 1,
    residualMultiplier: granite ? posNum(j, file, "residual_multiplier", 1) : 1,
    attentionScale: granite ? posNum(j, file, "attention_multiplier", 1) : 1 / Math.sqrt(headDim),
    logitsScaling: granite ? posNum(j, file, "logits_scaling", 1) : 1,
    slidingWindow,
    bosTokenId: tokenId(j, file, "bos_token_id"),
    eosTokenIds: tokenIds(j, file, "eos_token_id"),
    padTokenId: tokenId(j, file, "pad_token_id"),
    torchDtype: torchDtype as string | null,
    raw: j,
    file,
  };
  for (
    const [k, id] of [
      ["bos_token_id", cfg.bosTokenId],
      ["pad_token_id", cfg.padTokenId],
      ...cfg.eosTokenIds.map((e) => ["eos_token_id", e] as const),
    ] as const
  ) {
    if (id !== null && id >= cfg.vocabSize) {
      fail(file, k, `(${id}) is not below vocab_size (${cfg.vocabSize})`);
    }
  }
  return cfg;
}

/**
 * Check the longest sample (tokens in one packed sequence) the run will train on: refuses a sliding
 * window shorter than it (the trainer attends over whole samples). Returns warnings to print.
 */
export function checkTrainingLength(cfg: ModelConfig, maxSampleTokens: number): string[] {
  if (cfg.slidingWindow !== null && cfg.slidingWindow < maxSampleTokens) {
    const key = cfg.architecture === "Qwen2ForCausalLM" ? "use_sliding_window" : "sliding_window";
    throw new UserError(
      `${cfg.file}: field '${key}' gives a ${cfg.slidingWindow}-token attention window, shorter ` +
        `than the ${maxSampleTokens}-token samples of this run; sliding-window attention is not supported`,
      `lower the run's maximum sequence length to ${cfg.slidingWindow} or less`,
    );
  }
  const warnings: string[] = [];
  if (maxSampleTokens > cfg.maxPositionEmbeddings) {
    warnings.push(
      `samples of up to ${maxSampleTokens} tokens exceed max_position_embeddings ` +
        `(${cfg.maxPositionEmbeddings}) of ${cfg.file}; positions beyond it were never pretrained`,
    );
  }
  return warnings;
}

/** One parameter tensor: HF name and shape (PyTorch layout: Linear weights are (out, in)). */
export interface ParamShape {
  name: string;
  shape: number[];
}

/** Every trainable tensor of the model with its HF name, in a fixed order (lm_head absent when tied). */
export function parameterShapes(cfg: ModelConfig): ParamShape[] {
  const C = cfg.hiddenSize, I = cfg.intermediateSize, D = cfg.headDim;
  const q = cfg.numHeads * D, kv = cfg.numKvHeads * D;
  const out: ParamShape[] = [{ name: "model.embed_tokens.weight", shape: [cfg.vocabSize, C] }];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}.`;
    out.push({ name: p + "input_layernorm.weight", shape: [C] });
    out.push({ name: p + "self_attn.q_proj.weight", shape: [q, C] });
    if (cfg.qkvBias) out.push({ name: p + "self_attn.q_proj.bias", shape: [q] });
    out.push({ name: p + "self_attn.k_proj.weight", shape: [kv, C] });
    if (cfg.qkvBias) out.push({ name: p + "self_attn.k_proj.bias", shape: [kv] });
    out.push({ name: p + "self_attn.v_proj.weight", shape: [kv, C] });
    if (cfg.qkvBias) out.push({ name: p + "self_attn.v_proj.bias", shape: [kv] });
    out.push({ name: p + "self_attn.o_proj.weight", shape: [C, q] });
    if (cfg.oBias) out.push({ name: p + "self_attn.o_proj.bias", shape: [C] });
    out.push({ name: p + "post_attention_layernorm.weight", shape: [C] });
    out.push({ name: p + "mlp.gate_proj.weight", shape: [I, C] });
    out.push({ name: p + "mlp.up_proj.weight", shape: [I, C] });
    out.push({ name: p + "mlp.down_proj.weight", shape: [C, I] });
  }
  out.push({ name: "model.norm.weight", shape: [C] });
  if (!cfg.tieWordEmbeddings) out.push({ name: "lm_head.weight", shape: [cfg.vocabSize, C] });
  return out;
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Total trainable parameters (tied embeddings counted once). */
export function parameterCount(cfg: ModelConfig): number {
  return parameterShapes(cfg).reduce((s, p) => s + numel(p.shape), 0);
}

/**
 * Row shards of a parameter: the embedding and the LM head are split into runs of rows of at
 * most `bindingBytes` each (a large vocabulary's table can exceed one storage binding, 2 GiB);
 * every other tensor is one shard.
 */
export function rowShards(
  name: string,
  shape: number[],
  bindingBytes: number,
): { v0: number; rows: number; cols: number }[] {
  const rowsAll = shape[0];
  const cols = shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : 1;
  const shardable = name === "model.embed_tokens.weight" || name === "lm_head.weight";
  const per = shardable ? Math.max(1, Math.floor(bindingBytes / (cols * 4))) : rowsAll;
  const out = [];
  for (let v0 = 0; v0 < rowsAll; v0 += per) {
    out.push({ v0, rows: Math.min(per, rowsAll - v0), cols });
  }
  return out;
}
