// Sweeps: expand a grid/list of config overrides into members, probe each, rank by early training dynamics, continue the top k, gather shards.
//
// The early-dynamics rule is the paper's finding (ii) (../shared/seeds/paper-full.md §4, §A.6.9):
// runs whose early gradient norm is lower and whose loss is higher end better. The probe score of
// member i over its probe window W_i (its first optimizer steps up to and including the first one
// whose samples_seen reaches probe.samples) is
//
//   L_i = mean over W_i of ln(loss),   G_i = mean over W_i of ln(gradient norm)
//   score_i = loss_weight · z(L)_i − gradnorm_weight · z(G)_i
//
// where z(x)_i = (x_i − mean_j x_j) / std_j x_j over the members with a probe (population std; z = 0
// when every member has the same value). Higher score = predicted better. The top `keep` members
// continue to the full budget; the others stop after the probe. Logs make the score scale-free
// (a member with twice the gradient norm is penalised the same at any magnitude).
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { isMap, isScalar, LineCounter, parseDocument } from "yaml";
import { loadPipelineConfig, type PipelineConfig } from "./config.ts";
import { UserError, where } from "./errors.ts";
import { splitByDifficulty } from "./phasing.ts";
import { buildPlan, trainingPhases } from "./pipeline.ts";
import {
  type FinalScore,
  finalScore,
  fmt,
  readEvents,
  readMetrics,
  readRunConfig,
  writeRunReport,
  writeSweepReport,
} from "./report.ts";
import { readJsonIfExists, writeJsonAtomic } from "./run_dir.ts";
import { hashJson } from "./stage.ts";
import { loadTokenizedDataset } from "./tokenize.ts";
import type { MetricsRecord } from "./trainer.ts";

// ---------------------------------------------------------------------------------------------
// The sweep spec

/** A comparison table of the report: rows are members (paper Tables 2–4 shape). */
export interface SweepTable {
  title: string;
  rows: { member: string; label: string }[];
}

/** One member: its name, position and config overrides (dotted keys). */
export interface MemberSpec {
  name: string;
  index: number;
  /** The member's own overrides (the sweep's common `set` is applied under them). */
  set: Record<string, unknown>;
}

/** Probe settings: budget and score weights. */
export interface ProbeSpec {
  /** Training samples each member sees before the ranking. */
  samples: number;
  loss_weight: number;
  gradnorm_weight: number;
}

/** A validated sweep. */
export interface SweepSpec {
  name: string;
  /** Absolute path of the sweep file. */
  file: string;
  /** Absolute path of the base pipeline (for a pipeline with a sweep block: written by prepare). */
  base: string;
  /** True when the sweep block sits inside the base pipeline file itself. */
  embedded: boolean;
  /** Common overrides of every member (dotted keys). */
  set: Record<string, unknown>;
  members: MemberSpec[];
  probe: ProbeSpec;
  keep: number | "all";
  /** `keep` as a number of members (all: every member). */
  keep_k: number;
  /** Run every member to the end anyway, to measure how well the probe predicted (no saving). */
  validate: boolean;
  /** The metric that decides the final ranking (null: the pipeline's eval.primary). */
  final_metric: string | null;
  tables: SweepTable[];
  /** Hash of everything that defines the members' runs (base file text included). */
  hash: string;
}

/** Name of the spec file every sweep out dir holds. */
export const SPEC_FILE = "sweep.spec.json";
/** Name of the sweep result file. */
export const SWEEP_FILE = "sweep.json";
/** Name of the per-member record in each member's run dir. */
export const MEMBER_FILE = "sweep_member.json";
/** Folder of the member run dirs inside a sweep dir. */
export const MEMBERS_DIR = "members";

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const SWEEP_KEYS = [
  "name",
  "pipeline",
  "set",
  "grid",
  "members",
  "probe",
  "keep",
  "validate",
  "final_metric",
  "tables",
];
const PROBE_KEYS = ["samples", "loss_weight", "gradnorm_weight"];

function isObj(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

/** Flatten nested maps into dotted keys: {train: {lr: 1}} → {"train.lr": 1} (lists are values). */
export function flattenSet(v: Record<string, unknown>, prefix = ""): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isObj(x) && Object.keys(x).length) Object.assign(out, flattenSet(x, key));
    else out[key] = x;
  }
  return out;
}

/** The cartesian product of a grid, in key order with the last key varying fastest. */
export function expandGrid(grid: Record<string, unknown[]>): Record<string, unknown>[] {
  let out: Record<string, unknown>[] = [{}];
  for (const [k, values] of Object.entries(grid)) {
    out = out.flatMap((o) => values.map((v) => ({ ...o, [k]: v })));
  }
  return out;
}

const ABBREV: Record<string, string> = {
  effective_batch_size: "bs",
  warmup_steps: "warmup",
  micro_batch_tokens: "mbt",
  max_grad_norm: "clip",
  weight_decay: "wd",
};

/** A member name from its overrides, e.g. {train.lr: 1e-3, train.effective_batch_size: 16} → "lr-0.001_bs-16". */
export function memberName(set: Record<string, unknown>): string {
  const parts = Object.entries(set).map(([k, v]) => {
    const last = k.split(".").at(-1)!.replace(/\[\d+\]$/, "");
    const key = ABBREV[last] ?? last;
    const val = typeof v === "string" ? v : JSON.stringify(v);
    return `${key}-${val}`;
  });
  const name = (parts.join("_") || "base").replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^[._-]+/, "");
  return name || "member";
}

/** `i/n` → {i, n} (0-based i < n). */
export function parseShard(text: string): { i: number; n: number } {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  if (!m || Number(m[2]) < 1 || Number(m[1]) >= Number(m[2])) {
    throw new UserError(
      `--shard ${text}: expected i/n with 0 <= i < n`,
      "e.g. --shard 0/4 runs members 0, 4, 8, ... of a sweep split four ways",
    );
  }
  return { i: Number(m[1]), n: Number(m[2]) };
}

/** Members of shard i of n: every member whose index ≡ i (mod n). */
export function shardMembers<T extends { index: number }>(
  members: readonly T[],
  shard: { i: number; n: number },
): T[] {
  return members.filter((m) => m.index % shard.n === shard.i);
}

/** The overrides a member's train command gets (common set < member set), as --set arguments. */
export function memberSetArgs(spec: SweepSpec, m: MemberSpec): string[] {
  const merged = { ...spec.set, ...m.set };
  return [
    ...Object.entries(merged).map(([k, v]) => `${k}=${JSON.stringify(v)}`),
    `run.name=${m.name}`,
    "server.enabled=false",
  ];
}

/** Path keys of a pipeline file (relative ones are relative to the file's folder). */
function absolutizePaths(tree: Record<string, unknown>, dir: string, words: string[]): void {
  const fix = (v: unknown) =>
    typeof v === "string" && v && !isAbsolute(v) && !v.startsWith("${run_dir}") &&
      !words.includes(v)
      ? resolve(dir, v)
      : v;
  const get = (p: string[]) => p.reduce<unknown>((o, k) => (isObj(o) ? o[k] : undefined), tree);
  const run = get(["run"]);
  if (isObj(run) && "dir" in run) run.dir = fix(run.dir);
  const model = get(["model"]);
  if (isObj(model)) {
    if ("path" in model) model.path = fix(model.path);
    if (isObj(model.init) && Array.isArray(model.init.tokenizer_corpus)) {
      model.init.tokenizer_corpus = model.init.tokenizer_corpus.map(fix);
    }
  }
  if ("tokenizer" in tree) tree.tokenizer = fix(tree.tokenizer);
  const data = get(["data"]);
  if (isObj(data)) {
    if ("chat_template" in data) data.chat_template = fix(data.chat_template);
    if (Array.isArray(data.phases)) {
      for (const ph of data.phases) {
        if (isObj(ph) && Array.isArray(ph.train)) ph.train = ph.train.map(fix);
      }
    }
  }
  const ev = get(["eval"]);
  if (isObj(ev) && Array.isArray(ev.metrics)) {
    for (const m of ev.metrics) if (isObj(m)) m.data = fix(m.data);
  }
}

/**
 * Read and validate a sweep file: either a file with a top-level `sweep:` block naming its base
 * `pipeline:`, or a pipeline file that carries a `sweep:` block (its other keys are the base).
 * `extraSets` (`KEY=VALUE`, YAML values) are added to every member's overrides. Every problem is
 * reported at once as `FILE:LINE:COL: sweep.key: message`. Member configs are not loaded here
 * (see checkMemberConfigs).
 */
export async function loadSweepSpec(path: string, extraSets: string[] = []): Promise<SweepSpec> {
  const file = resolve(path);
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(`${path}: sweep file not found`, "pass the path of a sweep YAML");
    }
    throw new UserError(`${path}: cannot read: ${(e as Error).message}`);
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  if (doc.errors.length) {
    const e = doc.errors[0];
    const pos = e.linePos?.[0];
    throw new UserError(`${where(path, pos?.line, pos?.col)}: ${e.message.split("\n")[0]}`);
  }
  const tree = doc.toJS() as unknown;
  // Problems sorted by position; an unknown key points at the key, anything else at its value.
  const problems: { line: number; col: number; text: string }[] = [];
  const pos = (p: (string | number)[], atKey: boolean) => {
    let node = doc.getIn(p, true) as { range?: [number, number] } | undefined;
    if (atKey) {
      const parent = doc.getIn(p.slice(0, -1), true);
      const pair = isMap(parent)
        ? parent.items.find((it) => isScalar(it.key) && it.key.value === p.at(-1))
        : undefined;
      node = (pair?.key as { range?: [number, number] } | undefined) ?? node;
    }
    return node?.range ? lc.linePos(node.range[0]) : { line: 0, col: 0 };
  };
  const bad = (p: (string | number)[], msg: string, atKey = false) => {
    const { line, col } = pos(p, atKey);
    const key = p.map((s) => (typeof s === "number" ? `[${s}]` : s)).join(".").replace(
      /\.\[/g,
      "[",
    );
    problems.push({ line, col, text: `${line ? where(path, line, col) : path}: ${key}: ${msg}` });
  };
  if (!isObj(tree) || !isObj(tree.sweep)) {
    throw new UserError(
      `${path}: no sweep block`,
      "a sweep file needs a top-level `sweep:` map (see examples/sweep_small.yaml)",
    );
  }
  const sw = tree.sweep;
  for (const k of Object.keys(sw)) {
    if (!SWEEP_KEYS.includes(k)) {
      bad(["sweep", k], `unknown key; one of ${SWEEP_KEYS.join(", ")}`, true);
    }
  }
  const embedded = Object.keys(tree).some((k) => k !== "sweep");
  let base = "";
  if (embedded) {
    if (sw.pipeline !== undefined) {
      bad(["sweep", "pipeline"], "not allowed in a pipeline file: the file itself is the base");
    }
  } else if (typeof sw.pipeline !== "string" || !sw.pipeline) {
    bad(["sweep", "pipeline"], "expected the path of the base pipeline file");
  } else {
    base = resolve(dirname(file), sw.pipeline);
    try {
      await Deno.stat(base);
    } catch {
      bad(["sweep", "pipeline"], `file not found: ${base}`);
    }
  }
  const name = sw.name ?? (file.split("/").at(-1)!.replace(/\.ya?ml$/i, "") || "sweep");
  if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
    bad(["sweep", "name"], "letters, digits, '.', '_' or '-', starting with a letter or digit");
  }
  // Common overrides.
  let common: Record<string, unknown> = {};
  if (sw.set !== undefined) {
    if (!isObj(sw.set)) bad(["sweep", "set"], "expected a map of dotted keys to values");
    else common = flattenSet(sw.set);
  }
  for (const s of extraSets) {
    const eq = s.indexOf("=");
    if (eq <= 0) throw new UserError(`--set ${s}: expected KEY=VALUE`);
    let v: unknown;
    try {
      v = parseDocument(s.slice(eq + 1)).toJS();
    } catch {
      v = s.slice(eq + 1);
    }
    common[s.slice(0, eq).trim()] = v ?? null;
  }
  // Members: grid first, then the explicit list.
  const members: MemberSpec[] = [];
  if (sw.grid !== undefined) {
    if (!isObj(sw.grid) || !Object.keys(sw.grid).length) {
      bad(["sweep", "grid"], "expected a map of dotted keys to lists of values");
    } else {
      const grid: Record<string, unknown[]> = {};
      let ok = true;
      for (const [k, v] of Object.entries(sw.grid)) {
        if (!Array.isArray(v) || !v.length) {
          bad(["sweep", "grid", k], "expected a non-empty list");
          ok = false;
        } else grid[k] = v;
      }
      for (const set of ok ? expandGrid(grid) : []) {
        members.push({ name: memberName(set), index: members.length, set });
      }
    }
  }
  if (sw.members !== undefined) {
    if (!Array.isArray(sw.members)) bad(["sweep", "members"], "expected a list of {name, set}");
    else {
      sw.members.forEach((m: unknown, i: number) => {
        if (!isObj(m)) return bad(["sweep", "members", i], "expected a map {name, set}");
        for (const k of Object.keys(m)) {
          if (k !== "name" && k !== "set") {
            bad(["sweep", "members", i, k], "unknown key; one of name, set", true);
          }
        }
        if (m.set !== undefined && !isObj(m.set)) {
          return bad(["sweep", "members", i, "set"], "expected a map of dotted keys to values");
        }
        const set = flattenSet((m.set ?? {}) as Record<string, unknown>);
        if (m.name !== undefined && (typeof m.name !== "string" || !NAME_PATTERN.test(m.name))) {
          return bad(
            ["sweep", "members", i, "name"],
            "letters, digits, '.', '_' or '-', starting with a letter or digit",
          );
        }
        members.push({ name: (m.name as string) ?? memberName(set), index: members.length, set });
      });
    }
  }
  if (!members.length && !problems.length) {
    bad(["sweep"], "no members: add a grid and/or a members list");
  }
  const seen = new Map<string, number>();
  for (const m of members) {
    const n = seen.get(m.name) ?? 0;
    seen.set(m.name, n + 1);
    if (n > 0) m.name = `${m.name}-${n + 1}`;
  }
  if (new Set(members.map((m) => m.name)).size !== members.length) {
    bad(["sweep", "members"], "member names must be unique");
  }
  // Probe.
  const probe: ProbeSpec = { samples: 0, loss_weight: 1, gradnorm_weight: 1 };
  if (!isObj(sw.probe)) {
    bad(["sweep", "probe"], "expected {samples: N, loss_weight, gradnorm_weight}");
  } else {
    for (const k of Object.keys(sw.probe)) {
      if (!PROBE_KEYS.includes(k)) {
        bad(["sweep", "probe", k], `unknown key; one of ${PROBE_KEYS.join(", ")}`, true);
      }
    }
    const s = sw.probe.samples;
    if (typeof s !== "number" || !Number.isInteger(s) || s < 1) {
      bad(["sweep", "probe", "samples"], "expected a positive integer (training samples)");
    } else probe.samples = s;
    for (const k of ["loss_weight", "gradnorm_weight"] as const) {
      const v = sw.probe[k];
      if (v === undefined) continue;
      if (typeof v !== "number" || !Number.isFinite(v)) {
        bad(["sweep", "probe", k], "expected a number");
      } else probe[k] = v;
    }
  }
  // Keep.
  let keep: number | "all" = "all";
  if (sw.keep !== undefined) {
    if (sw.keep === "all") keep = "all";
    else if (typeof sw.keep === "number" && Number.isInteger(sw.keep) && sw.keep >= 1) {
      keep = sw.keep;
    } else bad(["sweep", "keep"], 'expected a positive integer (top k) or "all"');
  }
  if (sw.validate !== undefined && typeof sw.validate !== "boolean") {
    bad(["sweep", "validate"], "expected true or false");
  }
  if (
    sw.final_metric !== undefined && sw.final_metric !== null &&
    typeof sw.final_metric !== "string"
  ) bad(["sweep", "final_metric"], "expected a metric name");
  // Tables.
  const tables: SweepTable[] = [];
  if (sw.tables !== undefined) {
    if (!Array.isArray(sw.tables)) bad(["sweep", "tables"], "expected a list of {title, members}");
    else {
      sw.tables.forEach((t: unknown, i: number) => {
        if (!isObj(t) || typeof t.title !== "string" || !Array.isArray(t.members)) {
          return bad(
            ["sweep", "tables", i],
            "expected {title: TEXT, members: [NAME | {member, label}]}",
          );
        }
        const rows: SweepTable["rows"] = [];
        t.members.forEach((r: unknown, j: number) => {
          const member = typeof r === "string" ? r : isObj(r) ? r.member : undefined;
          const label = isObj(r) && typeof r.label === "string" ? r.label : member;
          if (typeof member !== "string" || !members.some((m) => m.name === member)) {
            bad(
              ["sweep", "tables", i, "members", j],
              `no member named ${JSON.stringify(member)}` +
                (members.length ? `; one of ${members.map((m) => m.name).join(", ")}` : ""),
            );
          } else rows.push({ member, label: label as string });
        });
        tables.push({ title: t.title, rows });
      });
    }
  }
  if (problems.length) {
    const lines = problems.sort((a, b) => a.line - b.line || a.col - b.col).map((p) => p.text);
    throw new UserError(
      lines.length === 1
        ? lines[0]
        : `${lines.length} problems in ${path}:\n  ${lines.join("\n  ")}`,
      "fix the sweep file and run again",
    );
  }
  const baseText = embedded ? text : await Deno.readTextFile(base);
  const spec: Omit<SweepSpec, "hash"> = {
    name: name as string,
    file,
    base,
    embedded,
    set: common,
    members,
    probe,
    keep,
    keep_k: keep === "all" ? members.length : Math.min(keep, members.length),
    validate: sw.validate === true,
    final_metric: (sw.final_metric as string | undefined) ?? null,
    tables,
  };
  const hash = await hashJson({
    base: baseText,
    set: spec.set,
    members: spec.members,
    probe: spec.probe,
    keep: spec.keep,
    validate: spec.validate,
  });
  return { ...spec, hash };
}

/**
 * For a pipeline file with a sweep block, write `<outDir>/base.yaml`: the file without its sweep
 * block, every relative path made absolute (against the original file's folder); point spec.base
 * at it. A sweep file naming its `pipeline:` is used as it is.
 */
export async function prepareBase(spec: SweepSpec, outDir: string): Promise<void> {
  if (!spec.embedded) return;
  const doc = parseDocument(await Deno.readTextFile(spec.file));
  const tree = doc.toJS() as Record<string, unknown>;
  delete tree.sweep;
  absolutizePaths(tree, dirname(spec.file), [
    "tokenizer",
    "chatml",
    "granite",
    "ibm_generic",
    "plain",
  ]);
  const out = parseDocument("{}");
  out.contents = out.createNode(tree) as typeof out.contents;
  if (!isMap(out.contents)) throw new Error("base pipeline is not a map");
  out.commentBefore =
    ` Base pipeline of sweep ${spec.name}: ${spec.file} without its sweep block, ` +
    `paths made absolute.`;
  const path = join(outDir, "base.yaml");
  await Deno.mkdir(outDir, { recursive: true });
  await Deno.writeTextFile(path, out.toString({ lineWidth: 0 }));
  spec.base = path;
}

/** The member's run dir inside a sweep dir. */
export function memberDir(sweepDir: string, name: string): string {
  return join(sweepDir, MEMBERS_DIR, name);
}

/**
 * Load every member's pipeline config (base < common set < member set) before anything runs, so a
 * bad key fails the sweep at once. Returns the configs by member name.
 */
export async function checkMemberConfigs(
  spec: SweepSpec,
  sweepDir: string,
  members: readonly MemberSpec[] = spec.members,
): Promise<Map<string, PipelineConfig>> {
  const out = new Map<string, PipelineConfig>();
  for (const m of members) {
    try {
      out.set(
        m.name,
        await loadPipelineConfig(spec.base, [
          ...memberSetArgs(spec, m),
          `run.dir=${memberDir(sweepDir, m.name)}`,
        ]),
      );
    } catch (e) {
      if (e instanceof UserError) {
        throw new UserError(`sweep member ${m.name}: ${e.message}`, e.hint);
      }
      throw e;
    }
  }
  return out;
}

/** The JSON-able form of a spec written to `<sweep dir>/sweep.spec.json`. */
export function specJson(spec: SweepSpec): Record<string, unknown> {
  return { version: 1, ...spec };
}

/** Read `<dir>/sweep.spec.json` (null when absent). */
export async function readSpecFile(dir: string): Promise<SweepSpec | null> {
  const v = await readJsonIfExists<SweepSpec & { version: number }>(join(dir, SPEC_FILE));
  return v?.version === 1 ? v : null;
}

/**
 * Write the spec into the sweep dir; a dir that already holds a different sweep (another hash) is
 * a UserError (pick another --out).
 */
export async function claimSweepDir(spec: SweepSpec, dir: string): Promise<void> {
  const prev = await readSpecFile(dir).catch(() => null);
  if (prev && prev.hash !== spec.hash) {
    throw new UserError(
      `${dir} holds a different sweep (${prev.name}, from ${prev.file})`,
      "the members, the base pipeline or --set changed: use another --out, or delete that folder",
    );
  }
  await writeJsonAtomic(join(dir, SPEC_FILE), specJson(spec));
}

// ---------------------------------------------------------------------------------------------
// Probe figures, score, ranking, correlation

/** The probe window: records up to and including the first whose samples_seen reaches `samples`. */
export function probeWindow(recs: readonly MetricsRecord[], samples: number): MetricsRecord[] {
  const out: MetricsRecord[] = [];
  for (const r of recs) {
    out.push(r);
    if (r.samples_seen >= samples) break;
  }
  return out;
}

/**
 * Tokens trained through the last record. metrics.jsonl counts tokens_seen per phase (it restarts
 * at each phase, unlike samples_seen): a drop at a phase change adds the previous phase's total.
 */
export function tokensThrough(recs: readonly MetricsRecord[]): number {
  let offset = 0;
  for (let i = 1; i < recs.length; i++) {
    const a = recs[i - 1], b = recs[i];
    if (b.phase !== a.phase && b.tokens_seen < a.tokens_seen) offset += a.tokens_seen;
  }
  return recs.length ? offset + recs[recs.length - 1].tokens_seen : 0;
}

/** What a member's probe window shows. */
export interface ProbeFigures {
  /** Samples seen at the end of the window. */
  samples: number;
  steps: number;
  tokens: number;
  /** True when the window reached the probe budget (false: the run ended or failed before it). */
  complete: boolean;
  mean_loss: number;
  mean_gradnorm: number;
  /** Means of ln(loss) and ln(gradnorm): the inputs of the score. */
  mean_log_loss: number;
  mean_log_gradnorm: number;
  last_loss: number;
  last_gradnorm: number;
  /** The probe score (set once every member is probed); higher = predicted better. */
  score: number | null;
}

/** Figures of the probe window of `recs`, or null when no finite step is in it. */
export function probeFigures(recs: readonly MetricsRecord[], samples: number): ProbeFigures | null {
  const w = probeWindow(recs, samples).filter((r) =>
    Number.isFinite(r.loss) && Number.isFinite(r.gradnorm) && r.loss > 0 && r.gradnorm > 0
  );
  if (!w.length) return null;
  const avg = (f: (r: MetricsRecord) => number) => w.reduce((a, r) => a + f(r), 0) / w.length;
  const last = w.at(-1)!;
  const window = probeWindow(recs, samples);
  return {
    samples: last.samples_seen,
    steps: w.length,
    tokens: tokensThrough(window),
    complete: last.samples_seen >= samples,
    mean_loss: avg((r) => r.loss),
    mean_gradnorm: avg((r) => r.gradnorm),
    mean_log_loss: avg((r) => Math.log(r.loss)),
    mean_log_gradnorm: avg((r) => Math.log(r.gradnorm)),
    last_loss: last.loss,
    last_gradnorm: last.gradnorm,
    score: null,
  };
}

/** z-scores of `v` (population std); all zeros when the values do not vary. */
export function zScores(v: readonly number[]): number[] {
  const n = v.length;
  if (!n) return [];
  const m = v.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / n);
  return v.map((x) => (sd > 1e-12 * Math.max(1, Math.abs(m)) ? (x - m) / sd : 0));
}

/**
 * The probe score of each member (null where a member has no probe figures):
 * loss_weight · z(mean ln loss) − gradnorm_weight · z(mean ln gradnorm), z over the members that
 * have figures.
 */
export function probeScores(
  figs: readonly (ProbeFigures | null)[],
  w: { loss_weight: number; gradnorm_weight: number },
): (number | null)[] {
  const idx = figs.flatMap((f, i) => (f ? [i] : []));
  const zl = zScores(idx.map((i) => figs[i]!.mean_log_loss));
  const zg = zScores(idx.map((i) => figs[i]!.mean_log_gradnorm));
  const out: (number | null)[] = figs.map(() => null);
  idx.forEach((i, k) => (out[i] = w.loss_weight * zl[k] - w.gradnorm_weight * zg[k]));
  return out;
}

/**
 * 1-based ranks by descending value; nulls rank after every number; ties keep input order.
 */
export function rankDescending(v: readonly (number | null)[]): number[] {
  const order = v.map((_, i) => i).sort((a, b) => {
    const x = v[a], y = v[b];
    if (x === null && y === null) return a - b;
    if (x === null) return 1;
    if (y === null) return -1;
    return y - x || a - b;
  });
  const ranks = new Array<number>(v.length);
  order.forEach((i, r) => (ranks[i] = r + 1));
  return ranks;
}

/** Average ranks (1-based, ascending; ties get the mean of their positions). */
export function averageRanks(v: readonly number[]): number[] {
  const order = v.map((_, i) => i).sort((a, b) => v[a] - v[b]);
  const r = new Array<number>(v.length);
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && v[order[j + 1]] === v[order[i]]) j++;
    for (let k = i; k <= j; k++) r[order[k]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return r;
}

/**
 * Spearman's rank correlation of two equal-length lists (Pearson correlation of their average
 * ranks, so ties are handled); null with fewer than 2 pairs or when either side does not vary.
 */
export function spearman(a: readonly number[], b: readonly number[]): number | null {
  if (a.length !== b.length) throw new Error(`spearman: ${a.length} vs ${b.length} values`);
  const n = a.length;
  if (n < 2) return null;
  const ra = averageRanks(a), rb = averageRanks(b);
  const ma = ra.reduce((s, x) => s + x, 0) / n, mb = rb.reduce((s, x) => s + x, 0) / n;
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) ** 2;
    sbb += (rb[i] - mb) ** 2;
  }
  if (saa === 0 || sbb === 0) return null;
  return sab / Math.sqrt(saa * sbb);
}

// ---------------------------------------------------------------------------------------------
// Member records

/** What a shard records about one member in `<member dir>/sweep_member.json`. */
export interface MemberRecord {
  version: 1;
  name: string;
  index: number;
  /** The sweep hash the member ran under. */
  sweep_hash: string;
  /** The last stage that ran for it. */
  stage: "probe" | "continue";
  status: "probed" | "finished" | "failed";
  /** The full budget of the member (every phase to the end), from its bucket plan. */
  budget: { steps: number; samples: number; tokens: number } | null;
  seconds: { probe: number; continue: number };
  error: string | null;
  time: string;
}

/** Read a member's record (null when absent or unreadable). */
export async function readMemberRecord(dir: string): Promise<MemberRecord | null> {
  const r = await readJsonIfExists<MemberRecord>(join(dir, MEMBER_FILE)).catch(() => null);
  return r?.version === 1 ? r : null;
}

/**
 * The full budget of a member: the optimizer-step plan of every training phase (as the pipeline
 * builds it) from the tokenized data in its run dir; null when that data is not there yet.
 */
export async function memberBudget(
  cfg: PipelineConfig,
): Promise<{ steps: number; samples: number; tokens: number } | null> {
  let steps = 0, samples = 0, tokens = 0;
  const phases = trainingPhases(cfg);
  for (let i = 0; i < phases.length; i++) {
    const ph = phases[i];
    const file = join(cfg.run.dir, "data", `${ph.dataset}.jsonl`);
    try {
      await Deno.stat(file);
    } catch {
      return null;
    }
    const ds = await loadTokenizedDataset(file);
    let indices: number[] | null = null;
    if (ph.split) {
      const split = splitByDifficulty(ds.lossTokens, { seed: cfg.run.seed });
      indices = ph.split === "short" ? split.phase1 : split.phase2;
    }
    const lengths = indices ? Uint32Array.from(indices, (j) => ds.lengths[j]) : ds.lengths;
    const plan = buildPlan(lengths, cfg, cfg.run.seed + i).steps;
    steps += plan.length;
    for (const s of plan) {
      for (const mb of s.microBatches) {
        samples += mb.length;
        for (const j of mb) tokens += lengths[j];
      }
    }
  }
  return { steps, samples, tokens };
}

// ---------------------------------------------------------------------------------------------
// Running members

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const DENO_JSON = new URL("../deno.json", import.meta.url).pathname;

/** Where a member's train command output goes. */
export type LineSink = (line: string) => void;

async function pump(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let nl: number;
    while ((nl = buf.search(/[\r\n]/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim()) onLine(line);
    }
  }
  if (buf.trim()) onLine(buf);
}

/**
 * Run `main.ts train BASE --run-dir DIR --set ...` for one member as a subprocess; its output goes
 * to `<dir>/train.log` and, prefixed with the member name, to `log`. Resolves to the exit code and
 * the `error:` line it printed (if any).
 */
export async function runTrain(
  base: string,
  dir: string,
  sets: string[],
  label: string,
  log: LineSink,
): Promise<{ code: number; error: string | null; seconds: number }> {
  await Deno.mkdir(dir, { recursive: true });
  const t0 = performance.now();
  const logFile = await Deno.open(join(dir, "train.log"), { append: true, create: true });
  const enc = new TextEncoder();
  let error: string | null = null;
  try {
    logFile.writeSync(
      enc.encode(`\n# ${new Date().toISOString()} train ${base} ${sets.join(" ")}\n`),
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--config",
        DENO_JSON,
        MAIN,
        "train",
        base,
        "--run-dir",
        dir,
        ...sets.flatMap((s) => ["--set", s]),
      ],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).spawn();
    const onLine = (line: string) => {
      logFile.writeSync(enc.encode(line + "\n"));
      if (line.startsWith("error: ") && error === null) error = line.slice(7);
      log(`[${label}] ${line}`);
    };
    await Promise.all([pump(child.stdout, onLine), pump(child.stderr, onLine)]);
    const { code } = await child.status;
    return { code, error, seconds: (performance.now() - t0) / 1000 };
  } finally {
    logFile.close();
  }
}

function lastRunState(events: Record<string, unknown>[]): string | null {
  for (let i = events.length - 1; i >= 0; i--) {
    if (events[i].type === "run" && typeof events[i].state === "string") {
      return events[i].state as string;
    }
  }
  return null;
}

/** Options of the member stages. */
export interface StageOptions {
  log?: LineSink;
  /** Configs from checkMemberConfigs (loaded again when absent). */
  configs?: Map<string, PipelineConfig>;
}

/**
 * Probe one member: train it until `probe.samples` samples (the whole budget when every member
 * continues anyway: validate or keep all), then record its status and budget. A member already
 * probed under this sweep is skipped (one whose probe failed is tried again: it resumes). A
 * training failure (e.g. a diverging lr) is recorded as status "failed", not thrown.
 */
export async function probeMember(
  spec: SweepSpec,
  sweepDir: string,
  m: MemberSpec,
  o: StageOptions = {},
): Promise<MemberRecord> {
  const dir = memberDir(sweepDir, m.name);
  const prev = await readMemberRecord(dir);
  if (
    prev && prev.sweep_hash === spec.hash && (prev.status !== "failed" || prev.stage !== "probe")
  ) {
    return prev;
  }
  const log = o.log ?? ((l: string) => console.log(l));
  const runsThrough = spec.validate || spec.keep_k >= spec.members.length;
  const sets = memberSetArgs(spec, m);
  log(
    `sweep ${spec.name}: ${runsThrough ? "training" : "probing"} member ${m.name} ` +
      `(${m.index + 1}/${spec.members.length})${
        runsThrough ? "" : ` for ${spec.probe.samples} samples`
      }`,
  );
  const res = await runTrain(
    spec.base,
    dir,
    runsThrough ? sets : [...sets, `train.stop_at_samples=${spec.probe.samples}`],
    m.name,
    log,
  );
  const state = lastRunState(await readEvents(dir));
  const status: MemberRecord["status"] = res.code !== 0
    ? "failed"
    : state === "paused"
    ? "probed"
    : "finished";
  const rec: MemberRecord = {
    version: 1,
    name: m.name,
    index: m.index,
    sweep_hash: spec.hash,
    stage: "probe",
    status,
    budget: await budgetOf(spec, sweepDir, m, o),
    seconds: { probe: res.seconds, continue: 0 },
    error: res.code !== 0 ? res.error ?? `train exited with code ${res.code}` : null,
    time: new Date().toISOString(),
  };
  await writeJsonAtomic(join(dir, MEMBER_FILE), rec);
  await writeRunReport(dir, {
    title: `Sweep ${spec.name}, member ${m.name}`,
    markers: probeMarker(spec),
  })
    .catch(() => {});
  return rec;
}

function probeMarker(spec: SweepSpec) {
  return [{ x: spec.probe.samples, label: "probe" }];
}

async function budgetOf(
  spec: SweepSpec,
  sweepDir: string,
  m: MemberSpec,
  o: StageOptions,
): Promise<MemberRecord["budget"]> {
  try {
    const cfg = o.configs?.get(m.name) ??
      (await checkMemberConfigs(spec, sweepDir, [m])).get(m.name)!;
    return await memberBudget(cfg);
  } catch {
    return null;
  }
}

/**
 * Continue a probed member to its full budget (the same train command without the probe's
 * stop_at_samples resumes bit-identically from the saved state); a member whose continuation
 * failed is tried again. Members already finished, or whose probe failed, are returned as they are.
 */
export async function continueMember(
  spec: SweepSpec,
  sweepDir: string,
  m: MemberSpec,
  o: StageOptions = {},
): Promise<MemberRecord> {
  const dir = memberDir(sweepDir, m.name);
  const prev = await readMemberRecord(dir);
  if (!prev || prev.sweep_hash !== spec.hash) {
    throw new UserError(
      `sweep member ${m.name} has no probe in ${dir}`,
      "run the probe stage for it first (its shard's --stage probe), or gather the right folder",
    );
  }
  const retry = prev.status === "failed" && prev.stage === "continue";
  if (prev.status !== "probed" && !retry) return prev;
  const log = o.log ?? ((l: string) => console.log(l));
  log(
    `sweep ${spec.name}: ${retry ? "retrying" : "continuing"} member ${m.name} to its full budget`,
  );
  const res = await runTrain(spec.base, dir, memberSetArgs(spec, m), m.name, log);
  const rec: MemberRecord = {
    ...prev,
    stage: "continue",
    status: res.code === 0 ? "finished" : "failed",
    budget: prev.budget ?? (await budgetOf(spec, sweepDir, m, o)),
    seconds: { probe: prev.seconds.probe, continue: prev.seconds.continue + res.seconds },
    error: res.code !== 0 ? res.error ?? `train exited with code ${res.code}` : null,
    time: new Date().toISOString(),
  };
  await writeJsonAtomic(join(dir, MEMBER_FILE), rec);
  await writeRunReport(dir, {
    title: `Sweep ${spec.name}, member ${m.name}`,
    markers: probeMarker(spec),
  })
    .catch(() => {});
  return rec;
}

// ---------------------------------------------------------------------------------------------
// sweep.json

/** One member in sweep.json. */
export interface SweepMember {
  name: string;
  index: number;
  /** Overrides of this member (the sweep's common `set` included). */
  set: Record<string, unknown>;
  /** The member's resolved `train:` block (null before it ran). */
  config: Record<string, unknown> | null;
  status: "missing" | "probed" | "finished" | "failed";
  probe: ProbeFigures | null;
  /** Probe rank (1 = best score); null until every member is probed. */
  rank: number | null;
  decision: "continue" | "stop" | null;
  budget: MemberRecord["budget"];
  /** What actually ran. */
  ran: { steps: number; samples: number; tokens: number; seconds: number } | null;
  final: FinalScore | null;
  /** Rank by final score among finished members (1 = best). */
  final_rank: number | null;
  error: string | null;
}

/** Contents of `<sweep dir>/sweep.json`. */
export interface SweepFile {
  version: 1;
  name: string;
  /** probing: some member has no probe yet; ranked: decisions made, runs pending; complete. */
  state: "probing" | "ranked" | "complete";
  hash: string;
  spec: {
    base: string;
    probe: ProbeSpec;
    keep: number | "all";
    keep_k: number;
    validate: boolean;
    final_metric: string | null;
    tables: SweepTable[];
  };
  score_formula: string;
  members: SweepMember[];
  compute: {
    /** True when every member ran to the end anyway (validate / keep all): the saving is hypothetical. */
    validate: boolean;
    samples_all: number;
    samples_run: number;
    /** Fraction of samples_all that stopping the (not failed) "stop" members after their probe saves. */
    saved_fraction: number;
    tokens_all: number;
    tokens_run: number;
    saved_tokens_fraction: number;
    seconds_run: number;
  };
  validation: {
    /** Members with a probe score and a final score. */
    n: number;
    spearman: number | null;
    spearman_loss: number | null;
    spearman_gradnorm: number | null;
    final_metric: string | null;
    higher_is_better: boolean;
    final_source: FinalScore["source"] | null;
    best_final: string | null;
    /** Whether the final best was among the top keep_k by probe (null unless every member finished). */
    best_kept: boolean | null;
    best_final_probe_rank: number | null;
    note: string | null;
  };
  time: string;
}

/** The documented score formula (written into sweep.json and the report). */
export function scoreFormula(p: ProbeSpec): string {
  return `score = ${p.loss_weight} · z(mean ln loss) − ${p.gradnorm_weight} · z(mean ln grad norm), ` +
    `means over each member's probe window (its optimizer steps up to the first that reaches ` +
    `${p.samples} samples), z-scored across the members (paper finding ii: lower early gradient ` +
    `norm and higher early loss predict a better final model).`;
}

/**
 * Build sweep.json from the member dirs under `sweepDir`: probe figures and scores, ranks and
 * decisions once every member has a probe (or failed), final scores of finished members, the
 * Spearman correlation of probe score and final score, and the compute saved.
 */
export async function buildSweepFile(spec: SweepSpec, sweepDir: string): Promise<SweepFile> {
  const members: SweepMember[] = [];
  const recsOf = new Map<string, MetricsRecord[]>();
  for (const m of spec.members) {
    const dir = memberDir(sweepDir, m.name);
    const rec = await readMemberRecord(dir);
    const valid = rec && rec.sweep_hash === spec.hash ? rec : null;
    const recs = valid ? await readMetrics(dir) : [];
    recsOf.set(m.name, recs);
    const cfg = valid ? await readRunConfig(dir) : null;
    const train = cfg?.train ? { ...(cfg.train as Record<string, unknown>) } : null;
    if (train) delete train.stop_at_samples;
    const last = recs.at(-1);
    members.push({
      name: m.name,
      index: m.index,
      set: { ...spec.set, ...m.set },
      config: train,
      status: valid ? valid.status : "missing",
      probe: probeFigures(recs, spec.probe.samples),
      rank: null,
      decision: null,
      budget: valid?.budget ?? null,
      ran: last
        ? {
          steps: recs.length,
          samples: last.samples_seen,
          tokens: tokensThrough(recs),
          seconds: (valid?.seconds.probe ?? 0) + (valid?.seconds.continue ?? 0),
        }
        : null,
      final: valid?.status === "finished"
        ? await finalScore(dir, spec.final_metric ?? undefined)
        : null,
      final_rank: null,
      error: valid?.error ?? null,
    });
  }
  // Scores and decisions once every member is probed (a failed member counts as probed).
  const allProbed = members.every((m) => m.status !== "missing");
  const usable = members.map((m) => (m.status === "failed" && !m.probe?.complete ? null : m.probe));
  const scores = probeScores(usable, spec.probe);
  members.forEach((m, i) => {
    if (m.probe) m.probe.score = scores[i];
  });
  if (allProbed) {
    const ranks = rankDescending(scores);
    members.forEach((m, i) => {
      m.rank = ranks[i];
      m.decision = scores[i] !== null && ranks[i] <= spec.keep_k ? "continue" : "stop";
    });
  }
  // Final ranking among finished members.
  const fin = members.filter((m) => m.final);
  const metric = fin[0]?.final?.metric ?? null;
  const sameMetric = fin.filter((m) => m.final!.metric === metric);
  const hib = sameMetric[0]?.final?.higher_is_better ?? false;
  const quality = (m: SweepMember) => (hib ? m.final!.score : -m.final!.score);
  const fr = rankDescending(sameMetric.map(quality));
  sameMetric.forEach((m, i) => (m.final_rank = fr[i]));
  // Validation: probe score vs final quality.
  const pairs = sameMetric.filter((m) => m.probe?.score != null);
  const q = pairs.map(quality);
  // Every member that did not fail ran to the end: the probe's full ranking can be checked.
  const everyFinished = members.some((m) => m.status === "finished") &&
    members.every((m) => m.status === "finished" || m.status === "failed");
  const best = pairs.length ? pairs[q.indexOf(Math.max(...q))] : null;
  let note: string | null = null;
  if (fin.length && sameMetric.length !== fin.length) {
    note = `members scored on different metrics; only ${metric} is compared`;
  } else if (metric === "train_loss") {
    note = "no checkpoint scores (selection.json) were found, so the final score is the final " +
      "train loss — a weak stand-in for held-out quality, and biased: it rewards low training loss, " +
      "which the probe score penalises. Add eval.metrics for a meaningful check.";
  }
  const validation: SweepFile["validation"] = {
    n: pairs.length,
    spearman: spearman(pairs.map((m) => m.probe!.score!), q),
    spearman_loss: spearman(pairs.map((m) => m.probe!.mean_log_loss), q),
    spearman_gradnorm: spearman(pairs.map((m) => -m.probe!.mean_log_gradnorm), q),
    final_metric: metric,
    higher_is_better: hib,
    final_source: fin[0]?.final?.source ?? null,
    best_final: best?.name ?? null,
    best_kept: everyFinished && best ? best.rank !== null && best.rank <= spec.keep_k : null,
    best_final_probe_rank: everyFinished && best ? best.rank : null,
    note,
  };
  // Compute: everything to the end vs what the decisions run.
  let sAll = 0, sRun = 0, tAll = 0, tRun = 0, secs = 0, sSaved = 0, tSaved = 0;
  for (const m of members) {
    const ran = m.ran ?? { samples: 0, tokens: 0, seconds: 0, steps: 0 };
    const all = m.budget ?? { samples: ran.samples, tokens: ran.tokens };
    sAll += all.samples;
    tAll += all.tokens;
    sRun += ran.samples;
    tRun += ran.tokens;
    secs += ran.seconds;
    if (m.decision === "stop" && m.probe && m.status !== "failed") {
      sSaved += Math.max(0, all.samples - m.probe.samples);
      tSaved += Math.max(0, all.tokens - m.probe.tokens);
    }
  }
  const pending = members.some((m) =>
    m.status === "missing" ||
    (m.status === "probed" && (m.decision === "continue" || spec.validate))
  );
  return {
    version: 1,
    name: spec.name,
    state: !allProbed ? "probing" : pending ? "ranked" : "complete",
    hash: spec.hash,
    spec: {
      base: spec.base,
      probe: spec.probe,
      keep: spec.keep,
      keep_k: spec.keep_k,
      validate: spec.validate,
      final_metric: spec.final_metric,
      tables: spec.tables,
    },
    score_formula: scoreFormula(spec.probe),
    members,
    compute: {
      validate: spec.validate || spec.keep_k >= members.length,
      samples_all: sAll,
      samples_run: sRun,
      saved_fraction: sAll > 0 ? sSaved / sAll : 0,
      tokens_all: tAll,
      tokens_run: tRun,
      saved_tokens_fraction: tAll > 0 ? tSaved / tAll : 0,
      seconds_run: secs,
    },
    validation,
    time: new Date().toISOString(),
  };
}

/** Read `<dir>/sweep.json` (null when absent). */
export async function readSweepFile(dir: string): Promise<SweepFile | null> {
  const v = await readJsonIfExists<SweepFile>(join(dir, SWEEP_FILE)).catch(() => null);
  return v?.version === 1 ? v : null;
}

/**
 * Write sweep.json, the sweep report and every member's report (with its probe figures and
 * decision) into `sweepDir`. Returns the sweep file.
 */
export async function finalizeSweep(spec: SweepSpec, sweepDir: string): Promise<SweepFile> {
  const s = await buildSweepFile(spec, sweepDir);
  await writeJsonAtomic(join(sweepDir, SWEEP_FILE), s);
  for (const m of s.members) {
    if (m.status === "missing") continue;
    const p = m.probe;
    const preface = `Member of sweep **${s.name}** ([sweep report](../../report.md)). Overrides: ` +
      (Object.entries(m.set).map(([k, v]) => `\`${k}=${JSON.stringify(v)}\``).join(", ") ||
        "none") +
      `.\n\nProbe (${fmt(p?.samples ?? null)} samples, ${p?.steps ?? 0} steps): mean loss ` +
      `${fmt(p?.mean_loss ?? null)}, mean grad norm ${fmt(p?.mean_gradnorm ?? null)}, score ` +
      `${fmt(p?.score ?? null, 3)}; rank ${m.rank ?? "-"} of ${s.members.length}; decision ` +
      `**${m.decision ?? "pending"}**; status ${m.status}${m.error ? ` (${m.error})` : ""}.`;
    await writeRunReport(memberDir(sweepDir, m.name), {
      title: `Sweep ${s.name}, member ${m.name}`,
      preface,
      markers: probeMarker(spec),
    });
  }
  await writeSweepReport(sweepDir, s);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Gathering shards

/** Result files of a member dir a gather copies (weights, optimizer state and data stay behind). */
export function isResultFile(rel: string): boolean {
  const p = rel.split("/");
  if (p.length === 1) {
    return [
      MEMBER_FILE,
      "metrics.jsonl",
      "events.jsonl",
      "config.resolved.yaml",
      "selection.json",
      "train.log",
    ].includes(p[0]);
  }
  if (p[0] !== "checkpoints") return false;
  const last = p.at(-1)!;
  return last === "index.json" || last === "best.json" || last === "eval.json";
}

async function walkFiles(root: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(join(root, rel)));
  } catch {
    return out;
  }
  for (const e of entries) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isSymlink) continue; // checkpoints/best links
    if (e.isDirectory) {
      if (!rel && ["state", "model", "data", "stages", "plots"].includes(e.name)) continue;
      out.push(...await walkFiles(root, r));
    } else if (e.isFile) out.push(r);
  }
  return out;
}

/** Progress of a member copy, to pick the most advanced one: [stage, status, steps]. */
async function progressKey(dir: string, hash: string): Promise<number[] | null> {
  const r = await readMemberRecord(dir);
  if (!r || r.sweep_hash !== hash) return null;
  const status = { failed: 1, probed: 2, finished: 3 }[r.status] ?? 0;
  return [r.stage === "continue" ? 1 : 0, status, (await readMetrics(dir)).length];
}

function later(a: number[], b: number[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] > b[i];
  return false;
}

/**
 * Merge the member results of several sweep dirs (shards) into `outDir`: for every member the
 * most advanced copy (continued > probed; finished > probed > failed; more steps) is copied
 * (result files only: records, metrics, events, config, checkpoint indexes and scores). The spec
 * comes from `spec` or from the inputs' sweep.spec.json, which must all describe the same sweep.
 * Then sweep.json and the reports are written. Returns the sweep file.
 */
export async function gatherSweep(
  inputs: string[],
  outDir: string,
  spec: SweepSpec | null,
): Promise<SweepFile> {
  const dirs = inputs.map((d) => resolve(d));
  const out = resolve(outDir);
  const specs: SweepSpec[] = [];
  for (const d of dirs) {
    try {
      await Deno.stat(d);
    } catch {
      throw new UserError(`--gather ${d}: folder not found`);
    }
    const s = await readSpecFile(d);
    if (s) specs.push(s);
  }
  const chosen = spec ?? specs[0] ?? (await readSpecFile(out));
  if (!chosen) {
    throw new UserError(
      `none of ${inputs.join(", ")} holds a ${SPEC_FILE}`,
      "pass sweep dirs written by `deno task sweep` (or the sweep file too)",
    );
  }
  for (const s of specs) {
    if (s.hash !== chosen.hash) {
      throw new UserError(
        `the gathered folders hold different sweeps (${s.name} from ${s.file} vs ${chosen.name})`,
        "gather only the shards of one sweep (same file, same --set)",
      );
    }
  }
  await Deno.mkdir(out, { recursive: true });
  await writeJsonAtomic(join(out, SPEC_FILE), specJson(chosen));
  for (const m of chosen.members) {
    let bestDir: string | null = null;
    let bestKey: number[] | null = null;
    for (const d of [out, ...dirs.filter((x) => x !== out)]) {
      const md = memberDir(d, m.name);
      const k = await progressKey(md, chosen.hash);
      if (k && (!bestKey || later(k, bestKey))) {
        bestKey = k;
        bestDir = d;
      }
    }
    if (!bestDir || bestDir === out) continue;
    const from = memberDir(bestDir, m.name), to = memberDir(out, m.name);
    if (relative(from, to) === "") continue;
    for (const rel of await walkFiles(from)) {
      if (!isResultFile(rel)) continue;
      await Deno.mkdir(dirname(join(to, rel)), { recursive: true });
      await Deno.copyFile(join(from, rel), join(to, rel));
    }
  }
  return await finalizeSweep(chosen, out);
}
