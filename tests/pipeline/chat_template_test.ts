// Tests of pipeline/chat_template.ts: shipped templates render exactly, resolution rules, prefix property.
import assert from "node:assert/strict";
import { loadTokenizer } from "../../model/tokenizer.ts";
import {
  renderWith,
  resolveChatTemplate,
  SHIPPED_TEMPLATES,
  shippedTemplate,
} from "../../pipeline/chat_template.ts";
import { UserError } from "../../pipeline/errors.ts";
import { sharedTest } from "../helpers.ts";

const CONV = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Hello!" },
  { role: "user", content: "2+2?" },
  { role: "assistant", content: "4" },
];

/** Expected full renders (stories260K's bos <s> / eos </s> for the plain template). */
const EXPECTED: Record<string, string> = {
  chatml: "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" +
    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n" +
    "<|im_start|>assistant\n4<|im_end|>\n",
  granite: "<|start_of_role|>system<|end_of_role|>Be brief.<|end_of_text|>\n" +
    "<|start_of_role|>user<|end_of_role|>Hi<|end_of_text|>\n" +
    "<|start_of_role|>assistant<|end_of_role|>Hello!<|end_of_text|>\n" +
    "<|start_of_role|>user<|end_of_role|>2+2?<|end_of_text|>\n" +
    "<|start_of_role|>assistant<|end_of_role|>4<|end_of_text|>\n",
  ibm_generic: "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!<|endoftext|>\n" +
    "<|user|>\n2+2?\n<|assistant|>\n4<|endoftext|>",
  plain: "<s>Be brief.\n\nUser: Hi\nAssistant:\nHello!</s>\nUser: 2+2?\nAssistant:\n4</s>\n",
};
const GEN_PROMPT: Record<string, string> = {
  chatml: "<|im_start|>assistant\n",
  granite: "<|start_of_role|>assistant<|end_of_role|>",
  ibm_generic: "<|assistant|>\n",
  plain: "Assistant:\n",
};

sharedTest("chat template: every shipped template renders the expected text", async (shared) => {
  const tok = await loadTokenizer(shared + "models/stories260K");
  assert.deepEqual([...SHIPPED_TEMPLATES].sort(), Object.keys(EXPECTED).sort());
  for (const name of SHIPPED_TEMPLATES) {
    const t = resolveChatTemplate(name, tok)!;
    assert.equal(t.name, name);
    assert.equal(renderWith(tok, t, CONV, false), EXPECTED[name], name);
    const prompt = renderWith(tok, t, CONV.slice(0, 4), true);
    assert.ok(prompt.endsWith(GEN_PROMPT[name]), `${name} generation prompt`);
  }
});

sharedTest(
  "chat template: prompt renders are prefixes of the full render (masking relies on it)",
  async (shared) => {
    const tok = await loadTokenizer(shared + "models/stories260K");
    for (const name of SHIPPED_TEMPLATES) {
      const t = resolveChatTemplate(name, tok)!;
      const full = renderWith(tok, t, CONV, false);
      for (let i = 1; i <= CONV.length; i++) {
        assert.ok(full.startsWith(renderWith(tok, t, CONV.slice(0, i), false)), `${name} [:${i}]`);
        if (CONV[i]?.role === "assistant") {
          assert.ok(
            full.startsWith(renderWith(tok, t, CONV.slice(0, i), true)),
            `${name} gen ${i}`,
          );
        }
      }
    }
  },
);

Deno.test("chat template: resolution — tokenizer's own, none, unknown name, file, bad syntax", async () => {
  const own = { chatTemplate: "{{ messages[0]['content'] }}" };
  assert.deepEqual(resolveChatTemplate(undefined, own), {
    name: "tokenizer",
    source: own.chatTemplate,
  });
  assert.deepEqual(resolveChatTemplate("tokenizer", own), {
    name: "tokenizer",
    source: own.chatTemplate,
  });
  assert.equal(resolveChatTemplate(undefined, { chatTemplate: null }), null);
  assert.throws(() => resolveChatTemplate("nope", own), UserError);
  assert.equal(
    resolveChatTemplate("chatml", { chatTemplate: null })!.source,
    shippedTemplate("chatml"),
  );
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/mine.jinja`;
    await Deno.writeTextFile(path, "{% for m in messages %}{{ m.content }}{% endfor %}");
    assert.equal(resolveChatTemplate(path, own)!.name, path);
    await Deno.writeTextFile(path, "{% for m in messages %}{{ m.content }");
    assert.throws(() => resolveChatTemplate(path, own), UserError);
    assert.throws(() => resolveChatTemplate(`${dir}/missing.jinja`, own), UserError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
