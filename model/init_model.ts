// init-model: write a randomly initialised Llama-family model and a generated (or copied) tokenizer.
import { UserError } from "../pipeline/errors.ts";
import {
  BUILTIN_CORPUS,
  specialTokensMapJson,
  tokenizerConfigJson,
  tokenizerJson,
  trainBpe,
} from "./bpe.ts";
import {
  type ModelConfig,
  numel,
  parameterCount,
  parameterShapes,
  parseModelConfig,
} from "./config.ts";
import { readModelConfig, saveHfModel } from "./hf_dir.ts";

/** HF config.json contents of each preset (token ids are filled in from the tokenizer). */
export const PRESETS: Record<string, Record<string, unknown>> = {
  tiny: {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 64,
    intermediate_size: 176,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 512,
    max_position_embeddings: 2048,
    rope_theta: 10000.0,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
  },
  stories15m: {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 288,
    intermediate_size: 768,
    num_hidden_layers: 6,
    num_attention_heads: 6,
    num_key_value_heads: 6,
    vocab_size: 32000,
    max_position_embeddings: 256,
    rope_theta: 10000.0,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
  },
  "smollm2-135m": {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 576,
    intermediate_size: 1536,
    num_hidden_layers: 30,
    num_attention_heads: 9,
    num_key_value_heads: 3,
    vocab_size: 49152,
    max_position_embeddings: 8192,
    rope_theta: 100000.0,
    rms_norm_eps: 1e-5,
    initializer_range: 0.041666666666666664,
    tie_word_embeddings: true,
  },
  "llama-3.2-1b": {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 2048,
    intermediate_size: 8192,
    num_hidden_layers: 16,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    head_dim: 64,
    vocab_size: 128256,
    max_position_embeddings: 131072,
    rope_theta: 500000.0,
    rope_scaling: {
      factor: 32.0,
      high_freq_factor: 4.0,
      low_freq_factor: 1.0,
      original_max_position_embeddings: 8192,
      rope_type: "llama3",
    },
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
  },
};

const COMMON = {
  hidden_act: "silu",
  initializer_range: 0.02,
  attention_bias: false,
  mlp_bias: false,
  torch_dtype: "float32",
};

/** Options of initModel. */
export interface InitModelOptions {
  out: string;
  preset?: string;
  /** HF config keys to override (dotted keys set nested fields, e.g. rope_scaling.factor). */
  set?: Record<string, unknown>;
  seed?: number;
  /** Copy this directory's tokenizer instead of training one. */
  tokenizer?: string;
  /** Target tokenizer size (default: the config's vocab_size). */
  vocab?: number;
  /** Text files to train the tokenizer on (default: a built-in English text). */
  corpus?: string[];
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

/** What initModel wrote. */
export interface InitModelResult {
  dir: string;
  config: ModelConfig;
  /** Number of tokens the tokenizer knows (≤ vocab_size). */
  tokenizerSize: number;
}

/** Parse `key=value` pairs; values are JSON when they parse as JSON, else strings. */
export function parseSetPairs(pairs: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const p of pairs) {
    const eq = p.indexOf("=");
    if (eq <= 0) throw new UserError(`--set ${p}: expected key=value`);
    const key = p.slice(0, eq).trim(), text = p.slice(eq + 1).trim();
    let value: unknown = text;
    try {
      value = JSON.parse(text);
    } catch { /* a plain string */ }
    out[key] = value;
  }
  return out;
}

function applySet(raw: Record<string, unknown>, set: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(set)) {
    const path = key.split(".");
    let obj = raw;
    for (const k of path.slice(0, -1)) {
      const next = obj[k];
      if (typeof next !== "object" || next === null || Array.isArray(next)) obj[k] = {};
      obj = obj[k] as Record<string, unknown>;
    }
    obj[path[path.length - 1]] = value;
  }
}

/** A 32-bit hash of a string (FNV-1a then a murmur finalizer). */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Deterministic normal(0, std) values for one tensor: sfc32 seeded from (seed, name), Box–Muller.
 * The same seed and name always give the same values, whatever order tensors are made in.
 */
export function seededNormal(n: number, std: number, seed: number, name: string): Float32Array {
  let a = hash32(`a${seed}:${name}`), b = hash32(`b${seed}:${name}`);
  let c = hash32(`c${seed}:${name}`), d = hash32(`d${seed}:${name}`) | 1;
  const next = () => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return (t + 0.5) / 4294967296; // in (0, 1)
  };
  for (let i = 0; i < 12; i++) next();
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(next())) * std, th = 2 * Math.PI * next();
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

/** The initial value of a parameter: ones for norms, zeros for biases, normal(0, range) otherwise. */
export function initTensor(
  cfg: ModelConfig,
  name: string,
  shape: number[],
  seed: number,
): Float32Array {
  const n = numel(shape);
  if (name.endsWith("norm.weight")) return new Float32Array(n).fill(1);
  if (name.endsWith(".bias")) return new Float32Array(n);
  return seededNormal(n, cfg.initializerRange, seed, name);
}

function tokenContent(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return null;
}

/** Size and special-token ids of an existing tokenizer directory. */
async function inspectTokenizer(dir: string) {
  const file = `${dir}/tokenizer.json`;
  let tj: { model?: { vocab?: unknown }; added_tokens?: { id: number; content: string }[] };
  try {
    tj = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    throw new UserError(
      `${file}: cannot read (${(e as Error).message})`,
      "--tokenizer names a model directory",
    );
  }
  const ids = new Map<string, number>();
  const vocab = tj.model?.vocab;
  if (vocab && typeof vocab === "object" && !Array.isArray(vocab)) {
    for (const [t, id] of Object.entries(vocab as Record<string, number>)) ids.set(t, id);
  } else if (Array.isArray(vocab)) {
    (vocab as [string, number][]).forEach(([t], i) => ids.set(t, i));
  }
  for (const t of tj.added_tokens ?? []) ids.set(t.content, t.id);
  let size = 0;
  for (const id of ids.values()) size = Math.max(size, id + 1);
  let tc: Record<string, unknown> = {};
  try {
    tc = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
  } catch { /* optional */ }
  const idOf = (k: string) => {
    const c = tokenContent(tc[k]);
    return c !== null && ids.has(c) ? ids.get(c)! : null;
  };
  return { size, bos: idOf("bos_token"), eos: idOf("eos_token"), pad: idOf("pad_token") };
}

async function isNonEmptyDir(path: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(path)) return true;
    return false;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    if (e instanceof Deno.errors.NotADirectory) return true;
    throw e;
  }
}

/**
 * Write a randomly initialised model at opts.out: HF config.json (preset + overrides), weights (f32,
 * seeded), and a tokenizer trained by model/bpe.ts (or copied from opts.tokenizer).
 */
export async function initModel(opts: InitModelOptions): Promise<InitModelResult> {
  const log = opts.log ?? (() => {});
  const preset = opts.preset ?? "tiny";
  if (!(preset in PRESETS)) {
    throw new UserError(
      `unknown preset '${preset}'`,
      `presets: ${Object.keys(PRESETS).join(", ")}`,
    );
  }
  if (await isNonEmptyDir(opts.out)) {
    throw new UserError(`${opts.out} already exists`, "choose a new --out directory or delete it");
  }
  if (opts.tokenizer && (opts.vocab !== undefined || (opts.corpus?.length ?? 0) > 0)) {
    throw new UserError("--tokenizer cannot be combined with --vocab or --corpus");
  }
  const seed = opts.seed ?? 0;
  const set = opts.set ?? {};
  const raw: Record<string, unknown> = structuredClone(PRESETS[preset]);
  for (const [k, v] of Object.entries(COMMON)) if (!(k in raw)) raw[k] = v;
  applySet(raw, set);
  const source = `init-model --preset ${preset}`;
  if (
    typeof raw.vocab_size !== "number" || !Number.isInteger(raw.vocab_size) || raw.vocab_size <= 0
  ) {
    throw new UserError(`${source}: field 'vocab_size' must be a positive integer`);
  }
  const vocabSet = "vocab_size" in set;
  parseModelConfig(raw, source); // fail fast on bad fields, before training a tokenizer

  let extraFiles: Record<string, string> | undefined;
  let generationConfig: Record<string, unknown> | undefined;
  let tokenizerSize: number;
  if (opts.tokenizer) {
    const t = await inspectTokenizer(opts.tokenizer);
    tokenizerSize = t.size;
    if (!vocabSet) raw.vocab_size = t.size;
    for (
      const [k, id] of [["bos_token_id", t.bos], ["eos_token_id", t.eos], [
        "pad_token_id",
        t.pad,
      ]] as const
    ) {
      if (id !== null && !(k in set)) raw[k] = id;
    }
    log(`tokenizer: copied from ${opts.tokenizer} (${t.size} tokens)`);
  } else {
    const target = opts.vocab ?? (raw.vocab_size as number);
    const texts: string[] = [];
    for (const f of opts.corpus ?? []) {
      try {
        texts.push(await Deno.readTextFile(f));
      } catch (e) {
        throw new UserError(`--corpus ${f}: cannot read (${(e as Error).message})`);
      }
    }
    if (texts.length === 0) texts.push(BUILTIN_CORPUS);
    let bpe;
    try {
      bpe = trainBpe(texts, { vocabSize: target });
    } catch (e) {
      throw new UserError(`tokenizer: ${(e as Error).message}`);
    }
    tokenizerSize = bpe.vocab.length;
    if (opts.vocab !== undefined && !vocabSet) raw.vocab_size = tokenizerSize;
    if (tokenizerSize < target) {
      log(
        `tokenizer: the corpus gave ${tokenizerSize} of the ${target} tokens asked for ` +
          `(no pair left occurring twice); give more text with --corpus for a larger vocabulary`,
      );
    } else log(`tokenizer: trained byte-level BPE with ${tokenizerSize} tokens`);
    for (const k of ["bos_token_id", "eos_token_id", "pad_token_id"]) if (!(k in set)) raw[k] = 0;
    const maxLen = typeof raw.max_position_embeddings === "number"
      ? raw.max_position_embeddings
      : 2048;
    extraFiles = {
      "tokenizer.json": JSON.stringify(tokenizerJson(bpe)) + "\n",
      "tokenizer_config.json": JSON.stringify(tokenizerConfigJson(bpe, maxLen), null, 2) + "\n",
      "special_tokens_map.json": JSON.stringify(specialTokensMapJson(), null, 2) + "\n",
    };
    // chat generation stops at <|im_end|> as well as <|endoftext|>
    generationConfig = { bos_token_id: 0, eos_token_id: [0, 2], pad_token_id: 0 };
  }
  if ((raw.vocab_size as number) < tokenizerSize) {
    throw new UserError(
      `${source}: field 'vocab_size' (${raw.vocab_size}) is smaller than the tokenizer (${tokenizerSize} tokens)`,
    );
  }
  const cfg = parseModelConfig(raw, source);
  const tensors = new Map<string, () => Float32Array>();
  for (const { name, shape } of parameterShapes(cfg)) {
    tensors.set(name, () => initTensor(cfg, name, shape, seed));
  }
  await saveHfModel(opts.out, {
    config: cfg,
    tensors,
    dtype: "f32",
    tokenizerFrom: opts.tokenizer,
    extraFiles,
    generationConfig,
  });
  const config = await readModelConfig(opts.out);
  log(
    `wrote ${opts.out}: ${preset} (${(parameterCount(config) / 1e6).toFixed(2)}M parameters, ` +
      `vocab ${config.vocabSize}, seed ${seed})`,
  );
  return { dir: opts.out, config, tokenizerSize };
}

function intFlag(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || !Number.isInteger(n) || n < 0) {
    throw new UserError(`${flag} must be a non-negative integer (got ${JSON.stringify(v)})`);
  }
  return n;
}

/** `deno task init-model --out DIR [--preset P] [--set k=v ...] [--seed N] [--tokenizer DIR | --vocab N --corpus FILE...]` */
export async function initModelCommand(
  values: Record<string, unknown>,
  positionals: string[],
): Promise<number> {
  if (positionals.length > 0) throw new UserError(`unexpected argument '${positionals[0]}'`);
  if (typeof values.out !== "string" || values.out === "") {
    throw new UserError("--out DIR is required", "e.g. deno task init-model --out models/tiny");
  }
  const list = (
    v: unknown,
  ) => (v === undefined ? [] : Array.isArray(v) ? v.map(String) : [String(v)]);
  await initModel({
    out: values.out,
    preset: values.preset as string | undefined,
    set: parseSetPairs(list(values.set)),
    seed: intFlag(values.seed, "--seed"),
    tokenizer: values.tokenizer as string | undefined,
    vocab: intFlag(values.vocab, "--vocab"),
    corpus: list(values.corpus),
    log: (s) => console.log(s),
  });
  return 0;
}
