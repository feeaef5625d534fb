// Benchmark cases for the fused cross-entropy: forward (eval) and forward+backward (training) at
// a Llama-like vocabulary and at the tiny stories260K shape; checked on sampled tokens against f64.
import {
  crossEntropyForward,
  crossEntropyForwardBackward,
  crossEntropyWorkspace,
} from "../../kernels/cross_entropy.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import type { KernelCase, KernelSetup } from "../lib.ts";

/** Deterministic pseudo-random floats in [-scale, scale) (xorshift). */
function fill(n: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = (((s >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return a;
}

/** f64 loss and dh row of token t (dh for invTokens = 1/T, scale 1). */
function tokenRef(
  h: Float32Array,
  w: Float32Array,
  label: number,
  t: number,
  C: number,
  V: number,
  T: number,
): { loss: number; dh: Float64Array } {
  const z = new Float64Array(V);
  let m = -Infinity;
  for (let v = 0; v < V; v++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += h[t * C + c] * w[v * C + c];
    z[v] = s;
    m = Math.max(m, s);
  }
  let se = 0;
  for (let v = 0; v < V; v++) se += Math.exp(z[v] - m);
  const lse = m + Math.log(se);
  const dh = new Float64Array(C);
  for (let v = 0; v < V; v++) {
    const dz = (Math.exp(z[v] - lse) - (v === label ? 1 : 0)) / T;
    for (let c = 0; c < C; c++) dh[c] += dz * w[v * C + c];
  }
  return { loss: lse - z[label], dh };
}

function ceCase(T: number, C: number, V: number, backward: boolean): KernelCase {
  const gemms = backward ? 4 : 1; // logits (twice when training), dh, dw
  return {
    kernel: backward ? "cross_entropy_forward_backward" : "cross_entropy_forward",
    shape: `T=${T} C=${C} V=${V}`,
    flops: gemms * 2 * T * V * C,
    setup(gpu: Gpu): KernelSetup {
      const h = fill(T * C, 1, 1), w = fill(V * C, 2, 0.5);
      const labels = Int32Array.from(
        { length: T },
        (_, t) => (t % 7 === 3 ? -100 : (t * 7919) % V),
      );
      const arena = new ParamArena(gpu, "bench.ce", 65536);
      const ws = crossEntropyWorkspace(gpu, T, V);
      const bufs = [
        gpu.bufferFrom("bench.ce.h", h),
        gpu.bufferFrom("bench.ce.w", w),
        gpu.bufferFrom("bench.ce.labels", labels),
        gpu.buffer("bench.ce.lossAcc", 16),
        gpu.buffer("bench.ce.tokenLoss", T * 4),
        gpu.buffer("bench.ce.dh", T * C * 4),
        gpu.buffer("bench.ce.dw", V * C * 4),
        gpu.bufferFrom("bench.ce.inv", new Float32Array([1 / T])),
      ];
      const [hb, wb, lb, lossAcc, tokenLoss, dh, dw, inv] = bufs;
      const base = {
        h: hb,
        w: wb,
        labels: lb,
        lossAcc,
        tokenLoss,
        T,
        C,
        V,
        logitScale: 1,
        workspace: ws,
      };
      const dispatches = backward
        ? crossEntropyForwardBackward(gpu, arena, { ...base, dh, dw, invTokens: inv })
        : crossEntropyForward(gpu, arena, base);
      return {
        dispatches,
        check: async () => {
          const [tl, dhr] = await gpu.read([{ buffer: tokenLoss }, { buffer: dh }]);
          const gotLoss = new Float32Array(tl), gotDh = new Float32Array(dhr);
          let err = 0;
          for (let s = 0; s < 6; s++) {
            const t = Math.floor((s * (T - 1)) / 5);
            if (labels[t] === -100) continue;
            const ref = tokenRef(h, w, labels[t], t, C, V, T);
            err = Math.max(err, Math.abs(gotLoss[t] - ref.loss) / Math.max(ref.loss, 1e-6));
            if (!backward) continue;
            let scale = 0;
            for (const x of ref.dh) scale = Math.max(scale, Math.abs(x));
            for (let c = 0; c < C; c++) {
              const e = Math.abs(gotDh[t * C + c] - ref.dh[c]) /
                Math.max(Math.abs(ref.dh[c]), 1e-2 * scale);
              err = Number.isNaN(e) ? Infinity : Math.max(err, e);
            }
          }
          return { maxRelErr: err, tolerance: 1e-4 };
        },
        cleanup: () => {
          for (const b of bufs) b.destroy();
          ws.destroy();
          arena.destroy();
        },
      };
    },
  };
}

/** Cross-entropy cases: Llama-like vocabulary (4 chunks) and the stories260K shape. */
export function cases(filter?: string): KernelCase[] {
  const list = [
    ceCase(256, 288, 32000, false),
    ceCase(256, 288, 32000, true),
    ceCase(1024, 64, 512, true),
  ];
  return list.filter((c) => !filter || c.kernel.includes(filter));
}
