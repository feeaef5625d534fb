// `doctor`: report the WebGPU adapter, its features and limits, and run canary kernels.
import { runCanary, runCanaryF16 } from "./canary.ts";
import { acquireGpu, type Gpu, NoAdapterError } from "./runtime.ts";

/** Print the adapter report and canary results; returns the process exit code. */
export async function doctor(opts: { json?: boolean } = {}): Promise<number> {
  let gpu: Gpu;
  try {
    gpu = await acquireGpu();
  } catch (e) {
    if (e instanceof NoAdapterError) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
  const s = gpu.summary;
  const canaries = [await runCanary(gpu)];
  if (gpu.hasF16) canaries.push(await runCanaryF16(gpu));
  const ok = canaries.every((c) => c.ok);
  if (opts.json) {
    console.log(JSON.stringify({ adapter: s, canaries, ok }, null, 2));
  } else {
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
    console.log(`adapter      ${s.description}`);
    console.log(
      `vendor       ${s.vendor || "?"}  device ${s.device || "?"}  arch ${s.architecture || "?"}`,
    );
    console.log(`backend      ${s.backend}${s.isFallback ? "  (fallback adapter: software)" : ""}`);
    console.log(`deno         ${Deno.version.deno} (${Deno.build.os}/${Deno.build.arch})`);
    console.log(`features     ${s.features.join(", ") || "(none)"}`);
    console.log(
      `using        shader-f16 ${gpu.hasF16 ? "yes" : "no"}, timestamp-query ${
        gpu.hasTimestamps ? "yes" : "no"
      }`,
    );
    console.log("limits");
    for (const [k, v] of Object.entries(s.limits)) {
      const pretty = /Size$/.test(k) && v >= 2 ** 20 ? `${v} (${mib(v)})` : `${v}`;
      console.log(`  ${k.padEnd(36)} ${pretty}`);
    }
    for (const c of canaries) {
      console.log(
        `${c.name.padEnd(12)} ${c.ok ? "ok  " : "FAIL"} n=${c.n} max abs err ${
          c.maxAbsErr.toExponential(2)
        } ` +
          `(tolerance ${c.tolerance.toExponential(1)}) ${c.ms.toFixed(1)} ms`,
      );
    }
    console.log(ok ? "doctor: ok" : "doctor: FAILED");
  }
  gpu.destroy();
  return ok ? 0 : 1;
}
