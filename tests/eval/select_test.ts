// Checkpoint selection: best by the primary metric (ties → fewer samples), selection.json, best links, cache, stage.
import assert from "node:assert/strict";
import { join } from "node:path";
import type { MetricResult } from "../../eval/evaluator.ts";
import {
  pickBest,
  selectCheckpoint,
  type SelectionFile,
  selectStage,
} from "../../pipeline/select.ts";
import { runStages, type StageContext } from "../../pipeline/stage.ts";
import { loadHfModel, saveHfModel } from "../../model/hf_dir.ts";
import { gpuTest, randomArray, sharedPath } from "../helpers.ts";

const METRICS = [
  {
    name: "heldout_loss",
    kind: "loss" as const,
    data: "",
    shots: 0,
    limit: null,
    max_tokens: 16,
    mc_score: "letter" as const,
  },
  {
    name: "mc",
    kind: "mc" as const,
    data: "",
    shots: 0,
    limit: null,
    max_tokens: 16,
    mc_score: "letter" as const,
  },
];

function result(name: string, kind: "loss" | "mc", score: number): MetricResult {
  return {
    name,
    kind,
    data: "",
    score,
    higherIsBetter: kind !== "loss",
    items: 1,
    seconds: 0,
    tokensPerS: 0,
    details: {
      kind: "loss",
      loss: score,
      perplexity: Math.exp(score),
      lossTokens: 1,
      samples: 1,
      truncated: 0,
      skipped: 0,
    },
  };
}

/** A run dir with three checkpoints of phase `p1` and a data file for the metrics. */
async function fakeRun(): Promise<{ runDir: string; data: string; dirs: string[] }> {
  const runDir = await Deno.makeTempDir({ prefix: "select_test_" });
  const data = join(runDir, "heldout.jsonl");
  await Deno.writeTextFile(data, '{"text": "x"}\n');
  const dirs: string[] = [];
  const index = [];
  for (const [i, samples] of [10, 20, 30].entries()) {
    const dir = join(runDir, "checkpoints", "p1", `samples_${samples}`);
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(join(dir, "config.json"), `{"which": ${samples}}`);
    dirs.push(dir);
    index.push({ dir, phase: "p1", step: i + 1, samples });
  }
  // Out of order on purpose: selection sorts by samples.
  await Deno.writeTextFile(
    join(runDir, "checkpoints", "p1", "index.json"),
    JSON.stringify(index.reverse()),
  );
  return { runDir, data, dirs };
}

const LOSS: Record<number, number> = { 10: 2.0, 20: 1.5, 30: 1.5 };
const ACC: Record<number, number> = { 10: 0.25, 20: 0.5, 30: 0.75 };
const samplesOf = (dir: string) => Number(dir.split("_").pop());
const scorer = (calls: string[]) => (dir: string) => {
  calls.push(dir);
  const s = samplesOf(dir);
  return Promise.resolve({
    heldout_loss: result("heldout_loss", "loss", LOSS[s]),
    mc: result("mc", "mc", ACC[s]),
  });
};

Deno.test("select: pickBest follows the metric's direction; ties go to fewer samples", () => {
  const c = (samples: number, v: number) => ({
    dir: `d${samples}`,
    step: 0,
    samples,
    scores: { m: v },
  });
  assert.equal(pickBest([c(30, 1), c(10, 2), c(20, 1)], "m", false).samples, 20);
  assert.equal(pickBest([c(30, 1), c(10, 2), c(20, 1)], "m", true).samples, 10);
  assert.equal(pickBest([c(30, 5), c(10, NaN), c(20, 5)], "m", true).samples, 20);
  assert.throws(() => pickBest([c(1, NaN)], "m", true), /finite/);
});

Deno.test("select: loss primary picks the earliest of the tied best, writes selection.json and links", async () => {
  const { runDir, data, dirs } = await fakeRun();
  const metrics = METRICS.map((m) => ({ ...m, data }));
  const events: { type: string; [k: string]: unknown }[] = [];
  const calls: string[] = [];
  const sel = await selectCheckpoint({
    runDir,
    phase: "p1",
    metrics: metrics.map((m) => ({ ...m, maxTokens: m.max_tokens })),
    primary: "heldout_loss",
    score: scorer(calls),
    events: { emit: (e) => events.push(e) },
  });
  assert.equal(calls.length, 3);
  assert.equal(sel.best.dir, dirs[1]);
  assert.equal(sel.samples_to_best, 20);
  assert.equal(sel.higher_is_better, false);
  assert.deepEqual(sel.checkpoints.map((c) => c.samples), [10, 20, 30]);
  const file = JSON.parse(await Deno.readTextFile(join(runDir, "selection.json"))) as SelectionFile;
  assert.equal(file.latest, "p1");
  assert.deepEqual(file.phases.p1.best.scores, { heldout_loss: 1.5, mc: 0.5 });
  assert.deepEqual(file.phases.p1.checkpoints.map((c) => c.scores.heldout_loss), [2, 1.5, 1.5]);
  // best links resolve to the chosen checkpoint; best.json names it.
  for (const link of ["checkpoints/p1/best", "checkpoints/best"]) {
    assert.equal(await Deno.readTextFile(join(runDir, link, "config.json")), `{"which": 20}`);
  }
  assert.equal(sel.best_mode, "symlink");
  assert.equal(
    await Deno.realPath(join(runDir, "checkpoints/p1/best")),
    await Deno.realPath(dirs[1]),
  );
  const bj = JSON.parse(await Deno.readTextFile(join(runDir, "checkpoints/best.json")));
  assert.equal(bj.samples, 20);
  assert.equal(bj.score, 1.5);
  assert.deepEqual(events.map((e) => e.type), ["eval", "eval", "eval", "selection"]);

  // Re-selecting on accuracy reuses the cached scores (no scoring call) and moves the links.
  const sel2 = await selectCheckpoint({
    runDir,
    phase: "p1",
    metrics: metrics.map((m) => ({ ...m, maxTokens: m.max_tokens })),
    primary: "mc",
    score: () => Promise.reject(new Error("must use the cache")),
  });
  assert.equal(sel2.best.dir, dirs[2]);
  assert.equal(
    await Deno.readTextFile(join(runDir, "checkpoints/best/config.json")),
    `{"which": 30}`,
  );
  await Deno.remove(runDir, { recursive: true });
});

Deno.test("select: the stage runs once, is skipped on re-run, and re-runs when the data changes", async () => {
  const { runDir, data, dirs } = await fakeRun();
  const calls: string[] = [];
  const stage = selectStage<StageContext>("p1", () => ({
    eval: { metrics: METRICS.map((m) => ({ ...m, data })), primary: "mc" },
    score: scorer(calls),
  }));
  const ctx = (): StageContext => ({ runDir, events: { emit: () => {} } });
  const [r1] = await runStages([stage], ctx());
  assert.equal(r1.state, "done");
  assert.equal((r1.outputs as { best: string }).best, dirs[2]);
  const [r2] = await runStages([stage], ctx());
  assert.equal(r2.state, "skip");
  assert.equal(calls.length, 3);
  await Deno.writeTextFile(data, '{"text": "changed data"}\n');
  const [r3] = await runStages([stage], ctx());
  assert.equal(r3.state, "done");
  assert.equal(calls.length, 6, "changed data invalidates the per-checkpoint cache");
  await assert.rejects(
    () =>
      runStages(
        [selectStage<StageContext>("p1", () => ({ eval: { metrics: [], primary: null } }))],
        ctx(),
      ),
    /eval.metrics/,
  );
  await Deno.remove(runDir, { recursive: true });
});

const stories = sharedPath("models/stories260K");
if (stories) {
  gpuTest(
    "select: on the GPU, the pretrained checkpoint beats a damaged one on held-out loss",
    async (gpu) => {
      const runDir = await Deno.makeTempDir({ prefix: "select_gpu_test_" });
      const { config, tensors } = await loadHfModel(stories);
      // Checkpoint at 10 samples: noise added to every weight; at 20: the pretrained weights.
      const noisy = new Map<string, Float32Array>();
      let k = 0;
      for (const [name, t] of tensors) {
        const r = randomArray(t.length, ++k, 0.5);
        noisy.set(name, t.map((x, i) => x + r[i]));
      }
      const dirs = [
        join(runDir, "checkpoints/p/samples_10"),
        join(runDir, "checkpoints/p/samples_20"),
      ];
      await saveHfModel(dirs[0], { config, tensors: noisy, dtype: "f32", tokenizerFrom: stories });
      await saveHfModel(dirs[1], { config, tensors, dtype: "f32", tokenizerFrom: stories });
      const data = join(runDir, "heldout.jsonl");
      await Deno.writeTextFile(
        data,
        '{"text": "Once upon a time, there was a little girl named Lily."}\n' +
          '{"text": "She loved to play outside in the park with her ball."}\n',
      );
      const sel = await selectCheckpoint({
        runDir,
        phase: "p",
        metrics: [{ name: "loss", kind: "loss", data }],
        primary: "loss",
        checkpoints: [{ dir: dirs[0], step: 1, samples: 10 }, {
          dir: dirs[1],
          step: 2,
          samples: 20,
        }],
        gpu,
        evaluator: { tokens: 64 },
      });
      const [a, b] = sel.checkpoints.map((c) => c.scores.loss);
      console.log(`  loss: damaged ${a.toFixed(3)}, pretrained ${b.toFixed(3)}`);
      assert.ok(b < a);
      assert.equal(sel.best.dir, dirs[1]);
      assert.equal(sel.samples_to_best, 20);
      const best = await loadHfModel(join(runDir, "checkpoints/best"));
      assert.deepEqual(best.tensors.get("model.norm.weight"), tensors.get("model.norm.weight"));
      await Deno.remove(runDir, { recursive: true });
    },
  );
}
