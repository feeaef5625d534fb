// Matmul autotune: time each GEMM shape of a graph with every tile / split-K choice, cache per adapter.
//
// On GPU adapters the "gpu" matmul variant picks, per GEMM, a 64- or 128-edge output tile and a
// number of K slices. Grid thresholds give a fair first guess; this module measures instead: it
// records the distinct GEMMs a graph builds, times every candidate on the graph's own buffers
// with GPU timestamps (before any weight is uploaded, so nothing of value is overwritten), keeps
// the fastest, and rebuilds the graph when a choice changed. Results are cached in a JSON file per
// adapter and kernel source, so later runs start with the measured choices and time nothing.
import { join } from "node:path";
import {
  type GemmChoice,
  gemmVec4Ok,
  isCpuAdapter,
  matmulGemm,
  matmulTuning,
  type RecordedGemm,
  setMatmulTuning,
  startGemmRecording,
  stopGemmRecording,
} from "./matmul.ts";
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
}

/** Options of tuneMatmul. */
export interface MatmulTuneOptions {
  /** Cache file (default $FINETUNE_CACHE_DIR or $XDG_CACHE_HOME/finetune or ~/.cache/finetune). */
  cacheFile?: string | null;
  /** Tune on a CPU adapter too (tests: lavapipe runs the GPU kernels, slowly). */
  force?: boolean;
  /** Timed repetitions per candidate (the median counts). */
  reps?: number;
  log?: (line: string) => void;
}

interface CacheFile {
  version: 1;
  /** adapter signature → kernel source hash → gemmKey → choice */
  adapters: Record<
    string,
    { kernels: string; choices: Record<string, GemmChoice & { ms: number }> }
  >;
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

let kernelHash: Promise<string> | null = null;

/** SHA-256 (hex, 16 chars) of matmul.wgsl + matmul.ts: a kernel change invalidates the cache. */
function matmulSourceHash(): Promise<string> {
  kernelHash ??= (async () => {
    const parts = await Promise.all(
      ["./matmul.wgsl", "./matmul.ts"].map((f) => Deno.readFile(new URL(f, import.meta.url))),
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
  return kernelHash;
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
 * with 16-byte and 4-byte loads when the shape allows 16-byte ones.
 */
export function gemmCandidates(K: number, vec4Ok = false): GemmChoice[] {
  const out: GemmChoice[] = [];
  for (const tile of [64, 128] as const) {
    for (const slices of [1, 2, 4, 8]) {
      if (slices > 1 && K / slices < 256) continue;
      out.push({ tile, slices, vec4: vec4Ok });
      if (vec4Ok) out.push({ tile, slices, vec4: false });
    }
  }
  return out;
}

/** "128-tile × 2 slices, 16-byte loads" */
function describeChoice(c: GemmChoice): string {
  return `${c.tile}-tile × ${c.slices} slice(s)${c.vec4 ? ", 16-byte loads" : ""}`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Time every candidate of one recorded GEMM; returns ms per call by candidate. */
async function timeCandidates(
  gpu: Gpu,
  rec: RecordedGemm,
  reps: number,
): Promise<{ choice: GemmChoice; ms: number }[]> {
  const arena = new ParamArena(gpu, "matmul_tune", 64 * 1024);
  const before = { ...matmulTuning(gpu) };
  const lists: { choice: GemmChoice; dispatches: Dispatch[] }[] = [];
  try {
    for (const choice of gemmCandidates(rec.args.K, gemmVec4Ok(rec.args))) {
      setMatmulTuning(gpu, {
        variant: choice.tile === 64 ? "tiled" : "big",
        splitK: choice.slices,
        vec4: choice.vec4 ?? true,
      });
      lists.push({ choice, dispatches: matmulGemm(gpu, arena, rec.args) });
    }
  } finally {
    setMatmulTuning(gpu, before);
  }
  // one submission: per candidate a warm-up call, then `reps` timed calls
  const all: Dispatch[] = [];
  for (const l of lists) for (let r = 0; r <= reps; r++) all.push(...l.dispatches);
  const ms = await gpu.profile(all);
  arena.buffer.destroy();
  const out: { choice: GemmChoice; ms: number }[] = [];
  let i = 0;
  for (const l of lists) {
    const n = l.dispatches.length;
    const per: number[] = [];
    for (let r = 0; r <= reps; r++) {
      let t = 0;
      for (let d = 0; d < n; d++) t += ms[i++];
      if (r > 0) per.push(t);
    }
    out.push({ choice: l.choice, ms: median(per) });
  }
  return out;
}

/**
 * Build a graph with matmul choices measured on this adapter: `build` runs once with the cached
 * (or heuristic) choices while its GEMMs are recorded; shapes not in the cache are timed on the
 * graph's buffers; if any choice changed, the graph is destroyed and built again. No-op (one
 * build) on CPU adapters, without timestamp queries, or with FINETUNE_AUTOTUNE=0.
 */
export async function buildWithTunedMatmul<G extends { destroy(): void }>(
  gpu: Gpu,
  build: () => G,
  opts: MatmulTuneOptions = {},
): Promise<{ graph: G; report: MatmulTuneReport }> {
  const cacheFile = opts.cacheFile === undefined ? defaultTuneCacheFile() : opts.cacheFile;
  const base = { shapes: 0, measured: 0, changed: 0, ms: 0, savedMs: 0, cacheFile };
  const skip = isCpuAdapter(gpu) && !opts.force
    ? "CPU adapter (matmul_wide has no per-shape choices)"
    : !gpu.hasTimestamps
    ? "the adapter offers no timestamp queries"
    : Deno.env.get("FINETUNE_AUTOTUNE") === "0"
    ? "FINETUNE_AUTOTUNE=0"
    : matmulTuning(gpu).variant !== "gpu"
    ? `matmul variant forced to ${matmulTuning(gpu).variant}`
    : null;
  if (skip) return { graph: build(), report: { ...base, cacheFile: null, skipped: skip } };

  const sig = adapterSignature(gpu);
  const hash = await matmulSourceHash();
  const cache = await readCache(cacheFile);
  const entry = cache.adapters[sig]?.kernels === hash
    ? cache.adapters[sig]
    : { kernels: hash, choices: {} };
  const choices = new Map(matmulTuning(gpu).choices ?? []);
  for (const [k, c] of Object.entries(entry.choices)) {
    if (!choices.has(k)) choices.set(k, { tile: c.tile, slices: c.slices, vec4: c.vec4 });
  }
  setMatmulTuning(gpu, { choices });

  startGemmRecording(gpu);
  let graph: G;
  let recorded = new Map<string, RecordedGemm>();
  try {
    graph = build();
  } finally {
    recorded = stopGemmRecording(gpu);
  }
  const report: MatmulTuneReport = { ...base, shapes: recorded.size };
  const t0 = performance.now();
  let rebuild = false;
  for (const [key, rec] of recorded) {
    if (choices.has(key)) continue;
    const times = await timeCandidates(gpu, rec, opts.reps ?? 3);
    const best = times.reduce((a, b) => (b.ms < a.ms ? b : a));
    const usedV4 = rec.plan.entry.endsWith("_v4");
    const used = times.find((t) =>
      t.choice.tile === rec.plan.tile && t.choice.slices === rec.plan.slices &&
      (t.choice.vec4 ?? false) === usedV4
    );
    choices.set(key, best.choice);
    entry.choices[key] = { ...best.choice, ms: Number(best.ms.toFixed(4)) };
    report.measured++;
    if (!used || used.choice !== best.choice) {
      report.changed++;
      rebuild = true;
      if (used) report.savedMs += used.ms - best.ms;
    }
    opts.log?.(
      `matmul tune ${key}: ${describeChoice(best.choice)} ${best.ms.toFixed(3)} ms ` +
        `(heuristic ${rec.plan.entry} × ${rec.plan.slices}: ` +
        `${used ? used.ms.toFixed(3) + " ms" : "n/a"})`,
    );
  }
  report.ms = performance.now() - t0;
  setMatmulTuning(gpu, { choices });
  if (report.measured > 0 && cacheFile) {
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
      `grid heuristic (${r.savedMs.toFixed(2)} ms saved per pass over them)`
    : "all from the cache";
  return `matmul autotune: ${r.shapes} GEMM shapes, ${timed}; cache ${r.cacheFile ?? "off"}`;
}
