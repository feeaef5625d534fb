// GSM8K {question, answer} lines → chat messages (user asks, assistant answers ending "#### N") and plain text.
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import type { ChatMessage } from "../model/tokenizer.ts";
import { UserError, where } from "./errors.ts";
import { writeFileAtomic } from "./run_dir.ts";

/** One GSM8K item: a word problem and its worked answer ending with `#### N`. */
export interface Gsm8kItem {
  question: string;
  answer: string;
}

/** How GSM8K answers are turned into training targets. */
export interface Gsm8kOptions {
  /**
   * Keep the calculator annotations `<<48/2=24>>` of the answers (default false: removed, as
   * they are an artefact of how GSM8K was written, not text a model should learn to produce).
   */
  keepCalculator?: boolean;
  /** A system message put before the question (default none). */
  system?: string;
}

/** GSM8K's calculator annotations: `<<expression=result>>`. */
const CALCULATOR = /<<[^<>]*>>/g;
/** The final answer line. */
const FINAL = /#### *(-?[0-9.,$]+)\s*$/;

/** Remove the `<<…>>` calculator annotations of a GSM8K answer. */
export function stripCalculator(answer: string): string {
  return answer.replace(CALCULATOR, "");
}

/**
 * Check one parsed JSONL value as a GSM8K item: `question` and `answer` non-empty strings, the
 * answer ending with `#### N`. Returns the item or the reason it is not one.
 */
export function checkGsm8kItem(v: unknown): Gsm8kItem | string {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "expected a JSON object";
  const { question, answer } = v as Record<string, unknown>;
  if (typeof question !== "string" || !question.trim()) {
    return `"question" must be a non-empty string`;
  }
  if (typeof answer !== "string" || !answer.trim()) return `"answer" must be a non-empty string`;
  if (!FINAL.test(answer.trim())) return `"answer" must end with "#### N" (the GSM8K format)`;
  return { question, answer };
}

/** The assistant's training target: the worked answer (annotations removed unless kept), trimmed. */
export function gsm8kTarget(item: Gsm8kItem, opts: Gsm8kOptions = {}): string {
  const a = opts.keepCalculator ? item.answer : stripCalculator(item.answer);
  return a.trim();
}

/** One GSM8K item as a conversation: [system?], user = the question, assistant = the worked answer. */
export function gsm8kMessages(item: Gsm8kItem, opts: Gsm8kOptions = {}): ChatMessage[] {
  const out: ChatMessage[] = [];
  if (opts.system) out.push({ role: "system", content: opts.system });
  out.push({ role: "user", content: item.question.trim() });
  out.push({ role: "assistant", content: gsm8kTarget(item, opts) });
  return out;
}

/**
 * A chat sample for the tokenize stage from a line holding `{question, answer}` and neither
 * `messages` nor `text`, or null when the value is not such a line (so callers can fall back to
 * their own validation). Throws nothing.
 */
export function gsm8kChatSample(
  v: unknown,
  opts: Gsm8kOptions = {},
): { messages: ChatMessage[]; unmask: false } | null {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return null;
  if ("messages" in v || "text" in v) return null;
  const item = checkGsm8kItem(v);
  if (typeof item === "string") return null;
  return { messages: gsm8kMessages(item, opts), unmask: false };
}

/** One GSM8K item as plain text ("Question: …\nAnswer: …", the lm-eval gsm8k prompt layout). */
export function gsm8kText(item: Gsm8kItem, opts: Gsm8kOptions = {}): string {
  return `Question: ${item.question.trim()}\nAnswer: ${gsm8kTarget(item, opts)}`;
}

/** Read a GSM8K JSONL file; every bad line is reported at once (first 10 listed). */
export async function readGsm8k(path: string, limit?: number): Promise<Gsm8kItem[]> {
  const items: Gsm8kItem[] = [], errors: string[] = [];
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(`GSM8K file not found: ${path}`, "expected ../shared/data/gsm8k/*.jsonl");
    }
    throw e;
  }
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (limit !== undefined && items.length >= limit) break;
    if (!lines[i].trim()) continue;
    let v: unknown;
    try {
      v = JSON.parse(lines[i]);
    } catch (e) {
      errors.push(`${where(path, i + 1)}: not valid JSON (${(e as Error).message})`);
      continue;
    }
    const r = checkGsm8kItem(v);
    if (typeof r === "string") errors.push(`${where(path, i + 1)}: ${r}`);
    else items.push(r);
  }
  if (errors.length) {
    const more = errors.length > 10 ? `\n  ... and ${errors.length - 10} more` : "";
    throw new UserError(
      `${errors.length} bad line(s) in ${path}:\n  ${errors.slice(0, 10).join("\n  ")}${more}`,
      `each line must be {"question": ..., "answer": "... #### N"}`,
    );
  }
  if (items.length === 0) throw new UserError(`${path} holds no GSM8K items`);
  return items;
}

/**
 * Convert a GSM8K JSONL file into the training format (`{"messages": [...]}` per line), written
 * atomically to `dst`. Returns the number of samples written.
 */
export async function convertGsm8kFile(
  src: string,
  dst: string,
  opts: Gsm8kOptions & { limit?: number } = {},
): Promise<number> {
  const items = await readGsm8k(src, opts.limit);
  const lines = items.map((it) => JSON.stringify({ messages: gsm8kMessages(it, opts) }));
  await Deno.mkdir(dirname(dst), { recursive: true });
  await writeFileAtomic(dst, lines.join("\n") + "\n");
  return items.length;
}

if (import.meta.main) {
  // deno run -A pipeline/gsm8k.ts SRC.jsonl DST.jsonl [--keep-calculator] [--system TEXT] [--limit N]
  const { positionals, values } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      "keep-calculator": { type: "boolean" },
      system: { type: "string" },
      limit: { type: "string" },
    },
  });
  if (positionals.length !== 2) {
    console.error("error: expected SRC.jsonl DST.jsonl");
    console.error("hint: deno run -A pipeline/gsm8k.ts ../shared/data/gsm8k/train.jsonl out.jsonl");
    Deno.exit(2);
  }
  try {
    const n = await convertGsm8kFile(positionals[0], positionals[1], {
      keepCalculator: values["keep-calculator"],
      system: values.system,
      limit: values.limit === undefined ? undefined : Number(values.limit),
    });
    console.log(`wrote ${n} chat samples to ${positionals[1]}`);
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    console.error(`error: ${e.message}`);
    if (e.hint) console.error(`hint: ${e.hint}`);
    Deno.exit(1);
  }
}
