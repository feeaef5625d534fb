// `deno task bench eval`: evaluation throughput — scoring forward tokens/s, MC items/s, prefill and decode tokens/s.
import { Evaluator } from "../eval/evaluator.ts";
import { acquireGpu } from "../kernels/runtime.ts";
import { writeResult } from "./lib.ts";
import { pathExists } from "../pipeline/run_dir.ts";

const SHARED = new URL("../../shared/", import.meta.url).pathname;

/** n pseudo-random token ids below V (a fixed LCG: the same ids every run). */
function ids(n: number, V: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % V;
  });
}

/** Run the eval suite on `opts.model` (default ../shared/models/stories260K). */
export async function run(opts: { model?: string; filter?: string }): Promise<void> {
  const model = opts.model ?? `${SHARED}models/stories260K`;
  if (!(await pathExists(`${model}/config.json`))) {
    console.error(`error: no model at ${model}; pass --model DIR`);
    Deno.exit(1);
  }
  const gpu = await acquireGpu();
  console.log(`adapter: ${gpu.summary.description} (${gpu.summary.backend})\nmodel: ${model}`);
  const ev = await Evaluator.open(gpu, model, {});
  const cfg = ev.cfg, V = cfg.vocabSize, T = ev.tokens;
  const rows: Record<string, number | string>[] = [];
  const row = (name: string, value: number, unit: string, note = "") => {
    rows.push({ name, value, unit, note });
    console.log(`${name.padEnd(34)} ${value.toFixed(1).padStart(10)} ${unit.padEnd(10)} ${note}`);
  };

  // Scoring forward: full micro-batches of 4 packed samples each.
  const per = Math.floor(T / 4);
  const reqs = Array.from({ length: 16 }, (_, i) => ({ ids: ids(per, V, i + 1), start: per >> 1 }));
  await ev.loglik(reqs.slice(0, 4)); // warm-up (pipelines)
  let t0 = performance.now();
  await ev.loglik(reqs);
  let s = (performance.now() - t0) / 1000;
  row(
    "score forward (loss / mc)",
    (reqs.length * per) / s,
    "tokens/s",
    `T=${T}, ${reqs.length / 4} micro-batches`,
  );

  // MMLU-Redux items, zero-shot (letter + cloze scoring: 8 requests per item).
  const mmlu = `${SHARED}data/mmlu-redux/mmlu_redux.jsonl`;
  if (await pathExists(mmlu)) {
    const r = await ev.evaluate({ name: "mmlu", kind: "mc", data: mmlu, shots: 0, limit: 8 });
    row(
      "mc items (MMLU-Redux, 0-shot)",
      r.items / r.seconds,
      "items/s",
      `${r.tokensPerS.toFixed(0)} forward tokens/s`,
    );
  }

  // Generation: prefill, then greedy decode with various read-back chunks.
  const dec = ev.decodeGraph();
  const promptLen = Math.min(256, dec.Lmax >> 1);
  const prompt = ids(promptLen, V, 99);
  await dec.generate(prompt, { maxNewTokens: 4, stopIds: [] }); // warm-up
  t0 = performance.now();
  const reps = 3;
  for (let i = 0; i < reps; i++) await dec.generate(prompt, { maxNewTokens: 1, stopIds: [] });
  const prefillS = (performance.now() - t0) / 1000 / reps;
  row(
    "prefill",
    promptLen / prefillS,
    "tokens/s",
    `${promptLen}-token prompt (incl. one read-back)`,
  );
  const n = Math.min(128, dec.Lmax - promptLen);
  for (const chunk of [1, 16, 64]) {
    t0 = performance.now();
    const g = await dec.generate(prompt, { maxNewTokens: n, stopIds: [], chunk });
    s = (performance.now() - t0) / 1000 - prefillS;
    row(
      `decode (read-back every ${chunk})`,
      (g.decodeSteps - 1) / s,
      "tokens/s",
      `${g.tokens.length} tokens greedy`,
    );
  }
  t0 = performance.now();
  const g = await dec.generate(prompt, { maxNewTokens: n, stopIds: [], temperature: 0.8, seed: 1 });
  s = (performance.now() - t0) / 1000 - prefillS;
  row("decode sampled (T=0.8, chunk 16)", (g.decodeSteps - 1) / s, "tokens/s");
  ev.destroy();
  console.log(`wrote ${await writeResult("eval", gpu, { model, tokens: T, rows })}`);
  gpu.destroy();
}
