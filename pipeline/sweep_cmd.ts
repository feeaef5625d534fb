// `deno task sweep SWEEP.yaml [--shard i/n] | --gather DIR...`: run, shard and merge sweeps; `report DIR`: rewrite a report.
import { resolve } from "node:path";
import { UserError } from "./errors.ts";
import {
  comparisonTable,
  membersTable,
  REPORT_FILE,
  sweepSummary,
  writeRunReport,
} from "./report.ts";
import {
  checkMemberConfigs,
  claimSweepDir,
  continueMember,
  finalizeSweep,
  gatherSweep,
  loadSweepSpec,
  parseShard,
  prepareBase,
  probeMember,
  readSpecFile,
  readSweepFile,
  shardMembers,
  type SweepFile,
  type SweepSpec,
} from "./sweep.ts";

/** Usage line of the sweep command. */
export const SWEEP_USAGE = "deno task sweep SWEEP.yaml [--out DIR] [--set key=value ...] " +
  "[--shard i/n [--stage probe|continue]] | deno task sweep [SWEEP.yaml] --gather DIR... [--out DIR] " +
  "| deno task sweep SWEEP.yaml --list [--shards N]";

/** node:util parseArgs options of the sweep command (main.ts registers them). */
export const SWEEP_OPTIONS = {
  out: { type: "string" },
  set: { type: "string", multiple: true },
  shard: { type: "string" },
  stage: { type: "string" },
  gather: { type: "boolean" },
  list: { type: "boolean" },
  shards: { type: "string" },
} as const;

/** Usage line of the report command. */
export const REPORT_USAGE = "deno task report DIR   (a run dir or a sweep dir)";

async function isDir(p: string): Promise<boolean> {
  try {
    return (await Deno.stat(p)).isDirectory;
  } catch {
    return false;
  }
}

function defaultOut(name: string): string {
  return resolve("runs", "sweeps", name);
}

/** Print the members table, the validation lines and the comparison tables of a sweep. */
export function printSweep(s: SweepFile, dir: string): void {
  console.log(`\nsweep ${s.name}: ${s.state} (${dir})\n`);
  console.log(membersTable(s));
  console.log(sweepSummary(s));
  for (const t of s.spec.tables) {
    console.log(`${t.title}\n`);
    console.log(comparisonTable(s.members, t.rows));
  }
  console.log(`report: ${resolve(dir, REPORT_FILE)}`);
}

/** The sweep command (see SWEEP_USAGE); returns the exit code. */
export async function sweepCommand(
  values: Record<string, unknown>,
  positionals: string[],
): Promise<number> {
  const sets = (values.set as string[] | undefined) ?? [];
  const files: string[] = [], dirs: string[] = [];
  // Folders are sweep dirs to gather, files are sweep files; a missing path goes by its extension.
  for (const p of positionals) {
    const kind = await Deno.stat(p).then((st) => (st.isDirectory ? "dir" : "file"), () => null);
    (kind === "dir" || (kind === null && !/\.ya?ml$/i.test(p)) ? dirs : files).push(p);
  }
  if (files.length > 1) {
    throw new UserError(`expected one sweep file, got ${files.join(", ")}`, SWEEP_USAGE);
  }
  const file = files[0] ?? null;

  if (values.gather) {
    if (!dirs.length) {
      throw new UserError(
        "--gather needs the sweep dirs to merge",
        "deno task sweep --gather A B --out C",
      );
    }
    const spec = file ? await loadSweepSpec(file, sets) : null;
    const name = spec?.name ?? (await readSpecFile(resolve(dirs[0])))?.name ?? "sweep";
    const out = resolve((values.out as string | undefined) ?? defaultOut(name));
    if (spec) await prepareBase(spec, out);
    const s = await gatherSweep(dirs, out, spec);
    printSweep(s, out);
    const missing = s.members.filter((m) => m.status === "missing").map((m) => m.name);
    if (missing.length) {
      console.error(`error: no probe result for ${missing.join(", ")}`);
      console.error("hint: gather the folders of every shard (each shard's --stage probe output)");
      return 1;
    }
    return 0;
  }
  if (dirs.length) {
    throw new UserError(`${dirs[0]} is a folder`, "folders are for --gather; " + SWEEP_USAGE);
  }
  if (!file) throw new UserError("expected a sweep file", SWEEP_USAGE);
  const spec = await loadSweepSpec(file, sets);

  if (values.list) {
    const n = values.shards === undefined ? spec.members.length : Number(values.shards);
    if (!Number.isInteger(n) || n < 1) {
      throw new UserError(`--shards ${values.shards}: expected a positive integer`);
    }
    const shards = Math.min(n, spec.members.length);
    console.log(JSON.stringify({
      name: spec.name,
      members: spec.members.map((m) => ({ index: m.index, name: m.name, shard: m.index % shards })),
      matrix: {
        include: Array.from({ length: shards }, (_, i) => ({
          shard: `${i}/${shards}`,
          index: i,
          members: shardMembers(spec.members, { i, n: shards }).map((m) => m.name).join(" "),
        })),
      },
    }));
    return 0;
  }

  const out = resolve((values.out as string | undefined) ?? defaultOut(spec.name));
  await prepareBase(spec, out);
  await claimSweepDir(spec, out);
  const configs = await checkMemberConfigs(spec, out);
  const opts = { configs };

  if (values.shard !== undefined) {
    const shard = parseShard(String(values.shard));
    const mine = shardMembers(spec.members, shard);
    const ranked = await readSweepFile(out);
    const haveRanking = ranked !== null && ranked.hash === spec.hash && ranked.state !== "probing";
    const stage = (values.stage as string | undefined) ?? (haveRanking ? "continue" : "probe");
    if (stage !== "probe" && stage !== "continue") {
      throw new UserError(`--stage ${stage}: expected probe or continue`);
    }
    console.log(
      `sweep ${spec.name}: shard ${shard.i}/${shard.n}, stage ${stage}: ` +
        (mine.map((m) => m.name).join(", ") || "no members"),
    );
    if (stage === "probe") {
      for (const m of mine) await probeMember(spec, out, m, opts);
    } else {
      if (!haveRanking) {
        throw new UserError(
          `no ranking of this sweep in ${out}/sweep.json`,
          "gather every shard's probe first (deno task sweep --gather DIR... --out DIR) and put " +
            "its sweep.json into this --out folder",
        );
      }
      for (const m of mine) {
        const d = ranked!.members.find((x) => x.name === m.name);
        if (d?.decision === "continue" || spec.validate) await continueMember(spec, out, m, opts);
        else {console.log(
            `sweep ${spec.name}: member ${m.name} stops after its probe (rank ${d?.rank ?? "-"})`,
          );}
      }
    }
    console.log(`sweep ${spec.name}: shard ${shard.i}/${shard.n} done; results in ${out}`);
    return 0;
  }
  if (values.stage !== undefined) throw new UserError("--stage needs --shard i/n");

  // The whole sweep on this machine: probe all, rank, continue the top k, report.
  for (const m of spec.members) await probeMember(spec, out, m, opts);
  let s = await finalizeSweep(spec, out);
  for (const m of s.members) {
    if (m.decision === "continue" || spec.validate) {
      await continueMember(spec, out, spec.members[m.index], opts);
    }
  }
  s = await finalizeSweep(spec, out);
  printSweep(s, out);
  return 0;
}

/** `report DIR`: rewrite the report of a run dir, or of a sweep dir (with sweep.json). */
export async function reportCommand(
  _values: Record<string, unknown>,
  positionals: string[],
): Promise<number> {
  if (positionals.length !== 1) throw new UserError("expected one folder", REPORT_USAGE);
  const dir = resolve(positionals[0]);
  if (!(await isDir(dir))) throw new UserError(`${positionals[0]}: folder not found`, REPORT_USAGE);
  const spec: SweepSpec | null = await readSpecFile(dir);
  if (spec) {
    const s = await finalizeSweep(spec, dir);
    printSweep(s, dir);
    return 0;
  }
  console.log(`report: ${await writeRunReport(dir)}`);
  return 0;
}
