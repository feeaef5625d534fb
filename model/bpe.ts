// Byte-level BPE tokenizer generator: trains merges on a corpus, writes HF tokenizer.json and its config.

/** Special tokens of generated tokenizers, ids 0, 1, 2 (<|endoftext|> is eos and pad). */
export const SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;

/** ChatML chat template (as SmolLM2/Qwen2 instruct models use). */
export const CHATML_TEMPLATE = "{% for message in messages %}" +
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** GPT-2's byte → printable character map (bytes_to_unicode). */
export const BYTE_TO_CHAR: string[] = (() => {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const out: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCharCode(keep.includes(b) ? b : 256 + extra++);
  }
  return out;
})();

// Same pre-tokenization as the tokenizer.json we write: Digits(individual) then GPT-2's ByteLevel regex.
const DIGITS = /[^\d]+|\d/gu;
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const encoder = new TextEncoder();

/** Split text into pre-tokens (raw text pieces, before the byte-level mapping). */
function splitWords(text: string, visit: (w: string) => void): void {
  for (const piece of text.match(DIGITS) ?? []) {
    if (piece.length === 1) visit(piece);
    else for (const w of piece.match(GPT2_SPLIT) ?? []) visit(w);
  }
}

/** Map a text piece to its byte-level characters. */
export function byteLevel(w: string): string {
  let s = "";
  for (const b of encoder.encode(w)) s += BYTE_TO_CHAR[b];
  return s;
}

/** Split text into byte-level pre-tokens (each a string of BYTE_TO_CHAR characters). */
export function preTokenize(text: string): string[] {
  const out: string[] = [];
  splitWords(text, (w) => out.push(byteLevel(w)));
  return out;
}

/** A trained byte-level BPE: token strings by id and merges in rank order. */
export interface TrainedBpe {
  /** Token string of each id: special tokens, the 256 byte characters, then merged tokens. */
  vocab: string[];
  merges: [string, string][];
  specialTokens: string[];
}

/** Options of trainBpe. */
export interface BpeOptions {
  /** Target number of tokens including special tokens and the 256 bytes. */
  vocabSize: number;
  specialTokens?: readonly string[];
  /** Pairs seen fewer times than this are not merged (default 2); training may stop short. */
  minFrequency?: number;
}

class PairHeap {
  private items: number[][] = []; // [count, a, b]
  private less(x: number[], y: number[]): boolean {
    // "x before y": higher count first, then lower ids (deterministic)
    if (x[0] !== y[0]) return x[0] > y[0];
    if (x[1] !== y[1]) return x[1] < y[1];
    return x[2] < y[2];
  }
  push(item: number[]) {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }
  pop(): number[] | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l], a[m])) m = l;
        if (r < a.length && this.less(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}

const KEY = 2 ** 21;

/**
 * Train byte-level BPE merges on `texts` until the vocabulary reaches opts.vocabSize or no pair occurs
 * minFrequency times (then the vocabulary is smaller). Deterministic.
 */
export function trainBpe(texts: Iterable<string>, opts: BpeOptions): TrainedBpe {
  const specials = [...(opts.specialTokens ?? SPECIAL_TOKENS)];
  const minFreq = opts.minFrequency ?? 2;
  const base = specials.length + 256;
  if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < base) {
    throw new Error(`vocabulary size must be at least ${base} (special tokens + 256 bytes)`);
  }
  if (opts.vocabSize >= KEY) throw new Error(`vocabulary size must be below ${KEY}`);
  const vocab: string[] = [...specials, ...BYTE_TO_CHAR];
  const idOf = new Map<string, number>(vocab.map((t, i) => [t, i]));

  const wordCounts = new Map<string, number>();
  for (const text of texts) {
    splitWords(text, (w) => wordCounts.set(w, (wordCounts.get(w) ?? 0) + 1));
  }
  const words: number[][] = [];
  const counts: number[] = [];
  for (const [w, c] of wordCounts) {
    words.push([...byteLevel(w)].map((ch) => idOf.get(ch)!));
    counts.push(c);
  }

  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  // count of each pair touched by the current merge, before it (only increases need a heap push)
  const before = new Map<number, number>();
  const addPairs = (wi: number, sign: 1 | -1) => {
    const w = words[wi], c = counts[wi] * sign;
    for (let i = 0; i + 1 < w.length; i++) {
      const key = w[i] * KEY + w[i + 1];
      const old = pairCount.get(key) ?? 0;
      if (!before.has(key)) before.set(key, old);
      const n = old + c;
      if (n === 0) pairCount.delete(key);
      else pairCount.set(key, n);
      if (sign > 0) {
        let s = pairWords.get(key);
        if (!s) pairWords.set(key, s = new Set());
        s.add(wi);
      }
    }
  };
  for (let wi = 0; wi < words.length; wi++) addPairs(wi, 1);
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push([c, Math.floor(key / KEY), key % KEY]);
  before.clear();

  const merges: [string, string][] = [];
  while (vocab.length < opts.vocabSize) {
    const top = heap.pop();
    if (!top) break;
    const [c, a, b] = top;
    const key = a * KEY + b;
    const actual = pairCount.get(key) ?? 0;
    if (actual !== c) {
      if (actual > 0) heap.push([actual, a, b]);
      continue;
    }
    if (actual < minFreq) break;
    const tok = vocab[a] + vocab[b];
    let id = idOf.get(tok);
    if (id === undefined) {
      id = vocab.length;
      vocab.push(tok);
      idOf.set(tok, id);
    }
    merges.push([vocab[a], vocab[b]]);
    for (const wi of pairWords.get(key) ?? []) {
      const w = words[wi];
      let has = false;
      for (let i = 0; i + 1 < w.length; i++) if (w[i] === a && w[i + 1] === b) has = true;
      if (!has) continue;
      addPairs(wi, -1);
      const out: number[] = [];
      for (let i = 0; i < w.length; i++) {
        if (i + 1 < w.length && w[i] === a && w[i + 1] === b) {
          out.push(id);
          i++;
        } else out.push(w[i]);
      }
      words[wi] = out;
      addPairs(wi, 1);
    }
    pairWords.delete(key);
    for (const [k, old] of before) {
      const n = pairCount.get(k) ?? 0;
      if (n > old) heap.push([n, Math.floor(k / KEY), k % KEY]);
    }
    before.clear();
  }
  return { vocab, merges, specialTokens: specials };
}

function addedToken(id: number, content: string) {
  return {
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  };
}

/** HF tokenizer.json (tokenizers "1.0" format) for a trained byte-level BPE. */
export function tokenizerJson(bpe: TrainedBpe): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  bpe.vocab.forEach((t, i) => {
    if (!(t in vocab)) vocab[t] = i;
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: bpe.specialTokens.map((t) => addedToken(bpe.vocab.indexOf(t), t)),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Digits", individual_digits: true },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    post_processor: {
      type: "ByteLevel",
      add_prefix_space: true,
      trim_offsets: false,
      use_regex: true,
    },
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
      merges: bpe.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/** tokenizer_config.json: ChatML template, <|endoftext|> as eos and pad, no bos. */
export function tokenizerConfigJson(
  bpe: TrainedBpe,
  modelMaxLength: number,
): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  for (const t of bpe.specialTokens) {
    const { id: _id, ...rest } = addedToken(bpe.vocab.indexOf(t), t);
    decoder[String(bpe.vocab.indexOf(t))] = rest;
  }
  return {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: decoder,
    additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
    bos_token: null,
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: "<|endoftext|>",
    model_max_length: modelMaxLength,
    pad_token: "<|endoftext|>",
    tokenizer_class: "PreTrainedTokenizerFast",
    unk_token: null,
  };
}

/** special_tokens_map.json matching tokenizerConfigJson. */
export function specialTokensMapJson(): Record<string, unknown> {
  return {
    additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
    eos_token: "<|endoftext|>",
    pad_token: "<|endoftext|>",
  };
}

/** A small English text written for this project, the default corpus of generated tokenizers. */
export const BUILTIN_CORPUS = `
Once upon a time, in a small town by the river, there lived a girl named Mia. Every morning she
walked to the market with her grandmother to buy bread, apples and fresh milk. One day, they saw a
little dog sitting alone under a tree. "Is he lost?" asked Mia. Her grandmother smiled and said,
"Let us ask the people in the shop." Nobody knew the dog, so Mia gave him some water and a piece of
bread. The dog wagged his tail and followed them home. From that day on, the dog and Mia were best
friends. They played in the garden, ran along the river and slept under the warm blanket by the fire.

The sun is a star. It is about 150 million kilometres away from the Earth, and its light takes a
little more than eight minutes to reach us. Plants use sunlight, water and carbon dioxide to make
sugar and oxygen; this process is called photosynthesis. Water boils at 100 degrees Celsius at sea
level and freezes at 0 degrees. The human heart beats about 70 times a minute when we rest.

Question: Tom has 12 apples. He gives 5 apples to his sister and buys 8 more. How many apples does
he have now?
Answer: Tom starts with 12 apples. After giving away 5 he has 12 - 5 = 7 apples. Then he buys 8
more, so he has 7 + 8 = 15 apples. The answer is 15.

Question: A train travels 60 kilometres in one hour. How far does it travel in 3 hours?
Answer: In one hour the train travels 60 km, so in 3 hours it travels 3 * 60 = 180 km. The answer
is 180.

Question: Sara reads 24 pages a day. How many days does she need to read a book of 216 pages?
Answer: She needs 216 / 24 = 9 days. The answer is 9.

User: Can you help me write a short note to my teacher?
Assistant: Of course! Here is a short note: "Dear Ms. Brown, thank you for your help with my
science project this week. I learned a lot about plants and I enjoyed the experiment. Best wishes,
Sam." Would you like me to change anything?

User: What is the capital of France?
Assistant: The capital of France is Paris. It is known for the Eiffel Tower, its museums and its
cafes.

User: Give me three tips for studying.
Assistant: Here are three tips. First, study at the same time every day so that it becomes a habit.
Second, take a short break after every 25 or 30 minutes of work. Third, explain what you learned to
someone else, because teaching is one of the best ways to remember.

Instructions: Read the text and answer the question in one sentence. The weather was cold and
windy, so the children stayed inside and played a board game. They laughed when the little cat
jumped on the table and knocked over the pieces. Why did the children stay inside? Because the
weather was cold and windy.

A good recipe for pancakes needs flour, eggs, milk, a little sugar and a pinch of salt. Mix the
dry things first, then add the eggs and the milk, and stir until the batter is smooth. Heat a pan,
pour in a small amount of batter and cook each side for about one minute. Serve the pancakes warm
with fruit or honey.

Computers store numbers in binary, using only the digits 0 and 1. A byte has 8 bits, so it can hold
256 different values, from 0 to 255. A program is a list of instructions that tells the computer
what to do. When we train a language model, we show it many examples of text and it learns to
predict the next word. The model is a function with millions of parameters, and training changes
these parameters a little at a time so that its predictions get better.

The old lighthouse stood on the rocks at the end of the bay. Every night its bright light turned
slowly around and around, and the sailors on the dark sea were glad to see it. The keeper, an old
man with a grey beard, climbed the long stairs each evening to clean the glass and light the lamp.
He had done this for forty years, and he said that he never grew tired of the view.

Mathematics is the study of numbers, shapes and patterns. We add, subtract, multiply and divide.
For example, 7 times 8 is 56, half of 90 is 45, and 3 squared is 9. A triangle has three sides and
its angles add up to 180 degrees. A square has four equal sides and four right angles. If a
rectangle is 5 metres long and 4 metres wide, its area is 20 square metres and its perimeter is 18
metres.

"Where are you going?" asked the rabbit. "I am going to find the biggest carrot in the world,"
said the fox, "and I will share it with everyone in the forest." The rabbit thought this was a
wonderful idea, so they walked together through the tall grass, over the hill and across the
stream. When they finally found the carrot, it was so big that all the animals had a feast.
`;
