// SwiGLU forward/backward against the f64 reference, and the reference against central differences.
import assert from "node:assert/strict";
import { setGridMaxForTesting } from "../../kernels/elementwise.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { swigluBackward, swigluForward } from "../../kernels/swiglu.ts";
import { gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";
import { swigluBackwardRef, swigluForwardRef } from "../reference/swiglu.ts";

const TOL = 1e-5; // elementwise
// Relative-error floor: outputs are O(1) (|gate| < 6, |up|, |dout| < 2); dgate crosses zero where
// 1 + g·(1 − s) = 0, and there the f32 rounding of the O(1) terms (~1e-7) is judged against 0.1.
const FLOOR = 0.1;
const TOL_FD = 1e-7; // reference vs central differences (f64, h = 1e-5), relative, floor 1e-3

function nanBuffer(gpu: Gpu, label: string, n: number) {
  return gpu.bufferFrom(label, new Float32Array(n).fill(NaN));
}

/**
 * Forward and backward at T × I on random inputs, gate and up as separate tensors or (fused) the
 * halves of one (T, 2I) tensor; max relative errors of out, dgate, dup against the reference.
 */
async function runSwiglu(
  gpu: Gpu,
  arena: ParamArena,
  T: number,
  I: number,
  seed: number,
  fused = false,
  given?: { gate: Float32Array; up: Float32Array; dout: Float32Array },
) {
  const N = T * I;
  const gate = given?.gate ?? randomArray(N, seed, 6);
  const up = given?.up ?? randomArray(N, seed + 1, 2);
  const dout = given?.dout ?? randomArray(N, seed + 2, 2);
  const out = nanBuffer(gpu, "test.swiglu.out", N);
  const db = gpu.bufferFrom("test.swiglu.dout", dout);
  // fused: one (T, 2I) tensor per pair, gate in columns 0..I−1 of each row, up in I..2I−1
  const join = (a: Float32Array, b: Float32Array) => {
    const ab = new Float32Array(2 * N);
    for (let t = 0; t < T; t++) {
      ab.set(a.subarray(t * I, (t + 1) * I), t * 2 * I);
      ab.set(b.subarray(t * I, (t + 1) * I), t * 2 * I + I);
    }
    return ab;
  };
  const ins = fused
    ? [gpu.bufferFrom("test.swiglu.gu", join(gate, up))]
    : [gpu.bufferFrom("test.swiglu.gate", gate), gpu.bufferFrom("test.swiglu.up", up)];
  const grads = fused
    ? [nanBuffer(gpu, "test.swiglu.dgu", 2 * N)]
    : [nanBuffer(gpu, "test.swiglu.dgate", N), nanBuffer(gpu, "test.swiglu.dup", N)];
  const [g, u] = [ins[0], ins[ins.length - 1]].map((buffer) => ({ buffer }));
  const [dg_, du_] = [grads[0], grads[grads.length - 1]].map((buffer) => ({ buffer }));
  gpu.run([
    ...swigluForward(gpu, arena, { out: { buffer: out }, gate: g, up: u, T, I, fused }),
    ...swigluBackward(gpu, arena, {
      dgate: dg_,
      dup: du_,
      dout: { buffer: db },
      gate: g,
      up: u,
      T,
      I,
      fused,
    }),
  ]);
  const [o, ...rg] = (await gpu.read([out, ...grads].map((buffer) => ({ buffer })))).map((b) =>
    new Float32Array(b)
  );
  const half = (d: Float32Array, h: number) =>
    Float32Array.from({ length: N }, (_, e) => d[Math.floor(e / I) * 2 * I + h * I + (e % I)]);
  const [dg, du] = fused ? [half(rg[0], 0), half(rg[0], 1)] : rg;
  const bufs = [...ins, ...grads];
  for (const b of [db, out, ...bufs]) b.destroy();
  const ref = swigluBackwardRef(dout, gate, up);
  return {
    out: maxRelErr(o, swigluForwardRef(gate, up), FLOOR),
    dgate: maxRelErr(dg, ref.dgate, FLOOR),
    dup: maxRelErr(du, ref.dup, FLOOR),
    values: [o, dg, du],
  };
}

Deno.test("swiglu: reference backward matches central differences (f64)", () => {
  const N = 64;
  const gate = Float64Array.from(randomArray(N, 7, 6));
  const up = Float64Array.from(randomArray(N, 8, 2));
  const dout = Float64Array.from(randomArray(N, 9, 2));
  const { dgate, dup } = swigluBackwardRef(dout, gate, up);
  // loss = Σ dout · out: its derivative in gate[i] / up[i] only involves element i.
  const h = 1e-5;
  const fdGate = new Float64Array(N), fdUp = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const f = (g: number, u: number) => dout[i] * swigluForwardRef([g], [u])[0];
    fdGate[i] = (f(gate[i] + h, up[i]) - f(gate[i] - h, up[i])) / (2 * h);
    fdUp[i] = (f(gate[i], up[i] + h) - f(gate[i], up[i] - h)) / (2 * h);
  }
  const e = Math.max(maxRelErr(dgate, fdGate, 1e-3), maxRelErr(dup, fdUp, 1e-3));
  report("swiglu reference vs finite differences", e, TOL_FD);
  assert.ok(e <= TOL_FD, `${e}`);
});

gpuTest(
  "swiglu: forward and backward match the reference at odd sizes, fused or not",
  async (gpu) => {
    const arena = new ParamArena(gpu, "test.swiglu");
    for (const [T, I] of [[1, 1], [1, 7], [3, 111], [10, 100], [4099, 1], [7, 172]]) {
      for (const fused of [false, true]) {
        const { values: _, ...e } = await runSwiglu(gpu, arena, T, I, T + I, fused);
        for (const [k, v] of Object.entries(e)) {
          report(`swiglu ${k} T=${T} I=${I}${fused ? " fused" : ""}`, v, TOL);
          assert.ok(v <= TOL, `${k} T=${T} I=${I} fused=${fused}: ${v}`);
        }
      }
    }
  },
);

gpuTest(
  "swiglu: the vec4 forms (I a multiple of 4) equal the scalar ones bit for bit",
  async (gpu) => {
    const arena = new ParamArena(gpu, "test.swiglu.v4");
    try {
      for (const [T, I] of [[10, 100], [7, 172], [33, 4]]) {
        for (const fused of [false, true]) {
          const v4 = await runSwiglu(gpu, arena, T, I, 5, fused);
          gpu.vec4Forms = false;
          const scalar = await runSwiglu(gpu, arena, T, I, 5, fused);
          gpu.vec4Forms = true;
          assert.deepEqual(v4.values, scalar.values, `T=${T} I=${I} fused=${fused}`);
        }
      }
    } finally {
      gpu.vec4Forms = true;
      arena.destroy();
    }
  },
);

gpuTest("swiglu: rows past one grid dimension spill into z", async (gpu) => {
  const arena = new ParamArena(gpu, "test.swiglu.grid");
  setGridMaxForTesting(4);
  try {
    for (const I of [9, 12]) { // scalar and vec4 forms; 13 rows on a 4 × 4 grid
      const { values: _, ...e } = await runSwiglu(gpu, arena, 13, I, 42, true);
      for (const [k, v] of Object.entries(e)) {
        report(`swiglu ${k} I=${I} on a 4-row grid`, v, TOL);
        assert.ok(v <= TOL, `${k} I=${I}: ${v}`);
      }
    }
  } finally {
    setGridMaxForTesting(null);
  }
});

gpuTest("swiglu: saturated gates stay finite", async (gpu) => {
  const arena = new ParamArena(gpu, "test.swiglu.sat");
  const given = {
    gate: new Float32Array([-100, -30, 30, 100, 0]),
    up: new Float32Array([1.5, -1, 2, -0.5, 3]),
    dout: new Float32Array([1, 2, -1, 0.5, 1]),
  };
  for (const fused of [false, true]) {
    const { values: _, ...errs } = await runSwiglu(gpu, arena, 1, 5, 0, fused, given);
    const e = Math.max(...Object.values(errs));
    report(`swiglu saturated gates${fused ? " (fused)" : ""}`, e, TOL);
    assert.ok(e <= TOL, `${e}`);
  }
});
