// `deno task train [PIPELINE.yaml] [--run-dir DIR] [--set key=value ...]`: run a pipeline end to end.
import { loadPipelineConfig, resolvedYaml } from "./config.ts";
import { UserError } from "./errors.ts";
import { PipelinePaused, runPipeline } from "./pipeline.ts";
import { writeRunReport } from "./report.ts";
import { SELECTION_FILE, type SelectionFile } from "./select.ts";
import { createEventLog } from "./progress.ts";
import { prepareRunDir } from "./run_dir.ts";
import { startServer } from "./server.ts";

const DEFAULT_PIPELINE = new URL("../examples/quickstart.yaml", import.meta.url).pathname;

/** The train command: validate, prepare the run dir, serve progress, run stages, report. */
export async function trainCommand(
  values: Record<string, unknown>,
  positionals: string[],
): Promise<number> {
  if (positionals.length > 1) {
    throw new UserError(
      `expected one pipeline file, got ${positionals.length}`,
      "deno task train FILE.yaml",
    );
  }
  const file = positionals[0] ?? DEFAULT_PIPELINE;
  const sets = [...((values.set as string[] | undefined) ?? [])];
  if (typeof values["run-dir"] === "string") sets.push(`run.dir=${values["run-dir"]}`);
  if (typeof values.port === "string") sets.push(`server.port=${values.port}`);
  const cfg = await loadPipelineConfig(file, sets);
  for (const w of cfg.source.warnings) console.warn(`warning: ${w}`);

  const run = await prepareRunDir(cfg.run.dir, resolvedYaml(cfg));
  const log = createEventLog(cfg.run.dir);
  let server: Awaited<ReturnType<typeof startServer>> | null = null;
  const t0 = performance.now();
  try {
    if (cfg.server.enabled) {
      server = startServer({
        runDir: cfg.run.dir,
        log,
        host: cfg.server.host,
        port: cfg.server.port,
        token: cfg.server.token,
        runId: cfg.run.name,
      });
      console.log(`progress: ${server.url} (curl ${server.url}progress)`);
    }
    console.log(`run dir: ${cfg.run.dir}`);
    log.emit({ type: "run", state: "running", run_id: cfg.run.name });
    const ctx = await runPipeline(cfg, log);
    log.emit({ type: "run", state: "finished", run_id: cfg.run.name });
    printSummary(ctx.summary.phases, (performance.now() - t0) / 1000, cfg.run.dir);
    await printSelection(cfg.run.dir);
    console.log(`report: ${await writeRunReport(cfg.run.dir)}`);
    return 0;
  } catch (e) {
    if (e instanceof PipelinePaused) {
      log.emit({ type: "run", state: "paused", run_id: cfg.run.name });
      console.log(`${e.message}; run the same command without train.stop_at_samples to continue`);
      await writeRunReport(cfg.run.dir);
      return 0;
    }
    log.emit(
      { type: "run", state: "failed", run_id: cfg.run.name, error: (e as Error).message } as never,
    );
    throw e;
  } finally {
    await server?.close();
    await log.close();
    await run.release();
  }
}

function printSummary(
  phases: {
    name: string;
    result: {
      firstLoss: number | null;
      lastLoss: number | null;
      steps: number;
      samplesSeen: number;
      tokensPerS: number;
      checkpoints: { dir: string }[];
    };
  }[],
  seconds: number,
  runDir: string,
): void {
  console.log(`\nsummary (${seconds.toFixed(1)} s, run dir ${runDir})`);
  for (const p of phases) {
    const r = p.result;
    console.log(
      `  ${p.name}: loss ${r.firstLoss?.toFixed(4) ?? "-"} → ${
        r.lastLoss?.toFixed(4) ?? "-"
      } over ${r.steps} steps, ` +
        `${r.samplesSeen} samples, ${r.tokensPerS.toFixed(0)} tokens/s; last checkpoint ${
          r.checkpoints.at(-1)?.dir ?? "-"
        }`,
    );
  }
}

/** Print the checkpoint selection of every phase (held-out scores, the choice, samples to reach it). */
async function printSelection(runDir: string): Promise<void> {
  let sel: SelectionFile;
  try {
    sel = JSON.parse(await Deno.readTextFile(`${runDir}/${SELECTION_FILE}`));
  } catch {
    return;
  }
  for (const [phase, p] of Object.entries(sel.phases)) {
    console.log(
      `  selection ${phase} (by ${p.primary}, ${
        p.higher_is_better ? "higher" : "lower"
      } is better):`,
    );
    for (const c of p.checkpoints) {
      const scores = Object.entries(c.scores).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(", ");
      const mark = c.dir === p.best.dir ? " <- chosen" : "";
      console.log(`    samples ${String(c.samples).padStart(7)}: ${scores}${mark}`);
    }
    console.log(`    best: ${p.best_path} (reached after ${p.samples_to_best} samples)`);
  }
}
