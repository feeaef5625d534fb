// The training loop of one phase: schedule, gradient accumulation, metrics, checkpoints, resume.
import { isCpuAdapter, matmulTuning, setMatmulTuning } from "../kernels/matmul.ts";
import { buildWithTunedMatmul, describeTune } from "../kernels/matmul_tune.ts";
import type { Gpu } from "../kernels/runtime.ts";
import { type ModelConfig, parameterShapes } from "../model/config.ts";
import { saveHfModel } from "../model/hf_dir.ts";
import {
  DYNAMIC_LOSS_SCALE,
  LlamaGraph,
  type MicroBatch,
  packMicroBatch,
  type TokenizedSample,
} from "../model/llama_graph.ts";
import { SafetensorsReader, writeSafetensorsFile } from "../model/safetensors.ts";
import { UserError } from "./errors.ts";
import { pathExists, writeJsonAtomic } from "./run_dir.ts";
import { lrAt, type ScheduleOptions } from "./schedule.ts";

/** One optimizer step of the plan: its micro-batches (sample indices), every rank's in turn. */
export interface PlannedStep {
  epoch: number;
  microBatches: number[][];
}

/** Hyper-parameters of the optimizer. */
export interface OptimizerConfig extends ScheduleOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  maxGradNorm: number;
}

/** One line of metrics.jsonl. */
export interface MetricsRecord {
  step: number;
  epoch: number;
  phase: string;
  samples_seen: number;
  tokens_seen: number;
  loss: number;
  gradnorm: number;
  lr: number;
  num_loss_counted_tokens: number;
  batch_size: number;
  micro_batches: number;
  tokens_per_s: number;
  elapsed_s: number;
  /** Loss scale the step ran with (matmul precision f16 only). */
  loss_scale?: number;
  /** The gradient overflowed at this loss scale: no update, the scale was halved (f16 only). */
  skipped?: boolean;
}

/** A checkpoint written by the trainer. */
export interface CheckpointInfo {
  dir: string;
  phase: string;
  step: number;
  samples: number;
}

/** Listener for trainer events (metrics records, checkpoints); the progress server subscribes. */
export interface TrainerEvents {
  emit(event: { type: string; [k: string]: unknown }): void;
}

/** Everything one phase of training needs. */
export interface TrainPhaseOptions {
  runDir: string;
  phase: string;
  cfg: ModelConfig;
  /** Weights to start from (HF directory). */
  startDir: string;
  /** Tokenizer files copied into every checkpoint. */
  tokenizerDir: string;
  samples: TokenizedSample[];
  /** The whole plan (all epochs, cut to the budget). */
  plan: PlannedStep[];
  tokens: number;
  recompute: boolean;
  /** GEMM arithmetic (kernels/matmul.ts MatmulTuning.precision); f16 adds dynamic loss scaling. */
  matmulPrecision?: "f32" | "f16";
  /** The dynamic loss scale of f16 (default DYNAMIC_LOSS_SCALE); ignored with f32. */
  lossScale?: { init: number; growthInterval: number };
  padId: number;
  optimizer: OptimizerConfig;
  /** Checkpoint every this many samples (null: only at the end). */
  saveSamples: number | null;
  keepLast: number | null;
  metricsEvery: number;
  saveDtype: "f32" | "bf16";
  /** Samples and tokens seen before this phase (phased training keeps counting). */
  samplesOffset?: number;
  tokensOffset?: number;
  events?: TrainerEvents;
  /** Pause once this many samples of the phase are seen; the state stays resumable. */
  stopAtSamples?: number | null;
  quiet?: boolean;
}

/** What a finished phase reports. */
export interface TrainPhaseResult {
  steps: number;
  samplesSeen: number;
  tokensSeen: number;
  firstLoss: number | null;
  lastLoss: number | null;
  tokensPerS: number;
  checkpoints: CheckpointInfo[];
  resumedFrom: number | null;
  stopped: boolean;
}

interface FullState {
  version: 1;
  phase: string;
  step: number;
  samplesSeen: number;
  tokensSeen: number;
  elapsedS: number;
  checkpoints: CheckpointInfo[];
  firstLoss: number | null;
  lastLoss: number | null;
  /** Loss-scale state of the graph (matmul precision f16), restored on resume. */
  lossScale?: number[];
}

/** A step whose gradient overflows at a loss scale below this stops training. */
const MIN_LOSS_SCALE = 1;

const stateDir = (runDir: string, phase: string) => `${runDir}/state/${phase}`;

/** Tokens of the longest sample (the graph's maxSampleTokens: windowed CPU attention). */
function longestSample(samples: TokenizedSample[]): number {
  let n = 1;
  for (const s of samples) n = Math.max(n, s.ids.length);
  return n;
}

/** Load weights of an HF directory into the graph. */
async function uploadFromDir(graph: LlamaGraph, dir: string): Promise<void> {
  const r = await SafetensorsReader.open(dir);
  try {
    const tensors = new Map<string, Float32Array>();
    for (const { name } of parameterShapes(graph.cfg)) tensors.set(name, await r.read(name));
    graph.upload(tensors);
  } finally {
    r.close();
  }
}

/** Read the last full state of a phase, or null. A half-written state is ignored. */
async function readState(runDir: string, phase: string): Promise<FullState | null> {
  for (const dir of [stateDir(runDir, phase), `${stateDir(runDir, phase)}.old`]) {
    if (await pathExists(`${dir}/state.json`)) {
      return JSON.parse(await Deno.readTextFile(`${dir}/state.json`)) as FullState;
    }
  }
  return null;
}

async function stateFilesDir(runDir: string, phase: string): Promise<string> {
  const d = stateDir(runDir, phase);
  return (await pathExists(`${d}/state.json`)) ? d : `${d}.old`;
}

/** Write weights, Adam moments and counters; the previous state survives a crash mid-write. */
async function writeState(
  graph: LlamaGraph,
  runDir: string,
  st: FullState,
  weights?: Map<string, Float32Array>,
): Promise<void> {
  const final = stateDir(runDir, st.phase);
  const tmp = `${final}.tmp`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  const shapes = parameterShapes(graph.cfg);
  for (const which of ["weights", "m", "v"] as const) {
    // The checkpoint just read the weights back: reuse them rather than reading them twice.
    const data = which === "weights" && weights ? weights : await graph.download(which);
    await writeSafetensorsFile(
      `${tmp}/${which}.safetensors`,
      shapes.map(({ name, shape }) => ({ name, shape, data: data.get(name)! })),
      "f32",
    );
  }
  const scale = await graph.readLossScale();
  if (scale) st.lossScale = Array.from(scale);
  await Deno.writeTextFile(`${tmp}/state.json`, JSON.stringify(st, null, 2) + "\n");
  // Swap: final → .old, tmp → final, drop .old. A crash in between leaves .old readable.
  await Deno.remove(`${final}.old`, { recursive: true }).catch(() => {});
  if (await pathExists(final)) await Deno.rename(final, `${final}.old`);
  await Deno.rename(tmp, final);
  await Deno.remove(`${final}.old`, { recursive: true }).catch(() => {});
}

async function loadState(graph: LlamaGraph, runDir: string, st: FullState): Promise<void> {
  const dir = await stateFilesDir(runDir, st.phase);
  if (st.lossScale && graph.lossScale) graph.writeLossScale(st.lossScale);
  for (const which of ["weights", "m", "v"] as const) {
    const r = await SafetensorsReader.open(`${dir}/${which}.safetensors`);
    try {
      const t = new Map<string, Float32Array>();
      for (const { name } of parameterShapes(graph.cfg)) t.set(name, await r.read(name));
      if (which === "weights") graph.upload(t);
      else graph.uploadMoments(which, t);
    } finally {
      r.close();
    }
  }
}

/** Keep metrics.jsonl lines of other phases and of this phase before `step` (resume). */
async function truncateMetrics(path: string, phase: string, step: number): Promise<void> {
  if (!(await pathExists(path))) return;
  const lines = (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim());
  const keep = lines.filter((l) => {
    try {
      const r = JSON.parse(l) as MetricsRecord;
      return r.phase !== phase || r.step < step;
    } catch {
      return false; // a torn last line from a kill
    }
  });
  await Deno.writeTextFile(path, keep.map((l) => l + "\n").join(""));
}

/**
 * Train one phase. Re-running with the same run dir resumes from the last full state, and the
 * metrics from there on equal those of an uninterrupted run.
 */
export async function trainPhase(gpu: Gpu, o: TrainPhaseOptions): Promise<TrainPhaseResult> {
  const precision = o.matmulPrecision ?? "f32";
  if (precision === "f16" && !gpu.hasF16) {
    throw new UserError(
      `train.matmul_precision: f16 needs the adapter feature shader-f16, which ` +
        `${gpu.summary.description || "this adapter"} lacks`,
      "set train.matmul_precision: f32",
    );
  }
  const precisionBefore = matmulTuning(gpu).precision;
  setMatmulTuning(gpu, { precision });
  let built;
  try {
    built = await buildWithTunedMatmul(
      gpu,
      () =>
        new LlamaGraph(gpu, o.cfg, {
          tokens: o.tokens,
          maxSampleTokens: longestSample(o.samples),
          recompute: o.recompute,
          lossScale: precision === "f16" ? (o.lossScale ?? DYNAMIC_LOSS_SCALE) : null,
        }),
    );
  } finally {
    setMatmulTuning(gpu, { precision: precisionBefore }); // evaluation keeps f32
  }
  const { graph, report: tune } = built;
  if (!o.quiet && tune.shapes > 0) console.log(`[${o.phase}] ${describeTune(tune)}`);
  if (!o.quiet && precision === "f16") {
    console.log(
      `[${o.phase}] matmul precision f16 with dynamic loss scaling` +
        (isCpuAdapter(gpu) ? " (this CPU adapter's matmul_wide GEMMs stay f32)" : ""),
    );
  }
  const metricsPath = `${o.runDir}/metrics.jsonl`;
  let st: FullState = {
    version: 1,
    phase: o.phase,
    step: 0,
    samplesSeen: o.samplesOffset ?? 0,
    tokensSeen: o.tokensOffset ?? 0,
    elapsedS: 0,
    checkpoints: [],
    firstLoss: null,
    lastLoss: null,
  };
  const prev = await readState(o.runDir, o.phase);
  let resumedFrom: number | null = null;
  if (prev) {
    st = prev;
    resumedFrom = prev.step;
    await loadState(graph, o.runDir, prev);
    await truncateMetrics(metricsPath, o.phase, prev.step);
    if (!o.quiet) {
      console.log(`[${o.phase}] resuming at step ${prev.step} (${prev.samplesSeen} samples seen)`);
    }
  } else {
    await uploadFromDir(graph, o.startDir);
    await truncateMetrics(metricsPath, o.phase, 0);
  }
  const total = o.plan.length;
  const metricsFile = await Deno.open(metricsPath, { append: true, create: true });
  const enc = new TextEncoder();
  const isTty = Deno.stdout.isTerminal();
  const t0 = performance.now() - st.elapsedS * 1000;
  let windowStart = performance.now(), windowTokens = 0;
  let lastTps = 0;
  let stopped = false;

  interface Pending {
    step: number;
    epoch: number;
    samples: number;
    lossTokens: number;
    tokens: number;
    lr: number;
    micro: number;
  }
  let pending: Pending[] = [];
  const pendingSamples = () => pending.reduce((a, p) => a + p.samples, 0);

  const flush = async () => {
    if (!pending.length) return;
    const ms = await graph.readMetrics(pending[0].step, pending[pending.length - 1].step + 1);
    const now = performance.now();
    const tps = windowTokens / Math.max(1e-9, (now - windowStart) / 1000);
    lastTps = tps;
    windowStart = now;
    windowTokens = 0;
    let out = "";
    let lastRec: MetricsRecord | null = null;
    for (let i = 0; i < pending.length; i++) {
      const p = pending[i], m = ms[i];
      const loss = p.lossTokens > 0 ? m[0] / p.lossTokens : 0;
      const scaled = graph.lossScale !== null;
      const bad = !Number.isFinite(m[0]) || !Number.isFinite(m[1]) || m[3] !== 1;
      // With loss scaling, an overflowing gradient (finite loss) only halves the scale.
      const skipped = bad && scaled && Number.isFinite(m[0]) && m[4] >= MIN_LOSS_SCALE;
      if (bad && !skipped) {
        const last = st.checkpoints.at(-1);
        const why = scaled && Number.isFinite(m[0])
          ? ` (loss scale ${m[4]}: the gradients overflow f16 even unscaled)`
          : "";
        throw new UserError(
          `non-finite ${Number.isFinite(m[0]) ? "gradient" : "loss"} at step ${p.step} of phase ` +
            `'${o.phase}'${why}; training stopped, the update was skipped`,
          last
            ? `last good checkpoint: ${last.dir}`
            : scaled
            ? "set train.matmul_precision: f32, or lower train.lr"
            : "lower train.lr or check the data",
        );
      }
      st.samplesSeen += p.samples;
      st.tokensSeen += p.tokens;
      st.firstLoss ??= loss;
      st.lastLoss = loss;
      const rec: MetricsRecord = {
        step: p.step,
        epoch: p.epoch,
        phase: o.phase,
        samples_seen: st.samplesSeen,
        tokens_seen: st.tokensSeen,
        loss,
        gradnorm: m[1],
        lr: p.lr,
        num_loss_counted_tokens: p.lossTokens,
        batch_size: p.samples,
        micro_batches: p.micro,
        tokens_per_s: tps,
        elapsed_s: (now - t0) / 1000,
      };
      if (scaled) rec.loss_scale = m[4];
      if (skipped) rec.skipped = true;
      lastRec = rec;
      out += JSON.stringify(rec) + "\n";
      o.events?.emit({ type: "metrics", ...rec, total_steps: total });
    }
    await metricsFile.write(enc.encode(out));
    pending = [];
    const last = lastRec!;
    if (!o.quiet) {
      const scale = last.loss_scale === undefined ? "" : ` scale ${last.loss_scale}`;
      const line = `[${o.phase}] step ${last.step + 1}/${total} samples ${last.samples_seen} ` +
        `loss ${last.loss.toFixed(4)} gradnorm ${
          last.skipped ? "overflow (skipped)" : last.gradnorm.toFixed(3)
        } lr ${last.lr.toExponential(2)}${scale} ` +
        `${tps.toFixed(0)} tok/s`;
      if (isTty) Deno.stdout.writeSync(enc.encode(`\r${line}\x1b[K`));
      else console.log(line);
    }
  };

  const checkpoint = async (final: boolean) => {
    await flush();
    const name = `samples_${st.samplesSeen}`;
    const dir = `${o.runDir}/checkpoints/${o.phase}/${name}`;
    const weights = await graph.download("weights");
    await saveHfModel(dir, {
      config: o.cfg,
      tensors: weights,
      dtype: o.saveDtype,
      tokenizerFrom: o.tokenizerDir,
    });
    st.checkpoints = st.checkpoints.filter((c) => c.dir !== dir);
    st.checkpoints.push({ dir, phase: o.phase, step: st.step, samples: st.samplesSeen });
    if (o.keepLast && st.checkpoints.length > o.keepLast) {
      for (const c of st.checkpoints.splice(0, st.checkpoints.length - o.keepLast)) {
        await Deno.remove(c.dir, { recursive: true }).catch(() => {});
      }
    }
    st.elapsedS = (performance.now() - t0) / 1000;
    await writeState(graph, o.runDir, st, weights);
    await writeJsonAtomic(`${o.runDir}/checkpoints/${o.phase}/index.json`, st.checkpoints);
    o.events?.emit({
      type: "checkpoint",
      dir,
      phase: o.phase,
      step: st.step,
      samples: st.samplesSeen,
      final,
    });
    if (isTty && !o.quiet) console.log();
  };

  try {
    let nextSave = o.saveSamples
      ? (Math.floor(st.samplesSeen / o.saveSamples) + 1) * o.saveSamples
      : Infinity;
    let samplesQueued = st.samplesSeen;
    if (o.stopAtSamples && st.samplesSeen - (o.samplesOffset ?? 0) >= o.stopAtSamples) {
      stopped = st.step < total; // already paused here: nothing to run
    }
    while (!stopped && st.step < total) {
      const ps = o.plan[st.step];
      const mbs: MicroBatch[] = ps.microBatches.map((idx) =>
        packMicroBatch(idx.map((i) => o.samples[i]), o.tokens, o.padId)
      );
      const lr = lrAt(st.step, total, o.optimizer);
      graph.queueStep(st.step, mbs, { ...o.optimizer, lr });
      const samples = mbs.reduce((s, m) => s + m.samples, 0);
      const tokens = ps.microBatches.reduce(
        (s, idx) => s + idx.reduce((a, i) => a + o.samples[i].ids.length, 0),
        0,
      );
      windowTokens += tokens;
      pending.push({
        step: st.step,
        epoch: ps.epoch,
        samples,
        lossTokens: mbs.reduce((s, m) => s + m.lossTokens, 0),
        tokens,
        lr,
        micro: mbs.length,
      });
      st.step++;
      samplesQueued += samples;
      if (pending.length >= o.metricsEvery) await flush();
      if (samplesQueued >= nextSave && st.step < total) {
        await checkpoint(false);
        nextSave = (Math.floor(st.samplesSeen / o.saveSamples!) + 1) * o.saveSamples!;
      }
      const phaseSamples = st.samplesSeen + pendingSamples() - (o.samplesOffset ?? 0);
      if (o.stopAtSamples && phaseSamples >= o.stopAtSamples && st.step < total) {
        await flush();
        st.elapsedS = (performance.now() - t0) / 1000;
        await writeState(graph, o.runDir, st);
        stopped = true;
        break;
      }
    }
    if (!stopped) {
      const haveFinal = st.checkpoints.some((c) => c.step === st.step);
      if (!haveFinal) await checkpoint(true);
      else await flush();
    }
  } finally {
    metricsFile.close();
    graph.destroy();
  }
  return {
    steps: st.step,
    samplesSeen: st.samplesSeen,
    tokensSeen: st.tokensSeen,
    firstLoss: st.firstLoss,
    lastLoss: st.lastLoss,
    tokensPerS: st.elapsedS > 0 ? (st.tokensSeen - (o.tokensOffset ?? 0)) / st.elapsedS : lastTps,
    checkpoints: st.checkpoints,
    resumedFrom,
    stopped,
  };
}
