// Evaluation data files: MMLU-format multiple choice, question/answer pairs, chat samples; validated with file:line errors.
import { UserError, where } from "../pipeline/errors.ts";
import { type RawSample, readLines, validateSample } from "../pipeline/tokenize.ts";

/** A multiple-choice item in the MMLU format. */
export interface McItem {
  question: string;
  choices: string[];
  /** Index of the right choice. */
  answer: number;
  /** Subject (MMLU: e.g. "abstract_algebra"); "" when absent. */
  subject: string;
}

/** A question with a reference answer (GSM8K: the answer ends with `#### N`). */
export interface QaItem {
  question: string;
  answer: string;
}

/** Items read from a file: `items` to score, `shots` kept aside for few-shot prompts. */
export interface EvalData<T> {
  items: T[];
  /** Lines the items came from (1-based), parallel to items. */
  lines: number[];
}

const MAX_LISTED = 10;

/** Parse every non-blank line of a JSONL file with `check`; all problems are reported at once. */
async function readJsonl<T>(
  path: string,
  check: (v: unknown) => T | string,
  what: string,
): Promise<EvalData<T>> {
  const items: T[] = [], lines: number[] = [], errors: string[] = [];
  let count = 0;
  try {
    for await (const [line, text] of readLines(path)) {
      if (!text.trim()) continue;
      let v: unknown;
      try {
        v = JSON.parse(text);
      } catch (e) {
        errors.push(`${where(path, line)}: not valid JSON (${(e as Error).message})`);
        continue;
      }
      const r = check(v);
      if (typeof r === "string") errors.push(`${where(path, line)}: ${r}`);
      else {
        items.push(r);
        lines.push(line);
      }
      count++;
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(`data file not found: ${path}`, `--data expects a JSONL file of ${what}`);
    }
    throw e;
  }
  if (errors.length) {
    const more = errors.length > MAX_LISTED ? `\n  ... and ${errors.length - MAX_LISTED} more` : "";
    throw new UserError(
      `${errors.length} bad line(s) in ${path}:\n  ${
        errors.slice(0, MAX_LISTED).join("\n  ")
      }${more}`,
      `each line must be ${what}`,
    );
  }
  if (count === 0) throw new UserError(`${path} holds no items`, `expected ${what}`);
  return { items, lines };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Validate one MMLU-format object. */
export function checkMcItem(v: unknown): McItem | string {
  if (!isRecord(v)) return "expected a JSON object";
  const { question, choices, answer, subject } = v;
  if (typeof question !== "string" || !question.trim()) {
    return `"question" must be a non-empty string`;
  }
  if (!Array.isArray(choices) || choices.length < 2 || choices.length > 26) {
    return `"choices" must be a list of 2 to 26 strings`;
  }
  if (!choices.every((c) => typeof c === "string")) return `"choices" must hold strings`;
  let ans = answer;
  if (typeof ans === "string" && /^[A-Z]$/.test(ans)) ans = ans.charCodeAt(0) - 65;
  if (typeof ans !== "number" || !Number.isInteger(ans) || ans < 0 || ans >= choices.length) {
    return `"answer" must be a choice index 0..${choices.length - 1} (or its letter)`;
  }
  if (subject !== undefined && subject !== null && typeof subject !== "string") {
    return `"subject" must be a string`;
  }
  return {
    question,
    choices: choices as string[],
    answer: ans,
    subject: (subject as string) ?? "",
  };
}

/** Validate one {question, answer} object. */
export function checkQaItem(v: unknown): QaItem | string {
  if (!isRecord(v)) return "expected a JSON object";
  const { question, answer } = v;
  if (typeof question !== "string" || !question.trim()) {
    return `"question" must be a non-empty string`;
  }
  if (typeof answer === "number") return { question, answer: String(answer) };
  if (typeof answer !== "string" || !answer.trim()) return `"answer" must be a non-empty string`;
  return { question, answer };
}

/** Read an MMLU-format JSONL file ({question, choices, answer, subject?}). */
export function readMcFile(path: string): Promise<EvalData<McItem>> {
  return readJsonl(
    path,
    checkMcItem,
    `{"question", "choices": [...], "answer": index, "subject"?}`,
  );
}

/** Read a {question, answer} JSONL file (GSM8K format). */
export function readQaFile(path: string): Promise<EvalData<QaItem>> {
  return readJsonl(path, checkQaItem, `{"question": ..., "answer": ...}`);
}

/** Read a chat/text JSONL file in the training format ({messages} or {text}). */
export function readChatFile(path: string): Promise<EvalData<RawSample>> {
  return readJsonl(path, (v) => {
    const r = validateSample(v);
    return "error" in r ? r.error : r.sample;
  }, `{"messages": [{"role", "content"}, ...]} or {"text": ...}`);
}

/**
 * Split MMLU items into few-shot examples and items to score: the first `shots` items of each
 * subject (in file order) become that subject's examples and are not scored; then at most
 * `limit` items are kept, in file order. (MMLU's dev split is not in the data, so the examples
 * come from the same file, as lm-eval does when a task has no few-shot split.)
 */
export function splitMcShots(
  items: McItem[],
  shots: number,
  limit: number | null,
): { examples: Map<string, McItem[]>; scored: McItem[] } {
  const examples = new Map<string, McItem[]>();
  const scored: McItem[] = [];
  for (const it of items) {
    const ex = examples.get(it.subject) ?? [];
    examples.set(it.subject, ex);
    if (ex.length < shots) ex.push(it);
    else scored.push(it);
  }
  return { examples, scored: limit === null ? scored : scored.slice(0, limit) };
}

/** The first `shots` items are examples, then at most `limit` items are scored. */
export function splitShots<T>(
  items: T[],
  shots: number,
  limit: number | null,
): { examples: T[]; scored: T[] } {
  const scored = items.slice(shots);
  return {
    examples: items.slice(0, shots),
    scored: limit === null ? scored : scored.slice(0, limit),
  };
}
