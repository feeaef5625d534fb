// `deno task bench <suite>`: run one benchmark suite; each prints a table and writes bench/out/<suite>.json.
import { parseArgs } from "node:util";
import { TRAIN_FLAGS } from "./train.ts";

const SUITES: Record<string, string> = {
  kernels: "every WGSL kernel: ms, GFLOP/s or GB/s, max rel err",
  data: "tokenization throughput, packing efficiency, planning time",
  train: "training throughput, step breakdown, optionally against PyTorch",
  eval: "evaluation tokens/s",
};

const HELP = `deno task bench <suite> [flags]: run one benchmark suite, print a table and write
bench/out/<suite>.json (figures with date and device go to bench/RESULTS.md).

Suites:
${Object.entries(SUITES).map(([k, v]) => `  ${k.padEnd(8)} ${v}`).join("\n")}

kernels:
  --filter NAME           only the cases whose kernel name contains NAME (attention_sweep: every
                          GPU attention thread grid and form at the 135M and 1B shapes)
train:
  --model M               stories260k (default), stories15m, smollm2-135m, llama-3.2-1b, or an HF dir
  --batch N --seq N       rows and tokens per row of a step (default: the model's bench shape)
  --steps N --warmup N    timed and warm-up optimizer steps (default 5 and 2)
  --micro-rows N          rows per micro-batch (must divide --batch)
  --data gsm8k|synthetic  the text (default: GSM8K when ../shared has it)
  --tied                  keep a tied head tied (the stories260k shape unties it)
  --lr X                  AdamW learning rate (default 1e-3)
  --peak-tflops X         the FP32 peak for MFU (default: datasheet for known GPUs, estimated on lavapipe)
  --no-profile            skip the per-kernel timestamp breakdown
  --matmul-precision f32|f16   GEMM arithmetic (f16 needs shader-f16)
  --gpu-kernels           force the GPU-shaped matmul and attention kernels (parity on a CPU adapter)
  --vs-torch              run bench/torch_baseline.py on the same weights, rows and AdamW settings
  --torch-device cpu|cuda|auto  --torch-dtype fp32[,bf16]  --torch-impl auto|hf|plain[,…]
  --torch-threads N       PyTorch's CPU threads   --python PATH   the Python that has torch
  --rounds N              alternate ours and PyTorch N times; medians and the per-round range
`;

function parse() {
  try {
    return parseArgs({
      args: Deno.args,
      allowPositionals: true,
      options: {
        filter: { type: "string" },
        help: { type: "boolean", short: "h" },
        ...TRAIN_FLAGS,
      },
    });
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    console.error("hint: deno task bench <suite> [--filter NAME] [--model M] [--vs-torch] ...");
    Deno.exit(2);
  }
}
const { positionals, values } = parse();
if (values.help) {
  console.log(HELP);
  Deno.exit(0);
}
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
