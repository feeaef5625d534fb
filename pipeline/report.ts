// Run and sweep reports: read a run dir's results (metrics, checkpoint scores), write report.md with tables and SVG plots.
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { readJsonIfExists, writeFileAtomic } from "./run_dir.ts";
import type { SelectionFile } from "./select.ts";
import { type Marker, plotSvg, type Series } from "./svg_plot.ts";
import type { SweepFile, SweepMember } from "./sweep.ts";
import type { MetricsRecord } from "./trainer.ts";

/** Name of the report each run dir and sweep dir gets. */
export const REPORT_FILE = "report.md";
/** Folder (inside the run or sweep dir) of the report's SVG plots. */
export const PLOTS_DIR = "plots";
/** Optimizer steps averaged into the train-loss fallback of the final score. */
export const TRAIN_LOSS_WINDOW = 5;

// ---------------------------------------------------------------------------------------------
// Reading a run dir

/** Every record of `<runDir>/metrics.jsonl` in file order ([] when absent; a torn line is skipped). */
export async function readMetrics(runDir: string): Promise<MetricsRecord[]> {
  return (await readJsonLines(join(runDir, "metrics.jsonl"))) as unknown as MetricsRecord[];
}

/** Every event of `<runDir>/events.jsonl` ([] when absent; a torn line is skipped). */
export async function readEvents(runDir: string): Promise<Record<string, unknown>[]> {
  return await readJsonLines(join(runDir, "events.jsonl"));
}

async function readJsonLines(path: string): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const out: Record<string, unknown>[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      // a torn last line from a killed process
    }
  }
  return out;
}

/** The run's `config.resolved.yaml` as plain data (not re-validated), or null when absent. */
export async function readRunConfig(runDir: string): Promise<Record<string, unknown> | null> {
  try {
    const v = parseYaml(await Deno.readTextFile(join(runDir, "config.resolved.yaml")));
    return v && typeof v === "object" ? v as Record<string, unknown> : null;
  } catch {
    return null;
  }
}

/** One scored checkpoint, from selection.json or `eval` events. */
export interface CheckpointScore {
  phase: string;
  dir: string;
  samples: number;
  scores: Record<string, number>;
}

/** Scores of every checkpoint (all phases, by samples seen) and where they came from. */
export async function readCheckpointScores(
  runDir: string,
): Promise<{ source: "selection" | "eval_events" | null; checkpoints: CheckpointScore[] }> {
  const sel = await readJsonIfExists<SelectionFile>(join(runDir, "selection.json")).catch(() =>
    null
  );
  if (sel?.version === 1 && sel.phases) {
    const list: CheckpointScore[] = [];
    for (const ph of Object.values(sel.phases)) {
      for (const c of ph.checkpoints) {
        list.push({ phase: ph.phase, dir: c.dir, samples: c.samples, scores: c.scores });
      }
    }
    if (list.length) return { source: "selection", checkpoints: sortCk(list) };
  }
  // The latest eval event of each checkpoint.
  const byDir = new Map<string, CheckpointScore>();
  for (const e of await readEvents(runDir)) {
    if (e.type !== "eval" || typeof e.checkpoint !== "string") continue;
    byDir.set(e.checkpoint, {
      phase: String(e.phase ?? ""),
      dir: e.checkpoint,
      samples: Number(e.samples ?? 0),
      scores: (e.scores ?? {}) as Record<string, number>,
    });
  }
  if (byDir.size) return { source: "eval_events", checkpoints: sortCk([...byDir.values()]) };
  return { source: null, checkpoints: [] };
}

function sortCk(list: CheckpointScore[]): CheckpointScore[] {
  return list.sort((a, b) => a.samples - b.samples || a.phase.localeCompare(b.phase));
}

/** An eval metric's name, kind and direction. */
export interface MetricInfo {
  name: string;
  kind: string;
  higher_is_better: boolean;
}

/** The eval metrics a resolved config declares (kind `loss` is lower-is-better) and its primary. */
export function metricInfo(
  cfg: Record<string, unknown> | null,
): { metrics: MetricInfo[]; primary: string | null } {
  const ev = (cfg?.eval ?? {}) as { metrics?: { name: string; kind: string }[]; primary?: string };
  const metrics = (ev.metrics ?? []).map((m) => ({
    name: m.name,
    kind: m.kind,
    higher_is_better: m.kind !== "loss",
  }));
  return { metrics, primary: ev.primary ?? metrics[0]?.name ?? null };
}

/** A metric's best value over a run and the samples seen when it was first reached. */
export interface PeakScore {
  score: number;
  samples: number;
  higher_is_better: boolean;
}

/** How a finished run scored: the deciding metric's peak, and every metric's peak. */
export interface FinalScore {
  /** The deciding metric (the primary eval metric, or "train_loss"). */
  metric: string;
  higher_is_better: boolean;
  score: number;
  /** Samples seen at the checkpoint with the peak (the earliest one on a tie). */
  samples_to_peak: number;
  /** "selection": selection.json; "eval_events": eval events; "train_loss": no checkpoint scores. */
  source: "selection" | "eval_events" | "train_loss";
  /** Peak of every metric (for the paper-style tables). */
  metrics: Record<string, PeakScore>;
}

/** The best value of `metric` over checkpoints (ties: fewer samples), or null when none is finite. */
export function peakOf(
  cks: readonly CheckpointScore[],
  metric: string,
  higher: boolean,
): PeakScore | null {
  let best: PeakScore | null = null;
  for (const c of cks) {
    const v = c.scores[metric];
    if (typeof v !== "number" || !Number.isFinite(v)) continue;
    if (
      best === null || (higher ? v > best.score : v < best.score) ||
      (v === best.score && c.samples < best.samples)
    ) best = { score: v, samples: c.samples, higher_is_better: higher };
  }
  return best;
}

/**
 * Train-loss fallback: the mean loss of the last TRAIN_LOSS_WINDOW steps (lower is better), and
 * the samples seen where the trailing TRAIN_LOSS_WINDOW-step mean was lowest.
 */
export function trainLossScore(recs: readonly MetricsRecord[]): PeakScore | null {
  const ok = recs.filter((r) => Number.isFinite(r.loss));
  if (!ok.length) return null;
  const w = Math.min(TRAIN_LOSS_WINDOW, ok.length);
  const mean = (end: number) => {
    let s = 0;
    for (let i = end - w; i < end; i++) s += ok[i].loss;
    return s / w;
  };
  let bestEnd = w;
  for (let end = w; end <= ok.length; end++) if (mean(end) < mean(bestEnd)) bestEnd = end;
  return { score: mean(ok.length), samples: ok[bestEnd - 1].samples_seen, higher_is_better: false };
}

/**
 * The final score of a run dir: the peak of `metric` (default: the config's primary eval metric)
 * over its scored checkpoints (selection.json, else eval events); when no checkpoint was scored,
 * the final train loss (see trainLossScore). Null when the run has no metrics at all.
 */
export async function finalScore(runDir: string, metric?: string): Promise<FinalScore | null> {
  const cfg = await readRunConfig(runDir);
  const info = metricInfo(cfg);
  const { source, checkpoints } = await readCheckpointScores(runDir);
  if (source && checkpoints.length) {
    const dirs = new Map(info.metrics.map((m) => [m.name, m.higher_is_better]));
    const names = [...new Set(checkpoints.flatMap((c) => Object.keys(c.scores)))];
    const metrics: Record<string, PeakScore> = {};
    for (const n of names) {
      const p = peakOf(checkpoints, n, dirs.get(n) ?? !/loss/i.test(n));
      if (p) metrics[n] = p;
    }
    const want = metric ?? info.primary ?? names[0];
    const p = metrics[want];
    if (p) {
      return {
        metric: want,
        higher_is_better: p.higher_is_better,
        score: p.score,
        samples_to_peak: p.samples,
        source,
        metrics,
      };
    }
  }
  const t = trainLossScore(await readMetrics(runDir));
  if (!t) return null;
  return {
    metric: "train_loss",
    higher_is_better: false,
    score: t.score,
    samples_to_peak: t.samples,
    source: "train_loss",
    metrics: { train_loss: t },
  };
}

// ---------------------------------------------------------------------------------------------
// Markdown helpers

/** A GitHub-flavoured markdown table; `align` per column: "l" (default) or "r". */
export function markdownTable(
  headers: string[],
  rows: (string | number)[][],
  align: ("l" | "r")[] = [],
): string {
  const cell = (v: string | number) => String(v).replace(/\|/g, "\\|").replace(/\n/g, " ");
  const lines = [
    `| ${headers.map(cell).join(" | ")} |`,
    `| ${headers.map((_, i) => (align[i] === "r" ? "---:" : "---")).join(" | ")} |`,
    ...rows.map((r) => `| ${r.map(cell).join(" | ")} |`),
  ];
  return lines.join("\n") + "\n";
}

/** A number for a table: 4 significant digits, "-" for null/NaN. */
export function fmt(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "-";
  if (v !== 0 && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(digits)));
}

/** An integer with thousands separators. */
export function fmtInt(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "-";
  return Math.round(v).toLocaleString("en-US");
}

function describeSource(source: FinalScore["source"] | null): string {
  switch (source) {
    case "selection":
      return "checkpoint scores from selection.json";
    case "eval_events":
      return "checkpoint scores from the eval events of events.jsonl";
    default:
      return `no checkpoint was scored (no selection.json): the final score is the train loss ` +
        `averaged over the last ${TRAIN_LOSS_WINDOW} optimizer steps (lower is better)`;
  }
}

// ---------------------------------------------------------------------------------------------
// Run report

function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const it of items) {
    const k = key(it);
    if (!m.has(k)) m.set(k, []);
    m.get(k)!.push(it);
  }
  return m;
}

function mean(v: number[]): number {
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
}

function lastRunState(events: Record<string, unknown>[]): string {
  for (let i = events.length - 1; i >= 0; i--) {
    if (events[i].type === "run" && typeof events[i].state === "string") {
      return events[i].state as string;
    }
  }
  return "unknown";
}

/** Options of {@link writeRunReport}. */
export interface RunReportOptions {
  /** Title (default: the run name from config.resolved.yaml). */
  title?: string;
  /** Extra markdown placed after the title (e.g. a sweep member's probe figures). */
  preface?: string;
  /** Vertical markers on the training plots (e.g. the end of a probe window). */
  markers?: Marker[];
}

async function writePlot(dir: string, name: string, svg: string): Promise<string> {
  await writeFileAtomic(join(dir, PLOTS_DIR, name), svg);
  return `${PLOTS_DIR}/${name}`;
}

/** A safe file-name fragment for a metric or member name. */
function fileSafe(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]/g, "_");
}

/**
 * Write `<runDir>/report.md` and its SVG plots under `<runDir>/plots/`: the configuration, a table
 * per phase (steps, samples, losses, gradient norm, throughput), loss / gradient norm / lr against
 * samples seen, every checkpoint's scores (table and one plot per metric) and the final score.
 * Returns the report's path. Works on a finished, paused or failed run.
 */
export async function writeRunReport(runDir: string, o: RunReportOptions = {}): Promise<string> {
  const cfg = await readRunConfig(runDir);
  const recs = await readMetrics(runDir);
  const events = await readEvents(runDir);
  const { source, checkpoints } = await readCheckpointScores(runDir);
  const final = await finalScore(runDir);
  const runName = String((cfg?.run as { name?: string } | undefined)?.name ?? "run");
  const md: string[] = [];
  md.push(`# ${o.title ?? `Run report: ${runName}`}\n`);
  md.push(
    `Run dir \`${runDir}\`; state **${lastRunState(events)}**; ` +
      `${recs.length} optimizer steps recorded. Generated ${new Date().toISOString()}.\n`,
  );
  if (o.preface) md.push(o.preface.trimEnd() + "\n");

  // Configuration.
  if (cfg) {
    const t = (cfg.train ?? {}) as Record<string, unknown>;
    const model = (cfg.model ?? {}) as { path?: string | null; init?: { preset?: string } | null };
    const rows: (string | number)[][] = [
      ["model", model.path ?? `init: ${model.init?.preset ?? "?"}`],
      ["preset", String(cfg.preset ?? "-")],
    ];
    for (
      const k of [
        "strategy",
        "effective_batch_size",
        "lr",
        "schedule",
        "warmup_steps",
        "warmup_ratio",
        "epochs",
        "max_steps",
        "max_samples",
        "max_grad_norm",
      ]
    ) rows.push([`train.${k}`, String(t[k] ?? "-")]);
    rows.push(["run.seed", String((cfg.run as { seed?: number } | undefined)?.seed ?? "-")]);
    md.push("## Configuration\n");
    md.push(markdownTable(["key", "value"], rows));
  }

  // Training.
  md.push("## Training\n");
  if (!recs.length) md.push("No optimizer step was recorded.\n");
  else {
    const phases = groupBy(recs, (r) => r.phase);
    const rows = [...phases].map(([ph, rs]) => {
      const last = rs.at(-1)!;
      return [
        ph,
        rs.length,
        fmtInt(last.samples_seen),
        fmtInt(last.tokens_seen),
        fmt(rs[0].loss),
        fmt(last.loss),
        fmt(Math.min(...rs.map((r) => r.loss))),
        fmt(mean(rs.filter((r) => !r.skipped).map((r) => r.gradnorm))), // no overflowed steps
        fmt(last.lr),
        fmtInt(mean(rs.map((r) => r.tokens_per_s))),
        fmt(last.elapsed_s, 3),
      ];
    });
    md.push(markdownTable(
      [
        "phase",
        "steps",
        "samples seen",
        "tokens seen",
        "first loss",
        "last loss",
        "min loss",
        "mean grad norm",
        "last lr",
        "tokens/s",
        "phase time (s)",
      ],
      rows,
      ["l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"],
    ));
    const series = (y: (r: MetricsRecord) => number): Series[] =>
      [...phases].map(([ph, rs]) => ({
        name: ph,
        x: rs.map((r) => r.samples_seen),
        y: rs.map(y),
      }));
    const markers = o.markers ?? [];
    const common = { xLabel: "samples seen", markers };
    const loss = await writePlot(
      runDir,
      "loss.svg",
      plotSvg(series((r) => r.loss), { ...common, title: "training loss", yLabel: "loss" }),
    );
    const gn = await writePlot(
      runDir,
      "gradnorm.svg",
      plotSvg(series((r) => r.gradnorm), {
        ...common,
        title: "gradient norm (before clipping)",
        yLabel: "grad norm",
      }),
    );
    const lr = await writePlot(
      runDir,
      "lr.svg",
      plotSvg(series((r) => r.lr), { ...common, title: "learning rate", yLabel: "lr" }),
    );
    md.push(`![training loss](${loss})\n\n![gradient norm](${gn})\n\n![learning rate](${lr})\n`);
  }

  // Checkpoint scores.
  md.push("## Checkpoints\n");
  const info = metricInfo(cfg);
  if (!checkpoints.length) {
    md.push(
      "No checkpoint was scored (no selection.json and no eval events: eval.metrics is empty, or " +
        "evaluation has not run).\n",
    );
  } else {
    const names = [...new Set(checkpoints.flatMap((c) => Object.keys(c.scores)))];
    const higher = (n: string) =>
      info.metrics.find((m) => m.name === n)?.higher_is_better ?? !/loss/i.test(n);
    const peaks = new Map(names.map((n) => [n, peakOf(checkpoints, n, higher(n))]));
    md.push(
      `Scores of every checkpoint (${describeSource(source)}); **bold**: each metric's best.\n`,
    );
    md.push(markdownTable(
      ["phase", "checkpoint", "samples", ...names.map((n) => `${n} (${higher(n) ? "↑" : "↓"})`)],
      checkpoints.map((c) => [
        c.phase,
        c.dir.split("/").at(-1) ?? c.dir,
        fmtInt(c.samples),
        ...names.map((n) => {
          const p = peaks.get(n);
          const v = c.scores[n];
          const s = fmt(v);
          return p && v === p.score && c.samples === p.samples ? `**${s}**` : s;
        }),
      ]),
      ["l", "l", "r", ...names.map(() => "r" as const)],
    ));
    for (const n of names) {
      const byPhase = groupBy(checkpoints.filter((c) => n in c.scores), (c) => c.phase);
      const svg = plotSvg(
        [...byPhase].map(([ph, cs]) => ({
          name: ph,
          x: cs.map((c) => c.samples),
          y: cs.map((c) => c.scores[n]),
          mode: "both" as const,
        })),
        { title: `${n} per checkpoint`, xLabel: "samples seen", yLabel: n },
      );
      const p = await writePlot(runDir, `score_${fileSafe(n)}.svg`, svg);
      md.push(`![${n} per checkpoint](${p})\n`);
    }
  }

  // Final score.
  md.push("## Final score\n");
  if (!final) md.push("None: the run recorded no metrics.\n");
  else {
    md.push(
      `**${final.metric}** ${fmt(final.score)} (${
        final.higher_is_better ? "higher" : "lower"
      } is better), first reached after ${fmtInt(final.samples_to_peak)} samples; ` +
        `${describeSource(final.source)}.\n`,
    );
  }
  const path = join(runDir, REPORT_FILE);
  await writeFileAtomic(path, md.join("\n"));
  return path;
}

// ---------------------------------------------------------------------------------------------
// Sweep report

/** One comparison table: rows are members, columns each metric's peak score and samples to peak. */
export function comparisonTable(
  members: readonly SweepMember[],
  rows: { member: string; label: string }[],
): string {
  const found = rows.map((r) => ({ ...r, m: members.find((m) => m.name === r.member) ?? null }));
  const names = [
    ...new Set(found.flatMap((r) => Object.keys(r.m?.final?.metrics ?? {}))),
  ];
  if (!names.length) {
    return markdownTable(
      ["configuration", "status"],
      found.map((r) => [r.label, r.m?.status ?? "missing"]),
    );
  }
  const best = new Map<string, { score: number; samples: number }>();
  for (const n of names) {
    const ps = found.map((r) => r.m?.final?.metrics[n]).filter((p): p is PeakScore => !!p);
    if (!ps.length) continue;
    const hib = ps[0].higher_is_better;
    best.set(n, {
      score: hib ? Math.max(...ps.map((p) => p.score)) : Math.min(...ps.map((p) => p.score)),
      samples: Math.min(...ps.map((p) => p.samples)),
    });
  }
  const headers = ["configuration"];
  for (const n of names) {
    const hib = found.find((r) => r.m?.final?.metrics[n])?.m?.final?.metrics[n].higher_is_better;
    headers.push(`${n} ${hib ? "↑" : "↓"}`, `${n} samples`);
  }
  const body = found.map((r) => {
    const row: string[] = [r.label];
    for (const n of names) {
      const p = r.m?.final?.metrics[n];
      const b = best.get(n);
      if (!p) {
        const why = !r.m
          ? "missing"
          : r.m.status === "failed"
          ? "failed"
          : r.m.decision === "stop"
          ? "stopped after probe"
          : r.m.status === "finished"
          ? "-"
          : "pending";
        row.push(why, "-");
        continue;
      }
      row.push(
        b && p.score === b.score ? `**${fmt(p.score)}**` : fmt(p.score),
        b && p.samples === b.samples ? `*${fmtInt(p.samples)}*` : fmtInt(p.samples),
      );
    }
    return row;
  });
  return markdownTable(headers, body, ["l", ...names.flatMap(() => ["r", "r"] as ("l" | "r")[])]);
}

/** The members table of a sweep (printed by the command and written into the sweep report). */
export function membersTable(s: SweepFile): string {
  const setText = (m: SweepMember) =>
    Object.entries(m.set).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ") || "(base)";
  const finalHeader = s.validation.final_metric
    ? `final ${s.validation.final_metric} ${s.validation.higher_is_better ? "↑" : "↓"}`
    : "final";
  return markdownTable(
    [
      "member",
      "overrides",
      "probe loss",
      "probe grad norm",
      "probe score",
      "rank",
      "decision",
      "status",
      finalHeader,
      "final rank",
      "samples to peak",
      "samples run",
    ],
    s.members.map((m) => [
      m.name,
      setText(m),
      fmt(m.probe?.mean_loss),
      fmt(m.probe?.mean_gradnorm),
      fmt(m.probe?.score, 3),
      m.rank ?? "-",
      m.decision ?? "-",
      m.status,
      fmt(m.final?.score),
      m.final_rank ?? "-",
      fmtInt(m.final?.samples_to_peak),
      fmtInt(m.ran?.samples),
    ]),
    ["l", "l", "r", "r", "r", "r", "l", "l", "r", "r", "r", "r"],
  );
}

/** The validation and compute-saved lines of a sweep (markdown). */
export function sweepSummary(s: SweepFile): string {
  const v = s.validation, c = s.compute;
  const lines: string[] = [];
  const rho = (x: number | null) => (x === null ? "n/a" : x.toFixed(3));
  if (v.n >= 2) {
    lines.push(
      `- Probe ranking vs final ranking: **Spearman ρ = ${rho(v.spearman)}** over ${v.n} members ` +
        `that ran to the end (final score: ${v.final_metric}, ${
          v.higher_is_better ? "higher" : "lower"
        } is better; ρ = 1: the probe ranked them exactly as they finished).`,
    );
    lines.push(
      `- Each signal alone: ρ(−probe grad norm, final) = ${rho(v.spearman_gradnorm)}; ` +
        `ρ(probe loss, final) = ${rho(v.spearman_loss)} (the paper expects both > 0).`,
    );
  } else {
    lines.push(
      `- Probe ranking vs final ranking: not measurable (${v.n} member(s) ran to the end; ` +
        `it needs 2 or more — set \`validate: true\` to run every member to the end and measure the rule).`,
    );
  }
  if (v.n < 4 && v.n >= 2) {
    lines.push(`- With ${v.n} members ρ can only take a few values: treat it as anecdotal.`);
  }
  if (v.best_kept !== null) {
    lines.push(
      `- The final best member (${v.best_final}) ${
        v.best_kept ? "was" : "was **not**"
      } among the top ${s.spec.keep_k} of the probe ranking.`,
    );
  }
  if (v.note) lines.push(`- ${v.note}`);
  lines.push(
    `- Compute: ${fmtInt(c.samples_run)} of ${fmtInt(c.samples_all)} samples run ` +
      `(${fmtInt(c.tokens_run)} of ${
        fmtInt(c.tokens_all)
      } tokens); stopping after the probe saved ` +
      `**${(100 * c.saved_fraction).toFixed(1)}%** of the samples ` +
      `(${
        (100 * c.saved_tokens_fraction).toFixed(1)
      }% of the tokens) versus running every member ` +
      `to the end` +
      (c.validate
        ? ` — would have saved: every member ran to the end (${
          s.spec.validate ? "validate: true" : "keep covers every member"
        }), so nothing was actually saved.`
        : "."),
  );
  return lines.join("\n") + "\n";
}

/**
 * Write `<sweepDir>/report.md` and `<sweepDir>/plots/*.svg` for a sweep: the members table, the
 * score formula, validation and compute figures, comparison tables, and every member's loss,
 * gradient norm, lr and per-checkpoint primary score on one plot each. Member metrics are read
 * from `<sweepDir>/members/<name>/`.
 */
export async function writeSweepReport(sweepDir: string, s: SweepFile): Promise<string> {
  const md: string[] = [];
  md.push(`# Sweep report: ${s.name}\n`);
  md.push(
    `State **${s.state}**; ${s.members.length} members; probe budget ${
      fmtInt(s.spec.probe.samples)
    } samples; keep ${s.spec.keep}. Generated ${new Date().toISOString()}.\n`,
  );
  md.push("## Members\n");
  md.push(membersTable(s));
  md.push(`Probe score (higher = predicted better): ${s.score_formula}\n`);
  md.push("## Did the early dynamics predict the outcome?\n");
  md.push(sweepSummary(s));
  const tables = s.spec.tables ?? [];
  if (tables.length) {
    md.push("## Comparisons\n");
    md.push(
      "Shaped like the paper's Tables 2–4: each metric's best checkpoint score and the samples " +
        "seen to reach it; **bold**: best score, *italic*: fewest samples.\n",
    );
    for (const t of tables) {
      md.push(`### ${t.title}\n`);
      md.push(comparisonTable(s.members, t.rows));
    }
  }

  // Plots: every member on one plot.
  const recs = new Map<string, MetricsRecord[]>();
  for (const m of s.members) recs.set(m.name, await readMetrics(join(sweepDir, "members", m.name)));
  const probeMarker: Marker[] = [{ x: s.spec.probe.samples, label: "probe" }];
  const lines = (y: (r: MetricsRecord) => number): Series[] =>
    s.members.map((m) => ({
      name: m.name,
      x: (recs.get(m.name) ?? []).map((r) => r.samples_seen),
      y: (recs.get(m.name) ?? []).map(y),
      dashed: m.decision === "stop",
    }));
  const common = { xLabel: "samples seen", markers: probeMarker };
  const plots: [string, string][] = [];
  plots.push([
    "loss",
    await writePlot(
      sweepDir,
      "loss.svg",
      plotSvg(lines((r) => r.loss), {
        ...common,
        title: "training loss, all members",
        yLabel: "loss",
      }),
    ),
  ]);
  plots.push([
    "gradient norm",
    await writePlot(
      sweepDir,
      "gradnorm.svg",
      plotSvg(lines((r) => r.gradnorm), {
        ...common,
        title: "gradient norm, all members",
        yLabel: "grad norm",
      }),
    ),
  ]);
  plots.push([
    "learning rate",
    await writePlot(
      sweepDir,
      "lr.svg",
      plotSvg(lines((r) => r.lr), { ...common, title: "learning rate, all members", yLabel: "lr" }),
    ),
  ]);
  // Per-checkpoint primary score of every member.
  const metric = s.validation.final_metric;
  if (metric && metric !== "train_loss") {
    const series: Series[] = [];
    for (const m of s.members) {
      const { checkpoints } = await readCheckpointScores(join(sweepDir, "members", m.name));
      const cs = checkpoints.filter((c) => metric in c.scores);
      if (cs.length) {
        series.push({
          name: m.name,
          x: cs.map((c) => c.samples),
          y: cs.map((c) => c.scores[metric]),
          mode: "both",
        });
      }
    }
    plots.push([
      `${metric} per checkpoint`,
      await writePlot(
        sweepDir,
        `score_${fileSafe(metric)}.svg`,
        plotSvg(series, {
          title: `${metric} per checkpoint, all members`,
          xLabel: "samples seen",
          yLabel: metric,
        }),
      ),
    ]);
  }
  // Probe score against final score.
  const both = s.members.filter((m) => m.probe?.score != null && m.final);
  if (both.length) {
    plots.push([
      "probe score vs final score",
      await writePlot(
        sweepDir,
        "probe_vs_final.svg",
        plotSvg(
          both.map((m) => ({
            name: m.name,
            x: [m.probe!.score!],
            y: [m.final!.score],
            mode: "points" as const,
            labels: [m.name],
          })),
          {
            title: "probe score (early dynamics) vs final score",
            xLabel: "probe score (higher: predicted better)",
            yLabel: `final ${metric ?? "score"} (${
              s.validation.higher_is_better ? "higher" : "lower"
            } is better)`,
          },
        ),
      ),
    ]);
  }
  md.push("## Plots\n");
  md.push(
    (s.compute.validate
      ? "Dashed: members the probe ranking would stop (every member ran to the end here). "
      : "Dashed: members stopped after the probe. ") +
      "The dotted vertical line marks the probe budget.\n",
  );
  for (const [alt, p] of plots) md.push(`![${alt}](${p})\n`);
  md.push("## Member reports\n");
  md.push(
    s.members.map((m) => `- [${m.name}](members/${m.name}/${REPORT_FILE}) — ${m.status}`).join(
      "\n",
    ) + "\n",
  );
  const path = join(sweepDir, REPORT_FILE);
  await writeFileAtomic(path, md.join("\n"));
  return path;
}
