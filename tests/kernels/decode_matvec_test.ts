// Decode GEMV tests: y = [y +] alpha·(W·x + b) against an f64 reference, scalar and vec4 paths.
import assert from "node:assert/strict";
import { matvec, matvecLanes, matvecSwiglu } from "../../kernels/decode_matvec.ts";
import { ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";

const TOL = 1e-4; // a dot product over K
const FLOOR = 1e-2; // relative-error floor: |y| is O(sqrt(K)) · 0.25, cancellation near 0

Deno.test("decode matvec: lanes per row grow with the row length up to 32", () => {
  assert.deepEqual([1, 8, 9, 16, 17, 64, 250, 256, 10000].map(matvecLanes), [
    1,
    1,
    2,
    2,
    4,
    8,
    32,
    32,
    32,
  ]);
});

gpuTest("decode matvec: every variant (vec4/scalar, bias, accumulate) vs f64", async (gpu) => {
  const cases = [
    { N: 37, K: 64, bias: false, acc: false, alpha: 1 },
    { N: 37, K: 64, bias: true, acc: true, alpha: 0.5 },
    { N: 9, K: 23, bias: true, acc: false, alpha: 1 }, // K not a multiple of 4: scalar path
    { N: 130, K: 7, bias: false, acc: true, alpha: 2 }, // 1 lane per row
    { N: 19, K: 1000, bias: true, acc: false, alpha: 1 }, // 32 lanes per row
    { N: 11, K: 301, bias: false, acc: false, alpha: 1 }, // scalar, 32 lanes
  ];
  const arena = new ParamArena(gpu, "decode_matvec_test.params", 4096);
  for (const [i, c] of cases.entries()) {
    const { N, K } = c;
    const w = randomArray(N * K, 10 + i, 0.5);
    const x = randomArray(K, 20 + i, 0.5);
    const b = randomArray(N, 30 + i, 0.5);
    const y0 = c.acc ? randomArray(N, 40 + i, 1) : new Float32Array(N).fill(NaN);
    const bufs = {
      y: { buffer: gpu.bufferFrom("decode_matvec_test.y", y0) },
      x: { buffer: gpu.bufferFrom("decode_matvec_test.x", x) },
      w: { buffer: gpu.bufferFrom("decode_matvec_test.w", w) },
      bias: { buffer: gpu.bufferFrom("decode_matvec_test.b", b) },
    };
    const d = matvec(gpu, arena, {
      ...bufs,
      bias: c.bias ? bufs.bias : undefined,
      N,
      K,
      alpha: c.alpha,
      accumulate: c.acc,
    });
    gpu.run(d, "decode_matvec_test");
    const got = await gpu.readF32(bufs.y.buffer, 0, N);
    const ref = new Float64Array(N);
    for (let n = 0; n < N; n++) {
      let s = c.bias ? b[n] : 0;
      for (let k = 0; k < K; k++) s += w[n * K + k] * x[k];
      ref[n] = (c.acc ? y0[n] : 0) + c.alpha * s;
    }
    const err = maxRelErr(got, ref, FLOOR);
    report(`${d[0].kernel.name} N=${N} K=${K} (floor ${FLOOR})`, err, TOL);
    assert.ok(d[0].kernel.name.includes(`LANES=${matvecLanes(K % 4 === 0 ? K / 4 : K)}`));
    assert.ok(err < TOL, `case ${i}: ${err}`);
    for (const x of Object.values(bufs)) x.buffer.destroy();
  }
  arena.destroy();
});

gpuTest("decode matvec: fused SwiGLU silu(Wg·x)·(Wu·x) vs f64, vec4 and scalar", async (gpu) => {
  const arena = new ParamArena(gpu, "decode_matvec_test.swiglu", 4096);
  for (const [N, K] of [[40, 64], [9, 30], [5, 1024]]) {
    const wg = randomArray(N * K, N + 1, 0.5), wu = randomArray(N * K, N + 2, 0.5);
    const x = randomArray(K, N + 3, 0.5);
    const b = {
      y: { buffer: gpu.bufferFrom("decode_matvec_test.act", new Float32Array(N).fill(NaN)) },
      x: { buffer: gpu.bufferFrom("decode_matvec_test.x", x) },
      wGate: { buffer: gpu.bufferFrom("decode_matvec_test.wg", wg) },
      wUp: { buffer: gpu.bufferFrom("decode_matvec_test.wu", wu) },
    };
    const d = matvecSwiglu(gpu, arena, { ...b, N, K });
    gpu.run(d, "decode_matvec_test");
    const got = await gpu.readF32(b.y.buffer, 0, N);
    const ref = new Float64Array(N);
    for (let n = 0; n < N; n++) {
      let g = 0, u = 0;
      for (let k = 0; k < K; k++) {
        g += wg[n * K + k] * x[k];
        u += wu[n * K + k] * x[k];
      }
      ref[n] = (g / (1 + Math.exp(-g))) * u;
    }
    const err = maxRelErr(got, ref, FLOOR);
    report(`${d[0].kernel.name} N=${N} K=${K} (floor ${FLOOR})`, err, TOL);
    assert.ok(err < TOL, `N=${N} K=${K}: ${err}`);
    for (const v of Object.values(b)) v.buffer.destroy();
  }
  arena.destroy();
});
