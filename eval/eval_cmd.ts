// `deno task eval`: score a model directory on one metric (held-out loss, multiple choice, exact match).
import { sharedGpu } from "../kernels/runtime.ts";
import { UserError } from "../pipeline/errors.ts";
import { intFlag, requiredFlag as required } from "./flags.ts";
import {
  Evaluator,
  type ExactDetails,
  type LossDetails,
  type McDetails,
  METRIC_KINDS,
  type MetricKind,
  type MetricResult,
} from "./evaluator.ts";

const USAGE = "deno task eval --model DIR --data FILE --metric loss|mc|exact_match [--json]";

/** `eval`: print the metric (or its JSON with --json); returns the exit code. */
export async function evalCommand(v: Record<string, unknown>, _p: string[]): Promise<number> {
  const model = required(v, "model", USAGE);
  const data = required(v, "data", USAGE);
  const metric = required(v, "metric", USAGE);
  if (!(METRIC_KINDS as readonly string[]).includes(metric)) {
    throw new UserError(`unknown --metric '${metric}'`, `one of ${METRIC_KINDS.join(", ")}`);
  }
  const limit = intFlag(v, "limit", 1);
  const shots = intFlag(v, "shots", 0) ?? 0;
  const json = Boolean(v.json);
  const gpu = await sharedGpu();
  const ev = await Evaluator.open(gpu, model, { log: (line) => console.error(line) });
  try {
    const r = await ev.evaluate({
      name: metric,
      kind: metric as MetricKind,
      data,
      shots,
      limit,
      maxTokens: 256,
    });
    if (json) console.log(JSON.stringify({ model, ...r }, null, 2));
    else printResult(model, r);
  } finally {
    ev.destroy();
  }
  return 0;
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;

/** Human-readable summary of one metric result. */
export function printResult(model: string, r: MetricResult): void {
  console.log(`model ${model}\ndata  ${r.data}`);
  const d = r.details;
  if (d.kind === "loss") {
    const l = d as LossDetails;
    console.log(
      `loss ${l.loss.toFixed(4)} (perplexity ${l.perplexity.toFixed(3)}) over ${l.lossTokens} ` +
        `assistant tokens of ${l.samples} samples` +
        (l.truncated ? `, ${l.truncated} truncated` : "") +
        (l.skipped ? `, ${l.skipped} without trained tokens` : ""),
    );
  } else if (d.kind === "mc") {
    const m = d as McDetails;
    console.log(
      `multiple choice, ${m.items} items, ${m.shots}-shot, ${m.style} prompts:\n` +
        `  acc (letter) ${pct(m.acc)}   acc_text ${pct(m.acc_text)}   acc_text_norm ${
          pct(m.acc_text_norm)
        }`,
    );
    const subjects = Object.entries(m.subjects);
    if (subjects.length > 1) {
      console.log(
        `  ${"subject".padEnd(40)} ${"items".padStart(6)} ${"acc".padStart(8)} ${
          "text".padStart(8)
        } ${"norm".padStart(8)}`,
      );
      for (const [name, s] of subjects) {
        console.log(
          `  ${name.padEnd(40)} ${String(s.items).padStart(6)} ${pct(s.acc).padStart(8)} ` +
            `${pct(s.acc_text).padStart(8)} ${pct(s.acc_text_norm).padStart(8)}`,
        );
      }
    }
    if (m.truncated) console.log(`  ${m.truncated} requests cut from the left to fit`);
  } else {
    const e = d as ExactDetails;
    console.log(
      `exact match, ${e.items} items, ${e.shots}-shot, ${e.style} prompts: ` +
        `${pct(e.flexible)} (flexible), ${pct(e.strict)} (strict)`,
    );
    for (const x of e.examples.slice(0, 3)) {
      console.log(
        `  ${x.correct ? "✓" : "✗"} ${JSON.stringify(x.question.slice(0, 60))} → ` +
          `${JSON.stringify(x.generation.slice(0, 80))} (want ${x.reference})`,
      );
    }
  }
  const unit = r.kind === "exact_match" ? "generated tokens/s" : "forward tokens/s";
  console.log(
    `score ${r.score.toFixed(4)} (${r.higherIsBetter ? "higher" : "lower"} is better); ` +
      `${r.seconds.toFixed(1)} s, ${r.tokensPerS.toFixed(1)} ${unit}`,
  );
}
