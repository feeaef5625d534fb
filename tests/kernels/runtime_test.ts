// Runtime tests: canaries really compute on the adapter, read-back batches, errors name kernels.
import assert from "node:assert/strict";
import { runCanary, runCanaryF16 } from "../../kernels/canary.ts";
import { GpuError, packParams } from "../../kernels/runtime.ts";
import { gpuTest } from "../helpers.ts";

gpuTest("runtime: f32 canary matches the CPU", async (gpu) => {
  const r = await runCanary(gpu, 1000);
  assert.ok(r.ok, `max abs err ${r.maxAbsErr}`);
});

gpuTest("runtime: f16 canary when shader-f16 is offered", async (gpu) => {
  if (!gpu.hasF16) return;
  const r = await runCanaryF16(gpu);
  assert.ok(r.ok, `max abs err ${r.maxAbsErr}`);
});

gpuTest("runtime: batched read-back returns every slice", async (gpu) => {
  const a = gpu.bufferFrom("t.a", new Float32Array([1, 2, 3, 4, 5]));
  const b = gpu.bufferFrom("t.b", new Uint32Array([7, 8, 9]));
  const [ra, rb] = await gpu.read([{ buffer: a, offset: 4, size: 12 }, { buffer: b }]);
  assert.deepEqual([...new Float32Array(ra)], [2, 3, 4]);
  assert.deepEqual([...new Uint32Array(rb)], [7, 8, 9]);
});

gpuTest("runtime: pipeline cache keys on constants", (gpu) => {
  const k1 = gpu.kernel("canary", "canary_forward");
  const k2 = gpu.kernel("canary", "canary_forward");
  assert.equal(k1, k2);
});

gpuTest("runtime: a bad entry point raises GpuError naming the kernel", async (gpu) => {
  await assert.rejects(
    () => gpu.kernelChecked("canary", "no_such_entry"),
    (e: unknown) => e instanceof GpuError && e.message.includes("canary.no_such_entry"),
  );
});

Deno.test("runtime: packParams lays out u32, i32 and f32 fields", () => {
  const p = packParams([3, -1, 0.5], [2]);
  assert.equal(p[0], 3);
  assert.equal(new Int32Array(p.buffer)[1], -1);
  assert.equal(new Float32Array(p.buffer)[2], 0.5);
});
