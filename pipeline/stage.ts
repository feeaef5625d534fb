// Stage runner: ordered stages, skipped on re-run when their hashed inputs match the last success.
import { join } from "node:path";
import { readJsonIfExists, writeJsonAtomic } from "./run_dir.ts";

// ---------------------------------------------------------------------------------------------
// Events

/** Any event: a `type` tag plus JSON-able fields. */
export interface BaseEvent {
  type: string;
}

/** A stage changing state; `time` is epoch milliseconds. */
export interface StageEvent extends BaseEvent {
  type: "stage";
  name: string;
  state: "start" | "skip" | "done" | "fail";
  time: number;
  /** Hex SHA-256 of the stage's inputs (chained with the stages before it). */
  inputsHash?: string;
  /** Wall seconds the stage ran (done, fail). */
  seconds?: number;
  /** The outputs summary (done, and skip: the recorded one). */
  outputs?: unknown;
  /** Why it was skipped (skip). */
  reason?: string;
  /** The error message (fail). */
  error?: string;
}

/** Listener of an emitter. */
export type Listener<E> = (event: E) => void;

/** A tiny typed event emitter that also keeps the most recent events for late subscribers. */
export interface Emitter<E extends BaseEvent> {
  /** Subscribe; returns the unsubscribe function. */
  on(listener: Listener<E>): () => void;
  /** Deliver to every listener in subscription order; a throwing listener does not stop the rest. */
  emit(event: E): void;
  /** The last `historyLimit` events, oldest first (a copy). */
  history(): E[];
}

/** Make an emitter keeping the last `historyLimit` events (default 1000). */
export function createEmitter<E extends BaseEvent>(historyLimit = 1000): Emitter<E> {
  const listeners = new Set<Listener<E>>();
  const recent: E[] = [];
  return {
    on(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    emit(event) {
      recent.push(event);
      if (recent.length > historyLimit) recent.splice(0, recent.length - historyLimit);
      for (const l of [...listeners]) {
        try {
          l(event);
        } catch (e) {
          console.error(`event listener failed on ${event.type}: ${(e as Error).message}`);
        }
      }
    },
    history: () => recent.slice(),
  };
}

// ---------------------------------------------------------------------------------------------
// Stages

/** What every stage sees; the pipeline adds its own fields (config, GPU, ...). */
export interface StageContext {
  /** Absolute run dir; records go to `<runDir>/stages/<name>.done.json`. */
  runDir: string;
  /** Where stage events go: any emitter whose event union includes StageEvent. */
  events: { emit(event: StageEvent): void };
  /** Outputs summary of every stage run or skipped so far, by stage name (filled by runStages). */
  outputs?: Record<string, unknown>;
  /** Re-run every stage even when its record matches. */
  force?: boolean;
}

/** One step of the pipeline: a plain object. */
export interface Stage<C extends StageContext = StageContext> {
  name: string;
  /** JSON-able description of everything the result depends on (hashed; include file stamps). */
  inputs(ctx: C): unknown | Promise<unknown>;
  /** Do the work; resolve to a JSON-able outputs summary (recorded, handed to later stages). */
  run(ctx: C): Promise<unknown>;
  /** Optional: whether a recorded success is still usable (e.g. its output files still exist). */
  valid?(ctx: C, record: StageRecord): boolean | Promise<boolean>;
}

/** Contents of `<runDir>/stages/<name>.done.json`. */
export interface StageRecord {
  version: 1;
  name: string;
  /** Hex SHA-256 of {inputs, upstream} (upstream: the hashes of the stages before this one). */
  inputsHash: string;
  inputs: unknown;
  outputs: unknown;
  startedAt: string;
  finishedAt: string;
  seconds: number;
}

/** One stage's fate in a runStages call. */
export interface StageResult {
  name: string;
  state: "done" | "skip";
  inputsHash: string;
  outputs: unknown;
  seconds: number;
}

/** JSON with object keys sorted at every level (so equal inputs hash equally); undefined dropped. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) out[k] = (v as Record<string, unknown>)[k];
      return out;
    }
    return v;
  });
}

/** Hex SHA-256 of canonicalJson(value). */
export async function hashJson(value: unknown): Promise<string> {
  const bytes = new TextEncoder().encode(canonicalJson(value) ?? "null");
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** {path, size, mtimeMs} of a file (null when missing): put it in a stage's inputs to track it. */
export async function fileStamp(
  path: string,
): Promise<{ path: string; size: number; mtimeMs: number | null } | null> {
  try {
    const st = await Deno.stat(path);
    return { path, size: st.size, mtimeMs: st.mtime?.getTime() ?? null };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** Path of a stage's success record. */
export function stageRecordPath(runDir: string, name: string): string {
  return join(runDir, "stages", `${name}.done.json`);
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * Run `stages` in order. A stage whose inputs hash (chained with the hashes of the stages before
 * it, so a changed upstream stage re-runs everything after it) equals the one in its
 * `stages/<name>.done.json` record, and whose `valid` (if any) accepts that record, is skipped
 * and its recorded outputs are reused. Otherwise it runs and, on success, its record is written
 * atomically. Emits a `stage` event per transition; a failure emits `fail` and rethrows.
 */
export async function runStages<C extends StageContext>(
  stages: Stage<C>[],
  ctx: C,
): Promise<StageResult[]> {
  const seen = new Set<string>();
  for (const s of stages) {
    if (!NAME_RE.test(s.name)) throw new Error(`bad stage name ${JSON.stringify(s.name)}`);
    if (seen.has(s.name)) throw new Error(`duplicate stage name ${s.name}`);
    seen.add(s.name);
  }
  ctx.outputs ??= {};
  const emit = (e: Omit<StageEvent, "type" | "time">) =>
    ctx.events.emit({ type: "stage", time: Date.now(), ...e });
  const upstream: string[] = [];
  const results: StageResult[] = [];
  for (const stage of stages) {
    const inputs = await stage.inputs(ctx);
    const inputsHash = await hashJson({ inputs, upstream });
    const recordPath = stageRecordPath(ctx.runDir, stage.name);
    // An unreadable record (hand-edited, truncated) only means the stage runs again.
    const record = ctx.force ? null : await readJsonIfExists<StageRecord>(recordPath).catch((e) => {
      if (e instanceof SyntaxError) return null;
      throw e;
    });
    if (record && record.version === 1 && record.inputsHash === inputsHash) {
      if (!stage.valid || await stage.valid(ctx, record)) {
        ctx.outputs[stage.name] = record.outputs;
        upstream.push(inputsHash);
        results.push({
          name: stage.name,
          state: "skip",
          inputsHash,
          outputs: record.outputs,
          seconds: 0,
        });
        emit({
          name: stage.name,
          state: "skip",
          inputsHash,
          outputs: record.outputs,
          reason: `inputs unchanged since ${record.finishedAt}`,
        });
        continue;
      }
    }
    // A stale record must not survive a failed or interrupted re-run.
    await Deno.remove(recordPath).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    const startedAt = new Date();
    const t0 = performance.now();
    emit({ name: stage.name, state: "start", inputsHash });
    let outputs: unknown;
    try {
      outputs = await stage.run(ctx);
    } catch (e) {
      const seconds = (performance.now() - t0) / 1000;
      emit({
        name: stage.name,
        state: "fail",
        inputsHash,
        seconds,
        error: e instanceof Error ? e.message : String(e),
      });
      throw e;
    }
    const seconds = (performance.now() - t0) / 1000;
    const done: StageRecord = {
      version: 1,
      name: stage.name,
      inputsHash,
      inputs,
      outputs: outputs ?? null,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      seconds,
    };
    await writeJsonAtomic(recordPath, done);
    ctx.outputs[stage.name] = done.outputs;
    upstream.push(inputsHash);
    results.push({ name: stage.name, state: "done", inputsHash, outputs: done.outputs, seconds });
    emit({ name: stage.name, state: "done", inputsHash, seconds, outputs: done.outputs });
  }
  return results;
}
