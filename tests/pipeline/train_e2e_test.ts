// End-to-end training through `main.ts train`: kill -9 and resume, NaN stop, phased strategy.
import assert from "node:assert/strict";
import { gpuTest } from "../helpers.ts";
import { pathExists } from "../../pipeline/run_dir.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** A small pipeline: a 1-layer model, synthetic data, checkpoints every 64 samples. */
function pipelineYaml(extra = ""): string {
  return `
run: { name: e2e, seed: 7 }
model:
  init:
    preset: tiny
    set: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1 }
data:
  max_seq_len: 128
  synthetic: { kind: quickstart, seed: 3, knowledge_facts: 8, skills_samples: 64, heldout: 8 }
train:
  effective_batch_size: 16
  micro_batch_tokens: 512
  lr: 3e-3
  epochs: 2
  save_samples: 64
  metrics_every: 2
server: { enabled: false }
${extra}`;
}

async function writePipeline(dir: string, extra = ""): Promise<string> {
  const file = `${dir}/pipeline.yaml`;
  await Deno.writeTextFile(file, pipelineYaml(extra));
  return file;
}

function train(file: string, runDir: string, sets: string[] = []): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "train",
      file,
      "--run-dir",
      runDir,
      ...sets.flatMap((s) => ["--set", s]),
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
}

interface Rec {
  step: number;
  phase: string;
  loss: number;
  gradnorm: number;
  lr: number;
  samples_seen: number;
}

async function metrics(runDir: string): Promise<Rec[]> {
  const text = await Deno.readTextFile(`${runDir}/metrics.jsonl`);
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

gpuTest(
  "train: kill -9 mid-run, re-run resumes and the metrics equal an uninterrupted run",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "ft-resume-" });
    const file = await writePipeline(dir);
    // Uninterrupted reference run.
    const ref = await train(file, `${dir}/ref`).output();
    assert.equal(ref.code, 0, new TextDecoder().decode(ref.stderr));
    const want = await metrics(`${dir}/ref`);
    assert.ok(want.length >= 8, `only ${want.length} steps`);

    // Killed run: wait for the first full state, then SIGKILL.
    const p = train(file, `${dir}/killed`);
    const t0 = Date.now();
    while (!(await pathExists(`${dir}/killed/state/stacked/state.json`))) {
      if (Date.now() - t0 > 120_000) throw new Error("no state written within 120 s");
      await new Promise((r) => setTimeout(r, 50));
    }
    p.kill("SIGKILL");
    const killed = await p.output();
    assert.notEqual(killed.code, 0);
    const partial = await metrics(`${dir}/killed`);
    assert.ok(partial.length < want.length, "the run was killed before its end");

    const again = await train(file, `${dir}/killed`).output();
    const err = new TextDecoder().decode(again.stderr);
    assert.equal(again.code, 0, err);
    assert.match(new TextDecoder().decode(again.stdout), /resuming at step \d+/);
    const got = await metrics(`${dir}/killed`);
    assert.equal(got.length, want.length);
    for (let i = 0; i < want.length; i++) {
      // Bit-identical on the same adapter: same loss, gradient norm, lr and sample counts.
      assert.equal(got[i].step, want[i].step);
      assert.equal(got[i].loss, want[i].loss, `loss at step ${i}`);
      assert.equal(got[i].gradnorm, want[i].gradnorm, `gradnorm at step ${i}`);
      assert.equal(got[i].lr, want[i].lr);
      assert.equal(got[i].samples_seen, want[i].samples_seen);
    }
    console.log(`  resumed run: ${got.length} steps bit-identical to the uninterrupted run`);

    // Pausing with train.stop_at_samples (a sweep's probe) and continuing gives the same run too.
    const paused = await train(file, `${dir}/paused`, ["train.stop_at_samples=40"]).output();
    assert.equal(paused.code, 0, new TextDecoder().decode(paused.stderr));
    assert.match(new TextDecoder().decode(paused.stdout), /paused in phase 'stacked'/);
    const probe = await metrics(`${dir}/paused`);
    assert.ok(probe.length < want.length && probe.at(-1)!.samples_seen >= 40);
    const cont = await train(file, `${dir}/paused`).output();
    assert.equal(cont.code, 0, new TextDecoder().decode(cont.stderr));
    const full = await metrics(`${dir}/paused`);
    assert.deepEqual(
      full.map((r) => [r.loss, r.gradnorm, r.lr]),
      want.map((r) => [r.loss, r.gradnorm, r.lr]),
    );
    // Checkpoints are HF directories.
    const last = `${dir}/killed/checkpoints/stacked/samples_${want.at(-1)!.samples_seen}`;
    for (
      const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    ) {
      assert.ok(await pathExists(`${last}/${f}`), `${f} in the final checkpoint`);
    }
    await Deno.remove(dir, { recursive: true });
  },
);

gpuTest(
  "train: a non-finite loss stops the run naming the step and keeps the last good checkpoint",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "ft-nan-" });
    const file = await writePipeline(dir);
    // Warmup makes step 0 run at lr 0 (a good checkpoint after it), then the lr explodes.
    const out = await train(file, `${dir}/run`, [
      "train.lr=1e30",
      "train.max_grad_norm=0",
      "train.warmup_steps=4",
      "train.save_samples=8",
      "train.metrics_every=1",
    ]).output();
    const err = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, err);
    const m = err.match(/error: non-finite (loss|gradient) at step (\d+) of phase 'stacked'/);
    assert.ok(m, err);
    assert.ok(Number(m[2]) >= 1);
    assert.doesNotMatch(err, /^\s+at /m, "no stack trace for a training failure");
    const hint = err.match(/hint: last good checkpoint: (\S+)/);
    assert.ok(hint, err);
    assert.ok(
      await pathExists(`${hint[1]}/model.safetensors`),
      "the last good checkpoint is on disk",
    );
    const recs = await metrics(`${dir}/run`);
    assert.ok(recs.every((r) => Number.isFinite(r.loss)), "no non-finite record was written");
    await Deno.remove(dir, { recursive: true });
  },
);

gpuTest(
  "train: f16 matmuls' loss scale skips overflowing steps, halves, and survives a pause",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "ft-f16-" });
    const file = await writePipeline(dir);
    // 2^66 · gradients overflow the norm's squares: the first steps are skipped until S fits
    const sets = ["train.matmul_precision=f16", `train.loss_scale=${2 ** 66}`];
    const out = await train(file, `${dir}/ref`, [...sets, "train.metrics_every=1"]).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(stdout, /matmul precision f16 with dynamic loss scaling/);
    const recs = (await metrics(`${dir}/ref`)) as (Rec & {
      loss_scale: number;
      skipped?: boolean;
    })[];
    const skipped = recs.filter((r) => r.skipped);
    assert.ok(skipped.length >= 1 && recs[0].skipped, "the first step overflowed");
    assert.equal(recs[0].loss_scale, 2 ** 66);
    for (let i = 1; i < recs.length; i++) {
      const want = recs[i - 1].skipped ? recs[i - 1].loss_scale / 2 : recs[i - 1].loss_scale;
      assert.equal(recs[i].loss_scale, want, `scale of step ${i}`);
    }
    const good = recs.filter((r) => !r.skipped);
    assert.ok(good.length >= 4, `${good.length} finite steps`);
    assert.ok(good.every((r) => Number.isFinite(r.gradnorm) && Number.isFinite(r.loss)));
    assert.ok(good.at(-1)!.loss < recs[0].loss, "training went on and learned");
    // paused mid-run and continued: the loss scale state comes back with the rest
    const paused = await train(file, `${dir}/paused`, [...sets, "train.stop_at_samples=40"])
      .output();
    assert.equal(paused.code, 0, new TextDecoder().decode(paused.stderr));
    const cont = await train(file, `${dir}/paused`, sets).output();
    assert.equal(cont.code, 0, new TextDecoder().decode(cont.stderr));
    const full = (await metrics(`${dir}/paused`)) as typeof recs;
    assert.deepEqual(
      full.map((r) => [r.loss, r.gradnorm, r.loss_scale, r.skipped ?? false]),
      recs.map((r) => [r.loss, r.gradnorm, r.loss_scale, r.skipped ?? false]),
    );
    console.log(
      `  ${skipped.length} of ${recs.length} steps skipped (scale 2^66 → 2^${
        Math.log2(good[0].loss_scale)
      }); the paused and continued run matches`,
    );
    await Deno.remove(dir, { recursive: true });
  },
);

gpuTest(
  "train: a real run serves /progress, /events, /metrics, /metrics.jsonl and /healthz",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "ft-serve-" });
    const file = await writePipeline(dir);
    const p = train(file, `${dir}/run`, ["server.enabled=true", "server.port=0", "train.epochs=3"]);
    const reader = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "", url = "";
    while (!url) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`train ended before printing its URL:\n${out}`);
      out += value;
      url = out.match(/progress: (http:\/\/127\.0\.0\.1:\d+\/)/)?.[1] ?? "";
    }
    // Drain stdout in the background so the child never blocks on a full pipe.
    const drain = (async () => {
      while (!(await reader.read()).done) { /* keep reading */ }
    })();
    // Poll until training has produced metrics, checking every endpoint on the way.
    let snap: Record<string, unknown> = {};
    const t0 = Date.now();
    while (!(typeof snap.step === "number" && (snap.step as number) >= 1)) {
      if (Date.now() - t0 > 120_000) throw new Error(`no progress: ${JSON.stringify(snap)}`);
      const r = await fetch(`${url}progress`);
      assert.equal(r.status, 200);
      snap = await r.json();
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(snap.state, "running");
    assert.equal(snap.phase, "stacked");
    assert.equal(typeof snap.loss, "number");
    const health = await fetch(`${url}healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
    const prom = await (await fetch(`${url}metrics`)).text();
    assert.match(prom, /# TYPE \w+ gauge/);
    assert.match(prom, /loss\{[^}]*run="e2e"[^}]*\} [\d.e+-]+/);
    const jsonl = await (await fetch(`${url}metrics.jsonl?since=1`)).text();
    const recs = jsonl.trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(recs.length >= 1 && recs.every((r) => r.step >= 1));
    // SSE: the events of the run replay from the start; ids count up from 0.
    const ac = new AbortController();
    const sse = await fetch(`${url}events`, { signal: ac.signal });
    const sr = sse.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while ((text.match(/^id: /gm) ?? []).length < 3) text += (await sr.read()).value ?? "";
    const ids = [...text.matchAll(/^id: (\d+)/gm)].map((m) => Number(m[1]));
    assert.deepEqual(ids.slice(0, 3), [0, 1, 2]);
    ac.abort();
    await sr.cancel().catch(() => {});
    const end = await p.status;
    await drain;
    await p.stderr.cancel().catch(() => {});
    assert.equal(end.code, 0);
    await Deno.remove(dir, { recursive: true });
  },
);

gpuTest(
  "train: phased strategy trains phases in order, each from the previous phase's result",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "ft-phased-" });
    const file = await writePipeline(dir);
    const out = await train(file, `${dir}/run`, [
      "train.strategy=phased",
      "train.epochs=1",
      "train.save_samples=null",
    ])
      .output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const recs = await metrics(`${dir}/run`);
    const phases = [...new Set(recs.map((r) => r.phase))];
    assert.deepEqual(phases, ["knowledge", "skills"]);
    // Samples seen keep counting across phases.
    const k = recs.filter((r) => r.phase === "knowledge").at(-1)!;
    const s = recs.find((r) => r.phase === "skills")!;
    assert.ok(s.samples_seen > k.samples_seen);
    // The second phase starts from the first one's weights: its first loss is below a fresh start's.
    const fresh = recs[0].loss;
    assert.ok(s.loss < fresh, `skills starts at ${s.loss}, fresh model at ${fresh}`);
    await Deno.remove(dir, { recursive: true });
  },
);
