import { parseArgs } from "node:util";
import { SWEEP_OPTIONS, sweepCommand } from "/work/main/pipeline/sweep_cmd.ts";
const { values, positionals } = parseArgs({ args: Deno.args, options: SWEEP_OPTIONS, allowPositionals: true });
Deno.exit(await sweepCommand(values, positionals));
