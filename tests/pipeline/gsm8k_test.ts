// GSM8K → chat messages: validation, calculator stripping, file conversion, and the trained span on real data.
import assert from "node:assert/strict";
import { join } from "node:path";
import { scoreAnswer } from "../../eval/extract.ts";
import { loadTokenizer } from "../../model/tokenizer.ts";
import { resolveChatTemplate } from "../../pipeline/chat_template.ts";
import { UserError } from "../../pipeline/errors.ts";
import {
  checkGsm8kItem,
  convertGsm8kFile,
  gsm8kChatSample,
  gsm8kMessages,
  gsm8kText,
  readGsm8k,
  stripCalculator,
} from "../../pipeline/gsm8k.ts";
import { encodeChat, IGNORE, validateSample } from "../../pipeline/tokenize.ts";
import { sharedTest } from "../helpers.ts";

const ITEM = {
  question: "Natalia sold clips to 48 of her friends in April, and then half as many in May. " +
    "How many clips did she sell?",
  answer: "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n" +
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72",
};

Deno.test("stripCalculator removes every <<…>> annotation and nothing else", () => {
  assert.equal(
    stripCalculator(ITEM.answer),
    "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether.\n#### 72",
  );
  assert.equal(stripCalculator("a < b and c > d, 3 << 2"), "a < b and c > d, 3 << 2");
});

Deno.test("checkGsm8kItem accepts GSM8K lines and names what is wrong otherwise", () => {
  assert.deepEqual(checkGsm8kItem(ITEM), ITEM);
  assert.match(checkGsm8kItem([]) as string, /JSON object/);
  assert.match(checkGsm8kItem({ answer: "#### 1" }) as string, /"question"/);
  assert.match(checkGsm8kItem({ question: "q", answer: " " }) as string, /"answer"/);
  assert.match(checkGsm8kItem({ question: "q", answer: "42" }) as string, /#### N/);
  assert.deepEqual(checkGsm8kItem({ question: "q", answer: "so #### -1,000" }), {
    question: "q",
    answer: "so #### -1,000",
  });
});

Deno.test("gsm8kMessages: user asks, assistant answers (annotations stripped unless kept)", () => {
  const m = gsm8kMessages(ITEM);
  assert.equal(m.length, 2);
  assert.deepEqual(m[0], { role: "user", content: ITEM.question });
  assert.equal(m[1].role, "assistant");
  assert.equal(m[1].content, stripCalculator(ITEM.answer));
  assert.ok(!m[1].content.includes("<<"));
  const kept = gsm8kMessages(ITEM, { keepCalculator: true, system: "Solve it." });
  assert.deepEqual(kept.map((x) => x.role), ["system", "user", "assistant"]);
  assert.equal(kept[0].content, "Solve it.");
  assert.equal(kept[2].content, ITEM.answer);
  assert.equal(
    gsm8kText(ITEM),
    `Question: ${ITEM.question}\nAnswer: ${stripCalculator(ITEM.answer)}`,
  );
});

Deno.test("gsm8kChatSample: only {question, answer} lines, and they pass validateSample", () => {
  const s = gsm8kChatSample(ITEM);
  assert.ok(s);
  assert.equal(s.unmask, false);
  const v = validateSample({ messages: s.messages });
  assert.ok("sample" in v, JSON.stringify(v));
  assert.equal(gsm8kChatSample({ ...ITEM, messages: [] }), null);
  assert.equal(gsm8kChatSample({ ...ITEM, text: "x" }), null);
  assert.equal(gsm8kChatSample({ question: "q", answer: "no final line" }), null);
  assert.equal(gsm8kChatSample("text"), null);
});

Deno.test("convertGsm8kFile writes one {messages} line per item; bad lines are all listed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const src = join(dir, "in.jsonl"), dst = join(dir, "out", "chat.jsonl");
    const other = { question: "What is 2+3?", answer: "2+3 = <<2+3=5>>5\n#### 5" };
    await Deno.writeTextFile(src, `${JSON.stringify(ITEM)}\n\n${JSON.stringify(other)}\n`);
    assert.equal(await convertGsm8kFile(src, dst), 2);
    const lines = (await Deno.readTextFile(dst)).trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(lines, [
      { messages: gsm8kMessages(ITEM) },
      { messages: gsm8kMessages(other) },
    ]);
    assert.equal(await convertGsm8kFile(src, dst, { limit: 1 }), 1);

    await Deno.writeTextFile(src, `${JSON.stringify(ITEM)}\n{oops\n{"question": "q"}\n`);
    await assert.rejects(
      () => readGsm8k(src),
      (e: Error) => {
        assert.ok(e instanceof UserError);
        assert.match(e.message, /2 bad line\(s\)/);
        assert.match(e.message, /in\.jsonl:2: not valid JSON/);
        assert.match(e.message, /in\.jsonl:3: "answer" must be a non-empty string/);
        return true;
      },
    );
    await assert.rejects(() => readGsm8k(join(dir, "missing.jsonl")), UserError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest(
  "real GSM8K: targets keep the reference answer; only the answer is trained",
  async (root) => {
    const items = await readGsm8k(`${root}data/gsm8k/train.jsonl`, 40);
    assert.equal(items.length, 40);
    const tok = await loadTokenizer(`${root}models/stories260K`);
    const template = resolveChatTemplate("plain", tok)!;
    for (const it of items) {
      const msgs = gsm8kMessages(it);
      const target = msgs[1].content;
      assert.ok(!target.includes("<<"), target);
      // The eval's extraction finds the same final number in the target as in the reference.
      const score = scoreAnswer(target, it.answer);
      assert.ok(score.strict, `${target} vs ${it.answer}`);
      // Only the assistant's answer (and the eos that closes it) carries labels.
      const enc = encodeChat(tok, template, msgs);
      const trained = enc.inputIds.filter((_, i) => enc.labels[i] !== IGNORE);
      const text = tok.decode(trained, { skipSpecialTokens: true });
      assert.equal(text.trim(), target);
      assert.equal(trained[trained.length - 1], tok.eosId);
    }
  },
);
