// Test helpers: the shared GPU (a failure in CI when missing), ../shared lookup, tolerances.
import { type Dispatch, type Gpu, ParamArena, sharedGpu } from "../kernels/runtime.ts";

const inCI = Deno.env.get("CI") === "true";
// Graphs built by tests (and the CLIs they spawn) keep the fixed matmul rules: no timing-dependent
// choices, and nothing written to the user's autotune cache. matmul_tune_test opts back in.
if (Deno.env.get("FINETUNE_AUTOTUNE") === undefined) Deno.env.set("FINETUNE_AUTOTUNE", "0");

async function tryGpu(): Promise<Gpu | null> {
  try {
    return await sharedGpu();
  } catch (e) {
    if (inCI) throw new Error(`CI=true but no WebGPU adapter: ${(e as Error).message}`);
    console.warn(`skipping GPU tests: ${(e as Error).message}`);
    return null;
  }
}

/** The process-wide test GPU, or null outside CI when there is no adapter. */
export const testGpu: Gpu | null = await tryGpu();

/** Register a test that needs the GPU; skipped (with a message) only outside CI. */
export function gpuTest(name: string, fn: (gpu: Gpu) => Promise<void> | void): void {
  Deno.test({
    name,
    ignore: testGpu === null,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () => fn(testGpu!),
  });
}

/** Absolute path of ../shared beside the checkout, or null (with a message) when absent. */
export function sharedPath(rel = ""): string | null {
  const root = new URL("../../shared/", import.meta.url);
  try {
    Deno.statSync(root);
  } catch {
    if (inCI) throw new Error("CI=true but ../shared is missing beside the checkout");
    console.warn("skipping: ../shared is not beside this checkout");
    return null;
  }
  return new URL(rel, root).pathname;
}

/** Register a test that reads ../shared; skipped outside CI when it is absent. */
export function sharedTest(name: string, fn: (shared: string) => Promise<void> | void): void {
  const root = sharedPath();
  Deno.test({
    name,
    ignore: root === null,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () => fn(root!),
  });
}

/** Max relative error |a-b| / max(|b|, floor) over two arrays; NaN anywhere gives Infinity. */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-6): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), floor);
    if (!Number.isFinite(e)) return Infinity;
    if (e > m) m = e;
  }
  return m;
}

/**
 * Assert that two lists of float arrays are equal bit for bit, naming the first differing array
 * and element (assert.deepEqual on large typed arrays builds a diff too big to print).
 */
export function assertSameBits(
  a: Float32Array[],
  b: Float32Array[],
  msg = "",
): void {
  if (a.length !== b.length) throw new Error(`${msg}: ${a.length} arrays != ${b.length}`);
  a.forEach((x, k) => {
    const y = b[k];
    if (x.length !== y.length) {
      throw new Error(`${msg}: array ${k} length ${x.length} != ${y.length}`);
    }
    const xb = new Uint32Array(x.buffer, x.byteOffset, x.length);
    const yb = new Uint32Array(y.buffer, y.byteOffset, y.length);
    const i = xb.findIndex((v, j) => v !== yb[j]);
    if (i >= 0) throw new Error(`${msg}: array ${k} differs first at ${i}: ${x[i]} != ${y[i]}`);
  });
}

/** Deterministic pseudo-random floats in [-scale, scale) (mulberry32). */
export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** Print a one-line error report that the test log keeps: name, error, tolerance. */
export function report(name: string, err: number, tol: number): void {
  console.log(`  ${name}: max rel err ${err.toExponential(2)} (tolerance ${tol.toExponential(0)})`);
}

// Release the device before the runtime tears down (avoids a rare heap-corruption abort at exit
// in wgpu's Vulkan teardown on lavapipe).
globalThis.addEventListener("unload", () => testGpu?.destroy());

/**
 * Build dispatches with a fresh params arena and an uploader, run them, read `out` back and free
 * every buffer made; returns the output and the kernel names that ran.
 */
export async function runAndRead(
  gpu: Gpu,
  label: string,
  build: (arena: ParamArena, up: (label: string, d: Float32Array) => GPUBuffer) => {
    dispatches: Dispatch[];
    out: GPUBuffer;
  },
): Promise<{ got: Float32Array; kernels: string[] }> {
  const arena = new ParamArena(gpu, label, 8192);
  const bufs: GPUBuffer[] = [arena.buffer];
  const up = (l: string, d: Float32Array) => {
    const b = gpu.bufferFrom(l, d);
    bufs.push(b);
    return b;
  };
  const { dispatches, out } = build(arena, up);
  gpu.run(dispatches, label);
  const got = await gpu.readF32(out);
  gpu.check(label);
  for (const b of bufs) b.destroy();
  return { got, kernels: dispatches.map((d) => d.kernel.name) };
}
