// Prompt formats (lm-eval-harness MMLU letter/cloze, GSM8K) and answer extraction, checked on exact strings.
import assert from "node:assert/strict";
import { checkMcItem, checkQaItem, splitMcShots, splitShots } from "../../eval/data.ts";
import {
  cutAtStop,
  extractFlexible,
  extractStrict,
  normalizeNumber,
  scoreAnswer,
} from "../../eval/extract.ts";
import { mcLetterRequest, mcTextRequest, mmluDescription, qaRequest } from "../../eval/prompts.ts";
import type { ChatMessage } from "../../model/tokenizer.ts";

const item = {
  question: "  What is 2 + 2? ",
  choices: ["3", "4", "5", "22"],
  answer: 1,
  subject: "elementary_mathematics",
};
const shot = {
  question: "What is 1 + 1?",
  choices: ["2", "1", "0", "11"],
  answer: 0,
  subject: "elementary_mathematics",
};

Deno.test("prompts: MMLU letter prompt is lm-eval's, zero- and one-shot", () => {
  assert.equal(
    mmluDescription("high_school_us_history"),
    "The following are multiple choice questions (with answers) about high school us history.\n\n",
  );
  const r0 = mcLetterRequest(item, [], "plain");
  assert.equal(
    r0.context,
    "The following are multiple choice questions (with answers) about elementary mathematics.\n\n" +
      "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:",
  );
  assert.deepEqual(r0.continuations, [" A", " B", " C", " D"]);
  const r1 = mcLetterRequest(item, [shot], "plain");
  assert.equal(
    r1.context,
    "The following are multiple choice questions (with answers) about elementary mathematics.\n\n" +
      "What is 1 + 1?\nA. 2\nB. 1\nC. 0\nD. 11\nAnswer: A\n\n" +
      "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:",
  );
});

Deno.test("prompts: cloze (full choice text) and chat renderings", () => {
  const t = mcTextRequest(item, [shot], "plain");
  assert.equal(
    t.context,
    "The following are multiple choice questions (with answers) about elementary mathematics.\n\n" +
      "Question: What is 1 + 1?\nAnswer: 2\n\nQuestion: What is 2 + 2?\nAnswer:",
  );
  assert.deepEqual(t.continuations, [" 3", " 4", " 5", " 22"]);
  const seen: ChatMessage[][] = [];
  const render = (m: ChatMessage[]) => {
    seen.push(m);
    return m.map((x) => `<${x.role}>${x.content}`).join("") + "<assistant>";
  };
  const c = mcLetterRequest(item, [shot], "chat", render);
  assert.deepEqual(c.continuations, ["A", "B", "C", "D"]);
  assert.equal(seen[0].length, 3);
  assert.deepEqual(seen[0].map((m) => m.role), ["user", "assistant", "user"]);
  assert.ok(seen[0][0].content.startsWith("The following are multiple choice questions"));
  assert.equal(seen[0][1].content, "A");
  const ct = mcTextRequest(item, [], "chat", render);
  assert.equal(
    ct.context,
    "<user>The following are multiple choice questions (with answers) about " +
      "elementary mathematics.\n\nWhat is 2 + 2?<assistant>",
  );
  assert.deepEqual(ct.continuations, item.choices);
});

Deno.test("prompts: GSM8K question/answer prompt and stops", () => {
  const q = { question: "Q2?", answer: "x\n#### 5" };
  const ex = [{ question: "Q1?", answer: "y\n#### 3" }];
  const r = qaRequest(q, ex, "plain");
  assert.equal(r.prompt, "Question: Q1?\nAnswer: y\n#### 3\n\nQuestion: Q2?\nAnswer:");
  assert.deepEqual(r.stops, ["Question:", "</s>", "<|im_end|>"]);
  const c = qaRequest(q, ex, "chat", (m) => JSON.stringify(m));
  assert.equal(
    c.prompt,
    JSON.stringify([
      { role: "user", content: "Q1?" },
      { role: "assistant", content: "y\n#### 3" },
      { role: "user", content: "Q2?" },
    ]),
  );
});

Deno.test("extract: GSM8K strict and flexible answers with lm-eval's normalization", () => {
  assert.equal(extractStrict("so 3 + 4 = 7\n#### 1,234."), "1,234.");
  assert.equal(normalizeNumber("1,234."), "1234");
  assert.equal(normalizeNumber("Janet sells...\n#### $18"), "18");
  assert.equal(extractFlexible("He pays $1,200 then 35 more, total 1235."), "1235.");
  assert.equal(extractFlexible("no digits here"), null);
  const ref = "Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18";
  assert.deepEqual(scoreAnswer("9 * 2 = 18\n#### 18", ref), {
    prediction: "18",
    reference: "18",
    strict: true,
    flexible: true,
  });
  const loose = scoreAnswer("She makes $18 every day.", ref);
  assert.equal(loose.strict, false);
  assert.equal(loose.flexible, true);
  assert.equal(scoreAnswer("#### 17", ref).flexible, false);
  assert.equal(scoreAnswer("-5", "#### -5").flexible, true);
  // Plain answers: whitespace-normalized equality.
  assert.equal(scoreAnswer("  57 \n", "57").strict, true);
  assert.equal(scoreAnswer("a,  b, c", "a, b, c").strict, true);
  assert.equal(scoreAnswer("57.", "57").strict, false);
  assert.deepEqual(cutAtStop("12\n\nQuestion: next", ["Question:", "</s>"]), {
    text: "12\n\n",
    stopped: true,
  });
  assert.deepEqual(cutAtStop("12", ["Question:"]), { text: "12", stopped: false });
});

Deno.test("data: item validation and few-shot splits", () => {
  assert.deepEqual(checkMcItem({ question: "q", choices: ["a", "b"], answer: "B" }), {
    question: "q",
    choices: ["a", "b"],
    answer: 1,
    subject: "",
  });
  assert.match(String(checkMcItem({ question: "q", choices: ["a", "b"], answer: 2 })), /answer/);
  assert.match(String(checkMcItem({ question: "", choices: ["a"], answer: 0 })), /question/);
  assert.deepEqual(checkQaItem({ question: "q", answer: 5 }), { question: "q", answer: "5" });
  assert.match(String(checkQaItem({ question: "q" })), /answer/);
  const mk = (s: string, i: number) => ({
    question: `${s}${i}`,
    choices: ["a", "b"],
    answer: 0,
    subject: s,
  });
  const items = [mk("x", 0), mk("y", 0), mk("x", 1), mk("x", 2), mk("y", 1)];
  const sp = splitMcShots(items, 1, null);
  assert.deepEqual(sp.examples.get("x")!.map((i) => i.question), ["x0"]);
  assert.deepEqual(sp.examples.get("y")!.map((i) => i.question), ["y0"]);
  assert.deepEqual(sp.scored.map((i) => i.question), ["x1", "x2", "y1"]);
  assert.deepEqual(splitMcShots(items, 1, 2).scored.map((i) => i.question), ["x1", "x2"]);
  assert.deepEqual(splitShots([1, 2, 3, 4], 1, 2), { examples: [1], scored: [2, 3] });
});
