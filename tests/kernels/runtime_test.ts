// Runtime tests: canaries really compute on the adapter, read-back batches, errors name kernels.
import assert from "node:assert/strict";
import { runCanary, runCanaryF16 } from "../../kernels/canary.ts";
import {
  type Dispatch,
  GpuError,
  packParams,
  ParamArena,
  PROFILE_CHUNK,
} from "../../kernels/runtime.ts";
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

gpuTest("runtime: profile times more dispatches than one query set holds", async (gpu) => {
  if (!gpu.hasTimestamps) return; // profiling needs timestamp-query (lavapipe offers it)
  const n = PROFILE_CHUNK + 3; // two query sets: 2 × 2,048 + 6 timestamps
  const k = gpu.kernel("canary", "canary_forward");
  const u = gpu.uniform("test.profile.params", 16);
  gpu.write(u, packParams([64, 2, 1, 0], [1, 2])); // y = 2x + 1 over 64 elements
  const x = gpu.bufferFrom("test.profile.x", new Float32Array(64).fill(1));
  const y = gpu.buffer("test.profile.y", 64 * 4);
  const ds: Dispatch[] = [];
  for (let i = 0; i < n; i++) {
    ds.push({ kernel: k, bindGroup: gpu.bind(k, { 0: u, 1: y, 2: x }), workgroups: [1, 1, 1] });
  }
  const ms = await gpu.profile(ds);
  assert.equal(ms.length, n);
  // every pass has its own, ordered pair of timestamps, in both sets
  for (const t of ms) assert.ok(Number.isFinite(t) && t >= 0 && t < 1000, `${t}`);
  assert.deepEqual([...new Float32Array((await gpu.read([{ buffer: y }]))[0])].slice(0, 2), [3, 3]);
  for (const b of [u, x, y]) b.destroy();
});

gpuTest("runtime: a full ParamArena continues in another buffer", async (gpu) => {
  const arena = new ParamArena(gpu, "test.arena", 256);
  const n = 20;
  // canary params (n = 1, a = 0, b = i): each dispatch writes its slot's b to its own 256 bytes
  const slices = Array.from({ length: n }, (_, i) => arena.alloc(packParams([1, 0, i, 0], [1, 2])));
  const k = gpu.kernel("canary", "canary_forward");
  const x = gpu.buffer("test.arena.x", 256), y = gpu.buffer("test.arena.y", 256 * n);
  try {
    assert.ok(arena.bytes > 256, "more than one buffer");
    assert.equal(new Set(slices.map((s) => s.buffer)).size, arena.bytes / 256);
    for (const s of slices) assert.ok(s.offset! + s.size! <= 256);
    gpu.run(slices.map((s, i) => ({
      kernel: k,
      bindGroup: gpu.bind(k, { 0: s, 1: { buffer: y, offset: 256 * i, size: 256 }, 2: x }),
      workgroups: [1, 1, 1] as [number, number, number],
    })));
    const got = new Float32Array((await gpu.read([{ buffer: y }]))[0]);
    assert.deepEqual(slices.map((_, i) => got[64 * i]), slices.map((_, i) => i));
    arena.reset(); // slots are reused from the first buffer on
    assert.equal(arena.alloc(new Uint32Array(4)).buffer, slices[0].buffer);
  } finally {
    arena.destroy();
    x.destroy();
    y.destroy();
  }
});
