// Tiny HF configs of every supported family and seeded random weights, shared by the graph tests.
import { type ModelConfig, parameterShapes } from "../../model/config.ts";
import { randomArray } from "../helpers.ts";

const BASE = {
  vocab_size: 37,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 64,
  hidden_act: "silu",
  tie_word_embeddings: false,
};

/** config.json contents of tiny models: GQA Llama, tied, Granite, Qwen2, o_proj bias, Llama-3 RoPE. */
export const FAMILIES: Record<string, Record<string, unknown>> = {
  "llama-gqa": { ...BASE, architectures: ["LlamaForCausalLM"] },
  "llama-tied": {
    ...BASE,
    architectures: ["LlamaForCausalLM"],
    tie_word_embeddings: true,
    num_key_value_heads: 4,
  },
  granite: {
    ...BASE,
    architectures: ["GraniteForCausalLM"],
    embedding_multiplier: 3.0,
    residual_multiplier: 0.5,
    attention_multiplier: 0.2,
    logits_scaling: 2.5,
  },
  qwen2: {
    ...BASE,
    architectures: ["Qwen2ForCausalLM"],
    num_key_value_heads: 1,
    attention_bias: true,
  },
  "llama-obias": { ...BASE, architectures: ["LlamaForCausalLM"], attention_bias: true },
  "llama3-rope": {
    ...BASE,
    architectures: ["LlamaForCausalLM"],
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 32,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8,
    },
  },
};

/** Seeded random weights: matrices uniform in ±scale, norm weights 1 ± 0.2. */
export function randomWeights(
  cfg: ModelConfig,
  seed: number,
  scale = 0.3,
): Map<string, Float32Array> {
  const w = new Map<string, Float32Array>();
  parameterShapes(cfg).forEach(({ name, shape }, i) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const r = randomArray(n, seed * 1000 + i, name.includes("norm") ? 0.2 : scale);
    if (name.includes("norm")) { for (let j = 0; j < n; j++) r[j] += 1; }
    w.set(name, r);
  });
  return w;
}
