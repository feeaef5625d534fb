// Progress-server load bench: a fake run on a timer, /progress pollers and SSE subscribers; figures.
import { parseArgs } from "node:util";
import { join } from "node:path";
import { createEventLog, type EventLog, METRICS_FILE } from "../pipeline/progress.ts";
import { startServer } from "../pipeline/server.ts";

// ---------------------------------------------------------------------------------------------
// A fake run: the same events, in the same order, as the pipeline and trainer emit.

/** Options of fakeRun. */
export interface FakeRunOptions {
  /** Optimizer steps (default 40). */
  steps?: number;
  /** Wall ms between steps (default 20). */
  stepMs?: number;
  /** Busy-loop this many ms of CPU per step (simulates JS work of a step; default 0). */
  busyMs?: number;
  /** Samples per step (default 8). */
  batch?: number;
  /** Checkpoint (and evaluate) every this many steps (default 10). */
  saveEvery?: number;
  /** Phase name (default "phase1"). */
  phase?: string;
  /** Run id (default "fake-run"). */
  runId?: string;
  /** Also append metrics.jsonl records like the trainer (default true). */
  writeMetrics?: boolean;
  /** End with a failure at this step instead of finishing. */
  failAt?: number;
}

/** What a fake run reports when done. */
export interface FakeRunResult {
  steps: number;
  /** Wall ms of each step (sleep + busy work + emits). */
  stepMs: number[];
  /** µs spent inside log.emit per event (the server's cost on the training thread). */
  emitUs: number[];
}

/** The loss curve of the fake run at step `i`. */
export function fakeLoss(i: number): number {
  return 0.6 + 2.2 * Math.exp(-i / 12) + 0.05 * Math.sin(i * 1.7);
}

/**
 * Emit a whole run on a timer through `log` (run, stage, metrics, checkpoint, eval, selection),
 * as the real pipeline does. Resolves when the run event "finished" (or "failed") is out.
 */
export async function fakeRun(log: EventLog, o: FakeRunOptions = {}): Promise<FakeRunResult> {
  const steps = o.steps ?? 40, stepMs = o.stepMs ?? 20, batch = o.batch ?? 8;
  const saveEvery = o.saveEvery ?? 10, phase = o.phase ?? "phase1";
  const emitUs: number[] = [];
  const emit = (ev: { type: string; [k: string]: unknown }) => {
    const t = performance.now();
    log.emit(ev);
    emitUs.push((performance.now() - t) * 1000);
  };
  const metricsFile = o.writeMetrics === false
    ? null
    : await Deno.open(join(log.runDir, METRICS_FILE), { append: true, create: true });
  const enc = new TextEncoder();
  const stage = (name: string, state: string, extra: Record<string, unknown> = {}) =>
    emit({ type: "stage", name, state, time: Date.now(), ...extra });
  const stepTimes: number[] = [];
  const total = steps * batch;
  try {
    emit({
      type: "run",
      state: "running",
      run_id: o.runId ?? "fake-run",
      total_steps: steps,
      total_samples: total,
    });
    stage("data", "skip", { reason: "inputs unchanged" });
    stage("tokenize", "start");
    await sleep(stepMs);
    stage("tokenize", "done", { seconds: stepMs / 1000 });
    stage(`train_${phase}`, "start");
    const t0 = performance.now();
    let samples = 0, tokens = 0;
    const checkpoints: { dir: string; samples: number; scores: Record<string, number> }[] = [];
    for (let i = 0; i < steps; i++) {
      const ts = performance.now();
      await sleep(stepMs);
      const spin = performance.now() + (o.busyMs ?? 0);
      while (performance.now() < spin) { /* simulated CPU work of a step */ }
      if (o.failAt === i) {
        const error = `non-finite loss at step ${i} of phase '${phase}'`;
        stage(`train_${phase}`, "fail", { error, seconds: (performance.now() - t0) / 1000 });
        emit({ type: "run", state: "failed", error });
        return { steps: i, stepMs: stepTimes, emitUs };
      }
      samples += batch;
      tokens += batch * 100;
      const elapsed = (performance.now() - t0) / 1000;
      const rec = {
        step: i,
        epoch: Math.floor((i * 2) / steps),
        phase,
        samples_seen: samples,
        tokens_seen: tokens,
        loss: fakeLoss(i),
        gradnorm: 1 + 0.5 * Math.cos(i / 3),
        lr: 2e-5 * Math.min(1, (i + 1) / 5) * (0.5 + 0.5 * Math.cos((Math.PI * i) / steps)),
        num_loss_counted_tokens: batch * 60,
        batch_size: batch,
        micro_batches: 1,
        tokens_per_s: tokens / Math.max(elapsed, 1e-9),
        elapsed_s: elapsed,
      };
      await metricsFile?.write(enc.encode(JSON.stringify(rec) + "\n"));
      emit({ type: "metrics", ...rec, total_steps: steps });
      if ((i + 1) % saveEvery === 0 || i === steps - 1) {
        const dir = join(log.runDir, "checkpoints", phase, `samples_${samples}`);
        const final = i === steps - 1;
        emit({ type: "checkpoint", dir, phase, step: i + 1, samples, final });
        const scores = { loss: fakeLoss(i) + 0.1, mmlu: 0.25 + 0.3 * (1 - Math.exp(-i / 15)) };
        checkpoints.push({ dir, samples, scores });
        emit({ type: "eval", checkpoint: dir, phase, samples, scores });
      }
      stepTimes.push(performance.now() - ts);
    }
    stage(`train_${phase}`, "done", { seconds: (performance.now() - t0) / 1000 });
    const best = checkpoints.reduce((a, b) => (b.scores.mmlu > a.scores.mmlu ? b : a));
    emit({ type: "selection", phase, best, primary: "mmlu" });
    stage("select", "done", { seconds: 0.001 });
    emit({ type: "run", state: "finished" });
    return { steps, stepMs: stepTimes, emitUs };
  } finally {
    metricsFile?.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------
// A server-sent-events client

/** One server-sent event. */
export interface SseMessage {
  id: string | null;
  event: string;
  data: string;
}

/**
 * Parse a text/event-stream body into messages (comments and retry lines are skipped). Ends
 * when the stream ends or `signal` aborts (the body is cancelled then).
 */
export async function* readSse(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<SseMessage> {
  const reader = body.getReader();
  const dec = new TextDecoder();
  const onAbort = () => void reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  let buf = "";
  let id: string | null = null, event = "", data: string[] = [];
  try {
    while (!signal?.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (data.length) yield { id, event: event || "message", data: data.join("\n") };
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        const val = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
        if (field === "id") id = val;
        else if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

// ---------------------------------------------------------------------------------------------
// Load test

/** Options of loadTest. */
export interface LoadOptions {
  /** Base URL of the server (with a trailing slash). */
  url: string;
  token?: string;
  /** Concurrent /progress pollers (default 200). */
  pollers?: number;
  /** Concurrent /events subscribers (default 50). */
  subscribers?: number;
  /** Pause between one poller's requests, ms (default 100). */
  pollIntervalMs?: number;
  /** Stop when this resolves (e.g. the run's end), or after durationS. */
  until?: Promise<unknown>;
  /** Stop when a subscriber sees the run finish or fail (needs subscribers > 0). */
  untilRunEnds?: boolean;
  durationS?: number;
  /** After stopping, wait this long for subscribers to catch up to `expectLastId` (default 3 s). */
  drainMs?: number;
  /** The id of the last event subscribers must reach (checked when given). */
  expectLastId?: () => number;
}

/** Figures of a load test. */
export interface LoadReport {
  pollers: number;
  subscribers: number;
  seconds: number;
  requests: number;
  errors: number;
  firstErrors: string[];
  requestsPerS: number;
  latencyMs: { p50: number; p95: number; p99: number; max: number };
  sse: {
    /** Events received per subscriber (min / max). */
    eventsMin: number;
    eventsMax: number;
    /** Subscribers whose ids were not exactly 0,1,2,... (gaps or duplicates). */
    outOfOrder: number;
    /** Subscribers that ended before the last expected event. */
    incomplete: number;
    errors: number;
    /** ms from an event's time to its arrival at a subscriber (p50 / p99 / max). */
    delayMs: { p50: number; p99: number; max: number };
  };
}

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * Poll /progress with `pollers` concurrent clients and hold `subscribers` /events streams until
 * `until` resolves (or `durationS` passes); every response must be a 200 with a JSON body, and
 * every subscriber must see the ids 0,1,2,... without gap up to `expectLastId()`.
 */
export async function loadTest(o: LoadOptions): Promise<LoadReport> {
  const pollers = o.pollers ?? 200, subscribers = o.subscribers ?? 50;
  if (o.untilRunEnds && subscribers === 0) {
    throw new Error("untilRunEnds needs at least one subscriber to see the run end");
  }
  const headers: HeadersInit = o.token ? { authorization: `Bearer ${o.token}` } : {};
  const lat: number[] = [];
  const firstErrors: string[] = [];
  let errors = 0;
  const fail = (m: string) => {
    errors++;
    if (firstErrors.length < 5) firstErrors.push(m);
  };
  let stopped = false;
  const t0 = performance.now();
  let endId: number | undefined;
  let runEnded = () => {};
  const ended = new Promise<void>((r) => (runEnded = r));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stopAt = Promise.race([
    o.until ?? new Promise(() => {}),
    o.untilRunEnds ? ended : new Promise(() => {}),
    new Promise((r) => {
      if (o.durationS) timer = setTimeout(r, o.durationS * 1000);
    }),
  ]).finally(() => clearTimeout(timer));

  const poller = async () => {
    while (!stopped) {
      const ts = performance.now();
      try {
        const r = await fetch(new URL("progress", o.url), { headers });
        const body = await r.text();
        if (r.status !== 200) fail(`HTTP ${r.status}: ${body.slice(0, 100)}`);
        else JSON.parse(body);
        lat.push(performance.now() - ts);
      } catch (e) {
        fail((e as Error).message);
      }
      if (o.pollIntervalMs !== 0) await sleep(o.pollIntervalMs ?? 100);
    }
  };

  const ac = new AbortController();
  const counts: number[] = [];
  const delays: number[] = [];
  let outOfOrder = 0, sseErrors = 0;
  const lastIds: number[] = [];
  const subscriber = async (k: number) => {
    let expected = 0, bad = false;
    counts[k] = 0;
    lastIds[k] = -1;
    try {
      const r = await fetch(new URL("events", o.url), { headers, signal: ac.signal });
      if (r.status !== 200 || !r.body) {
        sseErrors++;
        fail(`events HTTP ${r.status}`);
        return;
      }
      for await (const m of readSse(r.body, ac.signal)) {
        const ev = JSON.parse(m.data);
        if (Number(m.id) !== expected || ev.id !== expected) bad = true;
        expected = ev.id + 1;
        counts[k]++;
        lastIds[k] = ev.id;
        delays.push(Date.now() - Date.parse(ev.time));
        if (ev.type === "run" && (ev.state === "finished" || ev.state === "failed")) {
          endId ??= ev.id;
          runEnded();
        }
      }
    } catch (e) {
      if (!ac.signal.aborted) {
        sseErrors++;
        fail(`events: ${(e as Error).message}`);
      }
    }
    if (bad) outOfOrder++;
  };

  const subs = Array.from({ length: subscribers }, (_, k) => subscriber(k));
  const polls = Array.from({ length: pollers }, () => poller());
  await stopAt;
  stopped = true;
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(polls);
  const want = o.expectLastId?.() ?? endId;
  const drainEnd = performance.now() + (o.drainMs ?? 3000);
  while (want !== undefined && lastIds.some((x) => x < want) && performance.now() < drainEnd) {
    await sleep(20);
  }
  ac.abort();
  await Promise.all(subs);
  const incomplete = want === undefined ? 0 : lastIds.filter((x) => x < want).length;
  lat.sort((a, b) => a - b);
  delays.sort((a, b) => a - b);
  return {
    pollers,
    subscribers,
    seconds,
    requests: lat.length,
    errors,
    firstErrors,
    requestsPerS: lat.length / seconds,
    latencyMs: { p50: pct(lat, 50), p95: pct(lat, 95), p99: pct(lat, 99), max: lat.at(-1) ?? NaN },
    sse: {
      eventsMin: Math.min(...counts),
      eventsMax: Math.max(...counts),
      outOfOrder,
      incomplete,
      errors: sseErrors,
      delayMs: { p50: pct(delays, 50), p99: pct(delays, 99), max: delays.at(-1) ?? NaN },
    },
  };
}

/** Summary of a list of numbers: mean and p99. */
function stats(xs: number[]): { mean: number; p99: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length), p99: pct(s, 99) };
}

/** Options of benchServer. */
export interface BenchServerOptions {
  steps?: number;
  stepMs?: number;
  busyMs?: number;
  pollers?: number;
  subscribers?: number;
  pollIntervalMs?: number;
}

/**
 * The self-contained bench: a fake run (each step sleeps `stepMs` and spins `busyMs` of CPU)
 * without a server, then the same run serving its progress while a separate process (so the
 * load generator does not share the run's thread) polls /progress and holds /events streams.
 * Reports the load figures and the change of the mean step time.
 */
export async function benchServer(o: BenchServerOptions = {}): Promise<Record<string, unknown>> {
  const run = { steps: o.steps ?? 200, stepMs: o.stepMs ?? 20, busyMs: o.busyMs ?? 30 };
  const subscribers = o.subscribers ?? 50;
  const dirA = await Deno.makeTempDir({ prefix: "ft-bench-server-" });
  const logA = createEventLog(dirA);
  const base = await fakeRun(logA, run);
  await logA.close();

  const dirB = await Deno.makeTempDir({ prefix: "ft-bench-server-" });
  const logB = createEventLog(dirB);
  const server = startServer({ runDir: dirB, log: logB });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--url",
      server.url,
      "--until-end",
      "--json-only",
      "--pollers",
      String(o.pollers ?? 200),
      "--subscribers",
      String(subscribers),
      "--poll-ms",
      String(o.pollIntervalMs ?? 100),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const output = child.output();
  const waitEnd = performance.now() + 30_000;
  while (server.sseClients() < subscribers && performance.now() < waitEnd) await sleep(20);
  await sleep(300); // the pollers are up by now too
  const loaded = await fakeRun(logB, run);
  const out = await output;
  await server.close();
  await logB.close();
  await Deno.remove(dirA, { recursive: true });
  await Deno.remove(dirB, { recursive: true });
  if (!out.success) throw new Error(`load generator exited with ${out.code}`);
  const load = JSON.parse(new TextDecoder().decode(out.stdout)) as LoadReport;
  const a = stats(base.stepMs), b = stats(loaded.stepMs);
  return {
    run,
    load,
    stepMs: { alone: a, underLoad: b, changePct: ((b.mean - a.mean) / a.mean) * 100 },
    emitUs: { alone: stats(base.emitUs), underLoad: stats(loaded.emitUs) },
  };
}

/** `deno task bench server` entry (flags as in the CLI below). */
export async function run(values: Record<string, unknown>): Promise<void> {
  const n = (k: string) => (values[k] === undefined ? undefined : Number(values[k]));
  let out: Record<string, unknown>;
  if (typeof values.url === "string") {
    // Load an existing server (e.g. the one of a real `train`) until its run ends or for
    // --seconds (default 30).
    const load = await loadTest({
      url: values.url,
      token: (values.token as string | undefined) ?? Deno.env.get("FT_SERVER_TOKEN"),
      pollers: n("pollers"),
      subscribers: n("subscribers"),
      pollIntervalMs: n("poll-ms"),
      untilRunEnds: Boolean(values["until-end"]),
      durationS: n("seconds") ?? (values["until-end"] ? undefined : 30),
    });
    if (values["json-only"]) {
      console.log(JSON.stringify(load));
      return;
    }
    out = { load };
  } else {
    out = await benchServer({
      steps: n("steps"),
      busyMs: n("busy-ms"),
      pollers: n("pollers"),
      subscribers: n("subscribers"),
      pollIntervalMs: n("poll-ms"),
    });
  }
  console.log(JSON.stringify(out, null, 2));
  await Deno.mkdir(new URL("./out/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    new URL("./out/server.json", import.meta.url),
    JSON.stringify(out, null, 2) + "\n",
  );
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      url: { type: "string" },
      token: { type: "string" },
      seconds: { type: "string" },
      "until-end": { type: "boolean" },
      "json-only": { type: "boolean" },
      pollers: { type: "string" },
      subscribers: { type: "string" },
      "poll-ms": { type: "string" },
      steps: { type: "string" },
      "busy-ms": { type: "string" },
    },
  });
  await run(values);
}
