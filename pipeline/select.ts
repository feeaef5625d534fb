// Checkpoint selection: score every checkpoint of a phase on the eval metrics, pick the best by the primary one, expose it.
import { dirname, join, relative, resolve } from "node:path";
import {
  Evaluator,
  type EvaluatorOptions,
  higherIsBetter,
  type MetricResult,
  type MetricSpec,
} from "../eval/evaluator.ts";
import type { Gpu } from "../kernels/runtime.ts";
import type { EvalConfig, MetricConfig } from "./config.ts";
import { UserError } from "./errors.ts";
import { readJsonIfExists, writeJsonAtomic } from "./run_dir.ts";
import { fileStamp, hashJson, type Stage, type StageContext } from "./stage.ts";

/** A checkpoint to consider (the trainer's `checkpoints/<phase>/index.json` entries). */
export interface CheckpointRef {
  dir: string;
  step: number;
  /** Samples seen when it was saved (counted across phases). */
  samples: number;
}

/** A checkpoint with its scores (metric name → score). */
export interface ScoredCheckpoint extends CheckpointRef {
  scores: Record<string, number>;
}

/** The selection of one phase, as written into selection.json. */
export interface PhaseSelection {
  phase: string;
  primary: string;
  higher_is_better: boolean;
  /** Every checkpoint in order of samples seen, with every metric's score. */
  checkpoints: ScoredCheckpoint[];
  best: ScoredCheckpoint;
  /** Samples seen to reach the best score (the earliest checkpoint that has it). */
  samples_to_best: number;
  /** `<run_dir>/checkpoints/<phase>/best` (a symlink, or a copy where symlinks fail). */
  best_path: string;
  best_mode: "symlink" | "copy";
  time: string;
}

/** Contents of `<run_dir>/selection.json`. */
export interface SelectionFile {
  version: 1;
  /** The phase selected last (what `checkpoints/best` points at). */
  latest: string;
  phases: Record<string, PhaseSelection>;
}

/** Name of the selection file in a run dir. */
export const SELECTION_FILE = "selection.json";
/** Per-checkpoint cache of scores (reused when the metrics and their data are unchanged). */
export const EVAL_CACHE_FILE = "eval.json";

/** A run-event sink (the pipeline's event log). */
export interface EventSink {
  emit(event: { type: string; [k: string]: unknown }): void;
}

/** The metric specs of an `eval:` config. */
export function metricSpecs(metrics: readonly MetricConfig[]): MetricSpec[] {
  return metrics.map((m) => ({
    name: m.name,
    kind: m.kind,
    data: m.data,
    shots: m.shots,
    limit: m.limit,
    maxTokens: m.max_tokens,
    mcScore: m.mc_score,
  }));
}

/**
 * The best checkpoint by `primary`: the highest score (lowest for a loss), ties going to the one
 * that saw fewer samples. Checkpoints without a finite primary score never win.
 */
export function pickBest(
  list: readonly ScoredCheckpoint[],
  primary: string,
  higher: boolean,
): ScoredCheckpoint {
  let best: ScoredCheckpoint | null = null;
  for (const c of list) {
    const v = c.scores[primary];
    if (typeof v !== "number" || !Number.isFinite(v)) continue;
    if (best === null) {
      best = c;
      continue;
    }
    const b = best.scores[primary];
    const better = higher ? v > b : v < b;
    if (better || (v === b && c.samples < best.samples)) best = c;
  }
  if (!best) {
    throw new UserError(`no checkpoint has a finite score for the primary metric '${primary}'`);
  }
  return best;
}

/** The checkpoints the trainer recorded for a phase (`checkpoints/<phase>/index.json`). */
export async function phaseCheckpoints(runDir: string, phase: string): Promise<CheckpointRef[]> {
  const path = join(runDir, "checkpoints", phase, "index.json");
  const list = await readJsonIfExists<CheckpointRef[]>(path);
  if (!list || list.length === 0) {
    throw new UserError(
      `no checkpoints recorded for phase '${phase}' (${path})`,
      "train the phase first",
    );
  }
  return list.map((c) => ({ dir: c.dir, step: c.step, samples: c.samples }));
}

/** Everything a metric's result depends on besides the weights: its spec and its data file. */
async function metricsKey(metrics: MetricSpec[], extra: unknown): Promise<string> {
  const stamps = await Promise.all(metrics.map((m) => fileStamp(m.data)));
  return await hashJson({ metrics, stamps, extra });
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Remove a file, symlink or directory at `path` if present. */
async function removeAny(path: string): Promise<void> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch {
    return;
  }
  await Deno.remove(path, { recursive: st.isDirectory && !st.isSymlink });
}

async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    const a = join(from, e.name), b = join(to, e.name);
    if (e.isDirectory) await copyDir(a, b);
    else await Deno.copyFile(a, b);
  }
}

/**
 * Make `link` name `target`: a relative symlink, or a full copy where symlinks fail (e.g. on
 * Windows without the privilege). Replaces whatever was there.
 */
export async function exposeDir(link: string, target: string): Promise<"symlink" | "copy"> {
  await Deno.mkdir(dirname(link), { recursive: true });
  await removeAny(link);
  try {
    await Deno.symlink(relative(dirname(link), resolve(target)), link, { type: "dir" });
    return "symlink";
  } catch {
    const tmp = `${link}.tmp-${Deno.pid}`;
    await removeAny(tmp);
    await copyDir(target, tmp);
    await Deno.rename(tmp, link);
    return "copy";
  }
}

/** Options of {@link selectCheckpoint}. */
export interface SelectOptions {
  runDir: string;
  phase: string;
  metrics: MetricSpec[];
  /** The metric that decides (a name in `metrics`). */
  primary: string;
  /** Default: the trainer's index of the phase. */
  checkpoints?: CheckpointRef[];
  /** Scores one checkpoint on every metric; default: an Evaluator on `gpu`. */
  score?: (dir: string) => Promise<Record<string, MetricResult>>;
  gpu?: Gpu;
  evaluator?: EvaluatorOptions;
  events?: EventSink;
  log?: (line: string) => void;
}

/**
 * Evaluate every checkpoint of a phase (scores cached in `<checkpoint>/eval.json`), pick the best
 * by the primary metric (ties: fewer samples), write `<run_dir>/selection.json` and expose the
 * choice as `<run_dir>/checkpoints/<phase>/best` and `<run_dir>/checkpoints/best` (symlinks, or
 * copies where symlinks fail), each with a `best.json` beside it. Emits `eval` events per
 * checkpoint and one `selection` event.
 */
export async function selectCheckpoint(o: SelectOptions): Promise<PhaseSelection> {
  const metric = o.metrics.find((m) => m.name === o.primary);
  if (!metric) {
    throw new UserError(
      `primary metric '${o.primary}' is not among the eval metrics`,
      o.metrics.length ? `one of ${o.metrics.map((m) => m.name).join(", ")}` : "add eval.metrics",
    );
  }
  const log = o.log ?? (() => {});
  const refs = (o.checkpoints ?? (await phaseCheckpoints(o.runDir, o.phase)))
    .slice()
    .sort((a, b) => a.samples - b.samples);
  const key = await metricsKey(o.metrics, o.evaluator ?? null);
  let evaluator: Evaluator | null = null;
  const score = o.score ?? (async (dir: string) => {
    if (!o.gpu) throw new Error("selectCheckpoint needs a gpu or a score function");
    if (evaluator) await evaluator.load(dir);
    else evaluator = await Evaluator.open(o.gpu, dir, o.evaluator);
    const out: Record<string, MetricResult> = {};
    for (const m of o.metrics) out[m.name] = await evaluator.evaluate(m);
    return out;
  });
  const scored: ScoredCheckpoint[] = [];
  try {
    for (const c of refs) {
      const cachePath = join(c.dir, EVAL_CACHE_FILE);
      const cached = await readJsonIfExists<{ key: string; results: Record<string, MetricResult> }>(
        cachePath,
      ).catch(() => null);
      let results: Record<string, MetricResult>;
      if (cached?.key === key) results = cached.results;
      else {
        results = await score(c.dir);
        await writeJsonAtomic(cachePath, { key, results });
      }
      const scores: Record<string, number> = {};
      for (const m of o.metrics) {
        const r = results[m.name];
        if (!r) throw new Error(`scorer returned no result for metric ${m.name}`);
        scores[m.name] = r.score;
      }
      scored.push({ ...c, scores });
      log(
        `select ${o.phase}: ${c.dir} (${c.samples} samples): ` +
          Object.entries(scores).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(", "),
      );
      o.events?.emit({
        type: "eval",
        checkpoint: c.dir,
        phase: o.phase,
        samples: c.samples,
        scores,
      });
    }
  } finally {
    (evaluator as Evaluator | null)?.destroy();
  }
  const higher = higherIsBetter(metric.kind);
  const best = pickBest(scored, o.primary, higher);
  const phaseLink = join(o.runDir, "checkpoints", o.phase, "best");
  const mode = await exposeDir(phaseLink, best.dir);
  const sel: PhaseSelection = {
    phase: o.phase,
    primary: o.primary,
    higher_is_better: higher,
    checkpoints: scored,
    best,
    samples_to_best: best.samples,
    best_path: phaseLink,
    best_mode: mode,
    time: new Date().toISOString(),
  };
  const bestJson = {
    phase: o.phase,
    dir: best.dir,
    step: best.step,
    samples: best.samples,
    primary: o.primary,
    score: best.scores[o.primary],
    scores: best.scores,
  };
  await writeJsonAtomic(join(o.runDir, "checkpoints", o.phase, "best.json"), bestJson);
  await exposeDir(join(o.runDir, "checkpoints", "best"), best.dir);
  await writeJsonAtomic(join(o.runDir, "checkpoints", "best.json"), bestJson);
  const path = join(o.runDir, SELECTION_FILE);
  const prev = await readJsonIfExists<SelectionFile>(path).catch(() => null);
  const file: SelectionFile = {
    version: 1,
    latest: o.phase,
    phases: { ...(prev?.version === 1 ? prev.phases : {}), [o.phase]: sel },
  };
  await writeJsonAtomic(path, file);
  log(
    `select ${o.phase}: best ${best.dir} (${o.primary} ${best.scores[o.primary].toFixed(4)}, ` +
      `${best.samples} samples)`,
  );
  o.events?.emit({
    type: "selection",
    phase: o.phase,
    primary: o.primary,
    best: { dir: best.dir, samples: best.samples, scores: best.scores },
  });
  return sel;
}

/** What the selection stage needs from the pipeline, per run. */
export interface SelectStageArgs {
  eval: Pick<EvalConfig, "metrics" | "primary">;
  /** Default: the trainer's index of the phase. */
  checkpoints?: CheckpointRef[];
  gpu?: () => Promise<Gpu>;
  evaluator?: EvaluatorOptions;
  events?: EventSink;
  log?: (line: string) => void;
  /** Tests: score without a GPU. */
  score?: SelectOptions["score"];
}

/** Outputs of the selection stage (recorded, handed to later stages). */
export interface SelectStageOutputs {
  /** The chosen checkpoint's directory: the next phase starts from it. */
  best: string;
  samples: number;
  scores: Record<string, number>;
  link: string;
}

/**
 * The `select-<phase>` stage: re-runs when the phase's checkpoint index, the metrics or their data
 * change; its outputs' `best` is the directory the next phase starts from.
 */
export function selectStage<C extends StageContext>(
  phase: string,
  args: (ctx: C) => SelectStageArgs | Promise<SelectStageArgs>,
): Stage<C> {
  return {
    name: `select-${phase}`,
    inputs: async (ctx) => {
      const a = await args(ctx);
      const metrics = metricSpecs(a.eval.metrics);
      return {
        phase,
        index: await fileStamp(join(ctx.runDir, "checkpoints", phase, "index.json")),
        checkpoints: a.checkpoints ?? null,
        metrics,
        data: await Promise.all(metrics.map((m) => fileStamp(m.data))),
        primary: a.eval.primary,
        evaluator: a.evaluator ?? null,
      };
    },
    valid: async (_ctx, rec) => {
      const out = rec.outputs as SelectStageOutputs | null;
      return !!out && (await exists(out.best)) && (await exists(out.link));
    },
    run: async (ctx): Promise<SelectStageOutputs> => {
      const a = await args(ctx);
      const primary = a.eval.primary ?? a.eval.metrics[0]?.name;
      if (!primary) throw new UserError("checkpoint selection needs eval.metrics");
      const sel = await selectCheckpoint({
        runDir: ctx.runDir,
        phase,
        metrics: metricSpecs(a.eval.metrics),
        primary,
        checkpoints: a.checkpoints,
        score: a.score,
        gpu: a.gpu ? await a.gpu() : undefined,
        evaluator: a.evaluator,
        events: a.events,
        log: a.log,
      });
      return {
        best: sel.best.dir,
        samples: sel.best.samples,
        scores: sel.best.scores,
        link: sel.best_path,
      };
    },
  };
}
