// HF directories: stories260K load → save → load (F32 bit-exact, BF16 within rounding, sharded), atomic saves.
import assert from "node:assert/strict";
import { parameterShapes, parseModelConfig } from "../../model/config.ts";
import { loadHfModel, openHfModel, saveHfModel } from "../../model/hf_dir.ts";
import { INDEX_FILE, writeSafetensorsDir } from "../../model/safetensors.ts";
import { UserError } from "../../pipeline/errors.ts";
import { randomArray, report, sharedTest } from "../helpers.ts";

async function withTemp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "hf_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function listDir(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

sharedTest("hf_dir: stories260K load → save (f32) → load is bit-identical", async (shared) => {
  const src = `${shared}models/stories260K`;
  const m = await loadHfModel(src);
  assert.equal(m.tensors.size, 2 + 5 * 9); // embed, norm, 9 per layer; tied: no lm_head
  assert.ok(!m.tensors.has("lm_head.weight"));
  await withTemp(async (tmp) => {
    const out = `${tmp}/nested/ckpt`;
    const files = await saveHfModel(out, {
      config: m.config,
      tensors: m.tensors,
      dtype: "f32",
      tokenizerFrom: src,
    });
    assert.deepEqual(files.sort(), [
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    assert.deepEqual(await listDir(`${tmp}/nested`), ["ckpt"]); // no temp dirs left behind
    const back = await loadHfModel(out);
    for (const [name, t] of m.tensors) {
      assert.deepEqual(bits(back.tensors.get(name)!), bits(t), name);
    }
    assert.deepEqual(back.config.raw, m.config.raw);
    for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
      assert.equal(
        await Deno.readTextFile(`${out}/${f}`),
        await Deno.readTextFile(`${src}/${f}`),
        f,
      );
    }
    // saving the reloaded model again gives the same weights file byte for byte
    await saveHfModel(`${tmp}/again`, { config: back.config, tensors: back.tensors, dtype: "f32" });
    assert.deepEqual(
      await Deno.readFile(`${tmp}/again/model.safetensors`),
      await Deno.readFile(`${out}/model.safetensors`),
    );
  });
});

sharedTest(
  "hf_dir: a BF16 checkpoint reloads within bf16 rounding, torch_dtype updated",
  async (shared) => {
    const m = await loadHfModel(`${shared}models/stories260K`);
    await withTemp(async (tmp) => {
      await saveHfModel(`${tmp}/bf`, { config: m.config, tensors: m.tensors, dtype: "bf16" });
      const back = await loadHfModel(`${tmp}/bf`);
      assert.equal(back.config.torchDtype, "bfloat16");
      assert.equal(back.config.raw.torch_dtype, "bfloat16");
      let err = 0;
      for (const [name, t] of m.tensors) {
        const b = back.tensors.get(name)!;
        for (let i = 0; i < t.length; i++) {
          // floor 1e-30: only exact zeros fall under it, and those round-trip exactly
          err = Math.max(err, Math.abs(b[i] - t[i]) / Math.max(Math.abs(t[i]), 1e-30));
        }
      }
      report("bf16 checkpoint vs f32 weights", err, 2 ** -8);
      assert.ok(err <= 2 ** -8);
      const size = (await Deno.stat(`${tmp}/bf/model.safetensors`)).size;
      const f32size = (await Deno.stat(`${shared}models/stories260K/model.safetensors`)).size;
      assert.ok(size < f32size * 0.51, `${size} vs ${f32size}`);
    });
  },
);

sharedTest("hf_dir: sharded save and load", async (shared) => {
  const m = await loadHfModel(`${shared}models/stories260K`);
  await withTemp(async (tmp) => {
    const files = await saveHfModel(`${tmp}/sh`, {
      config: m.config,
      tensors: m.tensors,
      dtype: "f32",
      shardBytes: 300_000,
    });
    const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
    assert.ok(shards.length >= 3, files.join(", "));
    assert.ok(files.includes(INDEX_FILE));
    assert.ok(!files.includes("model.safetensors"));
    const back = await loadHfModel(`${tmp}/sh`);
    for (const [name, t] of m.tensors) {
      assert.deepEqual(bits(back.tensors.get(name)!), bits(t), name);
    }
  });
});

const TINY = {
  architectures: ["LlamaForCausalLM"],
  hidden_size: 8,
  intermediate_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  vocab_size: 10,
  hidden_act: "silu",
  tie_word_embeddings: false,
};

function tinyTensors(cfg = parseModelConfig(TINY, "t.json"), seed = 1) {
  return new Map(
    parameterShapes(cfg).map((
      { name, shape },
      i,
    ) => [name, randomArray(shape.reduce((a, b) => a * b), seed + i, 1)]),
  );
}

Deno.test("hf_dir: saving over a directory replaces it; a failed save leaves it intact", async () => {
  await withTemp(async (tmp) => {
    const cfg = parseModelConfig(TINY, "t.json");
    const first = tinyTensors(cfg, 1);
    await saveHfModel(`${tmp}/m`, { config: cfg, tensors: first, dtype: "f32" });
    await Deno.writeTextFile(`${tmp}/m/stale.txt`, "old");
    const second = tinyTensors(cfg, 50);
    await saveHfModel(`${tmp}/m`, { config: cfg, tensors: second, dtype: "f32" });
    assert.deepEqual(await listDir(tmp), ["m"]);
    assert.ok(!(await listDir(`${tmp}/m`)).includes("stale.txt"));
    let back = await loadHfModel(`${tmp}/m`);
    assert.deepEqual(back.tensors.get("model.norm.weight"), second.get("model.norm.weight"));

    const broken = new Map<string, Float32Array | (() => Float32Array)>(tinyTensors(cfg, 99));
    broken.set("model.norm.weight", () => {
      throw new Error("simulated crash while writing");
    });
    await assert.rejects(
      () => saveHfModel(`${tmp}/m`, { config: cfg, tensors: broken, dtype: "f32" }),
      /simulated crash/,
    );
    assert.deepEqual(await listDir(tmp), ["m"]); // temp dir cleaned up, old checkpoint kept
    back = await loadHfModel(`${tmp}/m`);
    assert.deepEqual(back.tensors.get("model.norm.weight"), second.get("model.norm.weight"));
    // generation_config.json comes from the config ids when nothing else is given
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${tmp}/m/generation_config.json`)), {
      _from_model_config: true,
    });
    await assert.rejects(
      () => saveHfModel(`${tmp}/x`, { config: cfg, tensors: new Map(), dtype: "f32" }),
      /missing/,
    );
  });
});

Deno.test("hf_dir: missing lm_head of an untied model, wrong shapes and unknown tensors are errors", async () => {
  await withTemp(async (tmp) => {
    const cfg = parseModelConfig(TINY, "t.json");
    const all = tinyTensors(cfg);
    const write = async (dir: string, drop: string[], extra: Record<string, number[]> = {}) => {
      await Deno.mkdir(dir);
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(TINY));
      const list = parameterShapes(cfg)
        .filter((p) => !drop.includes(p.name))
        .map(({ name, shape }) => ({ name, shape, data: all.get(name)! }));
      for (const [name, shape] of Object.entries(extra)) {
        list.push({ name, shape, data: new Float32Array(shape.reduce((a, b) => a * b)) });
      }
      await writeSafetensorsDir(dir, list, { dtype: "f32" });
    };
    await write(`${tmp}/nohead`, ["lm_head.weight"]);
    await assert.rejects(
      () => loadHfModel(`${tmp}/nohead`),
      (e: unknown) => e instanceof UserError && e.message.includes("'lm_head.weight' is missing"),
    );
    await write(`${tmp}/extra`, [], { "model.layers.0.mlp.up_proj.bias": [16] });
    await assert.rejects(
      () => loadHfModel(`${tmp}/extra`),
      (e: unknown) => e instanceof UserError && e.message.includes("up_proj.bias"),
    );
    // rotary inv_freq buffers of old checkpoints are ignored
    await write(`${tmp}/inv`, [], { "model.layers.0.self_attn.rotary_emb.inv_freq": [2] });
    const r = await openHfModel(`${tmp}/inv`);
    assert.equal(r.names.length, parameterShapes(cfg).length);
    r.close();
    // a tied config accepts (and ignores) an lm_head.weight in the file
    await Deno.mkdir(`${tmp}/tied`);
    await Deno.writeTextFile(
      `${tmp}/tied/config.json`,
      JSON.stringify({ ...TINY, tie_word_embeddings: true }),
    );
    await writeSafetensorsDir(
      `${tmp}/tied`,
      parameterShapes(cfg).map(({ name, shape }) => ({ name, shape, data: all.get(name)! })),
      { dtype: "f32" },
    );
    const tied = await loadHfModel(`${tmp}/tied`);
    assert.ok(!tied.tensors.has("lm_head.weight"));
    // wrong shape
    await Deno.mkdir(`${tmp}/shape`);
    await Deno.writeTextFile(
      `${tmp}/shape/config.json`,
      JSON.stringify({ ...TINY, intermediate_size: 12 }),
    );
    await writeSafetensorsDir(
      `${tmp}/shape`,
      parameterShapes(cfg).map(({ name, shape }) => ({ name, shape, data: all.get(name)! })),
      { dtype: "f32" },
    );
    await assert.rejects(
      () => loadHfModel(`${tmp}/shape`),
      (e: unknown) =>
        e instanceof UserError && /gate_proj.weight' has shape \[16,8\]/.test(e.message),
    );
    await assert.rejects(
      () => loadHfModel(`${tmp}/none`),
      (e: unknown) => e instanceof UserError && e.message.includes("config.json"),
    );
  });
});
