// Stage runner (skip on unchanged inputs, chained invalidation, events) and run-dir helpers.
import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { join } from "node:path";
import { UserError } from "../../pipeline/errors.ts";
import {
  acquireRunLock,
  LOCK_FILE,
  prepareRunDir,
  readJsonIfExists,
  RESOLVED_CONFIG_FILE,
  writeFileAtomic,
  writeJsonAtomic,
} from "../../pipeline/run_dir.ts";
import {
  canonicalJson,
  createEmitter,
  hashJson,
  runStages,
  type Stage,
  type StageContext,
  type StageEvent,
  type StageRecord,
  stageRecordPath,
} from "../../pipeline/stage.ts";

interface Ctx extends StageContext {
  params: Record<string, number>;
  ran: string[];
}

function stage(name: string, opts: { fail?: boolean; valid?: boolean } = {}): Stage<Ctx> {
  return {
    name,
    inputs: (ctx) => ({ p: ctx.params[name] ?? 0 }),
    run: (ctx) => {
      ctx.ran.push(name);
      if (opts.fail) return Promise.reject(new Error(`${name} broke`));
      return Promise.resolve({ out: `${name}:${ctx.params[name] ?? 0}`, seen: { ...ctx.outputs } });
    },
    valid: opts.valid === undefined ? undefined : () => opts.valid!,
  };
}

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "stage_test_" });
}

function newCtx(runDir: string, params: Record<string, number> = {}) {
  const events = createEmitter<StageEvent>();
  const seen: StageEvent[] = [];
  events.on((e) => seen.push(e));
  const ctx: Ctx = { runDir, events, params, ran: [] };
  return { ctx, seen };
}

const states = (evs: StageEvent[]) => evs.map((e) => `${e.name}:${e.state}`);

Deno.test("stages run in order, record success, and are skipped when inputs are unchanged", async () => {
  const dir = await tempDir();
  const stages = [stage("a"), stage("b"), stage("c")];
  const first = newCtx(dir);
  const r1 = await runStages(stages, first.ctx);
  deepStrictEqual(first.ctx.ran, ["a", "b", "c"]);
  deepStrictEqual(states(first.seen), [
    "a:start",
    "a:done",
    "b:start",
    "b:done",
    "c:start",
    "c:done",
  ]);
  deepStrictEqual(r1.map((r) => r.state), ["done", "done", "done"]);
  // Later stages see the outputs of earlier ones.
  deepStrictEqual(first.ctx.outputs!.b, { out: "b:0", seen: { a: { out: "a:0", seen: {} } } });
  const rec = await readJsonIfExists<StageRecord>(stageRecordPath(dir, "b"));
  ok(rec && rec.version === 1 && rec.name === "b" && rec.seconds >= 0);
  deepStrictEqual(rec!.inputs, { p: 0 });
  equal(rec!.inputsHash, r1[1].inputsHash);

  const again = newCtx(dir);
  const r2 = await runStages(stages, again.ctx);
  deepStrictEqual(again.ctx.ran, []);
  deepStrictEqual(states(again.seen), ["a:skip", "b:skip", "c:skip"]);
  // A skipped stage hands on its recorded outputs.
  deepStrictEqual(again.ctx.outputs, first.ctx.outputs);
  deepStrictEqual(r2.map((r) => r.inputsHash), r1.map((r) => r.inputsHash));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a changed stage re-runs with every stage after it; earlier ones stay skipped", async () => {
  const dir = await tempDir();
  const stages = [stage("a"), stage("b"), stage("c")];
  await runStages(stages, newCtx(dir).ctx);
  const changed = newCtx(dir, { b: 1 });
  await runStages(stages, changed.ctx);
  deepStrictEqual(changed.ctx.ran, ["b", "c"]);
  deepStrictEqual(states(changed.seen), ["a:skip", "b:start", "b:done", "c:start", "c:done"]);
  // Force re-runs everything; valid() = false re-runs that stage only (same inputs downstream).
  const forced = newCtx(dir, { b: 1 });
  forced.ctx.force = true;
  await runStages(stages, forced.ctx);
  deepStrictEqual(forced.ctx.ran, ["a", "b", "c"]);
  const invalid = newCtx(dir, { b: 1 });
  await runStages([stage("a"), stage("b", { valid: false }), stage("c")], invalid.ctx);
  deepStrictEqual(invalid.ctx.ran, ["b"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a failing stage emits fail, leaves no record and stops the run", async () => {
  const dir = await tempDir();
  await runStages([stage("a"), stage("b")], newCtx(dir).ctx);
  const broken = newCtx(dir, { b: 2 });
  await rejects(runStages([stage("a"), stage("b", { fail: true }), stage("c")], broken.ctx), {
    message: "b broke",
  });
  deepStrictEqual(states(broken.seen), ["a:skip", "b:start", "b:fail"]);
  equal(broken.seen[2].error, "b broke");
  equal(await readJsonIfExists(stageRecordPath(dir, "b")), null, "old record removed");
  await rejects(runStages([stage("x"), stage("x")], newCtx(dir).ctx), /duplicate stage name/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("canonical JSON and hashes ignore key order", async () => {
  equal(
    canonicalJson({ b: 1, a: { d: [1, { z: 0, y: 1 }], c: 2 } }),
    canonicalJson({ a: { c: 2, d: [1, { y: 1, z: 0 }] }, b: 1 }),
  );
  equal(await hashJson({ x: 1, y: 2 }), await hashJson({ y: 2, x: 1 }));
  ok((await hashJson({ x: 1 })) !== (await hashJson({ x: 2 })));
  equal((await hashJson(null)).length, 64);
});

Deno.test("emitter: history, unsubscribe, a throwing listener does not stop others", () => {
  const em = createEmitter<{ type: "t"; n: number }>(3);
  const got: number[] = [];
  const off = em.on((e) => got.push(e.n));
  const errors: string[] = [];
  const origError = console.error;
  console.error = (m: string) => errors.push(m);
  const offBad = em.on(() => {
    throw new Error("listener bug");
  });
  try {
    for (let n = 0; n < 5; n++) em.emit({ type: "t", n });
  } finally {
    console.error = origError;
    offBad();
  }
  deepStrictEqual(got, [0, 1, 2, 3, 4]);
  equal(errors.length, 5);
  off();
  em.emit({ type: "t", n: 5 });
  deepStrictEqual(got, [0, 1, 2, 3, 4]);
  deepStrictEqual(em.history().map((e) => e.n), [3, 4, 5]);
});

Deno.test("atomic writes leave only the final file", async () => {
  const dir = await tempDir();
  const p = join(dir, "sub", "x.json");
  await writeJsonAtomic(p, { a: 1 });
  await writeFileAtomic(join(dir, "sub", "y.txt"), new Uint8Array([104, 105]));
  await writeJsonAtomic(p, { a: 2 });
  deepStrictEqual(await readJsonIfExists(p), { a: 2 });
  equal(await Deno.readTextFile(join(dir, "sub", "y.txt")), "hi");
  const names = [...Deno.readDirSync(join(dir, "sub"))].map((e) => e.name).sort();
  deepStrictEqual(names, ["x.json", "y.txt"]);
  equal(await readJsonIfExists(join(dir, "missing.json")), null);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("run-dir lock: one holder at a time; a dead holder's lock is taken over", async () => {
  const dir = await tempDir();
  const run = await prepareRunDir(join(dir, "run"), "a: 1\n");
  equal(await Deno.readTextFile(join(run.path, RESOLVED_CONFIG_FILE)), "a: 1\n");
  ok(Deno.statSync(run.stagesDir).isDirectory);
  await rejects(acquireRunLock(run.path), (e: unknown) => {
    ok(e instanceof UserError);
    ok(/is in use \(pid \d+/.test((e as Error).message), (e as Error).message);
    return true;
  });
  await run.release();
  await run.release(); // twice is fine
  const again = await acquireRunLock(run.path);
  await again.release();

  // A lock left by a process that has exited (on Linux, where liveness can be checked).
  if (Deno.build.os === "linux") {
    const child = new Deno.Command("true").spawn();
    await child.status;
    const lockPath = join(run.path, LOCK_FILE);
    await Deno.writeTextFile(
      lockPath,
      JSON.stringify({ pid: child.pid, host: Deno.hostname(), started: "then", token: "old" }),
    );
    const taken = await acquireRunLock(run.path);
    ok(JSON.parse(await Deno.readTextFile(lockPath)).pid === Deno.pid);
    await taken.release();
  }
  ok(![...Deno.readDirSync(run.path)].some((e) => e.name === LOCK_FILE), "lock removed");
  await Deno.remove(dir, { recursive: true });
});
