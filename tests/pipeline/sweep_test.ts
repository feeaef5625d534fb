// Sweeps: spec parsing, grid and shards, the probe score, ranking, Spearman, compute saved, gather; a sharded sweep end to end.
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadPipelineConfig } from "../../pipeline/config.ts";
import { UserError } from "../../pipeline/errors.ts";
import {
  buildSweepFile,
  expandGrid,
  gatherSweep,
  isResultFile,
  loadSweepSpec,
  memberName,
  type MemberRecord,
  parseShard,
  prepareBase,
  probeFigures,
  probeScores,
  probeWindow,
  rankDescending,
  readSweepFile,
  shardMembers,
  spearman,
  SPEC_FILE,
  specJson,
  type SweepSpec,
  tokensThrough,
  zScores,
} from "../../pipeline/sweep.ts";
import { SWEEP_OPTIONS, sweepCommand } from "../../pipeline/sweep_cmd.ts";
import type { MetricsRecord } from "../../pipeline/trainer.ts";
import { gpuTest } from "../helpers.ts";

const TOL = 1e-12;

function rec(step: number, samples: number, loss: number, gradnorm: number): MetricsRecord {
  return {
    step,
    epoch: 0,
    phase: "stacked",
    samples_seen: samples,
    tokens_seen: samples * 10,
    loss,
    gradnorm,
    lr: 1e-3,
    num_loss_counted_tokens: 50,
    batch_size: 16,
    micro_batches: 1,
    tokens_per_s: 1000,
    elapsed_s: step,
  };
}

const BASE = `
run: { name: base, seed: 7 }
model:
  init:
    preset: tiny
    set: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1 }
data:
  max_seq_len: 128
  synthetic: { kind: quickstart, seed: 3, knowledge_facts: 6, skills_samples: 24, heldout: 6 }
train:
  effective_batch_size: 8
  micro_batch_tokens: 512
  lr: 3e-3
  epochs: 1
  metrics_every: 4
eval:
  metrics:
    - { name: heldout_loss, kind: loss, data: "\${run_dir}/data/synthetic/heldout_chat.jsonl" }
server: { enabled: false }
`;

async function writeSweep(dir: string, sweep: string): Promise<string> {
  await Deno.writeTextFile(join(dir, "base.yaml"), BASE);
  const file = join(dir, "sweep.yaml");
  await Deno.writeTextFile(file, sweep);
  return file;
}

Deno.test("sweep: grid expansion, member names, shards", () => {
  const g = expandGrid({ "train.lr": [1e-3, 1e-2], "train.effective_batch_size": [16, 64, 128] });
  assert.equal(g.length, 6);
  assert.deepEqual(g[0], { "train.lr": 1e-3, "train.effective_batch_size": 16 });
  assert.deepEqual(
    g[1],
    { "train.lr": 1e-3, "train.effective_batch_size": 64 },
    "last key fastest",
  );
  assert.equal(memberName(g[0]), "lr-0.001_bs-16");
  assert.equal(
    memberName({ "train.schedule": "cosine", "train.warmup_steps": 25 }),
    "schedule-cosine_warmup-25",
  );
  assert.equal(memberName({ "data.phases[0].train": ["a b.jsonl"] }), "train-_a_b.jsonl_");
  assert.equal(memberName({}), "base");
  assert.deepEqual(parseShard("1/3"), { i: 1, n: 3 });
  for (const bad of ["3/3", "1/0", "a/2", "1"]) assert.throws(() => parseShard(bad), UserError);
  const members = Array.from({ length: 7 }, (_, index) => ({ index }));
  const parts = [0, 1, 2].map((i) => shardMembers(members, { i, n: 3 }).map((m) => m.index));
  assert.deepEqual(parts, [[0, 3, 6], [1, 4], [2, 5]]);
});

Deno.test("sweep: a sweep file is validated with every problem's line and key", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ft-sweep-spec-" });
  const file = await writeSweep(
    dir,
    `sweep:
  pipeline: base.yaml
  grid:
    train.lr: [1e-3, 1e-2]
  members:
    - name: cos
      set: { train: { schedule: cosine } }
    - set: { train.lr: 1e-3 }
  probe: { samples: 32 }
  keep: 2
  tables:
    - title: lr
      members: [lr-0.001, { member: cos, label: Cosine }]
`,
  );
  const spec = await loadSweepSpec(file, ["train.epochs=2"]);
  assert.equal(spec.name, "sweep");
  assert.equal(spec.embedded, false);
  assert.deepEqual(spec.members.map((m) => m.name), ["lr-0.001", "lr-0.01", "cos", "lr-0.001-2"]);
  assert.deepEqual(
    spec.members[2].set,
    { "train.schedule": "cosine" },
    "nested maps are flattened",
  );
  assert.deepEqual(spec.set, { "train.epochs": 2 });
  assert.equal(spec.keep_k, 2);
  assert.deepEqual(spec.tables[0].rows, [{ member: "lr-0.001", label: "lr-0.001" }, {
    member: "cos",
    label: "Cosine",
  }]);
  assert.equal((await loadSweepSpec(file, ["train.epochs=2"])).hash, spec.hash, "stable hash");
  assert.notEqual((await loadSweepSpec(file, ["train.epochs=3"])).hash, spec.hash);
  // Every member config loads (this is what the command checks before running anything).
  for (const m of spec.members) {
    const cfg = await loadPipelineConfig(spec.base, [
      ...Object.entries({ ...spec.set, ...m.set }).map(([k, v]) => `${k}=${JSON.stringify(v)}`),
    ]);
    assert.equal(cfg.train.epochs, 2);
  }

  await Deno.writeTextFile(
    file,
    `sweep:
  pipeline: base.yaml
  grid: { train.lr: [] }
  probe: { samples: -1, weight: 2 }
  keep: some
  colour: red
  tables:
    - title: t
      members: [nobody]
`,
  );
  const err = await loadSweepSpec(file).then(() => null, (e) => e as UserError);
  assert.ok(err instanceof UserError);
  const lines = err.message.split("\n").slice(1).map((l) => l.trim().replace(file, "sweep.yaml"));
  // In file order; unknown keys point at the key, bad values at the value.
  assert.deepEqual(lines, [
    "sweep.yaml:3:21: sweep.grid.train.lr: expected a non-empty list",
    "sweep.yaml:4:21: sweep.probe.samples: expected a positive integer (training samples)",
    "sweep.yaml:4:25: sweep.probe.weight: unknown key; one of samples, loss_weight, gradnorm_weight",
    'sweep.yaml:5:9: sweep.keep: expected a positive integer (top k) or "all"',
    "sweep.yaml:6:3: sweep.colour: unknown key; one of name, pipeline, set, grid, members, probe, " +
    "keep, validate, final_metric, tables",
    'sweep.yaml:9:17: sweep.tables[0].members[0]: no member named "nobody"',
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("sweep: a pipeline with a sweep block becomes a base with absolute paths", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ft-sweep-emb-" });
  await Deno.mkdir(join(dir, "d"));
  await Deno.writeTextFile(join(dir, "d", "a.jsonl"), "");
  const file = join(dir, "p.yaml");
  await Deno.writeTextFile(
    file,
    `model: { init: { preset: tiny } }
data:
  phases: [{ name: a, train: [d/a.jsonl] }]
train: { effective_batch_size: 8 }
sweep:
  members: [{ name: one }]
  probe: { samples: 8 }
`,
  );
  const spec = await loadSweepSpec(file);
  assert.equal(spec.embedded, true);
  await prepareBase(spec, join(dir, "out"));
  assert.equal(spec.base, join(dir, "out", "base.yaml"));
  const text = await Deno.readTextFile(spec.base);
  assert.doesNotMatch(text, /sweep:/);
  const cfg = await loadPipelineConfig(spec.base, ["run.dir=/tmp/x"]);
  assert.deepEqual(cfg.data.phases[0].train, [join(dir, "d", "a.jsonl")]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("sweep: probe window, z-scores and the probe score formula", () => {
  const recs = [rec(0, 16, 6, 1), rec(1, 32, 5, 2), rec(2, 48, 4, 3)];
  assert.equal(probeWindow(recs, 20).length, 2, "up to the first step reaching the budget");
  assert.equal(probeWindow(recs, 32).length, 2);
  assert.equal(probeWindow(recs, 1000).length, 3);
  const f = probeFigures(recs, 20)!;
  assert.equal(f.samples, 32);
  assert.equal(f.complete, true);
  assert.ok(Math.abs(f.mean_log_loss - (Math.log(6) + Math.log(5)) / 2) < TOL);
  assert.ok(Math.abs(f.mean_log_gradnorm - Math.log(2) / 2) < TOL);
  assert.equal(probeFigures(recs, 1000)!.complete, false);
  // tokens_seen restarts at each phase of a phased run: the totals add up.
  const phased = [rec(0, 16, 6, 1), rec(1, 32, 5, 1), rec(0, 48, 5, 1), rec(1, 64, 4, 1)];
  phased[2].phase = phased[3].phase = "skills";
  phased[2].tokens_seen = 100;
  phased[3].tokens_seen = 250;
  assert.equal(tokensThrough(phased), 320 + 250);
  assert.equal(tokensThrough(recs), 480);
  assert.equal(probeFigures([], 10), null);

  const z = zScores([1, 2, 3]);
  assert.ok(Math.abs(z[0] + Math.sqrt(1.5)) < TOL && z[1] === 0);
  assert.deepEqual(zScores([4, 4]), [0, 0]);
  // Members: (L, G) = (ln6, 0), (ln5, ln2), (ln6, ln2), and one without a probe. By hand:
  // z(L) = (1/√2, −√2, 1/√2), z(G) = (−√2, 1/√2, 1/√2) → score = zL − zG = (3/√2, −3/√2, 0).
  const fig = (l: number, g: number) => probeFigures([rec(0, 16, l, g), rec(1, 32, l, g)], 32);
  const s = probeScores([fig(6, 1), fig(5, 2), fig(6, 2), null], {
    loss_weight: 1,
    gradnorm_weight: 1,
  });
  const want = [3 / Math.SQRT2, -3 / Math.SQRT2, 0];
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(s[i]! - want[i]) < 1e-12, `${s[i]} vs ${want[i]}`);
  assert.equal(s[3], null);
  const onlyLoss = probeScores([fig(6, 1), fig(5, 2)], { loss_weight: 2, gradnorm_weight: 0 });
  assert.ok(
    Math.abs(onlyLoss[0]! - 2) < 1e-12 && Math.abs(onlyLoss[1]! + 2) < 1e-12,
    `${onlyLoss}`,
  );
  console.log(`  probe scores ${s.map((x) => x?.toFixed(4)).join(", ")} (by hand: ±2.1213, 0)`);
});

Deno.test("sweep: ranks and Spearman correlation (ties as average ranks)", () => {
  assert.deepEqual(rankDescending([0.5, null, 2, 0.5]), [2, 4, 1, 3]);
  assert.equal(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 1);
  assert.equal(spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1);
  // No ties: ρ = 1 − 6Σd²/(n(n²−1)); ranks (1..5) vs (2,1,4,3,5): Σd² = 4 → 1 − 24/120 = 0.8.
  assert.ok(Math.abs(spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])! - 0.8) < TOL);
  // Ties: b ranks (1, 2, 3.5, 5, 3.5); Pearson of the ranks by hand = 0.8207826816681233.
  const rho = spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])!;
  assert.ok(Math.abs(rho - 4 / Math.sqrt(10 * 2.375)) < TOL, `${rho}`);
  assert.equal(spearman([1], [2]), null);
  assert.equal(spearman([1, 2, 3], [5, 5, 5]), null);
});

/** A fabricated member dir: record, metrics and (optionally) selection.json with an mc score. */
async function fakeMember(
  sweepDir: string,
  spec: SweepSpec,
  name: string,
  o: {
    status: MemberRecord["status"];
    stage?: MemberRecord["stage"];
    loss: number;
    grad: number;
    steps: number;
    mc?: number;
    heavy?: boolean;
  },
): Promise<void> {
  const dir = join(sweepDir, "members", name);
  await Deno.mkdir(dir, { recursive: true });
  const m = spec.members.find((x) => x.name === name)!;
  const record: MemberRecord = {
    version: 1,
    name,
    index: m.index,
    sweep_hash: spec.hash,
    stage: o.stage ?? "probe",
    status: o.status,
    budget: { steps: 10, samples: 160, tokens: 1600 },
    seconds: { probe: 1, continue: o.status === "finished" ? 2 : 0 },
    error: o.status === "failed" ? "non-finite loss at step 1" : null,
    time: "t",
  };
  await Deno.writeTextFile(join(dir, "sweep_member.json"), JSON.stringify(record));
  const recs = Array.from({ length: o.steps }, (_, i) => rec(i, 16 * (i + 1), o.loss, o.grad));
  await Deno.writeTextFile(
    join(dir, "metrics.jsonl"),
    recs.map((r) => JSON.stringify(r)).join("\n") + "\n",
  );
  await Deno.writeTextFile(
    join(dir, "config.resolved.yaml"),
    "eval:\n  metrics: [{ name: mc, kind: mc, data: x }]\n  primary: mc\ntrain: { lr: 0.001, stop_at_samples: 32 }\n",
  );
  if (o.mc !== undefined) {
    const ck = {
      dir: `${dir}/checkpoints/stacked/samples_160`,
      step: 10,
      samples: 160,
      scores: { mc: o.mc },
    };
    await Deno.writeTextFile(
      join(dir, "selection.json"),
      JSON.stringify({
        version: 1,
        latest: "stacked",
        phases: {
          stacked: {
            phase: "stacked",
            primary: "mc",
            higher_is_better: true,
            checkpoints: [ck],
            best: ck,
            samples_to_best: 160,
          },
        },
      }),
    );
    await Deno.mkdir(join(dir, "checkpoints/stacked/samples_160"), { recursive: true });
    await Deno.writeTextFile(join(dir, "checkpoints/stacked/samples_160/eval.json"), "{}");
    await Deno.writeTextFile(join(dir, "checkpoints/stacked/index.json"), JSON.stringify([ck]));
  }
  if (o.heavy) {
    await Deno.mkdir(join(dir, "state/stacked"), { recursive: true });
    await Deno.writeTextFile(join(dir, "state/stacked/weights.safetensors"), "W");
    await Deno.mkdir(join(dir, "checkpoints/stacked/samples_160"), { recursive: true });
    await Deno.writeTextFile(join(dir, "checkpoints/stacked/samples_160/model.safetensors"), "W");
  }
}

async function fakeSpec(dir: string, extra: string): Promise<SweepSpec> {
  const file = await writeSweep(
    dir,
    `sweep:
  name: fake
  pipeline: base.yaml
  members: [{ name: m0 }, { name: m1 }, { name: m2 }, { name: m3 }]
  probe: { samples: 32 }
${extra}`,
  );
  return await loadSweepSpec(file);
}

Deno.test("sweep: sweep.json ranks, decides, scores finals and counts the compute saved", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ft-sweep-build-" });
  const spec = await fakeSpec(dir, "  keep: 2\n");
  const out = join(dir, "out");
  // Probe scores (as in the formula test): m0 3/√2, m1 −3/√2, m2 0; m3 failed after one step.
  await fakeMember(out, spec, "m0", {
    status: "finished",
    stage: "continue",
    loss: 6,
    grad: 1,
    steps: 10,
    mc: 0.6,
  });
  await fakeMember(out, spec, "m1", { status: "probed", loss: 5, grad: 2, steps: 2 });
  await fakeMember(out, spec, "m2", {
    status: "finished",
    stage: "continue",
    loss: 6,
    grad: 2,
    steps: 10,
    mc: 0.4,
  });
  const early = await buildSweepFile(spec, out);
  assert.equal(early.state, "probing", "m3 has no probe yet");
  assert.ok(early.members.every((m) => m.decision === null));
  await fakeMember(out, spec, "m3", { status: "failed", loss: 6, grad: 1, steps: 1 });
  const s = await buildSweepFile(spec, out);
  assert.equal(s.state, "complete");
  assert.deepEqual(s.members.map((m) => m.rank), [1, 3, 2, 4]);
  assert.deepEqual(s.members.map((m) => m.decision), ["continue", "stop", "continue", "stop"]);
  assert.ok(Math.abs(s.members[0].probe!.score! - 3 / Math.SQRT2) < TOL);
  assert.equal(s.members[3].probe!.score, null, "a failed, incomplete probe has no score");
  assert.deepEqual(s.members.map((m) => m.final?.score ?? null), [0.6, null, 0.4, null]);
  assert.deepEqual(s.members.map((m) => m.final_rank), [1, null, 2, null]);
  assert.equal(s.members[0].config?.stop_at_samples, undefined, "the probe's pause is not config");
  // Compute: budgets 4 × 160; ran 160 + 32 + 160 + 16; saved: m1's 160 − 32 (m3 failed).
  assert.equal(s.compute.samples_all, 640);
  assert.equal(s.compute.samples_run, 368);
  assert.ok(Math.abs(s.compute.saved_fraction - 128 / 640) < TOL);
  assert.equal(s.compute.validate, false);
  assert.equal(s.validation.n, 2);
  assert.equal(s.validation.spearman, 1);
  assert.equal(s.validation.best_kept, null, "m1 never finished: the full ranking is unknown");
  await Deno.remove(dir, { recursive: true });

  // Validate mode: every member ran to the end; m1 ends at 0.5.
  const vdir = await Deno.makeTempDir({ prefix: "ft-sweep-validate-" });
  const vspec = await fakeSpec(vdir, "  keep: 1\n  validate: true\n");
  const vout = join(vdir, "out");
  await fakeMember(vout, vspec, "m0", { status: "finished", loss: 6, grad: 1, steps: 10, mc: 0.6 });
  await fakeMember(vout, vspec, "m1", { status: "finished", loss: 5, grad: 2, steps: 10, mc: 0.5 });
  await fakeMember(vout, vspec, "m2", { status: "finished", loss: 6, grad: 2, steps: 10, mc: 0.4 });
  await fakeMember(vout, vspec, "m3", { status: "failed", loss: 6, grad: 1, steps: 1 });
  const v = await buildSweepFile(vspec, vout);
  assert.equal(v.state, "complete");
  // Scores (2.12, −2.12, 0) vs mc (0.6, 0.5, 0.4): rank differences (0, −1, 1) → 1 − 6·2/24 = 0.5.
  assert.ok(Math.abs(v.validation.spearman! - 0.5) < TOL, `${v.validation.spearman}`);
  // ln loss (ln6, ln5, ln6) has ties: ranks (2.5, 1, 2.5) vs (3, 2, 1) → 0.
  assert.ok(Math.abs(v.validation.spearman_loss!) < TOL);
  // −ln grad (0, −ln2, −ln2): ranks (3, 1.5, 1.5) vs (3, 2, 1) → 1.5/√3.
  assert.ok(Math.abs(v.validation.spearman_gradnorm! - 1.5 / Math.sqrt(3)) < TOL);
  assert.equal(v.validation.best_final, "m0");
  assert.equal(v.validation.best_final_probe_rank, 1);
  assert.equal(v.validation.best_kept, true);
  assert.equal(v.compute.validate, true);
  // Would have saved (keep 1): m1's and m2's 160 − 32 of 640.
  assert.ok(Math.abs(v.compute.saved_fraction - 256 / 640) < TOL);
  console.log(
    `  validate: spearman ${v.validation.spearman}, loss ${v.validation.spearman_loss}, ` +
      `gradnorm ${
        v.validation.spearman_gradnorm?.toFixed(4)
      }; would save ${v.compute.saved_fraction}`,
  );
  await Deno.remove(vdir, { recursive: true });
});

Deno.test("sweep: gather keeps each member's most advanced copy and only result files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ft-sweep-gather-" });
  const spec = await fakeSpec(dir, "  keep: 2\n");
  const a = join(dir, "a"), b = join(dir, "b"), c = join(dir, "c");
  for (const d of [a, b]) {
    await Deno.mkdir(d, { recursive: true });
    await Deno.writeTextFile(join(d, SPEC_FILE), JSON.stringify(specJson(spec)));
  }
  await fakeMember(a, spec, "m0", {
    status: "finished",
    stage: "continue",
    loss: 6,
    grad: 1,
    steps: 10,
    mc: 0.6,
    heavy: true,
  });
  await fakeMember(b, spec, "m0", { status: "probed", loss: 6, grad: 1, steps: 2, heavy: true });
  await fakeMember(b, spec, "m1", { status: "probed", loss: 5, grad: 2, steps: 2 });
  await fakeMember(a, spec, "m2", { status: "probed", loss: 6, grad: 2, steps: 2 });
  await fakeMember(b, spec, "m3", { status: "failed", loss: 6, grad: 1, steps: 1 });
  const s = await gatherSweep([a, b], c, null);
  assert.deepEqual(s.members.map((m) => m.status), ["finished", "probed", "probed", "failed"]);
  assert.equal(s.members[0].ran?.steps, 10, "the continued copy of m0 won");
  assert.equal(s.state, "ranked", "m2 is to continue");
  const has = (p: string) => Deno.stat(join(c, "members", p)).then(() => true, () => false);
  assert.ok(await has("m0/checkpoints/stacked/samples_160/eval.json"));
  assert.ok(await has("m0/checkpoints/stacked/index.json"));
  assert.ok(!(await has("m0/state")), "no optimizer state");
  assert.ok(!(await has("m0/checkpoints/stacked/samples_160/model.safetensors")), "no weights");
  assert.ok(await has("m0/report.md"));
  assert.ok((await readSweepFile(c))?.members.length === 4);
  assert.ok(isResultFile("metrics.jsonl") && !isResultFile("state/stacked/state.json"));
  // A different sweep cannot be gathered with this one.
  const other = await fakeSpec(join(dir), "  keep: 3\n");
  await Deno.writeTextFile(join(b, SPEC_FILE), JSON.stringify(specJson(other)));
  await assert.rejects(() => gatherSweep([a, b], join(dir, "d"), null), /different sweeps/);
  await Deno.remove(dir, { recursive: true });
});

async function sweep(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: SWEEP_OPTIONS,
    allowPositionals: true,
    strict: true,
  });
  return await sweepCommand(values as Record<string, unknown>, positionals);
}

gpuTest("sweep: sharded in two, gathered, continued, gathered again (lavapipe)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ft-sweep-e2e-" });
  const file = await writeSweep(
    dir,
    `sweep:
  name: e2e
  pipeline: base.yaml
  grid:
    train.lr: [1e-3, 3e-3, 3e-2]
  probe: { samples: 16 }
  keep: 2
  tables:
    - title: lr
      members: [lr-0.001, lr-0.003, lr-0.03]
`,
  );
  const [a, b, c, d] = ["a", "b", "c", "d"].map((x) => join(dir, x));
  const t0 = performance.now();
  assert.equal(await sweep([file, "--out", a, "--shard", "0/2"]), 0);
  assert.equal(await sweep([file, "--out", b, "--shard", "1/2"]), 0);
  assert.equal(await sweep(["--gather", a, b, "--out", c]), 0);
  const ranked = (await readSweepFile(c))!;
  assert.equal(ranked.state, "ranked");
  assert.deepEqual(ranked.members.map((m) => m.status), ["probed", "probed", "probed"]);
  assert.equal(ranked.members.filter((m) => m.decision === "continue").length, 2);
  // Each shard continues its own members after receiving the ranking.
  for (const x of [a, b]) await Deno.copyFile(join(c, "sweep.json"), join(x, "sweep.json"));
  assert.equal(await sweep([file, "--out", a, "--shard", "0/2"]), 0);
  assert.equal(await sweep([file, "--out", b, "--shard", "1/2"]), 0);
  assert.equal(await sweep(["--gather", a, b, "--out", d]), 0);
  const s = (await readSweepFile(d))!;
  const seconds = (performance.now() - t0) / 1000;
  assert.equal(s.state, "complete");
  for (const m of s.members) {
    const before = ranked.members.find((x) => x.name === m.name)!;
    assert.equal(m.decision, before.decision, "the decisions do not change after continuing");
    assert.ok(m.budget && m.budget.samples > m.probe!.samples, "the probe is shorter than the run");
    if (m.decision === "continue") {
      assert.equal(m.status, "finished");
      assert.equal(m.ran!.samples, m.budget!.samples, "continued to the full budget");
      assert.ok(m.final && Number.isFinite(m.final.score));
      assert.ok(["selection", "train_loss"].includes(m.final!.source));
    } else {
      assert.equal(m.status, "probed");
      assert.equal(m.ran!.samples, m.probe!.samples, "stopped right after the probe");
      assert.ok(m.probe!.samples >= 16);
      assert.equal(m.final, null);
    }
  }
  // The probe scores equal the formula applied to the gathered metrics.
  const { readMetrics } = await import("../../pipeline/report.ts");
  const figs = await Promise.all(
    s.members.map(async (m) => probeFigures(await readMetrics(join(d, "members", m.name)), 16)),
  );
  const want = probeScores(figs, s.spec.probe);
  s.members.forEach((m, i) => assert.ok(Math.abs(m.probe!.score! - want[i]!) < TOL));
  const stopped = s.members.find((m) => m.decision === "stop")!;
  const total = s.members.reduce((x, m) => x + m.budget!.samples, 0);
  const saved = (stopped.budget!.samples - stopped.probe!.samples) / total;
  assert.ok(Math.abs(s.compute.saved_fraction - saved) < TOL);
  assert.equal(s.validation.n, 2);
  assert.ok(s.validation.spearman === 1 || s.validation.spearman === -1);
  // Reports with plots, for the sweep and each member.
  const md = await Deno.readTextFile(join(d, "report.md"));
  assert.match(md, /Spearman ρ = -?1\.000/);
  for (const p of ["plots/loss.svg", "plots/gradnorm.svg", "plots/lr.svg"]) {
    const svg = await Deno.readTextFile(join(d, p));
    assert.equal((svg.match(/<path d=/g) ?? []).length, 3, `${p}: one line per member`);
  }
  for (const m of s.members) {
    assert.match(await Deno.readTextFile(join(d, "members", m.name, "report.md")), /## Training/);
  }
  assert.ok(
    !(await Deno.stat(join(d, "members", s.members[0].name, "state")).then(
      () => true,
      () => false,
    )),
  );
  console.log(
    `  ${
      s.members.map((m) => `${m.name}: score ${m.probe!.score!.toFixed(3)} → ${m.decision}`).join(
        "; ",
      )
    }; ` +
      `saved ${(100 * s.compute.saved_fraction).toFixed(1)}% of ${total} samples; ` +
      `spearman ${s.validation.spearman} (n=2); ${seconds.toFixed(1)} s`,
  );
  await Deno.remove(dir, { recursive: true });
});
