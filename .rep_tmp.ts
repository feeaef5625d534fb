import { reportCommand } from "./pipeline/sweep_cmd.ts";
Deno.exit(await reportCommand({}, Deno.args));
