// `deno task bench train`: training tokens/s, per-kernel step breakdown, MFU and memory; optionally beside PyTorch.
import { join } from "node:path";
import {
  buildWithTunedMatmul,
  describeTune,
  type MatmulTuneReport,
  median,
} from "../kernels/matmul_tune.ts";
import { setAttentionVariant } from "../kernels/attention.ts";
import { isCpuAdapter, matmulTuning, setMatmulTuning } from "../kernels/matmul.ts";
import { acquireGpu, type AdapterSummary, type Dispatch, type Gpu } from "../kernels/runtime.ts";
import { type ModelConfig, parameterCount, parseModelConfig } from "../model/config.ts";
import { loadHfModel, saveHfModel } from "../model/hf_dir.ts";
import { initModel } from "../model/init_model.ts";
import {
  LlamaGraph,
  type MicroBatch,
  packMicroBatch,
  type StepHyper,
} from "../model/llama_graph.ts";
import { fmtBytes, planMemory } from "../model/memory_plan.ts";
import { loadTokenizer } from "../model/tokenizer.ts";
import { UserError } from "../pipeline/errors.ts";
import { gsm8kText, readGsm8k } from "../pipeline/gsm8k.ts";
import { writeResult } from "./lib.ts";
import { pathExists } from "../pipeline/run_dir.ts";

const SHARED = new URL("../../shared/", import.meta.url).pathname;
const HERE = new URL("./", import.meta.url).pathname;

/** parseArgs options of this suite (bench/main.ts spreads them into its own). */
export const TRAIN_FLAGS = {
  model: { type: "string" },
  "vs-torch": { type: "boolean" },
  batch: { type: "string" },
  seq: { type: "string" },
  steps: { type: "string" },
  warmup: { type: "string" },
  "micro-rows": { type: "string" },
  data: { type: "string" },
  tied: { type: "boolean" },
  lr: { type: "string" },
  "peak-tflops": { type: "string" },
  "no-profile": { type: "boolean" },
  python: { type: "string" },
  "torch-device": { type: "string" },
  "torch-dtype": { type: "string" },
  "torch-impl": { type: "string" },
  "torch-threads": { type: "string" },
  rounds: { type: "string" },
  "matmul-precision": { type: "string" },
  "gpu-kernels": { type: "boolean" },
} as const;

/** Flag values as parseArgs returns them (every flag optional). */
export type TrainFlags = { [K in keyof typeof TRAIN_FLAGS]?: string | boolean };

/** A named model shape. */
interface Shape {
  /** An HF directory to read, or a model/init_model.ts preset to build with random weights. */
  dir?: string;
  preset?: string;
  /** Untie the output head (lm_head = a copy of the embeddings) unless --tied. */
  untie: boolean;
  batch: number;
  seq: number;
  about: string;
}

/** The shapes `--model` names (anything else is an HF directory). */
export const SHAPES: Record<string, Shape> = {
  stories260k: {
    dir: `${SHARED}models/stories260K`,
    untie: true,
    batch: 8,
    seq: 256,
    about: "the real stories260K (dim 64, 5 layers, vocab 512), head untied",
  },
  stories15m: {
    preset: "stories15m",
    untie: false,
    batch: 4,
    seq: 256,
    about: "stories15M-like: dim 288, 6 layers, vocab 32000, random weights",
  },
  "smollm2-135m": {
    preset: "smollm2-135m",
    untie: false,
    batch: 4,
    seq: 1024,
    about: "SmolLM2-135M-like: dim 576, 30 layers, vocab 49152, random weights",
  },
  "llama-3.2-1b": {
    preset: "llama-3.2-1b",
    untie: false,
    batch: 4,
    seq: 1024,
    about: "Llama-3.2-1B-like: dim 2048, 16 layers, vocab 128256, random weights",
  },
};

/** Everything one bench run needs, resolved. */
export interface TrainBenchOptions {
  /** A SHAPES name or an HF directory. */
  model: string;
  batch?: number;
  seq?: number;
  /** Timed optimizer steps. */
  steps: number;
  /** Steps run first and left out of the timing (they compile the pipelines). */
  warmup: number;
  /** Rows per micro-batch (default: every row of the step, up to 4096 tokens; 512 on lavapipe). */
  microRows?: number;
  /** "gsm8k" (default when ../shared has it and the model a tokenizer) or "synthetic". */
  data?: "gsm8k" | "synthetic";
  /** Keep a shape's head tied (stories260k is untied by default, as in the PyTorch figures). */
  tied?: boolean;
  hyper: StepHyper;
  /** Peak of the device in TFLOP/s for MFU (default: a table of known devices). */
  peakTflops?: number;
  profile: boolean;
  torch?: TorchOptions;
  /**
   * Alternate ours and PyTorch this many times and report medians (default 1): on a shared or
   * throttled machine one run of each can differ by 20 % from the next.
   */
  rounds?: number;
  /** Where models and rows are written (default bench/out/train). */
  workDir?: string;
  /** GEMM arithmetic of our run (default f32); f16 also scales the loss dynamically. */
  matmulPrecision?: "f32" | "f16";
  /** Force the GPU-shaped matmul and attention kernels (to check their parity on a CPU adapter). */
  gpuKernels?: boolean;
  /** Use this device (and leave it open) instead of opening one. */
  gpu?: Gpu;
  log?: (line: string) => void;
}

/** How to run bench/torch_baseline.py. */
export interface TorchOptions {
  python?: string;
  device: string;
  dtypes: ("fp32" | "bf16")[];
  /** auto, plain or hf; several (e.g. hf,plain) run each in turn. */
  impls: string[];
  threads?: number;
}

/** Milliseconds per step of one kernel (or op family) from GPU timestamps. */
export interface KernelTime {
  name: string;
  callsPerStep: number;
  msPerStep: number;
}

/** Our side of the bench. */
export interface OursResult {
  adapter: string;
  adapterSummary: AdapterSummary;
  tokensPerS: number;
  stepMs: number;
  losses: number[];
  gradNorms: number[];
  dispatchesPerStep: number;
  /** GEMM dispatches of one forward-backward pass, and how many of them run in f16. */
  gemms: { total: number; f16: number };
  submitsPerStep: number;
  flopsPerStep: number;
  achievedGflops: number;
  peak: { gflops: number; source: string } | null;
  mfu: number | null;
  memory: {
    /** Largest sum of live WebGPU buffers (what the process asked the device for). */
    peakBufferBytes: number;
    /** model/memory_plan.ts's estimate for this shape and micro-batch. */
    plannedBytes: number;
    /** Peak resident memory of the process (on a CPU adapter the device memory is host memory). */
    peakRssBytes: number | null;
  };
  /** tokens/s of every round, in order (tokensPerS and stepMs are their medians). */
  roundsTokensPerS: number[];
  /** What the matmul and attention autotune did for this graph (first round). */
  tune: MatmulTuneReport;
  /** null when the adapter offers no timestamp queries or --no-profile. */
  breakdown: {
    kernels: KernelTime[];
    ops: KernelTime[];
    profiledMsPerStep: number;
  } | null;
}

/** The whole result (bench/out/train.json's `data`). */
export interface TrainBenchResult {
  model: {
    name: string;
    dir: string;
    params: number;
    tied: boolean;
    hiddenSize: number;
    layers: number;
    vocab: number;
  };
  data: {
    source: string;
    batch: number;
    seq: number;
    microRows: number;
    microBatches: number;
    tokensPerStep: number;
    warmup: number;
    steps: number;
  };
  hyper: StepHyper;
  ours: OursResult;
  torch: (TorchResult & {
    ratio: number;
    /** Smallest and largest ours / torch over the rounds (each round's pair run back to back). */
    ratioRange: [number, number];
    /** tokens/s of every round (tokens_per_s and timed_step_ms are their medians). */
    roundsTokensPerS: number[];
    lossMaxRelDiff: number;
    lossOk: boolean | null;
    /** The tolerance lossOk was judged by (null: bf16, not checked). */
    lossTolerance: number | null;
  })[];
  /** GEMM arithmetic of our run, and whether the GPU-shaped kernels were forced. */
  matmulPrecision: "f32" | "f16";
  gpuKernels: boolean;
  /** Rounds of ours-then-PyTorch run. */
  rounds: number;
}

/** What bench/torch_baseline.py prints. */
export interface TorchResult {
  impl: string;
  device: string;
  device_name: string;
  dtype: string;
  threads: number | null;
  torch: string;
  losses: number[];
  grad_norms: number[];
  timed_step_ms: number;
  tokens_per_s: number;
  peak_memory_bytes: number;
  params: number;
}

/** Losses of the first steps must agree this closely (relative) in fp32. */
export const LOSS_TOLERANCE = 1e-4;
/**
 * The same against PyTorch fp32 when our GEMMs run in f16: inputs rounded to 2^-11 through every
 * GEMM of the step, then amplified by the first AdamW updates (as bf16 is, 8× coarser).
 */
export const F16_LOSS_TOLERANCE = 2e-3;
/** Steps whose losses are compared. */
const COMPARED_STEPS = 5;

// ---------------------------------------------------------------------------------------------
// Model and data

/** The model directory to train: a shared or given HF dir, or one materialised under workDir. */
async function prepareModel(
  opts: TrainBenchOptions,
  work: string,
  log: (l: string) => void,
): Promise<{ name: string; dir: string; shape: Shape | null }> {
  const key = opts.model.toLowerCase();
  const shape = SHAPES[key] ?? null;
  if (!shape) {
    if (!(await pathExists(join(opts.model, "config.json")))) {
      throw new UserError(
        `--model ${opts.model}: neither a shape nor an HF directory with config.json`,
        `shapes: ${Object.keys(SHAPES).join(", ")}; or a Hugging Face model folder`,
      );
    }
    return { name: opts.model, dir: opts.model, shape: null };
  }
  if (shape.preset) {
    const dir = join(work, "models", key);
    if (!(await pathExists(join(dir, "model.safetensors")))) {
      log(`building ${shape.about} in ${dir} (once)`);
      await initModel({ out: dir, preset: shape.preset, seed: 1234 });
    }
    return { name: key, dir, shape };
  }
  const src = shape.dir!;
  if (!(await pathExists(join(src, "config.json")))) {
    throw new UserError(
      `${src} is missing`,
      "the stories260k shape reads ../shared/models/stories260K",
    );
  }
  if (!shape.untie || opts.tied) return { name: key, dir: src, shape };
  // Untied copy: lm_head.weight starts as a copy of the embeddings, so both sides read one file.
  const dir = join(work, "models", `${key}-untied`);
  if (!(await pathExists(join(dir, "model.safetensors")))) {
    const m = await loadHfModel(src);
    const raw = { ...m.config.raw, tie_word_embeddings: false };
    const config = parseModelConfig(raw, join(dir, "config.json"));
    const tensors = new Map(m.tensors);
    tensors.set("lm_head.weight", m.tensors.get("model.embed_tokens.weight")!.slice());
    await saveHfModel(dir, { config, tensors, dtype: "f32", tokenizerFrom: src });
    log(`wrote an untied copy of ${src} to ${dir}`);
  }
  return { name: key, dir, shape };
}

/** Deterministic ids in [0, n) (a fixed LCG). */
function syntheticIds(count: number, n: number): Int32Array {
  const out = new Int32Array(count);
  let s = 0x2545f491;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s % n;
  }
  return out;
}

/**
 * `total · batch · seq` token ids: GSM8K train items as plain text ("Question: …\nAnswer: …",
 * BOS … EOS), tokenized with the model's tokenizer and concatenated, cut into rows of `seq`
 * contiguous tokens (labels = ids, no padding); synthetic ids when GSM8K or the tokenizer is absent.
 */
export async function benchRows(
  dir: string,
  cfg: ModelConfig,
  count: number,
  want: "gsm8k" | "synthetic" | undefined,
): Promise<{ ids: Int32Array; source: string }> {
  const gsm = `${SHARED}data/gsm8k/train.jsonl`;
  const haveTok = await pathExists(join(dir, "tokenizer.json"));
  const haveGsm = await pathExists(gsm);
  if (want === "gsm8k" && (!haveTok || !haveGsm)) {
    throw new UserError(
      `--data gsm8k needs ${haveGsm ? `${dir}/tokenizer.json` : gsm}`,
      "use --data synthetic",
    );
  }
  if (want === "synthetic" || !haveTok || !haveGsm) {
    return { ids: syntheticIds(count, cfg.vocabSize), source: "synthetic (uniform random ids)" };
  }
  const tok = await loadTokenizer(dir);
  const items = await readGsm8k(gsm);
  const ids = new Int32Array(count);
  let n = 0, used = 0;
  for (let i = 0; n < count; i = (i + 1) % items.length, used++) {
    const t = tok.encode(gsm8kText(items[i]), { addSpecialTokens: true });
    if (tok.eosId !== null) t.push(tok.eosId);
    for (const id of t) {
      if (n >= count) break;
      if (id >= cfg.vocabSize) throw new UserError(`${dir}: token id ${id} ≥ vocab_size`);
      ids[n++] = id;
    }
  }
  return {
    ids,
    source: `GSM8K train, ${used} questions as "Question: …\\nAnswer: …" text, ` +
      `tokenized with ${dir}/tokenizer.json, cut into contiguous rows`,
  };
}

// ---------------------------------------------------------------------------------------------
// FLOPs, peak, memory

/** Model FLOPs of one optimizer step: 6·(matmul weights)·tokens + causal attention (fwd + bwd). */
export function trainFlopsPerStep(cfg: ModelConfig, batch: number, seq: number): number {
  const C = cfg.hiddenSize, I = cfg.intermediateSize, D = cfg.headDim;
  const q = cfg.numHeads * D, kv = cfg.numKvHeads * D;
  const perLayer = C * q + 2 * C * kv + q * C + 3 * C * I;
  const matmulParams = cfg.numLayers * perLayer + cfg.vocabSize * C; // the head, tied or not
  const tokens = batch * seq;
  // Per row and layer, forward: QKᵀ and PV over the causal triangle, 2·Hq·D·S(S+1)/2 each.
  const attnFwd = 2 * cfg.numHeads * D * seq * (seq + 1);
  return 6 * matmulParams * tokens + 3 * attnFwd * cfg.numLayers * batch;
}

/** A peak FP32 throughput for the adapter, with where it comes from; null when unknown. */
export function statedPeak(
  description: string,
  flagTflops?: number,
): { gflops: number; source: string } | null {
  if (flagTflops !== undefined) return { gflops: flagTflops * 1e3, source: "--peak-tflops" };
  const d = description.toLowerCase();
  const known: [RegExp, number, string][] = [
    [/h200/, 67e3, "NVIDIA H200: 67 TFLOP/s FP32 (non-tensor-core, datasheet)"],
    [/h100.*pcie/, 51e3, "NVIDIA H100 PCIe: 51 TFLOP/s FP32 (non-tensor-core, datasheet)"],
    [/h100/, 67e3, "NVIDIA H100 SXM: 67 TFLOP/s FP32 (non-tensor-core, datasheet)"],
    [/a100/, 19.5e3, "NVIDIA A100: 19.5 TFLOP/s FP32 (non-tensor-core, datasheet)"],
  ];
  for (const [re, g, src] of known) if (re.test(d)) return { gflops: g, source: src };
  if (d.includes("llvmpipe")) {
    const simd = Number(/(\d+) bits/.exec(description)?.[1] ?? 256);
    const cores = navigator.hardwareConcurrency;
    const ghz = cpuGhz();
    if (ghz === null) return null;
    const fma = cpuFmaBits(readCpuinfo());
    const bits = Math.min(simd, fma);
    const perCycle = 2 * 2 * (bits / 32); // two FMA units × 2 flops × f32 lanes
    return {
      gflops: cores * ghz * perCycle,
      source: `${cores} cores × ${ghz.toFixed(2)} GHz × ${perCycle} FP32 FLOP/cycle ` +
        `(${simd}-bit SIMD, 2 FMA units of ${fma} bits): nominal CPU peak, lavapipe`,
    };
  }
  return null;
}

/** /proc/cpuinfo, or "" off Linux. */
function readCpuinfo(): string {
  try {
    return Deno.readTextFileSync("/proc/cpuinfo");
  } catch {
    return "";
  }
}

/** Highest "cpu MHz" of /proc/cpuinfo, in GHz (null when unreadable). */
function cpuGhz(): number | null {
  const mhz = [...readCpuinfo().matchAll(/cpu MHz\s*:\s*([\d.]+)/g)].map((m) => Number(m[1]));
  return mhz.length ? Math.max(...mhz) / 1000 : null;
}

/**
 * Width of one FMA unit of the CPU described by `cpuinfo` (/proc/cpuinfo text): 128 bits on AMD
 * Zen and Zen+ (family 23, models below 0x30), which split a 256-bit operation in two; 256 bits
 * otherwise (what llvmpipe's vectors use at most).
 */
export function cpuFmaBits(cpuinfo: string): number {
  const field = (k: string) => new RegExp(`^${k}\\s*:\\s*(.+)$`, "m").exec(cpuinfo)?.[1].trim();
  const zen1 = field("vendor_id") === "AuthenticAMD" && Number(field("cpu family")) === 23 &&
    Number(field("model")) < 0x30;
  return zen1 ? 128 : 256;
}

/** Peak resident memory of this process (VmHWM), or null off Linux. */
function peakRss(): number | null {
  try {
    const m = /VmHWM:\s*(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Count the bytes of live WebGPU buffers created on `device` until `stop()`. */
function trackBuffers(device: GPUDevice): { peak: () => number; stop: () => void } {
  const dev = device as unknown as { createBuffer: (d: GPUBufferDescriptor) => GPUBuffer };
  const orig = dev.createBuffer;
  let live = 0, peak = 0;
  dev.createBuffer = (desc: GPUBufferDescriptor) => {
    const b = orig.call(device, desc);
    const size = b.size;
    live += size;
    peak = Math.max(peak, live);
    const destroy = b.destroy.bind(b);
    let gone = false;
    b.destroy = () => {
      if (!gone) live -= size;
      gone = true;
      destroy();
    };
    return b;
  };
  return { peak: () => peak, stop: () => void (dev.createBuffer = orig) };
}

// ---------------------------------------------------------------------------------------------
// Our run

async function profileAll(gpu: Gpu, ds: Dispatch[]): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < ds.length; i += 1024) out.push(...await gpu.profile(ds.slice(i, i + 1024)));
  return out;
}

function aggregate(rows: [string, number, number][]): KernelTime[] {
  const m = new Map<string, KernelTime>();
  for (const [name, calls, ms] of rows) {
    const k = m.get(name) ?? { name, callsPerStep: 0, msPerStep: 0 };
    k.callsPerStep += calls;
    k.msPerStep += ms;
    m.set(name, k);
  }
  return [...m.values()].sort((a, b) => b.msPerStep - a.msPerStep);
}

async function runOurs(
  opts: TrainBenchOptions,
  cfg: ModelConfig,
  tensors: Map<string, Float32Array>,
  rows: Int32Array,
  shape: { batch: number; seq: number; microRows: number },
  gpu: Gpu,
  log: (l: string) => void,
): Promise<OursResult> {
  const { batch: B, seq: S, microRows } = shape;
  const tracker = trackBuffers(gpu.device);
  const T = microRows * S;
  let graph: LlamaGraph | null = null;
  const tuningBefore = { ...matmulTuning(gpu) };
  try {
    setMatmulTuning(gpu, {
      precision: opts.matmulPrecision ?? "f32",
      ...(opts.gpuKernels ? { variant: "gpu" } : {}),
    });
    if (opts.gpuKernels) setAttentionVariant(gpu, "gpu");
    const tuned = await buildWithTunedMatmul(
      gpu,
      () => new LlamaGraph(gpu, cfg, { tokens: T, maxSampleTokens: S }),
      {
        log,
      },
    );
    graph = tuned.graph;
    if (tuned.report.shapes > 0) log(describeTune(tuned.report));
    graph.upload(tensors);
    const total = opts.warmup + opts.steps;
    const steps: MicroBatch[][] = [];
    for (let s = 0; s < total; s++) {
      const mbs: MicroBatch[] = [];
      for (let r0 = 0; r0 < B; r0 += microRows) {
        const samples = [];
        for (let r = r0; r < r0 + microRows; r++) {
          const ids = rows.subarray((s * B + r) * S, (s * B + r + 1) * S);
          samples.push({ ids, labels: ids });
        }
        mbs.push(packMicroBatch(samples, T, 0));
      }
      steps.push(mbs);
    }
    for (let s = 0; s < opts.warmup; s++) graph.queueStep(s, steps[s], opts.hyper);
    await gpu.sync("bench.train.warmup");
    const t0 = performance.now();
    for (let s = opts.warmup; s < total; s++) graph.queueStep(s, steps[s], opts.hyper);
    await gpu.sync("bench.train");
    const stepMs = (performance.now() - t0) / opts.steps;
    const metrics = await graph.readMetrics(0, total);
    const losses = metrics.map((m, s) => m[0] / steps[s].reduce((a, mb) => a + mb.lossTokens, 0));
    const gradNorms = metrics.map((m) => m[1]);
    log(`ours: ${stepMs.toFixed(1)} ms/step, losses ${losses.map((l) => l.toFixed(4)).join(" ")}`);

    const nMb = B / microRows;
    let breakdown: OursResult["breakdown"] = null;
    if (opts.profile && gpu.hasTimestamps) {
      graph.setBatch(steps[0][0]);
      const fb = await profileAll(gpu, graph.forwardBackward);
      const op = await profileAll(gpu, graph.optimizer);
      const rowsK: [string, number, number][] = [
        ...graph.forwardBackward.map((d, i): [string, number, number] => [
          d.kernel.name,
          nMb,
          fb[i] * nMb,
        ]),
        ...graph.optimizer.map((d, i): [string, number, number] => [d.kernel.name, 1, op[i]]),
      ];
      const kernels = aggregate(rowsK);
      // an op is a kernel file; matmul_vec and matmul_f16 count as matmul
      const opOf = (n: string) => n.split(".")[0].replace(/^matmul_(vec|f16)$/, "matmul");
      const ops = aggregate(rowsK.map(([n, c, ms]) => [opOf(n), c, ms]));
      breakdown = {
        kernels,
        ops,
        profiledMsPerStep: kernels.reduce((a, k) => a + k.msPerStep, 0),
      };
    }
    const flops = trainFlopsPerStep(cfg, B, S);
    const achieved = flops / (stepMs * 1e6);
    const peak = statedPeak(gpu.summary.description, opts.peakTflops);
    const plan = planMemory(cfg, {
      microBatchTokens: T,
      recompute: false,
      kvCopies: isCpuAdapter(gpu),
      attentionBands: isCpuAdapter(gpu) ? undefined : { maxSampleTokens: S },
      limits: gpu.limits as unknown as {
        maxBufferSize: number;
        maxStorageBufferBindingSize: number;
      },
    });
    return {
      adapter: `${gpu.summary.description} (${gpu.summary.backend})`,
      adapterSummary: gpu.summary,
      tokensPerS: (B * S) / (stepMs / 1000),
      roundsTokensPerS: [(B * S) / (stepMs / 1000)],
      tune: tuned.report,
      stepMs,
      losses,
      gradNorms,
      gemms: {
        total: graph.forwardBackward.filter((d) =>
          /^matmul\.matmul_(tiled|big|wide)/.test(d.kernel.name)
        )
          .length,
        f16: graph.forwardBackward.filter((d) =>
          /^matmul_f16\./.test(d.kernel.name)
        ).length,
      },
      dispatchesPerStep: graph.zeroLoss.length + nMb * graph.forwardBackward.length +
        graph.optimizer.length,
      submitsPerStep: 1 + nMb + 1,
      flopsPerStep: flops,
      achievedGflops: achieved,
      peak,
      mfu: peak ? achieved / peak.gflops : null,
      memory: {
        peakBufferBytes: tracker.peak(),
        plannedBytes: plan.totalBytes,
        peakRssBytes: peakRss(),
      },
      breakdown,
    };
  } finally {
    setMatmulTuning(gpu, tuningBefore);
    if (opts.gpuKernels) setAttentionVariant(gpu, null);
    tracker.stop();
    graph?.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// PyTorch

async function canImportTorch(python: string): Promise<boolean> {
  try {
    const r = await new Deno.Command(python, {
      args: ["-c", "import torch, numpy"],
      stdout: "null",
      stderr: "null",
    }).output();
    return r.success;
  } catch {
    return false;
  }
}

/** The first of `--python`, python3, /usr/bin/python3 that imports torch and numpy, or null. */
export async function findTorchPython(given?: string): Promise<string | null> {
  for (const p of given ? [given] : ["python3", "/usr/bin/python3"]) {
    if (await canImportTorch(p)) return p;
  }
  return null;
}

async function runTorch(
  t: TorchOptions,
  impl: string,
  python: string,
  dtype: string,
  a: { dir: string; rowsFile: string; batch: number; seq: number; total: number; warmup: number },
  hyper: StepHyper,
  work: string,
  log: (l: string) => void,
): Promise<TorchResult> {
  const out = join(work, `torch_${impl}_${dtype}.json`);
  const env = Deno.env.toObject();
  // OpenBLAS tuning variables of the build machines skew the CPU baseline: run with defaults.
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const args = [
    `${HERE}torch_baseline.py`,
    ...["--model", a.dir, "--rows", a.rowsFile],
    ...["--batch", `${a.batch}`, "--seq", `${a.seq}`],
    ...["--steps", `${a.total}`, "--warmup", `${a.warmup}`],
    ...["--lr", `${hyper.lr}`, "--beta1", `${hyper.beta1}`, "--beta2", `${hyper.beta2}`],
    ...["--eps", `${hyper.eps}`, "--weight-decay", `${hyper.weightDecay}`],
    ...["--max-grad-norm", `${hyper.maxGradNorm}`],
    ...["--dtype", dtype, "--device", t.device, "--impl", impl, "--out", out],
    ...(t.threads ? ["--threads", `${t.threads}`] : []),
  ];
  log(`torch (${impl} ${dtype}): ${python} ${args.join(" ")}`);
  const r = await new Deno.Command(python, { args, env, clearEnv: true, stdout: "piped" })
    .output();
  if (!r.success) {
    throw new UserError(
      `bench/torch_baseline.py failed (exit ${r.code})`,
      "its error is printed above; check that torch and numpy import",
    );
  }
  return JSON.parse(await Deno.readTextFile(out)) as TorchResult;
}

// ---------------------------------------------------------------------------------------------

/** Run the training benchmark and return its result (prints progress through `opts.log`). */
export async function benchTrain(opts: TrainBenchOptions): Promise<TrainBenchResult> {
  const log = opts.log ?? (() => {});
  const total = opts.warmup + opts.steps;
  if (total > 1000) throw new UserError(`--warmup + --steps must be at most 1000 (got ${total})`);
  const work = opts.workDir ?? `${HERE}out/train`;
  await Deno.mkdir(work, { recursive: true });
  const { name, dir, shape } = await prepareModel(opts, work, log);
  const { config: cfg, tensors } = await loadHfModel(dir);
  const B = opts.batch ?? shape?.batch ?? 8;
  const S = opts.seq ?? shape?.seq ?? 256;
  if (S > cfg.maxPositionEmbeddings) {
    throw new UserError(
      `--seq ${S} exceeds ${dir}'s max_position_embeddings (${cfg.maxPositionEmbeddings})`,
    );
  }
  if (opts.microRows && B % opts.microRows !== 0) {
    throw new UserError(`--micro-rows ${opts.microRows} does not divide --batch ${B}`);
  }
  const gpu = opts.gpu ?? await acquireGpu();
  // Default micro-batch: every row of the step up to 4096 tokens (the trainer's default
  // micro_batch_tokens). On lavapipe one 2,048-token micro-batch of stories260K now runs ~12 %
  // faster than four of 512 (bench/RESULTS.md, 2026-11-23 session 7): fewer dispatches.
  const cap = Math.max(S, 4096);
  let microRows = opts.microRows ?? 0;
  if (!microRows) {
    microRows = 1;
    for (let m = B; m >= 1; m--) {
      if (B % m === 0 && m * S <= cap) {
        microRows = m;
        break;
      }
    }
  }
  const { ids: rows, source } = await benchRows(dir, cfg, total * B * S, opts.data);
  const rowsFile = join(work, "rows.i32");
  await Deno.writeFile(rowsFile, new Uint8Array(rows.buffer));
  log(
    `model ${name} (${dir}): ${(parameterCount(cfg) / 1e6).toFixed(3)}M parameters, ` +
      `${cfg.tieWordEmbeddings ? "tied" : "untied"} head; batch ${B} × ${S} tokens, ` +
      `${microRows} row(s) per micro-batch; ${opts.warmup} warm-up + ${opts.steps} timed steps`,
  );
  log(`data: ${source}`);

  const rounds = opts.rounds ?? 1;
  const oursRuns: OursResult[] = [];
  const torchRuns: TorchResult[][] = []; // [round][impl × dtype]
  const torchPython = opts.torch ? await findTorchPython(opts.torch.python) : null;
  if (opts.torch && !torchPython) {
    throw new UserError(
      "--vs-torch: no python with torch and numpy found",
      "CPU: apt-get install -y python3-torch libopenblas0-pthread; or pass --python PATH",
    );
  }
  const torchRunsWanted = opts.torch
    ? opts.torch.impls.flatMap((impl) => opts.torch!.dtypes.map((dtype) => ({ impl, dtype })))
    : [];
  for (let round = 0; round < rounds; round++) {
    if (rounds > 1) log(`round ${round + 1} of ${rounds}`);
    const dev = round === 0 ? gpu : (opts.gpu ?? await acquireGpu());
    try {
      // the kernel breakdown once: it is the same every round
      const o = { ...opts, profile: opts.profile && round === 0 };
      oursRuns.push(
        await runOurs(o, cfg, tensors, rows, { batch: B, seq: S, microRows }, dev, log),
      );
    } finally {
      if (!opts.gpu) dev.destroy(); // before PyTorch starts: give the memory back
    }
    const tr: TorchResult[] = [];
    for (const { impl, dtype } of torchRunsWanted) {
      tr.push(
        await runTorch(
          opts.torch!,
          impl,
          torchPython!,
          dtype,
          { dir, rowsFile, batch: B, seq: S, total, warmup: opts.warmup },
          opts.hyper,
          work,
          log,
        ),
      );
    }
    torchRuns.push(tr);
  }
  tensors.clear();

  // Medians over the rounds; losses, breakdown and memory from the first round.
  const oursTps = oursRuns.map((o) => o.tokensPerS);
  const first = oursRuns[0];
  const stepMs = median(oursRuns.map((o) => o.stepMs));
  const ours: OursResult = {
    ...first,
    tokensPerS: (B * S) / (stepMs / 1000),
    stepMs,
    roundsTokensPerS: oursTps,
    achievedGflops: first.flopsPerStep / (stepMs * 1e6),
    mfu: first.peak ? first.flopsPerStep / (stepMs * 1e6) / first.peak.gflops : null,
  };
  const torch: TrainBenchResult["torch"] = torchRunsWanted.map((_, i) => {
    const per = torchRuns.map((tr) => tr[i]);
    const r = per[0];
    const ms = median(per.map((t) => t.timed_step_ms));
    const ratios = per.map((t, k) => oursTps[k] / t.tokens_per_s);
    const tps = (B * S) / (ms / 1000);
    const n = Math.min(COMPARED_STEPS, r.losses.length, ours.losses.length);
    let maxRel = 0;
    for (let j = 0; j < n; j++) {
      maxRel = Math.max(maxRel, Math.abs(ours.losses[j] - r.losses[j]) / Math.abs(r.losses[j]));
    }
    const tol = r.dtype !== "fp32"
      ? null
      : opts.matmulPrecision === "f16"
      ? F16_LOSS_TOLERANCE
      : LOSS_TOLERANCE;
    return {
      ...r,
      timed_step_ms: ms,
      tokens_per_s: tps,
      roundsTokensPerS: per.map((t) => t.tokens_per_s),
      ratio: ours.tokensPerS / tps,
      ratioRange: [Math.min(...ratios), Math.max(...ratios)],
      lossMaxRelDiff: maxRel,
      lossOk: tol === null ? null : maxRel <= tol,
      lossTolerance: tol,
    };
  });
  return {
    model: {
      name,
      dir,
      params: parameterCount(cfg),
      tied: cfg.tieWordEmbeddings,
      hiddenSize: cfg.hiddenSize,
      layers: cfg.numLayers,
      vocab: cfg.vocabSize,
    },
    data: {
      source,
      batch: B,
      seq: S,
      microRows,
      microBatches: B / microRows,
      tokensPerStep: B * S,
      warmup: opts.warmup,
      steps: opts.steps,
    },
    hyper: opts.hyper,
    matmulPrecision: opts.matmulPrecision ?? "f32",
    gpuKernels: opts.gpuKernels ?? false,
    ours,
    torch,
    rounds,
  };
}

/** Print the result as tables. */
export function printTrainResult(r: TrainBenchResult, out: (l: string) => void = console.log) {
  const o = r.ours;
  const f1 = (v: number) => v.toFixed(1);
  out("");
  out(`adapter      ${o.adapter}`);
  out(
    `kernels      matmul ${r.matmulPrecision} (${o.gemms.f16} of ${
      o.gemms.total + o.gemms.f16
    } GEMMs per pass in f16)${r.gpuKernels ? ", GPU-shaped matmul and attention forced" : ""}`,
  );
  out(`tokens/s     ${f1(o.tokensPerS)}   (${r.data.tokensPerStep} tokens per step)`);
  const over = `mean over ${r.data.steps} timed steps, one wait`;
  out(
    `step         ${f1(o.stepMs)} ms   (${
      r.rounds > 1 ? `median of ${r.rounds} rounds, each the ${over}` : over
    })`,
  );
  if (r.rounds > 1) {
    out(
      `rounds       ${r.rounds} (${
        r.torch.length ? "ours then PyTorch each round; " : ""
      }figures are medians): ours ${o.roundsTokensPerS.map(f1).join(", ")} tokens/s`,
    );
  }
  out(`dispatches   ${o.dispatchesPerStep} per step in ${o.submitsPerStep} submits`);
  out(
    `FLOPs        ${(o.flopsPerStep / 1e9).toFixed(3)} GFLOP per step → ${
      o.achievedGflops.toFixed(2)
    } GFLOP/s`,
  );
  if (o.peak && o.mfu !== null) {
    out(
      `MFU          ${(100 * o.mfu).toFixed(2)}% of ${
        f1(o.peak.gflops)
      } GFLOP/s (${o.peak.source})`,
    );
  } else out(`MFU          - (peak unknown for this adapter; pass --peak-tflops)`);
  const rss = o.memory.peakRssBytes === null ? "-" : fmtBytes(o.memory.peakRssBytes);
  out(
    `memory       ${fmtBytes(o.memory.peakBufferBytes)} peak in WebGPU buffers ` +
      `(plan: ${fmtBytes(o.memory.plannedBytes)}); process peak RSS ${rss}`,
  );
  if (o.breakdown) {
    const b = o.breakdown;
    out("");
    out(
      `step breakdown (GPU timestamps, one pass per dispatch: ${f1(b.profiledMsPerStep)} ms ` +
        `profiled vs ${f1(o.stepMs)} ms wall)`,
    );
    out(
      `${"op".padEnd(16)} ${"calls".padStart(6)} ${"ms/step".padStart(10)} ${"share".padStart(7)}`,
    );
    for (const k of b.ops) {
      out(
        `${k.name.padEnd(16)} ${String(k.callsPerStep).padStart(6)} ${
          k.msPerStep.toFixed(2).padStart(10)
        } ${(100 * k.msPerStep / b.profiledMsPerStep).toFixed(1).padStart(6)}%`,
      );
    }
    out("");
    out(`${"kernel".padEnd(56)} ${"calls".padStart(6)} ${"ms/step".padStart(10)}`);
    for (const k of b.kernels) {
      out(
        `${k.name.padEnd(56)} ${String(k.callsPerStep).padStart(6)} ${
          k.msPerStep.toFixed(2).padStart(10)
        }`,
      );
    }
  } else out("step breakdown: - (no timestamp-query on this adapter, or --no-profile)");
  out("");
  out(`losses (ours)     ${o.losses.slice(0, COMPARED_STEPS).map((l) => l.toFixed(6)).join("  ")}`);
  for (const t of r.torch) {
    const what = `torch ${t.dtype}`;
    out(
      `losses (${what})${" ".repeat(Math.max(1, 9 - what.length))}${
        t.losses.slice(0, COMPARED_STEPS).map((l) => l.toFixed(6)).join("  ")
      }`,
    );
  }
  for (const t of r.torch) {
    const where = t.device === "cpu" ? `${t.threads} threads` : t.device_name;
    const chk = t.lossOk === null
      ? `max rel diff ${t.lossMaxRelDiff.toExponential(2)} (bf16: not checked)`
      : `max rel diff ${t.lossMaxRelDiff.toExponential(2)} vs tolerance ${
        t.lossTolerance!.toExponential(0)
      }${r.matmulPrecision === "f16" ? " (our GEMMs in f16)" : ""}: ${
        t.lossOk ? "ok" : "MISMATCH"
      }`;
    out(
      `torch ${t.torch} ${t.impl} ${t.dtype} on ${t.device} (${where}): ${
        f1(t.tokens_per_s)
      } tokens/s, ${f1(t.timed_step_ms)} ms/step, peak ${fmtBytes(t.peak_memory_bytes)}`,
    );
    if (r.rounds > 1) {
      out(
        `  rounds: ${t.roundsTokensPerS.map(f1).join(", ")} tokens/s; ours / torch per round ` +
          `${t.ratioRange[0].toFixed(3)}–${t.ratioRange[1].toFixed(3)}×`,
      );
    }
    out(`  ours / torch = ${t.ratio.toFixed(3)}×; first ${COMPARED_STEPS} losses: ${chk}`);
  }
}

function intFlag(v: unknown, flag: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    throw new UserError(`--${flag} must be an integer ≥ ${min} (got ${JSON.stringify(v)})`);
  }
  return n;
}

function numFlag(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) {
    throw new UserError(`--${flag} must be a positive number (got ${JSON.stringify(v)})`);
  }
  return n;
}

/** Turn flag values into options (throws UserError on bad values). */
export function trainOptionsFromFlags(v: TrainFlags): TrainBenchOptions {
  const data = v.data as string | undefined;
  const precision = (v["matmul-precision"] as string | undefined) ?? "f32";
  if (precision !== "f32" && precision !== "f16") {
    throw new UserError(`--matmul-precision must be f32 or f16 (got ${JSON.stringify(precision)})`);
  }
  if (data !== undefined && data !== "gsm8k" && data !== "synthetic") {
    throw new UserError(`--data must be gsm8k or synthetic (got ${JSON.stringify(data)})`);
  }
  let torch: TorchOptions | undefined;
  if (v["vs-torch"]) {
    const device = (v["torch-device"] as string | undefined) ?? "auto";
    const dtypesRaw = (v["torch-dtype"] as string | undefined) ?? "fp32";
    const dtypes = dtypesRaw.split(",").map((s) => s.trim());
    for (const d of dtypes) {
      if (d !== "fp32" && d !== "bf16") {
        throw new UserError(`--torch-dtype takes fp32, bf16 or fp32,bf16 (got ${dtypesRaw})`);
      }
    }
    const implRaw = (v["torch-impl"] as string | undefined) ?? "auto";
    const impls = implRaw.split(",").map((s) => s.trim());
    if (!impls.every((i) => ["auto", "plain", "hf"].includes(i))) {
      throw new UserError(
        `--torch-impl takes auto, plain or hf, or a comma list such as hf,plain (got ${implRaw})`,
      );
    }
    torch = {
      python: v.python as string | undefined,
      device,
      dtypes: dtypes as ("fp32" | "bf16")[],
      impls,
      threads: intFlag(v["torch-threads"], "torch-threads", 1),
    };
  }
  return {
    model: (v.model as string | undefined) ?? "stories260k",
    batch: intFlag(v.batch, "batch", 1),
    seq: intFlag(v.seq, "seq", 2),
    steps: intFlag(v.steps, "steps", 1) ?? 5,
    warmup: intFlag(v.warmup, "warmup", 1) ?? 2,
    microRows: intFlag(v["micro-rows"], "micro-rows", 1),
    data: data as "gsm8k" | "synthetic" | undefined,
    tied: v.tied === true,
    hyper: {
      lr: numFlag(v.lr, "lr") ?? 1e-3,
      beta1: 0.9,
      beta2: 0.95,
      eps: 1e-8,
      weightDecay: 0.01,
      maxGradNorm: 1.0,
    },
    peakTflops: numFlag(v["peak-tflops"], "peak-tflops"),
    profile: v["no-profile"] !== true,
    torch,
    rounds: intFlag(v.rounds, "rounds", 1) ?? 1,
    matmulPrecision: precision as "f32" | "f16",
    gpuKernels: v["gpu-kernels"] === true,
  };
}

/** `deno task bench train [flags]`: run, print, write bench/out/train.json. */
export async function run(values: TrainFlags): Promise<void> {
  try {
    const opts = trainOptionsFromFlags(values);
    opts.log = (l) => console.log(l);
    const r = await benchTrain(opts);
    printTrainResult(r);
    const path = await writeResult("train", null, { ...r, date: new Date().toISOString() });
    console.log(`\nwrote ${path}`);
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    console.error(`error: ${e.message}`);
    console.error(`hint: ${e.hint ?? "deno task bench train --model stories260k [--vs-torch]"}`);
    Deno.exit(1);
  }
}
