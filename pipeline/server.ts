// Progress server (hono on Deno.serve): /progress JSON, /events SSE, /metrics Prometheus, the live page.
import { Hono } from "hono";
import type { Context, MiddlewareHandler } from "hono";
import { Counter, Gauge, Registry } from "prom-client";
import { basename, join, resolve } from "node:path";
import { UserError } from "./errors.ts";
import {
  type EventLog,
  followLog,
  METRICS_FILE,
  type ProgressSnapshot,
  type RunEvent,
} from "./progress.ts";

/** Options of startServer. */
export interface ServerOptions {
  /** The run dir (metrics.jsonl is served from it; its name is the fallback run id). */
  runDir: string;
  /** Where events come from: createEventLog (train) or tailEventLog (serve). */
  log: EventLog;
  /** Address to bind (default 127.0.0.1). Any non-loopback address requires a token. */
  host?: string;
  /** Port (default 0: a free port, see the returned `port`). */
  port?: number;
  /** Bearer token; defaults to env FT_SERVER_TOKEN. When set, every request must carry it. */
  token?: string | null;
  /** Run id until a run event names one (default: the run dir's name). */
  runId?: string;
  /** Seconds between SSE keep-alive comments (default 15). */
  keepAliveS?: number;
}

/** A running progress server. */
export interface ProgressServer {
  /** The bound port. */
  port: number;
  /** Base URL with a trailing slash, e.g. http://127.0.0.1:8321/. */
  url: string;
  /** The hono app (fetch handler), e.g. for in-process requests. */
  app: Hono;
  /** The /progress snapshot now. */
  snapshot(): ProgressSnapshot;
  /** SSE subscribers connected now. */
  sseClients(): number;
  /** End every SSE stream, stop listening and wait for in-flight requests. Safe to call twice. */
  close(): Promise<void>;
}

/** Whether `host` is a loopback address (or the name localhost). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h) ||
    h.endsWith(".localhost");
}

// ---------------------------------------------------------------------------------------------
// Page assets: pipeline/page/* and uPlot from the npm dependency cache (no CDN).

/** Keeps npm:uplot in the module graph so import.meta.resolve finds its files; never called. */
const _uplotInGraph = () => import("uplot");

interface Asset {
  body: Uint8Array<ArrayBuffer>;
  type: string;
  cache: string;
}

let assetsPromise: Promise<Map<string, Asset>> | null = null;

async function fileOf(specifier: string): Promise<Uint8Array<ArrayBuffer>> {
  let url = import.meta.resolve(specifier);
  if (!url.startsWith("file:")) {
    await _uplotInGraph(); // not resolvable yet (e.g. not in the graph): load it, then retry
    url = import.meta.resolve(specifier);
  }
  if (!url.startsWith("file:")) throw new Error(`cannot locate ${specifier} on disk (${url})`);
  return await Deno.readFile(new URL(url));
}

function loadAssets(): Promise<Map<string, Asset>> {
  assetsPromise ??= (async () => {
    const page = (name: string) => Deno.readFile(new URL(`./page/${name}`, import.meta.url));
    const noCache = "no-cache";
    const year = "public, max-age=31536000, immutable";
    const m = new Map<string, Asset>();
    m.set("/", {
      body: await page("index.html"),
      type: "text/html; charset=utf-8",
      cache: noCache,
    });
    m.set("/assets/app.js", {
      body: await page("app.js"),
      type: "text/javascript; charset=utf-8",
      cache: noCache,
    });
    m.set("/assets/style.css", {
      body: await page("style.css"),
      type: "text/css; charset=utf-8",
      cache: noCache,
    });
    m.set("/assets/uplot-1.js", {
      body: await fileOf("uplot/dist/uPlot.iife.min.js"),
      type: "text/javascript; charset=utf-8",
      cache: year,
    });
    m.set("/assets/uplot-1.css", {
      body: await fileOf("uplot/dist/uPlot.min.css"),
      type: "text/css; charset=utf-8",
      cache: year,
    });
    return m;
  })();
  assetsPromise.catch(() => (assetsPromise = null)); // a later request tries again
  return assetsPromise;
}

// ---------------------------------------------------------------------------------------------
// Prometheus metrics (prom-client), set from the snapshot at each scrape.

function buildMetrics(
  snapshot: () => ProgressSnapshot,
  sseClients: () => number,
): { registry: Registry; refresh: () => void } {
  const registry = new Registry();
  const registers = [registry];
  const run = ["run"] as const;
  const gauge = (name: string, help: string, labelNames: readonly string[] = run) =>
    new Gauge({ name, help, labelNames, registers });
  const counter = (name: string, help: string, labelNames: readonly string[] = run) =>
    new Counter({ name, help, labelNames, registers });

  const info = gauge("finetune_run_info", "Always 1; labels: run state, stage and phase.", [
    "run",
    "state",
    "stage",
    "phase",
  ]);
  const running = gauge("finetune_running", "1 while the run is running, else 0.");
  const failed = gauge("finetune_failed", "1 when the run failed, else 0.");
  const plain: [Gauge, (s: ProgressSnapshot) => number | null][] = [
    [gauge("finetune_loss", "Training loss of the latest optimizer step."), (s) => s.loss],
    [
      gauge("finetune_gradnorm", "Gradient norm (before clipping) of the latest step."),
      (s) => s.gradnorm,
    ],
    [gauge("finetune_learning_rate", "Learning rate of the latest step."), (s) => s.lr],
    [
      gauge("finetune_loss_scale", "Loss scale of the latest step (f16 matmuls only)."),
      (s) => s.loss_scale,
    ],
    [gauge("finetune_tokens_per_second", "Training throughput, tokens/s."), (s) => s.tokens_per_s],
    [gauge("finetune_steps_per_second", "Optimizer steps per second."), (s) => s.steps_per_s],
    [gauge("finetune_step", "Optimizer steps done in the current phase."), (s) => s.steps_done],
    [gauge("finetune_total_steps", "Optimizer steps of the current phase."), (s) => s.total_steps],
    [gauge("finetune_epoch", "Epoch of the latest step."), (s) => s.epoch],
    [gauge("finetune_total_samples", "Samples the run will see in all."), (s) => s.total_samples],
    [gauge("finetune_eta_seconds", "Seconds left in the current phase."), (s) => s.eta_s],
    [
      gauge("finetune_elapsed_seconds", "Training seconds elapsed in the current phase."),
      (s) => s.elapsed_s,
    ],
    [
      gauge("finetune_last_event_timestamp_seconds", "Unix time of the latest run event."),
      (s) => (s.updated_at ? Date.parse(s.updated_at) / 1000 : null),
    ],
  ];
  const totals: [Counter, (s: ProgressSnapshot) => number | null][] = [
    [counter("finetune_samples_seen_total", "Training samples seen."), (s) => s.samples_seen],
    [
      counter("finetune_tokens_seen_total", "Tokens seen in the current phase."),
      (s) => s.tokens_seen,
    ],
    [counter("finetune_checkpoints_total", "Checkpoints written."), (s) => s.checkpoints.length],
    [
      counter("finetune_skipped_steps_total", "Steps skipped on a gradient overflow (f16)."),
      (s) => s.skipped_steps,
    ],
  ];
  const events = counter("finetune_events_total", "Run events by type.", ["run", "type"]);
  const evalScore = gauge(
    "finetune_eval_score",
    "Scores of the latest evaluated checkpoint, by metric.",
    ["run", "phase", "metric"],
  );
  const bestScore = gauge("finetune_best_score", "Scores of the selected checkpoint, by metric.", [
    "run",
    "phase",
    "metric",
  ]);
  const clients = new Gauge({
    name: "finetune_server_sse_clients",
    help: "Event-stream subscribers connected to this server.",
    registers,
  });

  // Set from the snapshot just before each scrape.
  const refresh = () => {
    const s = snapshot();
    const labels = { run: s.run_id ?? "" };
    clients.set(sseClients());
    info.reset();
    info.set({ ...labels, state: s.state, stage: s.stage ?? "", phase: s.phase ?? "" }, 1);
    running.reset();
    running.set(labels, s.state === "running" ? 1 : 0);
    failed.reset();
    failed.set(labels, s.state === "failed" ? 1 : 0);
    for (const [g, f] of plain) {
      g.reset();
      const v = f(s);
      if (v !== null && Number.isFinite(v)) g.set(labels, v);
    }
    for (const [c, f] of totals) {
      c.reset();
      const v = f(s);
      if (v !== null && Number.isFinite(v) && v >= 0) c.inc(labels, v);
    }
    events.reset();
    for (const [type, n] of Object.entries(s.event_counts)) events.inc({ ...labels, type }, n);
    evalScore.reset();
    const lastEval = s.evals.at(-1);
    for (const [metric, v] of Object.entries(lastEval?.scores ?? {})) {
      if (typeof v === "number" && Number.isFinite(v)) {
        evalScore.set({ ...labels, phase: lastEval!.phase, metric }, v);
      }
    }
    bestScore.reset();
    for (const [metric, v] of Object.entries(s.selection?.best?.scores ?? {})) {
      if (typeof v === "number" && Number.isFinite(v)) {
        bestScore.set({ ...labels, phase: s.selection!.phase, metric }, v);
      }
    }
  };
  return { registry, refresh };
}

// ---------------------------------------------------------------------------------------------
// Server-sent events: one subscription to the log, frames serialized once per event.

/** Queued chunks after which a subscriber is dropped (it reconnects with Last-Event-ID). */
const MAX_QUEUED_CHUNKS = 4096;
/** Replay is sent in chunks of about this many characters. */
const REPLAY_CHUNK = 64 * 1024;

const enc = new TextEncoder();

function sseFrame(ev: RunEvent): string {
  const type = String(ev.type).replace(/[\r\n:]/g, "_");
  return `id: ${ev.id}\nevent: ${type}\ndata: ${JSON.stringify(ev)}\n\n`;
}

class SseHub {
  #clients = new Set<ReadableStreamDefaultController<Uint8Array>>();
  #unsubscribe: () => void;
  #ping: ReturnType<typeof setInterval>;

  constructor(readonly log: EventLog, keepAliveS: number) {
    this.#unsubscribe = log.subscribe((ev) => this.#broadcast(enc.encode(sseFrame(ev))));
    this.#ping = setInterval(() => this.#broadcast(enc.encode(": ping\n\n")), keepAliveS * 1000);
  }

  get size(): number {
    return this.#clients.size;
  }

  #broadcast(bytes: Uint8Array): void {
    for (const c of [...this.#clients]) this.#send(c, bytes);
  }

  #send(c: ReadableStreamDefaultController<Uint8Array>, bytes: Uint8Array): void {
    try {
      c.enqueue(bytes);
      if ((c.desiredSize ?? 0) < -MAX_QUEUED_CHUNKS) {
        // Too slow a reader: end its stream after what is queued; it resumes with Last-Event-ID.
        this.#clients.delete(c);
        c.close();
      }
    } catch {
      this.#clients.delete(c); // already closed or errored
    }
  }

  /** A text/event-stream response replaying events after `lastId` (null: all), then live ones. */
  open(lastId: number | null): Response {
    let ctrl: ReadableStreamDefaultController<Uint8Array> | null = null;
    const drop = () => {
      if (ctrl) this.#clients.delete(ctrl);
    };
    const stream = new ReadableStream<Uint8Array>({
      start: (c) => {
        ctrl = c;
        // Replay and subscribe in one synchronous run: emit is synchronous, so nothing is missed.
        let text = "retry: 2000\n\n";
        for (const ev of this.log.since(lastId ?? -1)) {
          text += sseFrame(ev);
          if (text.length >= REPLAY_CHUNK) {
            c.enqueue(enc.encode(text));
            text = "";
          }
        }
        if (text) c.enqueue(enc.encode(text));
        this.#clients.add(c);
      },
      cancel: drop,
    });
    return new Response(stream, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-accel-buffering": "no",
      },
    });
  }

  close(): void {
    this.#unsubscribe();
    clearInterval(this.#ping);
    for (const c of this.#clients) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
    this.#clients.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// Auth: loopback without a token by default; a bearer token otherwise.

async function digest(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(s)));
}

/** Constant-time comparison of two SHA-256 digests. */
function sameDigest(a: Uint8Array, b: Uint8Array): boolean {
  let d = a.length ^ b.length;
  for (let i = 0; i < a.length && i < b.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

function cookieValue(header: string | undefined, name: string): string | null {
  for (const part of (header ?? "").split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return null;
}

const TOKEN_COOKIE = "ft_token";

function authMiddleware(token: string): MiddlewareHandler {
  const want = digest(token);
  return async (c, next) => {
    const auth = c.req.header("authorization") ?? "";
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    const given = m?.[1] ?? cookieValue(c.req.header("cookie"), TOKEN_COOKIE);
    if (given !== null && sameDigest(await digest(given), await want)) return await next();
    // A browser cannot send a header when opening the page: `/?token=...` sets a cookie instead.
    const q = c.req.query("token");
    if (c.req.path === "/" && q && sameDigest(await digest(q), await want)) {
      c.header(
        "set-cookie",
        `${TOKEN_COOKIE}=${encodeURIComponent(q)}; Path=/; HttpOnly; SameSite=Strict`,
      );
      return c.redirect("/", 303);
    }
    c.header("www-authenticate", 'Bearer realm="finetune"');
    return c.json({ error: "unauthorized: send 'Authorization: Bearer <token>'" }, 401);
  };
}

/** On a loopback bind, refuse Host headers naming another host (DNS rebinding). */
const loopbackHostOnly: MiddlewareHandler = async (c, next) => {
  const host = c.req.header("host");
  if (host) {
    const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":")[0];
    if (!isLoopback(name)) return c.json({ error: `forbidden host ${name}` }, 403);
  }
  return await next();
};

// ---------------------------------------------------------------------------------------------
// The app

function lastEventId(c: Context): number | null {
  const raw = c.req.header("last-event-id") ?? c.req.query("last_event_id");
  if (raw === undefined || raw.trim() === "") return null;
  const n = Number(raw);
  return Number.isInteger(n) ? n : null;
}

async function metricsJsonl(c: Context, path: string): Promise<Response> {
  const headers = {
    "content-type": "application/x-ndjson; charset=utf-8",
    "cache-control": "no-store",
  };
  const sinceRaw = c.req.query("since");
  const phase = c.req.query("phase");
  const since = sinceRaw === undefined ? null : Number(sinceRaw);
  if (since !== null && !Number.isFinite(since)) {
    return c.json({ error: `since must be a step number, got '${sinceRaw}'` }, 400);
  }
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return new Response("", { headers });
    throw e;
  }
  if (since === null && phase === undefined) return new Response(file.readable, { headers });
  const text = new TextDecoder().decode(await new Response(file.readable).arrayBuffer());
  let out = "";
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let rec: { step?: unknown; phase?: unknown };
    try {
      rec = JSON.parse(line);
    } catch {
      continue; // a line being written
    }
    if (since !== null && !(typeof rec.step === "number" && rec.step >= since)) continue;
    if (phase !== undefined && rec.phase !== phase) continue;
    out += line + "\n";
  }
  return new Response(out, { headers });
}

function buildApp(
  o: { runDir: string; token: string | null; loopback: boolean },
  state: { snapshot: () => ProgressSnapshot; json: () => string },
  hub: SseHub,
  metrics: { registry: Registry; refresh: () => void },
  started: number,
): Hono {
  const app = new Hono();
  app.use("*", async (c, next) => {
    if (c.req.method !== "GET" && c.req.method !== "HEAD") {
      c.header("allow", "GET, HEAD");
      return c.json({ error: "read-only server: only GET and HEAD" }, 405);
    }
    return await next();
  });
  if (o.loopback) app.use("*", loopbackHostOnly);
  if (o.token) app.use("*", authMiddleware(o.token));

  app.get("/progress", (c) =>
    c.body(state.json(), 200, {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-store",
    }));
  app.get(
    "/events",
    (c) =>
      c.req.method === "HEAD"
        ? new Response(null, { headers: { "content-type": "text/event-stream; charset=utf-8" } })
        : hub.open(lastEventId(c)),
  );
  app.get("/metrics", async (c) => {
    metrics.refresh();
    const body = await metrics.registry.metrics();
    return c.body(body, 200, {
      "content-type": metrics.registry.contentType,
      "cache-control": "no-store",
    });
  });
  app.get("/metrics.jsonl", (c) => metricsJsonl(c, join(o.runDir, METRICS_FILE)));
  app.get("/healthz", (c) => {
    const s = state.snapshot();
    return c.json({
      ok: true,
      run_id: s.run_id,
      state: s.state,
      last_event_id: s.last_event_id,
      updated_at: s.updated_at,
      uptime_s: (performance.now() - started) / 1000,
      sse_clients: hub.size,
    });
  });
  const asset = async (c: Context) => {
    let assets: Map<string, Asset>;
    try {
      assets = await loadAssets();
    } catch (e) {
      return c.text(`page assets unavailable: ${(e as Error).message}`, 500);
    }
    const a = assets.get(c.req.path);
    if (!a) return c.notFound();
    return c.body(a.body, 200, { "content-type": a.type, "cache-control": a.cache });
  };
  app.get("/", asset);
  app.get("/assets/:name", asset);
  app.notFound((c) => c.json({ error: `no such endpoint: ${c.req.path}` }, 404));
  app.onError((e, c) => {
    console.error(`progress server: ${c.req.method} ${c.req.path}: ${e.message}`);
    return c.json({ error: e.message }, 500);
  });
  return app;
}

/**
 * Serve a run's progress over HTTP: GET /progress, /events (SSE, resumable with Last-Event-ID),
 * /metrics (Prometheus), /metrics.jsonl (?since=STEP&phase=P), /healthz and / (the live page).
 * Binds 127.0.0.1 by default; another address requires a token (option or env FT_SERVER_TOKEN).
 * Events reach it through `log.subscribe` only: the trainer does no extra work or GPU read-back.
 */
export function startServer(o: ServerOptions): ProgressServer {
  const host = o.host ?? "127.0.0.1";
  const token = (o.token ?? Deno.env.get("FT_SERVER_TOKEN") ?? "") || null;
  const loopback = isLoopback(host);
  if (!loopback && !token) {
    throw new UserError(
      `the progress server may bind ${host} only with a bearer token`,
      "set server.token or the env FT_SERVER_TOKEN, or keep server.host at 127.0.0.1",
    );
  }
  if (token && !/^[\x21-\x7e]+$/.test(token)) {
    throw new UserError("the progress server token must be printable ASCII without spaces");
  }
  const port = o.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UserError(`bad server port ${o.port}`, "use 0 (any free port) or 1-65535");
  }
  const runId = o.runId ?? basename(resolve(o.runDir));
  const followed = followLog(o.log, runId);
  const hub = new SseHub(o.log, o.keepAliveS ?? 15);
  const snapshot = () => followed.state.snapshot();
  // /progress serializes once per event, not once per request.
  let progressJson: string | null = null;
  const stopCache = o.log.subscribe(() => (progressJson = null));
  const metrics = buildMetrics(snapshot, () => hub.size);
  const started = performance.now();
  const app = buildApp(
    { runDir: o.runDir, token, loopback },
    {
      snapshot,
      json: () => (progressJson ??= JSON.stringify(followed.state.toJSON())),
    },
    hub,
    metrics,
    started,
  );

  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname: host, port, onListen: () => {} }, app.fetch);
  } catch (e) {
    hub.close();
    followed.stop();
    stopCache();
    if (e instanceof Deno.errors.AddrInUse) {
      throw new UserError(`port ${port} on ${host} is in use`, "pick another server.port, or 0");
    }
    if (e instanceof Deno.errors.AddrNotAvailable || e instanceof Deno.errors.PermissionDenied) {
      throw new UserError(`cannot listen on ${host}:${port}: ${(e as Error).message}`);
    }
    throw e;
  }
  const bound = server.addr.port;
  const shown = host === "0.0.0.0" || host === "::" ? Deno.hostname() : host;
  const url = `http://${shown.includes(":") ? `[${shown}]` : shown}:${bound}/`;
  let closing: Promise<void> | null = null;
  return {
    port: bound,
    url,
    app,
    snapshot,
    sseClients: () => hub.size,
    close() {
      closing ??= (async () => {
        hub.close();
        followed.stop();
        stopCache();
        await server.shutdown();
      })();
      return closing;
    },
  };
}
