// Prompt construction for evaluation, following lm-eval-harness: MMLU (letter and cloze), GSM8K-style Q/A, plain or chat.
import type { ChatMessage } from "../model/tokenizer.ts";
import type { McItem, QaItem } from "./data.ts";

/** "plain": lm-eval's text prompts (base models); "chat": the same turns through a chat template. */
export type PromptStyle = "plain" | "chat";

/** Renders messages with the model's chat template (with the assistant header appended). */
export type ChatRenderer = (messages: ChatMessage[]) => string;

/** One log-likelihood request group: a shared context and one continuation per choice. */
export interface McRequest {
  context: string;
  continuations: string[];
}

/** A generation request: the prompt and the strings that end the answer. */
export interface GenRequest {
  prompt: string;
  stops: string[];
}

/** Choice letters. */
export const LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/** lm-eval's MMLU description: "The following are multiple choice questions (with answers) about X.\n\n". */
export function mmluDescription(subject: string): string {
  const s = subject.replaceAll("_", " ").trim();
  return s
    ? `The following are multiple choice questions (with answers) about ${s}.\n\n`
    : "The following are multiple choice questions (with answers).\n\n";
}

/** lm-eval's MMLU doc_to_text: "{question.strip()}\nA. {c0}\nB. {c1}\n...\nAnswer:". */
export function mmluQuestion(item: McItem): string {
  const lines = [item.question.trim()];
  item.choices.forEach((c, i) => lines.push(`${LETTERS[i]}. ${c}`));
  lines.push("Answer:");
  return lines.join("\n");
}

/** The cloze form (lm-eval mmlu_continuation): "Question: {question.strip()}\nAnswer:". */
export function clozeQuestion(item: McItem): string {
  return `Question: ${item.question.trim()}\nAnswer:`;
}

/** Continuations of a cloze item: the choice texts. */
function clozeTargets(item: McItem): string[] {
  return item.choices.slice();
}

/**
 * Letter scoring of an MMLU item with `examples` as shots. Plain: description + shots
 * ("{question}\nAnswer: X\n\n" each) + question, continuations " A", " B", ...; chat: the shots as
 * user/assistant turns (description in the first user turn), continuations "A", "B", ...
 */
export function mcLetterRequest(
  item: McItem,
  examples: McItem[],
  style: PromptStyle,
  render?: ChatRenderer,
): McRequest {
  const letters = item.choices.map((_, i) => LETTERS[i]);
  if (style === "plain") {
    const shots = examples.map((e) => `${mmluQuestion(e)} ${LETTERS[e.answer]}\n\n`).join("");
    return {
      context: mmluDescription(item.subject) + shots + mmluQuestion(item),
      continuations: letters.map((l) => ` ${l}`),
    };
  }
  const turns = [...examples, item].map((e) => mmluQuestion(e));
  const messages = chatTurns(
    mmluDescription(item.subject),
    turns,
    examples.map((e) => LETTERS[e.answer]),
  );
  return { context: need(render)(messages), continuations: letters };
}

/**
 * Full-choice-text scoring (cloze): plain "Question: ...\nAnswer:" + " {choice}"; chat: the
 * question as the user turn and the choice text as the assistant's answer. Shots answer with
 * their right choice's text.
 */
export function mcTextRequest(
  item: McItem,
  examples: McItem[],
  style: PromptStyle,
  render?: ChatRenderer,
): McRequest {
  if (style === "plain") {
    const shots = examples.map((e) => `${clozeQuestion(e)} ${e.choices[e.answer]}\n\n`).join("");
    return {
      context: mmluDescription(item.subject) + shots + clozeQuestion(item),
      continuations: clozeTargets(item).map((c) => ` ${c}`),
    };
  }
  const turns = [...examples, item].map((e) => e.question.trim());
  const messages = chatTurns(
    mmluDescription(item.subject),
    turns,
    examples.map((e) => e.choices[e.answer]),
  );
  return { context: need(render)(messages), continuations: clozeTargets(item) };
}

/** Strings that end a plain-style answer (lm-eval gsm8k `until`). */
export const PLAIN_STOPS = ["Question:", "</s>", "<|im_end|>"];

/**
 * A question/answer generation prompt. Plain (lm-eval gsm8k): shots "Question: q\nAnswer: a\n\n",
 * then "Question: q\nAnswer:"; chat: user/assistant turns ending with the generation prompt.
 */
export function qaRequest(
  item: QaItem,
  examples: QaItem[],
  style: PromptStyle,
  render?: ChatRenderer,
): GenRequest {
  if (style === "plain") {
    const shots = examples.map((e) => `Question: ${e.question}\nAnswer: ${e.answer}\n\n`).join("");
    return { prompt: `${shots}Question: ${item.question}\nAnswer:`, stops: PLAIN_STOPS };
  }
  const messages = chatTurns(
    "",
    [...examples, item].map((e) => e.question),
    examples.map((e) => e.answer),
  );
  return { prompt: need(render)(messages), stops: [] };
}

/** User/assistant turns: users[i] answered by answers[i]; the last user turn is unanswered. */
function chatTurns(prefix: string, users: string[], answers: string[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  users.forEach((u, i) => {
    out.push({ role: "user", content: i === 0 ? prefix + u : u });
    if (i < answers.length) out.push({ role: "assistant", content: answers[i] });
  });
  return out;
}

function need(render: ChatRenderer | undefined): ChatRenderer {
  if (!render) throw new Error("chat style needs a chat renderer");
  return render;
}
