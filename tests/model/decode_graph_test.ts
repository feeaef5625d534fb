// Decode graph vs the f64 reference: prefill and cached-step logits, greedy/sampled generation with and without the cache.
import assert from "node:assert/strict";
import { type ModelConfig, parseModelConfig } from "../../model/config.ts";
import { DecodeGraph } from "../../model/decode_graph.ts";
import { LlamaGraph } from "../../model/llama_graph.ts";
import { loadHfModel } from "../../model/hf_dir.ts";
import { loadTokenizer } from "../../model/tokenizer.ts";
import { gpuTest, maxRelErr, randomArray, report, sharedPath } from "../helpers.ts";
import { greedyGenerate, referenceLogits } from "../reference/llama.ts";
import { FAMILIES, randomWeights as tinyWeights } from "../reference/tiny_models.ts";

const TOL = 1e-4; // logits go through every layer's reductions
/** Relative-error floor: this fraction of the row's largest |logit| (small logits carry no signal). */
const FLOOR_FRAC = 1e-2;

/** Max relative error of a logits row with a floor of FLOOR_FRAC · max |ref|. */
function rowErr(got: Float32Array, ref: Float64Array): number {
  let mx = 0;
  for (const x of ref) mx = Math.max(mx, Math.abs(x));
  return maxRelErr(got, ref, Math.max(FLOOR_FRAC * mx, 1e-6));
}

/** Random weights scaled so greedy decoding does not collapse at once. */
const randomWeights = (cfg: ModelConfig, seed: number) => tinyWeights(cfg, seed, 0.5);

function promptOf(V: number, n: number, seed: number): number[] {
  return Array.from(randomArray(n, seed, 1), (x) => Math.floor(Math.abs(x) * V) % V);
}

/** Reference logits (T, V) of one unpacked sequence. */
function refLogits(cfg: ModelConfig, w: Map<string, Float32Array>, ids: number[]): Float64Array {
  const T = ids.length;
  return referenceLogits(
    cfg,
    w,
    Int32Array.from(ids),
    Uint32Array.from({ length: T }, (_, i) => i),
    new Uint32Array(T),
    new Uint32Array(T).fill(T),
  );
}

for (const [family, json] of Object.entries(FAMILIES)) {
  gpuTest(`decode: ${family} prefill and cached steps match the reference logits`, async (gpu) => {
    const cfg = parseModelConfig(json, `${family}/config.json`);
    const V = cfg.vocabSize;
    const w = randomWeights(cfg, 3);
    const ids = promptOf(V, 9, 5);
    const ref = refLogits(cfg, w, ids);
    const g = new DecodeGraph(gpu, cfg, { maxTokens: 32 });
    g.upload(w);
    // Prefill the first 5 tokens (padded to 16), then feed tokens 5..8 through the cache.
    let worst = 0;
    const got = await g.prefillLogits(ids.slice(0, 5));
    worst = Math.max(worst, rowErr(got, ref.subarray(4 * V, 5 * V)));
    for (let p = 5; p < ids.length; p++) {
      const l = await g.stepLogits(ids[p], p);
      worst = Math.max(worst, rowErr(l, ref.subarray(p * V, (p + 1) * V)));
    }
    report(
      `${family} logits, prefill + 4 cached steps (floor ${FLOOR_FRAC}·max|logit|)`,
      worst,
      TOL,
    );
    assert.ok(worst < TOL, `${family}: ${worst}`);

    // Greedy: cached = recomputed = the f64 reference, token for token.
    const n = 12;
    const cached = await g.generate(ids, { maxNewTokens: n, stopIds: [], chunk: 5 });
    const full = await g.generate(ids, { maxNewTokens: n, stopIds: [], useCache: false });
    const want = greedyGenerate(cfg, w, ids, n);
    assert.deepEqual(cached.tokens, want, `${family}: cached greedy vs reference`);
    assert.deepEqual(full.tokens, want, `${family}: uncached greedy vs reference`);
    assert.equal(cached.reason, "length");
    g.destroy();
  });
}

gpuTest("decode: sampling is reproducible and the same with and without the cache", async (gpu) => {
  const cfg = parseModelConfig(FAMILIES["llama-gqa"], "sample/config.json");
  const w = randomWeights(cfg, 8);
  const g = new DecodeGraph(gpu, cfg, { maxTokens: 40 });
  g.upload(w);
  const ids = promptOf(cfg.vocabSize, 4, 2);
  const o = { maxNewTokens: 16, stopIds: [], temperature: 1.5, seed: 11 };
  const a = await g.generate(ids, o);
  const b = await g.generate(ids, { ...o, chunk: 3 });
  const c = await g.generate(ids, { ...o, useCache: false });
  const d = await g.generate(ids, { ...o, seed: 12 });
  assert.deepEqual(a.tokens, b.tokens);
  assert.deepEqual(a.tokens, c.tokens);
  assert.notDeepEqual(a.tokens, d.tokens, "another seed draws another sequence");
  assert.notDeepEqual(
    a.tokens,
    await g.generate(ids, { maxNewTokens: 16, stopIds: [] }).then((r) => r.tokens),
  );
  g.destroy();
});

gpuTest("decode: stop ids, stop callback, streaming and the cache limit", async (gpu) => {
  const cfg = parseModelConfig(FAMILIES["llama-gqa"], "stop/config.json");
  const w = randomWeights(cfg, 3);
  const g = new DecodeGraph(gpu, cfg, { maxTokens: 20 });
  g.upload(w);
  const ids = promptOf(cfg.vocabSize, 9, 5);
  const free = await g.generate(ids, { maxNewTokens: 8, stopIds: [] });
  // Stop at the 4th generated token: the first three come back, without it.
  const stopAt = free.tokens[3];
  const firstIdx = free.tokens.indexOf(stopAt);
  const streamed: number[] = [];
  const r = await g.generate(ids, {
    maxNewTokens: 8,
    stopIds: [stopAt],
    onTokens: (t) => streamed.push(...t),
  });
  assert.equal(r.reason, "eos");
  assert.deepEqual(r.tokens, free.tokens.slice(0, firstIdx));
  assert.deepEqual(streamed, r.tokens);
  const s = await g.generate(ids, {
    maxNewTokens: 8,
    stopIds: [],
    chunk: 1,
    stop: (t) => t.length >= 2,
  });
  assert.equal(s.reason, "stop");
  assert.deepEqual(s.tokens, free.tokens.slice(0, 2));
  // 9 prompt tokens + 12 generated = 21 positions: the cache (20 rows) ends it.
  const long = await g.generate(ids, { maxNewTokens: 50, stopIds: [] });
  assert.equal(long.reason, "context");
  assert.equal(long.tokens.length, 12);
  assert.deepEqual(long.tokens.slice(0, 8), free.tokens);
  await assert.rejects(() => g.generate(promptOf(cfg.vocabSize, 21, 1), { maxNewTokens: 1 }));
  g.destroy();
});

const storiesDir = sharedPath("models/stories260K");
if (storiesDir) {
  gpuTest("decode: stories260K greedy continuation of '<s> Once upon a time'", async (gpu) => {
    const { config, tensors } = await loadHfModel(storiesDir);
    const tok = await loadTokenizer(storiesDir);
    const prompt = tok.encode("Once upon a time", { addSpecialTokens: true });
    assert.equal(prompt[0], tok.bosId);
    const g = new DecodeGraph(gpu, config, { maxTokens: 128 });
    g.upload(tensors);
    const r = await g.generate(prompt, { maxNewTokens: 60 });
    const text = tok.decode([...prompt, ...r.tokens], { skipSpecialTokens: true });
    console.log(`  stories260K: ${JSON.stringify(text)}`);
    const expected = "Once upon a time, there was a little girl named Lily. She loved to play " +
      "outside in the park. One day, she saw a big, red ball.";
    assert.ok(text.startsWith(expected), text);
    // The f64 reference agrees token for token over the first 30 tokens.
    assert.deepEqual(r.tokens.slice(0, 30), greedyGenerate(config, tensors, prompt, 30));
    const full = await g.generate(prompt, { maxNewTokens: 30, useCache: false });
    assert.deepEqual(full.tokens, r.tokens.slice(0, 30));
    g.destroy();
  });
}

for (const family of ["llama-gqa", "llama-tied"]) {
  gpuTest(
    `decode: ${family} with the embedding and head row-sharded (owned, and shared from a training graph) matches the reference`,
    async (gpu) => {
      const cfg = parseModelConfig(FAMILIES[family], `${family}/config.json`);
      const V = cfg.vocabSize, C = cfg.hiddenSize;
      const w = randomWeights(cfg, 4);
      const ids = promptOf(V, 7, 6);
      const ref = refLogits(cfg, w, ids);
      // Bindings of 5 rows: the vocabulary splits into ceil(V / 5) shards, the last one short.
      const maxBindingBytes = 5 * C * 4;
      const owned = new DecodeGraph(gpu, cfg, { maxTokens: 16, maxBindingBytes });
      const nShards = owned.shards.get("model.embed_tokens.weight")!.length;
      assert.equal(nShards, Math.ceil(V / 5));
      owned.upload(w);
      const train = new LlamaGraph(gpu, cfg, { tokens: 16, maxBindingBytes, mode: "eval" });
      train.upload(w);
      assert.equal(train.params.has("model.embed_tokens.weight"), false);
      const shared = new DecodeGraph(gpu, cfg, {
        maxTokens: 16,
        weights: train.params,
        pieces: train.pieces,
      });
      const want = greedyGenerate(cfg, w, ids, 6);
      for (const [name, g] of [["owned", owned], ["shared", shared]] as const) {
        const got = await g.prefillLogits(ids);
        const e = rowErr(got, ref.subarray((ids.length - 1) * V, ids.length * V));
        report(`${family} ${name}, ${nShards} row shards: last prefill logits`, e, TOL);
        assert.ok(e < TOL, `${name}: ${e}`);
        const gen = await g.generate(ids, { maxNewTokens: 6, stopIds: [], chunk: 3 });
        assert.deepEqual(gen.tokens, want, `${family} ${name}: greedy vs reference`);
      }
      owned.destroy();
      shared.destroy();
      train.destroy();
    },
  );
}
