// Matmul autotune: time each GEMM shape of a graph with every tile / split-K choice, cache per adapter.
//
// On GPU adapters the "gpu" matmul variant picks, per GEMM, a 64- or 128-edge output tile, a
// number of K slices and the load width; on CPU adapters the "cpu" variant picks matmul_vec's or
// matmul_wide's block sizes (bit-identical results unless matmul_vec cuts K for its windows).
// Fixed rules give a fair first guess; this module measures instead: it records the distinct
// GEMMs a graph builds, times every candidate on the graph's own buffers
// with GPU timestamps (before any weight is uploaded, so nothing of value is overwritten), keeps
// the fastest, and rebuilds the graph when a choice changed. Results are cached in a JSON file per
// adapter and kernel source, so later runs start with the measured choices and time nothing.
// The same build also records the graph's attention_gpu launches (GPU adapters, or the gpu variant
// forced) and times every thread grid that fits per entry point and shape (for dK/dV also split
// over the q heads of a GQA group), cached alike.
import { join } from "node:path";
import {
  type GemmChoice,
  gemmVec4Ok,
  matmulGemm,
  matmulTuning,
  type RecordedGemm,
  setMatmulTuning,
  startGemmRecording,
  stopGemmRecording,
  vecForms,
  type WideConfig,
} from "./matmul.ts";
import {
  type AttentionAcc,
  attentionAccForms,
  attentionForcedForm,
  type AttentionForm,
  attentionForms,
  attentionGpuShapeCandidates,
  type AttentionGrid,
  attentionTunedAcc,
  attentionTunedForms,
  attentionTunedShapes,
  type RecordedAttention,
  type RecordedAttentionForm,
  setAttentionAcc,
  setAttentionGpuShapes,
  setAttentionTunedAcc,
  setAttentionTunedForms,
  setAttentionTunedShapes,
  startAttentionRecording,
  stopAttentionFormRecording,
  stopAttentionRecording,
} from "./attention.ts";
import { releaseAttentionBands } from "./attention_band.ts";
import { type Dispatch, type Gpu, ParamArena } from "./runtime.ts";

/** What tuneMatmul did. */
export interface MatmulTuneReport {
  /** Distinct GEMM shapes of the graph. */
  shapes: number;
  /** Shapes timed now (the others came from the cache). */
  measured: number;
  /** Shapes whose measured choice differs from the grid heuristic. */
  changed: number;
  /** Wall time of the measurements, ms. */
  ms: number;
  /** Sum over shapes of (heuristic time − chosen time) for the measured shapes, ms per call each. */
  savedMs: number;
  /** Where the cache lives (null: not cached). */
  cacheFile: string | null;
  /** Why nothing was tuned, when nothing was. */
  skipped?: string;
  /**
   * attention_gpu launches (entry point × shape): distinct, timed now, changed from the default,
   * and the thread grid each one runs with, by attentionKey.
   */
  attention?: {
    shapes: number;
    measured: number;
    changed: number;
    grids: Record<string, AttentionGrid>;
    /** The accumulator form each launch runs with. */
    acc: Record<string, AttentionAcc>;
    /** The form each pass runs with (flash or band), by attentionFormKey; also counted in measured. */
    forms: Record<string, AttentionForm>;
  };
}

/** Options of tuneMatmul. */
export interface MatmulTuneOptions {
  /** Cache file (default $FINETUNE_CACHE_DIR or $XDG_CACHE_HOME/finetune or ~/.cache/finetune). */
  cacheFile?: string | null;
  /** Tune even with FINETUNE_AUTOTUNE=0 (tests). */
  force?: boolean;
  /** Timed repetitions per candidate (the median counts). */
  reps?: number;
  log?: (line: string) => void;
}

interface CacheFile {
  version: 1;
  /** adapter signature → kernel source hash → gemmKey → choice; attention grids alike */
  adapters: Record<string, {
    kernels: string;
    choices: Record<string, CachedChoice>;
    attention?: {
      kernels: string;
      choices: Record<
        string,
        { tr: number; tc: number; parts?: number; acc?: AttentionAcc; ms: number }
      >;
      /** attentionFormKey → the fastest form of that pass and every form's time (ms per pass) */
      forms?: Record<string, { form: AttentionForm; ms: Partial<Record<AttentionForm, number>> }>;
    };
  }>;
}

/** One cached decision: GPU kernel choice or matmul_wide block sizes, and its time. */
interface CachedChoice extends Partial<GemmChoice> {
  wide?: WideConfig;
  ms: number;
}

/** Default cache path, or null when no home directory is known. */
export function defaultTuneCacheFile(): string | null {
  const env = (k: string) => Deno.env.get(k);
  const dir = env("FINETUNE_CACHE_DIR") ??
    (env("XDG_CACHE_HOME") ? join(env("XDG_CACHE_HOME")!, "finetune") : null) ??
    (env("HOME") ? join(env("HOME")!, ".cache", "finetune") : null);
  return dir ? join(dir, "matmul_tune.json") : null;
}

/** The adapter's identity for the cache: name, vendor, device and backend. */
function adapterSignature(gpu: Gpu): string {
  const s = gpu.summary;
  return `${s.description}|${s.vendor}|${s.device}|${s.backend}`;
}

const sourceHashes = new Map<string, Promise<string>>();

/**
 * SHA-256 (hex, 16 chars) of matmul.wgsl + matmul_f16.wgsl + matmul_vec.wgsl + matmul.ts: a kernel change
 * invalidates the cache.
 */
function matmulSourceHash(): Promise<string> {
  return sourceHash(["./matmul.wgsl", "./matmul_f16.wgsl", "./matmul_vec.wgsl", "./matmul.ts"]);
}

/** The same for the GPU attention kernels and launchers (the attention grids' and forms' cache). */
function attentionSourceHash(): Promise<string> {
  return sourceHash([
    "./attention_gpu.wgsl",
    "./attention_band.wgsl",
    "./attention_params.wgsl",
    "./attention.ts",
    "./attention_band.ts",
  ]);
}

function sourceHash(files: string[]): Promise<string> {
  const k = files.join("+");
  let h = sourceHashes.get(k);
  if (h) return h;
  h = (async () => {
    const parts = await Promise.all(
      files.map((f) => Deno.readFile(new URL(f, import.meta.url))),
    );
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    const d = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
    return Array.from(d.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
  })();
  sourceHashes.set(k, h);
  return h;
}

async function readCache(path: string | null): Promise<CacheFile> {
  const empty: CacheFile = { version: 1, adapters: {} };
  if (!path) return empty;
  try {
    const c = JSON.parse(await Deno.readTextFile(path)) as CacheFile;
    return c.version === 1 && c.adapters ? c : empty;
  } catch {
    return empty; // missing or unreadable: measure again
  }
}

async function writeCache(path: string, c: CacheFile): Promise<void> {
  await Deno.mkdir(join(path, ".."), { recursive: true });
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(c, null, 1) + "\n");
  await Deno.rename(tmp, path);
}

/**
 * The candidates for one GEMM: both tiles × 1, 2, 4, 8 K slices (≥ 256 of K per slice), each
 * with 16-byte and 4-byte loads when the shape allows 16-byte ones, and also with f16 arithmetic
 * when that is allowed (precision "f16") and the shape takes 16-byte loads.
 */
export function gemmCandidates(K: number, vec4Ok = false, f16Ok = false): GemmChoice[] {
  const out: GemmChoice[] = [];
  for (const tile of [64, 128] as const) {
    for (const slices of [1, 2, 4, 8]) {
      if (slices > 1 && K / slices < 256) continue;
      if (vec4Ok && f16Ok) out.push({ tile, slices, vec4: true, f16: true });
      out.push({ tile, slices, vec4: vec4Ok });
      if (vec4Ok) out.push({ tile, slices, vec4: false });
    }
  }
  return out;
}

/**
 * matmul_vec blocks tried on CPU adapters for the GEMMs it takes (rows per invocation, columns per
 * workgroup); each compiles in 2–6 s per operand form on lavapipe (16 × 32: 15–20 s, not tried).
 */
export const VEC_CANDIDATES: readonly WideConfig[] = [
  { wg: 8, rows: 8, cols: 32, vec: true },
  { wg: 8, rows: 16, cols: 16, vec: true },
  { wg: 8, rows: 8, cols: 16, vec: true },
];

/** matmul_wide block sizes tried on CPU adapters (invocations, rows, columns per invocation). */
export const WIDE_CANDIDATES: readonly WideConfig[] = [
  { wg: 8, rows: 16, cols: 16 },
  { wg: 8, rows: 16, cols: 12 },
  { wg: 8, rows: 16, cols: 8 },
  { wg: 8, rows: 8, cols: 8 },
  { wg: 4, rows: 16, cols: 16 },
];

/** One candidate: a GPU kernel choice or matmul_wide block sizes. */
type Candidate = { gpu: GemmChoice; wide?: undefined } | { wide: WideConfig; gpu?: undefined };

/** "128-tile × 2 slices, 16-byte loads" or "matmul_wide 8/16/12" */
function describe(c: Candidate): string {
  if (c.wide?.vec) return `matmul_vec ${c.wide.rows}×${c.wide.cols}`;
  if (c.wide) return `matmul_wide ${c.wide.wg}/${c.wide.rows}/${c.wide.cols}`;
  const g = c.gpu!;
  return `${g.tile}-tile × ${g.slices} slice(s)${g.vec4 ? ", 16-byte loads" : ""}${
    g.f16 ? ", f16" : ""
  }`;
}

/** What the recorded build used, as a candidate. */
function usedCandidate(rec: RecordedGemm): Candidate {
  if (rec.wide) return { wide: rec.wide };
  const p = rec.plan!;
  const h = p.entry.endsWith("_h");
  return {
    gpu: { tile: p.tile as 64 | 128, slices: p.slices, vec4: h || p.entry.endsWith("_v4"), f16: h },
  };
}

function sameCandidate(a: Candidate, b: Candidate): boolean {
  if (a.wide || b.wide) {
    return !!a.wide && !!b.wide && a.wide.wg === b.wide.wg && a.wide.rows === b.wide.rows &&
      a.wide.cols === b.wide.cols && !!a.wide.vec === !!b.wide.vec;
  }
  return a.gpu!.tile === b.gpu!.tile && a.gpu!.slices === b.gpu!.slices &&
    (a.gpu!.vec4 ?? false) === (b.gpu!.vec4 ?? false) &&
    (a.gpu!.f16 ?? false) === (b.gpu!.f16 ?? false);
}

/** The middle value (the mean of the two middle ones for an even count). */
export function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}

/** Time every candidate of one recorded GEMM; returns ms per call by candidate. */
async function timeCandidates(
  gpu: Gpu,
  rec: RecordedGemm,
  reps: number,
): Promise<{ choice: Candidate; ms: number }[]> {
  const arena = new ParamArena(gpu, "matmul_tune", 64 * 1024);
  const before = { ...matmulTuning(gpu) };
  const lists: { choice: Candidate; dispatches: Dispatch[] }[] = [];
  // where matmul_vec applies, one matmul_wide block (the first) stays as a check; more would add
  // compile time for a kernel that ran the stories260K GEMM set at half matmul_vec's speed
  const cands: Candidate[] = rec.wide
    ? (before.vec && vecForms(rec.args) ? [...VEC_CANDIDATES, WIDE_CANDIDATES[0]] : WIDE_CANDIDATES)
      .map((wide) => ({ wide }))
    : gemmCandidates(rec.args.K, gemmVec4Ok(rec.args), before.precision === "f16")
      .map((g) => ({ gpu: g }));
  try {
    for (const choice of cands) {
      if (choice.wide?.vec) {
        setMatmulTuning(gpu, {
          variant: "vec",
          vecRows: choice.wide.rows,
          vecCols: choice.wide.cols,
        });
      } else if (choice.wide) {
        const w = choice.wide;
        setMatmulTuning(gpu, { variant: "wide", wideWg: w.wg, wideRows: w.rows, wideCols: w.cols });
      } else {
        setMatmulTuning(gpu, {
          variant: choice.gpu.tile === 64 ? "tiled" : "big",
          splitK: choice.gpu.slices,
          vec4: choice.gpu.vec4 ?? true,
          precision: choice.gpu.f16 ? "f16" : "f32",
        });
      }
      lists.push({ choice, dispatches: matmulGemm(gpu, arena, rec.args) });
    }
  } finally {
    setMatmulTuning(gpu, before);
  }
  const ms = await timeLists(gpu, lists.map((l) => l.dispatches), reps);
  arena.destroy();
  return lists.map((l, i) => ({ choice: l.choice, ms: ms[i] }));
}

/**
 * ms per call of each dispatch list (its dispatches summed), the median of `reps` timed calls after
 * a warm-up call, all in one submission.
 */
async function timeLists(gpu: Gpu, lists: Dispatch[][], reps: number): Promise<number[]> {
  const all: Dispatch[] = [];
  for (const l of lists) for (let r = 0; r <= reps; r++) all.push(...l);
  const ms = await gpu.profile(all);
  let i = 0;
  return lists.map((l) => {
    const per: number[] = [];
    for (let r = 0; r <= reps; r++) {
      let t = 0;
      for (let d = 0; d < l.length; d++) t += ms[i++];
      if (r > 0) per.push(t);
    }
    return median(per);
  });
}

/** Two attention grids are the same (an absent dK/dV split counts as 1). */
function sameGrid(a: AttentionGrid, b: AttentionGrid): boolean {
  return a[0] === b[0] && a[1] === b[1] && (a[2] ?? 1) === (b[2] ?? 1);
}

/**
 * The packed layout the attention autotune times on: T tokens cut into samples of `sample` tokens
 * (the last one shorter), as seqStart / seqEnd arrays.
 */
export function tuneSegments(
  T: number,
  sample: number,
): { starts: Uint32Array<ArrayBuffer>; ends: Uint32Array<ArrayBuffer> } {
  const starts = new Uint32Array(T), ends = new Uint32Array(T);
  for (let i = 0; i < T; i++) {
    starts[i] = i - (i % sample);
    ends[i] = Math.min(T, starts[i] + sample);
  }
  return { starts, ends };
}

/** One attention_gpu configuration the autotune times: thread grid and accumulator form. */
interface AttentionCandidate {
  grid: AttentionGrid;
  acc: AttentionAcc;
}

/**
 * Time attention_gpu configurations of one recorded launch (default: every fitting thread grid and
 * dK/dV split, accumulators in the "loop" form); ms per call by candidate, its dispatches summed.
 */
async function timeAttentionGrids(
  gpu: Gpu,
  rec: RecordedAttention,
  reps: number,
  candidates: AttentionCandidate[] = attentionGpuShapeCandidates(
    gpu,
    rec.entry,
    rec.D,
    rec.group,
  ).map((grid) => ({ grid, acc: "loop" })),
): Promise<(AttentionCandidate & { ms: number })[]> {
  const arena = new ParamArena(gpu, "attention_tune", 64 * 1024);
  const lists: (AttentionCandidate & { ds: Dispatch[] })[] = [];
  try {
    for (const { grid, acc } of candidates) {
      setAttentionGpuShapes(gpu, { [rec.entry]: grid });
      setAttentionAcc(gpu, acc);
      lists.push({ grid, acc, ds: rec.rebuild(arena) });
    }
  } finally {
    setAttentionGpuShapes(gpu, null);
    setAttentionAcc(gpu, null);
  }
  const ms = await timeOnSegments(gpu, rec.segments, lists.map((l) => l.ds), reps);
  arena.destroy();
  return lists.map((l, i) => ({ grid: l.grid, acc: l.acc, ms: ms[i] }));
}

/**
 * Time dispatch lists of one attention launch (timeLists) with its segment buffers holding samples
 * of the launch's longest length (all T tokens when unknown): what a graph holds before its first
 * batch is zeros, under which dK/dV walks no queries and every candidate times the same empty
 * launch. setBatch overwrites both buffers.
 */
function timeOnSegments(
  gpu: Gpu,
  segments: RecordedAttention["segments"],
  lists: Dispatch[][],
  reps: number,
): Promise<number[]> {
  const { T, sample, seqStart, seqEnd } = segments;
  const { starts, ends } = tuneSegments(T, sample);
  gpu.device.queue.writeBuffer(seqStart.buffer, seqStart.offset ?? 0, starts);
  gpu.device.queue.writeBuffer(seqEnd.buffer, seqEnd.offset ?? 0, ends);
  return timeLists(gpu, lists, reps);
}

/** Time every form of one recorded attention pass on its segments: ms per pass by form. */
async function timeAttentionForms(
  gpu: Gpu,
  rec: RecordedAttentionForm,
  reps: number,
): Promise<{ form: AttentionForm; ms: number }[]> {
  const arena = new ParamArena(gpu, "attention_tune", 64 * 1024);
  const forms = attentionForms(rec.split);
  const lists = forms.map((f) => rec.rebuild(arena, f));
  const ms = await timeOnSegments(gpu, rec.segments, lists, reps);
  arena.destroy();
  return forms.map((form, i) => ({ form, ms: ms[i] }));
}

/**
 * Keep a GPU busy for about 300 ms before timing anything: an idle GPU clocks down (an H100 sat at
 * 345 MHz, against 1,980 under load), and the first candidates timed would run at whatever clock it
 * had ramped to (a first timing measured 2.6× slower than the same GEMM a moment later). `timeAll`
 * times one pending launch's candidates `reps` times each, in one submission.
 */
async function warmClocks(timeAll: (reps: number) => Promise<{ ms: number }[]>): Promise<void> {
  const once = await timeAll(1); // also compiles the candidates' pipelines
  const ms = once.reduce((a, t) => a + (Number.isFinite(t.ms) ? t.ms : 0), 0);
  if (ms > 0) await timeAll(Math.min(50, Math.ceil(300 / ms)));
}

/**
 * Build a graph with matmul choices measured on this adapter: `build` runs once with the cached
 * (or heuristic) choices while its GEMMs are recorded; shapes not in the cache are timed on the
 * graph's buffers; if any choice changed, the graph is destroyed and built again. No-op (one
 * build) without timestamp queries, with FINETUNE_AUTOTUNE=0, or with a forced matmul variant.
 */
export async function buildWithTunedMatmul<G extends { destroy(): void }>(
  gpu: Gpu,
  build: () => G,
  opts: MatmulTuneOptions = {},
): Promise<{ graph: G; report: MatmulTuneReport }> {
  const cacheFile = opts.cacheFile === undefined ? defaultTuneCacheFile() : opts.cacheFile;
  const base = { shapes: 0, measured: 0, changed: 0, ms: 0, savedMs: 0, cacheFile };
  const variant = matmulTuning(gpu).variant;
  const skip = !gpu.hasTimestamps
    ? "the adapter offers no timestamp queries"
    : Deno.env.get("FINETUNE_AUTOTUNE") === "0" && !opts.force
    ? "FINETUNE_AUTOTUNE=0"
    : variant !== "gpu" && variant !== "cpu"
    ? `matmul variant forced to ${variant}`
    : null;
  if (skip) return { graph: build(), report: { ...base, cacheFile: null, skipped: skip } };

  const sig = adapterSignature(gpu);
  const hash = await matmulSourceHash();
  const cache = await readCache(cacheFile);
  const entry = cache.adapters[sig]?.kernels === hash
    ? cache.adapters[sig]
    : { kernels: hash, choices: {} };
  const choices = new Map(matmulTuning(gpu).choices ?? []);
  const wideChoices = new Map(matmulTuning(gpu).wideChoices ?? []);
  for (const [k, c] of Object.entries(entry.choices)) {
    if (c.wide && !wideChoices.has(k)) wideChoices.set(k, c.wide);
    if (c.tile && c.slices && !choices.has(k)) {
      choices.set(k, { tile: c.tile, slices: c.slices, vec4: c.vec4, f16: c.f16 });
    }
  }
  const known = (k: string) => (variant === "cpu" ? wideChoices : choices).has(k);
  setMatmulTuning(gpu, { choices, wideChoices });

  const attnHash = await attentionSourceHash();
  const attnEntry = entry.attention?.kernels === attnHash
    ? entry.attention
    : { kernels: attnHash, choices: {} };
  const grids = new Map(attentionTunedShapes(gpu));
  const accs = new Map(attentionTunedAcc(gpu));
  for (const [k, c] of Object.entries(attnEntry.choices)) {
    if (grids.has(k)) continue;
    grids.set(k, c.parts ? [c.tr, c.tc, c.parts] : [c.tr, c.tc]);
    accs.set(k, c.acc === "fixed" ? "fixed" : "loop");
  }
  setAttentionTunedShapes(gpu, grids);
  setAttentionTunedAcc(gpu, accs);
  const forms = new Map(attentionTunedForms(gpu));
  for (const [k, f] of Object.entries(attnEntry.forms ?? {})) {
    const known = ["flash", "band", "band-split"].includes(f.form);
    if (!forms.has(k)) forms.set(k, known ? f.form : "flash");
  }
  setAttentionTunedForms(gpu, forms);

  startGemmRecording(gpu);
  startAttentionRecording(gpu);
  let graph: G;
  let recorded = new Map<string, RecordedGemm>();
  let attnRecorded = new Map<string, RecordedAttention>();
  let formRecorded = new Map<string, RecordedAttentionForm>();
  try {
    graph = build();
  } finally {
    recorded = stopGemmRecording(gpu);
    attnRecorded = stopAttentionRecording(gpu);
    formRecorded = stopAttentionFormRecording(gpu);
  }
  const report: MatmulTuneReport = { ...base, shapes: recorded.size };
  const t0 = performance.now();
  if (!gpu.isCpu) { // warm up on the first launch that will be timed, GEMM or attention
    const gemm = [...recorded].find(([key]) => !known(key))?.[1];
    const attn = [...attnRecorded].find(([key]) => !grids.has(key))?.[1];
    if (gemm) await warmClocks((reps) => timeCandidates(gpu, gemm, reps));
    else if (attn) await warmClocks((reps) => timeAttentionGrids(gpu, attn, reps));
  }
  let rebuild = false;
  for (const [key, rec] of recorded) {
    if (known(key)) continue;
    const times = await timeCandidates(gpu, rec, opts.reps ?? 3);
    const best = times.reduce((a, b) => (b.ms < a.ms ? b : a));
    if (!(best.ms > 0 && Number.isFinite(best.ms))) continue; // no usable clock: keep the rule
    const usedC = usedCandidate(rec);
    const used = times.find((t) => sameCandidate(t.choice, usedC));
    const ms = Number(best.ms.toFixed(4));
    if (best.choice.wide) {
      wideChoices.set(key, best.choice.wide);
      entry.choices[key] = { wide: best.choice.wide, ms };
    } else {
      choices.set(key, best.choice.gpu);
      entry.choices[key] = { ...best.choice.gpu, ms };
    }
    report.measured++;
    if (!used || used !== best) {
      report.changed++;
      rebuild = true;
      if (used) report.savedMs += used.ms - best.ms;
    }
    opts.log?.(
      `matmul tune ${key}: ${describe(best.choice)} ${best.ms.toFixed(3)} ms ` +
        `(rule: ${describe(usedC)}, ${used ? used.ms.toFixed(3) + " ms" : "n/a"})`,
    );
  }
  const attn = { shapes: attnRecorded.size, measured: 0, changed: 0 };
  const used: Record<string, AttentionGrid> = {};
  const usedAcc: Record<string, AttentionAcc> = {};
  const fastest = <T extends { ms: number }>(ts: T[]) => ts.reduce((a, b) => (b.ms < a.ms ? b : a));
  for (const [key, rec] of attnRecorded) {
    if (grids.has(key)) continue;
    const times = await timeAttentionGrids(gpu, rec, opts.reps ?? 3);
    if (times.length < 2) continue;
    let best = fastest(times);
    if (!(best.ms > 0 && Number.isFinite(best.ms))) continue;
    const used = times.find((t) => sameGrid(t.grid, rec.grid));
    // Then the best grid's two accumulator forms (where it has both), side by side in one submission.
    const accForms = attentionAccForms(rec.D, best.grid);
    const forms = accForms.length < 2 ? [] : await timeAttentionGrids(
      gpu,
      rec,
      opts.reps ?? 3,
      accForms.map((acc) => ({ grid: best.grid, acc })),
    );
    const formBest = forms.length ? fastest(forms) : best;
    if (formBest.ms > 0 && Number.isFinite(formBest.ms)) best = formBest;
    grids.set(key, best.grid);
    accs.set(key, best.acc);
    attnEntry.choices[key] = {
      tr: best.grid[0],
      tc: best.grid[1],
      ...(best.grid[2] ? { parts: best.grid[2] } : {}),
      ...(best.acc === "fixed" ? { acc: best.acc } : {}),
      ms: Number(best.ms.toFixed(4)),
    };
    attn.measured++;
    if (!used || !sameGrid(used.grid, best.grid) || best.acc !== rec.acc) {
      attn.changed++;
      rebuild = true;
    }
    opts.log?.(
      `attention tune ${key}: ${best.grid.join("×")} ${best.ms.toFixed(3)} ms, accumulators ` +
        `${best.acc} (${
          forms.length
            ? forms.map((f) => `${f.acc} ${f.ms.toFixed(3)}`).join(", ") + " ms"
            : "one form"
        }; ` +
        `default ${rec.grid.join("×")}, ${used ? used.ms.toFixed(3) + " ms" : "n/a"})`,
    );
  }
  setAttentionTunedShapes(gpu, grids);
  setAttentionTunedAcc(gpu, accs);
  // Then each pass's form, flash (at the grids just chosen) against band, where the band fits.
  const usedForm: Record<string, AttentionForm> = {};
  for (const [key, rec] of formRecorded) {
    usedForm[key] = forms.get(key) ?? rec.form;
    if (forms.has(key) || !rec.bandFits) continue;
    const times = await timeAttentionForms(gpu, rec, opts.reps ?? 3);
    const best = fastest(times);
    if (!(best.ms > 0 && Number.isFinite(best.ms))) continue;
    const ms = Object.fromEntries(times.map((t) => [t.form, Number(t.ms.toFixed(4))]));
    forms.set(key, best.form);
    usedForm[key] = best.form;
    (attnEntry.forms ??= {})[key] = { form: best.form, ms };
    attn.measured++;
    if (best.form !== rec.form) {
      attn.changed++;
      rebuild = true;
    }
    opts.log?.(
      `attention tune ${key}: ${best.form} (` +
        times.map((t) => `${t.form} ${t.ms.toFixed(3)}`).join(", ") + " ms)",
    );
  }
  setAttentionTunedForms(gpu, forms);
  // Timing built the bands; nothing built on this adapter reads them unless some pass kept a band
  // form (or one is forced).
  if ([...forms.values()].every((f) => f === "flash") && attentionForcedForm(gpu) === null) {
    releaseAttentionBands(gpu);
  }
  for (const [key, rec] of attnRecorded) {
    used[key] = grids.get(key) ?? rec.grid;
    usedAcc[key] = accs.get(key) ?? rec.acc;
  }
  if (attn.shapes > 0 || formRecorded.size > 0) {
    report.attention = { ...attn, grids: used, acc: usedAcc, forms: usedForm };
  }
  report.ms = performance.now() - t0;
  setMatmulTuning(gpu, { choices, wideChoices });
  if (attn.measured > 0) entry.attention = attnEntry;
  if ((report.measured > 0 || attn.measured > 0) && cacheFile) {
    cache.adapters[sig] = entry;
    try {
      await writeCache(cacheFile, cache);
    } catch (e) {
      opts.log?.(`matmul tune: could not write ${cacheFile}: ${(e as Error).message}`);
    }
  }
  if (rebuild) {
    graph.destroy();
    graph = build();
  }
  return { graph, report };
}

/** One line on what the autotune did, for logs. */
export function describeTune(r: MatmulTuneReport): string {
  if (r.skipped) return `matmul autotune: skipped (${r.skipped})`;
  const timed = r.measured > 0
    ? `${r.measured} timed in ${(r.ms / 1000).toFixed(1)} s, ${r.changed} differ from the ` +
      `fixed rules (${r.savedMs.toFixed(2)} ms saved per pass over them)`
    : "all from the cache";
  const a = r.attention;
  const attn = a
    ? `; attention: ${a.shapes} launches, ${
      a.measured > 0
        ? `${a.measured} timed, ${a.changed} off the default grid or accumulator form`
        : "all from the cache"
    }`
    : "";
  return `matmul autotune: ${r.shapes} GEMM shapes, ${timed}${attn}; cache ${r.cacheFile ?? "off"}`;
}
