// Hugging Face model directories: load config + weights (streamed or whole), save atomically with tokenizer.
import { UserError } from "../pipeline/errors.ts";
import { type ModelConfig, parameterShapes, parseModelConfig } from "./config.ts";
import {
  SafetensorsReader,
  type SaveDtype,
  type TensorToWrite,
  writeSafetensorsDir,
} from "./safetensors.ts";
import { pathExists } from "../pipeline/run_dir.ts";

/** Tokenizer files copied next to the weights when present (tokenizer.json is required). */
export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja",
  "chat_template.json",
];

/** Tensors a checkpoint may hold that are not parameters (ignored on load). */
const IGNORED_TENSOR = /(^|\.)rotary_emb\.inv_freq$/;

/** Read and validate DIR/config.json. */
export async function readModelConfig(dir: string): Promise<ModelConfig> {
  const file = `${dir.replace(/\/+$/, "")}/config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch {
    throw new UserError(
      `${file}: not found`,
      "a model directory needs config.json (Hugging Face layout); create one with `deno task init-model`",
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseModelConfig(json, file);
}

/** A model directory opened for streaming: read parameters one by one, then close. */
export interface HfModelReader {
  dir: string;
  config: ModelConfig;
  /** Parameter names in parameterShapes order (lm_head absent when tied). */
  names: string[];
  /** Read one parameter as f32. */
  read(name: string): Promise<Float32Array>;
  close(): void;
}

/**
 * Open DIR for streaming: validates that every parameter of the config is present with the right
 * shape (a tied model may omit lm_head.weight) and that there are no unknown tensors.
 */
export async function openHfModel(dir: string): Promise<HfModelReader> {
  dir = dir.replace(/\/+$/, "");
  const config = await readModelConfig(dir);
  const reader = await SafetensorsReader.open(dir);
  try {
    const shapes = parameterShapes(config);
    const expected = new Set(shapes.map((s) => s.name));
    for (const { name, shape } of shapes) {
      const info = reader.info(name);
      if (!info) {
        const hint = name === "lm_head.weight"
          ? "the config says tie_word_embeddings is false, so the checkpoint must hold lm_head.weight"
          : "the checkpoint does not match config.json";
        throw new UserError(`${dir}: tensor '${name}' is missing from the checkpoint`, hint);
      }
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
        throw new UserError(
          `${info.file}: tensor '${name}' has shape [${info.shape}], config.json implies [${shape}]`,
        );
      }
    }
    for (const name of reader.names()) {
      if (expected.has(name) || IGNORED_TENSOR.test(name)) continue;
      if (name === "lm_head.weight" && config.tieWordEmbeddings) continue;
      throw new UserError(
        `${reader.info(name)!.file}: unexpected tensor '${name}'`,
        "the checkpoint does not match config.json (biases or layers the config does not declare?)",
      );
    }
  } catch (e) {
    reader.close();
    throw e;
  }
  return {
    dir,
    config,
    names: parameterShapes(config).map((s) => s.name),
    read: (name) => reader.read(name),
    close: () => reader.close(),
  };
}

/** A model held in memory. */
export interface HfModel {
  config: ModelConfig;
  tensors: Map<string, Float32Array>;
}

/** Load DIR entirely: config and every parameter as f32 (lm_head absent when tied). */
export async function loadHfModel(dir: string): Promise<HfModel> {
  const r = await openHfModel(dir);
  try {
    const tensors = new Map<string, Float32Array>();
    for (const name of r.names) tensors.set(name, await r.read(name));
    return { config: r.config, tensors };
  } finally {
    r.close();
  }
}

/** Options of saveHfModel. */
export interface SaveOptions {
  config: ModelConfig;
  /** Every parameter (names of parameterShapes); values now or produced on demand. */
  tensors: Map<string, Float32Array | (() => Promise<Float32Array> | Float32Array)>;
  dtype: SaveDtype;
  /** Copy tokenizer files (and generation_config.json when present) from this directory. */
  tokenizerFrom?: string;
  /** Extra files written as given (name → text), e.g. a generated tokenizer. */
  extraFiles?: Record<string, string>;
  /** Shard the weights into files of at most this many bytes (default 5e9, as HF). */
  shardBytes?: number;
  /** generation_config.json content; default: copied from tokenizerFrom, else from the config ids. */
  generationConfig?: Record<string, unknown>;
}

function json(v: unknown): string {
  return JSON.stringify(v, null, 2) + "\n";
}

/**
 * Write a complete HF model directory at DIR: config.json (original JSON, torch_dtype updated),
 * generation_config.json, safetensors weights (+ index when sharded) and the tokenizer files. Everything
 * is written into a temporary sibling directory first and renamed into place, so a crash leaves the
 * previous DIR intact.
 */
export async function saveHfModel(dir: string, opts: SaveOptions): Promise<string[]> {
  dir = dir.replace(/\/+$/, "");
  const shapes = parameterShapes(opts.config);
  const known = new Set(shapes.map((s) => s.name));
  for (const name of opts.tensors.keys()) {
    if (!known.has(name)) {
      throw new Error(`saveHfModel: '${name}' is not a parameter of this config`);
    }
  }
  const list: TensorToWrite[] = shapes.map(({ name, shape }) => {
    const data = opts.tensors.get(name);
    if (!data) throw new Error(`saveHfModel: tensor '${name}' is missing`);
    return { name, shape, data };
  });
  const parent = dir.includes("/") ? dir.slice(0, dir.lastIndexOf("/")) || "/" : ".";
  await Deno.mkdir(parent, { recursive: true });
  const base = dir.slice(dir.lastIndexOf("/") + 1);
  const tmp = `${parent}/.${base}.tmp-${Deno.pid}-${Date.now()}`;
  await Deno.mkdir(tmp);
  try {
    const files: string[] = [];
    const raw: Record<string, unknown> = { ...opts.config.raw };
    const dtypeName = opts.dtype === "f32" ? "float32" : "bfloat16";
    if ("dtype" in raw && !("torch_dtype" in raw)) raw.dtype = dtypeName;
    else raw.torch_dtype = dtypeName;
    await Deno.writeTextFile(`${tmp}/config.json`, json(raw));
    files.push("config.json");

    const genFrom = opts.tokenizerFrom ? `${opts.tokenizerFrom}/generation_config.json` : null;
    if (opts.generationConfig) {
      await Deno.writeTextFile(`${tmp}/generation_config.json`, json(opts.generationConfig));
    } else if (genFrom && await pathExists(genFrom)) {
      await Deno.copyFile(genFrom, `${tmp}/generation_config.json`);
    } else {
      const c = opts.config;
      const gen: Record<string, unknown> = { _from_model_config: true };
      if (c.bosTokenId !== null) gen.bos_token_id = c.bosTokenId;
      if (c.eosTokenIds.length > 0) {
        gen.eos_token_id = c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds;
      }
      if (c.padTokenId !== null) gen.pad_token_id = c.padTokenId;
      await Deno.writeTextFile(`${tmp}/generation_config.json`, json(gen));
    }
    files.push("generation_config.json");

    if (opts.tokenizerFrom) {
      const from = opts.tokenizerFrom.replace(/\/+$/, "");
      if (!await pathExists(`${from}/tokenizer.json`)) {
        throw new UserError(`${from}: no tokenizer.json to copy next to the saved model`);
      }
      for (const f of TOKENIZER_FILES) {
        if (await pathExists(`${from}/${f}`)) {
          await Deno.copyFile(`${from}/${f}`, `${tmp}/${f}`);
          files.push(f);
        }
      }
    }
    for (const [name, text] of Object.entries(opts.extraFiles ?? {})) {
      if (name.includes("/")) throw new Error(`saveHfModel: extra file name '${name}' has a slash`);
      await Deno.writeTextFile(`${tmp}/${name}`, text);
      files.push(name);
    }
    files.push(
      ...await writeSafetensorsDir(tmp, list, {
        dtype: opts.dtype,
        shardBytes: opts.shardBytes ?? 5e9,
      }),
    );

    // Swap into place: the old directory is moved aside first and removed only after the rename.
    let old: string | null = null;
    if (await pathExists(dir)) {
      old = `${parent}/.${base}.old-${Deno.pid}-${Date.now()}`;
      await Deno.rename(dir, old);
    }
    try {
      await Deno.rename(tmp, dir);
    } catch (e) {
      if (old) await Deno.rename(old, dir);
      throw e;
    }
    if (old) await Deno.remove(old, { recursive: true });
    return files;
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}
