// `serve`: watch or inspect an existing run dir over HTTP (tails its events.jsonl; read-only).
import { join } from "node:path";
import { UserError } from "./errors.ts";
import { EVENTS_FILE, METRICS_FILE, tailEventLog } from "./progress.ts";
import { type ProgressServer, startServer } from "./server.ts";
import { pathExists } from "./run_dir.ts";

/** Test hooks of serveCommand. */
export interface ServeHooks {
  /** Stop serving when this aborts (besides SIGINT/SIGTERM). */
  signal?: AbortSignal;
  /** Called once the server listens. */
  onListen?: (server: ProgressServer) => void;
  /** Poll interval of the events.jsonl tail, ms (default 300). */
  pollMs?: number;
}

/** Parse a --port value: an integer 0-65535 (0: any free port). */
export function parsePort(raw: unknown): number {
  if (raw === undefined) return 0;
  const s = String(raw).trim();
  const n = Number(s);
  if (!/^\d+$/.test(s) || n > 65535) {
    throw new UserError(`bad --port '${raw}'`, "use 0 (any free port) or 1-65535");
  }
  return n;
}

/**
 * `deno task serve --run-dir DIR [--host H] [--port N] [--token T]`: serve the progress of the run
 * in DIR (live while another process trains into it) until SIGINT/SIGTERM. Returns the exit code.
 */
export async function serveCommand(
  values: Record<string, unknown>,
  positionals: string[],
  hooks: ServeHooks = {},
): Promise<number> {
  if (positionals.length > 1 || (positionals.length === 1 && values["run-dir"] !== undefined)) {
    throw new UserError(
      `unexpected argument '${positionals.at(-1)}'`,
      "usage: deno task serve --run-dir DIR [--host H] [--port N] [--token T]",
    );
  }
  const runDir = (values["run-dir"] as string | undefined) ?? positionals[0];
  if (!runDir) {
    throw new UserError("no run dir given", "deno task serve --run-dir DIR (a dir `train` wrote)");
  }
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(runDir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new UserError(`run dir ${runDir} does not exist`, "pass the --run-dir of a train run");
    }
    throw e;
  }
  if (!st.isDirectory) throw new UserError(`${runDir} is not a directory`);
  const port = parsePort(values.port);
  const host = (values.host as string | undefined) ?? "127.0.0.1";
  const token = (values.token as string | undefined) ?? Deno.env.get("FT_SERVER_TOKEN") ?? null;
  if (!(await pathExists(join(runDir, EVENTS_FILE)))) {
    const more = (await pathExists(join(runDir, METRICS_FILE)))
      ? ` (${METRICS_FILE} is still served at /metrics.jsonl)`
      : "";
    console.warn(`note: ${join(runDir, EVENTS_FILE)} does not exist yet; waiting for it${more}`);
  }

  const log = await tailEventLog(runDir, { pollMs: hooks.pollMs });
  let server: ProgressServer;
  try {
    server = startServer({ runDir, log, host, port, token });
  } catch (e) {
    await log.close();
    throw e;
  }
  console.log(
    `serving the progress of ${runDir} at ${server.url}` +
      (token ? " (send 'Authorization: Bearer <token>')" : "") + "; Ctrl-C stops",
  );
  hooks.onListen?.(server);

  await new Promise<void>((resolve) => {
    const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
    const stop = () => {
      for (const s of signals) Deno.removeSignalListener(s, stop);
      hooks.signal?.removeEventListener("abort", stop);
      resolve();
    };
    for (const s of signals) Deno.addSignalListener(s, stop);
    if (hooks.signal?.aborted) stop();
    else hooks.signal?.addEventListener("abort", stop, { once: true });
  });
  await server.close();
  await log.close();
  return 0;
}
