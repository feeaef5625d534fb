// Reference Llama: gradients vs central finite differences (every family), packing, and stories260K decoding.
import assert from "node:assert/strict";
import { Tokenizer } from "@huggingface/tokenizers";
import { type ModelConfig, parameterShapes, parseModelConfig } from "../../model/config.ts";
import { loadHfModel } from "../../model/hf_dir.ts";
import {
  greedyGenerate,
  type RefBatch,
  referenceForwardBackward,
  referenceLogits,
  referenceLoss,
} from "../reference/llama.ts";
import { randomArray, report, sharedTest } from "../helpers.ts";

const BASE = {
  vocab_size: 13,
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 4,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 64,
  hidden_act: "silu",
};

const FAMILIES: [string, Record<string, unknown>, number][] = [
  [
    "GQA Llama, untied, llama3 RoPE scaling",
    {
      ...BASE,
      architectures: ["LlamaForCausalLM"],
      rope_scaling: {
        rope_type: "llama3",
        factor: 4,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 16,
      },
    },
    1,
  ],
  [
    "Granite multipliers + attention_bias (q/k/v/o biases)",
    {
      ...BASE,
      architectures: ["GraniteForCausalLM"],
      embedding_multiplier: 3,
      residual_multiplier: 0.5,
      attention_multiplier: 0.3,
      logits_scaling: 2.5,
      attention_bias: true,
    },
    1,
  ],
  ["Qwen2 q/k/v biases", { ...BASE, architectures: ["Qwen2ForCausalLM"] }, 1],
  [
    "tied embeddings, MHA, lossScale 0.37",
    {
      ...BASE,
      architectures: ["LlamaForCausalLM"],
      num_key_value_heads: 4,
      tie_word_embeddings: true,
    },
    0.37,
  ],
];

/** Random f64 weights: linear/embedding ±0.5, norms 1 ± 0.2, biases ±0.2. */
function randomWeights(cfg: ModelConfig, seed: number): Map<string, Float64Array> {
  const w = new Map<string, Float64Array>();
  let s = seed;
  for (const { name, shape } of parameterShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const isNorm = name.endsWith("norm.weight");
    const r = randomArray(n, s++, isNorm || name.endsWith(".bias") ? 0.2 : 0.5);
    w.set(name, Float64Array.from(r, (v) => (isNorm ? 1 + v : v)));
  }
  return w;
}

/** Three samples packed in one row (lengths 4, 1, 5); prompt tokens unlabelled. */
function packedBatch(): RefBatch {
  const lens = [4, 1, 5];
  const T = lens.reduce((a, b) => a + b, 0);
  const ids = new Int32Array(T), labels = new Int32Array(T).fill(-100);
  const pos = new Uint32Array(T), seqStart = new Uint32Array(T), seqEnd = new Uint32Array(T);
  let t = 0;
  for (const L of lens) {
    for (let i = 0; i < L; i++, t++) {
      ids[t] = (t * 7 + 3) % 13;
      pos[t] = i;
      seqStart[t] = t - i;
      seqEnd[t] = t - i + L;
    }
  }
  // labels: next token inside each sample, the first token of the 3rd sample is a masked prompt.
  for (let i = 0; i < T; i++) if (i + 1 < seqEnd[i]) labels[i] = ids[i + 1];
  labels[5] = -100;
  labels[9] = 4; // last token of a sample with an explicit label (as the trainer's EOS target)
  return { ids, labels, pos, seqStart, seqEnd };
}

for (const [label, json, lossScale] of FAMILIES) {
  Deno.test(`reference llama: gradients vs central finite differences (${label})`, () => {
    const cfg = parseModelConfig(json, "test-config.json");
    const w = randomWeights(cfg, 11);
    const batch = packedBatch();
    const r = referenceForwardBackward(cfg, w, batch, { lossScale });
    assert.equal(r.lossTokens, 7);
    assert.deepEqual([...r.grads.keys()].sort(), parameterShapes(cfg).map((p) => p.name).sort());
    const eps = 1e-5, floor = 1e-3;
    let worst = 0;
    for (const [name, wt] of w) {
      const g = r.grads.get(name)!;
      const fd = new Float64Array(wt.length);
      for (let i = 0; i < wt.length; i++) {
        const keep = wt[i];
        wt[i] = keep + eps;
        const up = referenceLoss(cfg, w, batch).lossSum;
        wt[i] = keep - eps;
        const dn = referenceLoss(cfg, w, batch).lossSum;
        wt[i] = keep;
        fd[i] = (lossScale * (up - dn)) / (2 * eps);
      }
      for (let i = 0; i < fd.length; i++) {
        worst = Math.max(worst, Math.abs(fd[i] - g[i]) / Math.max(Math.abs(fd[i]), floor));
      }
    }
    report(`${label}: analytic vs finite-difference grads (floor ${floor})`, worst, 1e-6);
    assert.ok(worst <= 1e-6, `max rel err ${worst}`);
  });
}

Deno.test("reference llama: packed samples do not see each other", () => {
  const cfg = parseModelConfig(FAMILIES[0][1], "test-config.json");
  const w = randomWeights(cfg, 5);
  const b = packedBatch();
  const all = referenceLogits(cfg, w, b.ids, b.pos, b.seqStart, b.seqEnd);
  // the third sample alone (tokens 5..9) must give the same logits
  const ids = b.ids.slice(5), T = ids.length;
  const alone = referenceLogits(
    cfg,
    w,
    ids,
    Uint32Array.from({ length: T }, (_, i) => i),
    new Uint32Array(T),
    new Uint32Array(T).fill(T),
  );
  let err = 0;
  for (let i = 0; i < alone.length; i++) err = Math.max(err, Math.abs(alone[i] - all[5 * 13 + i]));
  console.log(`  packed vs alone logits: max abs err ${err.toExponential(2)} (tolerance 1e-12)`);
  assert.ok(err <= 1e-12);
});

const STORY =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. " +
  "One day, she saw a big, red ball.";
/** Mean token loss of stories260K on STORY (44 predicted tokens), measured with this reference. */
const STORY_MEAN_LOSS = 0.32409964504113087;

sharedTest(
  "reference llama: stories260K greedy decoding and loss on the known story",
  async (shared) => {
    const dir = `${shared}models/stories260K`;
    const m = await loadHfModel(dir);
    const tok = new Tokenizer(
      JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`)),
      JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`)),
    );
    const prompt = tok.encode("Once upon a time").ids;
    assert.deepEqual(prompt, [1, 403, 407, 261, 378]);
    const story = tok.encode(STORY).ids;
    const gen = greedyGenerate(m.config, m.tensors, prompt, story.length - prompt.length);
    assert.equal(tok.decode([...prompt, ...gen], { skip_special_tokens: true }), STORY);
    assert.deepEqual([...prompt, ...gen], story);

    const T = story.length;
    const r = referenceForwardBackward(m.config, m.tensors, {
      ids: Int32Array.from(story),
      labels: Int32Array.from(story, (_, i) => (i + 1 < T ? story[i + 1] : -100)),
      pos: Uint32Array.from(story, (_, i) => i),
      seqStart: new Uint32Array(T),
      seqEnd: new Uint32Array(T).fill(T),
    });
    const mean = r.lossSum / r.lossTokens;
    console.log(`  stories260K mean token loss on the story: ${mean} over ${r.lossTokens} tokens`);
    assert.equal(r.lossTokens, 44);
    assert.ok(Math.abs(mean - STORY_MEAN_LOSS) <= 1e-4, `mean loss ${mean}`);
  },
);
