// init-model: the written model loads back, is seeded and deterministic; its tokenizer and chat template work.
import assert from "node:assert/strict";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { BUILTIN_CORPUS, preTokenize, trainBpe } from "../../model/bpe.ts";
import { parameterCount } from "../../model/config.ts";
import { loadHfModel } from "../../model/hf_dir.ts";
import { initModel, initModelCommand, parseSetPairs } from "../../model/init_model.ts";
import { UserError } from "../../pipeline/errors.ts";
import { sharedTest } from "../helpers.ts";

async function withTemp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "init_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function loadTokenizer(dir: string): Promise<Tokenizer> {
  return new Tokenizer(
    JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`)),
    JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`)),
  );
}

const TEXTS = [
  "Once upon a time, there was a little girl named Lily.",
  "Tom has 12 apples; he buys 30 more: 12 + 30 = 42.",
  "  leading and   inner spaces\tand a tab\nand new lines\n\n",
  "naïve café — 日本語 🙂 ünïcödé",
  "I'm sure it's fine, they'll see what you've done.",
];

Deno.test("init-model: tiny preset loads back with seeded normal weights, norms one", async () => {
  await withTemp(async (tmp) => {
    const lines: string[] = [];
    const r = await initModel({ out: `${tmp}/tiny`, seed: 7, log: (l) => lines.push(l) });
    assert.equal(r.tokenizerSize, 512);
    assert.match(lines.join("\n"), /512 tokens/);
    const m = await loadHfModel(`${tmp}/tiny`);
    const c = m.config;
    assert.deepEqual(
      [c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.intermediateSize, c.vocabSize],
      [64, 2, 4, 2, 176, 512],
    );
    assert.deepEqual([c.bosTokenId, c.eosTokenIds, c.padTokenId], [0, [0], 0]);
    assert.equal(m.tensors.size, 3 + 2 * 9);
    assert.ok(m.tensors.get("model.layers.1.input_layernorm.weight")!.every((v) => v === 1));
    assert.ok(m.tensors.get("model.norm.weight")!.every((v) => v === 1));
    const e = m.tensors.get("model.embed_tokens.weight")!;
    let s = 0, s2 = 0;
    for (const v of e) (s += v), (s2 += v * v);
    const mean = s / e.length, std = Math.sqrt(s2 / e.length - mean * mean);
    console.log(
      `  embed_tokens: mean ${mean.toExponential(2)}, std ${std.toFixed(5)} (want 0, 0.02)`,
    );
    assert.ok(Math.abs(mean) < 3e-4 && Math.abs(std - 0.02) < 4e-4);
    // tensors differ from each other (per-tensor streams)
    const q = m.tensors.get("model.layers.0.self_attn.q_proj.weight")!;
    const k = m.tensors.get("model.layers.1.self_attn.q_proj.weight")!;
    assert.notDeepEqual(q, k);

    // same seed → same bytes; another seed → other weights
    await initModel({ out: `${tmp}/again`, seed: 7 });
    for (const f of ["model.safetensors", "tokenizer.json", "config.json"]) {
      assert.deepEqual(
        await Deno.readFile(`${tmp}/again/${f}`),
        await Deno.readFile(`${tmp}/tiny/${f}`),
      );
    }
    await initModel({ out: `${tmp}/other`, seed: 8 });
    const o = await loadHfModel(`${tmp}/other`);
    assert.notDeepEqual(o.tensors.get("model.embed_tokens.weight"), e);
  });
});

Deno.test("init-model: generated tokenizer loads with @huggingface/tokenizers and round-trips text", async () => {
  await withTemp(async (tmp) => {
    await initModel({ out: `${tmp}/m` });
    const tok = await loadTokenizer(`${tmp}/m`);
    assert.equal(tok.get_vocab().size, 512);
    for (const t of TEXTS) {
      const ids = tok.encode(t).ids;
      assert.ok(ids.every((i) => i >= 3 && i < 512));
      assert.equal(tok.decode(ids), t);
    }
    // trained merges compress English: fewer tokens than bytes
    const story = tok.encode(TEXTS[0]).ids.length;
    assert.ok(story < TEXTS[0].length / 2, `${story} tokens`);
    // special tokens are single ids
    assert.deepEqual(tok.encode("<|im_start|>user\n").ids.slice(0, 1), [1]);
    assert.deepEqual(tok.encode("hi<|im_end|>").ids.slice(-1), [2]);
    assert.deepEqual(tok.encode("<|endoftext|>").ids, [0]);
    assert.equal(tok.decode([1, ...tok.encode("hi").ids, 2], { skip_special_tokens: true }), "hi");
  });
});

Deno.test("init-model: the ChatML chat template renders with @huggingface/jinja", async () => {
  await withTemp(async (tmp) => {
    await initModel({ out: `${tmp}/m` });
    const tc = JSON.parse(await Deno.readTextFile(`${tmp}/m/tokenizer_config.json`));
    assert.equal(tc.eos_token, "<|endoftext|>");
    assert.equal(tc.pad_token, "<|endoftext|>");
    const messages = [
      { role: "system", content: "You are helpful." },
      { role: "user", content: "What is 2+2?" },
      { role: "assistant", content: "4" },
    ];
    const text = new Template(tc.chat_template).render({ messages, add_generation_prompt: false });
    assert.equal(
      text,
      "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n" +
        "<|im_start|>assistant\n4<|im_end|>\n",
    );
    const prompt = new Template(tc.chat_template).render({
      messages: messages.slice(0, 2),
      add_generation_prompt: true,
    });
    assert.ok(prompt.endsWith("<|im_end|>\n<|im_start|>assistant\n"));
    const tok = await loadTokenizer(`${tmp}/m`);
    const ids = tok.encode(text).ids;
    assert.equal(ids.filter((i) => i === 1).length, 3);
    assert.equal(ids.filter((i) => i === 2).length, 3);
    assert.equal(tok.decode(ids), text);
    const gen = JSON.parse(await Deno.readTextFile(`${tmp}/m/generation_config.json`));
    assert.deepEqual(gen.eos_token_id, [0, 2]);
  });
});

Deno.test("init-model: --set, --vocab and --corpus size the tokenizer and the model", async () => {
  await withTemp(async (tmp) => {
    const a = await initModel({
      out: `${tmp}/a`,
      set: parseSetPairs(["vocab_size=600", "num_hidden_layers=1", "tie_word_embeddings=true"]),
    });
    assert.equal(a.tokenizerSize, 600);
    assert.deepEqual([a.config.vocabSize, a.config.numLayers, a.config.tieWordEmbeddings], [
      600,
      1,
      true,
    ]);
    assert.equal((await loadTokenizer(`${tmp}/a`)).get_vocab().size, 600);
    assert.equal(a.config.file, `${tmp}/a/config.json`);

    const corpus = `${tmp}/corpus.txt`;
    await Deno.writeTextFile(corpus, BUILTIN_CORPUS.repeat(2) + "zebra zebra zebra quokka quokka");
    const b = await initModel({ out: `${tmp}/b`, vocab: 300, corpus: [corpus] });
    assert.equal(b.tokenizerSize, 300);
    assert.equal(b.config.vocabSize, 300);
    const tok = await loadTokenizer(`${tmp}/b`);
    assert.equal(tok.decode(tok.encode("zebra quokka").ids), "zebra quokka");

    // a corpus too small for the size asked keeps the preset's vocab_size (tokenizer smaller)
    const c = await initModel({
      out: `${tmp}/c`,
      set: { num_hidden_layers: 1, hidden_size: 32 },
      vocab: 5000,
    });
    assert.ok(c.tokenizerSize < 5000);
    assert.equal(c.config.vocabSize, c.tokenizerSize);
    assert.equal(parameterCount(c.config) > 0, true);
  });
});

sharedTest(
  "init-model: --tokenizer copies an existing tokenizer and takes its size and ids",
  async (shared) => {
    await withTemp(async (tmp) => {
      const src = `${shared}models/stories260K`;
      const r = await initModel({ out: `${tmp}/m`, tokenizer: src, set: { num_hidden_layers: 1 } });
      assert.equal(r.config.vocabSize, 512);
      assert.deepEqual([r.config.bosTokenId, r.config.eosTokenIds], [1, [2]]);
      assert.equal(
        await Deno.readTextFile(`${tmp}/m/tokenizer.json`),
        await Deno.readTextFile(`${src}/tokenizer.json`),
      );
    });
  },
);

Deno.test("init-model: mistakes are one-line UserErrors", async () => {
  await withTemp(async (tmp) => {
    const bad = async (p: Promise<unknown>, re: RegExp) =>
      await assert.rejects(() => p, (e: unknown) => e instanceof UserError && re.test(e.message));
    await bad(initModel({ out: `${tmp}/x`, preset: "huge" }), /unknown preset 'huge'/);
    await bad(
      initModel({ out: `${tmp}/x`, set: { num_attention_heads: 5, num_key_value_heads: 5 } }),
      /'hidden_size'/,
    );
    await bad(initModel({ out: `${tmp}/x`, set: { hidden_act: "relu" } }), /'hidden_act'/);
    await bad(initModel({ out: `${tmp}/x`, set: { vocab_size: 100 } }), /at least 259/);
    await bad(
      initModel({ out: `${tmp}/x`, set: { vocab_size: 400 }, vocab: 512 }),
      /'vocab_size' \(400\) is smaller than the tokenizer/,
    );
    await Deno.mkdir(`${tmp}/full`);
    await Deno.writeTextFile(`${tmp}/full/keep.txt`, "x");
    await bad(initModel({ out: `${tmp}/full` }), /already exists/);
    await bad(initModelCommand({}, []), /--out DIR is required/);
    await bad(initModelCommand({ out: `${tmp}/y` }, ["extra"]), /unexpected argument/);
    await bad(initModelCommand({ out: `${tmp}/y`, seed: "x" }, []), /--seed/);
    assert.throws(() => parseSetPairs(["novalue"]), UserError);
    assert.deepEqual(parseSetPairs(["a=1", "b=true", "c=text", 'd={"x":2}', "e=1e-5"]), {
      a: 1,
      b: true,
      c: "text",
      d: { x: 2 },
      e: 1e-5,
    });
    assert.equal(
      await initModelCommand({ out: `${tmp}/ok`, set: ["num_hidden_layers=1"], seed: "3" }, []),
      0,
    );
  });
});

Deno.test("bpe: pre-tokenization splits digits and keeps GPT-2 word boundaries; training is deterministic", () => {
  assert.deepEqual(preTokenize("I have 123 cats."), [
    "I",
    "Ġhave",
    "Ġ",
    "1",
    "2",
    "3",
    "Ġcats",
    ".",
  ]);
  const a = trainBpe([BUILTIN_CORPUS], { vocabSize: 400 });
  const b = trainBpe([BUILTIN_CORPUS], { vocabSize: 400 });
  assert.deepEqual(a, b);
  assert.equal(a.vocab.length, 400);
  assert.deepEqual(a.vocab.slice(0, 3), ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
  assert.deepEqual(a.merges[0], ["Ġ", "t"]);
  assert.equal(new Set(a.vocab).size, a.vocab.length);
});
