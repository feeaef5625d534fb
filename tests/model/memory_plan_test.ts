// Memory plan: byte counts by hand for a small config, recompute savings, sharding, fit advice.
import assert from "node:assert/strict";
import { parameterCount, parseModelConfig } from "../../model/config.ts";
import { PRESETS } from "../../model/init_model.ts";
import { formatPlan, layerActivationBytes, planMemory } from "../../model/memory_plan.ts";

const MiB = 1024 * 1024, GiB = 1024 * MiB;
const LIMITS = { maxBufferSize: 256 * MiB, maxStorageBufferBindingSize: 128 * MiB };
const tiny = parseModelConfig({ ...PRESETS.tiny, hidden_act: "silu" }, "tiny");
const llama1b = parseModelConfig(
  { ...PRESETS["llama-3.2-1b"], hidden_act: "silu" },
  "llama-3.2-1b",
);

Deno.test("memory plan: rows computed by hand for the tiny preset", () => {
  const T = 128;
  // C=64, I=176, Hq=4, Hkv=2, D=16: x_in, n1, x_mid, n2 (T,C); q, o (T,64); k, v (T,32); lse (4,T);
  // gate, up, act (T,176); rstd ×2 (T)
  const floats = 4 * T * 64 + 2 * T * 64 + 2 * T * 32 + 4 * T + 3 * T * 176 + 2 * T;
  assert.equal(layerActivationBytes(tiny, T), floats * 4);
  const p = planMemory(tiny, { microBatchTokens: T, recompute: false, limits: LIMITS });
  const P = parameterCount(tiny);
  assert.equal(P, 512 * 64 * 2 + 2 * (2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 3 * 176 * 64) + 64);
  assert.deepEqual(p.rows.slice(0, 4).map((r) => r.bytes), [4 * P, 4 * P, 4 * P, 4 * P]);
  assert.equal(p.rows[4].bytes, 2 * floats * 4);
  assert.match(p.rows[5].what, /logits chunk/);
  assert.equal(p.rows[5].bytes, T * 512 * 4 + 3 * T * 4); // whole vocabulary in one chunk
  assert.equal(p.totalBytes, p.rows.reduce((s, r) => s + r.bytes, 0));
  assert.deepEqual(p.shardsNeeded, []);
  assert.equal(p.fits, true);
  assert.match(p.advice, /unknown/);
});

Deno.test("memory plan: GPU adapters list the band attention's two score bands where they fit", () => {
  const gpuLimits = { maxBufferSize: 4 * GiB, maxStorageBufferBindingSize: 2 * GiB - 4 };
  const opts = { microBatchTokens: 4096, recompute: true, limits: gpuLimits };
  const bands = (p: ReturnType<typeof planMemory>) =>
    p.rows.filter((r) => /score bands/.test(r.what));
  // 4 samples of 1,024: 32 q heads × 64 query tiles × 17 key tiles × 64·64 floats, twice
  const short = planMemory(llama1b, { ...opts, attentionBands: { maxSampleTokens: 1024 } });
  assert.deepEqual(bands(short).map((r) => r.bytes), [2 * 32 * 64 * 17 * 4096 * 4]);
  // one 4,096-token sample: 64 key tiles, 2 GiB for all heads, past the 1 GiB cap: 2 head blocks
  const long = planMemory(llama1b, { ...opts, attentionBands: {} });
  assert.deepEqual(bands(long).map((r) => r.bytes), [2 * GiB]);
  assert.match(bands(long)[0].what, /in 2 blocks of heads/);
  // band-split's P·V / dQ partial sums, (chunks, T, Hq, D): 17 key tiles in 5 chunks of 4, and
  // 64 in 8 chunks of 8 (at most 8 chunks)
  const parts = (p: ReturnType<typeof planMemory>) =>
    p.rows.filter((r) => /partial sums/.test(r.what)).map((r) => [r.bytes, r.what]);
  assert.deepEqual(parts(short).map((r) => r[0]), [5 * 4096 * 32 * 64 * 4]);
  assert.match(String(parts(short)[0][1]), /5 chunks of key tiles/);
  assert.deepEqual(parts(long).map((r) => r[0]), [8 * 4096 * 32 * 64 * 4]);
  // samples of at most 193 tokens span at most 4 key tiles: one chunk, no partials
  const brief = planMemory(llama1b, { ...opts, attentionBands: { maxSampleTokens: 193 } });
  assert.deepEqual(parts(brief), []);
  // 16,384 tokens in samples of 4,096: one GQA group (4 q heads) alone needs 1.02 GiB: not offered
  const huge = { ...opts, microBatchTokens: 16384, attentionBands: { maxSampleTokens: 4096 } };
  assert.deepEqual(bands(planMemory(llama1b, huge)), []);
  // CPU adapters: no bands
  assert.deepEqual(bands(planMemory(llama1b, opts)), []);
  assert.deepEqual(parts(planMemory(llama1b, opts)), []);
});

Deno.test("memory plan: recompute keeps x_in per layer plus one layer", () => {
  const T = 2048;
  const off = planMemory(llama1b, { microBatchTokens: T, recompute: false, limits: LIMITS });
  const on = planMemory(llama1b, { microBatchTokens: T, recompute: true, limits: LIMITS });
  const per = layerActivationBytes(llama1b, T);
  const act = (p: typeof on) =>
    p.rows.filter((r) => r.what.startsWith("activations")).reduce((s, r) => s + r.bytes, 0);
  assert.equal(act(off), 16 * per);
  assert.equal(act(on), 16 * T * 2048 * 4 + per);
  assert.equal(off.totalBytes - on.totalBytes, act(off) - act(on));
});

Deno.test("memory plan: big tensors are sharded row-aligned across bindings", () => {
  const p = planMemory(llama1b, { microBatchTokens: 1024, recompute: true, limits: LIMITS });
  // embed (128256, 2048) f32 = 1002 MiB; 128 MiB per binding = 16384 rows → 8 shards
  assert.deepEqual(p.shardsNeeded, [{ tensor: "model.embed_tokens.weight", shards: 8 }]);
  // activation (T, I) over one binding: 8192 tokens × 8192 × 4 = 256 MiB
  const big = planMemory(llama1b, { microBatchTokens: 8192, recompute: true, limits: LIMITS });
  assert.ok(
    big.shardsNeeded.some((s) => s.tensor.startsWith("activation gate/up/act") && s.shards === 2),
  );
  assert.equal(big.fits, false);
  assert.match(big.advice, /fewer tokens per micro-batch/);
});

Deno.test("memory plan: does-not-fit advice names recompute and a micro-batch that fits", () => {
  const opts = { microBatchTokens: 4096, recompute: false, limits: LIMITS, deviceBytes: 24 * GiB };
  const p = planMemory(llama1b, opts);
  assert.equal(p.fits, false);
  assert.ok(p.totalBytes > 24 * GiB);
  assert.match(p.advice, /recomputation/);
  const m = /at most (\d+) tokens per micro-batch fit/.exec(p.advice);
  assert.ok(m, p.advice);
  const best = Number(m[1]);
  assert.ok(planMemory(llama1b, { ...opts, microBatchTokens: best }).fits);
  assert.ok(!planMemory(llama1b, { ...opts, microBatchTokens: best + 64 }).fits);
  const text = formatPlan(p);
  assert.match(text, /total/);
  assert.match(text, /does not fit: /);
  assert.match(text, /model\.embed_tokens\.weight ×8/);
  console.log(text);
  // weights + grads + Adam alone exceed 16 GiB: no micro-batch fits
  const none = planMemory(llama1b, { ...opts, deviceBytes: 16 * GiB });
  assert.match(none.advice, /use a smaller model/);
  const ok = planMemory(tiny, {
    microBatchTokens: 512,
    recompute: false,
    limits: LIMITS,
    deviceBytes: GiB,
  });
  assert.equal(ok.fits, true);
  assert.match(ok.advice, /^fits: /);
});
