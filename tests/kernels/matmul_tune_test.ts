// Matmul autotune: every recorded GEMM is timed once, cached per adapter, and the tuned graph is exact.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  buildWithTunedMatmul,
  gemmCandidates,
  tuneSegments,
  VEC_CANDIDATES,
  WIDE_CANDIDATES,
} from "../../kernels/matmul_tune.ts";
import { matmulTuning, setMatmulTuning } from "../../kernels/matmul.ts";
import {
  ATTENTION_GPU_SHAPES,
  attentionTunedAcc,
  attentionTunedShapes,
  setAttentionTunedAcc,
  setAttentionTunedForms,
  setAttentionTunedShapes,
  setAttentionVariant,
} from "../../kernels/attention.ts";
import { parseModelConfig } from "../../model/config.ts";
import { LlamaGraph, packMicroBatch } from "../../model/llama_graph.ts";
import { gpuTest, maxRelErr, report } from "../helpers.ts";
import { FAMILIES, randomWeights } from "../reference/tiny_models.ts";

/**
 * The tiny GQA Llama with seeded weights, and the loss of one lr-0 step on a graph: `ids` as one
 * sample whose first label is ignored, or packed as two samples split at `split` (the second one
 * with every label).
 */
function tinyCase(seed: number, ids: number[], split = ids.length) {
  const cfg = parseModelConfig(FAMILIES["llama-gqa"], "llama-gqa/config.json");
  const weights = randomWeights(cfg, seed);
  const row = ids.map((x) => x % cfg.vocabSize);
  const a = row.slice(0, split), b = row.slice(split);
  const samples = [{ ids: a, labels: a.map((x, i) => (i ? x : -100)) }];
  if (b.length) samples.push({ ids: b, labels: b });
  const mb = packMicroBatch(samples, 16, 0);
  const hyper = { lr: 0, beta1: 0.5, beta2: 0.9, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 };
  const lossOf = async (g: LlamaGraph) => {
    g.upload(weights);
    g.queueStep(0, [mb], hyper);
    const [m] = await g.readMetrics(0, 1);
    return m[0];
  };
  return { cfg, lossOf };
}

Deno.test("matmul tune: candidates cover both tiles and only K-splits of ≥ 256", () => {
  assert.deepEqual(gemmCandidates(200), [
    { tile: 64, slices: 1, vec4: false },
    { tile: 128, slices: 1, vec4: false },
  ]);
  assert.equal(gemmCandidates(4096).length, 8);
  assert.equal(gemmCandidates(4096, true).length, 16);
  assert.deepEqual(gemmCandidates(1024).map((c) => c.slices), [1, 2, 4, 1, 2, 4]);
});

gpuTest(
  "matmul tune: a graph's GEMMs are timed, cached, reused, and the loss is unchanged",
  async (gpu) => {
    const before = { ...matmulTuning(gpu) };
    const dir = await Deno.makeTempDir({ prefix: "matmul_tune_" });
    const cacheFile = join(dir, "tune.json");
    try {
      const { cfg, lossOf } = tinyCase(7, [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], 6);
      // reference loss with the adapter's default kernels
      const plain = new LlamaGraph(gpu, cfg, { tokens: 16 });
      const ref = await lossOf(plain);
      plain.destroy();

      setMatmulTuning(gpu, { variant: "gpu", choices: new Map() });
      let builds = 0;
      const build = () => {
        builds++;
        return new LlamaGraph(gpu, cfg, { tokens: 16 });
      };
      const first = await buildWithTunedMatmul(gpu, build, { cacheFile, force: true, reps: 1 });
      assert.ok(first.report.shapes >= 4, `shapes ${first.report.shapes}`);
      assert.equal(first.report.measured, first.report.shapes);
      // a changed GEMM or (on GPU adapters, where attention_gpu is timed too) attention grid rebuilds
      const changed = first.report.changed + (first.report.attention?.changed ?? 0);
      assert.equal(builds, changed > 0 ? 2 : 1);
      const cached = JSON.parse(await Deno.readTextFile(cacheFile));
      const sig = Object.keys(cached.adapters)[0];
      assert.equal(Object.keys(cached.adapters[sig].choices).length, first.report.shapes);
      const tuned = await lossOf(first.graph);
      first.graph.destroy();
      const err = Math.abs(tuned - ref) / Math.abs(ref);
      report(
        `tuned graph loss ${tuned.toFixed(6)} vs default kernels ${ref.toFixed(6)}`,
        err,
        1e-5,
      );
      assert.ok(err < 1e-5);

      // a fresh process's view: choices only from the cache, nothing timed, one build
      setMatmulTuning(gpu, { choices: new Map() });
      builds = 0;
      const second = await buildWithTunedMatmul(gpu, build, { cacheFile, force: true, reps: 1 });
      assert.equal(second.report.measured, 0);
      assert.equal(builds, 1);
      assert.deepEqual(
        [...matmulTuning(gpu).choices!.keys()].sort(),
        Object.keys(cached.adapters[sig].choices).sort(),
      );
      second.graph.destroy();
    } finally {
      setMatmulTuning(gpu, before);
      await Deno.remove(dir, { recursive: true });
    }
  },
);

gpuTest(
  "matmul tune: on CPU adapters matmul_wide / matmul_vec blocks are timed per shape, no bit changes",
  async (gpu) => {
    const before = { ...matmulTuning(gpu) };
    const dir = await Deno.makeTempDir({ prefix: "matmul_tune_cpu_" });
    const cacheFile = join(dir, "tune.json");
    try {
      const { cfg, lossOf } = tinyCase(9, [2, 7, 1, 8, 2, 8, 1, 8, 2, 8]);
      // the fixed default block sizes
      setMatmulTuning(gpu, { variant: "wide", wideWg: 8, wideRows: 16, wideCols: 16 });
      const plain = new LlamaGraph(gpu, cfg, { tokens: 16 });
      const ref = await lossOf(plain);
      plain.destroy();
      setMatmulTuning(gpu, { variant: "cpu", wideChoices: new Map() });
      const build = () => new LlamaGraph(gpu, cfg, { tokens: 16 });
      const first = await buildWithTunedMatmul(gpu, build, { cacheFile, force: true, reps: 1 });
      assert.ok(first.report.shapes >= 4);
      assert.equal(first.report.measured, first.report.shapes);
      assert.equal(matmulTuning(gpu).wideChoices!.size, first.report.shapes);
      for (const w of matmulTuning(gpu).wideChoices!.values()) {
        assert.ok(
          [...WIDE_CANDIDATES, ...VEC_CANDIDATES].some((c) =>
            c.wg === w.wg && c.rows === w.rows && c.cols === w.cols && !!c.vec === !!w.vec
          ),
        );
      }
      const tuned = await lossOf(first.graph);
      first.graph.destroy();
      report(`wide-tuned loss ${tuned} vs fixed blocks ${ref}`, Math.abs(tuned - ref), 0);
      // every block size of both kernels sums each output in the same order (this model's buffers
      // are too small for uniform windows, so K is never cut)
      assert.equal(tuned, ref);
      setMatmulTuning(gpu, { wideChoices: new Map() });
      const second = await buildWithTunedMatmul(gpu, build, { cacheFile, force: true, reps: 1 });
      assert.equal(second.report.measured, 0);
      assert.equal(matmulTuning(gpu).wideChoices!.size, first.report.shapes);
      second.graph.destroy();
    } finally {
      setMatmulTuning(gpu, before);
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("matmul tune: attention grids are timed on samples of the longest length", () => {
  const { starts, ends } = tuneSegments(10, 4);
  assert.deepEqual([...starts], [0, 0, 0, 0, 4, 4, 4, 4, 8, 8]);
  assert.deepEqual([...ends], [4, 4, 4, 4, 8, 8, 8, 8, 10, 10]);
  const one = tuneSegments(3, 3);
  assert.deepEqual([[...one.starts], [...one.ends]], [[0, 0, 0], [3, 3, 3]]);
});

gpuTest("matmul tune: a graph's longest sample keys its attention grids", async (gpu) => {
  const before = { ...matmulTuning(gpu) };
  setAttentionVariant(gpu, "gpu");
  setAttentionTunedShapes(gpu, new Map());
  try {
    const { cfg } = tinyCase(11, [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9]);
    const build = () => new LlamaGraph(gpu, cfg, { tokens: 16, maxSampleTokens: 8 });
    const { graph, report: r } = await buildWithTunedMatmul(gpu, build, {
      cacheFile: null,
      force: true,
      reps: 1,
    });
    graph.destroy();
    const keys = Object.keys(r.attention!.grids).sort();
    assert.deepEqual(keys.map((k) => k.split(" ")[0]), ["dkv", "dq", "forward"]);
    for (const k of keys) assert.ok(k.endsWith(" S8"), k);
  } finally {
    setAttentionVariant(gpu, null);
    setAttentionTunedShapes(gpu, new Map());
    setMatmulTuning(gpu, before);
  }
});

gpuTest(
  "matmul tune: attention_gpu thread grids are timed per launch, cached, and the loss holds",
  async (gpu) => {
    const before = { ...matmulTuning(gpu) };
    const dir = await Deno.makeTempDir({ prefix: "attention_tune_" });
    const cacheFile = join(dir, "tune.json");
    setAttentionVariant(gpu, "gpu"); // the GPU kernels, whatever the adapter
    setAttentionTunedShapes(gpu, new Map());
    try {
      const { cfg, lossOf } = tinyCase(11, [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9]);
      const plain = new LlamaGraph(gpu, cfg, { tokens: 16 }); // first-fit grids
      const ref = await lossOf(plain);
      plain.destroy();
      const build = () => new LlamaGraph(gpu, cfg, { tokens: 16 });
      const first = await buildWithTunedMatmul(gpu, build, { cacheFile, force: true, reps: 1 });
      // one shape, three entry points (forward, dQ, dK/dV), shared by both layers, and the form
      // (flash or band) of its forward and backward
      const a = first.report.attention!;
      assert.deepEqual([a.shapes, a.measured], [3, 5]);
      assert.deepEqual(Object.keys(a.forms).map((k) => k.split(" ")[0]).sort(), [
        "backward",
        "forward",
      ]);
      const grids = attentionTunedShapes(gpu);
      assert.equal(grids.size, 3);
      assert.deepEqual(Object.entries(a.grids).sort(), [...grids].sort());
      for (const [key, [tr, tc]] of grids) {
        const entry = key.split(" ")[0] as keyof typeof ATTENTION_GPU_SHAPES;
        assert.ok(ATTENTION_GPU_SHAPES[entry].some(([a, b]) => a === tr && b === tc), key);
      }
      const cached = JSON.parse(await Deno.readTextFile(cacheFile));
      const sig = Object.keys(cached.adapters)[0];
      assert.equal(Object.keys(cached.adapters[sig].attention.choices).length, 3);
      const cachedForms = cached.adapters[sig].attention.forms;
      assert.deepEqual(Object.keys(cachedForms).sort(), Object.keys(a.forms).sort());
      for (const [k, f] of Object.entries(cachedForms) as [string, { ms: object }][]) {
        // every form timed: the backward of this 2-head group also split per q head
        const want = k.startsWith("backward") ? ["band", "band-split", "flash"] : ["band", "flash"];
        assert.deepEqual(Object.keys(f.ms).sort(), want, k);
        for (const ms of Object.values(f.ms)) assert.ok(ms > 0, JSON.stringify(f));
      }
      assert.deepEqual(Object.keys(a.acc).sort(), [...grids.keys()].sort()); // a form per launch
      const tuned = await lossOf(first.graph);
      first.graph.destroy();
      const err = Math.abs(tuned - ref) / Math.abs(ref);
      report(`attention-tuned loss ${tuned} vs first-fit grids ${ref}`, err, 1e-5);
      assert.ok(err < 1e-5);
      // from the cache: nothing timed
      setAttentionTunedShapes(gpu, new Map());
      setAttentionTunedForms(gpu, new Map());
      const second = await buildWithTunedMatmul(gpu, build, { cacheFile, force: true, reps: 1 });
      assert.equal(second.report.attention?.measured, 0);
      assert.deepEqual([...attentionTunedShapes(gpu)].sort(), [...grids].sort());
      await lossOf(second.graph);
      const unsplit = await second.graph.download("m");
      second.graph.destroy();
      // a cached dK/dV split (2 parts of the 2-head group) comes back and gives the same gradients
      const choices = cached.adapters[sig].attention.choices;
      const dkvKey = Object.keys(choices).find((k) => k.startsWith("dkv "))!;
      choices[dkvKey].parts = 2;
      for (const c of Object.values(choices)) (c as { acc?: string }).acc = "fixed"; // and its form
      for (const f of Object.values(cachedForms)) (f as { form: string }).form = "flash";
      await Deno.writeTextFile(cacheFile, JSON.stringify(cached));
      setAttentionTunedShapes(gpu, new Map());
      setAttentionTunedAcc(gpu, new Map());
      setAttentionTunedForms(gpu, new Map());
      const third = await buildWithTunedMatmul(gpu, build, { cacheFile, force: true, reps: 1 });
      assert.equal(third.report.attention?.measured, 0);
      assert.equal(attentionTunedShapes(gpu).get(dkvKey)?.[2], 2);
      assert.deepEqual(new Set(attentionTunedAcc(gpu).values()), new Set(["fixed"]));
      assert.deepEqual(new Set(Object.values(third.report.attention!.acc)), new Set(["fixed"]));
      const names = third.graph.forwardBackward.map((d) => d.kernel.name);
      assert.ok(names.some((n) => n.includes("attention_gpu_dkv_reduce")), "split dK/dV ran");
      assert.ok(Math.abs((await lossOf(third.graph)) - ref) / Math.abs(ref) < 1e-5);
      const split = await third.graph.download("m");
      third.graph.destroy();
      let worst = 0;
      for (const [name, m] of unsplit) {
        const floor = 1e-2 * m.reduce((a, x) => Math.max(a, Math.abs(x)), 0) || 1e-30;
        worst = Math.max(worst, maxRelErr(split.get(name)!, m, floor));
      }
      // f32 sums in another order (per part, then across parts), carried through the backward
      report("gradients with dK/dV split in 2 vs unsplit (floor 1% of max)", worst, 1e-4);
      assert.ok(worst < 1e-4);
      // cached band forms come back (the backward's split per q head): both passes run
      // attention_band, and the loss holds
      for (const [k, f] of Object.entries(cachedForms)) {
        (f as { form: string }).form = k.startsWith("backward") ? "band-split" : "band";
      }
      await Deno.writeTextFile(cacheFile, JSON.stringify(cached));
      setAttentionTunedForms(gpu, new Map());
      const fourth = await buildWithTunedMatmul(gpu, build, { cacheFile, force: true, reps: 1 });
      assert.equal(fourth.report.attention?.measured, 0);
      assert.deepEqual(
        new Set(Object.values(fourth.report.attention!.forms)),
        new Set(["band", "band-split"]),
      );
      const bandNames = fourth.graph.forwardBackward.map((d) => d.kernel.name);
      for (const e of ["attention_band_pv", "attention_band_dkv", "attention_gpu_dkv_reduce"]) {
        assert.ok(bandNames.some((n) => n.includes(e)), `${e} ran`);
      }
      const flash = /attention_gpu_(forward|backward)/;
      assert.ok(!bandNames.some((n) => flash.test(n)), "no flash kernel ran");
      const banded = await lossOf(fourth.graph);
      const bandM = await fourth.graph.download("m");
      fourth.graph.destroy();
      const bandErr = Math.abs(banded - ref) / Math.abs(ref);
      report(`band-form loss ${banded} vs flash ${ref}`, bandErr, 1e-5);
      assert.ok(bandErr < 1e-5);
      let worstBand = 0, differ = 0;
      for (const [name, m] of unsplit) {
        const floor = 1e-2 * m.reduce((a, x) => Math.max(a, Math.abs(x)), 0) || 1e-30;
        const b = bandM.get(name)!;
        worstBand = Math.max(worstBand, maxRelErr(b, m, floor));
        differ += m.filter((x, i) => x !== b[i]).length;
      }
      report(`gradients, band vs flash form (floor 1% of max; ${differ} differ)`, worstBand, 1e-4);
      assert.ok(worstBand < 1e-4);
      // band-split kept for the backward alone: the tune keeps the bands it reads
      for (const [k, f] of Object.entries(cachedForms)) {
        (f as { form: string }).form = k.startsWith("backward") ? "band-split" : "flash";
      }
      await Deno.writeTextFile(cacheFile, JSON.stringify(cached));
      setAttentionTunedForms(gpu, new Map());
      const fifth = await buildWithTunedMatmul(gpu, build, { cacheFile, force: true, reps: 1 });
      const mixed = await lossOf(fifth.graph);
      fifth.graph.destroy();
      assert.ok(Math.abs(mixed - ref) / Math.abs(ref) < 1e-5, `${mixed} vs ${ref}`);
    } finally {
      setAttentionVariant(gpu, null);
      setAttentionTunedShapes(gpu, new Map());
      setAttentionTunedAcc(gpu, new Map());
      setAttentionTunedForms(gpu, new Map());
      setMatmulTuning(gpu, before);
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("matmul tune: FINETUNE_AUTOTUNE=0 builds once and times nothing", async () => {
  const prev = Deno.env.get("FINETUNE_AUTOTUNE");
  Deno.env.set("FINETUNE_AUTOTUNE", "0");
  try {
    let builds = 0;
    const fake = { summary: {}, hasTimestamps: true } as unknown as Parameters<
      typeof buildWithTunedMatmul
    >[0];
    const r = await buildWithTunedMatmul(fake, () => {
      builds++;
      return { destroy() {} };
    });
    assert.equal(builds, 1);
    assert.equal(r.report.skipped, "FINETUNE_AUTOTUNE=0");
    assert.equal(r.report.measured, 0);
  } finally {
    if (prev === undefined) Deno.env.delete("FINETUNE_AUTOTUNE");
    else Deno.env.set("FINETUNE_AUTOTUNE", prev);
  }
});
