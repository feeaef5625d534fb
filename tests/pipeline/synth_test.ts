// Quickstart synthetic data: deterministic, held-out wording unseen, every answer right by construction.
import { deepStrictEqual, equal, notDeepStrictEqual, ok } from "node:assert/strict";
import { join } from "node:path";
import {
  type ChatSample,
  type Country,
  generateQuickstartData,
  type McItem,
  type QuickstartFiles,
  type Relation,
} from "../../pipeline/synth.ts";

const OPTS = { seed: 7, knowledgeFacts: 40, skillsSamples: 300, heldout: 30 };

async function readJsonl<T>(path: string): Promise<T[]> {
  const text = await Deno.readTextFile(path);
  ok(text.endsWith("\n"), `${path} ends with a newline`);
  return text.trimEnd().split("\n").map((l) => JSON.parse(l) as T);
}

async function generate(seed = OPTS.seed): Promise<{ dir: string; files: QuickstartFiles }> {
  const dir = await Deno.makeTempDir({ prefix: "synth_test_" });
  return { dir, files: await generateQuickstartData(join(dir, "out"), { ...OPTS, seed }) };
}

interface WorldJson {
  countries: Country[];
  facts: { country: string; relation: Relation; value: string }[];
  templates: Record<Relation, { train: string[]; heldout: string[]; answer: string }>;
}

/** Recompute a skill answer from the question text alone. */
function solveSkill(q: string): string {
  let m: RegExpMatchArray | null;
  const list = (s: string) => s.split(", ").map(Number);
  if ((m = q.match(/^What is (\d+) \+ (\d+)\?$/) ?? q.match(/^Add (\d+) and (\d+)\.$/))) {
    return String(Number(m[1]) + Number(m[2]));
  }
  if ((m = q.match(/^What is (\d+) - (\d+)\?$/))) return String(Number(m[1]) - Number(m[2]));
  if ((m = q.match(/^Subtract (\d+) from (\d+)\.$/))) return String(Number(m[2]) - Number(m[1]));
  if ((m = q.match(/^Reverse the list: (.+)$/) ?? q.match(/^Write (.+) in reverse\.$/))) {
    return list(m[1]).reverse().join(", ");
  }
  if ((m = q.match(/^Sort the list: (.+)$/) ?? q.match(/^Sort from small to large: (.+)$/))) {
    return list(m[1]).sort((a, b) => a - b).join(", ");
  }
  if (
    (m = q.match(/^What is the largest number in (.+)\?$/) ??
      q.match(/^Which is the biggest: (.+)\?$/))
  ) {
    return String(Math.max(...list(m[1])));
  }
  if (
    (m = q.match(/^How many times does the letter (\w) appear in (\w+)\?$/) ??
      q.match(/^Count the letter (\w) in (\w+)\.$/))
  ) {
    return String(m[2].split("").filter((c) => c === m![1]).length);
  }
  throw new Error(`unrecognised skill question: ${q}`);
}

/** A skill question's instance (task and operands), whatever its wording. */
function instanceKey(q: string): string {
  let m: RegExpMatchArray | null;
  if ((m = q.match(/^What is (\d+) \+ (\d+)\?$/) ?? q.match(/^Add (\d+) and (\d+)\.$/))) {
    return `add:${m[1]}:${m[2]}`;
  }
  if ((m = q.match(/^What is (\d+) - (\d+)\?$/))) return `sub:${m[1]}:${m[2]}`;
  if ((m = q.match(/^Subtract (\d+) from (\d+)\.$/))) return `sub:${m[2]}:${m[1]}`;
  if ((m = q.match(/^Reverse the list: (.+)$/) ?? q.match(/^Write (.+) in reverse\.$/))) {
    return `reverse:${m[1]}`;
  }
  if ((m = q.match(/^Sort the list: (.+)$/) ?? q.match(/^Sort from small to large: (.+)$/))) {
    return `sort:${m[1]}`;
  }
  if (
    (m = q.match(/^What is the largest number in (.+)\?$/) ??
      q.match(/^Which is the biggest: (.+)\?$/))
  ) {
    return `max:${m[1]}`;
  }
  if (
    (m = q.match(/^How many times does the letter (\w) appear in (\w+)\?$/) ??
      q.match(/^Count the letter (\w) in (\w+)\.$/))
  ) {
    return `count:${m[1]}:${m[2]}`;
  }
  throw new Error(`unrecognised skill question: ${q}`);
}

/** The (country, relation, template kind) a knowledge question was made from. */
function parseKnowledge(
  q: string,
  w: WorldJson,
): { c: Country; rel: Relation; kind: "train" | "heldout" } {
  for (const c of w.countries) {
    for (const rel of Object.keys(w.templates) as Relation[]) {
      for (const kind of ["train", "heldout"] as const) {
        if (w.templates[rel][kind].some((t) => t.replaceAll("{C}", c.name) === q)) {
          return { c, rel, kind };
        }
      }
    }
  }
  throw new Error(`unrecognised knowledge question: ${q}`);
}

const user = (s: ChatSample) => s.messages.find((m) => m.role === "user")!.content;
const assistant = (s: ChatSample) => s.messages.find((m) => m.role === "assistant")!.content;

Deno.test("same seed gives the same bytes; another seed other data", async () => {
  const a = await generate(), b = await generate(), c = await generate(8);
  for (const k of Object.keys(a.files) as (keyof QuickstartFiles)[]) {
    deepStrictEqual(await Deno.readFile(a.files[k]), await Deno.readFile(b.files[k]), k);
  }
  notDeepStrictEqual(
    await Deno.readTextFile(a.files.knowledgeTrain),
    await Deno.readTextFile(c.files.knowledgeTrain),
  );
  for (const d of [a, b, c]) await Deno.remove(d.dir, { recursive: true });
});

Deno.test("sizes, formats and correct answers", async () => {
  const { dir, files } = await generate();
  const world = JSON.parse(await Deno.readTextFile(files.world)) as WorldJson;
  const know = await readJsonl<ChatSample>(files.knowledgeTrain);
  const skills = await readJsonl<ChatSample>(files.skillsTrain);
  const chat = await readJsonl<ChatSample>(files.heldoutChat);
  const mc = await readJsonl<McItem>(files.heldoutMc);
  const exact = await readJsonl<{ question: string; answer: string }>(files.heldoutExact);

  equal(world.facts.length, OPTS.knowledgeFacts);
  equal(know.length, 3 * OPTS.knowledgeFacts, "3 training paraphrases per fact");
  equal(skills.length, OPTS.skillsSamples);
  equal(exact.length, OPTS.heldout);
  equal(mc.length, 2 * OPTS.heldout, "knowledge + skills MC");
  equal(chat.length, 2 * OPTS.heldout);

  // Every taught fact is in world.json and every answer states it.
  const taught = new Set(world.facts.map((f) => `${f.country}/${f.relation}`));
  for (const s of know) {
    deepStrictEqual(s.messages.map((m) => m.role), ["user", "assistant"]);
    const { c, rel, kind } = parseKnowledge(user(s), world);
    equal(kind, "train");
    ok(taught.has(`${c.name}/${rel}`));
    equal(
      assistant(s),
      world.templates[rel].answer.replaceAll("{C}", c.name).replaceAll("{V}", c[rel]),
    );
  }
  for (const s of [...skills, ...chat.slice(OPTS.heldout)]) {
    equal(assistant(s), solveSkill(user(s)), user(s));
  }
  for (const e of exact) equal(e.answer, solveSkill(e.question), e.question);

  // MC: 4 distinct choices, the keyed one right, the subject right.
  const count = { knowledge: 0, skills: 0 };
  for (const item of mc) {
    equal(item.choices.length, 4);
    equal(new Set(item.choices).size, 4, `distinct choices: ${item.question}`);
    ok(Number.isInteger(item.answer) && item.answer >= 0 && item.answer < 4);
    count[item.subject]++;
    const right = item.choices[item.answer];
    if (item.subject === "skills") equal(right, solveSkill(item.question), item.question);
    else {
      const { c, rel, kind } = parseKnowledge(item.question, world);
      equal(kind, "heldout", `held-out paraphrase: ${item.question}`);
      ok(taught.has(`${c.name}/${rel}`), "held-out questions ask taught facts");
      // Choices are whole answer sentences; the keyed one states the true value.
      ok(right.includes(c.name) && right.endsWith(`${c[rel]}.`), `${right} states ${c[rel]}`);
    }
  }
  deepStrictEqual(count, { knowledge: OPTS.heldout, skills: OPTS.heldout });
  // The correct answer is not always in the same slot.
  ok(new Set(mc.map((m) => m.answer)).size >= 3, "answer positions vary");

  // Short texts (the quickstart model sees <= 128 tokens).
  const longest = Math.max(
    ...[...know, ...skills, ...chat].map((s) => user(s).length + assistant(s).length),
  );
  console.log(`  longest sample: ${longest} characters`);
  ok(longest < 120, `longest sample ${longest} chars`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("no held-out question appears in training; skill instances are fresh", async () => {
  const { dir, files } = await generate();
  const know = await readJsonl<ChatSample>(files.knowledgeTrain);
  const skills = await readJsonl<ChatSample>(files.skillsTrain);
  const train = new Set([...know, ...skills].map(user));
  const mc = await readJsonl<McItem>(files.heldoutMc);
  const chat = await readJsonl<ChatSample>(files.heldoutChat);
  const exact = await readJsonl<{ question: string }>(files.heldoutExact);
  for (
    const q of [
      ...mc.map((m) => m.question),
      ...chat.map(user),
      ...exact.map((e) => e.question),
    ]
  ) {
    ok(!train.has(q), `held-out question seen in training: ${q}`);
  }
  // Fresh instances, not just fresh wording: operands / list / word never occur in training.
  const trainKeys = new Set(skills.map((s) => instanceKey(user(s))));
  equal(trainKeys.size, skills.length, "training skill instances are distinct");
  for (const e of exact) {
    ok(!trainKeys.has(instanceKey(e.question)), `held-out instance in training: ${e.question}`);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad sizes are rejected", async () => {
  let threw = false;
  try {
    await generateQuickstartData("/nonexistent/never", { ...OPTS, heldout: -1 });
  } catch (e) {
    threw = e instanceof RangeError;
  }
  ok(threw);
});
