// Composes a validated pipeline config into stages: synth data → init model → tokenize → bucket → train → select.
import { join } from "node:path";
import { acquireGpu, type Gpu } from "../kernels/runtime.ts";
import { isCpuAdapter } from "../kernels/matmul.ts";
import { type ModelConfig as HfConfig } from "../model/config.ts";
import { readModelConfig } from "../model/hf_dir.ts";
import { DYNAMIC_LOSS_SCALE } from "../model/llama_graph.ts";
import { initModel } from "../model/init_model.ts";
import { formatPlan, planMemory } from "../model/memory_plan.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { type BucketPlan, describePlan, planBuckets, writeBuckets } from "./bucket.ts";
import type { PipelineConfig } from "./config.ts";
import { UserError } from "./errors.ts";
import { splitByDifficulty } from "./phasing.ts";
import type { EventLog } from "./progress.ts";
import { selectStage, type SelectStageOutputs } from "./select.ts";
import { fileStamp, runStages, type Stage, type StageContext } from "./stage.ts";
import { generateQuickstartData } from "./synth.ts";
import { loadTokenizedDataset, tokenizeDataset, type TokenizedDataset } from "./tokenize.ts";
import { type PlannedStep, trainPhase, type TrainPhaseResult } from "./trainer.ts";

/** Raised when train.stop_at_samples pauses a phase: the run is resumable, not failed. */
export class PipelinePaused extends Error {
  constructor(readonly phase: string, readonly samples: number, readonly step: number) {
    super(`paused in phase '${phase}' at step ${step} (${samples} samples seen)`);
    this.name = "PipelinePaused";
  }
}

/** What every stage of a pipeline run shares. */
export interface PipelineContext extends StageContext {
  cfg: PipelineConfig;
  log: EventLog;
  /** Opened on first use. */
  gpu(): Promise<Gpu>;
  /** Set by the model stage. */
  modelDir?: string;
  tokenizerDir?: string;
  /** Per training phase: tokenized file and selected sample indices. */
  phaseData: Map<string, { file: string; indices: number[] | null }>;
  /** Per phase: the directory the next phase starts from (selection or last checkpoint). */
  phaseResult: Map<string, { startFrom: string; train: TrainPhaseResult | null }>;
  summary: { phases: { name: string; result: TrainPhaseResult }[] };
  quiet?: boolean;
}

/** A training phase after strategy and difficulty splits are applied. */
export interface TrainingPhase {
  name: string;
  /** Tokenized dataset name (data/<dataset>.jsonl). */
  dataset: string;
  /** "short"/"long" half of a difficulty split, or null for the whole dataset. */
  split: "short" | "long" | null;
}

/** The phases to train, in order: stacked mixes every file into one phase. */
export function trainingPhases(cfg: PipelineConfig): TrainingPhase[] {
  if (cfg.train.strategy === "stacked") {
    return [{ name: "stacked", dataset: "stacked", split: null }];
  }
  const out: TrainingPhase[] = [];
  for (const p of cfg.data.phases) {
    if (p.difficulty_split) {
      out.push({ name: `${p.name}-short`, dataset: p.name, split: "short" });
      out.push({ name: `${p.name}-long`, dataset: p.name, split: "long" });
    } else out.push({ name: p.name, dataset: p.name, split: null });
  }
  return out;
}

function datasetInputs(cfg: PipelineConfig): { name: string; files: string[] }[] {
  if (cfg.train.strategy === "stacked") {
    return [{ name: "stacked", files: cfg.data.phases.flatMap((p) => p.train) }];
  }
  return cfg.data.phases.map((p) => ({ name: p.name, files: p.train }));
}

/**
 * The optimizer-step plan of a phase over all epochs, cut to the budget (epochs may be
 * fractional; max_steps and max_samples stop early). Ranks run one after another here.
 */
export function buildPlan(
  lengths: Uint32Array,
  cfg: PipelineConfig,
  seed: number,
): { steps: PlannedStep[]; plans: BucketPlan[] } {
  const t = cfg.train;
  const plans: BucketPlan[] = [];
  const steps: PlannedStep[] = [];
  const epochs = Math.max(1, Math.ceil(t.epochs));
  let samples = 0;
  for (let e = 0; e < epochs; e++) {
    const plan = planBuckets({
      lengths,
      batchSize: t.effective_batch_size,
      ranks: t.ranks,
      capacity: t.micro_batch_tokens,
      seed,
      epoch: e,
      padToLongest: t.padding_aware,
    });
    plans.push(plan);
    const nSteps = plan.stepStart.length - 1;
    const keep = e === epochs - 1 && t.epochs < epochs
      ? Math.max(1, Math.round(nSteps * (t.epochs - (epochs - 1))))
      : nSteps;
    for (let s = 0; s < keep; s++) {
      const mbs: number[][] = [];
      for (let b = plan.stepStart[s]; b < plan.stepStart[s + 1]; b++) {
        const idx = Array.from(plan.order.subarray(plan.mbStart[b], plan.mbStart[b + 1]));
        if (idx.length) mbs.push(idx);
      }
      if (!mbs.length) continue;
      steps.push({ epoch: e, microBatches: mbs });
      samples += mbs.reduce((a, m) => a + m.length, 0);
      if (t.max_steps !== null && steps.length >= t.max_steps) return { steps, plans };
      if (t.max_samples !== null && samples >= t.max_samples) return { steps, plans };
    }
  }
  return { steps, plans };
}

function subset(ds: TokenizedDataset, indices: number[] | null) {
  const idx = indices ?? Array.from({ length: ds.count }, (_, i) => i);
  return idx.map((i) => ({
    ids: ds.ids.subarray(ds.offsets[i], ds.offsets[i + 1]),
    labels: ds.labels.subarray(ds.offsets[i], ds.offsets[i + 1]),
  }));
}

/** Build the stage list of a pipeline. */
export function pipelineStages(cfg: PipelineConfig): Stage<PipelineContext>[] {
  const stages: Stage<PipelineContext>[] = [];
  const runDir = cfg.run.dir;

  if (cfg.data.synthetic) {
    const s = cfg.data.synthetic;
    stages.push({
      name: "synthetic-data",
      inputs: () => ({ ...s }),
      run: async () => {
        const out = await generateQuickstartData(join(runDir, "data", "synthetic"), {
          seed: s.seed,
          knowledgeFacts: s.knowledge_facts,
          skillsSamples: s.skills_samples,
          heldout: s.heldout,
        });
        return { files: Object.values(out).filter((v) => typeof v === "string") };
      },
    });
  }

  stages.push({
    name: "model",
    inputs: async () => ({
      path: cfg.model.path,
      init: cfg.model.init,
      corpus: cfg.model.init
        ? await Promise.all(
          (cfg.model.init.tokenizer_corpus.length
            ? cfg.model.init.tokenizer_corpus
            : cfg.data.phases.flatMap((p) => p.train)).map((f) => fileStamp(f)),
        )
        : null,
    }),
    valid: async (ctx) => {
      const dir = modelDirOf(ctx.cfg);
      return await Deno.stat(join(dir, "config.json")).then(() => true, () => false);
    },
    run: async (ctx) => {
      const dir = modelDirOf(ctx.cfg);
      if (cfg.model.init) {
        const init = cfg.model.init;
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        const res = await initModel({
          out: dir,
          preset: init.preset,
          set: init.set,
          seed: init.seed,
          corpus: init.tokenizer_corpus.length
            ? init.tokenizer_corpus
            : cfg.data.phases.flatMap((p) => p.train),
          log: ctx.quiet ? undefined : (l) => console.log(`init-model: ${l}`),
        });
        return { dir: res.dir, tokenizerSize: res.tokenizerSize };
      }
      return { dir };
    },
  });

  for (const ds of datasetInputs(cfg)) {
    stages.push({
      name: `tokenize-${ds.name}`,
      inputs: async (ctx) => ({
        files: await Promise.all(ds.files.map((f) => fileStamp(f))),
        tokenizer: ctx.tokenizerDir ?? tokenizerDirOf(cfg),
        template: cfg.data.chat_template,
        maxSeqLen: cfg.data.max_seq_len,
        truncate: cfg.data.truncate,
        onError: cfg.data.on_error,
      }),
      valid: async () =>
        await Deno.stat(join(runDir, "data", `${ds.name}.jsonl`)).then(() => true, () => false),
      run: async (ctx) => {
        const res = await tokenizeDataset({
          inputs: ds.files,
          runDir,
          name: ds.name,
          tokenizerDir: tokenizerDirOf(cfg),
          chatTemplate: cfg.data.chat_template,
          maxSeqLen: cfg.data.max_seq_len,
          truncate: cfg.data.truncate,
          onError: cfg.data.on_error,
          log: ctx.quiet ? () => {} : (l) => console.log(l),
        });
        const s = res.stats;
        return {
          path: res.path,
          samples: s.samples,
          tokens: s.tokens,
          lossTokens: s.lossTokens,
          dropped: s.dropped,
          truncated: s.truncated,
        };
      },
    });
  }

  const phases = trainingPhases(cfg);
  phases.forEach((ph, i) => {
    const dataFile = join(runDir, "data", `${ph.dataset}.jsonl`);
    const bucketFile = join(
      runDir,
      "data",
      phases.length === 1 ? "buckets.json" : `buckets-${ph.name}.json`,
    );
    const seed = cfg.run.seed + i;
    let plan: PlannedStep[] | null = null;
    let indices: number[] | null = null;
    let ds: TokenizedDataset | null = null;
    let summary: BucketPlan["summary"] | null = null;
    const load = async () => {
      if (ds) return;
      ds = await loadTokenizedDataset(dataFile);
      if (ph.split) {
        const split = splitByDifficulty(ds.lossTokens, { seed: cfg.run.seed });
        indices = ph.split === "short" ? split.phase1 : split.phase2;
      }
      const lengths = indices ? Uint32Array.from(indices, (j) => ds!.lengths[j]) : ds.lengths;
      const built = buildPlan(lengths, cfg, seed);
      plan = built.steps;
      await writeBuckets(bucketFile, built.plans);
      const s = (summary = built.plans[0].summary);
      if (s.overCapacity > 0) {
        console.warn(
          `bucket: ${s.overCapacity} samples longer than micro_batch_tokens ${s.capacity} were left out ` +
            `(e.g. sample ${s.overCapacityIndices.slice(0, 5).join(", ")})`,
        );
      }
    };
    stages.push({
      name: `bucket-${ph.name}`,
      inputs: async () => ({
        data: await fileStamp(dataFile),
        split: ph.split,
        seed,
        train: {
          b: cfg.train.effective_batch_size,
          ranks: cfg.train.ranks,
          cap: cfg.train.micro_batch_tokens,
          epochs: cfg.train.epochs,
          maxSteps: cfg.train.max_steps,
          maxSamples: cfg.train.max_samples,
          pad: cfg.train.padding_aware,
        },
      }),
      run: async (ctx) => {
        await load();
        if (!ctx.quiet) console.log(`bucket ${ph.name}: ${describePlan(summary!)}`);
        return { steps: plan!.length, file: bucketFile, efficiency: summary!.efficiency };
      },
    });
    stages.push({
      name: `train-${ph.name}`,
      inputs: async (ctx) => ({
        data: await fileStamp(dataFile),
        split: ph.split,
        seed,
        train: cfg.train,
        start: i === 0
          ? modelDirOf(cfg)
          : ctx.phaseResult.get(phases[i - 1].name)?.startFrom ?? null,
      }),
      valid: async (ctx, rec) => {
        const out = rec.outputs as { startFrom?: string } | null;
        if (!out?.startFrom) return false;
        ctx.phaseResult.set(ph.name, { startFrom: out.startFrom, train: null });
        return await Deno.stat(out.startFrom).then(() => true, () => false);
      },
      run: async (ctx) => {
        await load();
        const gpu = await ctx.gpu();
        const modelDir = modelDirOf(cfg);
        const hf: HfConfig = await readModelConfig(modelDir);
        checkMemory(gpu, hf, cfg);
        const tok = await loadTokenizer(tokenizerDirOf(cfg));
        const start = startOf(ctx, i)!;
        const prevSamples = i === 0
          ? 0
          : ctx.phaseResult.get(phases[i - 1].name)?.train?.samplesSeen ?? 0;
        const prevTokens = i === 0
          ? 0
          : ctx.phaseResult.get(phases[i - 1].name)?.train?.tokensSeen ?? 0;
        const t = cfg.train;
        const result = await trainPhase(gpu, {
          runDir,
          phase: ph.name,
          cfg: hf,
          startDir: start,
          tokenizerDir: tokenizerDirOf(cfg),
          samples: subset(ds!, indices),
          plan: plan!,
          tokens: t.micro_batch_tokens,
          recompute: t.recompute,
          matmulPrecision: t.matmul_precision,
          lossScale: { init: t.loss_scale, growthInterval: DYNAMIC_LOSS_SCALE.growthInterval },
          padId: tok.padId ?? tok.eosId ?? 0,
          optimizer: {
            lr: t.lr,
            schedule: t.schedule,
            warmupSteps: t.warmup_steps,
            warmupRatio: t.warmup_ratio,
            minLrRatio: t.min_lr_ratio,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weightDecay: t.weight_decay,
            maxGradNorm: t.max_grad_norm,
          },
          saveSamples: t.save_samples,
          keepLast: t.keep_last,
          metricsEvery: t.metrics_every,
          saveDtype: t.save_dtype,
          samplesOffset: prevSamples,
          tokensOffset: prevTokens,
          events: { emit: (ev) => ctx.log.emit(ev as never) },
          quiet: ctx.quiet,
          stopAtSamples: t.stop_at_samples,
        });
        if (result.stopped) {
          ctx.log.emit(
            {
              type: "paused",
              phase: ph.name,
              samples: result.samplesSeen,
              step: result.steps,
            } as never,
          );
          throw new PipelinePaused(ph.name, result.samplesSeen, result.steps);
        }
        const last = result.checkpoints.at(-1)!;
        ctx.phaseResult.set(ph.name, { startFrom: last.dir, train: result });
        ctx.summary.phases.push({ name: ph.name, result });
        return {
          steps: result.steps,
          samplesSeen: result.samplesSeen,
          firstLoss: result.firstLoss,
          lastLoss: result.lastLoss,
          tokensPerS: result.tokensPerS,
          checkpoints: result.checkpoints.map((c) => c.dir),
          startFrom: last.dir,
        };
      },
    });
    if (cfg.eval.select && cfg.eval.metrics.length > 0) {
      stages.push(selectStage<PipelineContext>(ph.name, (ctx) => ({
        eval: cfg.eval,
        gpu: ctx.gpu,
        evaluator: {
          tokens: cfg.train.micro_batch_tokens,
          chatTemplate: cfg.data.chat_template,
          tokenizerDir: tokenizerDirOf(cfg),
        },
        events: { emit: (ev) => ctx.log.emit(ev as never) },
        log: ctx.quiet ? () => {} : (l) => console.log(l),
      })));
    }
  });
  /** The directory phase i starts from: the model, or the previous phase's selection (else its last checkpoint). */
  function startOf(ctx: PipelineContext, i: number): string | null {
    if (i === 0) return modelDirOf(cfg);
    const prev = phases[i - 1].name;
    const sel = ctx.outputs?.[`select-${prev}`] as SelectStageOutputs | undefined;
    return sel?.best ?? ctx.phaseResult.get(prev)?.startFrom ?? null;
  }
  return stages;
}

/** Where the starting model lives: the configured path, or `<run_dir>/model` for init. */
export function modelDirOf(cfg: PipelineConfig): string {
  return cfg.model.path ?? join(cfg.run.dir, "model");
}

/** Where the tokenizer lives: the override, or the model dir. */
export function tokenizerDirOf(cfg: PipelineConfig): string {
  return cfg.tokenizer ?? modelDirOf(cfg);
}

/** Stop before any allocation when the memory plan does not fit the adapter's limits. */
function checkMemory(gpu: Gpu, hf: HfConfig, cfg: PipelineConfig): void {
  const plan = planMemory(hf, {
    microBatchTokens: cfg.train.micro_batch_tokens,
    recompute: cfg.train.recompute,
    kvCopies: isCpuAdapter(gpu),
    attentionBands: isCpuAdapter(gpu) ? undefined : {},
    limits: {
      maxBufferSize: gpu.limits.maxBufferSize,
      maxStorageBufferBindingSize: gpu.limits.maxStorageBufferBindingSize,
    },
  });
  // The graph row-shards the embedding and LM head; any other tensor must fit one binding.
  const unsharded = plan.shardsNeeded.filter((t) => !/embed_tokens|lm_head/.test(t.tensor));
  if (!plan.fits || unsharded.length > 0) {
    throw new UserError(
      `the model does not fit this adapter:\n${formatPlan(plan)}`,
      plan.advice || "lower train.micro_batch_tokens or set train.recompute: true",
    );
  }
}

/** Run every stage of `cfg` in its run dir. */
export async function runPipeline(
  cfg: PipelineConfig,
  log: EventLog,
  opts: { quiet?: boolean; gpu?: Gpu } = {},
): Promise<PipelineContext> {
  let gpuP: Promise<Gpu> | null = opts.gpu ? Promise.resolve(opts.gpu) : null;
  const ctx: PipelineContext = {
    runDir: cfg.run.dir,
    events: { emit: (e) => log.emit(e) },
    cfg,
    log,
    gpu: () => (gpuP ??= acquireGpu()),
    phaseData: new Map(),
    phaseResult: new Map(),
    summary: { phases: [] },
    quiet: opts.quiet,
  };
  try {
    await runStages(pipelineStages(cfg), ctx);
  } finally {
    // Release the device we opened (wgpu's teardown at process exit is fragile on lavapipe).
    if (!opts.gpu && gpuP) (await gpuP.catch(() => null))?.destroy();
  }
  return ctx;
}
