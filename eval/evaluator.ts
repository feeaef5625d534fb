// The evaluator: a model on the GPU scored on held-out loss, multiple choice (log-likelihood) and exact match (generation).
import { buildWithTunedMatmul } from "../kernels/matmul_tune.ts";
import type { Gpu } from "../kernels/runtime.ts";
import { type ModelConfig, parameterShapes } from "../model/config.ts";
import { DecodeGraph } from "../model/decode_graph.ts";
import { openHfModel } from "../model/hf_dir.ts";
import { LlamaGraph, packMicroBatch, type TokenizedSample } from "../model/llama_graph.ts";
import { loadTokenizer, type Tokenizer } from "../model/tokenizer.ts";
import { type ChatTemplate, resolveChatTemplate } from "../pipeline/chat_template.ts";
import { UserError } from "../pipeline/errors.ts";
import { encodeSample, IGNORE, SampleError } from "../pipeline/tokenize.ts";
import { readChatFile, readMcFile, readQaFile, splitMcShots, splitShots } from "./data.ts";
import { cutAtStop, scoreAnswer } from "./extract.ts";
import {
  type ChatRenderer,
  mcLetterRequest,
  type McRequest,
  mcTextRequest,
  type PromptStyle,
  qaRequest,
} from "./prompts.ts";

/** The metric kinds (as `eval.metrics[].kind` and `--metric`). */
export const METRIC_KINDS = ["loss", "mc", "exact_match"] as const;
/** One metric kind. */
export type MetricKind = typeof METRIC_KINDS[number];

/** What to evaluate. */
export interface MetricSpec {
  name: string;
  kind: MetricKind;
  /** JSONL file: chat samples (loss), MMLU items (mc), {question, answer} (exact_match). */
  data: string;
  /** Few-shot examples (mc, exact_match): taken from the head of the file, not scored. */
  shots?: number;
  /** Items scored at most (null: all). */
  limit?: number | null;
  /** Generation budget per answer (exact_match). */
  maxTokens?: number;
  /** Which accuracy is the mc score: the answer letter (lm-eval `acc`, default), the full choice text, or it length-normalised. */
  mcScore?: "letter" | "text" | "text_norm";
}

/** Held-out loss details. */
export interface LossDetails {
  kind: "loss";
  loss: number;
  perplexity: number;
  lossTokens: number;
  samples: number;
  /** Samples cut to the scoring graph's capacity. */
  truncated: number;
  /** Samples without any trained token (not scored). */
  skipped: number;
}

/** Accuracy of one multiple-choice scoring rule over a group of items. */
export interface McAccuracy {
  items: number;
  /** Letter scoring (the MMLU standard). */
  acc: number;
  /** Full choice text, raw log-likelihood. */
  acc_text: number;
  /** Full choice text, log-likelihood per character of the continuation (lm-eval acc_norm). */
  acc_text_norm: number;
}

/** Multiple-choice details: overall and per subject. */
export interface McDetails extends McAccuracy {
  kind: "mc";
  shots: number;
  style: PromptStyle;
  subjects: Record<string, McAccuracy>;
  /** Requests whose context was cut from the left to fit. */
  truncated: number;
}

/** Exact-match details. */
export interface ExactDetails {
  kind: "exact_match";
  shots: number;
  style: PromptStyle;
  items: number;
  /** Strict extraction (GSM8K: "#### N"). */
  strict: number;
  /** Flexible extraction (GSM8K: "#### N", else the last number) — the score. */
  flexible: number;
  generatedTokens: number;
  /** The first few generations, for a look. */
  examples: {
    question: string;
    generation: string;
    prediction: string | null;
    reference: string;
    correct: boolean;
  }[];
}

/** The result of one metric. */
export interface MetricResult {
  name: string;
  kind: MetricKind;
  data: string;
  /** loss: mean token loss; mc: letter accuracy; exact_match: flexible accuracy. */
  score: number;
  higherIsBetter: boolean;
  items: number;
  seconds: number;
  /** Tokens through the forward graph per second (loss, mc) or generated per second (exact_match). */
  tokensPerS: number;
  details: LossDetails | McDetails | ExactDetails;
}

/** Options of an evaluator. */
export interface EvaluatorOptions {
  /** Token slots of the scoring micro-batch (default min(2048, max_position_embeddings)). */
  tokens?: number;
  /** KV-cache rows for generation (default min(2048, max_position_embeddings)). */
  maxContext?: number;
  /** Chat template setting as in the pipeline (null / "tokenizer": the tokenizer's own). */
  chatTemplate?: string | null;
  /** Tokenizer directory (default: the model's). */
  tokenizerDir?: string;
  /** Prompt style of mc / exact_match: chat when a template exists (auto), or forced. */
  style?: "auto" | PromptStyle;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

/** Whether a larger score is better for a metric kind. */
export function higherIsBetter(kind: MetricKind): boolean {
  return kind !== "loss";
}

/** One log-likelihood request: token ids and where the scored continuation starts. */
export interface LoglikRequest {
  ids: number[];
  /** Index of the first continuation token (≥ 1). */
  start: number;
}

/** A model loaded for evaluation: the scoring graph and, on first use, a decode graph sharing its weights. */
export class Evaluator {
  private decoder: DecodeGraph | null = null;
  private readonly log: (line: string) => void;
  /** Forward tokens (real, not padding) of the last scoring calls, for throughput. */
  private forwardTokens = 0;

  private constructor(
    readonly gpu: Gpu,
    readonly cfg: ModelConfig,
    readonly tok: Tokenizer,
    readonly template: ChatTemplate | null,
    readonly graph: LlamaGraph,
    readonly maxContext: number,
    readonly style: "auto" | PromptStyle,
    log: ((line: string) => void) | undefined,
  ) {
    this.log = log ?? (() => {});
  }

  /** Load `modelDir` (config, weights, tokenizer) onto the GPU. */
  static async open(gpu: Gpu, modelDir: string, opts: EvaluatorOptions = {}): Promise<Evaluator> {
    const reader = await openHfModel(modelDir);
    const cfg = reader.config;
    reader.close();
    const tok = await loadTokenizer(opts.tokenizerDir ?? modelDir);
    const template = resolveChatTemplate(opts.chatTemplate ?? null, tok);
    const cap = Math.min(2048, cfg.maxPositionEmbeddings);
    const tokens = opts.tokens ?? cap;
    if (!(Number.isInteger(tokens) && tokens >= 2)) {
      throw new UserError(`scoring capacity must be an integer >= 2 tokens (got ${tokens})`);
    }
    const { graph } = await buildWithTunedMatmul(
      gpu,
      () => new LlamaGraph(gpu, cfg, { tokens, mode: "eval" }),
    );
    const ev = new Evaluator(
      gpu,
      cfg,
      tok,
      template,
      graph,
      opts.maxContext ?? cap,
      opts.style ?? "auto",
      opts.log,
    );
    try {
      await ev.load(modelDir);
    } catch (e) {
      ev.destroy();
      throw e;
    }
    return ev;
  }

  /** Upload the weights of `dir` (a checkpoint of the same architecture and shapes). */
  async load(dir: string): Promise<void> {
    const r = await openHfModel(dir);
    try {
      const a = r.config, b = this.cfg;
      const shapes = (c: ModelConfig) => JSON.stringify(parameterShapes(c));
      if (shapes(a) !== shapes(b)) {
        throw new UserError(`${dir}: the model's shapes differ from the evaluator's (${b.file})`);
      }
      for (const name of r.names) {
        const t = this.graph.params.get(name)!;
        this.gpu.write(t.buffer, await r.read(name), t.offset);
      }
    } finally {
      r.close();
    }
  }

  /** The prompt style used for mc / exact_match. */
  get promptStyle(): PromptStyle {
    if (this.style !== "auto") return this.style;
    return this.template ? "chat" : "plain";
  }

  private renderer(): ChatRenderer {
    const t = this.template;
    if (!t) {
      throw new UserError(
        "chat-style prompts need a chat template, and this tokenizer has none",
        "use plain prompts, or set a chat template",
      );
    }
    return (messages) =>
      this.tok.renderChat(messages, { template: t.source, addGenerationPrompt: true });
  }

  /** The decode graph (built on first use, sharing the scoring graph's weights). */
  decodeGraph(): DecodeGraph {
    this.decoder ??= new DecodeGraph(this.gpu, this.cfg, {
      maxTokens: this.maxContext,
      weights: this.graph.params,
      pieces: this.graph.pieces,
    });
    return this.decoder;
  }

  /** Scoring capacity (tokens per micro-batch). */
  get tokens(): number {
    return this.graph.T;
  }

  /**
   * Σ log p(ids[j] | ids[<j]) over j ≥ start for each request, packed into micro-batches of the
   * scoring graph (requests never see each other). A request longer than the capacity keeps its
   * last `tokens` ids (the context is cut from the left, as lm-eval does).
   */
  async loglik(reqs: LoglikRequest[]): Promise<number[]> {
    const T = this.graph.T;
    const out = new Array<number>(reqs.length).fill(0);
    const samples: { sample: TokenizedSample; index: number }[] = reqs.map((r, index) => {
      let { ids, start } = r;
      if (start < 1 || start >= ids.length) {
        throw new Error(`loglik request ${index}: start ${start} outside 1..${ids.length - 1}`);
      }
      if (ids.length > T) {
        const cut = ids.length - T;
        if (start - cut < 1) {
          throw new UserError(
            `a continuation of ${ids.length - start} tokens exceeds the ${T}-token capacity`,
          );
        }
        ids = ids.slice(cut);
        start -= cut;
      }
      const labels = ids.map((id, j) => (j >= start ? id : IGNORE));
      return { sample: { ids, labels }, index };
    });
    await this.runPacked(samples, (index, tokenLoss) => {
      let s = 0;
      for (const x of tokenLoss) s += x;
      out[index] = -s;
    });
    return out;
  }

  /** Pack samples in order into micro-batches; `each` gets every sample's per-token losses. */
  private async runPacked(
    samples: { sample: TokenizedSample; index: number }[],
    each: (index: number, tokenLoss: Float32Array) => void,
  ): Promise<void> {
    const T = this.graph.T;
    const pad = this.tok.padId ?? this.tok.eosId ?? 0;
    let i = 0;
    while (i < samples.length) {
      const group: typeof samples = [];
      let used = 0;
      while (i < samples.length && used + samples[i].sample.ids.length <= T) {
        used += samples[i].sample.ids.length;
        group.push(samples[i++]);
      }
      const mb = packMicroBatch(group.map((g) => g.sample), T, pad);
      const { tokenLoss } = await this.graph.evalLoss(mb);
      let t = 0;
      for (const g of group) {
        const n = g.sample.ids.length;
        each(g.index, tokenLoss.subarray(t, t + n));
        t += n;
      }
      this.forwardTokens += used;
    }
  }

  /** Evaluate one metric. */
  async evaluate(spec: MetricSpec): Promise<MetricResult> {
    const t0 = performance.now();
    this.forwardTokens = 0;
    let r: Omit<
      MetricResult,
      "seconds" | "tokensPerS" | "name" | "kind" | "data" | "higherIsBetter"
    >;
    let tokens: number;
    if (spec.kind === "loss") {
      r = await this.evalLoss(spec);
      tokens = this.forwardTokens;
    } else if (spec.kind === "mc") {
      r = await this.evalMc(spec);
      tokens = this.forwardTokens;
    } else if (spec.kind === "exact_match") {
      r = await this.evalExact(spec);
      tokens = (r.details as ExactDetails).generatedTokens;
    } else {
      throw new UserError(
        `unknown metric kind '${spec.kind}'`,
        `one of ${METRIC_KINDS.join(", ")}`,
      );
    }
    const seconds = (performance.now() - t0) / 1000;
    return {
      name: spec.name,
      kind: spec.kind,
      data: spec.data,
      higherIsBetter: higherIsBetter(spec.kind),
      ...r,
      seconds,
      tokensPerS: seconds > 0 ? tokens / seconds : 0,
    };
  }

  private async evalLoss(spec: MetricSpec) {
    const data = await readChatFile(spec.data);
    const raw = spec.limit ? data.items.slice(0, spec.limit) : data.items;
    const T = this.graph.T;
    let truncated = 0, skipped = 0;
    const samples: { sample: TokenizedSample; index: number }[] = [];
    raw.forEach((s, k) => {
      let enc;
      try {
        enc = encodeSample(this.tok, this.template, s);
      } catch (e) {
        if (e instanceof SampleError) {
          throw new UserError(
            `${spec.data}:${data.lines[k]}: ${e.message}`,
            "loss samples need the chat template used in training",
          );
        }
        throw e;
      }
      let { inputIds: ids, labels } = enc;
      if (ids.length > T) {
        ids = ids.slice(0, T);
        labels = labels.slice(0, T);
        truncated++;
      }
      // The first label predicts nothing after the shift; count what is actually trained.
      if (!labels.some((l, j) => j > 0 && l !== IGNORE)) {
        skipped++;
        return;
      }
      samples.push({ sample: { ids, labels }, index: samples.length });
    });
    if (samples.length === 0) throw new UserError(`${spec.data}: no sample has a trained token`);
    let sum = 0, count = 0;
    await this.runPacked(samples, (index, tl) => {
      const lab = samples[index].sample.labels;
      for (let j = 0; j + 1 < lab.length; j++) {
        if (lab[j + 1] !== IGNORE) {
          sum += tl[j];
          count++;
        }
      }
    });
    const loss = sum / count;
    this.log(
      `${spec.name}: loss ${loss.toFixed(4)} over ${count} tokens of ${samples.length} samples`,
    );
    const details: LossDetails = {
      kind: "loss",
      loss,
      perplexity: Math.exp(loss),
      lossTokens: count,
      samples: samples.length,
      truncated,
      skipped,
    };
    return { score: loss, items: samples.length, details };
  }

  /**
   * Tokenize context + continuation as lm-eval does (trailing context spaces move to the
   * continuation; the continuation is what the whole string adds after the context's tokens).
   * `special`: add the tokenizer's special tokens (BOS) as the model saw in pretraining.
   */
  encodePair(context: string, continuation: string, special: boolean): LoglikRequest {
    const n = context.length - context.trimEnd().length;
    if (n > 0) {
      continuation = context.slice(-n) + continuation;
      context = context.slice(0, -n);
    }
    const opts = { addSpecialTokens: special };
    let ctx = this.tok.encode(context, opts);
    const whole = this.tok.encode(context + continuation, opts);
    let ids = whole;
    if (ctx.length === 0) {
      // An empty context: condition on BOS (or EOS) as lm-eval conditions on its prefix token.
      const first = this.tok.bosId ?? this.tok.eosId ?? 0;
      ctx = [first];
      ids = [first, ...whole];
    }
    if (ids.length <= ctx.length || !ctx.every((t, i) => ids[i] === t)) {
      // The continuation merged into the context's last token: score it tokenized alone.
      ids = [...ctx, ...this.tok.encode(continuation)];
    }
    return { ids, start: ctx.length };
  }

  private async evalMc(spec: MetricSpec) {
    const data = await readMcFile(spec.data);
    const shots = spec.shots ?? 0;
    const { examples, scored } = splitMcShots(data.items, shots, spec.limit ?? null);
    if (scored.length === 0) {
      throw new UserError(`${spec.data}: no items left to score after ${shots} shots`);
    }
    const style = this.promptStyle;
    const render = style === "chat" ? this.renderer() : undefined;
    const plainSpecial = style === "plain";
    const groups: { letters: McRequest; text: McRequest }[] = scored.map((it) => {
      const ex = examples.get(it.subject) ?? [];
      return {
        letters: mcLetterRequest(it, ex, style, render),
        text: mcTextRequest(it, ex, style, render),
      };
    });
    const reqs: LoglikRequest[] = [];
    let truncated = 0;
    for (const g of groups) {
      for (const r of [g.letters, g.text]) {
        for (const c of r.continuations) {
          const q = this.encodePair(r.context, c, plainSpecial);
          if (q.ids.length > this.graph.T) truncated++;
          reqs.push(q);
        }
      }
    }
    // Score in slices so progress can be reported.
    const ll: number[] = [];
    const slice = 64;
    for (let i = 0; i < reqs.length; i += slice) {
      ll.push(...(await this.loglik(reqs.slice(i, i + slice))));
      this.log(`${spec.name}: ${Math.min(i + slice, reqs.length)}/${reqs.length} choices scored`);
    }
    const argmax = (v: number[]) => v.reduce((b, x, i) => (x > v[b] ? i : b), 0);
    const tally = new Map<string, { n: number; a: number; t: number; tn: number }>();
    const all = { n: 0, a: 0, t: 0, tn: 0 };
    let k = 0;
    scored.forEach((it, i) => {
      const n = it.choices.length;
      const letters = ll.slice(k, k + n);
      const text = ll.slice(k + n, k + 2 * n);
      k += 2 * n;
      const lens = groups[i].text.continuations.map((c) => Math.max(1, c.length));
      const norm = text.map((x, j) => x / lens[j]);
      const s = tally.get(it.subject) ?? { n: 0, a: 0, t: 0, tn: 0 };
      tally.set(it.subject, s);
      for (const acc of [s, all]) {
        acc.n++;
        acc.a += argmax(letters) === it.answer ? 1 : 0;
        acc.t += argmax(text) === it.answer ? 1 : 0;
        acc.tn += argmax(norm) === it.answer ? 1 : 0;
      }
    });
    const rate = (x: { n: number; a: number; t: number; tn: number }): McAccuracy => ({
      items: x.n,
      acc: x.a / x.n,
      acc_text: x.t / x.n,
      acc_text_norm: x.tn / x.n,
    });
    const subjects: Record<string, McAccuracy> = {};
    for (const [name, x] of [...tally].sort((a, b) => a[0].localeCompare(b[0]))) {
      subjects[name || "(none)"] = rate(x);
    }
    const details: McDetails = { kind: "mc", ...rate(all), shots, style, subjects, truncated };
    const score = spec.mcScore === "text"
      ? details.acc_text
      : spec.mcScore === "text_norm"
      ? details.acc_text_norm
      : details.acc;
    return { score, items: scored.length, details };
  }

  private async evalExact(spec: MetricSpec) {
    const data = await readQaFile(spec.data);
    const shots = spec.shots ?? 0;
    const { examples, scored } = splitShots(data.items, shots, spec.limit ?? null);
    if (scored.length === 0) {
      throw new UserError(`${spec.data}: no items left to score after ${shots} shots`);
    }
    const style = this.promptStyle;
    const render = style === "chat" ? this.renderer() : undefined;
    const maxTokens = spec.maxTokens ?? 256;
    const dec = this.decodeGraph();
    const stopIds = this.stopIds(style);
    let strict = 0, flexible = 0, generated = 0;
    const shown: ExactDetails["examples"] = [];
    for (const [i, it] of scored.entries()) {
      const req = qaRequest(it, examples, style, render);
      let ids = this.tok.encode(req.prompt, { addSpecialTokens: style === "plain" });
      const room = dec.Lmax - Math.min(maxTokens, dec.Lmax - 1);
      if (ids.length > room) ids = ids.slice(ids.length - room);
      const gen = await dec.generate(ids, {
        maxNewTokens: maxTokens,
        stopIds,
        stop: req.stops.length
          ? (t) => cutAtStop(this.tok.decode(t, { skipSpecialTokens: true }), req.stops).stopped
          : undefined,
      });
      generated += gen.decodeSteps;
      const text =
        cutAtStop(this.tok.decode(gen.tokens, { skipSpecialTokens: true }), req.stops).text;
      const m = scoreAnswer(text, it.answer);
      strict += m.strict ? 1 : 0;
      flexible += m.flexible ? 1 : 0;
      if (shown.length < 5) {
        shown.push({
          question: it.question,
          generation: text,
          prediction: m.prediction,
          reference: m.reference,
          correct: m.flexible,
        });
      }
      this.log(`${spec.name}: ${i + 1}/${scored.length} answered, ${flexible} right`);
    }
    const n = scored.length;
    const details: ExactDetails = {
      kind: "exact_match",
      shots,
      style,
      items: n,
      strict: strict / n,
      flexible: flexible / n,
      generatedTokens: generated,
      examples: shown,
    };
    return { score: details.flexible, items: n, details };
  }

  /** Ids that end an answer: the eos ids, plus every special token in chat style (end of turn). */
  stopIds(style: PromptStyle): number[] {
    const s = new Set<number>(this.cfg.eosTokenIds);
    if (this.tok.eosId !== null) s.add(this.tok.eosId);
    if (style === "chat") { for (const id of this.tok.specialIds) s.add(id); }
    return [...s];
  }

  /** Free the GPU graphs. */
  destroy(): void {
    this.decoder?.destroy();
    this.graph.destroy();
  }
}
