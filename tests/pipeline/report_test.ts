// Run reports: final score from selection.json / eval events / train loss, report.md tables, SVG plots on disk.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  finalScore,
  fmt,
  markdownTable,
  peakOf,
  readCheckpointScores,
  readMetrics,
  trainLossScore,
  writeRunReport,
} from "../../pipeline/report.ts";
import type { MetricsRecord } from "../../pipeline/trainer.ts";

/** A metrics record with the fields a report reads. */
export function rec(
  step: number,
  phase: string,
  samples: number,
  loss: number,
  gradnorm: number,
  lr = 1e-3,
): MetricsRecord {
  return {
    step,
    epoch: 0,
    phase,
    samples_seen: samples,
    tokens_seen: samples * 10,
    loss,
    gradnorm,
    lr,
    num_loss_counted_tokens: 100,
    batch_size: 16,
    micro_batches: 1,
    tokens_per_s: 1000,
    elapsed_s: step * 0.1,
  };
}

const CONFIG = `
run: { name: fake, dir: /x, seed: 1 }
preset: null
model: { path: null, init: { preset: tiny } }
train: { strategy: phased, effective_batch_size: 16, lr: 0.001, schedule: constant, warmup_steps: 0, epochs: 1 }
eval:
  metrics:
    - { name: heldout_loss, kind: loss, data: /x/h.jsonl }
    - { name: mc, kind: mc, data: /x/mc.jsonl }
  primary: mc
`;

/** Two phases of 10 steps, 16 samples a step; losses fall, the last 5 of skills are known. */
async function fakeRun(withSelection: boolean): Promise<{ dir: string; recs: MetricsRecord[] }> {
  const dir = await Deno.makeTempDir({ prefix: "ft-report-" });
  const recs: MetricsRecord[] = [];
  for (let i = 0; i < 20; i++) {
    recs.push(
      rec(i % 10, i < 10 ? "knowledge" : "skills", 16 * (i + 1), 5 - 0.2 * i, 1 + 0.01 * i),
    );
  }
  // A torn last line (a killed writer) must be skipped.
  await Deno.writeTextFile(
    join(dir, "metrics.jsonl"),
    recs.map((r) => JSON.stringify(r)).join("\n") + '\n{"step": 3, "lo',
  );
  await Deno.writeTextFile(join(dir, "config.resolved.yaml"), CONFIG);
  await Deno.writeTextFile(
    join(dir, "events.jsonl"),
    JSON.stringify({ type: "run", id: 0, time: "t", state: "finished" }) + "\n",
  );
  if (withSelection) {
    const ck = (phase: string, samples: number, hl: number, mc: number) => ({
      dir: `${dir}/checkpoints/${phase}/samples_${samples}`,
      step: samples / 16,
      samples,
      scores: { heldout_loss: hl, mc },
    });
    const k = [ck("knowledge", 80, 3.0, 0.30), ck("knowledge", 160, 2.5, 0.40)];
    // mc peaks at 0.55 twice (240 and 320 samples): the earlier one counts; loss is best at 320.
    const s = [ck("skills", 240, 2.2, 0.55), ck("skills", 320, 2.0, 0.55)];
    const phase = (name: string, list: typeof k) => ({
      phase: name,
      primary: "mc",
      higher_is_better: true,
      checkpoints: list,
      best: list[0],
      samples_to_best: list[0].samples,
      best_path: "",
      best_mode: "copy",
      time: "t",
    });
    await Deno.writeTextFile(
      join(dir, "selection.json"),
      JSON.stringify({
        version: 1,
        latest: "skills",
        phases: { knowledge: phase("knowledge", k), skills: phase("skills", s) },
      }),
    );
  }
  return { dir, recs };
}

Deno.test("report: final score is the primary metric's peak over every checkpoint (selection.json)", async () => {
  const { dir } = await fakeRun(true);
  const f = (await finalScore(dir))!;
  assert.equal(f.source, "selection");
  assert.equal(f.metric, "mc");
  assert.equal(f.higher_is_better, true);
  assert.equal(f.score, 0.55);
  assert.equal(f.samples_to_peak, 240, "the earliest checkpoint with the peak");
  assert.deepEqual(f.metrics.heldout_loss, { score: 2.0, samples: 320, higher_is_better: false });
  const byLoss = (await finalScore(dir, "heldout_loss"))!;
  assert.equal(byLoss.score, 2.0);
  assert.equal(byLoss.higher_is_better, false);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("report: without checkpoint scores the final score is the mean train loss of the last 5 steps", async () => {
  const { dir, recs } = await fakeRun(false);
  assert.equal((await readMetrics(dir)).length, 20, "the torn line is skipped");
  const f = (await finalScore(dir))!;
  assert.equal(f.source, "train_loss");
  const want = recs.slice(-5).reduce((a, r) => a + r.loss, 0) / 5;
  assert.ok(Math.abs(f.score - want) < 1e-12, `${f.score} vs ${want}`);
  // Losses only fall, so the lowest trailing mean is the last one.
  assert.equal(f.samples_to_peak, recs.at(-1)!.samples_seen);
  // A minimum in the middle.
  const bowl = [3, 2, 1, 1, 1, 1, 1, 2, 3, 4].map((l, i) => rec(i, "p", 10 * (i + 1), l, 1));
  const t = trainLossScore(bowl)!;
  assert.equal(t.samples, 70, "trailing 5-step mean is lowest over steps 2..6");
  assert.equal(t.score, (1 + 1 + 2 + 3 + 4) / 5);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("report: eval events stand in for selection.json; peakOf breaks ties by samples", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ft-report-ev-" });
  await Deno.writeTextFile(join(dir, "config.resolved.yaml"), CONFIG);
  const ev = (samples: number, mc: number) =>
    JSON.stringify({
      type: "eval",
      id: samples,
      time: "t",
      checkpoint: `${dir}/c${samples}`,
      phase: "stacked",
      samples,
      scores: { mc },
    });
  await Deno.writeTextFile(
    join(dir, "events.jsonl"),
    [ev(64, 0.3), ev(32, 0.5), ev(96, 0.5)].join("\n") + "\n",
  );
  const { source, checkpoints } = await readCheckpointScores(dir);
  assert.equal(source, "eval_events");
  assert.deepEqual(checkpoints.map((c) => c.samples), [32, 64, 96]);
  assert.deepEqual(peakOf(checkpoints, "mc", true), {
    score: 0.5,
    samples: 32,
    higher_is_better: true,
  });
  assert.deepEqual(peakOf(checkpoints, "mc", false), {
    score: 0.3,
    samples: 64,
    higher_is_better: false,
  });
  assert.equal(peakOf(checkpoints, "nope", true), null);
  const f = (await finalScore(dir))!;
  assert.equal(f.source, "eval_events");
  assert.equal(f.samples_to_peak, 32);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("report: report.md has the phase table, checkpoint scores and plots that exist", async () => {
  const { dir } = await fakeRun(true);
  const path = await writeRunReport(dir, {
    markers: [{ x: 100, label: "probe" }],
    preface: "PREFACE",
  });
  const md = await Deno.readTextFile(path);
  assert.match(md, /^# Run report: fake/);
  assert.match(md, /state \*\*finished\*\*/);
  assert.match(md, /PREFACE/);
  // Phase rows: steps, samples seen, first and last loss.
  assert.match(md, /\| knowledge \| 10 \| 160 \| 1,600 \| 5 \| 3\.2 \|/);
  assert.match(md, /\| skills \| 10 \| 320 \| 3,200 \| 3 \| 1\.2 \|/);
  assert.match(md, /\| train\.strategy \| phased \|/);
  // The best mc (0.55 at 240) is bold, the later tie is not.
  assert.match(md, /\| skills \| samples_240 \| 240 \| 2\.2 \| \*\*0\.55\*\* \|/);
  assert.match(md, /\| skills \| samples_320 \| 320 \| \*\*2\*\* \| 0\.55 \|/);
  assert.match(md, /\*\*mc\*\* 0\.55 \(higher is better\), first reached after 240 samples/);
  const plots = [...md.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1]);
  assert.deepEqual(plots, [
    "plots/loss.svg",
    "plots/gradnorm.svg",
    "plots/lr.svg",
    "plots/score_heldout_loss.svg",
    "plots/score_mc.svg",
  ]);
  for (const p of plots) {
    const svg = await Deno.readTextFile(join(dir, p));
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.match(svg, /<\/svg>\n$/);
  }
  const loss = await Deno.readTextFile(join(dir, "plots/loss.svg"));
  assert.equal((loss.match(/<path d=/g) ?? []).length, 2, "one line per phase");
  assert.match(loss, />probe</);
  console.log(`  report.md: ${md.length} chars, ${plots.length} plots`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("report: markdown helpers escape pipes and format numbers", () => {
  assert.equal(
    markdownTable(["a", "b|c"], [[1, "x|y"]], ["l", "r"]),
    "| a | b\\|c |\n| --- | ---: |\n| 1 | x\\|y |\n",
  );
  assert.equal(fmt(null), "-");
  assert.equal(fmt(NaN), "-");
  assert.equal(fmt(1.23456789), "1.235");
  assert.equal(fmt(0.0001234), "1.23e-4");
});
