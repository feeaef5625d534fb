// Decode GEMV tests: y = [y +] alpha·(W·x + b) against an f64 reference, scalar and vec4 paths.
import assert from "node:assert/strict";
import { matvec } from "../../kernels/decode_matvec.ts";
import { ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";

const TOL = 1e-4; // a dot product over K
const FLOOR = 1e-2; // relative-error floor: |y| is O(sqrt(K)) · 0.25, cancellation near 0

gpuTest("decode matvec: every variant (vec4/scalar, bias, accumulate) vs f64", async (gpu) => {
  const cases = [
    { N: 37, K: 64, bias: false, acc: false, alpha: 1 },
    { N: 37, K: 64, bias: true, acc: true, alpha: 0.5 },
    { N: 9, K: 23, bias: true, acc: false, alpha: 1 }, // K not a multiple of 4: scalar path
    { N: 130, K: 7, bias: false, acc: true, alpha: 2 },
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
    assert.ok(err < TOL, `case ${i}: ${err}`);
    for (const x of Object.values(bufs)) x.buffer.destroy();
  }
  arena.buffer.destroy();
});
