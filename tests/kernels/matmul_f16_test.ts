// The f16-arithmetic GEMMs (kernels/matmul_f16.wgsl) against f64 references, judged by the error
// bound of their arithmetic, on every tile and split; and their overflow behaviour.
//
// Error metric: per output, |gpu − ref| / Σ_p |A(i,p)·B(p,j)| (the f64 sum of absolute products).
// Rounding both inputs to f16 (2 · 2^-11) and summing 16 products in f16 (16 · 2^-11) bound it by
// 18 · 2^-11 = 8.8e-3 in the worst case. The measured error must also exceed f32 rounding (1e-6):
// otherwise the f16 kernels did not run.
import assert from "node:assert/strict";
import {
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulForward,
  type MatmulTuning,
  matmulTuning,
  planGemm,
  setMatmulTuning,
} from "../../kernels/matmul.ts";
import type { Gpu } from "../../kernels/runtime.ts";
import { gpuTest, randomArray, report, runAndRead } from "../helpers.ts";
import { matmulBackwardInputRef, matmulBackwardWeightRef, matmulRef } from "../reference/matmul.ts";

const TOL = 18 * 2 ** -11;
const F32_LEVEL = 1e-6;

const VARIANTS: { name: string; tuning: Partial<MatmulTuning> }[] = [
  { name: "tiled", tuning: { variant: "tiled", splitK: 1 } },
  { name: "tiled split 2", tuning: { variant: "tiled", splitK: 2 } },
  { name: "big", tuning: { variant: "big", splitK: 1 } },
  { name: "big split 3", tuning: { variant: "big", splitK: 3 } },
  { name: "gpu", tuning: { variant: "gpu" } },
];

/** Shapes (M, N, K), multiples of 4 (the f16 kernels share the 16-byte kernels' conditions). */
const SHAPES: [number, number, number][] = [
  [4, 8, 4],
  [36, 132, 100],
  [132, 36, 44], // ragged tiles in M and a K that is no multiple of the 16-slice
  [20, 16, 520], // many slices per workgroup
];

const abs = (a: Float32Array) => a.map(Math.abs);

/** Max over outputs of |got − ref| / bound (bound = Σ|products|; 0-bound outputs must be exact). */
function boundErr(got: Float32Array, ref: Float64Array, bound: Float64Array): number {
  let e = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    const r = bound[i] > 0 ? d / bound[i] : (d === 0 ? 0 : Infinity);
    e = Number.isNaN(r) ? Infinity : Math.max(e, r);
  }
  return e;
}

async function withTuning<T>(gpu: Gpu, t: Partial<MatmulTuning>, fn: () => Promise<T>) {
  const before = { ...matmulTuning(gpu) };
  setMatmulTuning(gpu, { vec4: true, precision: "f16", ...t });
  try {
    return await fn();
  } finally {
    setMatmulTuning(gpu, before);
  }
}

const run = (gpu: Gpu, build: Parameters<typeof runAndRead>[2]) =>
  runAndRead(gpu, "test.matmul_f16", build);

gpuTest("matmul f16: the plan takes the f16 kernels only where allowed", (gpu) => {
  const t = { ...matmulTuning(gpu), variant: "big" as const, vec4: true };
  assert.equal(planGemm({ ...t, precision: "f16" }, 256, 256, 64, true).entry, "matmul_big_h");
  assert.equal(planGemm({ ...t, precision: "f16" }, 256, 256, 64, false).entry, "matmul_big");
  assert.equal(planGemm({ ...t, precision: "f32" }, 256, 256, 64, true).entry, "matmul_big_v4");
  assert.equal(
    planGemm({ ...t, variant: "tiled", precision: "f16" }, 64, 64, 64, true).entry,
    "matmul_tiled_h",
  );
  // a tuned choice that measured f32 faster keeps f32
  const choices = new Map([["k", { tile: 128 as const, slices: 1, vec4: true, f16: false }]]);
  assert.equal(
    planGemm({ ...t, variant: "gpu", precision: "f16", choices }, 256, 256, 64, true, "k").entry,
    "matmul_big_v4",
  );
});

for (const v of VARIANTS) {
  gpuTest(`matmul f16 [${v.name}]: forward, dX, dW within the f16 error bound`, async (gpu) => {
    if (!gpu.hasF16) {
      assert.throws(() => setMatmulTuning(gpu, { precision: "f16" }), /shader-f16/);
      console.log("  adapter lacks shader-f16: only the refusal was checked");
      return;
    }
    await withTuning(gpu, v.tuning, async () => {
      let worst = 0;
      for (const [M, N, K] of SHAPES) {
        const x = randomArray(M * K, 1 + M), w = randomArray(N * K, 2 + N);
        const dy = randomArray(M * N, 3 + K), bias = randomArray(N, 4);
        const init = randomArray(M * K, 5);
        const y = await run(gpu, (arena, up) => {
          const out = up("test.y", new Float32Array(M * N).fill(NaN));
          const d = matmulForward(gpu, arena, {
            y: out,
            x: up("test.x", x),
            w: up("test.w", w),
            bias: up("test.b", bias),
            M,
            N,
            K,
          });
          return { out, dispatches: d };
        });
        const dx = await run(gpu, (arena, up) => {
          const out = up("test.dx", init);
          const d = matmulBackwardInput(gpu, arena, {
            dx: out,
            dy: up("test.dy", dy),
            w: up("test.w", w),
            M,
            N,
            K,
            accumulate: true,
          });
          return { out, dispatches: d };
        });
        const dw = await run(gpu, (arena, up) => {
          const out = up("test.dw", new Float32Array(N * K).fill(NaN));
          const d = matmulBackwardWeight(gpu, arena, {
            dw: out,
            dy: up("test.dy", dy),
            x: up("test.x", x),
            M,
            N,
            K,
          });
          return { out, dispatches: d };
        });
        for (const r of [y, dx, dw]) {
          assert.ok(r.kernels.some((e) => e.endsWith("_h")), `no f16 kernel in ${r.kernels}`);
        }
        const yRef = matmulRef(x, w, M, N, K, bias);
        const dxRef = matmulBackwardInputRef(dy, w, M, N, K).map((g, i) => g + init[i]);
        const dwRef = matmulBackwardWeightRef(dy, x, M, N, K);
        const errs = [
          boundErr(y.got, yRef, matmulRef(abs(x), abs(w), M, N, K)),
          boundErr(dx.got, dxRef, matmulBackwardInputRef(abs(dy), abs(w), M, N, K)),
          boundErr(dw.got, dwRef, matmulBackwardWeightRef(abs(dy), abs(x), M, N, K)),
        ];
        const shape = `M=${M} N=${N} K=${K}`;
        errs.forEach((e, i) => assert.ok(e <= TOL, `${shape} ${["y", "dX", "dW"][i]}: err ${e}`));
        if (K >= 44) {
          assert.ok(errs[0] > F32_LEVEL, `${shape}: error ${errs[0]} is f32-level: no f16 ran`);
        }
        worst = Math.max(worst, ...errs);
      }
      report(`f16 forward/dX/dW [${v.name}] ${SHAPES.length} shapes (of Σ|products|)`, worst, TOL);
    });
  });
}

gpuTest("matmul f16: values past the f16 range give infinities, not wrong numbers", async (gpu) => {
  if (!gpu.hasF16) {
    console.log("  adapter lacks shader-f16: nothing to check");
    return;
  }
  await withTuning(gpu, { variant: "tiled", splitK: 1 }, async () => {
    const [M, N, K] = [8, 8, 16];
    const x = new Float32Array(M * K).fill(1), w = new Float32Array(N * K).fill(1);
    x[3] = 1e5; // row 0 overflows f16 at staging
    for (let k = 0; k < K; k++) x[2 * K + k] = 5000; // row 2: each product fits, the sum does not
    const { got } = await run(gpu, (arena, up) => {
      const out = up("test.y", new Float32Array(M * N));
      return {
        out,
        dispatches: matmulForward(gpu, arena, {
          y: out,
          x: up("test.x", x),
          w: up("test.w", w),
          M,
          N,
          K,
        }),
      };
    });
    for (const i of [0, 2]) {
      for (let j = 0; j < N; j++) {
        assert.ok(!Number.isFinite(got[i * N + j]), `row ${i}: ${got[i * N + j]} is finite`);
      }
    }
    assert.equal(got[N], K, "row 1 is exact");
  });
});
