// Run progress: the events.jsonl event log (append or tail) and the fold of events into a snapshot.
import { join } from "node:path";
import type { BaseEvent } from "./stage.ts";

// ---------------------------------------------------------------------------------------------
// Events as logged

/** An event as it sits in `<run_dir>/events.jsonl`: its type, a 0-based id and an ISO time. */
export interface RunEvent {
  type: string;
  /** 0, 1, 2, ... in order of emission (continued across re-runs of the same run dir). */
  id: number;
  /** ISO 8601 time of emission (a numeric epoch-ms `time` given to emit is converted). */
  time: string;
  [k: string]: unknown;
}

/** Name of the event log inside a run dir. */
export const EVENTS_FILE = "events.jsonl";
/** Name of the metrics log the trainer appends (one record per optimizer step, no ids). */
export const METRICS_FILE = "metrics.jsonl";

/** {type:"run"}: the run starts (or resumes), finishes or fails. */
export interface RunStateEvent extends BaseEvent {
  type: "run";
  state: "running" | "finished" | "failed";
  run_id?: string;
  error?: string;
  /** Optimizer steps of the whole run, when known up front (metrics carry the phase's). */
  total_steps?: number;
  total_samples?: number;
}

/** {type:"checkpoint"}: the trainer saved one. */
export interface CheckpointEvent extends BaseEvent {
  type: "checkpoint";
  dir: string;
  phase: string;
  step: number;
  samples: number;
  final: boolean;
}

/** {type:"eval"}: the scores of one checkpoint. */
export interface EvalEvent extends BaseEvent {
  type: "eval";
  checkpoint: string;
  phase: string;
  samples: number;
  scores: Record<string, number>;
}

/** {type:"selection"}: the best checkpoint so far by the primary metric. */
export interface SelectionEvent extends BaseEvent {
  type: "selection";
  phase: string;
  best: { dir: string; samples: number; scores: Record<string, number> };
  primary: string;
}

/** The event log of a run: appended by the pipeline, or tailed from disk by `serve`. */
export interface EventLog {
  /** Absolute or relative run dir the log belongs to. */
  readonly runDir: string;
  /** Path of `events.jsonl`. */
  readonly path: string;
  /** True for a tailing log (serve mode): `emit` throws. */
  readonly readOnly: boolean;
  /**
   * Assign the next id and an ISO time, append one JSON line to events.jsonl (synchronously, so
   * a crash right after loses nothing), and deliver the event to every subscriber. Never throws
   * on a write error (warns once): progress reporting must not stop training.
   */
  emit<E extends BaseEvent>(event: E): RunEvent;
  /** Call `fn` on every later event; returns the unsubscribe function. */
  subscribe(fn: (event: RunEvent) => void): () => void;
  /** Every known event with id > `id`, oldest first (`since(-1)`: all of them). */
  since(id: number): RunEvent[];
  /** Id of the latest event, -1 when there is none. */
  lastId(): number;
  /** Stop writing or tailing; subscribers get nothing more. Safe to call twice. */
  close(): Promise<void>;
}

/** Parse events.jsonl text: complete lines only; bad lines are skipped; missing ids are assigned. */
function parseLines(text: string, firstId: number): RunEvent[] {
  const out: RunEvent[] = [];
  let next = firstId;
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let ev: RunEvent;
    try {
      ev = JSON.parse(line) as RunEvent;
    } catch {
      continue; // a torn line from a kill
    }
    if (!ev || typeof ev !== "object" || typeof ev.type !== "string") continue;
    if (!Number.isInteger(ev.id)) ev.id = next;
    if (ev.id < next) continue; // duplicate or out of order: keep the log strictly increasing
    next = ev.id + 1;
    out.push(ev);
  }
  return out;
}

/** Index of the first event with id > `id` (events sorted by id). */
function firstAfter(events: RunEvent[], id: number): number {
  let lo = 0, hi = events.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (events[mid].id <= id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function isoTime(t: unknown): string {
  if (typeof t === "string" && !Number.isNaN(Date.parse(t))) return t;
  if (typeof t === "number" && Number.isFinite(t)) return new Date(t).toISOString();
  return new Date().toISOString();
}

/** Shared in-memory part of both log kinds: history, subscribers, delivery. */
class LogCore {
  events: RunEvent[] = [];
  listeners = new Set<(event: RunEvent) => void>();
  closed = false;

  deliver(ev: RunEvent): void {
    this.events.push(ev);
    for (const fn of [...this.listeners]) {
      try {
        fn(ev);
      } catch (e) {
        console.error(`progress: event subscriber failed on ${ev.type}: ${(e as Error).message}`);
      }
    }
  }

  subscribe(fn: (event: RunEvent) => void): () => void {
    this.listeners.add(fn);
    return () => void this.listeners.delete(fn);
  }

  since(id: number): RunEvent[] {
    return this.events.slice(firstAfter(this.events, id));
  }

  lastId(): number {
    return this.events.length ? this.events[this.events.length - 1].id : -1;
  }
}

/**
 * Open `<runDir>/events.jsonl` for appending (created with the run dir when missing). Events
 * already in the file (a resumed run) are loaded, and ids continue after the last one; a torn
 * last line is closed with a newline first.
 */
export function createEventLog(runDir: string): EventLog {
  Deno.mkdirSync(runDir, { recursive: true });
  const path = join(runDir, EVENTS_FILE);
  const core = new LogCore();
  let existing = "";
  try {
    existing = Deno.readTextFileSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  core.events = parseLines(existing, 0);
  let file: Deno.FsFile | null = Deno.openSync(path, { append: true, create: true });
  const enc = new TextEncoder();
  if (existing.length && !existing.endsWith("\n")) file.writeSync(enc.encode("\n"));
  let warned = false;
  const write = (line: string) => {
    if (!file) return;
    try {
      const bytes = enc.encode(line);
      let off = 0;
      while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
    } catch (e) {
      if (!warned) console.warn(`progress: cannot append to ${path}: ${(e as Error).message}`);
      warned = true;
    }
  };
  return {
    runDir,
    path,
    readOnly: false,
    emit(event) {
      const { id: _id, time, type, ...rest } = event as BaseEvent & Record<string, unknown>;
      const ev: RunEvent = { type, id: core.lastId() + 1, time: isoTime(time), ...rest };
      if (core.closed) {
        if (!warned) console.warn(`progress: event '${type}' emitted after the log was closed`);
        warned = true;
      } else write(JSON.stringify(ev) + "\n");
      core.deliver(ev);
      return ev;
    },
    subscribe: (fn) => core.subscribe(fn),
    since: (id) => core.since(id),
    lastId: () => core.lastId(),
    close() {
      core.closed = true;
      core.listeners.clear();
      file?.close();
      file = null;
      return Promise.resolve();
    },
  };
}

/** Options of tailEventLog. */
export interface TailOptions {
  /** How often to look for new lines, ms (default 300). */
  pollMs?: number;
}

/**
 * Follow an existing (or not yet existing) `<runDir>/events.jsonl` written by another process:
 * resolves once the lines already there are loaded, then polls every `pollMs` for new complete
 * lines and delivers them. The returned log is read-only.
 */
export async function tailEventLog(runDir: string, opts: TailOptions = {}): Promise<EventLog> {
  const path = join(runDir, EVENTS_FILE);
  const pollMs = opts.pollMs ?? 300;
  const core = new LogCore();
  const dec = new TextDecoder();
  let offset = 0;
  let partial = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  let polling: Promise<void> = Promise.resolve();

  const poll = async () => {
    let size: number;
    try {
      size = (await Deno.stat(path)).size;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    if (size < offset) {
      // Replaced or truncated (the run dir was recreated): start over from its first line.
      console.warn(`progress: ${path} shrank; reading it again from the start`);
      offset = 0;
      partial = "";
      core.events = [];
    }
    if (size === offset) return;
    const f = await Deno.open(path, { read: true });
    try {
      await f.seek(offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(size - offset);
      let got = 0;
      while (got < buf.length) {
        const n = await f.read(buf.subarray(got));
        if (n === null) break;
        got += n;
      }
      offset += got;
      const text = partial + dec.decode(buf.subarray(0, got), { stream: true });
      const cut = text.lastIndexOf("\n");
      partial = text.slice(cut + 1);
      if (cut < 0) return;
      for (const ev of parseLines(text.slice(0, cut), core.lastId() + 1)) {
        if (core.closed) return;
        core.deliver(ev);
      }
    } finally {
      f.close();
    }
  };

  const loop = () => {
    if (core.closed) return;
    polling = poll().catch((e) => console.warn(`progress: tail ${path}: ${(e as Error).message}`))
      .finally(() => {
        if (!core.closed) timer = setTimeout(loop, pollMs);
      });
  };
  await poll();
  timer = setTimeout(loop, pollMs);

  return {
    runDir,
    path,
    readOnly: true,
    emit() {
      throw new Error(`the event log of ${runDir} is read-only here (tailing ${path})`);
    },
    subscribe: (fn) => core.subscribe(fn),
    since: (id) => core.since(id),
    lastId: () => core.lastId(),
    async close() {
      core.closed = true;
      core.listeners.clear();
      clearTimeout(timer);
      await polling;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The /progress snapshot

/** One stage in the timeline. */
export interface StageEntry {
  name: string;
  state: "start" | "skip" | "done" | "fail";
  started_at: string | null;
  ended_at: string | null;
  seconds: number | null;
  error?: string;
  reason?: string;
}

/** A checkpoint written by the trainer. */
export interface CheckpointEntry {
  dir: string;
  phase: string;
  step: number;
  samples: number;
  final: boolean;
  time: string;
}

/** The scores of one evaluated checkpoint. */
export interface EvalEntry {
  checkpoint: string;
  phase: string;
  samples: number;
  scores: Record<string, number>;
  time: string;
}

/** The checkpoint selection (latest one). */
export interface SelectionEntry {
  phase: string;
  primary: string;
  best: { dir: string; samples: number; scores: Record<string, number> };
  time: string;
}

/** What GET /progress returns. */
export interface ProgressSnapshot {
  run_id: string | null;
  /** "waiting" until the first run event. */
  state: "waiting" | "running" | "finished" | "failed";
  error: string | null;
  started_at: string | null;
  finished_at: string | null;
  /** Time of the latest event (a stale value on a running run means the process is gone). */
  updated_at: string | null;
  /** The running stage, else the latest stage seen. */
  stage: string | null;
  stage_state: StageEntry["state"] | null;
  stages: StageEntry[];
  phase: string | null;
  /** 0-based step of the latest metrics record (as in metrics.jsonl). */
  step: number | null;
  /** Optimizer steps done in this phase (step + 1). */
  steps_done: number | null;
  total_steps: number | null;
  epoch: number | null;
  samples_seen: number | null;
  total_samples: number | null;
  tokens_seen: number | null;
  loss: number | null;
  gradnorm: number | null;
  lr: number | null;
  /** Loss scale of the latest step (train.matmul_precision f16), else null. */
  loss_scale: number | null;
  /** Steps skipped because their gradient overflowed at the loss scale (f16), all phases. */
  skipped_steps: number;
  tokens_per_s: number | null;
  steps_per_s: number | null;
  elapsed_s: number | null;
  /** Seconds left in the current phase (null when unknown, 0 when finished). */
  eta_s: number | null;
  /** ISO time the current phase should end. */
  eta_at: string | null;
  last_checkpoint: CheckpointEntry | null;
  checkpoints: CheckpointEntry[];
  evals: EvalEntry[];
  selection: SelectionEntry | null;
  /** Count of events by type. */
  event_counts: Record<string, number>;
  last_event_id: number;
}

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === "string" ? v : null);

/** Metrics records kept to measure steps/s. */
const RATE_WINDOW = 20;

/** Folds run events into the /progress snapshot; `apply` is O(1) per event. */
export class ProgressState {
  #s: ProgressSnapshot;
  #window: { step: number; elapsed: number }[] = [];
  /** phase:step of every skipped step seen (a resumed phase replays some steps). */
  #skipped = new Set<string>();

  /** `runId` is the fallback run id until a run event names one. */
  constructor(runId: string | null = null) {
    this.#s = {
      run_id: runId,
      state: "waiting",
      error: null,
      started_at: null,
      finished_at: null,
      updated_at: null,
      stage: null,
      stage_state: null,
      stages: [],
      phase: null,
      step: null,
      steps_done: null,
      total_steps: null,
      epoch: null,
      samples_seen: null,
      total_samples: null,
      tokens_seen: null,
      loss: null,
      gradnorm: null,
      lr: null,
      loss_scale: null,
      skipped_steps: 0,
      tokens_per_s: null,
      steps_per_s: null,
      elapsed_s: null,
      eta_s: null,
      eta_at: null,
      last_checkpoint: null,
      checkpoints: [],
      evals: [],
      selection: null,
      event_counts: {},
      last_event_id: -1,
    };
  }

  /** Fold one event in. Unknown types only count. */
  apply(ev: RunEvent): void {
    const s = this.#s;
    s.last_event_id = Math.max(s.last_event_id, ev.id);
    s.updated_at = ev.time;
    s.event_counts[ev.type] = (s.event_counts[ev.type] ?? 0) + 1;
    switch (ev.type) {
      case "run":
        this.#run(ev);
        break;
      case "stage":
        this.#stage(ev);
        break;
      case "metrics":
        this.#metrics(ev);
        break;
      case "checkpoint": {
        const c: CheckpointEntry = {
          dir: String(ev.dir),
          phase: String(ev.phase ?? s.phase ?? ""),
          step: num(ev.step) ?? 0,
          samples: num(ev.samples) ?? 0,
          final: Boolean(ev.final),
          time: ev.time,
        };
        s.checkpoints = s.checkpoints.filter((x) => x.dir !== c.dir);
        s.checkpoints.push(c);
        s.last_checkpoint = c;
        break;
      }
      case "eval": {
        const e: EvalEntry = {
          checkpoint: String(ev.checkpoint),
          phase: String(ev.phase ?? ""),
          samples: num(ev.samples) ?? 0,
          scores: (ev.scores ?? {}) as Record<string, number>,
          time: ev.time,
        };
        s.evals = s.evals.filter((x) => x.checkpoint !== e.checkpoint);
        s.evals.push(e);
        break;
      }
      case "selection":
        s.selection = {
          phase: String(ev.phase ?? ""),
          primary: String(ev.primary ?? ""),
          best: ev.best as SelectionEntry["best"],
          time: ev.time,
        };
        break;
    }
  }

  #run(ev: RunEvent): void {
    const s = this.#s;
    const state = ev.state;
    if (state !== "running" && state !== "finished" && state !== "failed") return;
    s.run_id = str(ev.run_id) ?? s.run_id;
    s.total_steps = num(ev.total_steps) ?? s.total_steps;
    s.total_samples = num(ev.total_samples) ?? s.total_samples;
    s.state = state;
    if (state === "running") {
      // A new start (or a resume) of the run in this dir.
      s.started_at = ev.time;
      s.finished_at = null;
      s.error = null;
    } else {
      s.finished_at = ev.time;
      s.error = state === "failed" ? (str(ev.error) ?? "unknown error") : null;
    }
    this.#eta();
  }

  #stage(ev: RunEvent): void {
    const s = this.#s;
    const name = String(ev.name);
    const state = ev.state as StageEntry["state"];
    let entry = s.stages.find((x) => x.name === name);
    if (!entry || state === "start" || state === "skip") {
      // A stage re-runs in a resumed run: its entry moves to the end of the timeline.
      s.stages = s.stages.filter((x) => x.name !== name);
      entry = { name, state, started_at: ev.time, ended_at: null, seconds: null };
      s.stages.push(entry);
    }
    entry.state = state;
    if (state !== "start") {
      entry.ended_at = ev.time;
      entry.seconds = num(ev.seconds) ?? (state === "skip" ? 0 : null);
    }
    if (typeof ev.error === "string") entry.error = ev.error;
    if (typeof ev.reason === "string") entry.reason = ev.reason;
    const running = s.stages.findLast((x) => x.state === "start");
    s.stage = running?.name ?? name;
    s.stage_state = running ? "start" : state;
  }

  #metrics(ev: RunEvent): void {
    const s = this.#s;
    const phase = str(ev.phase) ?? s.phase;
    const step = num(ev.step);
    const elapsed = num(ev.elapsed_s);
    const last = this.#window.at(-1);
    if (phase !== s.phase || step === null || (last && step <= last.step)) {
      // New phase, or a resumed phase replaying steps after its last checkpoint.
      this.#window = [];
    }
    s.phase = phase;
    s.step = step;
    s.steps_done = step === null ? null : step + 1;
    s.total_steps = num(ev.total_steps) ?? s.total_steps;
    s.epoch = num(ev.epoch) ?? s.epoch;
    s.samples_seen = num(ev.samples_seen) ?? s.samples_seen;
    s.tokens_seen = num(ev.tokens_seen) ?? s.tokens_seen;
    s.loss = num(ev.loss);
    s.gradnorm = num(ev.gradnorm);
    s.lr = num(ev.lr);
    s.loss_scale = num(ev.loss_scale);
    if (ev.skipped === true) {
      this.#skipped.add(`${phase}:${step}`);
      s.skipped_steps = this.#skipped.size;
    }
    s.tokens_per_s = num(ev.tokens_per_s);
    s.elapsed_s = elapsed;
    if (step !== null && elapsed !== null) {
      this.#window.push({ step, elapsed });
      if (this.#window.length > RATE_WINDOW) this.#window.shift();
    }
    this.#eta();
  }

  #eta(): void {
    const s = this.#s;
    const w = this.#window;
    s.steps_per_s = null;
    if (w.length >= 2) {
      const dt = w[w.length - 1].elapsed - w[0].elapsed;
      if (dt > 0) s.steps_per_s = (w[w.length - 1].step - w[0].step) / dt;
    }
    s.eta_s = null;
    s.eta_at = null;
    if (s.state === "finished") {
      s.eta_s = 0;
      return;
    }
    if (s.state === "failed" || s.total_steps === null || s.steps_done === null) return;
    const left = Math.max(0, s.total_steps - s.steps_done);
    if (s.steps_per_s && s.steps_per_s > 0) {
      s.eta_s = left / s.steps_per_s;
    } else if (s.tokens_per_s && s.tokens_per_s > 0 && s.tokens_seen !== null) {
      // Too few records for a rate: tokens left (at the phase's mean tokens per step; the
      // trainer counts tokens_seen per phase) over tokens/s.
      const perStep = s.tokens_seen / s.steps_done;
      s.eta_s = (left * perStep) / s.tokens_per_s;
    }
    if (s.eta_s !== null && s.updated_at) {
      s.eta_at = new Date(Date.parse(s.updated_at) + s.eta_s * 1000).toISOString();
    }
  }

  /** The current snapshot (a deep copy: safe to serialize or keep). */
  snapshot(): ProgressSnapshot {
    return structuredClone(this.#s);
  }

  /** The snapshot as JSON, without copying first. */
  toJSON(): ProgressSnapshot {
    return this.#s;
  }
}

/** A ProgressState fed by `log`: its history now, every later event as it comes. */
export function followLog(log: EventLog, runId: string | null = null): {
  state: ProgressState;
  stop: () => void;
} {
  const state = new ProgressState(runId);
  for (const ev of log.since(-1)) state.apply(ev);
  // Same tick as the replay (emit is synchronous): no event falls between the two.
  const stop = log.subscribe((ev) => state.apply(ev));
  return { state, stop };
}
