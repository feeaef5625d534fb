// `deno task bench data`: tokenization throughput, packing efficiency on GSM8K lengths, planning time.
import { join } from "node:path";
import { writeResult } from "./lib.ts";
import { loadTokenizedDataset, tokenizeDataset } from "../pipeline/tokenize.ts";
import { planBuckets } from "../pipeline/bucket.ts";
import { loadTokenizer } from "../model/tokenizer.ts";

/** One row of the data benchmark. */
interface DataRow {
  bench: string;
  config: string;
  value: number;
  unit: string;
  target: string | null;
  ok: boolean | null;
  note: string;
}

function sharedDir(): string {
  return new URL("../../shared/", import.meta.url).pathname;
}

/** Lognormal lengths in [16, 4096] (median ≈ 300), deterministic. */
function syntheticLengths(n: number): Uint32Array {
  let s = 0x1234567;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const z = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
    out[i] = Math.max(16, Math.min(4096, Math.round(Math.exp(5.7 + 0.6 * z))));
  }
  return out;
}

function printRow(r: DataRow): void {
  const v = r.value >= 100 ? r.value.toFixed(0) : r.value.toFixed(2);
  const ok = r.ok === null ? "" : r.ok ? "ok" : "MISS";
  console.log(
    `${r.bench.padEnd(14)} ${r.config.padEnd(40)} ${v.padStart(10)} ${r.unit.padEnd(10)} ` +
      `${(r.target ?? "").padEnd(8)} ${ok.padEnd(4)} ${r.note}`,
  );
}

/**
 * Run the data benchmark: `opts.model` may name another tokenizer directory (default
 * ../shared/models/stories260K with the shipped plain template).
 */
export async function run(opts: { model?: string } = {}): Promise<void> {
  const shared = sharedDir();
  const model = opts.model ?? join(shared, "models/stories260K");
  const tok = await loadTokenizer(model);
  const template = tok.chatTemplate ? undefined : "plain";
  const rows: DataRow[] = [];
  const add = (r: DataRow) => {
    rows.push(r);
    printRow(r);
  };
  console.log(
    `${"bench".padEnd(14)} ${"config".padEnd(40)} ${"value".padStart(10)} ${"unit".padEnd(10)} ` +
      `${"target".padEnd(8)} ${"".padEnd(4)} note`,
  );

  // 1. Planning 1,000,000 synthetic lengths.
  const big = syntheticLengths(1_000_000);
  for (const [B, N, pad] of [[3840, 8, false], [128, 1, false], [3840, 8, true]] as const) {
    const o = { lengths: big, batchSize: B, ranks: N, capacity: 4096, seed: 1, epoch: 0 };
    planBuckets({ ...o, lengths: big.subarray(0, 20000), padToLongest: pad }); // warm-up
    const times: number[] = [];
    let p = null as ReturnType<typeof planBuckets> | null;
    for (let rep = 0; rep < 3; rep++) {
      const t0 = performance.now();
      p = planBuckets({ ...o, padToLongest: pad });
      times.push((performance.now() - t0) / 1000);
    }
    const s = Math.min(...times);
    add({
      bench: "plan 1M",
      config: `B ${B}, ${N} rank(s), cap 4096${pad ? ", padded" : ""}`,
      value: s,
      unit: "s",
      target: "< 2",
      ok: s < 2,
      note: `best of ${times.map((x) => x.toFixed(2)).join(" / ")} s; ${p!.summary.steps} steps, ` +
        `${p!.summary.microBatches} micro-batches, efficiency ${
          (100 * p!.summary.efficiency).toFixed(2)
        }%`,
    });
  }

  // 2. Tokenization throughput on GSM8K train as chat messages.
  const dir = await Deno.makeTempDir({ prefix: "bench_data_" });
  try {
    const input = join(dir, "gsm8k_messages.jsonl");
    const text = await Deno.readTextFile(join(shared, "data/gsm8k/train.jsonl"));
    const lines = text.split("\n").filter((l) => l.trim() !== "").map((l) => {
      const { question, answer } = JSON.parse(l);
      return JSON.stringify({
        messages: [{ role: "user", content: question }, { role: "assistant", content: answer }],
      });
    });
    await Deno.writeTextFile(input, lines.join("\n") + "\n");
    const cores = navigator.hardwareConcurrency ?? 1;
    let lengths: Uint32Array | null = null;
    for (const workers of [...new Set([1, Math.min(cores, 8)])]) {
      const t0 = performance.now();
      const r = await tokenizeDataset({
        inputs: [input],
        runDir: dir,
        name: `gsm8k_w${workers}`,
        tokenizerDir: model,
        chatTemplate: template,
        maxSeqLen: 4096,
        workers,
        force: true,
        log: () => {},
      });
      const s = (performance.now() - t0) / 1000;
      add({
        bench: "tokenize",
        config: `gsm8k train, ${workers} worker(s)`,
        value: r.stats.lines / s,
        unit: "samples/s",
        target: null,
        ok: null,
        note: `${r.stats.samples} samples, ${(r.stats.tokens / s / 1000).toFixed(0)}k tokens/s, ` +
          `${r.stats.warnings.boundaryMerges} boundary merges, template ${r.stats.template}`,
      });
      lengths ??= (await loadTokenizedDataset(r.path)).lengths;
    }

    // 3. Packing efficiency on GSM8K's length distribution at capacity 4096.
    for (const pad of [false, true]) {
      for (const [B, N] of [[128, 1], [128, 8], [3840, 1], [3840, 8]]) {
        const p = planBuckets({
          lengths: lengths!,
          batchSize: B,
          ranks: N,
          capacity: 4096,
          seed: 42,
          epoch: 0,
          padToLongest: pad,
        });
        const s = p.summary;
        // The ≥ 98 % target needs room to pack: at least 4 micro-batches per rank per step. With
        // less, a step holds exactly B samples in partly filled micro-batches (B is kept).
        const rounds = (B * s.realTokens / s.planned) / (N * 4096);
        const targeted = !pad && rounds >= 4;
        add({
          bench: "pack gsm8k",
          config: `B ${B}, ${N} rank(s), cap 4096${pad ? ", padded" : ""}`,
          value: 100 * s.efficiency,
          unit: "% eff",
          target: targeted ? "≥ 98" : null,
          ok: targeted ? s.efficiency >= 0.98 : null,
          note: `${s.steps} steps, samples/step ${s.samplesPerStep.min}–${s.samplesPerStep.max} ` +
            `(σ ${s.samplesPerStep.std.toFixed(1)}), ${s.microBatchesPerStep.min}–` +
            `${s.microBatchesPerStep.max} micro-batches/rank` +
            (pad ? `, padding eff ${(100 * s.paddingEfficiency).toFixed(1)}%` : "") +
            (rounds < 4
              ? `; B·mean len = ${rounds.toFixed(1)} rounds of ${N}×4096: exact-B steps`
              : ""),
        });
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  console.log(`wrote ${await writeResult("data", null, rows)}`);
}
