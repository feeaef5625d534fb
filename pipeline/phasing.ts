// Difficulty phasing (paper A.6.1): split a tokenized dataset by response length into two phases with replay.
import { join } from "node:path";
import { UserError } from "./errors.ts";
import { epochRng } from "./bucket.ts";
import { readLines } from "./tokenize.ts";

/** Options of {@link splitByDifficulty}. */
export interface PhaseOptions {
  /** Fraction of the short half replayed in phase 2 (paper: 0.01). */
  replayFraction?: number;
  /** Seed of the replay draw. */
  seed?: number;
}

/** Sample indices of the two phases (ascending). */
export interface PhaseSplit {
  /** Bottom half by response length (ties broken by index). */
  phase1: number[];
  /** Top half plus the replayed short samples. */
  phase2: number[];
  /** The replayed short samples (also in phase1 and phase2). */
  replay: number[];
  /** Response length at and above which a sample is in the long half. */
  threshold: number;
}

/**
 * Split by response length, the paper's proxy for difficulty: sort samples by `responseLengths`
 * (loss tokens: the trained assistant tokens); phase 1 = the shorter ⌊n/2⌋, phase 2 = the rest
 * (the longer half) plus a replay buffer of ⌈fraction · |phase 1|⌉ samples drawn from phase 1
 * (seeded, without replacement). Ties are broken by index, so the split is deterministic.
 */
export function splitByDifficulty(
  responseLengths: ArrayLike<number>,
  opts: PhaseOptions = {},
): PhaseSplit {
  const frac = opts.replayFraction ?? 0.01;
  if (!(frac >= 0 && frac <= 1)) {
    throw new UserError(`replay fraction must be in [0, 1], got ${frac}`);
  }
  const n = responseLengths.length;
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => responseLengths[a] - responseLengths[b] || a - b);
  const half = Math.floor(n / 2);
  const short = idx.slice(0, half).sort((a, b) => a - b);
  const long = idx.slice(half);
  const k = Math.min(short.length, Math.ceil(frac * short.length));
  // Partial Fisher–Yates over a copy of the short half: the first k are the replay draw.
  const pool = short.slice();
  const rng = epochRng(opts.seed ?? 0, 0x7e91a);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rng() * (pool.length - i));
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  const replay = pool.slice(0, k).sort((a, b) => a - b);
  const phase2 = long.concat(replay).sort((a, b) => a - b);
  return {
    phase1: short,
    phase2,
    replay,
    threshold: half < n ? responseLengths[idx[half]] : 0,
  };
}

/** Options of {@link phaseDataset}. */
export interface PhaseDatasetOptions extends PhaseOptions {
  /** A tokenized JSONL file (output of the tokenize stage). */
  input: string;
  /** Run directory: writes <runDir>/data/<name>_phase1.jsonl and <name>_phase2.jsonl. */
  runDir: string;
  name: string;
}

/** Result of {@link phaseDataset}. */
export interface PhaseDatasetResult {
  phase1Path: string;
  phase2Path: string;
  phase1: number;
  phase2: number;
  replay: number;
  threshold: number;
}

/**
 * Write the two phases of a tokenized dataset (lines copied verbatim, input order), split on
 * `loss_tokens` (response length) by {@link splitByDifficulty}; temp files then rename.
 */
export async function phaseDataset(opts: PhaseDatasetOptions): Promise<PhaseDatasetResult> {
  const lines: string[] = [];
  const loss: number[] = [];
  for await (const [n, line] of readLines(opts.input)) {
    if (line.trim() === "") continue;
    const m = /"loss_tokens"\s*:\s*(\d+)/.exec(line);
    if (!m) throw new UserError(`${opts.input}:${n}: not a tokenized sample (no loss_tokens)`);
    lines.push(line);
    loss.push(Number(m[1]));
  }
  const split = splitByDifficulty(loss, opts);
  const dir = join(opts.runDir, "data");
  await Deno.mkdir(dir, { recursive: true });
  const write = async (path: string, idx: number[]) => {
    const tmp = `${path}.tmp-${Deno.pid}`;
    await Deno.writeTextFile(tmp, idx.map((i) => lines[i] + "\n").join(""));
    await Deno.rename(tmp, path);
  };
  const phase1Path = join(dir, `${opts.name}_phase1.jsonl`);
  const phase2Path = join(dir, `${opts.name}_phase2.jsonl`);
  await write(phase1Path, split.phase1);
  await write(phase2Path, split.phase2);
  return {
    phase1Path,
    phase2Path,
    phase1: split.phase1.length,
    phase2: split.phase2.length,
    replay: split.replay.length,
    threshold: split.threshold,
  };
}
