// Matmul launchers against f64 references (and finite differences for the backward ops), in every
// kernel variant, at odd shapes, with accumulation, row strides and NaN-poisoned outputs.
//
// Error metric: max |gpu − ref| / max(|ref|, floor) with floor = 1e-2 · RMS(ref), so outputs that
// cancel to ~0 are judged against the typical output size; tolerance 1e-4 (f32 reductions).
import assert from "node:assert/strict";
import {
  biasBackward,
  gemmVec4Ok,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulForward,
  type MatmulTuning,
  matmulTuning,
  planGemm,
  setMatmulTuning,
} from "../../kernels/matmul.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, maxRelErr, randomArray, report, runAndRead } from "../helpers.ts";
import {
  biasBackwardRef,
  linearProbeLoss,
  matmulBackwardInputRef,
  matmulBackwardWeightRef,
  matmulRef,
} from "../reference/matmul.ts";

const TOL = 1e-4;

/**
 * Kernel variants under test: the adapter default, the GPU kernels (64- and 128-tiles, each also
 * split along K), the per-shape GPU choice, and a cut-down wide one.
 */
const VARIANTS: { name: string; tuning: Partial<MatmulTuning> | null }[] = [
  { name: "default", tuning: null },
  { name: "tiled", tuning: { variant: "tiled", splitK: 1, vec4: false } },
  { name: "tiled split 3", tuning: { variant: "tiled", splitK: 3, vec4: false } },
  { name: "tiled v4", tuning: { variant: "tiled", splitK: 1, vec4: true } },
  { name: "tiled v4 split 2", tuning: { variant: "tiled", splitK: 2, vec4: true } },
  { name: "big", tuning: { variant: "big", splitK: 1, vec4: false } },
  { name: "big split 2", tuning: { variant: "big", splitK: 2, vec4: false } },
  { name: "big v4", tuning: { variant: "big", splitK: 1, vec4: true } },
  { name: "big v4 split 3", tuning: { variant: "big", splitK: 3, vec4: true } },
  { name: "gpu", tuning: { variant: "gpu" } },
  { name: "wide 5x4 wg3", tuning: { variant: "wide", wideRows: 5, wideCols: 4, wideWg: 3 } },
  { name: "vec 4x8", tuning: { variant: "vec", vecRows: 4, vecCols: 8 } },
];

/** Shapes (M, N, K): unit dims, odd sizes, sizes spanning several workgroups in each direction. */
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 7, 5],
  [33, 17, 65],
  [64, 64, 64],
  [3, 130, 2],
  [70, 5, 9],
  [2, 300, 1],
  [40, 70, 100],
  [36, 132, 100], // multiples of 4: the vec4 kernels run
  [33, 36, 44], // vec4 with a ragged M; its dW reads A row-contiguous over a ragged K
  [4, 8, 4],
];

function rms(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s / Math.max(a.length, 1));
}

function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  return maxRelErr(got, ref, 1e-2 * rms(ref) || 1e-30);
}

/** Run `fn` with the variant's tuning, restoring the previous one afterwards. */
async function withVariant<T>(
  gpu: Gpu,
  tuning: Partial<MatmulTuning> | null,
  fn: () => Promise<T>,
): Promise<T> {
  const before = { ...matmulTuning(gpu) };
  if (tuning) setMatmulTuning(gpu, tuning);
  try {
    return await fn();
  } finally {
    setMatmulTuning(gpu, before);
  }
}

/** Upload, run the dispatches, read `out` back, free the buffers. */
async function run(
  gpu: Gpu,
  build: Parameters<typeof runAndRead>[2],
): Promise<Float32Array> {
  return (await runAndRead(gpu, "test.matmul", build)).got;
}

for (const v of VARIANTS) {
  gpuTest(`matmul[${v.name}]: forward (+bias) matches f64 at odd shapes`, async (gpu) => {
    await withVariant(gpu, v.tuning, async () => {
      let worst = 0;
      for (const [M, N, K] of SHAPES) {
        const x = randomArray(M * K, 1 + M, 1), w = randomArray(N * K, 2 + N, 1);
        const bias = randomArray(N, 3 + K, 1);
        for (const withBias of [false, true]) {
          const got = await run(gpu, (arena, up) => {
            const y = up("test.y", new Float32Array(M * N).fill(NaN)); // poison
            return {
              out: y,
              dispatches: matmulForward(gpu, arena, {
                y,
                x: up("test.x", x),
                w: up("test.w", w),
                bias: withBias ? up("test.b", bias) : undefined,
                M,
                N,
                K,
              }),
            };
          });
          const err = relErr(got, matmulRef(x, w, M, N, K, withBias ? bias : undefined));
          assert.ok(err <= TOL, `M=${M} N=${N} K=${K} bias=${withBias}: err ${err}`);
          worst = Math.max(worst, err);
        }
      }
      report(`forward [${v.name}] ${SHAPES.length} shapes`, worst, TOL);
    });
  });

  gpuTest(`matmul[${v.name}]: forward accumulates into a strided Y (ldy)`, async (gpu) => {
    await withVariant(gpu, v.tuning, async () => {
      const [M, N, K, ldy] = [19, 37, 23, 41];
      const x = randomArray(M * K, 5), w = randomArray(N * K, 6);
      const init = randomArray(M * ldy, 7);
      for (let m = 0; m < M; m++) for (let n = N; n < ldy; n++) init[m * ldy + n] = 12345;
      const got = await run(gpu, (arena, up) => {
        const y = up("test.y", init);
        return {
          out: y,
          dispatches: matmulForward(gpu, arena, {
            y,
            x: up("test.x", x),
            w: up("test.w", w),
            M,
            N,
            K,
            ldy,
            accumulate: true,
          }),
        };
      });
      const prod = matmulRef(x, w, M, N, K);
      const ref = new Float64Array(M * N), out = new Float64Array(M * N);
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < ldy; n++) {
          if (n >= N) {
            assert.equal(got[m * ldy + n], 12345, `column ${n} beyond N was written`);
            continue;
          }
          ref[m * N + n] = init[m * ldy + n] + prod[m * N + n];
          out[m * N + n] = got[m * ldy + n];
        }
      }
      const err = relErr(out, ref);
      report(`forward accumulate ldy [${v.name}]`, err, TOL);
      assert.ok(err <= TOL);
    });
  });

  gpuTest(`matmul[${v.name}]: backward dX and dW (=, +=, lddy) match f64`, async (gpu) => {
    await withVariant(gpu, v.tuning, async () => {
      let worst = 0;
      for (const [M, N, K] of SHAPES) {
        for (const accumulate of [false, true]) {
          const lddy = accumulate ? N + 2 : N;
          const dy = randomArray(M * lddy, 11 + M), w = randomArray(N * K, 12 + N);
          const x = randomArray(M * K, 13 + K);
          const dxInit = accumulate ? randomArray(M * K, 14) : new Float32Array(M * K).fill(NaN);
          const dwInit = accumulate ? randomArray(N * K, 15) : new Float32Array(N * K).fill(NaN);
          const dx = await run(gpu, (arena, up) => {
            const out = up("test.dx", dxInit);
            return {
              out,
              dispatches: matmulBackwardInput(gpu, arena, {
                dx: out,
                dy: up("test.dy", dy),
                w: up("test.w", w),
                M,
                N,
                K,
                accumulate,
                lddy,
              }),
            };
          });
          const dw = await run(gpu, (arena, up) => {
            const out = up("test.dw", dwInit);
            return {
              out,
              dispatches: matmulBackwardWeight(gpu, arena, {
                dw: out,
                dy: up("test.dy", dy),
                x: up("test.x", x),
                M,
                N,
                K,
                accumulate,
                lddy,
              }),
            };
          });
          const dxRef = matmulBackwardInputRef(dy, w, M, N, K, lddy);
          const dwRef = matmulBackwardWeightRef(dy, x, M, N, K, lddy);
          if (accumulate) {
            for (let i = 0; i < dxRef.length; i++) dxRef[i] += dxInit[i];
            for (let i = 0; i < dwRef.length; i++) dwRef[i] += dwInit[i];
          }
          const e1 = relErr(dx, dxRef), e2 = relErr(dw, dwRef);
          const tag = `M=${M} N=${N} K=${K} acc=${accumulate}`;
          assert.ok(e1 <= TOL, `dX ${tag}: err ${e1}`);
          assert.ok(e2 <= TOL, `dW ${tag}: err ${e2}`);
          worst = Math.max(worst, e1, e2);
        }
      }
      report(`dX, dW [${v.name}] ${SHAPES.length} shapes × (=, +=)`, worst, TOL);
    });
  });
}

gpuTest("matmul: bias backward (=, +=, lddy) matches f64", async (gpu) => {
  let worst = 0;
  for (const [M, N] of [[1, 1], [1, 70], [37, 5], [300, 67]]) {
    for (const accumulate of [false, true]) {
      const lddy = accumulate ? N + 3 : N;
      const dy = randomArray(M * lddy, 21 + M);
      const init = accumulate ? randomArray(N, 22) : new Float32Array(N).fill(NaN);
      const got = await run(gpu, (arena, up) => {
        const db = up("test.db", init);
        return {
          out: db,
          dispatches: biasBackward(gpu, arena, {
            db,
            dy: up("test.dy", dy),
            M,
            N,
            accumulate,
            lddy,
          }),
        };
      });
      const ref = biasBackwardRef(dy, M, N, lddy);
      if (accumulate) { for (let i = 0; i < N; i++) ref[i] += init[i]; }
      const err = relErr(got, ref);
      assert.ok(err <= TOL, `M=${M} N=${N} acc=${accumulate}: err ${err}`);
      worst = Math.max(worst, err);
    }
  }
  report("bias backward", worst, TOL);
});

gpuTest("matmul: dX, dW, db match central finite differences of the f64 loss", async (gpu) => {
  const [M, N, K] = [5, 6, 7];
  const x = randomArray(M * K, 31), w = randomArray(N * K, 32), bias = randomArray(N, 33);
  const g = randomArray(M * N, 34); // dL/dY of L = Σ G ⊙ (X·Wᵀ + b)
  const loss = (xx: ArrayLike<number>, ww: ArrayLike<number>, bb: ArrayLike<number>) =>
    linearProbeLoss(xx, ww, bb, g, M, N, K);
  const fd = (arr: ArrayLike<number>, which: 0 | 1 | 2) => {
    const h = 1e-3; // L is bilinear, so central differences are exact up to f64 rounding
    const out = new Float64Array(arr.length);
    for (let i = 0; i < arr.length; i++) {
      const plus = Float64Array.from(arr), minus = Float64Array.from(arr);
      plus[i] += h;
      minus[i] -= h;
      const args = (v: Float64Array) =>
        [which === 0 ? v : x, which === 1 ? v : w, which === 2 ? v : bias] as const;
      out[i] = (loss(...args(plus)) - loss(...args(minus))) / (2 * h);
    }
    return out;
  };
  const dx = await run(gpu, (arena, up) => {
    const out = up("test.dx", new Float32Array(M * K).fill(NaN));
    return {
      out,
      dispatches: matmulBackwardInput(gpu, arena, {
        dx: out,
        dy: up("test.g", g),
        w: up("test.w", w),
        M,
        N,
        K,
      }),
    };
  });
  const dw = await run(gpu, (arena, up) => {
    const out = up("test.dw", new Float32Array(N * K).fill(NaN));
    return {
      out,
      dispatches: matmulBackwardWeight(gpu, arena, {
        dw: out,
        dy: up("test.g", g),
        x: up("test.x", x),
        M,
        N,
        K,
      }),
    };
  });
  const db = await run(gpu, (arena, up) => {
    const out = up("test.db", new Float32Array(N).fill(NaN));
    return { out, dispatches: biasBackward(gpu, arena, { db: out, dy: up("test.g", g), M, N }) };
  });
  const e = [relErr(dx, fd(x, 0)), relErr(dw, fd(w, 1)), relErr(db, fd(bias, 2))];
  report("dX vs finite differences", e[0], TOL);
  report("dW vs finite differences", e[1], TOL);
  report("db vs finite differences", e[2], TOL);
  for (const v of e) assert.ok(v <= TOL);
});

gpuTest("matmul: two runs are bit-identical", async (gpu) => {
  const [M, N, K] = [45, 77, 130];
  const x = randomArray(M * K, 41), w = randomArray(N * K, 42);
  const once = () =>
    run(gpu, (arena, up) => {
      const y = up("test.y", new Float32Array(M * N).fill(NaN));
      return {
        out: y,
        dispatches: matmulForward(gpu, arena, {
          y,
          x: up("test.x", x),
          w: up("test.w", w),
          M,
          N,
          K,
        }),
      };
    });
  const a = await once(), b = await once();
  assert.deepEqual(new Uint32Array(a.buffer), new Uint32Array(b.buffer));
});

gpuTest("matmul: bad shapes and tunings are rejected", (gpu) => {
  const arena = new ParamArena(gpu, "test.matmul.bad", 1024);
  const buf = gpu.buffer("test.bad", 64);
  assert.throws(() => matmulForward(gpu, arena, { y: buf, x: buf, w: buf, M: 0, N: 1, K: 1 }));
  assert.throws(() =>
    matmulForward(gpu, arena, { y: buf, x: buf, w: buf, M: 1, N: 4, K: 1, ldy: 3 })
  );
  assert.throws(() => setMatmulTuning(gpu, { wideCols: 6 }));
  assert.throws(() => setMatmulTuning(gpu, { wideRows: 17 }));
  assert.throws(() => setMatmulTuning(gpu, { splitK: 0 }));
  assert.throws(() => setMatmulTuning(gpu, { vecRows: 6 }));
  assert.throws(() => setMatmulTuning(gpu, { vecCols: 36 }));
  assert.throws(() => setMatmulTuning(gpu, { vecWindow: 20000 }));
  assert.throws(() => setMatmulTuning(gpu, { vecWindows: "on" as "auto" }));
  buf.destroy();
  arena.destroy();
});

Deno.test("matmul: the GPU plan picks 128-tiles for large grids and splits K for small ones", () => {
  const t: MatmulTuning = {
    variant: "gpu",
    precision: "f32",
    splitK: 1,
    vec4: false,
    bigMinWorkgroups: 256,
    splitMinWorkgroups: 256,
    wideWg: 8,
    wideRows: 16,
    wideCols: 16,
    vec: true,
    vecRows: 8,
    vecCols: 32,
    vecWindow: 16384,
    vecWindows: "auto",
  };
  // SmolLM2-135M at 4,096 tokens: the MLP forward fills the device with 128-tiles.
  assert.deepEqual(planGemm(t, 4096, 1536, 576), {
    entry: "matmul_big",
    tile: 128,
    slices: 1,
    kSlice: 576,
  });
  // q projection: 160 big tiles are too few, 576 small ones are enough, K is short.
  assert.deepEqual(planGemm(t, 4096, 576, 576), {
    entry: "matmul_tiled",
    tile: 64,
    slices: 1,
    kSlice: 576,
  });
  // k-projection weight grad: 27 tiles over K = 4,096 tokens → 8 slices of 512.
  assert.deepEqual(planGemm(t, 192, 576, 4096), {
    entry: "matmul_tiled",
    tile: 64,
    slices: 8,
    kSlice: 512,
  });
  // 16-byte loads when both operands allow them
  const v4 = { ...t, vec4: true };
  assert.equal(planGemm(v4, 4096, 1536, 576, true).entry, "matmul_big_v4");
  assert.equal(planGemm(v4, 4096, 1536, 576, false).entry, "matmul_big");
  assert.equal(planGemm(v4, 4096, 576, 576, true).entry, "matmul_tiled_v4");
  assert.equal(planGemm(v4, 4096, 576, 576, false).entry, "matmul_tiled");
  const dummy = {} as GPUBuffer;
  const fwd = (K: number, offA = 0) => ({
    c: dummy,
    a: dummy,
    b: dummy,
    M: 8,
    N: 12,
    K,
    sAi: K,
    sAp: 1,
    sBp: 1,
    sBj: K,
    ldc: 12,
    offA,
  });
  assert.equal(gemmVec4Ok(fwd(576)), true);
  assert.equal(gemmVec4Ok(fwd(577)), false);
  assert.equal(gemmVec4Ok(fwd(576, 2)), false);
  // dW: A = dYᵀ (i-contiguous, stride along p = N), B = X (j-contiguous)
  assert.equal(
    gemmVec4Ok({
      c: dummy,
      a: dummy,
      b: dummy,
      M: 8,
      N: 12,
      K: 5,
      sAi: 1,
      sAp: 8,
      sBp: 12,
      sBj: 1,
      ldc: 12,
    }),
    true,
  );
  // forced split on a forced kernel, K not a multiple of the slice
  assert.deepEqual(planGemm({ ...t, variant: "big", splitK: 3 }, 10, 10, 100), {
    entry: "matmul_big",
    tile: 128,
    slices: 3,
    kSlice: 48,
  });
});

gpuTest("matmul[gpu]: split-K forward and dW (+=, bias) match f64 at K = 1,100", async (gpu) => {
  const [M, N, K] = [20, 30, 1100];
  const x = randomArray(M * K, 71), w = randomArray(N * K, 72), bias = randomArray(N, 73);
  const y0 = randomArray(M * N, 74);
  const got = await withVariant(gpu, { variant: "gpu" }, () => {
    assert.equal(planGemm(matmulTuning(gpu), M, N, K).slices, 2);
    return run(gpu, (arena, up) => {
      const y = up("test.y", y0);
      return {
        out: y,
        dispatches: matmulForward(gpu, arena, {
          y,
          x: up("test.x", x),
          w: up("test.w", w),
          bias: up("test.bias", bias),
          M,
          N,
          K,
          accumulate: true,
        }),
      };
    });
  });
  const ref = matmulRef(x, w, M, N, K, bias);
  for (let i = 0; i < ref.length; i++) ref[i] += y0[i];
  const e = relErr(got, ref);
  report("matmul split-K forward M=20 N=30 K=1100", e, TOL);
  assert.ok(e < TOL, `max rel err ${e}`);
  // dW = dYᵀ X with K = M tokens = 1,100 (the weight-gradient shape that splits in training)
  const [T, O, I] = [1100, 24, 36];
  const dy = randomArray(T * O, 75), xi = randomArray(T * I, 76);
  const gotW = await withVariant(gpu, { variant: "gpu" }, () =>
    run(gpu, (arena, up) => {
      const dw = up("test.dw", new Float32Array(O * I));
      return {
        out: dw,
        dispatches: matmulBackwardWeight(gpu, arena, {
          dw,
          dy: up("test.dy", dy),
          x: up("test.x", xi),
          M: T,
          N: O,
          K: I,
        }),
      };
    }));
  const refW = matmulBackwardWeightRef(dy, xi, T, O, I);
  const eW = relErr(gotW, refW);
  report("matmul split-K dW T=1100 O=24 I=36", eW, TOL);
  assert.ok(eW < TOL, `max rel err ${eW}`);
});
