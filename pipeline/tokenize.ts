// Tokenize stage: chat/text JSONL → input_ids + exact loss-mask labels, with validation, limits, cache and workers.
import { gsm8kChatSample } from "./gsm8k.ts";
import { createHash } from "node:crypto";
import { join, resolve } from "node:path";
import { UserError, where } from "./errors.ts";
import { type ChatTemplate, resolveChatTemplate } from "./chat_template.ts";
import { type ChatMessage, loadTokenizer, type Tokenizer } from "../model/tokenizer.ts";

/** Label of a position that carries no loss (the PyTorch ignore_index). */
export const IGNORE = -100;
/** Bump when the output format or the masking rules change: invalidates cached outputs. */
export const TOKENIZE_VERSION = 1;
/** Roles a message may have. */
export const ROLES = ["system", "user", "assistant"] as const;

/** A chat sample: messages in OpenAI format; `unmask` trains every non-system turn. */
export interface ChatSample {
  messages: ChatMessage[];
  unmask: boolean;
}
/** A plain-text sample, trained on every token. */
export interface TextSample {
  text: string;
}
/** One validated input line. */
export type RawSample = ChatSample | TextSample;

/** One line of the tokenized output (HF convention: labels aligned with input_ids, shift in the loss). */
export interface TokenizedSample {
  input_ids: number[];
  labels: number[];
  len: number;
  loss_tokens: number;
}

/** Result of encoding one sample, before length limits. */
export interface EncodedSample {
  inputIds: number[];
  labels: number[];
  /** Trainable spans whose start fell inside a token (the prompt tokenized alone differed). */
  boundaryMerges: number;
  /** Assistant turns not closed by a special token (span ran to the next message). */
  unclosedTurns: number;
}

/** A per-sample problem that is the user's to fix (bad line, template failure). */
export class SampleError extends Error {}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Check one parsed JSONL value. Accepts {"messages": [{role, content}, ...], "unmask"?: bool} or
 * {"text": string}; other fields are ignored. Returns the sample or the reason it is bad.
 */
export function validateSample(v: unknown): { sample: RawSample } | { error: string } {
  if (!isRecord(v)) return { error: "expected a JSON object" };
  const hasMessages = "messages" in v, hasText = "text" in v;
  if (hasMessages && hasText) return { error: `has both "messages" and "text"` };
  if (hasText) {
    if (typeof v.text !== "string") return { error: `"text" must be a string` };
    if (v.text.trim() === "") return { error: `empty "text"` };
    return { sample: { text: v.text } };
  }
  if (!hasMessages) {
    // GSM8K-style {"question", "answer"} lines become a user/assistant pair (pipeline/gsm8k.ts).
    const g = "question" in v && "answer" in v ? gsm8kChatSample(v) : null;
    if (g) return { sample: g };
    return { error: `missing "messages" (or "text", or "question" + "answer")` };
  }
  if (!Array.isArray(v.messages)) return { error: `"messages" must be an array` };
  if (v.messages.length === 0) return { error: `"messages" is empty` };
  if ("unmask" in v && typeof v.unmask !== "boolean") {
    return { error: `"unmask" must be a boolean` };
  }
  const messages: ChatMessage[] = [];
  for (let i = 0; i < v.messages.length; i++) {
    const m = v.messages[i];
    const at = `messages[${i}]`;
    if (!isRecord(m)) return { error: `${at} must be an object` };
    if (!("role" in m)) return { error: `${at}: missing "role"` };
    if (typeof m.role !== "string") return { error: `${at}.role must be a string` };
    if (!(ROLES as readonly string[]).includes(m.role)) {
      return { error: `${at}: unknown role "${m.role}" (expected ${ROLES.join(", ")})` };
    }
    if (!("content" in m)) return { error: `${at}: missing "content"` };
    if (typeof m.content !== "string") return { error: `${at}.content must be a string` };
    if (m.content.trim() === "") return { error: `${at}: empty content` };
    messages.push({ role: m.role, content: m.content });
  }
  return { sample: { messages, unmask: v.unmask === true } };
}

/** Length of the longest common prefix of two id lists. */
function commonPrefix(a: number[], b: number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function render(tok: Tokenizer, t: ChatTemplate, msgs: ChatMessage[], gen: boolean): string {
  try {
    return tok.renderChat(msgs, { template: t.source, addGenerationPrompt: gen });
  } catch (e) {
    throw new SampleError(`chat template '${t.name}' failed: ${(e as Error).message}`);
  }
}

/**
 * Encode a conversation and label it exactly. How the mask is found (no search in decoded text):
 *
 * 1. F = template(messages); ids = encode(F) — the one tokenization that is trained on.
 * 2. Start of an assistant turn i: P = template(messages[:i], add_generation_prompt) must be a
 *    prefix of F (else the sample is rejected); the span starts at token k = common prefix of
 *    encode(P) and ids. When encode(P) is fully a prefix of ids the boundary is a token boundary;
 *    otherwise the token at k straddles it (counted in `boundaryMerges`) and is trained, since it
 *    carries the answer's first characters. Everything the template puts after the generation
 *    prompt (e.g. Qwen3's empty <think></think> block) is what the model must generate: trained.
 *    For a user turn (unmask) the span starts where its content appears in its own region of F.
 * 3. End: the first special token (added token marked special: <|im_end|>, <|eot_id|>, eos …) at
 *    or after the start and before the next message closes the turn and is trained; what follows
 *    (e.g. the "\n" after <|im_end|>) is not. The next message starts at the common prefix of
 *    encode(template(messages[:i+1])) and ids when that render is a prefix of F, else at the next
 *    trained span. A turn with no special token before that point (a template without end-of-turn
 *    tokens) is trained up to it, trailing whitespace tokens excluded, and counted in `unclosedTurns`.
 */
export function encodeChat(
  tok: Tokenizer,
  template: ChatTemplate,
  messages: ChatMessage[],
  unmask = false,
): EncodedSample {
  const full = render(tok, template, messages, false);
  const ids = tok.encode(full);
  const labels = new Array<number>(ids.length).fill(IGNORE);
  const trained: number[] = [];
  for (let i = 0; i < messages.length; i++) {
    const role = messages[i].role;
    if (role === "assistant" || (unmask && role !== "system")) trained.push(i);
  }
  // Where message i starts in F: template(messages[:i]) when it is a prefix of F (exact), else
  // the common prefix of the two renders (a lower bound; exact = false).
  const prefixCache = new Map<number, { at: number; exact: boolean }>();
  const messageStart = (i: number): { at: number; exact: boolean } => {
    let r = prefixCache.get(i);
    if (!r) {
      if (i === 0) r = { at: 0, exact: true };
      else if (i >= messages.length) r = { at: full.length, exact: true };
      else {
        const s = render(tok, template, messages.slice(0, i), false);
        if (full.startsWith(s)) r = { at: s.length, exact: true };
        else {
          let k = 0;
          while (k < s.length && s.charCodeAt(k) === full.charCodeAt(k)) k++;
          r = { at: k, exact: false };
        }
      }
      prefixCache.set(i, r);
    }
    return r;
  };

  let boundaryMerges = 0, unclosedTurns = 0;
  const startTok: number[] = [];
  for (const i of trained) {
    let startChar: number;
    if (messages[i].role === "assistant") {
      const p = render(tok, template, messages.slice(0, i), true);
      if (!full.startsWith(p)) {
        throw new SampleError(
          `chat template '${template.name}': the generation prompt before message ${i} is not a ` +
            `prefix of the rendered conversation, so the answer cannot be located exactly`,
        );
      }
      startChar = p.length;
    } else {
      // A user turn (unmask): where its content appears in its region of F (rendered text, not
      // decoded tokens): the last occurrence before the next message when that start is exact,
      // else the first after this message's start.
      const from = messageStart(i).at;
      const next = messageStart(i + 1);
      const endChar = next.exact ? next.at : full.length;
      const find = (c: string) =>
        next.exact ? full.lastIndexOf(c, endChar - c.length) : full.indexOf(c, from);
      const c = messages[i].content;
      let at = find(c);
      if (at < from) at = find(c.trim());
      if (at < from) {
        throw new SampleError(
          `chat template '${template.name}' does not render the content of message ${i} verbatim; ` +
            `cannot unmask it exactly`,
        );
      }
      startChar = at;
    }
    const pre = tok.encode(full.slice(0, startChar));
    const k = commonPrefix(pre, ids);
    if (k < pre.length) boundaryMerges++;
    startTok.push(k);
  }

  for (let t = 0; t < trained.length; t++) {
    const i = trained[t];
    const start = startTok[t];
    let bound = ids.length;
    if (i + 1 < messages.length) {
      const next = messageStart(i + 1);
      if (next.exact) bound = commonPrefix(tok.encode(full.slice(0, next.at)), ids);
      else if (t + 1 < trained.length) bound = startTok[t + 1];
    }
    let close = -1;
    for (let k = start; k < bound; k++) {
      if (tok.specialIds.has(ids[k])) {
        close = k;
        break;
      }
    }
    let end: number;
    if (close >= 0) end = close + 1;
    else {
      if (messages[i].role === "assistant") unclosedTurns++;
      end = bound;
      while (
        end > start && !tok.specialIds.has(ids[end - 1]) && tok.decode([ids[end - 1]]).trim() === ""
      ) {
        end--;
      }
    }
    for (let k = start; k < end; k++) labels[k] = ids[k];
  }
  if (labels.length > 0) labels[0] = IGNORE;
  return { inputIds: ids, labels, boundaryMerges, unclosedTurns };
}

/** Encode a plain-text sample: post-processor special tokens (e.g. BOS), the text, EOS; all trained. */
export function encodeText(tok: Tokenizer, text: string): EncodedSample {
  const ids = tok.encode(text, { addSpecialTokens: true });
  if (tok.eosId !== null && ids[ids.length - 1] !== tok.eosId) ids.push(tok.eosId);
  const labels = ids.slice();
  if (labels.length > 0) labels[0] = IGNORE;
  return { inputIds: ids, labels, boundaryMerges: 0, unclosedTurns: 0 };
}

/** Encode one validated sample (chat samples need a template). */
export function encodeSample(
  tok: Tokenizer,
  template: ChatTemplate | null,
  sample: RawSample,
): EncodedSample {
  if ("text" in sample) return encodeText(tok, sample.text);
  if (template === null) throw new SampleError("chat sample but no chat template");
  return encodeChat(tok, template, sample.messages, sample.unmask);
}

/** Why a sample was not kept. */
export type DropReason = "too_long" | "no_loss_tokens" | "invalid";

/** Outcome of one sample of a chunk. */
export interface SampleOutcome {
  ref: string;
  status: "ok" | DropReason;
  len: number;
  lossTokens: number;
  truncated: boolean;
  boundaryMerges: number;
  unclosedTurns: number;
  error?: string;
}

/** A chunk of validated samples sent to a worker (or processed inline). */
export interface ChunkItem {
  ref: string;
  sample: RawSample;
}

/** Output lines (JSONL text of the kept samples, in order) and per-sample outcomes. */
export interface ChunkResult {
  text: string;
  outcomes: SampleOutcome[];
}

/** Length limits applied after encoding. */
export interface LimitOptions {
  maxSeqLen: number;
  truncate: boolean;
}

/**
 * Encode a chunk and apply the limits: over max_seq_len → dropped ("too_long") or, with
 * `truncate`, cut to max_seq_len; no trained token left → dropped ("no_loss_tokens"); a
 * template failure → "invalid" with its reason.
 */
export function processChunk(
  tok: Tokenizer,
  template: ChatTemplate | null,
  items: ChunkItem[],
  limits: LimitOptions,
): ChunkResult {
  const lines: string[] = [];
  const outcomes: SampleOutcome[] = [];
  for (const { ref, sample } of items) {
    let enc: EncodedSample;
    try {
      enc = encodeSample(tok, template, sample);
    } catch (e) {
      if (!(e instanceof SampleError) && !(e instanceof UserError)) throw e;
      outcomes.push({
        ref,
        status: "invalid",
        len: 0,
        lossTokens: 0,
        truncated: false,
        boundaryMerges: 0,
        unclosedTurns: 0,
        error: e.message,
      });
      continue;
    }
    let ids = enc.inputIds, labels = enc.labels, truncated = false;
    const base = { ref, boundaryMerges: enc.boundaryMerges, unclosedTurns: enc.unclosedTurns };
    if (ids.length > limits.maxSeqLen) {
      if (!limits.truncate) {
        outcomes.push({ ...base, status: "too_long", len: ids.length, lossTokens: 0, truncated });
        continue;
      }
      ids = ids.slice(0, limits.maxSeqLen);
      labels = labels.slice(0, limits.maxSeqLen);
      truncated = true;
    }
    let loss = 0;
    for (const l of labels) if (l !== IGNORE) loss++;
    if (loss === 0) {
      outcomes.push({
        ...base,
        status: "no_loss_tokens",
        len: ids.length,
        lossTokens: 0,
        truncated,
      });
      continue;
    }
    lines.push(
      `{"input_ids":[${ids.join(",")}],"labels":[${labels.join(",")}],"len":${ids.length},` +
        `"loss_tokens":${loss}}\n`,
    );
    outcomes.push({ ...base, status: "ok", len: ids.length, lossTokens: loss, truncated });
  }
  return { text: lines.join(""), outcomes };
}

// ---------------------------------------------------------------------------------------------
// Workers

/** Messages from the main thread to a tokenize worker. */
export type WorkerRequest =
  | { type: "init"; tokenizerDir: string; template: ChatTemplate | null; limits: LimitOptions }
  | { type: "job"; id: number; items: ChunkItem[] };
/** Messages from a tokenize worker. */
export type WorkerReply =
  | { type: "result"; id: number; result: ChunkResult }
  | { type: "fatal"; id: number; message: string };

class WorkerPool {
  private workers: Worker[] = [];
  private idle: Worker[] = [];
  private queue: { id: number; items: ChunkItem[] }[] = [];
  private waiting = new Map<
    number,
    { resolve: (r: ChunkResult) => void; reject: (e: Error) => void }
  >();
  private nextId = 0;

  constructor(n: number, init: Extract<WorkerRequest, { type: "init" }>) {
    for (let i = 0; i < n; i++) {
      const w = new Worker(new URL("./tokenize_worker.ts", import.meta.url).href, {
        type: "module",
        name: `tokenize-${i}`,
      });
      w.onmessage = (e: MessageEvent<WorkerReply>) => this.onReply(w, e.data);
      w.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        this.failAll(new Error(`tokenize worker failed: ${e.message}`));
      };
      w.postMessage(init);
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  run(items: ChunkItem[]): Promise<ChunkResult> {
    const id = this.nextId++;
    const p = new Promise<ChunkResult>((resolve, reject) =>
      this.waiting.set(id, { resolve, reject })
    );
    this.queue.push({ id, items });
    this.pump();
    return p;
  }

  private pump(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const w = this.idle.pop()!;
      const job = this.queue.shift()!;
      w.postMessage({ type: "job", id: job.id, items: job.items } satisfies WorkerRequest);
    }
  }

  private onReply(w: Worker, r: WorkerReply): void {
    const h = this.waiting.get(r.id);
    this.waiting.delete(r.id);
    if (r.type === "fatal") {
      const err = new Error(r.message);
      h?.reject(err);
      this.failAll(err);
      return;
    }
    h?.resolve(r.result);
    this.idle.push(w);
    this.pump();
  }

  private failAll(e: Error): void {
    for (const h of this.waiting.values()) h.reject(e);
    this.waiting.clear();
    this.queue = [];
  }

  close(): void {
    for (const w of this.workers) w.terminate();
    this.workers = [];
  }
}

// ---------------------------------------------------------------------------------------------
// Stage

/** Options of {@link tokenizeDataset}. */
export interface TokenizeOptions {
  /** JSONL input files (messages or text samples), concatenated in this order. */
  inputs: string[];
  /** Run directory; output goes to <runDir>/data/<name>.jsonl and <name>.stats.json. */
  runDir: string;
  name: string;
  /** Hugging Face model/tokenizer directory. */
  tokenizerDir: string;
  /** "tokenizer" (default), a shipped template name, or a .jinja path. */
  chatTemplate?: string | null;
  maxSeqLen: number;
  /** Cut samples over maxSeqLen instead of dropping them (default false). */
  truncate?: boolean;
  /** "fail" (default): list up to 20 bad lines and raise; "skip": drop them and count. */
  onError?: "fail" | "skip";
  /** Worker count; 0/undefined = automatic (all cores when there is much data), 1 = inline. */
  workers?: number;
  /** Ignore a cached output with the same content hash. */
  force?: boolean;
  /** Progress/report lines (default console.log). */
  log?: (line: string) => void;
}

/** Summary of a min/mean/percentile distribution. */
export interface Distribution {
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

/** Contents of <name>.stats.json. */
export interface TokenizeStats {
  version: number;
  hash: string;
  name: string;
  inputs: string[];
  tokenizer: string;
  tokenizerHash: string;
  template: string | null;
  options: { maxSeqLen: number; truncate: boolean; onError: "fail" | "skip" };
  /** Non-blank input lines read. */
  lines: number;
  /** Samples kept. */
  samples: number;
  tokens: number;
  lossTokens: number;
  length: Distribution;
  lossTokensPerSample: Distribution;
  truncated: number;
  dropped: Record<DropReason, number>;
  /** Up to 20 `file:line` per drop reason (and the reason text for invalid lines). */
  droppedExamples: Record<DropReason, string[]>;
  warnings: { boundaryMerges: number; unclosedTurns: number };
  /** Size of the output JSONL in bytes (checked when reusing it). */
  bytes: number;
  workers: number;
  seconds: number;
  samplesPerSecond: number;
}

/** Result of {@link tokenizeDataset}. */
export interface TokenizeResult {
  path: string;
  statsPath: string;
  stats: TokenizeStats;
  /** True when a cached output with the same content hash was reused. */
  reused: boolean;
}

/** Nearest-rank percentiles of a list of counts. */
export function distribution(values: ArrayLike<number>): Distribution {
  const n = values.length;
  if (n === 0) return { min: 0, mean: 0, p50: 0, p90: 0, p95: 0, p99: 0, max: 0 };
  const s = Float64Array.from(values).sort();
  const q = (p: number) => s[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += s[i];
  return {
    min: s[0],
    mean: sum / n,
    p50: q(0.5),
    p90: q(0.9),
    p95: q(0.95),
    p99: q(0.99),
    max: s[n - 1],
  };
}

/** Lines of a text file, streamed (CRLF tolerated), with 1-based line numbers. */
export async function* readLines(path: string): AsyncGenerator<[number, string]> {
  const file = await Deno.open(path);
  const decoder = new TextDecoder();
  let rest = "", line = 0;
  for await (const chunk of file.readable) {
    const parts = (rest + decoder.decode(chunk, { stream: true })).split("\n");
    rest = parts.pop()!;
    for (const p of parts) yield [++line, p.endsWith("\r") ? p.slice(0, -1) : p];
  }
  rest += decoder.decode();
  if (rest.length > 0) yield [++line, rest.endsWith("\r") ? rest.slice(0, -1) : rest];
}

async function hashFile(h: ReturnType<typeof createHash>, path: string): Promise<number> {
  let bytes = 0;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (e) {
    throw new UserError(`cannot read data file ${path}: ${(e as Error).message}`);
  }
  for await (const chunk of file.readable) {
    h.update(chunk);
    bytes += chunk.length;
  }
  return bytes;
}

async function readJson<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch {
    return null;
  }
}

const CHUNK = 128;
const MAX_ERRORS_LISTED = 20;

/**
 * The tokenize stage. Validates every line (bad lines reported as file:line: reason), renders chat
 * samples with the chat template, labels them exactly (see {@link encodeChat}), applies the length
 * limits, and writes <runDir>/data/<name>.jsonl (one {input_ids, labels, len, loss_tokens} per line,
 * input order) plus <name>.stats.json, each through a temp file and a rename. Re-running with the
 * same inputs, tokenizer, template and options reuses the output (content hash in the stats).
 */
export async function tokenizeDataset(opts: TokenizeOptions): Promise<TokenizeResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const onError = opts.onError ?? "fail";
  const truncate = opts.truncate ?? false;
  if (!Number.isInteger(opts.maxSeqLen) || opts.maxSeqLen < 2) {
    throw new UserError(`max_seq_len must be an integer ≥ 2, got ${opts.maxSeqLen}`);
  }
  if (opts.inputs.length === 0) throw new UserError("no data files given");
  const t0 = performance.now();
  const tok = await loadTokenizer(opts.tokenizerDir);
  const template = resolveChatTemplate(opts.chatTemplate, tok);
  const outDir = join(opts.runDir, "data");
  const path = join(outDir, `${opts.name}.jsonl`);
  const statsPath = join(outDir, `${opts.name}.stats.json`);

  // Content hash of everything the output depends on.
  const h = createHash("sha256");
  h.update(`tokenize v${TOKENIZE_VERSION}\0${tok.hash}\0${template?.source ?? "<none>"}\0`);
  h.update(JSON.stringify({ maxSeqLen: opts.maxSeqLen, truncate, onError }));
  let inputBytes = 0;
  for (const f of opts.inputs) {
    h.update(`\0file\0`);
    inputBytes += await hashFile(h, f);
  }
  const hash = h.digest("hex");

  if (!opts.force) {
    const old = await readJson<TokenizeStats>(statsPath);
    const size = await Deno.stat(path).then((s) => s.size).catch(() => -1);
    if (old && old.hash === hash && old.bytes === size) {
      log(`tokenize: reusing ${path} (${old.samples} samples, inputs unchanged)`);
      return { path, statsPath, stats: old, reused: true };
    }
  }

  const auto = Math.min(navigator.hardwareConcurrency ?? 1, 8);
  const nWorkers = opts.workers && opts.workers > 0
    ? opts.workers
    : inputBytes > (1 << 20)
    ? auto
    : 1;
  const limits: LimitOptions = { maxSeqLen: opts.maxSeqLen, truncate };
  const pool = nWorkers > 1
    ? new WorkerPool(nWorkers, {
      type: "init",
      tokenizerDir: resolve(opts.tokenizerDir),
      template,
      limits,
    })
    : null;

  await Deno.mkdir(outDir, { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}`;
  const out = await Deno.open(tmp, { write: true, create: true, truncate: true });
  const enc = new TextEncoder();

  const errors: string[] = [];
  let errorCount = 0;
  const dropped: Record<DropReason, number> = { too_long: 0, no_loss_tokens: 0, invalid: 0 };
  const droppedExamples: Record<DropReason, string[]> = {
    too_long: [],
    no_loss_tokens: [],
    invalid: [],
  };
  const lens: number[] = [], losses: number[] = [];
  let lines = 0, truncated = 0, merges = 0, unclosed = 0, bytes = 0;
  const badLine = (ref: string, reason: string) => {
    errorCount++;
    if (errors.length < MAX_ERRORS_LISTED) errors.push(`${ref}: ${reason}`);
    dropped.invalid++;
    if (droppedExamples.invalid.length < MAX_ERRORS_LISTED) {
      droppedExamples.invalid.push(`${ref}: ${reason}`);
    }
  };
  const absorb = async (r: ChunkResult) => {
    if (r.text.length > 0) {
      const b = enc.encode(r.text);
      bytes += b.length;
      let off = 0;
      while (off < b.length) off += await out.write(b.subarray(off));
    }
    for (const o of r.outcomes) {
      merges += o.boundaryMerges;
      unclosed += o.unclosedTurns;
      if (o.status === "ok") {
        lens.push(o.len);
        losses.push(o.lossTokens);
        if (o.truncated) truncated++;
      } else if (o.status === "invalid") badLine(o.ref, o.error ?? "invalid");
      else {
        dropped[o.status]++;
        if (droppedExamples[o.status].length < MAX_ERRORS_LISTED) {
          droppedExamples[o.status].push(`${o.ref} (${o.len} tokens)`);
        }
      }
    }
  };

  // In-order pipeline: chunks are dispatched ahead (to the pool) and absorbed in order.
  const inflight: Promise<ChunkResult>[] = [];
  const maxInflight = pool ? nWorkers * 2 : 0;
  let batch: ChunkItem[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const items = batch;
    batch = [];
    if (onError === "fail" && errorCount > 0) return; // stop encoding; keep validating
    if (pool) {
      inflight.push(pool.run(items));
      while (inflight.length > maxInflight) await absorb(await inflight.shift()!);
    } else await absorb(processChunk(tok, template, items, limits));
  };

  try {
    for (const file of opts.inputs) {
      for await (const [n, text] of readLines(file)) {
        if (text.trim() === "") continue;
        lines++;
        const ref = where(file, n);
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch (e) {
          badLine(ref, `invalid JSON: ${(e as Error).message}`);
          continue;
        }
        const v = validateSample(value);
        if ("error" in v) {
          badLine(ref, v.error);
          continue;
        }
        if (template === null && "messages" in v.sample) {
          throw new UserError(
            `${ref}: chat sample, but the tokenizer in ${opts.tokenizerDir} has no chat template`,
            "set chat_template to chatml, granite, ibm_generic, plain, or a .jinja file",
          );
        }
        batch.push({ ref, sample: v.sample });
        if (batch.length >= CHUNK) await flush();
      }
    }
    await flush();
    while (inflight.length > 0) await absorb(await inflight.shift()!);
  } catch (e) {
    out.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  } finally {
    pool?.close();
  }
  out.close();

  if (errorCount > 0 && onError === "fail") {
    await Deno.remove(tmp).catch(() => {});
    const more = errorCount > errors.length ? `\n  … and ${errorCount - errors.length} more` : "";
    throw new UserError(
      `${errorCount} bad sample(s) in the data:\n  ${errors.join("\n  ")}${more}`,
      "fix these lines, or set on_error: skip to drop them",
    );
  }
  if (lens.length === 0) {
    await Deno.remove(tmp).catch(() => {});
    throw new UserError(
      `no trainable sample left in ${opts.inputs.join(", ")} ` +
        `(dropped: ${JSON.stringify(dropped)})`,
      "check max_seq_len and that samples have assistant turns",
    );
  }
  await Deno.rename(tmp, path);

  const seconds = (performance.now() - t0) / 1000;
  let tokens = 0, lossTokens = 0;
  for (const l of lens) tokens += l;
  for (const l of losses) lossTokens += l;
  const stats: TokenizeStats = {
    version: TOKENIZE_VERSION,
    hash,
    name: opts.name,
    inputs: opts.inputs,
    tokenizer: opts.tokenizerDir,
    tokenizerHash: tok.hash,
    template: template?.name ?? null,
    options: { maxSeqLen: opts.maxSeqLen, truncate, onError },
    lines,
    samples: lens.length,
    tokens,
    lossTokens,
    length: distribution(lens),
    lossTokensPerSample: distribution(losses),
    truncated,
    dropped,
    droppedExamples,
    warnings: { boundaryMerges: merges, unclosedTurns: unclosed },
    bytes,
    workers: nWorkers,
    seconds,
    samplesPerSecond: lines / seconds,
  };
  const statsTmp = `${statsPath}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(statsTmp, JSON.stringify(stats, null, 2) + "\n");
  await Deno.rename(statsTmp, statsPath);

  log(
    `tokenize: ${stats.samples}/${lines} samples kept → ${path} ` +
      `(${tokens} tokens, ${lossTokens} loss tokens, len p50 ${stats.length.p50} max ${stats.length.max}, ` +
      `${nWorkers} worker(s), ${stats.samplesPerSecond.toFixed(0)} samples/s)`,
  );
  const drops = (Object.keys(dropped) as DropReason[]).filter((k) => dropped[k] > 0);
  for (const k of drops) {
    log(`tokenize: dropped ${dropped[k]} ${k}: ${droppedExamples[k].slice(0, 3).join("; ")}`);
  }
  if (truncated > 0) log(`tokenize: truncated ${truncated} sample(s) to ${opts.maxSeqLen} tokens`);
  if (unclosed > 0) {
    log(
      `tokenize: warning: ${unclosed} trained turn(s) not closed by a special token ` +
        `(template '${template?.name}' has no end-of-turn token in this tokenizer)`,
    );
  }
  return { path, statsPath, stats, reused: false };
}

// ---------------------------------------------------------------------------------------------
// Readers for the trainer

/** Stream the samples of a tokenized JSONL file. */
export async function* readTokenized(path: string): AsyncGenerator<TokenizedSample> {
  for await (const [n, line] of readLines(path)) {
    if (line.trim() === "") continue;
    let s: TokenizedSample;
    try {
      s = JSON.parse(line);
    } catch (e) {
      throw new UserError(`${where(path, n)}: not a tokenized sample: ${(e as Error).message}`);
    }
    yield s;
  }
}

/** A tokenized dataset as flat arrays: sample i is ids[offsets[i] .. offsets[i+1]). */
export interface TokenizedDataset {
  count: number;
  ids: Int32Array;
  labels: Int32Array;
  /** (count + 1) start of each sample in ids/labels. */
  offsets: Uint32Array;
  /** (count) tokens per sample. */
  lengths: Uint32Array;
  /** (count) labels that are not IGNORE, per sample. */
  lossTokens: Uint32Array;
}

/** Load a tokenized JSONL file into flat typed arrays (for the trainer and the bucket stage). */
export async function loadTokenizedDataset(path: string): Promise<TokenizedDataset> {
  let ids = new Int32Array(1 << 16), labels = new Int32Array(1 << 16);
  const offsets = [0], lengths: number[] = [], loss: number[] = [];
  let used = 0;
  for await (const s of readTokenized(path)) {
    const n = s.input_ids.length;
    if (s.labels.length !== n) {
      throw new UserError(`${path}: sample ${lengths.length} labels ≠ ids`);
    }
    while (used + n > ids.length) {
      const grow = (a: Int32Array) => {
        const b = new Int32Array(a.length * 2);
        b.set(a.subarray(0, used));
        return b;
      };
      ids = grow(ids);
      labels = grow(labels);
    }
    ids.set(s.input_ids, used);
    labels.set(s.labels, used);
    let l = 0;
    for (const x of s.labels) if (x !== IGNORE) l++;
    used += n;
    offsets.push(used);
    lengths.push(n);
    loss.push(l);
  }
  return {
    count: lengths.length,
    ids: ids.slice(0, used),
    labels: labels.slice(0, used),
    offsets: Uint32Array.from(offsets),
    lengths: Uint32Array.from(lengths),
    lossTokens: Uint32Array.from(loss),
  };
}
