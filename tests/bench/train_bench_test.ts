// `bench train` smoke test: one tiny step on stories260K; its loss against the f64 reference; FLOP count; PyTorch when present.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  benchTrain,
  cpuFmaBits,
  findTorchPython,
  LOSS_TOLERANCE,
  statedPeak,
  TRAIN_FLAGS,
  trainFlopsPerStep,
  trainOptionsFromFlags,
} from "../../bench/train.ts";
import { summaryRows } from "../../bench/summarize.ts";
import { parseModelConfig } from "../../model/config.ts";
import { loadHfModel } from "../../model/hf_dir.ts";
import { packMicroBatch } from "../../model/llama_graph.ts";
import { UserError } from "../../pipeline/errors.ts";
import { gpuTest, report, sharedPath } from "../helpers.ts";
import { referenceLoss } from "../reference/llama.ts";

Deno.test("trainFlopsPerStep: 6·(matmul weights)·tokens + causal attention, counted by hand", () => {
  const cfg = parseModelConfig({
    architectures: ["LlamaForCausalLM"],
    vocab_size: 10,
    hidden_size: 4,
    intermediate_size: 6,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    tie_word_embeddings: true,
  }, "test");
  // Per layer: q 4×4, k 4×2, v 4×2, o 4×4, gate/up/down 3·4×6 = 16+8+8+16+72 = 120; head 40.
  const B = 3, S = 5, matmul = 2 * 120 + 40;
  // Attention forward per row and layer: QKᵀ and PV over S(S+1)/2 pairs, 2 FLOPs, 2 heads × D 2.
  const attnFwd = 2 * (2 * 2 * 2 * (S * (S + 1)) / 2);
  assert.equal(trainFlopsPerStep(cfg, B, S), 6 * matmul * B * S + 3 * attnFwd * 2 * B);
});

Deno.test("statedPeak: the flag wins, known GPUs by name, unknown adapters give null", () => {
  assert.deepEqual(statedPeak("anything", 2), { gflops: 2000, source: "--peak-tflops" });
  assert.equal(statedPeak("NVIDIA H100 80GB HBM3")!.gflops, 67e3);
  assert.equal(statedPeak("NVIDIA H100 PCIe")!.gflops, 51e3);
  assert.equal(statedPeak("Some Future GPU"), null);
  const cpu = statedPeak("llvmpipe (LLVM 15.0.6, 256 bits)");
  if (cpu) assert.ok(cpu.gflops > 1 && /lavapipe/.test(cpu.source), cpu.source);
});

Deno.test("cpuFmaBits: 128-bit FMA units on AMD Zen 1, 256 bits otherwise", () => {
  const info = (vendor: string, family: number, model: number) =>
    `processor\t: 0\nvendor_id\t: ${vendor}\ncpu family\t: ${family}\nmodel\t\t: ${model}\n` +
    `model name\t: X\n`;
  assert.equal(cpuFmaBits(info("AuthenticAMD", 23, 1)), 128); // Zen (EPYC 7001)
  assert.equal(cpuFmaBits(info("AuthenticAMD", 23, 8)), 128); // Zen+
  assert.equal(cpuFmaBits(info("AuthenticAMD", 23, 49)), 256); // Zen 2 (EPYC 7002)
  assert.equal(cpuFmaBits(info("AuthenticAMD", 25, 1)), 256); // Zen 3
  assert.equal(cpuFmaBits(info("GenuineIntel", 6, 85)), 256);
  assert.equal(cpuFmaBits(""), 256);
});

Deno.test("trainOptionsFromFlags: defaults, and one clear error per bad flag", () => {
  const o = trainOptionsFromFlags({});
  assert.equal(o.model, "stories260k");
  assert.equal(o.steps, 5);
  assert.equal(o.warmup, 2);
  assert.equal(o.torch, undefined);
  const t = trainOptionsFromFlags({ "vs-torch": true, "torch-dtype": "fp32,bf16" });
  assert.deepEqual(t.torch?.dtypes, ["fp32", "bf16"]);
  assert.throws(() => trainOptionsFromFlags({ batch: "0" }), UserError);
  assert.throws(() => trainOptionsFromFlags({ data: "web" }), UserError);
  assert.throws(() => trainOptionsFromFlags({ "vs-torch": true, "torch-dtype": "fp8" }), UserError);
  assert.equal(o.rounds, 1);
  assert.equal(trainOptionsFromFlags({ rounds: "3" }).rounds, 3);
  assert.throws(() => trainOptionsFromFlags({ rounds: "0" }), UserError);
  assert.equal(o.matmulPrecision, "f32");
  assert.equal(trainOptionsFromFlags({ "matmul-precision": "f16" }).matmulPrecision, "f16");
  assert.throws(() => trainOptionsFromFlags({ "matmul-precision": "bf16" }), /f32 or f16/);
});

Deno.test("bench --help: every suite and every train flag, exit 0", async () => {
  const main = new URL("../../bench/main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "train", "--help"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const text = new TextDecoder().decode(out.stdout);
  for (const suite of ["kernels", "data", "train", "eval"]) {
    assert.match(text, new RegExp(`  ${suite} `));
  }
  for (const flag of ["filter", ...Object.keys(TRAIN_FLAGS)]) {
    assert.ok(text.includes(`--${flag}`), `--${flag} is described`);
  }
});

gpuTest(
  "bench train runs stories260K steps; step-0 loss matches the f64 reference",
  async (gpu) => {
    const shared = sharedPath();
    if (!shared) return;
    const work = await Deno.makeTempDir();
    try {
      const B = 2, S = 24;
      const opts = trainOptionsFromFlags({ batch: `${B}`, seq: `${S}`, steps: "1", warmup: "1" });
      const r = await benchTrain({ ...opts, workDir: work, gpu });
      const o = r.ours;
      assert.equal(r.model.tied, false); // stories260k is benched with an untied head
      assert.equal(r.data.tokensPerStep, B * S);
      assert.match(r.data.source, /GSM8K/);
      assert.equal(o.losses.length, 2);
      assert.ok(o.losses.every(Number.isFinite) && o.gradNorms.every(Number.isFinite));
      assert.ok(o.tokensPerS > 0 && o.stepMs > 0);
      assert.ok(o.dispatchesPerStep > 100, `${o.dispatchesPerStep} dispatches`);
      assert.ok(o.memory.peakBufferBytes >= 4 * 4 * r.model.params, "weights, grads, m, v");
      if (gpu.hasTimestamps) {
        assert.ok(o.breakdown && o.breakdown.kernels.length > 5);
        assert.ok(o.breakdown.ops.some((k) => k.name === "matmul"));
        const calls = o.breakdown.kernels.reduce((a, k) => a + k.callsPerStep, 0);
        assert.equal(calls + 1, o.dispatchesPerStep); // + the loss reset
      }
      // Step 0's loss (before any update) against the f64 reference on the same rows and weights.
      const rows = new Int32Array((await Deno.readFile(join(work, "rows.i32"))).buffer);
      const m = await loadHfModel(r.model.dir);
      const samples = [0, 1].map((i) => {
        const ids = rows.subarray(i * S, (i + 1) * S);
        return { ids, labels: ids };
      });
      const mb = packMicroBatch(samples, B * S);
      const ref = referenceLoss(m.config, m.tensors, {
        ids: new Int32Array(mb.ids),
        labels: mb.labels,
        pos: mb.pos,
        seqStart: mb.seqStart,
        seqEnd: mb.seqEnd,
      });
      assert.equal(ref.lossTokens, B * (S - 1));
      const want = ref.lossSum / ref.lossTokens;
      const err = Math.abs(o.losses[0] - want) / Math.abs(want);
      report("bench step-0 loss vs f64 reference", err, 1e-5);
      assert.ok(err <= 1e-5, `${o.losses[0]} vs ${want}`);

      // The GPU session's summary table row of this result.
      const [, , row] = summaryRows([{ file: "x_train.json", r }]);
      assert.match(row, /^\| x_train\.json \| stories260k \| f32 \(0 f16\) \| [\d,]+ \|/);
      // the attention forms column: each pass's form, as a GPU run's autotune reports them
      const attention = {
        shapes: 3,
        measured: 5,
        changed: 2,
        grids: {},
        acc: {},
        forms: {
          "forward form T2048 H8/4 D8": "band",
          "backward form T2048 H8/4 D8": "band-split",
        },
      } as const;
      const g = { ...r, ours: { ...r.ours, tune: { ...r.ours.tune, attention } } };
      const [, , gRow] = summaryRows([{ file: "g_train.json", r: g }]);
      assert.equal(gRow.split("|").map((c) => c.trim())[8], "forward band, backward band-split");

      // --gpu-kernels --matmul-precision f16: every GEMM of the pass in f16, losses still sane.
      if (gpu.hasF16) {
        const h = await benchTrain({
          ...opts,
          profile: false,
          workDir: work,
          gpu,
          gpuKernels: true,
          matmulPrecision: "f16",
        });
        assert.equal(h.matmulPrecision, "f16");
        assert.ok(h.ours.gemms.f16 > 0 && h.ours.gemms.total === 0, JSON.stringify(h.ours.gemms));
        const d = Math.abs(h.ours.losses[0] - o.losses[0]) / o.losses[0];
        report("bench step-0 loss, f16 GEMMs vs f32", d, 2e-3);
        assert.ok(d <= 2e-3);
      }

      // The same steps in PyTorch (plain fp32 Llama) when this machine has torch.
      const python = await findTorchPython();
      if (!python) {
        console.log("  (no python with torch: PyTorch comparison skipped)");
        return;
      }
      const withTorch = await benchTrain({
        ...opts,
        profile: false,
        workDir: work,
        gpu,
        torch: { python, device: "cpu", dtypes: ["fp32"], impls: ["plain"] },
        rounds: 2,
      });
      const t = withTorch.torch[0];
      report("bench losses vs PyTorch fp32", t.lossMaxRelDiff, LOSS_TOLERANCE);
      assert.equal(t.lossOk, true, `${withTorch.ours.losses} vs ${t.losses}`);
      // Two rounds: the reported figures are the medians (here the means) of both runs.
      const [a, b] = withTorch.ours.roundsTokensPerS;
      assert.equal(withTorch.rounds, 2);
      assert.equal(t.roundsTokensPerS.length, 2);
      const [ta, tb] = t.roundsTokensPerS;
      const atMeanStep = 2 / (1 / a + 1 / b); // tokens/s at the mean of the two step times
      assert.ok(Math.abs(withTorch.ours.tokensPerS - atMeanStep) <= 1e-9 * atMeanStep);
      const lo = Math.min(a / ta, b / tb), hi = Math.max(a / ta, b / tb);
      assert.ok(Math.abs(t.ratioRange[0] - lo) < 1e-12 && Math.abs(t.ratioRange[1] - hi) < 1e-12);
      assert.ok(t.ratio > 0 && Number.isFinite(t.ratio));
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
);
