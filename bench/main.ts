// `deno task bench <suite>`: run one benchmark suite; each prints a table and writes bench/out/<suite>.json.
import { parseArgs } from "node:util";
import { TRAIN_FLAGS } from "./train.ts";

const SUITES: Record<string, string> = {
  kernels: "every WGSL kernel: ms, GFLOP/s or GB/s, max rel err",
  data: "tokenization throughput, packing efficiency, planning time",
  train: "training throughput, step breakdown, optionally against PyTorch",
  eval: "evaluation tokens/s",
};

function parse() {
  try {
    return parseArgs({
      args: Deno.args,
      allowPositionals: true,
      options: { filter: { type: "string" }, ...TRAIN_FLAGS },
    });
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    console.error("hint: deno task bench <suite> [--filter NAME] [--model M] [--vs-torch] ...");
    Deno.exit(2);
  }
}
const { positionals, values } = parse();
const suite = positionals[0];
if (!suite || !(suite in SUITES)) {
  console.error(`error: ${suite ? `unknown suite '${suite}'` : "no suite given"}`);
  console.error(`hint: deno task bench <suite>, one of:`);
  for (const [k, v] of Object.entries(SUITES)) console.error(`  ${k.padEnd(8)} ${v}`);
  Deno.exit(2);
}
if (suite === "kernels") {
  await (await import("./kernels.ts")).benchKernels(values.filter);
} else {
  const mod = await import(`./${suite}.ts`).catch(() => null);
  if (!mod) {
    console.error(`error: suite '${suite}' is not built yet`);
    Deno.exit(1);
  }
  await mod.run(values);
}
