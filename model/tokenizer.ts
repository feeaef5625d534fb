// Tokenizer: HF tokenizer.json + tokenizer_config.json through @huggingface/tokenizers, chat rendering through @huggingface/jinja.
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { UserError } from "../pipeline/errors.ts";

/** One chat message as the templates see it (OpenAI chat format). */
export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

/** Options of {@link Tokenizer.renderChat}. */
export interface RenderOptions {
  /** Append the assistant header that opens the next turn (HF `add_generation_prompt`). */
  addGenerationPrompt?: boolean;
  /** Jinja source to use instead of the tokenizer's own chat template. */
  template?: string;
  /** Extra template variables (e.g. `enable_thinking`). */
  vars?: Record<string, unknown>;
}

/** A loaded tokenizer: encode/decode, special ids, chat template. */
export interface Tokenizer {
  /** Number of ids (vocabulary plus added tokens). */
  readonly vocabSize: number;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly padToken: string | null;
  readonly unkToken: string | null;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  /** Ids of the added tokens marked special (plus bos/eos/pad/unk and additional_special_tokens). */
  readonly specialIds: ReadonlySet<number>;
  /** The tokenizer's own chat template (Jinja source), or null for base models. */
  readonly chatTemplate: string | null;
  /** sha256 of the files that define the tokenizer (tokenizer.json, tokenizer_config.json, chat template). */
  readonly hash: string;
  /** Text to ids; `addSpecialTokens` runs the post-processor (e.g. prepends BOS); default false. */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  /** Ids to text; `skipSpecialTokens` drops special tokens. */
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
  /** Id of a token string (vocabulary or added token), or undefined. */
  tokenToId(token: string): number | undefined;
  /** Token string of an id, or undefined. */
  idToToken(id: number): string | undefined;
  /** Render a conversation with the chat template (the tokenizer's own unless `opts.template`). */
  renderChat(messages: ChatMessage[], opts?: RenderOptions): string;
}

/** Special-token field of tokenizer_config.json: a string, an AddedToken dict, or null. */
function tokenString(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return null;
}

/** The chat template of a tokenizer_config.json (`chat_template` string or list of named ones). */
function configTemplate(config: Record<string, unknown>): string | null {
  const t = config.chat_template;
  if (typeof t === "string") return t;
  if (Array.isArray(t)) {
    const named = t as { name?: string; template?: string }[];
    const def = named.find((x) => x.name === "default") ?? named[0];
    return typeof def?.template === "string" ? def.template : null;
  }
  return null;
}

const templateCache = new Map<string, Template>();

/** Compile (cached) a Jinja chat template; syntax errors become UserError. */
export function compileTemplate(source: string): Template {
  let t = templateCache.get(source);
  if (!t) {
    try {
      t = new Template(source);
    } catch (e) {
      throw new UserError(`chat template does not parse: ${(e as Error).message}`);
    }
    if (templateCache.size > 32) templateCache.clear();
    templateCache.set(source, t);
  }
  return t;
}

/**
 * Same BPE, faster: the library looks merge ranks up by JSON.stringify([a, b]) for every candidate
 * pair; this swaps in a nested Map with the same ranks (a later duplicate merge wins, as in the
 * library's own Map). Skipped when the model is not the library's BPE. Tests compare both paths.
 */
function speedUpBpe(hf: HfTokenizer): void {
  const model = hf.model as unknown as {
    merges?: unknown;
    bpe_ranks?: unknown;
    add_node?: unknown;
  } | null;
  if (
    !model || !Array.isArray(model.merges) || !(model.bpe_ranks instanceof Map) ||
    typeof model.add_node !== "function"
  ) return;
  const ranks = new Map<string, Map<string, number>>();
  (model.merges as [string, string][]).forEach(([a, b], i) => {
    let inner = ranks.get(a);
    if (!inner) ranks.set(a, inner = new Map());
    inner.set(b, i);
  });
  type Node = { token: string; next: Node; score?: number; bias: number };
  model.add_node = (queue: { push(n: Node): void }, node: Node) => {
    const rank = ranks.get(node.token)?.get(node.next.token);
    if (rank !== undefined) {
      node.score = rank + node.bias;
      queue.push(node);
    }
  };
}

/**
 * Build a tokenizer from parsed tokenizer.json and tokenizer_config.json objects. `chatTemplate`
 * overrides the config's template (e.g. from a chat_template.jinja file); `hash` identifies the
 * source files (computed from the JSON when absent); `fastBpe: false` keeps the library's own
 * (slower, identical) merge lookup.
 */
export function tokenizerFromJson(
  tokenizerJson: Record<string, unknown>,
  config: Record<string, unknown>,
  extra: { chatTemplate?: string | null; hash?: string; fastBpe?: boolean } = {},
): Tokenizer {
  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(tokenizerJson, config);
  } catch (e) {
    throw new UserError(`tokenizer.json is not supported: ${(e as Error).message}`);
  }
  if (extra.fastBpe !== false) speedUpBpe(hf);
  const idOf = (tok: string | null): number | null => {
    if (tok === null) return null;
    return hf.token_to_id(tok) ?? null;
  };
  const bosToken = tokenString(config.bos_token);
  const eosToken = tokenString(config.eos_token);
  const padToken = tokenString(config.pad_token);
  const unkToken = tokenString(config.unk_token);
  const special = new Set<number>();
  for (const t of hf.get_added_tokens_decoder().values()) if (t.special) special.add(t.id);
  const extraSpecial = Array.isArray(config.additional_special_tokens)
    ? (config.additional_special_tokens as unknown[]).map(tokenString)
    : [];
  for (const s of [bosToken, eosToken, padToken, unkToken, ...extraSpecial]) {
    const id = idOf(s);
    if (id !== null) special.add(id);
  }
  let maxId = -1;
  for (const id of hf.get_vocab(true).values()) if (id > maxId) maxId = id;
  const chatTemplate = extra.chatTemplate !== undefined
    ? extra.chatTemplate
    : configTemplate(config);
  const hash = extra.hash ??
    createHash("sha256").update(JSON.stringify(tokenizerJson)).update(JSON.stringify(config))
      .update(chatTemplate ?? "").digest("hex");

  return {
    vocabSize: maxId + 1,
    bosToken,
    eosToken,
    padToken,
    unkToken,
    bosId: idOf(bosToken),
    eosId: idOf(eosToken),
    padId: idOf(padToken),
    specialIds: special,
    chatTemplate,
    hash,
    encode(text, opts = {}) {
      if (text.length === 0) return [];
      return hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids;
    },
    decode(ids, opts = {}) {
      if (ids.length === 0) return "";
      return hf.decode(Array.from(ids), {
        skip_special_tokens: opts.skipSpecialTokens ?? false,
      });
    },
    tokenToId: (token) => hf.token_to_id(token),
    idToToken: (id) => hf.id_to_token(id),
    renderChat(messages, opts = {}) {
      const source = opts.template ?? chatTemplate;
      if (source === null) {
        throw new UserError(
          "the tokenizer has no chat template",
          "set chat_template to a shipped template (chatml, granite, ibm_generic, plain) or a .jinja file",
        );
      }
      return compileTemplate(source).render({
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? false,
        bos_token: bosToken ?? "",
        eos_token: eosToken ?? "",
        pad_token: padToken ?? "",
        unk_token: unkToken ?? "",
        ...opts.vars,
      });
    },
  };
}

async function readOptional(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Load a Hugging Face tokenizer directory: tokenizer.json (required), tokenizer_config.json and
 * chat_template.jinja (optional). Raises UserError when the directory has no tokenizer.json.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const jsonText = await readOptional(join(dir, "tokenizer.json"));
  if (jsonText === null) {
    throw new UserError(
      `no tokenizer.json in ${dir}`,
      "point the model path at a Hugging Face model directory",
    );
  }
  const configText = (await readOptional(join(dir, "tokenizer_config.json"))) ?? "{}";
  const templateFile = await readOptional(join(dir, "chat_template.jinja"));
  let json: Record<string, unknown>, config: Record<string, unknown>;
  try {
    json = JSON.parse(jsonText);
    config = JSON.parse(configText);
  } catch (e) {
    throw new UserError(`tokenizer files in ${dir} are not valid JSON: ${(e as Error).message}`);
  }
  const hash = createHash("sha256").update(jsonText).update("\0").update(configText).update("\0")
    .update(templateFile ?? "").digest("hex");
  return tokenizerFromJson(json, config, {
    chatTemplate: templateFile ?? configTemplate(config),
    hash,
  });
}
