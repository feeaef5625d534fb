// Benchmark cases of the optimizer: gradient norm (partials + finalize) and the AdamW update.
import type { KernelCase, KernelSetup } from "../lib.ts";
import {
  adamwHyper,
  adamwUpdate,
  GRAD_STATS_FLOATS,
  gradNormFinalize,
  gradNormPartialCount,
  gradNormSquares,
} from "../../kernels/adamw.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { adamwStepRef, clipScaleRef, gradNormRef } from "../../tests/reference/adamw.ts";

/** Elements of the flat parameter buffer (4 Mi: one 2048 × 2048 matrix). */
const N = 1 << 22;
const MAX_NORM = 1;
const SETTINGS = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

/** Deterministic floats in [-scale, scale) (mulberry32). */
function rand(n: number, seed: number, scale = 1): Float32Array {
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

/** Max |a − b| / max(|b|, floor). */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>, floor: number): number {
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    const e = Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), floor);
    if (!(e <= m)) m = Number.isNaN(e) ? Infinity : e;
  }
  return m;
}

function setup(gpu: Gpu, update: boolean): KernelSetup {
  const arena = new ParamArena(gpu, "bench.adamw.params", 4096);
  const param = rand(N, 1), grad = rand(N, 2, 1e-3);
  const count = gradNormPartialCount(N);
  const bufs = {
    param: gpu.bufferFrom("bench.adamw.param", param),
    grad: gpu.bufferFrom("bench.adamw.grad", grad),
    m: gpu.buffer("bench.adamw.m", N * 4),
    v: gpu.buffer("bench.adamw.v", N * 4),
    partials: gpu.buffer("bench.adamw.partials", count * 4),
    stats: gpu.buffer("bench.adamw.stats", GRAD_STATS_FLOATS * 4),
    hp: gpu.bufferFrom("bench.adamw.hp", adamwHyper(1, SETTINGS)),
  };
  const norm = [
    ...gradNormSquares(gpu, arena, {
      partials: { buffer: bufs.partials },
      grad: { buffer: bufs.grad },
      N,
      partialOffset: 0,
    }),
    ...gradNormFinalize(gpu, arena, {
      stats: { buffer: bufs.stats },
      partials: { buffer: bufs.partials },
      count,
      maxNorm: MAX_NORM,
    }),
  ];
  const step = adamwUpdate(gpu, arena, {
    param: { buffer: bufs.param },
    grad: { buffer: bufs.grad },
    m: { buffer: bufs.m },
    v: { buffer: bufs.v },
    stats: { buffer: bufs.stats },
    hp: { buffer: bufs.hp },
    N,
    zeroGrad: false, // timed runs keep the gradient (zeroing it costs the same store)
  });
  gpu.run(norm, "bench.adamw.norm"); // stats for the update
  return {
    dispatches: update ? step : norm,
    check: async () => {
      const ref = gradNormRef([grad]);
      if (!update) {
        const s = await gpu.readF32(bufs.stats, 0, 3);
        const e = relErr([s[0], s[1]], [ref, clipScaleRef(ref, MAX_NORM)], 1e-6);
        return { maxRelErr: s[2] === 1 ? e : Infinity, tolerance: 1e-4 };
      }
      // one step from a fresh state
      gpu.write(bufs.param, param);
      gpu.write(bufs.m, new Float32Array(N));
      gpu.write(bufs.v, new Float32Array(N));
      gpu.run([...norm, ...step], "bench.adamw.check");
      const [p] = (await gpu.read([{ buffer: bufs.param }])).map((b) => new Float32Array(b));
      const st = {
        param: Float64Array.from(param),
        m: new Float64Array(N),
        v: new Float64Array(N),
        step: 0,
      };
      adamwStepRef(st, grad, SETTINGS, clipScaleRef(ref, MAX_NORM));
      return { maxRelErr: relErr(p, st.param, 1e-2), tolerance: 1e-5 };
    },
    cleanup: () => {
      for (const b of Object.values(bufs)) b.destroy();
    },
  };
}

/** The optimizer cases; `filter` (a substring of the kernel name) skips the others. */
export function cases(filter?: string): KernelCase[] {
  const all: KernelCase[] = [
    {
      kernel: "adamw_grad_norm",
      shape: `N${N}`,
      bytes: 4 * N,
      setup: (gpu) => setup(gpu, false),
    },
    {
      kernel: "adamw_update",
      shape: `N${N}`,
      bytes: 4 * 7 * N, // param, grad, m, v in; param, m, v out
      setup: (gpu) => setup(gpu, true),
    },
  ];
  return all.filter((c) => !filter || c.kernel.includes(filter));
}
