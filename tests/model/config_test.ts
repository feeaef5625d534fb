// Model config parsing: every family normalized, HF parameter names/counts, bad fields named in errors.
import assert from "node:assert/strict";
import {
  checkTrainingLength,
  parameterCount,
  parameterShapes,
  parseModelConfig,
} from "../../model/config.ts";
import { PRESETS } from "../../model/init_model.ts";
import { UserError } from "../../pipeline/errors.ts";
import { sharedTest } from "../helpers.ts";

const LLAMA = {
  architectures: ["LlamaForCausalLM"],
  hidden_size: 64,
  intermediate_size: 176,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 100,
  hidden_act: "silu",
};

sharedTest("config: stories260K config.json is normalized", async (shared) => {
  const file = `${shared}models/stories260K/config.json`;
  const cfg = parseModelConfig(JSON.parse(await Deno.readTextFile(file)), file);
  assert.equal(cfg.architecture, "LlamaForCausalLM");
  assert.deepEqual(
    [cfg.vocabSize, cfg.hiddenSize, cfg.intermediateSize, cfg.numLayers],
    [512, 64, 172, 5],
  );
  assert.deepEqual([cfg.numHeads, cfg.numKvHeads, cfg.headDim], [8, 4, 8]);
  assert.equal(cfg.tieWordEmbeddings, true);
  assert.equal(cfg.rmsNormEps, 1e-5);
  assert.equal(cfg.attentionScale, 1 / Math.sqrt(8));
  assert.deepEqual([cfg.bosTokenId, cfg.eosTokenIds, cfg.padTokenId], [1, [2], null]);
  assert.equal(cfg.torchDtype, "float32");
  assert.equal(cfg.raw.model_type, "llama");
  assert.equal(parameterShapes(cfg).some((p) => p.name === "lm_head.weight"), false);
});

Deno.test("config: Llama 3.2 style rope_scaling, eos list and defaults", () => {
  const cfg = parseModelConfig(
    {
      ...PRESETS["llama-3.2-1b"],
      eos_token_id: [128001, 128008, 128009],
      bos_token_id: 128000,
      hidden_act: "silu",
    },
    "llama.json",
  );
  assert.deepEqual(cfg.ropeScaling, {
    type: "llama3",
    factor: 32,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  });
  assert.deepEqual(cfg.eosTokenIds, [128001, 128008, 128009]);
  assert.equal(cfg.headDim, 64);
  assert.equal(parameterCount(cfg), 1_235_814_400); // Llama-3.2-1B
  // the old key "type" works too; "default" means none
  const old = parseModelConfig(
    {
      ...LLAMA,
      rope_scaling: { ...(PRESETS["llama-3.2-1b"].rope_scaling as object), type: "llama3" },
    },
    "x.json",
  );
  assert.equal(old.ropeScaling?.factor, 32);
  assert.equal(
    parseModelConfig({ ...LLAMA, rope_scaling: { rope_type: "default" } }, "x").ropeScaling,
    null,
  );
  const d = parseModelConfig({ ...LLAMA, num_key_value_heads: undefined }, "x.json");
  assert.equal(d.numKvHeads, 4);
  assert.equal(d.ropeTheta, 10000);
  assert.equal(d.rmsNormEps, 1e-6);
  assert.equal(d.initializerRange, 0.02);
  assert.equal(d.tieWordEmbeddings, false);
});

Deno.test("config: parameter counts of the presets match the real models", () => {
  const count = (p: string) =>
    parameterCount(parseModelConfig({ ...PRESETS[p], hidden_act: "silu" }, p));
  assert.equal(count("smollm2-135m"), 134_515_008); // SmolLM2-135M
  assert.equal(count("stories15m"), 15_191_712); // llama2.c stories15M (shared classifier)
});

Deno.test("config: Granite multipliers and Llama attention_bias", () => {
  const cfg = parseModelConfig(
    {
      ...LLAMA,
      architectures: ["GraniteForCausalLM"],
      embedding_multiplier: 12,
      residual_multiplier: 0.22,
      attention_multiplier: 0.0078125,
      logits_scaling: 8,
      attention_bias: true,
    },
    "granite.json",
  );
  assert.deepEqual(
    [cfg.embeddingMultiplier, cfg.residualMultiplier, cfg.attentionScale, cfg.logitsScaling],
    [12, 0.22, 0.0078125, 8],
  );
  assert.equal(cfg.qkvBias && cfg.oBias, true);
  const names = parameterShapes(cfg).map((p) => p.name);
  assert.ok(names.includes("model.layers.1.self_attn.o_proj.bias"));
  // multipliers are Granite-only
  const llama = parseModelConfig({ ...LLAMA, embedding_multiplier: 12 }, "l.json");
  assert.equal(llama.embeddingMultiplier, 1);
});

Deno.test("config: Qwen2 has q/k/v biases, no o bias; parameter names and shapes", () => {
  const cfg = parseModelConfig(
    {
      ...LLAMA,
      architectures: ["Qwen2ForCausalLM"],
      tie_word_embeddings: true,
      use_sliding_window: false,
      sliding_window: 4096,
    },
    "qwen.json",
  );
  assert.equal(cfg.qkvBias, true);
  assert.equal(cfg.oBias, false);
  assert.equal(cfg.slidingWindow, null);
  const shapes = parameterShapes(cfg);
  assert.deepEqual(shapes.slice(0, 10), [
    { name: "model.embed_tokens.weight", shape: [100, 64] },
    { name: "model.layers.0.input_layernorm.weight", shape: [64] },
    { name: "model.layers.0.self_attn.q_proj.weight", shape: [64, 64] },
    { name: "model.layers.0.self_attn.q_proj.bias", shape: [64] },
    { name: "model.layers.0.self_attn.k_proj.weight", shape: [32, 64] },
    { name: "model.layers.0.self_attn.k_proj.bias", shape: [32] },
    { name: "model.layers.0.self_attn.v_proj.weight", shape: [32, 64] },
    { name: "model.layers.0.self_attn.v_proj.bias", shape: [32] },
    { name: "model.layers.0.self_attn.o_proj.weight", shape: [64, 64] },
    { name: "model.layers.0.post_attention_layernorm.weight", shape: [64] },
  ]);
  assert.deepEqual(shapes.slice(-4), [
    { name: "model.layers.1.mlp.gate_proj.weight", shape: [176, 64] },
    { name: "model.layers.1.mlp.up_proj.weight", shape: [176, 64] },
    { name: "model.layers.1.mlp.down_proj.weight", shape: [64, 176] },
    { name: "model.norm.weight", shape: [64] },
  ]);
  const untied = parameterShapes(parseModelConfig(LLAMA, "l.json"));
  assert.deepEqual(untied.at(-1), { name: "lm_head.weight", shape: [100, 64] });
});

/** Assert that `json` is refused with a UserError naming file and field. */
function refuses(json: Record<string, unknown>, field: string) {
  assert.throws(
    () => parseModelConfig(json, "bad/config.json"),
    (e: unknown) => {
      assert.ok(e instanceof UserError, `not a UserError: ${e}`);
      assert.ok(e.message.startsWith("bad/config.json: "), e.message);
      assert.ok(e.message.includes(`'${field}'`), `${e.message} does not name ${field}`);
      return true;
    },
  );
}

Deno.test("config: bad or unsupported fields are refused, naming the field", () => {
  refuses({ ...LLAMA, architectures: ["GPT2LMHeadModel"] }, "architectures");
  refuses({ ...LLAMA, architectures: undefined, model_type: "gpt2" }, "model_type");
  refuses({ ...LLAMA, hidden_act: "gelu" }, "hidden_act");
  refuses({ ...LLAMA, mlp_bias: true }, "mlp_bias");
  refuses({ ...LLAMA, num_key_value_heads: 3 }, "num_key_value_heads");
  refuses({ ...LLAMA, hidden_size: 66 }, "hidden_size");
  refuses({ ...LLAMA, hidden_size: -64 }, "hidden_size");
  refuses({ ...LLAMA, vocab_size: undefined }, "vocab_size");
  refuses({ ...LLAMA, intermediate_size: "176" }, "intermediate_size");
  refuses({ ...LLAMA, rope_scaling: { rope_type: "yarn", factor: 4 } }, "rope_scaling.rope_type");
  refuses({ ...LLAMA, rope_scaling: { type: "linear", factor: 2 } }, "rope_scaling.rope_type");
  refuses(
    { ...LLAMA, rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1 } },
    "rope_scaling.high_freq_factor",
  );
  refuses({ ...LLAMA, eos_token_id: 100 }, "eos_token_id");
  refuses({ ...LLAMA, tie_word_embeddings: "yes" }, "tie_word_embeddings");
  refuses({ ...LLAMA, partial_rotary_factor: 0.5 }, "partial_rotary_factor");
  refuses({ ...LLAMA, rms_norm_eps: 0 }, "rms_norm_eps");
  refuses(
    { ...LLAMA, architectures: ["MistralForCausalLM"], attention_bias: true },
    "attention_bias",
  );
  assert.throws(() => parseModelConfig([1, 2], "a.json"), UserError);
});

Deno.test("config: sliding windows shorter than the samples are refused", () => {
  const mistral = parseModelConfig(
    {
      ...LLAMA,
      architectures: ["MistralForCausalLM"],
      sliding_window: 4096,
      max_position_embeddings: 32768,
    },
    "m.json",
  );
  assert.equal(mistral.slidingWindow, 4096);
  assert.deepEqual(checkTrainingLength(mistral, 4096), []);
  assert.throws(
    () => checkTrainingLength(mistral, 4097),
    (e: unknown) => e instanceof UserError && e.message.includes("m.json: field 'sliding_window'"),
  );
  const none = parseModelConfig(
    { ...LLAMA, architectures: ["MistralForCausalLM"], sliding_window: null },
    "m.json",
  );
  assert.deepEqual(checkTrainingLength(none, 2048), []);
  const qwen = parseModelConfig(
    {
      ...LLAMA,
      architectures: ["Qwen2ForCausalLM"],
      use_sliding_window: true,
      sliding_window: 1024,
      max_window_layers: 1,
    },
    "q.json",
  );
  // with max_window_layers ≥ layers (HF default 28) no layer uses the window
  const qwenFull = parseModelConfig(
    {
      ...LLAMA,
      architectures: ["Qwen2ForCausalLM"],
      use_sliding_window: true,
      sliding_window: 1024,
    },
    "q.json",
  );
  assert.equal(qwenFull.slidingWindow, null);
  assert.throws(
    () => checkTrainingLength(qwen, 2048),
    (e: unknown) => e instanceof UserError && e.message.includes("'use_sliding_window'"),
  );
  const warn = checkTrainingLength(parseModelConfig(LLAMA, "l.json"), 4096);
  assert.equal(warn.length, 1);
  assert.match(warn[0], /max_position_embeddings \(2048\)/);
});
