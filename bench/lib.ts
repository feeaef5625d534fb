// Benchmark helpers: timing GPU dispatch lists, printing tables and writing bench/out/<suite>.json.
import type { Dispatch, Gpu } from "../kernels/runtime.ts";

/** One kernel benchmark case: built once, timed over repeated submissions. */
export interface KernelCase {
  kernel: string;
  shape: string;
  /** Floating-point operations of one run (for GFLOP/s), if meaningful. */
  flops?: number;
  /** Bytes moved by one run (for GB/s), if meaningful. */
  bytes?: number;
  /** Build buffers and dispatches; `check` returns the max relative error against a reference. */
  setup(gpu: Gpu): Promise<KernelSetup> | KernelSetup;
}

/** What a case's setup returns. */
export interface KernelSetup {
  dispatches: Dispatch[];
  check?: () => Promise<{ maxRelErr: number; tolerance: number }>;
  cleanup?: () => void;
}

/** One measured row. */
export interface KernelRow {
  kernel: string;
  shape: string;
  ms: number;
  gflops: number | null;
  gbs: number | null;
  maxRelErr: number | null;
  tolerance: number | null;
}

/**
 * Time `dispatches`: one warm-up, then `reps` submissions in a row and one wait, so the ≥10 ms
 * cost of a queue wait is spread over the repetitions. Returns ms per run.
 */
export async function timeDispatches(
  gpu: Gpu,
  dispatches: Dispatch[],
  minMs = 300,
): Promise<number> {
  gpu.run(dispatches, "bench.warmup");
  await gpu.sync("bench.warmup");
  let reps = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) gpu.run(dispatches, "bench");
    await gpu.sync("bench");
    const ms = performance.now() - t0;
    if (ms >= minMs || reps >= 1024) return ms / reps;
    reps = Math.min(1024, Math.max(reps * 2, Math.ceil((reps * minMs) / Math.max(ms, 1))));
  }
}

/** Run each case, print a table, return the rows. */
export async function runKernelCases(gpu: Gpu, cases: KernelCase[]): Promise<KernelRow[]> {
  const rows: KernelRow[] = [];
  for (const c of cases) {
    const s = await c.setup(gpu);
    const ms = await timeDispatches(gpu, s.dispatches);
    const chk = s.check ? await s.check() : null;
    s.cleanup?.();
    const row: KernelRow = {
      kernel: c.kernel,
      shape: c.shape,
      ms,
      gflops: c.flops ? c.flops / (ms * 1e6) : null,
      gbs: c.bytes ? c.bytes / (ms * 1e6) : null,
      maxRelErr: chk?.maxRelErr ?? null,
      tolerance: chk?.tolerance ?? null,
    };
    rows.push(row);
    printRow(row);
  }
  return rows;
}

function printRow(r: KernelRow): void {
  const f = (v: number | null, d = 2) => (v === null ? "-" : v.toFixed(d));
  const e = (v: number | null) => (v === null ? "-" : v.toExponential(2));
  console.log(
    `${r.kernel.padEnd(30)} ${r.shape.padEnd(26)} ${f(r.ms, 3).padStart(10)} ` +
      `${f(r.gflops).padStart(9)} ${f(r.gbs).padStart(8)} ${e(r.maxRelErr).padStart(9)} ${
        e(r.tolerance).padStart(8)
      }`,
  );
}

/** Print the table header used by {@link runKernelCases}. */
export function printKernelHeader(): void {
  console.log(
    `${"kernel".padEnd(30)} ${"shape".padEnd(26)} ${"ms".padStart(10)} ${"GFLOP/s".padStart(9)} ` +
      `${"GB/s".padStart(8)} ${"max rel".padStart(9)} ${"tol".padStart(8)}`,
  );
}

/** Write `bench/out/<suite>.json` with the date and adapter. */
export async function writeResult(suite: string, gpu: Gpu | null, data: unknown): Promise<string> {
  const dir = new URL("./out/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  const path = new URL(`${suite}.json`, dir);
  const body = {
    suite,
    date: new Date().toISOString(),
    adapter: gpu?.summary ?? null,
    deno: Deno.version.deno,
    data,
  };
  await Deno.writeTextFile(path, JSON.stringify(body, null, 2) + "\n");
  return path.pathname;
}
