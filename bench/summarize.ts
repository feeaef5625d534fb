// Summarize the `bench train` results of a GPU session (every *train.json in a folder) as one table.
//
// Usage: deno run -A bench/summarize.ts DIR   (bench/gpu_session.sh runs it after every phase)
// One row per file: model, GEMM precision, ours tokens/s and ms/step, matmul and attention ms per
// step (GPU timestamps), the attention form of each pass (autotune), MFU, and each PyTorch run's
// tokens/s with our ratio and loss check.
import { join } from "node:path";
import type { TrainBenchResult } from "./train.ts";

/** One markdown row per train result. */
export function summaryRows(results: { file: string; r: TrainBenchResult }[]): string[] {
  const f0 = (x: number) => x.toLocaleString("en-US", { maximumFractionDigits: 0 });
  const rows = [
    "| file | model | GEMMs | ours tok/s | ms/step | matmul ms | attention ms | attention forms | MFU | PyTorch runs (tok/s, ours/torch, losses) |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
  ];
  for (const { file, r } of results) {
    const o = r.ours;
    const ops = o.breakdown?.ops ?? [];
    const opMs = (re: RegExp) => {
      const hit = ops.filter((k) => re.test(k.name));
      return hit.length ? hit.reduce((a, k) => a + k.msPerStep, 0).toFixed(1) : "-";
    };
    const torch = r.torch.map((t) =>
      `${t.impl} ${t.dtype} ${f0(t.tokens_per_s)} (${t.ratio.toFixed(3)}×, ${
        t.lossOk === null ? "unchecked" : t.lossOk ? "ok" : "MISMATCH"
      } ${t.lossMaxRelDiff.toExponential(1)})`
    ).join("; ");
    const gemms = o.gemms ? `${r.matmulPrecision} (${o.gemms.f16} f16)` : r.matmulPrecision;
    // "forward band, backward band-split": the form of each pass (GPU attention kernels only)
    const forms = Object.entries(o.tune?.attention?.forms ?? {})
      .map(([key, form]) => `${key.split(" ")[0]} ${form}`).join(", ") || "-";
    rows.push(
      `| ${file} | ${r.model.name} | ${gemms} | ${f0(o.tokensPerS)} | ${o.stepMs.toFixed(1)} | ${
        opMs(/^matmul/)
      } | ${opMs(/^attention/)} | ${forms} | ${
        o.mfu === null ? "-" : (100 * o.mfu).toFixed(1) + " %"
      } | ${torch || "-"} |`,
    );
  }
  return rows;
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) {
    console.error("usage: deno run -A bench/summarize.ts DIR");
    Deno.exit(2);
  }
  const results: { file: string; r: TrainBenchResult }[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (!e.isFile || !e.name.endsWith("train.json")) continue;
    const j = JSON.parse(await Deno.readTextFile(join(dir, e.name)));
    results.push({ file: e.name, r: (j.data ?? j) as TrainBenchResult });
  }
  results.sort((a, b) => a.file.localeCompare(b.file));
  console.log(results.length ? summaryRows(results).join("\n") : `no *train.json in ${dir}`);
}
