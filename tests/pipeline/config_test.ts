// Pipeline config: the example validates; errors name file:line:col and key; presets, --set, paths.
import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { join } from "node:path";
import {
  ConfigError,
  DEFAULT_CONFIG,
  loadPipelineConfig,
  MAX_ERRORS,
  type PipelineConfig,
  resolvedYaml,
} from "../../pipeline/config.ts";
import { PRESETS } from "../../pipeline/presets.ts";
import { UserError } from "../../pipeline/errors.ts";

const EXAMPLE = new URL("../../examples/quickstart.yaml", import.meta.url).pathname;

/** A temp folder with a model dir (config.json) and two data files. */
async function fixture(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "config_test_" });
  await Deno.mkdir(join(dir, "model"));
  await Deno.writeTextFile(join(dir, "model", "config.json"), "{}");
  await Deno.writeTextFile(join(dir, "a.jsonl"), "");
  await Deno.writeTextFile(join(dir, "b.jsonl"), "");
  return dir;
}

async function write(dir: string, name: string, text: string): Promise<string> {
  const p = join(dir, name);
  await Deno.writeTextFile(p, text);
  return p;
}

/** The problem lines of a load that must fail. */
async function problems(path: string, sets: string[] = []): Promise<string[]> {
  try {
    await loadPipelineConfig(path, sets);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error(`${path} loaded without errors`);
}

const MINIMAL = `model:
  path: model
data:
  phases:
    - name: p
      train: [a.jsonl]
`;

Deno.test("examples/quickstart.yaml validates", async () => {
  const cfg = await loadPipelineConfig(EXAMPLE, []);
  equal(cfg.run.name, "quickstart");
  equal(cfg.run.dir, join(Deno.cwd(), "runs", "quickstart"));
  equal(cfg.model.path, null);
  equal(cfg.model.init?.preset, "tiny");
  equal(cfg.preset, "recipe");
  // Explicit keys win over the preset; the rest comes from it.
  equal(cfg.train.effective_batch_size, 32);
  equal(cfg.train.lr, 3e-3);
  equal(cfg.train.strategy, "stacked");
  equal(cfg.train.schedule, "constant");
  equal(cfg.data.max_seq_len, 128);
  const synth = join(cfg.run.dir, "data", "synthetic");
  deepStrictEqual(cfg.data.phases.map((p) => [p.name, p.train]), [
    ["knowledge", [join(synth, "knowledge_train.jsonl")]],
    ["skills", [join(synth, "skills_train.jsonl")]],
  ]);
  deepStrictEqual(cfg.model.init?.tokenizer_corpus, cfg.data.phases.flatMap((p) => p.train));
  deepStrictEqual(cfg.eval.metrics.map((m) => m.kind), ["loss", "mc", "exact_match"]);
  equal(cfg.eval.primary, "mc");
  equal(cfg.data.synthetic?.seed, 42, "synthetic seed defaults to run.seed");
  deepStrictEqual(cfg.source.warnings, []);
});

Deno.test("defaults are the documented ones", () => {
  const t = DEFAULT_CONFIG.train;
  deepStrictEqual(
    [t.strategy, t.effective_batch_size, t.micro_batch_tokens, t.ranks, t.lr, t.schedule],
    ["stacked", 3840, 4096, 1, 2e-5, "constant"],
  );
  deepStrictEqual([t.beta1, t.beta2, t.eps, t.weight_decay, t.max_grad_norm], [
    0.9,
    0.95,
    1e-8,
    0,
    1,
  ]);
  deepStrictEqual([t.warmup_steps, t.warmup_ratio, t.min_lr_ratio, t.epochs], [0, 0, 0, 1]);
  deepStrictEqual([t.metrics_every, t.save_dtype, t.nan_check, t.recompute], [
    10,
    "f32",
    true,
    false,
  ]);
  equal(DEFAULT_CONFIG.run.seed, 42);
  deepStrictEqual(
    [DEFAULT_CONFIG.data.max_seq_len, DEFAULT_CONFIG.data.truncate, DEFAULT_CONFIG.data.on_error],
    [1024, false, "fail"],
  );
  deepStrictEqual(DEFAULT_CONFIG.server, {
    enabled: true,
    host: "127.0.0.1",
    port: 0,
    token: null,
  });
  ok(Object.isFrozen(DEFAULT_CONFIG.train));
});

Deno.test("every problem is reported with file:line:col and the dotted key", async () => {
  const dir = await fixture();
  const p = await write(
    dir,
    "x.yaml",
    `run:
  name: x
  seeed: 3
model:
  path: model
data:
  phases:
    - name: p
      train: [a.jsonl, missing.jsonl]
    - train: [b.jsonl]
train:
  lr: fast
  strategy: stack
  warmup_steps: 5
  warmup_ratio: 0.1
  epochs: -1
eval:
  metrics:
    - { name: m1, kind: loss, data: a.jsonl }
  primary: m2
colour: blue
`,
  );
  const got = await problems(p);
  for (const line of got) console.log(`  ${line}`);
  deepStrictEqual(got, [
    `${p}:3:3: run.seeed: unknown key (did you mean seed?)`,
    `${p}:9:24: data.phases[0].train[1]: file not found: ${join(dir, "missing.jsonl")}`,
    `${p}:10:7: data.phases[1].name: missing (required)`,
    `${p}:12:7: train.lr: expected a number, got "fast"`,
    `${p}:13:13: train.strategy: expected one of stacked, phased, got "stack" (did you mean stacked?)`,
    `${p}:15:17: train.warmup_ratio: set only one of warmup_steps (5) and warmup_ratio (0.1)`,
    `${p}:16:11: train.epochs: must be > 0, got -1`,
    `${p}:20:12: eval.primary: no metric named m2; one of m1`,
    `${p}:21:1: colour: unknown key`,
  ]);
  // The UserError message is the whole list (main prints it as is).
  await rejects(loadPipelineConfig(p, []), (e: unknown) => {
    ok(e instanceof UserError);
    ok((e as Error).message.startsWith(`9 problems in ${p}:\n  ${p}:3:3: run.seeed`));
    return true;
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a single problem is the whole message; syntax errors have positions", async () => {
  const dir = await fixture();
  const one = await write(dir, "one.yaml", MINIMAL + "train:\n  lr: fast\n");
  await rejects(loadPipelineConfig(one, []), {
    message: `${one}:8:7: train.lr: expected a number, got "fast"`,
  });
  const bad = await write(dir, "bad.yaml", "a: [1\nb: 2\n");
  const got = await problems(bad);
  equal(got.length, 1);
  ok(got[0].startsWith(`${bad}:2:1: `), got[0]);
  const list = await write(dir, "list.yaml", "- 1\n- 2\n");
  ok((await problems(list))[0].includes("expected a map of sections"));
  await rejects(loadPipelineConfig(join(dir, "none.yaml"), []), /pipeline file not found/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train.matmul_precision and a loss scale that is not a power of two", async () => {
  const dir = await fixture();
  const ok16 = await write(dir, "f16.yaml", MINIMAL + "train:\n  matmul_precision: f16\n");
  const cfg = await loadPipelineConfig(ok16, []);
  equal(cfg.train.matmul_precision, "f16");
  equal(cfg.train.loss_scale, 65536);
  const bad = await write(
    dir,
    "scale.yaml",
    MINIMAL + "train:\n  matmul_precision: f16\n  loss_scale: 1000\n",
  );
  await rejects(loadPipelineConfig(bad, []), {
    message: `${bad}:9:15: train.loss_scale: must be a power of two, got 1000`,
  });
  await rejects(
    loadPipelineConfig(ok16, ["train.matmul_precision=bf16"]),
    /expected one of f32, f16/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test(`at most ${MAX_ERRORS} problems, then a count of the rest`, async () => {
  const dir = await fixture();
  const keys = Array.from({ length: 30 }, (_, i) => `  bogus${i}: 1`).join("\n");
  const p = await write(dir, "many.yaml", `${MINIMAL}train:\n${keys}\n`);
  await rejects(loadPipelineConfig(p, []), (e: unknown) => {
    equal((e as ConfigError).problems.length, MAX_ERRORS);
    ok((e as Error).message.startsWith(`30 problems in ${p}:`));
    ok((e as Error).message.endsWith("... and 10 more"));
    return true;
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("--set overrides any key with the same checks", async () => {
  const dir = await fixture();
  const p = await write(dir, "s.yaml", MINIMAL);
  const cwd = Deno.cwd();
  Deno.chdir(join(dir, "model")); // --set paths resolve against the current directory
  let cfg: PipelineConfig;
  try {
    cfg = await loadPipelineConfig(p, [
      "train.lr=1e-4",
      "data.phases[0].name=renamed",
      "data.phases.0.train=[../b.jsonl]",
      "train.max_steps=7",
      "eval.metrics=[{name: l, kind: loss, data: ../a.jsonl}]",
      "model.init={preset: tiny}",
      "model.path=",
    ]);
  } finally {
    Deno.chdir(cwd);
  }
  equal(cfg.train.lr, 1e-4);
  equal(cfg.train.max_steps, 7);
  equal(cfg.data.phases[0].name, "renamed");
  deepStrictEqual(cfg.data.phases[0].train, [join(dir, "b.jsonl")]);
  equal(cfg.model.path, null);
  equal(cfg.model.init?.preset, "tiny");
  equal(cfg.eval.primary, "l");
  deepStrictEqual(cfg.source.sets.length, 7);
  const got = await problems(p, [
    "train.lr=fast",
    "train.lrr=1",
    "nonsense",
    "train.lr.x=1",
    "data.phases[3].name=x",
  ]);
  for (const line of got) console.log(`  ${line}`);
  deepStrictEqual(got, [
    `--set train.lr: expected a number, got "fast"`,
    `--set train.lrr: unknown key (did you mean lr?)`,
    `--set nonsense: expected KEY=VALUE, e.g. --set train.lr=1e-4`,
    `--set train.lr.x: train.lr is "fast", not a map`,
    `--set data.phases[3].name: data.phases is a list of 1: index 3 is out of range`,
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("presets merge under explicit keys; their values are the documented ones", async () => {
  const dir = await fixture();
  for (const name of ["lab", "tulu", "recipe"] as const) {
    const p = await write(dir, `${name}.yaml`, `preset: ${name}\n${MINIMAL}`);
    const cfg = await loadPipelineConfig(p, []);
    for (const [k, v] of Object.entries(PRESETS[name].train)) {
      equal((cfg.train as unknown as Record<string, unknown>)[k], v, `${name}: train.${k}`);
    }
  }
  const lab = await loadPipelineConfig(await write(dir, "l.yaml", `preset: lab\n${MINIMAL}`), []);
  deepStrictEqual(
    [lab.train.effective_batch_size, lab.train.lr, lab.train.warmup_steps, lab.train.schedule],
    [3840, 2e-5, 25, "constant"],
  );
  equal(lab.train.strategy, "phased");
  ok(lab.source.warnings[0].includes("only one phase"), "phased with one phase warns");
  const tulu = await write(dir, "t.yaml", `preset: tulu\n${MINIMAL}train:\n  lr: 5e-5\n`);
  const t = await loadPipelineConfig(tulu, ["train.epochs=3"]);
  deepStrictEqual(
    [
      t.train.effective_batch_size,
      t.train.lr,
      t.train.schedule,
      t.train.warmup_ratio,
      t.train.epochs,
    ],
    [128, 5e-5, "linear", 0.03, 3],
  );
  // A preset value clashing with an explicit key is reported as coming from the preset.
  const clash = await write(dir, "c.yaml", `preset: lab\n${MINIMAL}train:\n  warmup_ratio: 0.1\n`);
  deepStrictEqual(await problems(clash), [
    `${clash}:9:17: train.warmup_ratio: set only one of warmup_steps (25, from preset lab) and warmup_ratio (0.1)`,
  ]);
  deepStrictEqual(await problems(await write(dir, "u.yaml", `preset: labb\n${MINIMAL}`)), [
    `${
      join(dir, "u.yaml")
    }:1:9: preset: expected one of lab, tulu, recipe, got "labb" (did you mean lab?)`,
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("paths resolve against the YAML folder; model/tokenizer/template checks", async () => {
  const dir = await fixture();
  await Deno.mkdir(join(dir, "sub"));
  const p = await write(
    dir,
    "sub/p.yaml",
    `run: { dir: ../out }
model: { path: ../model }
tokenizer: ../model
data:
  chat_template: chatml
  phases: [{ name: p, train: [../a.jsonl] }]
`,
  );
  const cfg = await loadPipelineConfig(p, []);
  equal(cfg.run.dir, join(dir, "out"));
  equal(cfg.run.name, "p", "run.name defaults to the file name");
  equal(cfg.model.path, join(dir, "model"));
  equal(cfg.tokenizer, join(dir, "model"));
  equal(cfg.data.chat_template, "chatml");
  deepStrictEqual(cfg.data.phases[0].train, [join(dir, "a.jsonl")]);

  await Deno.writeTextFile(join(dir, "t.jinja"), "{{ x }}");
  const bad = await write(
    dir,
    "b.yaml",
    `model: { path: a.jsonl }
tokenizer: nowhere
data:
  chat_template: t.jinja
  phases: [{ name: p, train: [model] }]
`,
  );
  deepStrictEqual(await problems(bad), [
    `${bad}:1:16: model.path: expected a folder: ${join(dir, "a.jsonl")}`,
    `${bad}:2:12: tokenizer: folder not found: ${join(dir, "nowhere")}`,
    `${bad}:5:31: data.phases[0].train[0]: expected a file: ${join(dir, "model")}`,
  ]);
  await Deno.mkdir(join(dir, "empty"));
  const noCfg = await write(dir, "n.yaml", MINIMAL.replace("path: model", "path: empty"));
  deepStrictEqual(await problems(noCfg), [
    `${noCfg}:2:9: model.path: ${join(dir, "empty")} has no config.json (not an HF model folder)`,
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cross-field checks: model, phases, primary, server host", async () => {
  const dir = await fixture();
  const none = await write(dir, "none.yaml", "data: { phases: [] }\n");
  deepStrictEqual(await problems(none), [
    `${none}:1:1: model: set model.path (an HF model folder) or model.init (a new model from a preset)`,
    `${none}:1:9: data.phases: no training data: list at least one phase or add data.synthetic`,
  ]);
  const both = await write(dir, "both.yaml", MINIMAL);
  deepStrictEqual(await problems(both, ["model.init={}"]), [
    `${both}:1:1: model: set only one of model.path and model.init`,
  ]);
  const host = await write(dir, "h.yaml", MINIMAL + "server: { host: 0.0.0.0 }\n");
  const prev = Deno.env.get("FT_SERVER_TOKEN");
  Deno.env.delete("FT_SERVER_TOKEN");
  try {
    deepStrictEqual(await problems(host), [
      `${host}:7:17: server.host: serving on 0.0.0.0 (not loopback) needs server.token or FT_SERVER_TOKEN`,
    ]);
    Deno.env.set("FT_SERVER_TOKEN", "s3cret");
    const cfg = await loadPipelineConfig(host, []);
    equal(cfg.server.token, "s3cret");
    ok(!resolvedYaml(cfg).includes("s3cret"), "the token is never written out");
  } finally {
    if (prev === undefined) Deno.env.delete("FT_SERVER_TOKEN");
    else Deno.env.set("FT_SERVER_TOKEN", prev);
  }
  const dup = await write(
    dir,
    "d.yaml",
    MINIMAL + "    - { name: p, train: [b.jsonl] }\ntrain: { micro_batch_tokens: 100 }\n",
  );
  deepStrictEqual(await problems(dup), [
    `${dup}:7:15: data.phases[1].name: duplicate phase name p`,
    `${dup}:8:30: train.micro_batch_tokens: must be >= data.max_seq_len (1024) so one sample fits a micro-batch`,
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("synthetic: fills phases; only its own files may be missing", async () => {
  const dir = await fixture();
  const p = await write(
    dir,
    "syn.yaml",
    "model: { init: {} }\ndata: { synthetic: { heldout: 3 } }\n",
  );
  const cfg = await loadPipelineConfig(p, ["run.dir=" + join(dir, "rd"), "run.seed=5"]);
  deepStrictEqual(cfg.data.phases.map((ph) => ph.name), ["knowledge", "skills"]);
  ok(cfg.data.phases[0].train[0].startsWith(join(dir, "rd", "data", "synthetic") + "/"));
  deepStrictEqual([cfg.data.synthetic?.seed, cfg.model.init?.seed], [5, 5]);
  const typo = await write(
    dir,
    "typo.yaml",
    `model: { init: {} }
data:
  synthetic: {}
  phases: [{ name: k, train: ["\${run_dir}/data/synthetic/knowledge.jsonl"] }]
`,
  );
  const got = await problems(typo);
  equal(got.length, 1);
  ok(got[0].startsWith(`${typo}:4:31: data.phases[0].train[0]: data.synthetic makes `), got[0]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resolvedYaml loads back to the same config", async () => {
  const dir = await fixture();
  const original = await loadPipelineConfig(EXAMPLE, ["train.epochs=2"]);
  const text = resolvedYaml(original);
  ok(text.startsWith("# Fully resolved pipeline config"));
  ok(!text.includes("${run_dir}"));
  const p = await write(dir, "resolved.yaml", text);
  const again = await loadPipelineConfig(p, []);
  const strip = ({ source: _s, ...rest }: PipelineConfig) => rest;
  deepStrictEqual(strip(again), strip(original));
  await Deno.remove(dir, { recursive: true });
});
