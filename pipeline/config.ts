// Pipeline YAML: parse with locations, merge preset < file < --set, validate the schema, resolve paths.
//
// Every problem found is reported at once (up to MAX_ERRORS) as one UserError whose lines read
// `FILE:LINE:COL: dotted.key: message` (or `--set dotted.key: message` for a --set value). The
// schema below is the single source of truth: types, ranges and defaults (with their reasons).
import { basename, dirname, extname, isAbsolute, join, relative, resolve } from "node:path";
import {
  Document,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Node as YamlNode,
  parse as parseYaml,
  parseDocument,
} from "yaml";
import { UserError, where } from "./errors.ts";
import { PRESET_NAMES, type PresetName, PRESETS } from "./presets.ts";
import { SYNTH_FILES, SYNTH_SUBDIR } from "./synth.ts";

export type { PresetName } from "./presets.ts";

// ---------------------------------------------------------------------------------------------
// Types of the resolved config (field names as spelled in the YAML)

/** Model presets `model.init.preset` accepts (model/init_model.ts builds them). */
export const MODEL_PRESETS = ["tiny", "stories15m", "smollm2-135m", "llama-3.2-1b"] as const;
/** One model preset name. */
export type ModelPreset = typeof MODEL_PRESETS[number];

/** `run:` */
export interface RunConfig {
  name: string;
  /** Absolute run dir. */
  dir: string;
  seed: number;
}

/** `model.init:` a randomly initialised model plus a generated tokenizer. */
export interface ModelInitConfig {
  preset: ModelPreset;
  /** Overrides of the preset's HF config.json fields. */
  set: Record<string, number | boolean | string>;
  seed: number;
  /** Absolute paths of the files the generated tokenizer is trained on. */
  tokenizer_corpus: string[];
}

/** `model:` exactly one of path / init is non-null. */
export interface ModelConfig {
  /** Absolute HF model directory. */
  path: string | null;
  init: ModelInitConfig | null;
}

/** `data.synthetic:` */
export interface SyntheticConfig {
  kind: "quickstart";
  seed: number;
  knowledge_facts: number;
  skills_samples: number;
  heldout: number;
}

/** One entry of `data.phases`. */
export interface PhaseConfig {
  name: string;
  /** Absolute JSONL paths. */
  train: string[];
  difficulty_split: boolean;
}

/** `data:` */
export interface DataConfig {
  /** null (the tokenizer's own), a CHAT_TEMPLATE_NAMES name, or an absolute .jinja path. */
  chat_template: string | null;
  max_seq_len: number;
  truncate: boolean;
  on_error: "fail" | "skip";
  synthetic: SyntheticConfig | null;
  phases: PhaseConfig[];
}

/** `train:` */
export interface TrainConfig {
  strategy: "stacked" | "phased";
  effective_batch_size: number;
  micro_batch_tokens: number;
  ranks: number;
  lr: number;
  schedule: "constant" | "cosine" | "linear";
  warmup_steps: number;
  warmup_ratio: number;
  min_lr_ratio: number;
  epochs: number;
  max_steps: number | null;
  max_samples: number | null;
  stop_at_samples: number | null;
  beta1: number;
  beta2: number;
  eps: number;
  weight_decay: number;
  max_grad_norm: number;
  save_samples: number | null;
  keep_last: number | null;
  metrics_every: number;
  recompute: boolean;
  matmul_precision: "f32" | "f16";
  loss_scale: number;
  save_dtype: "f32" | "bf16";
  padding_aware: boolean;
  nan_check: boolean;
}

/** One entry of `eval.metrics`. */
export interface MetricConfig {
  name: string;
  kind: "loss" | "mc" | "exact_match";
  /** Absolute path. */
  data: string;
  shots: number;
  limit: number | null;
  max_tokens: number;
  mc_score: "letter" | "text" | "text_norm";
}

/** `eval:` */
export interface EvalConfig {
  metrics: MetricConfig[];
  /** The metric that selects checkpoints (null only when there are no metrics). */
  primary: string | null;
  select: boolean;
}

/** `server:` */
export interface ServerConfig {
  enabled: boolean;
  host: string;
  port: number;
  /** From the YAML, or the FT_SERVER_TOKEN environment variable. */
  token: string | null;
}

/** Where a config came from (not part of the YAML schema). */
export interface ConfigSource {
  /** Absolute path of the pipeline file. */
  file: string;
  /** The path as given (used in messages). */
  display: string;
  /** The --set arguments applied, in order. */
  sets: string[];
  /** Non-fatal remarks (e.g. phased training with one phase). */
  warnings: string[];
}

/** A validated pipeline with every default filled in and every path absolute. */
export interface PipelineConfig {
  preset: PresetName | null;
  run: RunConfig;
  model: ModelConfig;
  /** Absolute tokenizer dir override, or null (the model's own). */
  tokenizer: string | null;
  data: DataConfig;
  train: TrainConfig;
  eval: EvalConfig;
  server: ServerConfig;
  source: ConfigSource;
}

/** The defaults, before resolution (values that depend on other keys are still null). */
export interface PipelineDefaults {
  preset: PresetName | null;
  run: { name: string | null; dir: string | null; seed: number };
  model: { path: string | null; init: null };
  tokenizer: string | null;
  data: Omit<DataConfig, "synthetic"> & { synthetic: null };
  train: TrainConfig;
  eval: EvalConfig;
  server: ServerConfig;
}

// ---------------------------------------------------------------------------------------------
// Schema

type Spec =
  | { t: "str"; def?: unknown; nullable?: boolean; pattern?: RegExp; patternHint?: string }
  | { t: "int"; def?: unknown; nullable?: boolean; min?: number; max?: number }
  | {
    t: "num";
    def?: unknown;
    nullable?: boolean;
    min?: number;
    max?: number;
    gt?: number;
    lt?: number;
  }
  | { t: "bool"; def?: unknown }
  | { t: "enum"; def?: unknown; nullable?: boolean; values: readonly string[] }
  | { t: "scalar"; def?: unknown }
  | {
    t: "path";
    def?: unknown;
    nullable?: boolean;
    kind: "file" | "dir";
    /** Words accepted as they are instead of a path (chat template names). */
    words?: readonly string[];
  }
  | { t: "obj"; def?: unknown; nullable?: boolean; fields: Record<string, Spec> }
  | { t: "list"; def?: unknown; item: Spec; minItems?: number }
  | { t: "map"; def?: unknown; value: Spec };

const REQUIRED = Symbol("required");

const str = (def: string | null | typeof REQUIRED, extra: Partial<Spec> = {}): Spec =>
  ({ t: "str", def, nullable: def === null, ...extra }) as Spec;
const int = (def: number | null | typeof REQUIRED, min = 0, max?: number): Spec => ({
  t: "int",
  def,
  nullable: def === null,
  min,
  max,
});
const num = (
  def: number,
  range: { min?: number; max?: number; gt?: number; lt?: number },
): Spec => ({
  t: "num",
  def,
  ...range,
});
const bool = (def: boolean): Spec => ({ t: "bool", def });
const oneOf = (values: readonly string[], def: string | null | typeof REQUIRED): Spec => ({
  t: "enum",
  values,
  def,
  nullable: def === null,
});
const path = (kind: "file" | "dir", def: string | null | typeof REQUIRED = null): Spec => ({
  t: "path",
  kind,
  def,
  nullable: def === null,
});
const obj = (fields: Record<string, Spec>, nullable = false): Spec => ({
  t: "obj",
  fields,
  nullable,
  def: nullable ? null : undefined,
});
const list = (item: Spec, minItems = 0): Spec => ({ t: "list", item, minItems, def: [] });

/** Template names chat_template accepts as they are: "tokenizer" (its own) and the ones shipped
 * in pipeline/templates/ (kept in sync with SHIPPED_TEMPLATES of chat_template.ts). */
export const CHAT_TEMPLATE_NAMES = [
  "tokenizer",
  "chatml",
  "granite",
  "ibm_generic",
  "plain",
] as const;

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const NAME_HINT = "letters, digits, '.', '_' or '-', starting with a letter or digit";

/** The pipeline schema: every key, its type, range and default. */
const SCHEMA: Spec = obj({
  // Hyperparameters of a named configuration, merged under this file's keys (presets.ts).
  preset: oneOf(PRESET_NAMES, null),
  run: obj({
    // null: the pipeline file's name without its extension.
    name: str(null, { pattern: NAME_PATTERN, patternHint: NAME_HINT }),
    // null: runs/<name> under the current directory.
    dir: path("dir", null),
    // Seeds data order, model init and synthetic data unless they name their own.
    seed: int(42, 0),
  }),
  model: obj({
    path: path("dir", null),
    init: obj({
      preset: oneOf(MODEL_PRESETS, "tiny"),
      set: { t: "map", value: { t: "scalar" }, def: {} },
      // null: run.seed.
      seed: int(null, 0),
      // null: every training file of every phase.
      tokenizer_corpus: { t: "list", item: path("file", REQUIRED), def: null },
    }, true),
  }),
  // null: the tokenizer in the model dir.
  tokenizer: path("dir", null),
  data: obj({
    // null: the tokenizer's own chat template; or a shipped template name; or a .jinja file.
    chat_template: {
      t: "path",
      kind: "file",
      def: null,
      nullable: true,
      words: CHAT_TEMPLATE_NAMES,
    },
    max_seq_len: int(1024, 2),
    // false: over-long samples are an error (or skipped with on_error: skip), never silently cut.
    truncate: bool(false),
    on_error: oneOf(["fail", "skip"], "fail"),
    synthetic: obj({
      kind: oneOf(["quickstart"], "quickstart"),
      // null: run.seed.
      seed: int(null, 0),
      knowledge_facts: int(40, 1, 100000),
      skills_samples: int(600, 1, 1000000),
      heldout: int(40, 0, 100000),
    }, true),
    phases: list(obj({
      name: str(REQUIRED, { pattern: NAME_PATTERN, patternHint: NAME_HINT }),
      train: list(path("file", REQUIRED), 1),
      // Split this phase into a short-answer half then a long-answer half (paper §A.6.1).
      difficulty_split: bool(false),
    })),
  }),
  train: obj({
    // Stacked: all phases in one run — the paper's recommendation (§A.1).
    strategy: oneOf(["stacked", "phased"], "stacked"),
    // Samples per optimizer step: the paper's "4k" batch (§2.3, §A.1).
    effective_batch_size: int(3840, 1),
    // Token capacity of one micro-batch (padding included when padding_aware).
    micro_batch_tokens: int(4096, 1),
    // Simulated data-parallel ranks the sampler balances micro-batches over.
    ranks: int(1, 1),
    // The paper's best learning rate for Granite / Llama-family models (§A.1, §A.6.5).
    lr: num(2e-5, { gt: 0 }),
    // Constant: no loss from skipping decay (§A.1, §A.6.3).
    schedule: oneOf(["constant", "cosine", "linear"], "constant"),
    // 0: warmup is not needed (§A.6.6).
    warmup_steps: int(0, 0),
    warmup_ratio: num(0, { min: 0, lt: 1 }),
    min_lr_ratio: num(0, { min: 0, max: 1 }),
    epochs: num(1, { gt: 0 }),
    max_steps: int(null, 1),
    max_samples: int(null, 1),
    // Pause after this many samples of the phase (the schedule still spans the full budget);
    // re-running without it resumes. Sweeps use it for their probe window.
    stop_at_samples: int(null, 1),
    // Adam β1 0.9, β2 0.95 in all of the paper's runs (§A.4).
    beta1: num(0.9, { min: 0, lt: 1 }),
    beta2: num(0.95, { min: 0, lt: 1 }),
    eps: num(1e-8, { gt: 0 }),
    weight_decay: num(0, { min: 0 }),
    // Clip the global gradient norm at 1.0 as instructlab/training does (0 = no clipping).
    max_grad_norm: num(1.0, { min: 0 }),
    // null: save only at the end of each phase.
    save_samples: int(null, 1),
    // null: keep every checkpoint.
    keep_last: int(null, 1),
    // A metrics read-back costs >= 10 ms, so loss/grad-norm are fetched every N steps.
    metrics_every: int(10, 1),
    // Recompute activations in backward (less memory, ~1/3 more compute).
    recompute: bool(false),
    // f16: GEMM multiply-adds in f16 where the adapter offers shader-f16 (f32 weights, optimizer,
    // attention), with dynamic loss scaling; f32 keeps exact parity with PyTorch fp32.
    matmul_precision: oneOf(["f32", "f16"], "f32"),
    // f16 only: the dynamic loss scale's start, a power of two (torch GradScaler's 2^16).
    loss_scale: num(65536, { gt: 0 }),
    save_dtype: oneOf(["f32", "bf16"], "f32"),
    // Count padding against micro_batch_tokens (needed for padded, non-packed attention).
    padding_aware: bool(false),
    // Check loss and gradient norm for NaN/Inf at every metrics read-back and stop on one.
    nan_check: bool(true),
  }),
  eval: obj({
    metrics: list(obj({
      name: str(REQUIRED, { pattern: NAME_PATTERN, patternHint: NAME_HINT }),
      kind: oneOf(["loss", "mc", "exact_match"], REQUIRED),
      data: path("file", REQUIRED),
      shots: int(0, 0),
      limit: int(null, 1),
      // Generation budget of exact_match answers.
      max_tokens: int(64, 1),
      // mc: score by the answer letter (lm-eval acc), the full choice text, or it per character.
      mc_score: oneOf(["letter", "text", "text_norm"], "letter"),
    })),
    // null: the first metric.
    primary: str(null),
    // Pick the checkpoint with the best primary metric at the end of each phase.
    select: bool(true),
  }),
  server: obj({
    enabled: bool(true),
    // Loopback only unless a token is set.
    host: str("127.0.0.1"),
    // 0: pick a free port.
    port: int(0, 0, 65535),
    // null: the FT_SERVER_TOKEN environment variable.
    token: str(null),
  }),
});

function defaultsOf(spec: Spec): unknown {
  if (spec.t === "obj") {
    if (spec.def === null) return null;
    return Object.fromEntries(Object.entries(spec.fields).map(([k, s]) => [k, defaultsOf(s)]));
  }
  if (spec.def === REQUIRED) return undefined;
  return structuredClone(spec.def);
}

function deepFreeze<T>(v: T): T {
  if (v && typeof v === "object") {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/** Every default of the schema (null where the value depends on other keys); frozen. */
export const DEFAULT_CONFIG: Readonly<PipelineDefaults> = deepFreeze(
  defaultsOf(SCHEMA) as PipelineDefaults,
);

// ---------------------------------------------------------------------------------------------
// Locations and errors

type Seg = string | number;

/** Where a value came from: a file position, a --set argument, or a preset. */
interface Origin {
  /** `file:line:col` (file values and preset values: the `preset:` line). */
  where?: string;
  /** The --set key (relative paths then resolve against the current directory). */
  setKey?: string;
  /** Folder that relative paths resolve against. */
  base: string;
  note?: string;
}

function dotted(p: readonly Seg[]): string {
  let s = "";
  for (const seg of p) s += typeof seg === "number" ? `[${seg}]` : (s ? "." : "") + seg;
  return s;
}

/** Maximum number of problems one load reports. */
export const MAX_ERRORS = 20;

/** A pipeline file with problems; `problems` holds one line per problem. */
export class ConfigError extends UserError {
  constructor(
    readonly problems: string[],
    file: string,
    more: number,
    setOrder: readonly string[] = [],
  ) {
    problems = sortProblems(problems, setOrder);
    const head = problems.length + more === 1
      ? problems[0]
      : `${problems.length + more} problems in ${file}:\n  ` + problems.join("\n  ") +
        (more > 0 ? `\n  ... and ${more} more` : "");
    super(head, "fix the pipeline file (or the --set value) and run again");
    this.name = "ConfigError";
  }
}

/** File problems in line/column order first, then the --set ones in argument order. */
function sortProblems(lines: string[], setOrder: readonly string[]): string[] {
  const pos = (l: string) => {
    if (l.startsWith("--set ")) {
      const i = setOrder.indexOf(l.slice(6, l.indexOf(": ")));
      return [Infinity, i < 0 ? setOrder.length : i];
    }
    const m = /^.*?:(\d+):(\d+): /.exec(l);
    return m ? [Number(m[1]), Number(m[2])] : [0, 0];
  };
  return lines
    .map((l, i) => ({ l, i, p: pos(l) }))
    .sort((a, b) => a.p[0] - b.p[0] || a.p[1] - b.p[1] || a.i - b.i)
    .map((x) => x.l);
}

class Checker {
  problems: string[] = [];
  more = 0;
  values = new Map<string, Origin>();
  keys = new Map<string, Origin>();
  /** The label of every --set argument, in order (problems are sorted by it). */
  setOrder: string[] = [];
  /** Path-typed values seen while checking, for ${run_dir} expansion and existence checks. */
  paths: { p: Seg[]; kind: "file" | "dir" }[] = [];

  constructor(readonly display: string, readonly fileDir: string) {}

  /** The origin of `p` (its value, or its key), falling back to the nearest ancestor. */
  origin(p: readonly Seg[], which: "value" | "key" = "value"): Origin {
    for (let n = p.length; n >= 0; n--) {
      const k = dotted(p.slice(0, n));
      const o = (which === "key" && n === p.length ? this.keys.get(k) : undefined) ??
        this.values.get(k) ?? this.keys.get(k);
      if (o) return o;
    }
    return { where: this.display, base: this.fileDir };
  }

  /** Dotted keys that already have a problem (cross-field checks skip them: no cascades). */
  bad = new Set<string>();

  /** Whether `p`, something under it, or an ancestor of it already has a problem. */
  failed(p: readonly Seg[]): boolean {
    const k = dotted(p);
    for (const b of this.bad) {
      if (b === k || b.startsWith(k + ".") || b.startsWith(k + "[")) return true;
      if (k.startsWith(b + ".") || k.startsWith(b + "[")) return true;
    }
    return false;
  }

  error(p: readonly Seg[], msg: string, which: "value" | "key" = "value"): void {
    this.bad.add(dotted(p));
    if (this.problems.length >= MAX_ERRORS) {
      this.more++;
      return;
    }
    const o = this.origin(p, which);
    const key = dotted(p);
    const note = o.note ? ` (${o.note})` : "";
    if (o.setKey !== undefined) {
      const sub = key && key !== o.setKey ? `${key}: ` : "";
      this.problems.push(`--set ${o.setKey}: ${sub}${msg}${note}`);
    } else {
      this.problems.push(`${o.where}: ${key ? key + ": " : ""}${msg}${note}`);
    }
  }

  /** Add a problem line as it is. */
  raw(line: string): void {
    if (this.problems.length >= MAX_ERRORS) this.more++;
    else this.problems.push(line);
  }

  /** Drop the origins of `p` and everything under it (a --set replaced them). */
  forget(p: readonly Seg[]): void {
    const k = dotted(p);
    for (const m of [this.values, this.keys]) {
      for (const key of [...m.keys()]) {
        if (key === k || key.startsWith(k + ".") || key.startsWith(k + "[")) m.delete(key);
      }
    }
  }
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return "nothing";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a map";
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? v.slice(0, 37) + "..." : v);
  return String(v);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(
        d[i - 1][j] + 1,
        d[i][j - 1] + 1,
        d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
  }
  return d[a.length][b.length];
}

function suggest(word: string, options: readonly string[]): string {
  let best = "", bestD = Infinity;
  for (const o of options) {
    const dist = editDistance(word.toLowerCase(), o.toLowerCase());
    if (dist < bestD) [best, bestD] = [o, dist];
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? ` (did you mean ${best}?)` : "";
}

// ---------------------------------------------------------------------------------------------
// Checking one value against its spec: returns the value with defaults filled in. An invalid
// value is reported and replaced by its default (so later cross-field checks still see types).

function placeholder(spec: Spec): unknown {
  const d = defaultsOf(spec);
  if (d !== undefined) return d;
  switch (spec.t) {
    case "str":
    case "path":
    case "enum":
      return "";
    case "int":
    case "num":
      return 0;
    case "list":
      return [];
    default:
      return null;
  }
}

const TYPE_WORDS: Record<Spec["t"], string> = {
  str: "a string",
  int: "an integer",
  num: "a number",
  bool: "true or false",
  enum: "one of",
  scalar: "a number, true/false or a string",
  path: "a path",
  obj: "a map",
  list: "a list",
  map: "a map",
};

function check(spec: Spec, v: unknown, p: Seg[], c: Checker): unknown {
  if (v === undefined) {
    if (spec.t === "obj" && spec.def !== null) v = {};
    else if (spec.def === REQUIRED) {
      c.error(p, "missing (required)", "key");
      return placeholder(spec);
    } else return structuredClone(spec.def);
  }
  if (v === null) {
    if ("nullable" in spec && spec.nullable) return null;
    if (spec.t === "list" && spec.def === null) return null;
    c.error(p, `expected ${expectText(spec)}, got nothing`);
    return placeholder(spec);
  }
  const bad = () => {
    c.error(p, `expected ${expectText(spec)}, got ${describe(v)}`);
    return placeholder(spec);
  };
  switch (spec.t) {
    case "str": {
      if (typeof v !== "string") return bad();
      if (spec.pattern && !spec.pattern.test(v)) {
        c.error(p, `${describe(v)} is not a valid name (${spec.patternHint})`);
        return placeholder(spec);
      }
      return v;
    }
    case "int":
    case "num": {
      if (typeof v !== "number" || !Number.isFinite(v)) return bad();
      if (spec.t === "int" && !Number.isInteger(v)) return bad();
      const r = spec as { min?: number; max?: number; gt?: number; lt?: number };
      const range = r.min !== undefined && v < r.min
        ? `>= ${r.min}`
        : r.max !== undefined && v > r.max
        ? `<= ${r.max}`
        : r.gt !== undefined && v <= r.gt
        ? `> ${r.gt}`
        : r.lt !== undefined && v >= r.lt
        ? `< ${r.lt}`
        : null;
      if (range) {
        c.error(p, `must be ${range}, got ${v}`);
        return placeholder(spec);
      }
      return v;
    }
    case "bool":
      return typeof v === "boolean" ? v : bad();
    case "enum": {
      if (typeof v !== "string" || !spec.values.includes(v)) {
        const hint = typeof v === "string" ? suggest(v, spec.values) : "";
        c.error(p, `expected ${expectText(spec)}, got ${describe(v)}${hint}`);
        return placeholder(spec);
      }
      return v;
    }
    case "scalar":
      return ["number", "boolean", "string"].includes(typeof v) ? v : bad();
    case "path": {
      if (typeof v !== "string" || v === "") return bad();
      if (spec.words?.includes(v)) return v;
      c.paths.push({ p: p.slice(), kind: spec.kind });
      if (v.startsWith(RUN_DIR_VAR)) return v; // expanded once run.dir is known
      return resolve(c.origin(p).base, v);
    }
    case "obj": {
      if (!isPlainObject(v)) return bad();
      const out: Record<string, unknown> = {};
      const known = Object.keys(spec.fields);
      for (const k of Object.keys(v)) {
        // A top-level `sweep:` block belongs to `deno task sweep` (pipeline/sweep.ts); train ignores it.
        if (p.length === 0 && k === "sweep") continue;
        if (!(k in spec.fields)) c.error([...p, k], `unknown key${suggest(k, known)}`, "key");
      }
      for (const [k, s] of Object.entries(spec.fields)) out[k] = check(s, v[k], [...p, k], c);
      return out;
    }
    case "list": {
      if (!Array.isArray(v)) return bad();
      if (v.length < (spec.minItems ?? 0)) {
        c.error(p, `needs at least ${spec.minItems} item${spec.minItems === 1 ? "" : "s"}`);
      }
      return v.map((x, i) => check(spec.item, x, [...p, i], c));
    }
    case "map": {
      if (!isPlainObject(v)) return bad();
      return Object.fromEntries(
        Object.entries(v).map(([k, x]) => [k, check(spec.value, x, [...p, k], c)]),
      );
    }
  }
}

function expectText(spec: Spec): string {
  if (spec.t === "enum") return `one of ${spec.values.join(", ")}`;
  if (spec.t === "path" && spec.words) {
    return `${spec.words.join(", ")} or a path to a ${spec.kind === "file" ? "file" : "folder"}`;
  }
  return TYPE_WORDS[spec.t];
}

// ---------------------------------------------------------------------------------------------
// Reading the YAML with locations, applying --set and the preset

/** Prefix of path values that live in the run dir (e.g. files a synthetic block generates). */
export const RUN_DIR_VAR = "${run_dir}";

function recordLocations(
  node: unknown,
  p: Seg[],
  c: Checker,
  lc: LineCounter,
): void {
  const pos = (n: unknown) => {
    const range = (n as YamlNode | null)?.range;
    if (!range) return undefined;
    const { line, col } = lc.linePos(range[0]);
    return where(c.display, line, col);
  };
  const at = pos(node);
  if (at) c.values.set(dotted(p), { where: at, base: c.fileDir });
  if (isMap(node)) {
    for (const pair of node.items) {
      if (!isPair(pair)) continue;
      const k = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const child = [...p, k];
      const kAt = pos(pair.key);
      if (kAt) c.keys.set(dotted(child), { where: kAt, base: c.fileDir });
      recordLocations(pair.value, child, c, lc);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => recordLocations(item, [...p, i], c, lc));
  }
}

function recordSetOrigins(v: unknown, p: Seg[], origin: Origin, c: Checker): void {
  c.values.set(dotted(p), origin);
  c.keys.set(dotted(p), origin);
  if (Array.isArray(v)) v.forEach((x, i) => recordSetOrigins(x, [...p, i], origin, c));
  else if (isPlainObject(v)) {
    for (const [k, x] of Object.entries(v)) recordSetOrigins(x, [...p, k], origin, c);
  }
}

/** Apply one `a.b=c` override to `tree` (creating maps on the way). */
function applySet(tree: Record<string, unknown>, arg: string, c: Checker, cwd: string): void {
  const eq = arg.indexOf("=");
  const keyText = (eq < 0 ? arg : arg.slice(0, eq)).trim();
  const raw = keyText.replace(/\[(\d+)\]/g, ".$1").split(".");
  const label = raw.some((s) => s === "")
    ? keyText || arg
    : dotted(raw.map((s) => /^\d+$/.test(s) ? Number(s) : s));
  c.setOrder.push(label);
  const origin: Origin = { setKey: label, base: cwd };
  const fail = (msg: string) => c.raw(`--set ${label}: ${msg}`);
  if (eq <= 0 || !keyText) return fail("expected KEY=VALUE, e.g. --set train.lr=1e-4");
  if (raw.some((s) => s === "")) return fail("bad key (empty segment)");
  let value: unknown;
  try {
    value = parseYaml(arg.slice(eq + 1));
  } catch (e) {
    return fail(`cannot parse the value as YAML: ${(e as Error).message.split("\n")[0]}`);
  }
  value ??= null;
  const p: Seg[] = [];
  let cur: unknown = tree;
  for (let i = 0; i < raw.length; i++) {
    const last = i === raw.length - 1;
    let seg: Seg = raw[i];
    if (Array.isArray(cur)) {
      const idx = Number(seg);
      if (!Number.isInteger(idx) || idx < 0 || idx > cur.length) {
        return fail(`${dotted(p)} is a list of ${cur.length}: index ${seg} is out of range`);
      }
      seg = idx;
    } else if (!isPlainObject(cur)) {
      return fail(`${dotted(p)} is ${describe(cur)}, not a map`);
    }
    p.push(seg);
    const box = cur as Record<string | number, unknown>;
    if (last) {
      box[seg] = value;
    } else {
      if (box[seg] === undefined || box[seg] === null) {
        box[seg] = /^\d+$/.test(raw[i + 1]) ? [] : {};
      }
      cur = box[seg];
    }
  }
  c.forget(p);
  recordSetOrigins(value, p, origin, c);
}

/** Fill the preset's values into `tree` wherever the file and --set left them unset. */
function mergePreset(
  tree: Record<string, unknown>,
  values: Record<string, unknown>,
  p: Seg[],
  origin: Origin,
  c: Checker,
): void {
  for (const [k, v] of Object.entries(values)) {
    const child = [...p, k];
    if (isPlainObject(v)) {
      if (tree[k] === undefined) tree[k] = {};
      if (isPlainObject(tree[k])) {
        mergePreset(tree[k] as Record<string, unknown>, v, child, origin, c);
      }
    } else if (tree[k] === undefined) {
      tree[k] = structuredClone(v);
      c.values.set(dotted(child), origin);
    }
  }
}

function getAt(tree: unknown, p: readonly Seg[]): unknown {
  let cur = tree;
  for (const s of p) cur = (cur as Record<string | number, unknown> | null)?.[s];
  return cur;
}

function setAt(tree: unknown, p: readonly Seg[], v: unknown): void {
  const parent = getAt(tree, p.slice(0, -1)) as Record<string | number, unknown>;
  parent[p[p.length - 1]] = v;
}

function statKind(path: string): "file" | "dir" | null {
  try {
    const st = Deno.statSync(path);
    return st.isDirectory ? "dir" : "file";
  } catch {
    return null;
  }
}

function readEnv(name: string): string | null {
  try {
    return Deno.env.get(name) ?? null;
  } catch {
    return null;
  }
}

const LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1"];

// ---------------------------------------------------------------------------------------------

/**
 * Read, merge (defaults < preset < file < --set) and validate a pipeline YAML; resolve every
 * relative path against the file's folder (--set paths against the current directory), `${run_dir}`
 * against the run dir, and fill the dependent defaults. Throws a ConfigError (a UserError)
 * listing every problem found (up to MAX_ERRORS), each with its file:line:col and dotted key.
 */
export async function loadPipelineConfig(
  path: string,
  sets: string[] = [],
): Promise<PipelineConfig> {
  const cwd = Deno.cwd();
  const file = resolve(cwd, path);
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(`${path}: pipeline file not found`, "pass the path of a pipeline YAML");
    }
    if (e instanceof Deno.errors.IsADirectory) {
      throw new UserError(`${path}: is a folder, not a pipeline file`);
    }
    throw new UserError(`${path}: cannot read: ${(e as Error).message}`);
  }
  const c = new Checker(path, dirname(file));
  const fail = () => {
    throw new ConfigError(c.problems, path, c.more, c.setOrder);
  };

  // 1. Parse, keeping line/column of every node.
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  for (const e of doc.errors.slice(0, MAX_ERRORS)) {
    const pos = e.linePos?.[0];
    const msg = e.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
    c.problems.push(`${where(path, pos?.line, pos?.col)}: ${msg}`);
  }
  if (c.problems.length) fail();
  const tree0 = doc.toJS() ?? {};
  if (!isPlainObject(tree0)) {
    c.problems.push(
      `${path}: expected a map of sections (run, model, data, ...), got ${describe(tree0)}`,
    );
    fail();
  }
  const tree = tree0 as Record<string, unknown>;
  recordLocations(doc.contents, [], c, lc);

  // 2. --set overrides, then the preset under everything explicit.
  for (const s of sets) applySet(tree, s, c, cwd);
  const presetName = tree.preset;
  if (typeof presetName === "string" && (PRESET_NAMES as readonly string[]).includes(presetName)) {
    const at = c.origin(["preset"]);
    mergePreset(tree, PRESETS[presetName as PresetName] as unknown as Record<string, unknown>, [], {
      ...at,
      note: `from preset ${presetName}`,
    }, c);
  }

  // 3. Schema.
  const cfg = check(SCHEMA, tree, [], c) as Omit<PipelineConfig, "source">;

  // 4. Dependent defaults and paths.
  const { run, model, data, train } = cfg;
  if (run.name === null) {
    const stem = basename(file, extname(file));
    run.name = NAME_PATTERN.test(stem) ? stem : "run";
  }
  const runDir = (run.dir as string | null) ?? join(cwd, "runs", run.name);
  if (runDir.startsWith(RUN_DIR_VAR)) c.error(["run", "dir"], `cannot use ${RUN_DIR_VAR} itself`);
  run.dir = runDir;
  const synthDir = join(runDir, SYNTH_SUBDIR);
  for (const { p } of c.paths) {
    const v = getAt(cfg, p);
    if (typeof v === "string" && v.startsWith(RUN_DIR_VAR)) {
      setAt(cfg, p, join(runDir, v.slice(RUN_DIR_VAR.length)));
    }
  }
  if (data.synthetic) {
    data.synthetic.seed ??= run.seed;
    if (
      data.phases.length === 0 && !c.failed(["data", "phases"]) && !c.failed(["data", "synthetic"])
    ) {
      data.phases = [
        {
          name: "knowledge",
          train: [join(synthDir, SYNTH_FILES.knowledgeTrain)],
          difficulty_split: false,
        },
        {
          name: "skills",
          train: [join(synthDir, SYNTH_FILES.skillsTrain)],
          difficulty_split: false,
        },
      ];
    }
  }
  if (model.init) {
    model.init.seed ??= run.seed;
    (model.init as { tokenizer_corpus: string[] | null }).tokenizer_corpus ??= [
      ...new Set(data.phases.flatMap((ph) => ph.train)),
    ];
  }
  const server = cfg.server;
  server.token ??= readEnv("FT_SERVER_TOKEN");

  // 5. Cross-field checks.
  const warnings: string[] = [];
  if (!c.failed(["train", "loss_scale"]) && Math.log2(train.loss_scale) % 1 !== 0) {
    c.error(["train", "loss_scale"], `must be a power of two, got ${train.loss_scale}`);
  }
  const fromPreset = (p: Seg[]) => {
    const note = c.origin(p).note;
    return note ? `, ${note}` : "";
  };
  if ((model.path === null) === (model.init === null) && !c.failed(["model"])) {
    c.error(
      ["model"],
      model.path === null
        ? "set model.path (an HF model folder) or model.init (a new model from a preset)"
        : "set only one of model.path and model.init",
      "key",
    );
  }
  if (
    data.phases.length === 0 && !c.failed(["data", "phases"]) && !c.failed(["data", "synthetic"])
  ) {
    c.error(
      ["data", "phases"],
      "no training data: list at least one phase or add data.synthetic",
      "key",
    );
  }
  const phaseNames = new Set<string>();
  data.phases.forEach((ph, i) => {
    if (ph.name && phaseNames.has(ph.name)) {
      c.error(["data", "phases", i, "name"], `duplicate phase name ${ph.name}`);
    }
    phaseNames.add(ph.name);
  });
  if (train.strategy === "phased" && data.phases.length === 1) {
    warnings.push(
      "train.strategy is phased but there is only one phase: this is the same as stacked training",
    );
  }
  if (
    train.warmup_steps > 0 && train.warmup_ratio > 0 && !c.failed(["train", "warmup_steps"]) &&
    !c.failed(["train", "warmup_ratio"])
  ) {
    c.error(
      ["train", "warmup_ratio"],
      `set only one of warmup_steps (${train.warmup_steps}${
        fromPreset(["train", "warmup_steps"])
      }) and warmup_ratio (${train.warmup_ratio}${fromPreset(["train", "warmup_ratio"])})`,
    );
  }
  if (
    train.micro_batch_tokens < data.max_seq_len && !c.failed(["train", "micro_batch_tokens"]) &&
    !c.failed(["data", "max_seq_len"])
  ) {
    c.error(
      ["train", "micro_batch_tokens"],
      `must be >= data.max_seq_len (${data.max_seq_len}) so one sample fits a micro-batch`,
    );
  }
  const metricNames = new Set<string>();
  cfg.eval.metrics.forEach((m, i) => {
    if (m.name && metricNames.has(m.name)) {
      c.error(["eval", "metrics", i, "name"], `duplicate metric name ${m.name}`);
    }
    metricNames.add(m.name);
  });
  if (cfg.eval.primary === null) cfg.eval.primary = cfg.eval.metrics[0]?.name ?? null;
  else if (!metricNames.has(cfg.eval.primary) && !c.failed(["eval"])) {
    c.error(
      ["eval", "primary"],
      cfg.eval.metrics.length
        ? `no metric named ${cfg.eval.primary}; one of ${[...metricNames].join(", ")}`
        : `no metric named ${cfg.eval.primary} (eval.metrics is empty)`,
    );
  }
  if (server.enabled && !LOCAL_HOSTS.includes(server.host) && !server.token) {
    c.error(
      ["server", "host"],
      `serving on ${server.host} (not loopback) needs server.token or FT_SERVER_TOKEN`,
    );
  }

  // 6. Files and folders must exist (except the ones the synthetic block will write).
  for (const { p, kind } of c.paths) {
    const v = getAt(cfg, p);
    if (typeof v !== "string" || !isAbsolute(v)) continue;
    if (v.startsWith(synthDir + "/")) {
      const name = relative(synthDir, v);
      const generated = (Object.values(SYNTH_FILES) as string[]).includes(name);
      if (!data.synthetic) {
        if (statKind(v) === null) {
          c.error(p, `${v} does not exist (no data.synthetic block makes it)`);
        }
      } else if (!generated) {
        c.error(p, `data.synthetic makes ${Object.values(SYNTH_FILES).join(", ")}, not ${name}`);
      }
      continue;
    }
    if (p[0] === "run") continue; // the run dir is created
    const found = statKind(v);
    if (found === null) c.error(p, `${kind === "dir" ? "folder" : "file"} not found: ${v}`);
    else if (found !== kind) c.error(p, `expected a ${kind === "dir" ? "folder" : "file"}: ${v}`);
    else if (p.join(".") === "model.path" && statKind(join(v, "config.json")) !== "file") {
      c.error(p, `${v} has no config.json (not an HF model folder)`);
    }
  }
  if (c.problems.length) fail();
  return { ...cfg, source: { file, display: path, sets: [...sets], warnings } };
}

/**
 * The fully resolved config as YAML (what `<run dir>/config.resolved.yaml` holds): every key,
 * absolute paths, no `${run_dir}`; the server token is never written (null). Loading it back
 * gives the same config.
 */
export function resolvedYaml(cfg: PipelineConfig): string {
  const { source, ...rest } = cfg;
  const body = structuredClone(rest);
  body.server.token = null;
  const doc = new Document(body);
  const sets = source.sets.length ? ` with ${source.sets.map((s) => `--set ${s}`).join(" ")}` : "";
  doc.commentBefore = ` Fully resolved pipeline config, from ${source.file}${sets}.\n` +
    ` Defaults, the preset and every relative path are filled in; server.token is not written.`;
  return doc.toString({ lineWidth: 0 });
}
