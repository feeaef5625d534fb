// GPU training graph vs the plain-TS reference model: loss and every gradient, per model family.
import assert from "node:assert/strict";
import { parseModelConfig } from "../../model/config.ts";
import {
  boundSegments,
  LlamaGraph,
  type MicroBatch,
  packMicroBatch,
} from "../../model/llama_graph.ts";
import {
  type AttentionVariant,
  setAttentionForm,
  setAttentionVariant,
} from "../../kernels/attention.ts";
import { setAttentionBandKeyChunk } from "../../kernels/attention_band.ts";
import { type MatmulTuning, matmulTuning, setMatmulTuning } from "../../kernels/matmul.ts";
import type { Gpu } from "../../kernels/runtime.ts";
import { assertSameBits, gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";
import { referenceForwardBackward } from "../reference/llama.ts";
import { FAMILIES, randomWeights } from "../reference/tiny_models.ts";

/** Three samples of lengths 5, 1 and 7 (the first token of each is prompt, not trained). */
export function testSamples(V: number, seed: number): { ids: number[]; labels: number[] }[] {
  const r = randomArray(64, seed, 1);
  let k = 0;
  return [5, 1, 7].map((n) => {
    const ids = Array.from({ length: n }, () => Math.floor(Math.abs(r[k++ % 64]) * V) % V);
    return { ids, labels: ids.map((id, i) => (i === 0 ? -100 : id)) };
  });
}

/** The test samples packed into T = 16 slots (3 padding). */
export function testBatch(V: number, seed: number, T = 16): MicroBatch {
  return packMicroBatch(testSamples(V, seed), T, 0);
}

/**
 * Tolerances of one kernel set: relative loss error, gradient error (per element, relative to
 * max(|ref|, floor · the tensor's largest |ref|)) and grad-norm error.
 */
interface Tolerances {
  loss: number;
  grads: number;
  floor: number;
  gradNorm: number;
}

const F32_TOL: Tolerances = { loss: 1e-5, grads: 1e-3, floor: 1e-2, gradNorm: 1e-4 };

/**
 * Kernel sets: the adapter's defaults, the GPU-shaped kernels forced (128-tile matmuls split
 * along K, flash-attention tiles), so CI on a CPU adapter also checks the graph a GPU runs, and
 * those with f16 GEMM arithmetic (which also turns on dynamic loss scaling, starting at 2^16).
 * f16 tolerances: inputs rounded to f16 (2^-11 relative) through a few layers of GEMMs.
 */
const KERNEL_SETS: {
  name: string;
  matmul: Partial<MatmulTuning> | null;
  attention: AttentionVariant | null;
  tol: Tolerances;
}[] = [
  { name: "default kernels", matmul: null, attention: null, tol: F32_TOL },
  { name: "GPU kernels", matmul: { variant: "big", splitK: 2 }, attention: "gpu", tol: F32_TOL },
  {
    name: "GPU kernels, f16 matmuls",
    matmul: { variant: "big", splitK: 2, precision: "f16" },
    attention: "gpu",
    tol: { loss: 1e-3, grads: 3e-2, floor: 1, gradNorm: 1e-2 },
  },
];

for (const [family, json] of Object.entries(FAMILIES)) {
  for (const ks of KERNEL_SETS) {
    gpuTest(
      `graph: ${family} loss and every gradient match the reference (${ks.name})`,
      async (gpu) => {
        if (ks.matmul?.precision === "f16" && !gpu.hasF16) {
          console.log("  adapter lacks shader-f16: f16 kernel set not run");
          return;
        }
        const before = { ...matmulTuning(gpu) };
        if (ks.matmul) setMatmulTuning(gpu, ks.matmul);
        if (ks.attention) setAttentionVariant(gpu, ks.attention);
        try {
          await checkFamily(gpu, family, json, ks.tol);
        } finally {
          setMatmulTuning(gpu, before);
          setAttentionVariant(gpu, null);
        }
      },
    );
  }
}

/**
 * One step of `family` on the GPU against the f64 reference: loss, every gradient, grad norm, on
 * `batch` (default: testBatch's 16 tokens). Returns the kernels of the graph's forward and backward.
 */
async function checkFamily(
  gpu: Gpu,
  family: string,
  json: Record<string, unknown>,
  tol: Tolerances,
  batch?: (V: number) => MicroBatch,
): Promise<string[]> {
  {
    const cfg = parseModelConfig(json, `${family}/config.json`);
    const weights = randomWeights(cfg, 7);
    const mb = batch ? batch(cfg.vocabSize) : testBatch(cfg.vocabSize, 3);
    const ref = referenceForwardBackward(cfg, weights, {
      ids: Int32Array.from(mb.ids),
      labels: mb.labels,
      pos: mb.pos,
      seqStart: mb.seqStart,
      seqEnd: mb.seqEnd,
    });
    assert.equal(ref.lossTokens, mb.lossTokens);
    const graph = new LlamaGraph(gpu, cfg, { tokens: mb.ids.length });
    graph.upload(weights);
    // One step with lr 0: gradients of the token-mean loss land in Adam's m = (1 − β1)·g.
    graph.queueStep(0, [mb], {
      lr: 0,
      beta1: 0.5,
      beta2: 0.9,
      eps: 1e-8,
      weightDecay: 0,
      maxGradNorm: 0,
    });
    const [metrics] = await graph.readMetrics(0, 1);
    const lossErr = Math.abs(metrics[0] - ref.lossSum) / Math.abs(ref.lossSum);
    report(
      `${family} loss sum ${metrics[0].toFixed(5)} vs ${ref.lossSum.toFixed(5)}`,
      lossErr,
      tol.loss,
    );
    assert.ok(lossErr < tol.loss, `loss ${metrics[0]} vs ${ref.lossSum}`);
    const m = await graph.download("m");
    let worst = 0, worstName = "";
    for (const [name, g] of ref.grads) {
      const got = m.get(name)!.map((x) => x / 0.5 * mb.lossTokens);
      // Floor: a share of the tensor's largest gradient (tiny entries carry cancellation noise).
      let gmax = 0;
      for (const x of g) gmax = Math.max(gmax, Math.abs(x));
      const err = maxRelErr(got, g, Math.max(tol.floor * gmax, 1e-6));
      if (err > worst) [worst, worstName] = [err, name];
    }
    report(
      `${family} gradients (worst ${worstName}, floor ${tol.floor * 100}% of max)`,
      worst,
      tol.grads,
    );
    assert.ok(worst < tol.grads, `${worstName}: ${worst}`);
    // gradnorm reported before clipping equals the reference norm of the mean-loss gradient.
    let sq = 0;
    for (const g of ref.grads.values()) for (const x of g) sq += (x / mb.lossTokens) ** 2;
    const gnErr = Math.abs(metrics[1] - Math.sqrt(sq)) / Math.sqrt(sq);
    assert.ok(gnErr < tol.gradNorm, `gradnorm ${metrics[1]} vs ${Math.sqrt(sq)}`);
    if (graph.lossScale) assert.equal(metrics[4], 65536, "the step ran at the initial loss scale");
    const kernels = graph.forwardBackward.map((d) => d.kernel.name);
    graph.destroy();
    return kernels;
  }
}

// The band attention forms in the graph, over several 64-token tiles: samples of 70, 1 and 89 tokens
// (T = 160), band-split with chunks of one key tile so that P·V and dQ are cut and reduced.
for (const form of ["band", "band-split"] as const) {
  gpuTest(`graph: llama-gqa with the ${form} attention form matches the reference`, async (gpu) => {
    const long = (V: number) => {
      const r = randomArray(160, 13, 1);
      let k = 0;
      const samples = [70, 1, 89].map((n) => {
        const ids = Array.from({ length: n }, () => Math.floor(Math.abs(r[k++]) * V) % V);
        return { ids, labels: ids.map((id, i) => (i === 0 ? -100 : id)) };
      });
      return packMicroBatch(samples, 160, 0);
    };
    setAttentionVariant(gpu, "gpu");
    setAttentionForm(gpu, form);
    if (form === "band-split") setAttentionBandKeyChunk(1);
    try {
      const kernels = await checkFamily(gpu, "llama-gqa", FAMILIES["llama-gqa"], F32_TOL, long);
      assert.ok(!kernels.some((n) => /attention_gpu_(forward|backward)/.test(n)), "no flash");
      const reduces = kernels.filter((n) => n.includes("attention_band_reduce"));
      assert.equal(reduces.length, form === "band-split" ? 4 : 0, "P·V and dQ reduces, 2 layers");
    } finally {
      setAttentionVariant(gpu, null);
      setAttentionForm(gpu, null);
      setAttentionBandKeyChunk(null);
    }
  });
}

gpuTest(
  "graph: accumulation over 2 micro-batches equals one batch twice as large (A.6.10)",
  async (gpu) => {
    const cfg = parseModelConfig(FAMILIES["llama-gqa"], "acc/config.json");
    const weights = randomWeights(cfg, 11);
    const a = testBatch(cfg.vocabSize, 5), b = testBatch(cfg.vocabSize, 6);
    const both = packMicroBatch(
      [...testSamples(cfg.vocabSize, 5), ...testSamples(cfg.vocabSize, 6)],
      32,
      0,
    );
    assert.equal(both.lossTokens, a.lossTokens + b.lossTokens);
    const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 };
    const g1 = new LlamaGraph(gpu, cfg, { tokens: 16 });
    g1.upload(weights);
    g1.queueStep(0, [a, b], hyper);
    const g2 = new LlamaGraph(gpu, cfg, { tokens: 32 });
    g2.upload(weights);
    g2.queueStep(0, [both], hyper);
    const [m1] = await g1.readMetrics(0, 1), [m2] = await g2.readMetrics(0, 1);
    assert.ok(Math.abs(m1[0] - m2[0]) / m2[0] < 1e-5, `loss ${m1[0]} vs ${m2[0]}`);
    assert.ok(Math.abs(m1[1] - m2[1]) / m2[1] < 1e-4, `gradnorm ${m1[1]} vs ${m2[1]}`);
    const w1 = await g1.download("m"), w2 = await g2.download("m");
    let worst = 0;
    for (const [n, x] of w1) worst = Math.max(worst, maxRelErr(x, w2.get(n)!, 1e-4));
    report("accumulated vs single-batch gradients (floor 1e-4)", worst, 1e-3);
    assert.ok(worst < 1e-3);
    g1.destroy();
    g2.destroy();
  },
);

gpuTest("graph: loss scaling by powers of two changes no bit of training", async (gpu) => {
  const cfg = parseModelConfig(FAMILIES["llama-gqa"], "scale/config.json");
  const weights = randomWeights(cfg, 17);
  const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 };
  const run = async (lossScale: { init: number; growthInterval: number } | null) => {
    const g = new LlamaGraph(gpu, cfg, { tokens: 16, lossScale });
    g.upload(weights);
    for (let s = 0; s < 3; s++) g.queueStep(s, [testBatch(cfg.vocabSize, 20 + s)], hyper);
    const out = { metrics: await g.readMetrics(0, 3), weights: await g.download("weights") };
    g.destroy();
    return out;
  };
  const plain = await run(null);
  // growth every step: the three steps run at S = 4, 8, 16
  const scaled = await run({ init: 4, growthInterval: 1 });
  assert.deepEqual(scaled.metrics.map((m) => m[4]), [4, 8, 16]);
  assert.deepEqual(plain.metrics.map((m) => m[4]), [1, 1, 1]);
  for (let s = 0; s < 3; s++) {
    assert.equal(scaled.metrics[s][0], plain.metrics[s][0], `loss of step ${s}`);
    assert.equal(scaled.metrics[s][1], plain.metrics[s][1], `grad norm of step ${s}`);
  }
  for (const [name, w] of plain.weights) assert.deepEqual(scaled.weights.get(name), w, name);
});

gpuTest("graph: an overflowing gradient skips the step and halves the loss scale", async (gpu) => {
  const cfg = parseModelConfig(FAMILIES["llama-gqa"], "overflow/config.json");
  const weights = randomWeights(cfg, 19);
  const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 };
  // 2^100 · gradients: their squares overflow f32 in the norm
  const g = new LlamaGraph(gpu, cfg, {
    tokens: 16,
    lossScale: { init: 2 ** 100, growthInterval: 2 },
  });
  g.upload(weights);
  g.queueStep(0, [testBatch(cfg.vocabSize, 1)], hyper);
  g.queueStep(1, [testBatch(cfg.vocabSize, 2)], hyper);
  const skipped = await g.readMetrics(0, 2);
  assert.deepEqual(skipped.map((m) => [m[3], m[4]]), [[0, 2 ** 100], [0, 2 ** 99]]);
  assert.ok(skipped.every((m) => Number.isFinite(m[0])), "the loss itself stays finite");
  const after = await g.download("weights");
  for (const [name, w] of weights) assert.deepEqual(after.get(name), w, `${name} moved`);
  for (const [name, m] of await g.download("m")) {
    assert.ok(m.every((x) => x === 0), `Adam m of ${name} moved`);
  }
  assert.deepEqual(Array.from((await g.readLossScale())!), [2 ** 98, 0, 2, 0]);
  // restored to S = 1 (as a resume would): the first applied update (host step 3) is AdamW's
  // step 1, as in torch, whose optimizer never saw the skipped steps: same update as a fresh run's
  g.writeLossScale([1, 0, 2, 0]);
  g.queueStep(2, [testBatch(cfg.vocabSize, 2)], hyper);
  const fresh = new LlamaGraph(gpu, cfg, { tokens: 16, lossScale: null });
  fresh.upload(weights);
  fresh.queueStep(0, [testBatch(cfg.vocabSize, 2)], hyper);
  const [a, b] = [await g.download("weights"), await fresh.download("weights")];
  let worst = 0;
  for (const [name, w0] of weights) {
    const da = a.get(name)!.map((x, i) => x - w0[i]), db = b.get(name)!.map((x, i) => x - w0[i]);
    const floor = 1e-2 * db.reduce((m, x) => Math.max(m, Math.abs(x)), 0) || 1e-30;
    worst = Math.max(worst, maxRelErr(da, db, floor));
  }
  fresh.destroy();
  report("first update after 2 skipped steps vs a fresh run's first (weight deltas)", worst, 1e-4);
  assert.ok(worst < 1e-4); // bias corrections computed on the GPU; at AdamW step 3: 38 % off
  assert.equal((await g.readLossScale())![3], 1, "one AdamW update applied");
  // two finite steps, then the scale doubles
  for (let s = 3; s < 5; s++) g.queueStep(s, [testBatch(cfg.vocabSize, s)], hyper);
  const ok = await g.readMetrics(2, 5);
  assert.deepEqual(ok.map((m) => [m[3], m[4]]), [[1, 1], [1, 1], [1, 2]]);
  assert.equal((await g.readLossScale())![3], 3);
  g.destroy();
});

/** A Qwen2 shape whose q/k/v weights and biases all align to 256 bytes: every projection fuses. */
const QWEN2_FUSABLE = {
  ...FAMILIES["qwen2"],
  hidden_size: 128,
  intermediate_size: 64,
  num_attention_heads: 8,
  num_key_value_heads: 4,
};

gpuTest("graph: a Qwen2 with every projection fused matches the reference", async (gpu) => {
  await checkFamily(gpu, "qwen2-fused", QWEN2_FUSABLE, F32_TOL);
});

gpuTest(
  "graph: fused q/k/v and gate/up projections give the unfused loss and gradients",
  async (gpu) => {
    const cfg = parseModelConfig(QWEN2_FUSABLE, "fuse/config.json");
    const weights = randomWeights(cfg, 23);
    const mb = testBatch(cfg.vocabSize, 4);
    const hyper = { lr: 0, beta1: 0.5, beta2: 0.9, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 };
    const before = { ...matmulTuning(gpu) };
    // one dispatch per GEMM (matmul_vec's uniform windows may cut a GEMM into several)
    setMatmulTuning(gpu, { vecWindows: "off" });
    const run = async (fuse: boolean) => {
      const g = new LlamaGraph(gpu, cfg, { tokens: 16, fuse });
      g.upload(weights);
      g.queueStep(0, [mb], hyper);
      const out = {
        loss: (await g.readMetrics(0, 1))[0][0],
        grads: await g.download("m"),
        weights: await g.download("weights"),
        gemms: g.forwardBackward.filter((d) => d.kernel.name.startsWith("matmul")).length,
      };
      g.destroy();
      return out;
    };
    const [fused, plain] = [await run(true), await run(false)];
    setMatmulTuning(gpu, before);
    // per layer: q/k/v 3 → 1 GEMM forward, dW, dX and bias grad; gate/up 2 → 1 forward, dW, dX
    assert.equal(plain.gemms - fused.gemms, (4 * 2 + 3) * cfg.numLayers);
    assert.ok(
      Math.abs(fused.loss - plain.loss) / plain.loss < 1e-6,
      `${fused.loss} vs ${plain.loss}`,
    );
    let worst = 0;
    for (const [name, gp] of plain.grads) {
      const floor = 1e-2 * gp.reduce((m, x) => Math.max(m, Math.abs(x)), 0) || 1e-30;
      worst = Math.max(worst, maxRelErr(fused.grads.get(name)!, gp, floor));
      assert.deepEqual(fused.weights.get(name), plain.weights.get(name), `${name} read back`);
    }
    // dn sums the projections' products in one K loop instead of several: f32 rounding, carried
    // back through the layers (7e-5 on lavapipe); the graph-vs-reference tolerance
    report("fused vs unfused projection gradients (floor 1% of max)", worst, 1e-3);
    assert.ok(worst < 1e-3);
  },
);

gpuTest("graph: activation recomputation gives the same loss and gradients", async (gpu) => {
  const cfg = parseModelConfig(FAMILIES["qwen2"], "recompute/config.json");
  const weights = randomWeights(cfg, 13);
  const mb = testBatch(cfg.vocabSize, 9);
  const hyper = { lr: 0, beta1: 0.5, beta2: 0.9, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 };
  const grads: Map<string, Float32Array>[] = [];
  const losses: number[] = [];
  for (const recompute of [false, true]) {
    const g = new LlamaGraph(gpu, cfg, { tokens: 16, recompute });
    g.upload(weights);
    g.queueStep(0, [mb], hyper);
    losses.push((await g.readMetrics(0, 1))[0][0]);
    grads.push(await g.download("m"));
    g.destroy();
  }
  assert.equal(losses[1], losses[0]);
  for (const [name, x] of grads[0]) assert.deepEqual(grads[1].get(name), x, name);
});

for (const family of ["llama-gqa", "llama-tied"]) {
  gpuTest(
    `graph: ${family} with embedding and head sharded across bindings matches the reference`,
    async (gpu) => {
      const cfg = parseModelConfig(FAMILIES[family], `${family}-sharded/config.json`);
      const weights = randomWeights(cfg, 17);
      const mb = testBatch(cfg.vocabSize, 4);
      const ref = referenceForwardBackward(cfg, weights, {
        ids: Int32Array.from(mb.ids),
        labels: mb.labels,
        pos: mb.pos,
        seqStart: mb.seqStart,
        seqEnd: mb.seqEnd,
      });
      // 16 rows of 16 floats per binding: V = 37 becomes shards of 16, 16 and 5 rows.
      const graph = new LlamaGraph(gpu, cfg, { tokens: 16, maxBindingBytes: 16 * 16 * 4 });
      const pieces = graph.pieces.get("model.embed_tokens.weight")!;
      assert.deepEqual(pieces.map((p) => p.rows), [16, 16, 5]);
      graph.upload(weights);
      assert.deepEqual(
        await graph.download(),
        weights,
        "upload/download round-trips through shards",
      );
      graph.queueStep(0, [mb], {
        lr: 0,
        beta1: 0.5,
        beta2: 0.9,
        eps: 1e-8,
        weightDecay: 0,
        maxGradNorm: 0,
      });
      const [metrics] = await graph.readMetrics(0, 1);
      const lossErr = Math.abs(metrics[0] - ref.lossSum) / Math.abs(ref.lossSum);
      assert.ok(lossErr < 1e-5, `loss ${metrics[0]} vs ${ref.lossSum}`);
      const m = await graph.download("m");
      let worst = 0;
      for (const [name, g] of ref.grads) {
        const got = m.get(name)!.map((x) => x / 0.5 * mb.lossTokens);
        let gmax = 0;
        for (const x of g) gmax = Math.max(gmax, Math.abs(x));
        worst = Math.max(worst, maxRelErr(got, g, Math.max(1e-2 * gmax, 1e-6)));
      }
      report(`${family} sharded: loss ${lossErr.toExponential(2)}, gradients`, worst, 1e-3);
      assert.ok(worst < 1e-3);
      graph.destroy();
    },
  );
}

Deno.test("graph: boundSegments cuts padding into maxSample pieces and refuses longer samples", () => {
  const mb = testBatch(37, 2, 40); // samples of 5, 1 and 7 tokens, then 27 of padding
  assert.equal(boundSegments(mb, 30), mb, "nothing to cut");
  const b = boundSegments(mb, 8);
  assert.deepEqual(Array.from(b.seqStart.subarray(0, 13)), Array.from(mb.seqStart.subarray(0, 13)));
  assert.deepEqual(Array.from(b.seqEnd.subarray(0, 13)), Array.from(mb.seqEnd.subarray(0, 13)));
  for (let t = 13; t < 40; t++) {
    const start = 13 + Math.floor((t - 13) / 8) * 8;
    assert.equal(b.seqStart[t], start, `seqStart[${t}]`);
    assert.equal(b.seqEnd[t], Math.min(40, start + 8), `seqEnd[${t}]`);
  }
  assert.throws(() => boundSegments(mb, 6), /token 6 has 7 tokens, more than the 6/);
});

gpuTest("graph: maxSampleTokens changes no bit of the loss or gradients", async (gpu) => {
  const cfg = parseModelConfig(FAMILIES["llama-gqa"], "max-sample/config.json");
  const weights = randomWeights(cfg, 21);
  const mb = testBatch(cfg.vocabSize, 5, 40);
  const hyper = { lr: 0, beta1: 0.5, beta2: 0.9, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 };
  const outs: Float32Array[][] = [];
  for (const maxSampleTokens of [undefined, 8]) {
    const g = new LlamaGraph(gpu, cfg, { tokens: 40, maxSampleTokens });
    g.upload(weights);
    g.queueStep(0, [mb], hyper);
    const loss = Float32Array.of((await g.readMetrics(0, 1))[0][0]);
    outs.push([loss, ...(await g.download("m")).values()]);
    g.destroy();
  }
  assertSameBits(outs[1], outs[0], "maxSampleTokens 8 vs none");
  const g = new LlamaGraph(gpu, cfg, { tokens: 40, maxSampleTokens: 6 });
  assert.throws(() => g.setBatch(mb), /more than the 6 the graph was built for/);
  g.destroy();
});
