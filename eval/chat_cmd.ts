// `deno task chat`: talk to a model through its chat template, or complete raw text; streams tokens as they come.
import { sharedGpu } from "../kernels/runtime.ts";
import { DecodeGraph } from "../model/decode_graph.ts";
import { readModelConfig } from "../model/hf_dir.ts";
import { type ChatMessage, loadTokenizer, type Tokenizer } from "../model/tokenizer.ts";
import { UserError } from "../pipeline/errors.ts";
import { intFlag } from "./flags.ts";

const USAGE =
  "deno task chat --model DIR [--prompt TEXT] [--max-tokens N] [--raw] [--temperature T] [--seed N]";

/** Options of one reply. */
export interface ReplyOptions {
  maxTokens: number;
  temperature: number;
  seed: number;
  /** Called with each new piece of text (streaming). */
  onText?: (text: string) => void;
}

/** A model ready to chat or complete: the decode graph, the tokenizer and the stop ids. */
export class ChatSession {
  readonly history: ChatMessage[] = [];

  constructor(readonly graph: DecodeGraph, readonly tok: Tokenizer, readonly raw: boolean) {}

  /** Ids that end a reply: eos, and in chat mode every special token (end of turn). */
  stopIds(): number[] {
    const s = new Set<number>(this.graph.cfg.eosTokenIds);
    if (this.tok.eosId !== null) s.add(this.tok.eosId);
    if (!this.raw) { for (const id of this.tok.specialIds) s.add(id); }
    return [...s];
  }

  /** Prompt ids of `text`: raw text with the tokenizer's BOS, or the conversation so far plus it. */
  promptIds(text: string): number[] {
    if (this.raw) return this.tok.encode(text, { addSpecialTokens: true });
    const messages = [...this.history, { role: "user", content: text }];
    return this.tok.encode(this.tok.renderChat(messages, { addGenerationPrompt: true }));
  }

  /**
   * Text of `tokens` as it continues `prompt`: decoded after the prompt's last tokens, so a
   * sentencepiece-style leading space of the first token is kept.
   */
  continuation(prompt: readonly number[], tokens: readonly number[]): string {
    const ctx = prompt.slice(-8);
    const opts = { skipSpecialTokens: true };
    const base = this.tok.decode(ctx, opts);
    const full = this.tok.decode([...ctx, ...tokens], opts);
    return full.startsWith(base) ? full.slice(base.length) : this.tok.decode(tokens, opts);
  }

  /** Generate the reply to `text` (a completion in raw mode); chat mode keeps the history. */
  async reply(
    text: string,
    o: ReplyOptions,
  ): Promise<{ text: string; tokens: number; seconds: number }> {
    let ids = this.promptIds(text);
    const room = this.graph.Lmax - Math.min(o.maxTokens, this.graph.Lmax - 1);
    if (ids.length > room) {
      console.error(`(prompt of ${ids.length} tokens cut to its last ${room} to fit the context)`);
      ids = ids.slice(ids.length - room);
    }
    let shown = "";
    let all: number[] = [];
    const t0 = performance.now();
    const stream = (fresh: readonly number[]) => {
      all = all.concat(fresh);
      const t = this.continuation(ids, all);
      // Hold back an incomplete UTF-8 sequence (byte-fallback tokens) until it completes.
      const stable = t.endsWith("\uFFFD") ? t.replace(/\uFFFD+$/, "") : t;
      if (stable.length > shown.length && stable.startsWith(shown)) {
        o.onText?.(stable.slice(shown.length));
        shown = stable;
      }
    };
    const gen = await this.graph.generate(ids, {
      maxNewTokens: o.maxTokens,
      temperature: o.temperature,
      seed: o.seed,
      stopIds: this.stopIds(),
      onTokens: stream,
    });
    const seconds = (performance.now() - t0) / 1000;
    const out = this.continuation(ids, gen.tokens);
    if (out.length > shown.length && out.startsWith(shown)) o.onText?.(out.slice(shown.length));
    if (!this.raw) {
      this.history.push({ role: "user", content: text }, {
        role: "assistant",
        content: out.trim(),
      });
    }
    return { text: out, tokens: gen.tokens.length, seconds };
  }
}

/** Lines of standard input, one at a time (null at end of input). */
async function* stdinLines(): AsyncGenerator<string> {
  const dec = new TextDecoder();
  let rest = "";
  for await (const chunk of Deno.stdin.readable) {
    const parts = (rest + dec.decode(chunk, { stream: true })).split("\n");
    rest = parts.pop()!;
    for (const p of parts) yield p.replace(/\r$/, "");
  }
  if (rest) yield rest;
}

const enc = new TextEncoder();
const write = (s: string) => Deno.stdout.writeSync(enc.encode(s));

/** `chat`: one completion with --prompt, else an interactive session; returns the exit code. */
export async function chatCommand(v: Record<string, unknown>, _p: string[]): Promise<number> {
  const model = v.model;
  if (typeof model !== "string" || !model) throw new UserError("--model is required", USAGE);
  const maxTokens = intFlag(v, "max-tokens", 1) ?? 256;
  const seed = intFlag(v, "seed", 0) ?? (Date.now() >>> 0);
  let temperature = 0;
  if (v.temperature !== undefined) {
    temperature = Number(v.temperature);
    if (!Number.isFinite(temperature) || temperature < 0) {
      throw new UserError(
        `--temperature must be a number >= 0 (got ${JSON.stringify(v.temperature)})`,
      );
    }
  }
  const cfg = await readModelConfig(model);
  const tok = await loadTokenizer(model);
  const raw = Boolean(v.raw) || tok.chatTemplate === null;
  if (!v.raw && tok.chatTemplate === null) {
    console.error("(this model has no chat template: completing raw text, as with --raw)");
  }
  const gpu = await sharedGpu();
  const graph = new DecodeGraph(gpu, cfg, { maxTokens: Math.min(cfg.maxPositionEmbeddings, 4096) });
  try {
    await graph.uploadFromDir(model);
    const session = new ChatSession(graph, tok, raw);
    const opts = (): ReplyOptions => ({ maxTokens, temperature, seed, onText: write });
    if (typeof v.prompt === "string") {
      if (raw) write(v.prompt);
      const r = await session.reply(v.prompt, opts());
      write("\n");
      console.error(
        `(${r.tokens} tokens, ${(r.tokens / Math.max(r.seconds, 1e-9)).toFixed(1)} tokens/s)`,
      );
      return 0;
    }
    console.error(
      raw
        ? "raw completion: each line is continued as plain text; /exit or Ctrl-D to quit"
        : "chat: /reset clears the conversation, /exit or Ctrl-D quits",
    );
    write("> ");
    for await (const line of stdinLines()) {
      const text = line.trim();
      if (text === "/exit" || text === "/quit") break;
      if (text === "/reset") {
        session.history.length = 0;
        console.error("(conversation cleared)");
      } else if (text) {
        if (raw) write(text);
        await session.reply(text, opts());
        write("\n");
      }
      write("> ");
    }
    write("\n");
    return 0;
  } finally {
    graph.destroy();
  }
}
