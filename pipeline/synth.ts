// The quickstart's synthetic data: facts about a generated fictional world plus small skill tasks.
//
// Knowledge: every fact (country × relation) is taught with the TRAIN paraphrases of its
// relation's question; the held-out files ask the same facts with the HELD-OUT paraphrases only,
// so the held-out questions test recall through an unseen wording. Skills: short compositional
// tasks whose held-out instances (operands, lists, words) never occur in training. Everything is
// a pure function of the seed (one PRNG stream per part, so e.g. `heldout` does not change the
// training files). Texts are short for a tiny model (hidden ~64, vocab ~512, ≤ 128 tokens).
import { join } from "node:path";
import { writeFileAtomic } from "./run_dir.ts";

/** Where a synthetic block writes, relative to the run dir. */
export const SYNTH_SUBDIR = "data/synthetic";

/** File names of generateQuickstartData's outputs inside its output folder. */
export const SYNTH_FILES = {
  knowledgeTrain: "knowledge_train.jsonl",
  skillsTrain: "skills_train.jsonl",
  heldoutChat: "heldout_chat.jsonl",
  heldoutMc: "heldout_mc.jsonl",
  heldoutExact: "heldout_exact.jsonl",
  world: "world.json",
} as const;

/** Absolute paths of the generated files. */
export type QuickstartFiles = { [K in keyof typeof SYNTH_FILES]: string };

/** Sizes of the generated data. */
export interface QuickstartOptions {
  seed: number;
  /** Facts taught (each with 3 training paraphrases). */
  knowledgeFacts: number;
  /** Skill samples in skills_train.jsonl (round-robin over the 6 tasks). */
  skillsSamples: number;
  /** Held-out knowledge questions and held-out skill instances (each up to this many). */
  heldout: number;
}

/** A chat sample as the training data files hold it. */
export interface ChatSample {
  messages: { role: "system" | "user" | "assistant"; content: string }[];
}

/** An MMLU-format multiple-choice item. */
export interface McItem {
  question: string;
  choices: string[];
  answer: number;
  subject: "knowledge" | "skills";
}

/** One generated country and its attributes. */
export interface Country {
  name: string;
  capital: string;
  river: string;
  founder: string;
  export: string;
  flag: string;
}

/** The relation kinds a fact can have. */
export type Relation = "capital" | "river" | "founder" | "export" | "flag";
const RELATIONS: Relation[] = ["capital", "river", "founder", "export", "flag"];

// ---------------------------------------------------------------------------------------------
// PRNG: mulberry32 over a seed mixed with a per-stream salt (pure 32-bit integer math, so the
// same seed gives the same bytes on every platform).

type Rng = () => number;

function makeRng(seed: number, salt: number): Rng {
  let a = (Math.imul((seed | 0) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(salt, 0xc2b2ae35)) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randInt(r: Rng, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

function pick<T>(r: Rng, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)];
}

function shuffle<T>(r: Rng, xs: T[]): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

// ---------------------------------------------------------------------------------------------
// The world

const ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "br"];
const VOWELS = ["a", "e", "i", "o", "u", "ae", "or"];
const ENDINGS = {
  country: ["ia", "or", "a", "en", "ar", "is"],
  city: ["sk", "holm", "ton", "mar", "dun", "vik"],
  river: ["a", "e", "is", "o", "an"],
  first: ["", "o", "a", "in"],
  last: ["en", "ar", "ov", "ric", "dal"],
};
const EXPORTS = [
  "copper",
  "salt",
  "wool",
  "tea",
  "glass",
  "amber",
  "silk",
  "tin",
  "honey",
  "timber",
  "pearls",
  "iron",
  "cotton",
  "marble",
];
const COLORS = ["red", "blue", "green", "white", "black", "gold", "purple", "orange", "gray"];

function capitalize(s: string): string {
  return s[0].toUpperCase() + s.slice(1);
}

function makeWord(r: Rng, syllables: number, endings: readonly string[]): string {
  let w = "";
  for (let i = 0; i < syllables; i++) w += pick(r, ONSETS) + pick(r, VOWELS);
  return capitalize(w + pick(r, endings));
}

/** A fresh name (never returned before for this `used` set). */
function freshName(used: Set<string>, make: () => string): string {
  for (let i = 0; i < 10000; i++) {
    const n = make();
    if (!used.has(n)) {
      used.add(n);
      return n;
    }
  }
  throw new Error("synthetic world: ran out of fresh names");
}

interface World {
  countries: Country[];
  /** Decoy names per name-valued relation, so every MC item has 3 distractors. */
  decoys: Record<"capital" | "river" | "founder", string[]>;
}

function makeWorld(r: Rng, nCountries: number): World {
  const used = new Set<string>();
  const country = () => makeWord(r, 2, ENDINGS.country);
  const city = () => makeWord(r, randInt(r, 1, 2), ENDINGS.city);
  const river = () => makeWord(r, 2, ENDINGS.river);
  const person = () =>
    `${makeWord(r, randInt(r, 1, 2), ENDINGS.first)} ${makeWord(r, 2, ENDINGS.last)}`;
  const countries: Country[] = [];
  for (let i = 0; i < nCountries; i++) {
    countries.push({
      name: freshName(used, country),
      capital: freshName(used, city),
      river: freshName(used, river),
      founder: freshName(used, person),
      export: pick(r, EXPORTS),
      flag: pick(r, COLORS),
    });
  }
  const decoys = {
    capital: [0, 1, 2].map(() => freshName(used, city)),
    river: [0, 1, 2].map(() => freshName(used, river)),
    founder: [0, 1, 2].map(() => freshName(used, person)),
  };
  return { countries, decoys };
}

/** Question paraphrases per relation: `train` ones are taught, `heldout` ones only evaluated. */
const TEMPLATES: Record<Relation, { train: string[]; heldout: string[]; answer: string }> = {
  capital: {
    train: [
      "What is the capital of {C}?",
      "Which city is the capital of {C}?",
      "Name the capital city of {C}.",
    ],
    heldout: ["{C} has its capital in which city?", "Tell me the capital of {C}."],
    answer: "The capital of {C} is {V}.",
  },
  river: {
    train: [
      "What is the longest river in {C}?",
      "Which river is the longest in {C}?",
      "Name the longest river of {C}.",
    ],
    heldout: ["The longest river of {C} is called what?", "Tell me the longest river in {C}."],
    answer: "The longest river in {C} is the {V}.",
  },
  founder: {
    train: ["Who founded {C}?", "Who was the founder of {C}?", "Name the founder of {C}."],
    heldout: ["{C} was founded by whom?", "Tell me who founded {C}."],
    answer: "{C} was founded by {V}.",
  },
  export: {
    train: [
      "What is the main export of {C}?",
      "What does {C} export the most?",
      "Name the main export of {C}.",
    ],
    heldout: ["Which good is {C} best known for exporting?", "Tell me the main export of {C}."],
    answer: "The main export of {C} is {V}.",
  },
  flag: {
    train: [
      "What color is the flag of {C}?",
      "What is the color of the flag of {C}?",
      "Name the color of the flag of {C}.",
    ],
    heldout: ["The flag of {C} is which color?", "Tell me the color of the flag of {C}."],
    answer: "The flag of {C} is {V}.",
  },
};

function fill(template: string, c: string, v = ""): string {
  return template.replaceAll("{C}", c).replaceAll("{V}", v);
}

function chat(user: string, assistant: string): ChatSample {
  return { messages: [{ role: "user", content: user }, { role: "assistant", content: assistant }] };
}

/** Place `correct` among 3 distractors at a random position. */
function mcItem(
  r: Rng,
  question: string,
  correct: string,
  distractors: string[],
  subject: McItem["subject"],
): McItem {
  if (distractors.length !== 3 || new Set([correct, ...distractors]).size !== 4) {
    throw new Error(`synthetic MC item needs 3 distinct distractors: ${question}`);
  }
  const answer = randInt(r, 0, 3);
  const choices = distractors.slice();
  choices.splice(answer, 0, correct);
  return { question, choices, answer, subject };
}

/** Three distinct values of `pool` other than `correct`, in random order. */
function pickDistractors(r: Rng, pool: readonly string[], correct: string): string[] {
  const others = shuffle(r, [...new Set(pool)].filter((v) => v !== correct));
  return others.slice(0, 3);
}

// ---------------------------------------------------------------------------------------------
// Skills

/** One instance of a skill task; `key` identifies the instance independent of its wording. */
interface SkillInstance {
  task: string;
  key: string;
  question: string;
  answer: string;
  distractors: string[];
}

function listText(xs: readonly (number | string)[]): string {
  return xs.join(", ");
}

function distinctDigits(r: Rng, n: number): number[] {
  return shuffle(r, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).slice(0, n);
}

/** Up to 3 distinct non-negative numbers near `x` (not x). */
function nearNumbers(r: Rng, x: number): string[] {
  const cands = [x + 1, x - 1, x + 10, x - 10, x + 2, x - 2, x + 11, x - 9]
    .filter((v) => v >= 0 && v !== x);
  return shuffle(r, [...new Set(cands)]).slice(0, 3).map(String);
}

/** Up to 3 distinct permutations of `xs` other than `correct` (its text), original order first. */
function otherOrders(r: Rng, xs: number[], correct: string, first: number[][]): string[] {
  const out = new Set<string>();
  for (const f of first) {
    const t = listText(f);
    if (t !== correct) out.add(t);
  }
  for (let i = 0; out.size < 3 && i < 1000; i++) {
    const t = listText(shuffle(r, xs.slice()));
    if (t !== correct) out.add(t);
  }
  return [...out].slice(0, 3);
}

const COUNT_LETTERS = "abdeiklmnorst";

const SKILLS: ((r: Rng) => SkillInstance)[] = [
  (r) => {
    const a = randInt(r, 10, 99), b = randInt(r, 10, 99);
    const q = pick(r, [`What is ${a} + ${b}?`, `Add ${a} and ${b}.`]);
    return {
      task: "add",
      key: `add:${a}:${b}`,
      question: q,
      answer: String(a + b),
      distractors: nearNumbers(r, a + b),
    };
  },
  (r) => {
    let a = randInt(r, 10, 99), b = randInt(r, 10, 99);
    if (a < b) [a, b] = [b, a];
    const q = pick(r, [`What is ${a} - ${b}?`, `Subtract ${b} from ${a}.`]);
    return {
      task: "sub",
      key: `sub:${a}:${b}`,
      question: q,
      answer: String(a - b),
      distractors: nearNumbers(r, a - b),
    };
  },
  (r) => {
    const xs = distinctDigits(r, randInt(r, 3, 5));
    const ans = listText(xs.slice().reverse());
    const q = pick(r, [`Reverse the list: ${listText(xs)}`, `Write ${listText(xs)} in reverse.`]);
    return {
      task: "reverse",
      key: `reverse:${listText(xs)}`,
      question: q,
      answer: ans,
      distractors: otherOrders(r, xs, ans, [xs]),
    };
  },
  (r) => {
    const xs = distinctDigits(r, randInt(r, 3, 5));
    const sorted = xs.slice().sort((a, b) => a - b);
    const ans = listText(sorted);
    const q = pick(r, [
      `Sort the list: ${listText(xs)}`,
      `Sort from small to large: ${listText(xs)}`,
    ]);
    return {
      task: "sort",
      key: `sort:${listText(xs)}`,
      question: q,
      answer: ans,
      distractors: otherOrders(r, xs, ans, [xs, sorted.slice().reverse()]),
    };
  },
  (r) => {
    const xs = shuffle(r, Array.from({ length: 90 }, (_, i) => i + 10)).slice(0, randInt(r, 4, 5));
    const m = Math.max(...xs);
    const q = pick(r, [
      `What is the largest number in ${listText(xs)}?`,
      `Which is the biggest: ${listText(xs)}?`,
    ]);
    return {
      task: "max",
      key: `max:${listText(xs)}`,
      question: q,
      answer: String(m),
      distractors: shuffle(r, xs.filter((x) => x !== m)).slice(0, 3).map(String),
    };
  },
  (r) => {
    let w = "";
    for (let i = randInt(r, 5, 8); i > 0; i--) w += pick(r, COUNT_LETTERS.split(""));
    const letter = pick(r, w.split(""));
    const n = w.split("").filter((c) => c === letter).length;
    const q = pick(r, [
      `How many times does the letter ${letter} appear in ${w}?`,
      `Count the letter ${letter} in ${w}.`,
    ]);
    return {
      task: "count",
      key: `count:${letter}:${w}`,
      question: q,
      answer: String(n),
      distractors: nearNumbers(r, n),
    };
  },
];

/** The skill task names, in round-robin order. */
export const SKILL_TASKS = ["add", "sub", "reverse", "sort", "max", "count"] as const;

/** A skill instance whose key is not in `seen` (then added to it). */
function freshSkill(r: Rng, task: number, seen: Set<string>): SkillInstance {
  for (let i = 0; i < 10000; i++) {
    const s = SKILLS[task](r);
    if (!seen.has(s.key)) {
      seen.add(s.key);
      return s;
    }
  }
  throw new Error(`synthetic skills: ran out of fresh ${SKILL_TASKS[task]} instances`);
}

// ---------------------------------------------------------------------------------------------

function jsonl(rows: unknown[]): string {
  return rows.map((r) => JSON.stringify(r) + "\n").join("");
}

function checkCount(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name} must be an integer >= 0`);
}

/**
 * Write the quickstart data set into `outDir` (created if missing): knowledge_train.jsonl and
 * skills_train.jsonl (chat samples), heldout_chat.jsonl (held-out chat samples, for a loss
 * metric), heldout_mc.jsonl (MMLU format, knowledge + skills), heldout_exact.jsonl
 * ({question, answer}, skills) and world.json (the generated facts). Same seed, same bytes.
 */
export async function generateQuickstartData(
  outDir: string,
  opts: QuickstartOptions,
): Promise<QuickstartFiles> {
  checkCount("knowledgeFacts", opts.knowledgeFacts);
  checkCount("skillsSamples", opts.skillsSamples);
  checkCount("heldout", opts.heldout);
  if (!Number.isInteger(opts.seed)) throw new RangeError("seed must be an integer");

  // Knowledge: enough countries for the facts, then a random subset of (country, relation).
  const rWorld = makeRng(opts.seed, 1);
  const nCountries = Math.max(4, Math.ceil(opts.knowledgeFacts / RELATIONS.length));
  const world = makeWorld(rWorld, nCountries);
  const allFacts = world.countries.flatMap((c) => RELATIONS.map((rel) => ({ c, rel })));
  const facts = shuffle(rWorld, allFacts).slice(0, opts.knowledgeFacts);

  const rKnow = makeRng(opts.seed, 2);
  const knowledgeTrain: ChatSample[] = [];
  for (const { c, rel } of facts) {
    const t = TEMPLATES[rel];
    const answer = fill(t.answer, c.name, c[rel]);
    for (const q of t.train) knowledgeTrain.push(chat(fill(q, c.name), answer));
  }
  shuffle(rKnow, knowledgeTrain);

  // Skills: round-robin over tasks, every instance distinct.
  const rSkill = makeRng(opts.seed, 3);
  const seenSkills = new Set<string>();
  const skillsTrain: ChatSample[] = [];
  for (let i = 0; i < opts.skillsSamples; i++) {
    const s = freshSkill(rSkill, i % SKILLS.length, seenSkills);
    skillsTrain.push(chat(s.question, s.answer));
  }

  // Held-out: the same facts through held-out paraphrases; fresh skill instances.
  const rHeld = makeRng(opts.seed, 4);
  const heldoutChat: ChatSample[] = [];
  const heldoutMc: McItem[] = [];
  const heldoutExact: { question: string; answer: string }[] = [];
  const order = shuffle(rHeld, facts.slice());
  const nHeldTemplates = 2;
  const nKnow = Math.min(opts.heldout, order.length * nHeldTemplates);
  for (let i = 0; i < nKnow; i++) {
    const { c, rel } = order[i % order.length];
    const t = TEMPLATES[rel];
    const q = fill(t.heldout[Math.floor(i / order.length) % t.heldout.length], c.name);
    heldoutChat.push(chat(q, fill(t.answer, c.name, c[rel])));
    const pool = rel === "export"
      ? EXPORTS
      : rel === "flag"
      ? COLORS
      : [...world.countries.map((x) => x[rel]), ...world.decoys[rel]];
    // Choices are whole answers in the trained form ("The capital of X is Y."), so scoring the
    // choice text measures the fact, not the answer format.
    const say = (x: string) => fill(t.answer, c.name, x);
    const wrong = pickDistractors(rHeld, pool, c[rel]).map(say);
    heldoutMc.push(mcItem(rHeld, q, say(c[rel]), wrong, "knowledge"));
  }
  for (let i = 0; i < opts.heldout; i++) {
    const s = freshSkill(rHeld, i % SKILLS.length, seenSkills);
    heldoutChat.push(chat(s.question, s.answer));
    heldoutMc.push(mcItem(rHeld, s.question, s.answer, s.distractors, "skills"));
    heldoutExact.push({ question: s.question, answer: s.answer });
  }

  const files = Object.fromEntries(
    Object.entries(SYNTH_FILES).map(([k, name]) => [k, join(outDir, name)]),
  ) as QuickstartFiles;
  await Deno.mkdir(outDir, { recursive: true });
  await writeFileAtomic(files.knowledgeTrain, jsonl(knowledgeTrain));
  await writeFileAtomic(files.skillsTrain, jsonl(skillsTrain));
  await writeFileAtomic(files.heldoutChat, jsonl(heldoutChat));
  await writeFileAtomic(files.heldoutMc, jsonl(heldoutMc));
  await writeFileAtomic(files.heldoutExact, jsonl(heldoutExact));
  const worldJson = {
    seed: opts.seed,
    countries: world.countries,
    facts: facts.map(({ c, rel }) => ({ country: c.name, relation: rel, value: c[rel] })),
    templates: TEMPLATES,
  };
  await writeFileAtomic(files.world, JSON.stringify(worldJson, null, 2) + "\n");
  return files;
}
