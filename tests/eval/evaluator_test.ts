// Evaluator metrics where the right answer is known: loss, MC log-likelihoods and exact match vs the f64 reference model.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  Evaluator,
  type ExactDetails,
  type LoglikRequest,
  type McDetails,
} from "../../eval/evaluator.ts";
import { mcLetterRequest, mcTextRequest, qaRequest } from "../../eval/prompts.ts";
import type { ModelConfig } from "../../model/config.ts";
import { loadHfModel } from "../../model/hf_dir.ts";
import { loadTokenizer } from "../../model/tokenizer.ts";
import { resolveChatTemplate } from "../../pipeline/chat_template.ts";
import { encodeSample, IGNORE, validateSample } from "../../pipeline/tokenize.ts";
import { gpuTest, maxRelErr, report, sharedPath } from "../helpers.ts";
import { greedyGenerate, referenceLoss, type RefWeights } from "../reference/llama.ts";

const TOL = 1e-4; // sums of per-token log-probabilities (reductions through the whole model)
const FLOOR = 1; // relative-error floor for log-likelihoods (nats; they are O(1..100))

/** Σ log p over ids[start..] in f64, one unpacked sequence (labels shifted as the reference wants). */
function refLoglik(cfg: ModelConfig, w: RefWeights, r: LoglikRequest): number {
  const T = r.ids.length;
  const labels = new Int32Array(T).fill(-100);
  for (let j = r.start; j < T; j++) labels[j - 1] = r.ids[j];
  return -referenceLoss(cfg, w, {
    ids: Int32Array.from(r.ids),
    labels,
    pos: Uint32Array.from({ length: T }, (_, i) => i),
    seqStart: new Uint32Array(T),
    seqEnd: new Uint32Array(T).fill(T),
  }).lossSum;
}

async function writeJsonl(dir: string, name: string, rows: unknown[]): Promise<string> {
  const p = join(dir, name);
  await Deno.writeTextFile(p, rows.map((r) => JSON.stringify(r) + "\n").join(""));
  return p;
}

const argmax = (v: number[]) => v.reduce((b, x, i) => (x > v[b] ? i : b), 0);

const dir = sharedPath("models/stories260K");
if (dir) {
  gpuTest(
    "evaluator: held-out loss = the f64 reference's mean over trained tokens",
    async (gpu) => {
      const { config, tensors } = await loadHfModel(dir);
      const tmp = await Deno.makeTempDir({ prefix: "evaluator_test_" });
      const rows = [
        { text: "Once upon a time, there was a little dog." },
        {
          messages: [{ role: "user", content: "Tell me a story." }, {
            role: "assistant",
            content: "Lily saw a big ball.",
          }],
        },
        { text: "Tom liked to play in the sun with his friend Sue. They were happy." },
        {
          messages: [{ role: "user", content: "Hi" }, {
            role: "assistant",
            content: "Hello, friend!",
          }],
        },
      ];
      const data = await writeJsonl(tmp, "heldout.jsonl", rows);
      const ev = await Evaluator.open(gpu, dir, { tokens: 48, chatTemplate: "plain" });
      const r = await ev.evaluate({ name: "heldout", kind: "loss", data });
      // Reference: the same encoding as training, each sample alone in f64.
      const tok = await loadTokenizer(dir);
      const template = resolveChatTemplate("plain", tok);
      let sum = 0, count = 0;
      for (const row of rows) {
        const s = validateSample(row);
        assert.ok("sample" in s);
        const enc = encodeSample(tok, template, s.sample);
        const T = enc.inputIds.length;
        assert.ok(T <= 48);
        const labels = new Int32Array(T).fill(-100);
        for (let j = 1; j < T; j++) labels[j - 1] = enc.labels[j] === IGNORE ? -100 : enc.labels[j];
        const ref = referenceLoss(config, tensors, {
          ids: Int32Array.from(enc.inputIds),
          labels,
          pos: Uint32Array.from({ length: T }, (_, i) => i),
          seqStart: new Uint32Array(T),
          seqEnd: new Uint32Array(T).fill(T),
        });
        sum += ref.lossSum;
        count += ref.lossTokens;
      }
      const d = r.details as { loss: number; lossTokens: number; perplexity: number };
      assert.equal(d.lossTokens, count);
      const err = Math.abs(d.loss - sum / count) / (sum / count);
      report(`mean loss ${d.loss.toFixed(5)} vs ${(sum / count).toFixed(5)}`, err, TOL);
      assert.ok(err < TOL);
      assert.ok(Math.abs(d.perplexity - Math.exp(d.loss)) < 1e-9);
      assert.equal(r.score, d.loss);
      assert.equal(r.higherIsBetter, false);
      ev.destroy();
      await Deno.remove(tmp, { recursive: true });
    },
  );

  gpuTest(
    "evaluator: MC log-likelihoods and accuracies equal the reference's choices",
    async (gpu) => {
      const { config, tensors } = await loadHfModel(dir);
      const ev = await Evaluator.open(gpu, dir, { tokens: 256 });
      assert.equal(ev.promptStyle, "plain");
      const base = [
        {
          question: "Lily has a red ball. What color is the ball?",
          choices: ["red", "blue", "green", "big"],
          subject: "stories",
        },
        {
          question: "Tom went to the park. Where did Tom go?",
          choices: ["home", "the park", "school", "the sea"],
          subject: "stories",
        },
        {
          question: "What does a cat say?",
          choices: ["moo", "woof", "meow", "quack"],
          subject: "animals",
        },
      ];
      // The reference decides: items 0 and 1 get the reference's letter choice as the answer,
      // item 2 a wrong one, so letter accuracy must be exactly 2/3.
      const letterLl: number[][] = [], textLl: number[][] = [], textLen: number[][] = [];
      const gpuReqs: LoglikRequest[] = [];
      for (const it of base) {
        const item = { ...it, answer: 0 };
        const lr = mcLetterRequest(item, [], "plain"), tr = mcTextRequest(item, [], "plain");
        const lq = lr.continuations.map((c) => ev.encodePair(lr.context, c, true));
        const tq = tr.continuations.map((c) => ev.encodePair(tr.context, c, true));
        letterLl.push(lq.map((q) => refLoglik(config, tensors, q)));
        textLl.push(tq.map((q) => refLoglik(config, tensors, q)));
        textLen.push(tr.continuations.map((c) => c.length));
        gpuReqs.push(...lq, ...tq);
      }
      const got = await ev.loglik(gpuReqs);
      const want = [...letterLl.keys()].flatMap((i) => [...letterLl[i], ...textLl[i]]);
      const err = maxRelErr(got, want, FLOOR);
      report(`${got.length} choice log-likelihoods (floor ${FLOOR} nat)`, err, TOL);
      assert.ok(err < TOL);
      const answers = letterLl.map((l, i) => (i < 2 ? argmax(l) : (argmax(l) + 1) % 4));
      const tmp = await Deno.makeTempDir({ prefix: "evaluator_test_" });
      const data = await writeJsonl(
        tmp,
        "mc.jsonl",
        base.map((b, i) => ({ ...b, answer: answers[i] })),
      );
      const r = await ev.evaluate({ name: "mc", kind: "mc", data });
      const d = r.details as McDetails;
      const rate = (ll: number[][], norm?: number[][]) =>
        ll.filter((l, i) => argmax(norm ? l.map((x, j) => x / norm[i][j]) : l) === answers[i])
          .length / 3;
      assert.equal(d.acc, 2 / 3);
      assert.equal(d.acc_text, rate(textLl));
      assert.equal(d.acc_text_norm, rate(textLl, textLen));
      assert.deepEqual(Object.keys(d.subjects), ["animals", "stories"]);
      assert.equal(d.subjects.animals.acc, 0);
      assert.equal(d.subjects.stories.acc, 1);
      assert.equal(r.score, d.acc);
      console.log(
        `  acc ${d.acc.toFixed(3)}, acc_text ${d.acc_text.toFixed(3)}, norm ${
          d.acc_text_norm.toFixed(3)
        }`,
      );
      ev.destroy();
      await Deno.remove(tmp, { recursive: true });
    },
  );

  gpuTest("evaluator: exact match of greedy answers known from the reference", async (gpu) => {
    const { config, tensors } = await loadHfModel(dir);
    const tok = await loadTokenizer(dir);
    const ev = await Evaluator.open(gpu, dir, { tokens: 64, maxContext: 64 });
    const q = { question: "Once upon a time, there was a little girl", answer: "" };
    const prompt = tok.encode(qaRequest(q, [], "plain").prompt, { addSpecialTokens: true });
    let ref = greedyGenerate(config, tensors, prompt, 12);
    const eos = ref.indexOf(config.eosTokenIds[0]);
    if (eos >= 0) ref = ref.slice(0, eos);
    const answer = tok.decode(ref, { skipSpecialTokens: true });
    const tmp = await Deno.makeTempDir({ prefix: "evaluator_test_" });
    const data = await writeJsonl(tmp, "qa.jsonl", [
      { question: q.question, answer },
      { question: q.question, answer: "a wrong answer" },
      { question: "Question two", answer: "#### 7" },
    ]);
    const r = await ev.evaluate({ name: "exact", kind: "exact_match", data, maxTokens: 12 });
    const d = r.details as ExactDetails;
    console.log(`  generated ${JSON.stringify(d.examples[0].generation)}`);
    assert.equal(d.items, 3);
    assert.equal(d.flexible, 1 / 3);
    assert.equal(d.examples[0].correct, true);
    assert.equal(d.examples[1].correct, false);
    assert.ok(d.generatedTokens > 0 && r.tokensPerS > 0);
    ev.destroy();
    await Deno.remove(tmp, { recursive: true });
  });
}

const mmlu = sharedPath("data/mmlu-redux/mmlu_redux.jsonl");
if (dir && mmlu) {
  gpuTest(
    "evaluator: stories260K on 3 MMLU-Redux items end to end (0- and 1-shot)",
    async (gpu) => {
      const { config, tensors } = await loadHfModel(dir);
      const ev = await Evaluator.open(gpu, dir, { tokens: 512 });
      const r = await ev.evaluate({ name: "mmlu", kind: "mc", data: mmlu, shots: 0, limit: 3 });
      const d = r.details as McDetails;
      assert.equal(d.items, 3);
      assert.deepEqual(Object.keys(d.subjects), ["abstract_algebra"]);
      for (const x of [d.acc, d.acc_text, d.acc_text_norm]) {
        assert.ok([0, 1 / 3, 2 / 3, 1].includes(x));
      }
      console.log(
        `  0-shot: acc ${d.acc.toFixed(3)} text ${d.acc_text.toFixed(3)} norm ${
          d.acc_text_norm.toFixed(3)
        }; ${r.tokensPerS.toFixed(0)} tokens/s`,
      );
      // The first item's letter scores agree with the reference.
      const first = JSON.parse((await Deno.readTextFile(mmlu)).split("\n")[0]);
      const lr = mcLetterRequest(
        { ...first, answer: first.answer, subject: first.subject },
        [],
        "plain",
      );
      const reqs = lr.continuations.map((c) => ev.encodePair(lr.context, c, true));
      const err = maxRelErr(
        await ev.loglik(reqs),
        reqs.map((q) => refLoglik(config, tensors, q)),
        FLOOR,
      );
      report("MMLU item 1 letter log-likelihoods", err, TOL);
      assert.ok(err < TOL);
      const r1 = await ev.evaluate({ name: "mmlu", kind: "mc", data: mmlu, shots: 1, limit: 1 });
      assert.equal(r1.items, 1);
      assert.equal((r1.details as McDetails).shots, 1);
      ev.destroy();
    },
  );
}
