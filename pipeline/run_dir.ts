// Run directory: creation, a lock so two runs never share one, atomic writes, config.resolved.yaml.
import { dirname, join } from "node:path";
import { UserError } from "./errors.ts";

let tmpCounter = 0;

/**
 * Write `data` to `path` atomically: a temporary file in the same folder, flushed to disk, then
 * renamed over `path` (readers see the old file or the new one, never half of one). Creates the
 * parent folder when missing.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  await Deno.mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}-${tmpCounter++}`;
  try {
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.syncData();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** writeFileAtomic of `value` as indented JSON with a final newline. */
export function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  return writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}

/** Parse a JSON file, or null when it does not exist (other errors, bad JSON included, throw). */
export async function readJsonIfExists<T = unknown>(path: string): Promise<T | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  return JSON.parse(text) as T;
}

/** Name of the lock file inside a run dir. */
export const LOCK_FILE = "run.lock";

/** What a lock file records about its holder. */
interface LockInfo {
  pid: number;
  host: string;
  started: string;
  token: string;
}

/** A held run-dir lock. */
export interface RunLock {
  path: string;
  /** Remove the lock file (only if it is still ours); safe to call twice. */
  release(): Promise<void>;
}

function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown";
  }
}

/** Whether a process of this host is alive; true when it cannot be told (no /proc). */
function pidAlive(pid: number): boolean {
  if (Deno.build.os !== "linux") return true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Take `<runDir>/run.lock` (created with create-new, so two processes cannot both win). A lock
 * left behind by a dead process of this host is taken over; a live one is a UserError.
 */
export async function acquireRunLock(runDir: string): Promise<RunLock> {
  await Deno.mkdir(runDir, { recursive: true });
  const path = join(runDir, LOCK_FILE);
  const info: LockInfo = {
    pid: Deno.pid,
    host: hostName(),
    started: new Date().toISOString(),
    token: crypto.randomUUID(),
  };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const f = await Deno.open(path, { write: true, createNew: true });
      try {
        await f.write(new TextEncoder().encode(JSON.stringify(info) + "\n"));
      } finally {
        f.close();
      }
      const onUnload = () => releaseSync(path, info.token);
      globalThis.addEventListener("unload", onUnload);
      let released = false;
      return {
        path,
        release: () => {
          if (!released) {
            released = true;
            globalThis.removeEventListener("unload", onUnload);
            releaseSync(path, info.token);
          }
          return Promise.resolve();
        },
      };
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    let holder: LockInfo | null = null;
    try {
      holder = JSON.parse(await Deno.readTextFile(path)) as LockInfo;
    } catch {
      holder = null; // unreadable or half-written: treated as held (below) unless it vanished
    }
    const stale = holder !== null && holder.host === info.host && holder.pid !== Deno.pid &&
      !pidAlive(holder.pid);
    if (stale && attempt === 0) {
      await Deno.remove(path).catch(() => {});
      continue;
    }
    const who = holder ? `pid ${holder.pid} on ${holder.host} since ${holder.started}` : "?";
    throw new UserError(
      `run dir ${runDir} is in use (${who})`,
      `wait for that run to finish or pick another run dir (--run-dir); ` +
        `delete ${path} only if that process is gone`,
    );
  }
  throw new UserError(`could not lock run dir ${runDir}`);
}

function releaseSync(path: string, token: string): void {
  try {
    const held = JSON.parse(Deno.readTextFileSync(path)) as LockInfo;
    if (held.token === token) Deno.removeSync(path);
  } catch {
    // already gone or replaced: nothing of ours to remove
  }
}

/** Name of the resolved config written into every run dir. */
export const RESOLVED_CONFIG_FILE = "config.resolved.yaml";

/** A prepared, locked run dir. */
export interface RunDir {
  /** Absolute path of the run dir. */
  path: string;
  /** `<run dir>/stages`: where runStages keeps its `<name>.done.json` records. */
  stagesDir: string;
  lock: RunLock;
  /** Release the lock. */
  release(): Promise<void>;
}

/**
 * Create the run dir (and its stages/ folder), lock it, and write `config.resolved.yaml`
 * (pass `resolvedYaml(cfg)` from config.ts: the fully resolved config with absolute paths).
 */
export async function prepareRunDir(runDir: string, resolvedConfigYaml: string): Promise<RunDir> {
  const lock = await acquireRunLock(runDir);
  try {
    const stagesDir = join(runDir, "stages");
    await Deno.mkdir(stagesDir, { recursive: true });
    await writeFileAtomic(join(runDir, RESOLVED_CONFIG_FILE), resolvedConfigYaml);
    return { path: runDir, stagesDir, lock, release: () => lock.release() };
  } catch (e) {
    await lock.release();
    throw e;
  }
}

/** Whether `path` exists (following links); errors other than "not found" are raised. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
