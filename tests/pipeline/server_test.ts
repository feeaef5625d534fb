// Progress server tests: event log and tail, the /progress fold, every endpoint over HTTP, SSE resume, auth, load.
import assert from "node:assert/strict";
import { join } from "node:path";
import { fakeLoss, fakeRun, loadTest, readSse, type SseMessage } from "../../bench/server.ts";
import { UserError } from "../../pipeline/errors.ts";
import {
  createEventLog,
  EVENTS_FILE,
  METRICS_FILE,
  ProgressState,
  type RunEvent,
  tailEventLog,
} from "../../pipeline/progress.ts";
import { serveCommand } from "../../pipeline/serve_cmd.ts";
import { isLoopback, type ProgressServer, startServer } from "../../pipeline/server.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "ft-server-test-" });
}

/** GET a path of the server; returns status, headers and body text. */
async function get(
  s: ProgressServer,
  path: string,
  headers: HeadersInit = {},
): Promise<{ status: number; headers: Headers; text: string }> {
  const r = await fetch(new URL(path, s.url), { headers, redirect: "manual" });
  return { status: r.status, headers: r.headers, text: await r.text() };
}

/** Read SSE messages until `stop` says so (then the connection is dropped). */
async function readEvents(
  url: string,
  headers: HeadersInit,
  stop: (m: SseMessage, all: SseMessage[]) => boolean,
  timeoutMs = 10_000,
): Promise<SseMessage[]> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  const out: SseMessage[] = [];
  try {
    const r = await fetch(url, { headers, signal: ac.signal });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type") ?? "", /^text\/event-stream/);
    for await (const m of readSse(r.body!, ac.signal)) {
      out.push(m);
      if (stop(m, out)) break;
    }
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Event log

Deno.test("progress: event log assigns ids, appends JSON lines, resumes ids after a reopen", async () => {
  const dir = await tempDir();
  const log = createEventLog(dir);
  const seen: RunEvent[] = [];
  log.subscribe((e) => seen.push(e));
  const a = log.emit({ type: "run", state: "running", run_id: "r1" });
  const b = log.emit(
    { type: "stage", name: "data", state: "start", time: 1_700_000_000_000 },
  );
  assert.equal(a.id, 0);
  assert.equal(b.id, 1);
  assert.equal(b.time, new Date(1_700_000_000_000).toISOString(), "numeric epoch ms -> ISO");
  assert.ok(!Number.isNaN(Date.parse(a.time)));
  assert.deepEqual(seen.map((e) => e.id), [0, 1]);
  assert.deepEqual(log.since(0).map((e) => e.id), [1]);
  assert.deepEqual(log.since(-1).map((e) => e.id), [0, 1]);
  await log.close();
  const lines = (await Deno.readTextFile(join(dir, EVENTS_FILE))).trim().split("\n");
  assert.deepEqual(lines.map((l) => JSON.parse(l).id), [0, 1]);
  assert.equal(JSON.parse(lines[1]).name, "data");

  // A kill mid-line leaves a torn line: the reopened log closes it and continues at id 2.
  await Deno.writeTextFile(join(dir, EVENTS_FILE), '{"type":"metr', { append: true });
  const log2 = createEventLog(dir);
  assert.equal(log2.lastId(), 1);
  assert.equal(log2.emit({ type: "run", state: "finished" }).id, 2);
  await log2.close();
  const text = await Deno.readTextFile(join(dir, EVENTS_FILE));
  const ok = text.trim().split("\n").flatMap((l) => {
    try {
      return [JSON.parse(l).id];
    } catch {
      return [];
    }
  });
  assert.deepEqual(ok, [0, 1, 2]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("progress: tail follows lines another writer appends, including a line split in two", async () => {
  const dir = await tempDir();
  const writer = createEventLog(dir);
  writer.emit({ type: "run", state: "running", run_id: "t" });
  const tail = await tailEventLog(dir, { pollMs: 20 });
  assert.equal(tail.lastId(), 0, "lines already there are loaded before it resolves");
  assert.throws(() => tail.emit({ type: "x" }), /read-only/);
  const got: number[] = [];
  tail.subscribe((e) => got.push(e.id));
  for (let i = 0; i < 5; i++) writer.emit({ type: "metrics", step: i });
  // Half a line now, the rest later: nothing may be delivered from the half.
  const path = join(dir, EVENTS_FILE);
  const line = JSON.stringify({ type: "metrics", id: 6, time: new Date().toISOString(), step: 5 });
  await Deno.writeTextFile(path, line.slice(0, 20), { append: true });
  await sleep(100);
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  await Deno.writeTextFile(path, line.slice(20) + "\n", { append: true });
  const end = Date.now() + 3000;
  while (got.length < 6 && Date.now() < end) await sleep(20);
  assert.deepEqual(got, [1, 2, 3, 4, 5, 6]);
  await tail.close();
  await writer.close();
  await Deno.remove(dir, { recursive: true });
});

// ---------------------------------------------------------------------------------------------
// Snapshot

Deno.test("progress: ProgressState folds a run into the snapshot (ETA, checkpoint, selection, failure)", () => {
  const st = new ProgressState("dir-name");
  let id = 0;
  const t0 = Date.parse("2025-01-01T00:00:00Z");
  const ev = (type: string, f: Record<string, unknown>, sec = 0): RunEvent => ({
    type,
    id: id++,
    time: new Date(t0 + sec * 1000).toISOString(),
    ...f,
  });
  assert.equal(st.snapshot().state, "waiting");
  assert.equal(st.snapshot().run_id, "dir-name");
  st.apply(ev("run", { state: "running", run_id: "r42", total_samples: 800 }));
  st.apply(ev("stage", { name: "tokenize", state: "start" }));
  st.apply(ev("stage", { name: "tokenize", state: "done", seconds: 2 }, 2));
  st.apply(ev("stage", { name: "train", state: "start" }, 2));
  // 10 steps in 5 s: 2 steps/s; 100 steps in all -> 90 left -> ETA 45 s.
  for (let i = 0; i < 10; i++) {
    st.apply(ev("metrics", {
      step: i,
      epoch: 0,
      phase: "p1",
      samples_seen: 8 * (i + 1),
      tokens_seen: 800 * (i + 1),
      loss: 2 - i * 0.1,
      gradnorm: 1.5,
      lr: 1e-5,
      tokens_per_s: 1600,
      elapsed_s: 0.5 * (i + 1),
      total_steps: 100,
    }, 2 + 0.5 * (i + 1)));
  }
  let s = st.snapshot();
  assert.equal(s.run_id, "r42");
  assert.equal(s.state, "running");
  assert.equal(s.stage, "train");
  assert.equal(s.stage_state, "start");
  assert.deepEqual(s.stages.map((x) => [x.name, x.state, x.seconds]), [
    ["tokenize", "done", 2],
    ["train", "start", null],
  ]);
  assert.equal(s.phase, "p1");
  assert.equal(s.step, 9);
  assert.equal(s.steps_done, 10);
  assert.equal(s.total_steps, 100);
  assert.equal(s.samples_seen, 80);
  assert.equal(s.total_samples, 800);
  assert.ok(Math.abs(s.loss! - 1.1) < 1e-12);
  assert.ok(Math.abs(s.steps_per_s! - 2) < 1e-9, `steps/s ${s.steps_per_s}`);
  assert.ok(Math.abs(s.eta_s! - 45) < 1e-9, `eta ${s.eta_s}`);
  assert.equal(Date.parse(s.eta_at!), t0 + 7000 + 45_000);

  // One record only (e.g. just after a resume): ETA from tokens/s: 90 steps * 800 tokens / 1600.
  const one = new ProgressState();
  one.apply({
    ...ev("metrics", {
      step: 9,
      phase: "p1",
      tokens_seen: 8000,
      tokens_per_s: 1600,
      elapsed_s: 5,
      total_steps: 100,
    }),
  });
  assert.ok(Math.abs(one.snapshot().eta_s! - 45) < 1e-9, `eta ${one.snapshot().eta_s}`);

  st.apply(
    ev("checkpoint", {
      dir: "/r/ckpt/samples_80",
      phase: "p1",
      step: 10,
      samples: 80,
      final: false,
    }),
  );
  st.apply(
    ev("eval", {
      checkpoint: "/r/ckpt/samples_80",
      phase: "p1",
      samples: 80,
      scores: { mmlu: 0.3 },
    }),
  );
  st.apply(
    ev("selection", {
      phase: "p1",
      primary: "mmlu",
      best: { dir: "/r/ckpt/samples_80", samples: 80, scores: { mmlu: 0.3 } },
    }),
  );
  s = st.snapshot();
  assert.equal(s.last_checkpoint?.dir, "/r/ckpt/samples_80");
  assert.equal(s.evals.length, 1);
  assert.equal(s.selection?.best.dir, "/r/ckpt/samples_80");
  assert.equal(s.event_counts.metrics, 10);

  st.apply(ev("stage", { name: "train", state: "fail", error: "boom", seconds: 9 }, 9));
  st.apply(ev("run", { state: "failed", error: "boom" }, 9));
  s = st.snapshot();
  assert.equal(s.state, "failed");
  assert.equal(s.error, "boom");
  assert.equal(s.stage_state, "fail");
  assert.equal(s.eta_s, null);
});

Deno.test("progress: f16 runs report the loss scale and count skipped steps once", () => {
  const st = new ProgressState();
  const t0 = Date.parse("2026-01-01T00:00:00Z");
  let id = 0;
  const rec = (step: number, scale: number, skipped: boolean): RunEvent => ({
    type: "metrics",
    id: id++,
    time: new Date(t0 + step * 1000).toISOString(),
    step,
    phase: "p1",
    loss: 2,
    gradnorm: skipped ? null : 1,
    loss_scale: scale,
    ...(skipped ? { skipped: true } : {}),
    total_steps: 10,
  });
  st.apply(rec(0, 65536, true));
  st.apply(rec(1, 32768, true));
  st.apply(rec(2, 16384, false));
  // a resumed phase replays step 1: still two skipped steps
  st.apply(rec(1, 32768, true));
  const s = st.snapshot();
  assert.equal(s.skipped_steps, 2);
  assert.equal(s.loss_scale, 32768);
  assert.equal(new ProgressState().snapshot().loss_scale, null);
});

// ---------------------------------------------------------------------------------------------
// HTTP

Deno.test("server: every endpoint over HTTP during and after a fake run", async () => {
  const dir = await tempDir();
  const log = createEventLog(dir);
  const server = startServer({ runDir: dir, log, port: 0 });
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.ok(server.port > 0);
  const running = fakeRun(log, { steps: 30, stepMs: 15, saveEvery: 10 });
  // Mid-run: /progress says running once a few steps are in.
  let mid: Record<string, unknown> = {};
  for (let i = 0; i < 200; i++) {
    mid = JSON.parse((await get(server, "progress")).text);
    if ((mid.steps_done as number) >= 5) break;
    await sleep(10);
  }
  assert.equal(mid.state, "running");
  assert.ok((mid.steps_done as number) >= 5);
  await running;
  const lastId = log.lastId();

  const p = await get(server, "progress");
  assert.equal(p.status, 200);
  assert.match(p.headers.get("content-type")!, /application\/json/);
  const snap = JSON.parse(p.text);
  assert.equal(snap.run_id, "fake-run");
  assert.equal(snap.state, "finished");
  assert.equal(snap.steps_done, 30);
  assert.equal(snap.total_steps, 30);
  assert.equal(snap.samples_seen, 240);
  assert.equal(snap.total_samples, 240);
  assert.equal(snap.loss, fakeLoss(29));
  assert.equal(snap.eta_s, 0);
  assert.equal(snap.last_event_id, lastId);
  assert.equal(snap.checkpoints.length, 3);
  assert.equal(snap.evals.length, 3);
  assert.equal(snap.selection.primary, "mmlu");
  assert.ok(snap.last_checkpoint.final);
  assert.deepEqual(snap.stages.map((s: { name: string }) => s.name), [
    "data",
    "tokenize",
    "train_phase1",
    "select",
  ]);
  for (const k of ["phase", "epoch", "gradnorm", "lr", "tokens_per_s"]) {
    assert.ok(snap[k] !== null && snap[k] !== undefined, `progress.${k}`);
  }

  const h = await get(server, "healthz");
  assert.equal(h.status, 200);
  assert.equal(JSON.parse(h.text).ok, true);
  assert.equal(JSON.parse(h.text).state, "finished");

  // Prometheus text: HELP/TYPE for every family, samples carry the run label, values match.
  const m = await get(server, "metrics");
  assert.equal(m.status, 200);
  assert.match(m.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const families = new Map<string, string>();
  const samples = new Map<string, number>();
  for (const line of m.text.split("\n")) {
    if (!line) continue;
    const t = /^# TYPE (\w+) (gauge|counter)$/.exec(line);
    if (t) {
      families.set(t[1], t[2]);
      continue;
    }
    if (line.startsWith("# HELP ")) continue;
    const sm = /^(\w+)(\{[^}]*\})? (\S+)$/.exec(line);
    assert.ok(sm, `bad exposition line: ${line}`);
    samples.set(sm[1] + (sm[2] ?? ""), Number(sm[3]));
  }
  assert.equal(families.get("finetune_loss"), "gauge");
  assert.equal(families.get("finetune_samples_seen_total"), "counter");
  assert.equal(samples.get('finetune_loss{run="fake-run"}'), fakeLoss(29));
  assert.equal(samples.get('finetune_samples_seen_total{run="fake-run"}'), 240);
  assert.equal(samples.get('finetune_step{run="fake-run"}'), 30);
  assert.equal(samples.get('finetune_running{run="fake-run"}'), 0);
  assert.equal(samples.get('finetune_checkpoints_total{run="fake-run"}'), 3);
  assert.equal(samples.get('finetune_events_total{run="fake-run",type="metrics"}'), 30);
  assert.equal(
    samples.get('finetune_run_info{run="fake-run",state="finished",stage="select",phase="phase1"}'),
    1,
  );
  assert.ok([...samples.keys()].some((k) => k.startsWith("finetune_best_score{")));

  // metrics.jsonl: raw, ?since=step, ?phase=, a bad since.
  const raw = await get(server, "metrics.jsonl");
  assert.equal(raw.status, 200);
  assert.equal(raw.text, await Deno.readTextFile(join(dir, METRICS_FILE)));
  assert.equal(raw.text.trim().split("\n").length, 30);
  const since = await get(server, "metrics.jsonl?since=25");
  assert.deepEqual(since.text.trim().split("\n").map((l) => JSON.parse(l).step), [
    25,
    26,
    27,
    28,
    29,
  ]);
  assert.equal((await get(server, "metrics.jsonl?since=5&phase=nope")).text, "");
  assert.equal((await get(server, "metrics.jsonl?since=abc")).status, 400);

  // The page and its assets, all local.
  const page = await get(server, "");
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type")!, /text\/html/);
  assert.ok(!/https?:\/\//.test(page.text.replace(/<!--[\s\S]*?-->/g, "")), "no external URL");
  for (const src of page.text.matchAll(/(?:src|href)="(assets\/[^"]+)"/g)) {
    const a = await get(server, src[1]);
    assert.equal(a.status, 200, src[1]);
    assert.ok(a.text.length > 100, src[1]);
  }
  assert.match((await get(server, "assets/uplot-1.js")).text, /uPlot/);

  // Unknown paths 404; the server is read-only.
  assert.equal((await get(server, "nope")).status, 404);
  const post = await fetch(new URL("progress", server.url), { method: "POST", body: "{}" });
  await post.body?.cancel();
  assert.equal(post.status, 405);
  const head = await fetch(new URL("progress", server.url), { method: "HEAD" });
  assert.equal(head.status, 200);
  const headEvents = await fetch(new URL("events", server.url), { method: "HEAD" });
  assert.equal(headEvents.status, 200);
  assert.equal(server.sseClients(), 0, "HEAD /events opens no stream");

  await server.close();
  await log.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("server: an SSE client that disconnects resumes with Last-Event-ID without gaps", async () => {
  const dir = await tempDir();
  const log = createEventLog(dir);
  const server = startServer({ runDir: dir, log });
  const url = new URL("events", server.url).href;
  const running = fakeRun(log, { steps: 40, stepMs: 10, saveEvery: 10 });
  // First connection: take 10 events, hang up.
  const first = await readEvents(url, {}, (_m, all) => all.length >= 10);
  const lastSeen = Number(first.at(-1)!.id);
  await sleep(60); // the run goes on while we are away
  assert.ok(log.lastId() > lastSeen + 1, "events were emitted while disconnected");
  // Reconnect with Last-Event-ID: the rest, until the run's end.
  const rest = await readEvents(url, { "last-event-id": String(lastSeen) }, (m) => {
    const ev = JSON.parse(m.data);
    return ev.type === "run" && ev.state === "finished";
  });
  await running;
  const ids = [...first, ...rest].map((m) => Number(m.id));
  assert.deepEqual(ids, Array.from({ length: log.lastId() + 1 }, (_, i) => i), "ids 0..last, once");
  for (const m of [...first, ...rest]) {
    const ev = JSON.parse(m.data);
    assert.equal(m.event, ev.type, "event name = type");
    assert.equal(String(ev.id), m.id);
  }
  // ?last_event_id= works the same for clients that cannot set headers.
  const tail = await readEvents(
    `${url}?last_event_id=${log.lastId() - 2}`,
    {},
    (_m, all) => all.length >= 2,
  );
  assert.deepEqual(tail.map((m) => Number(m.id)), [log.lastId() - 1, log.lastId()]);
  const end = Date.now() + 3000;
  while (server.sseClients() > 0 && Date.now() < end) await sleep(10);
  assert.equal(server.sseClients(), 0, "disconnected clients are dropped");
  await server.close();
  await log.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("server: close() ends connected event streams and returns", async () => {
  const dir = await tempDir();
  const log = createEventLog(dir);
  log.emit({ type: "run", state: "running", run_id: "c" });
  const server = startServer({ runDir: dir, log });
  const r = await fetch(new URL("events", server.url));
  const msgs: SseMessage[] = [];
  const reading = (async () => {
    for await (const m of readSse(r.body!)) msgs.push(m);
  })();
  const end = Date.now() + 3000;
  while (server.sseClients() < 1 && Date.now() < end) await sleep(5);
  assert.equal(server.sseClients(), 1);
  const t = performance.now();
  await server.close();
  await reading; // the stream ended
  assert.ok(performance.now() - t < 2000, "close does not wait for the stream's client");
  assert.deepEqual(msgs.map((m) => m.id), ["0"]);
  await log.close();
  await Deno.remove(dir, { recursive: true });
});

/** Send a raw HTTP/1.1 request (fetch cannot set Host) and return the status code. */
async function rawStatus(port: number, host: string, path = "/progress"): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(
      new TextEncoder().encode(
        `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
      ),
    );
    const buf = new Uint8Array(256);
    const n = await conn.read(buf);
    return Number(
      /^HTTP\/1\.1 (\d{3})/.exec(new TextDecoder().decode(buf.subarray(0, n ?? 0)))?.[1],
    );
  } finally {
    conn.close();
  }
}

Deno.test("server: loopback by default; other addresses need a bearer token; 401 without it", async () => {
  const dir = await tempDir();
  const log = createEventLog(dir);
  log.emit({ type: "run", state: "running", run_id: "sec" });
  assert.ok(isLoopback("127.0.0.1") && isLoopback("localhost") && isLoopback("::1"));
  assert.ok(!isLoopback("0.0.0.0") && !isLoopback("192.168.1.5"));
  const prev = Deno.env.get("FT_SERVER_TOKEN");
  Deno.env.delete("FT_SERVER_TOKEN");
  try {
    assert.throws(() => startServer({ runDir: dir, log, host: "0.0.0.0" }), UserError);

    // Loopback without a token: a Host header naming another host is refused (DNS rebinding).
    const local = startServer({ runDir: dir, log });
    assert.equal(await rawStatus(local.port, `127.0.0.1:${local.port}`), 200);
    assert.equal(await rawStatus(local.port, `localhost:${local.port}`), 200);
    assert.equal(await rawStatus(local.port, "evil.example"), 403);
    await local.close();

    // Token from the env; binding every address.
    Deno.env.set("FT_SERVER_TOKEN", "s3cret-token");
    const s = startServer({ runDir: dir, log, host: "0.0.0.0" });
    const base = `http://127.0.0.1:${s.port}/`;
    for (
      const path of [
        "",
        "progress",
        "events",
        "metrics",
        "metrics.jsonl",
        "healthz",
        "assets/app.js",
      ]
    ) {
      const r = await fetch(base + path);
      await r.body?.cancel();
      assert.equal(r.status, 401, `/${path} without a token`);
      assert.match(r.headers.get("www-authenticate") ?? "", /^Bearer/);
    }
    const wrong = await fetch(base + "progress", { headers: { authorization: "Bearer nope" } });
    await wrong.body?.cancel();
    assert.equal(wrong.status, 401);
    const ok = await fetch(base + "progress", {
      headers: { authorization: "Bearer s3cret-token" },
    });
    assert.equal(ok.status, 200);
    assert.equal((await ok.json()).run_id, "sec");
    // A browser: /?token= sets an HttpOnly cookie, which then authorizes the page's requests.
    const login = await fetch(base + "?token=s3cret-token", { redirect: "manual" });
    await login.body?.cancel();
    assert.equal(login.status, 303);
    const cookie = login.headers.get("set-cookie") ?? "";
    assert.match(cookie, /HttpOnly/);
    const withCookie = await fetch(base + "progress", {
      headers: { cookie: cookie.split(";")[0] },
    });
    await withCookie.body?.cancel();
    assert.equal(withCookie.status, 200);
    const badLogin = await fetch(base + "?token=nope", { redirect: "manual" });
    await badLogin.body?.cancel();
    assert.equal(badLogin.status, 401);
    await s.close();

    // An explicit token option wins over the env.
    const s2 = startServer({ runDir: dir, log, token: "opt-token" });
    const r2 = await fetch(new URL("healthz", s2.url), {
      headers: { authorization: "Bearer opt-token" },
    });
    await r2.body?.cancel();
    assert.equal(r2.status, 200);
    await s2.close();
  } finally {
    if (prev === undefined) Deno.env.delete("FT_SERVER_TOKEN");
    else Deno.env.set("FT_SERVER_TOKEN", prev);
  }
  await log.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("server: 200 /progress pollers and 50 SSE subscribers during a run, no errors", async () => {
  const dir = await tempDir();
  const log = createEventLog(dir);
  const server = startServer({ runDir: dir, log });
  const done = (async () => {
    const end = Date.now() + 10_000;
    while (server.sseClients() < 50 && Date.now() < end) await sleep(10);
    return await fakeRun(log, { steps: 60, stepMs: 20, saveEvery: 20 });
  })();
  const rep = await loadTest({
    url: server.url,
    pollers: 200,
    subscribers: 50,
    pollIntervalMs: 50,
    until: done,
    expectLastId: () => log.lastId(),
  });
  const run = await done;
  console.log(
    `load: ${rep.requests} /progress requests in ${rep.seconds.toFixed(2)} s ` +
      `(${rep.requestsPerS.toFixed(0)}/s), latency p50 ${rep.latencyMs.p50.toFixed(1)} ms ` +
      `p99 ${rep.latencyMs.p99.toFixed(1)} ms, errors ${rep.errors}; ` +
      `${rep.subscribers} SSE subscribers got ${rep.sse.eventsMin}-${rep.sse.eventsMax} of ` +
      `${log.lastId() + 1} events, delay p99 ${rep.sse.delayMs.p99} ms; ` +
      `emit mean ${(run.emitUs.reduce((a, b) => a + b, 0) / run.emitUs.length).toFixed(0)} µs`,
  );
  assert.equal(rep.errors, 0, rep.firstErrors.join("; "));
  assert.ok(rep.requests >= 200, `${rep.requests} requests`);
  assert.equal(rep.sse.errors, 0);
  assert.equal(rep.sse.outOfOrder, 0);
  assert.equal(rep.sse.incomplete, 0);
  assert.equal(rep.sse.eventsMin, log.lastId() + 1);
  await server.close();
  await log.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("server: a tailing log (serve mode) sees a live run written by another writer", async () => {
  const dir = await tempDir();
  const writer = createEventLog(dir);
  writer.emit({ type: "run", state: "running", run_id: "tailed" });
  const tail = await tailEventLog(dir, { pollMs: 30 });
  const server = startServer({ runDir: dir, log: tail });
  const url = new URL("events", server.url).href;
  const stream = readEvents(url, {}, (m) => JSON.parse(m.data).state === "finished");
  await fakeRun(writer, { steps: 12, stepMs: 5, runId: "tailed" });
  const msgs = await stream;
  assert.deepEqual(
    msgs.map((m) => Number(m.id)),
    Array.from({ length: writer.lastId() + 1 }, (_, i) => i),
  );
  const snap = JSON.parse((await get(server, "progress")).text);
  assert.equal(snap.state, "finished");
  assert.equal(snap.steps_done, 12);
  await server.close();
  await tail.close();
  await writer.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("serve: serveCommand serves a run dir until aborted; a missing dir is a UserError", async () => {
  const dir = await tempDir();
  const writer = createEventLog(dir);
  await fakeRun(writer, { steps: 5, stepMs: 1 });
  await writer.close();
  const ac = new AbortController();
  let server: ProgressServer | null = null;
  const code = serveCommand({ "run-dir": dir, port: "0" }, [], {
    signal: ac.signal,
    onListen: (s) => (server = s),
  });
  while (!server) await sleep(5);
  const snap = JSON.parse((await get(server, "progress")).text);
  assert.equal(snap.state, "finished");
  assert.equal(snap.steps_done, 5);
  ac.abort();
  assert.equal(await code, 0);
  await assert.rejects(serveCommand({ "run-dir": join(dir, "nope") }, []), UserError);
  await assert.rejects(serveCommand({}, []), UserError);
  await assert.rejects(serveCommand({ "run-dir": dir, port: "99999" }, []), UserError);
  await Deno.remove(dir, { recursive: true });
});
