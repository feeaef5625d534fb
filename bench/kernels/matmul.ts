// Benchmark cases for the matmul launchers: GFLOP/s and sampled max rel error at 1024³ and a
// training-like shape, in the adapter's default variant (and the other variant for comparison),
// and the f16-arithmetic kernels ("-f16" variants) where the adapter offers shader-f16.
import {
  biasBackward,
  isCpuAdapter,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulForward,
  type MatmulTuning,
  matmulTuning,
  setMatmulTuning,
} from "../../kernels/matmul.ts";
import { type Dispatch, type Gpu, ParamArena } from "../../kernels/runtime.ts";
import type { KernelCase, KernelSetup } from "../lib.ts";

/** Deterministic pseudo-random floats in [-1, 1) (xorshift; fast enough for 4M elements). */
function fill(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = ((s >>> 0) / 4294967296) * 2 - 1;
  }
  return a;
}

type Op = "forward" | "backward_input" | "backward_weight" | "bias_backward";

/**
 * Reference value of output element `idx` in f64 (the op's definition, from the host arrays); with
 * `abs`, the sum of the absolute products instead (the scale of f16 rounding errors).
 */
function refAt(
  op: Op,
  idx: number,
  M: number,
  N: number,
  K: number,
  x: Float32Array,
  w: Float32Array,
  dy: Float32Array,
  abs = false,
): number {
  let s = 0;
  const f = abs ? Math.abs : (v: number) => v;
  if (op === "forward") {
    const m = Math.floor(idx / N), n = idx % N;
    for (let k = 0; k < K; k++) s += f(x[m * K + k] * w[n * K + k]);
  } else if (op === "backward_input") {
    const m = Math.floor(idx / K), k = idx % K;
    for (let n = 0; n < N; n++) s += f(dy[m * N + n] * w[n * K + k]);
  } else if (op === "backward_weight") {
    const n = Math.floor(idx / K), k = idx % K;
    for (let m = 0; m < M; m++) s += f(dy[m * N + n] * x[m * K + k]);
  } else {
    for (let m = 0; m < M; m++) s += f(dy[m * N + idx]);
  }
  return s;
}

/** Error bound of the f16 kernels relative to Σ|products| (see tests/kernels/matmul_f16_test.ts). */
const F16_TOL = 18 * 2 ** -11;

type Variant = MatmulTuning["variant"] | "big-scalar" | "gpu-f16" | "big-f16" | "tiled-f16";

function matmulCase(
  op: Op,
  M: number,
  N: number,
  K: number,
  variant?: Variant,
): KernelCase {
  const f16 = variant?.endsWith("-f16") ?? false;
  const flops = op === "bias_backward" ? M * N : 2 * M * N * K;
  const outLen = op === "forward" ? M * N : op === "backward_input" ? M * K : op ===
      "backward_weight"
    ? N * K
    : N;
  return {
    kernel: `matmul_${op}${variant ? `[${variant}]` : ""}`,
    shape: op === "bias_backward" ? `M=${M} N=${N}` : `M=${M} N=${N} K=${K}`,
    flops,
    bytes: op === "bias_backward" ? 4 * (M * N + N) : undefined,
    setup(gpu: Gpu): KernelSetup {
      const before = { ...matmulTuning(gpu) };
      if (variant === "big-scalar") setMatmulTuning(gpu, { variant: "big", vec4: false });
      else if (f16) {
        const v = variant!.slice(0, -4) as MatmulTuning["variant"];
        setMatmulTuning(gpu, { variant: v, vec4: true, precision: "f16" });
      } else if (variant) setMatmulTuning(gpu, { variant: variant as MatmulTuning["variant"] });
      const x = fill(M * K, 1), w = fill(N * K, 2), dy = fill(M * N, 3);
      const arena = new ParamArena(gpu, "bench.matmul", 4096);
      const bufs: GPUBuffer[] = [];
      const mk = (label: string, data: Float32Array) => {
        const b = gpu.bufferFrom(label, data);
        bufs.push(b);
        return b;
      };
      const out = gpu.buffer(`bench.matmul.${op}.out`, outLen * 4);
      bufs.push(out);
      let dispatches: Dispatch[];
      if (op === "forward") {
        dispatches = matmulForward(gpu, arena, {
          y: out,
          x: mk("bench.matmul.x", x),
          w: mk("bench.matmul.w", w),
          M,
          N,
          K,
        });
      } else if (op === "backward_input") {
        dispatches = matmulBackwardInput(gpu, arena, {
          dx: out,
          dy: mk("bench.matmul.dy", dy),
          w: mk("bench.matmul.w", w),
          M,
          N,
          K,
        });
      } else if (op === "backward_weight") {
        dispatches = matmulBackwardWeight(gpu, arena, {
          dw: out,
          dy: mk("bench.matmul.dy", dy),
          x: mk("bench.matmul.x", x),
          M,
          N,
          K,
        });
      } else {
        dispatches = biasBackward(gpu, arena, { db: out, dy: mk("bench.matmul.dy", dy), M, N });
      }
      setMatmulTuning(gpu, before);
      return {
        dispatches,
        check: async () => {
          const got = await gpu.readF32(out, 0, outLen);
          // 64 sampled outputs (first, last and a stride through the middle) against f64.
          let err = 0;
          for (let s = 0; s < 64; s++) {
            const idx = s === 63 ? outLen - 1 : Math.floor((s * outLen) / 63);
            const ref = refAt(op, idx, M, N, K, x, w, dy);
            // error floor ~ sqrt(reduction length): K (forward), N (dX), M tokens (dW, db);
            // f16: relative to the sum of absolute products
            const red = op === "forward" ? K : op === "backward_input" ? N : M;
            const scale = f16
              ? refAt(op, idx, M, N, K, x, w, dy, true)
              : Math.max(Math.abs(ref), Math.sqrt(red) * 1e-2);
            const e = Math.abs(got[idx] - ref) / scale;
            err = Number.isNaN(e) ? Infinity : Math.max(err, e);
          }
          return { maxRelErr: err, tolerance: f16 ? F16_TOL : 1e-4 };
        },
        cleanup: () => {
          for (const b of bufs) b.destroy();
          arena.destroy();
        },
      };
    },
  };
}

/**
 * Matmul cases: 1024³ and a training-like shape for forward, dX and dW, plus the bias grad; on a
 * GPU also 4096³ and the SmolLM2-135M / Llama-3.2-1B MLP shapes at 4,096 tokens.
 */
export function cases(filter?: string, gpu?: Gpu): KernelCase[] {
  const list: KernelCase[] = [];
  if (gpu && !isCpuAdapter(gpu)) {
    for (const v of ["gpu", "tiled", "big-scalar", "big"] as const) {
      list.push(matmulCase("forward", 4096, 4096, 4096, v));
    }
    for (const op of ["forward", "backward_input", "backward_weight"] as const) {
      list.push(matmulCase(op, 4096, 1536, 576)); // SmolLM2-135M gate/up projection
      list.push(matmulCase(op, 4096, 576, 576)); // SmolLM2-135M q/o projection
      list.push(matmulCase(op, 4096, 192, 576)); // SmolLM2-135M k/v projection
      list.push(matmulCase(op, 4096, 8192, 2048)); // Llama-3.2-1B gate/up projection
    }
    if (gpu.hasF16) {
      // f16 arithmetic: the per-shape choice among the f16 kernels, and each one fixed
      for (const v of ["gpu-f16", "tiled-f16", "big-f16"] as const) {
        list.push(matmulCase("forward", 4096, 4096, 4096, v));
      }
      for (const op of ["forward", "backward_input", "backward_weight"] as const) {
        list.push(matmulCase(op, 4096, 1536, 576, "gpu-f16"));
        list.push(matmulCase(op, 4096, 192, 576, "gpu-f16"));
        list.push(matmulCase(op, 4096, 8192, 2048, "gpu-f16"));
      }
    }
    // the per-shape choice against each fixed kernel, on the shapes where they differ
    for (const v of ["tiled", "big"] as const) {
      list.push(matmulCase("forward", 4096, 576, 576, v));
      list.push(matmulCase("backward_weight", 4096, 192, 576, v));
      list.push(matmulCase("backward_weight", 4096, 576, 576, v));
    }
  }
  for (const op of ["forward", "backward_input", "backward_weight"] as const) {
    list.push(matmulCase(op, 1024, 1024, 1024));
  }
  for (const op of ["forward", "backward_input", "backward_weight"] as const) {
    list.push(matmulCase(op, 2048, 768, 288));
  }
  list.push(matmulCase("bias_backward", 2048, 768, 1));
  // The other variant at 1024³ for comparison (the default one is picked per adapter).
  list.push(matmulCase("forward", 1024, 1024, 1024, "tiled"));
  list.push(matmulCase("forward", 1024, 1024, 1024, "wide"));
  if (gpu?.hasF16) list.push(matmulCase("forward", 1024, 1024, 1024, "tiled-f16"));
  return list.filter((c) => !filter || c.kernel.includes(filter));
}
