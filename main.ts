// CLI entry point: parse the subcommand, run it, report; user mistakes become one-line errors.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { doctor } from "./kernels/doctor.ts";
import { UserError } from "./pipeline/errors.ts";

/** A subcommand: its flags (node:util parseArgs options), help text and body. */
export interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig["options"]>;
  /** Returns the exit code. */
  run(values: Record<string, unknown>, positionals: string[]): Promise<number>;
}

/** Lazily import a module's command so `doctor` does not load the tokenizer, etc. */
function lazy(
  summary: string,
  usage: string,
  options: Command["options"],
  load: () => Promise<(v: Record<string, unknown>, p: string[]) => Promise<number>>,
): Command {
  return { summary, usage, options, run: async (v, p) => (await load())(v, p) };
}

const COMMANDS: Record<string, Command> = {
  doctor: {
    summary: "report the WebGPU adapter, its features and limits; run canary kernels",
    usage: "deno task doctor [--json]",
    options: { json: { type: "boolean" } },
    run: (v) => doctor({ json: Boolean(v.json) }),
  },
  train: lazy(
    "run a pipeline file (default examples/quickstart.yaml)",
    "deno task train [PIPELINE.yaml] [--run-dir DIR] [--set key=value ...]",
    {
      "run-dir": { type: "string" },
      set: { type: "string", multiple: true },
      port: { type: "string" },
    },
    async () => (await import("./pipeline/train_cmd.ts")).trainCommand,
  ),
  serve: lazy(
    "serve the progress of a run over HTTP (JSON, SSE, Prometheus, a live page)",
    "deno task serve --run-dir DIR [--host H] [--port N] [--token T]",
    {
      "run-dir": { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      token: { type: "string" },
    },
    async () => (await import("./pipeline/serve_cmd.ts")).serveCommand,
  ),
  sweep: lazy(
    "run a hyperparameter sweep with early termination; shard it; gather shards",
    "deno task sweep SWEEP.yaml [--out DIR] [--set key=value ...] [--shard i/n] [--stage probe|continue] " +
      "[--list [--shards N]] | --gather DIR... --out DIR",
    {
      out: { type: "string" },
      set: { type: "string", multiple: true },
      shard: { type: "string" },
      stage: { type: "string" },
      gather: { type: "boolean" },
      list: { type: "boolean" },
      shards: { type: "string" },
    },
    async () => (await import("./pipeline/sweep_cmd.ts")).sweepCommand,
  ),
  report: lazy(
    "rewrite report.md (tables and SVG plots) of a run dir or a sweep dir",
    "deno task report DIR",
    {},
    async () => (await import("./pipeline/sweep_cmd.ts")).reportCommand,
  ),
  "init-model": lazy(
    "write a randomly initialised Llama-family model and a generated tokenizer",
    "deno task init-model --out DIR [--preset tiny|stories15m|smollm2-135m|llama-3.2-1b] " +
      "[--set key=value ...] [--seed N] [--tokenizer DIR | --vocab N --corpus FILE...]",
    {
      out: { type: "string" },
      preset: { type: "string" },
      set: { type: "string", multiple: true },
      seed: { type: "string" },
      tokenizer: { type: "string" },
      vocab: { type: "string" },
      corpus: { type: "string", multiple: true },
    },
    async () => (await import("./model/init_model.ts")).initModelCommand,
  ),
  eval: lazy(
    "evaluate a model: held-out loss, multiple choice, or exact match",
    "deno task eval --model DIR --data FILE --metric loss|mc|exact_match [--json] [--limit N]",
    {
      model: { type: "string" },
      data: { type: "string" },
      metric: { type: "string" },
      json: { type: "boolean" },
      limit: { type: "string" },
      shots: { type: "string" },
    },
    async () => (await import("./eval/eval_cmd.ts")).evalCommand,
  ),
  chat: lazy(
    "chat with a model (interactive), or complete one prompt",
    "deno task chat --model DIR [--prompt TEXT] [--max-tokens N] [--raw] [--temperature T]",
    {
      model: { type: "string" },
      prompt: { type: "string" },
      "max-tokens": { type: "string" },
      raw: { type: "boolean" },
      temperature: { type: "string" },
      seed: { type: "string" },
    },
    async () => (await import("./eval/chat_cmd.ts")).chatCommand,
  ),
};

function printHelp(): void {
  console.log("finetune: supervised fine-tuning of small LLMs on WebGPU\n");
  console.log("usage: deno run -A main.ts <command> [options]   (or deno task <command>)\n");
  for (const [name, c] of Object.entries(COMMANDS)) {
    console.log(`  ${name.padEnd(11)} ${c.summary}`);
  }
  console.log("\n'<command> --help' shows a command's options.");
}

/** Parse argv, run the command, and return the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    printHelp();
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`error: unknown command '${name}'`);
    console.error(`hint: one of ${Object.keys(COMMANDS).join(", ")}; try --help`);
    return 2;
  }
  try {
    if (rest.includes("--help") || rest.includes("-h")) {
      console.log(`${cmd.summary}\n\nusage: ${cmd.usage}`);
      return 0;
    }
    const { values, positionals } = parseArgs({
      args: rest,
      options: cmd.options,
      allowPositionals: true,
      strict: true,
    });
    return await cmd.run(values as Record<string, unknown>, positionals);
  } catch (e) {
    if (e instanceof UserError) {
      console.error(`error: ${e.message}`);
      if (e.hint) console.error(`hint: ${e.hint}`);
      return 1;
    }
    const code = (e as { code?: string }).code;
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS")) {
      console.error(`error: ${(e as Error).message}`);
      console.error(`hint: usage: ${cmd.usage}`);
      return 2;
    }
    throw e;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
