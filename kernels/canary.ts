// Launchers for the canary kernels used by `doctor` and the runtime tests.
import { type Gpu, packParams } from "./runtime.ts";

/** Result of one canary run: the max abs error against the CPU and whether it passed. */
export interface CanaryResult {
  name: string;
  n: number;
  maxAbsErr: number;
  tolerance: number;
  ok: boolean;
  ms: number;
}

/** Run y = a·x + b on the GPU for n elements and compare with the CPU. */
export async function runCanary(gpu: Gpu, n = 4099): Promise<CanaryResult> {
  const t0 = performance.now();
  const x = new Float32Array(n).map((_, i) => Math.sin(i) * 3);
  const a = 1.5, b = -0.25;
  const k = gpu.kernel("canary", "canary_forward");
  const params = gpu.uniform("canary.params", 16);
  gpu.write(params, packParams([n, a, b, 0], [1, 2]));
  const xb = gpu.bufferFrom("canary.x", x);
  const yb = gpu.buffer("canary.y", n * 4);
  gpu.write(yb, new Float32Array(n).fill(NaN)); // poison: an unwritten element fails
  gpu.run([{
    kernel: k,
    bindGroup: gpu.bind(k, { 0: params, 1: yb, 2: xb }),
    workgroups: [Math.ceil(n / 64), 1, 1],
  }], "canary");
  const y = await gpu.readF32(yb);
  let err = 0;
  for (let i = 0; i < n; i++) {
    const ref = Math.fround(Math.fround(a * x[i]) + b);
    const e = Math.abs(y[i] - ref);
    err = Number.isNaN(e) ? Infinity : Math.max(err, e);
  }
  for (const buf of [params, xb, yb]) buf.destroy();
  const tolerance = 1e-5;
  return {
    name: "canary f32",
    n,
    maxAbsErr: err,
    tolerance,
    ok: err <= tolerance,
    ms: performance.now() - t0,
  };
}

/** Run the f16 canary (needs `shader-f16`): y = f16(x)·f16(a), checked to f16 rounding. */
export async function runCanaryF16(gpu: Gpu, n = 1027): Promise<CanaryResult> {
  const t0 = performance.now();
  const x = new Float32Array(n).map((_, i) => (i % 97) / 8 - 6);
  const a = 0.75;
  const k = gpu.kernel("canary_f16", "canary_f16_forward");
  const params = gpu.uniform("canary_f16.params", 16);
  gpu.write(params, packParams([n, a, 0, 0], [1]));
  const xb = gpu.bufferFrom("canary_f16.x", x);
  const yb = gpu.buffer("canary_f16.y", n * 4);
  gpu.write(yb, new Float32Array(n).fill(NaN));
  gpu.run([{
    kernel: k,
    bindGroup: gpu.bind(k, { 0: params, 1: yb, 2: xb }),
    workgroups: [Math.ceil(n / 64), 1, 1],
  }], "canary_f16");
  const y = await gpu.readF32(yb);
  let err = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.abs(y[i] - x[i] * a);
    err = Number.isNaN(e) ? Infinity : Math.max(err, e);
  }
  for (const buf of [params, xb, yb]) buf.destroy();
  const tolerance = 6 * 2 ** -10; // |x·a| < 8: one f16 ulp at 4..8 is 2^-8; allow a few
  return {
    name: "canary f16",
    n,
    maxAbsErr: err,
    tolerance,
    ok: err <= tolerance,
    ms: performance.now() - t0,
  };
}
