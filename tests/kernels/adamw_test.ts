// Gradient-norm clipping and AdamW against the f64 reference of torch's clip_grad_norm_ + AdamW.
import assert from "node:assert/strict";
import {
  ADAMW_HP_FLOATS,
  adamwHyper,
  type AdamwSettings,
  adamwUpdate,
  GRAD_NORM_CHUNK,
  GRAD_STATS_FLOATS,
  gradNormFinalize,
  gradNormPartialCount,
  gradNormSquares,
} from "../../kernels/adamw.ts";
import { setGridMaxForTesting } from "../../kernels/elementwise.ts";
import { type Dispatch, type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";
import { type AdamwRefState, adamwStepRef, clipScaleRef, gradNormRef } from "../reference/adamw.ts";

const TOL_NORM = 1e-4; // a reduction
const TOL_PARAM = 1e-5; // elementwise update (param = O(1), step = O(lr))
// Params are drawn in [-1, 1): near 0 the f32 rounding of the O(lr) steps is judged against 0.01.
const FLOOR_PARAM = 1e-2;
const TOL_MOMENT = 1e-4; // m, v after several steps: f32 recurrences (floor: 1% of max |ref|)
const FLOOR = 1e-6;

function nanBuffer(gpu: Gpu, label: string, n: number) {
  return gpu.bufferFrom(label, new Float32Array(n).fill(NaN));
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** Upload several gradient tensors, record norm dispatches into one partials buffer. */
function normPlan(gpu: Gpu, arena: ParamArena, grads: Float32Array[], maxNorm: number) {
  const counts = grads.map((g) => gradNormPartialCount(g.length));
  const total = counts.reduce((a, b) => a + b, 0);
  const partials = nanBuffer(gpu, "test.adamw.partials", total);
  const stats = nanBuffer(gpu, "test.adamw.stats", GRAD_STATS_FLOATS);
  const bufs = grads.map((g) => gpu.bufferFrom("test.adamw.grad", g));
  const dispatches: Dispatch[] = [];
  let off = 0;
  grads.forEach((g, k) => {
    dispatches.push(...gradNormSquares(gpu, arena, {
      partials: { buffer: partials },
      grad: { buffer: bufs[k] },
      N: g.length,
      partialOffset: off,
    }));
    off += counts[k];
  });
  dispatches.push(...gradNormFinalize(gpu, arena, {
    stats: { buffer: stats },
    partials: { buffer: partials },
    count: total,
    maxNorm,
  }));
  return { dispatches, stats, bufs, partials };
}

Deno.test("adamw: adamwHyper lays out the per-step buffer", () => {
  const hp = adamwHyper(3, { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 });
  assert.equal(hp.length, ADAMW_HP_FLOATS);
  const want = [0.01, 0.9, 0.95, 1e-8, 0.1, 1 - 0.9 ** 3, 1 - 0.95 ** 3, 3];
  assert.deepEqual([...hp], want.map(Math.fround));
  assert.throws(() => adamwHyper(0, { lr: 1, beta1: 0.9, beta2: 0.9, eps: 0, weightDecay: 0 }));
});

gpuTest("adamw: gradient norm of several tensors, clipping on and off", async (gpu) => {
  const arena = new ParamArena(gpu, "test.grad_norm");
  const grads = [1, 333, GRAD_NORM_CHUNK, GRAD_NORM_CHUNK + 1, 40000].map((n, k) =>
    randomArray(n, 100 + k, 0.1)
  );
  const ref = gradNormRef(grads);
  for (const maxNorm of [0, -1, ref * 2, ref / 3]) {
    const plan = normPlan(gpu, arena, grads, maxNorm);
    gpu.run(plan.dispatches);
    const s = await gpu.readF32(plan.stats, 0, 3);
    const e = maxRelErr([s[0], s[1]], [ref, clipScaleRef(ref, maxNorm)], FLOOR);
    report(`grad norm, maxNorm=${maxNorm.toFixed(3)} (clip ${s[1].toFixed(4)})`, e, TOL_NORM);
    assert.ok(e <= TOL_NORM, `${e}`);
    assert.equal(s[2], 1);
    for (const b of [plan.stats, plan.partials, ...plan.bufs]) b.destroy();
  }
});

gpuTest("adamw: finalize keeps small partials next to a large one (Kahan)", async (gpu) => {
  const arena = new ParamArena(gpu, "test.grad_norm.kahan");
  // Invocation 0 adds partials 0, 256, 512, ...: 1 then 4095 × 1e-8. Plain f32 would drop them
  // all (1 + 1e-8 == 1); the exact sum is 1 + 4.095e-5.
  const count = 256 * 4096;
  const parts = new Float32Array(count);
  for (let i = 0; i < count; i += 256) parts[i] = 1e-8;
  parts[0] = 1;
  const pb = gpu.bufferFrom("test.adamw.partials", parts);
  const stats = nanBuffer(gpu, "test.adamw.stats", GRAD_STATS_FLOATS);
  gpu.run(gradNormFinalize(gpu, arena, {
    stats: { buffer: stats },
    partials: { buffer: pb },
    count,
    maxNorm: 0,
  }));
  const s = await gpu.readF32(stats, 0, 3);
  let sum = 0;
  for (const v of parts) sum += v;
  const e = maxRelErr([s[0]], [Math.sqrt(sum)], FLOOR);
  report("grad norm with compensated partial sums", e, 1e-6);
  assert.ok(e <= 1e-6, `${e}`);
  pb.destroy();
  stats.destroy();
});

async function adamwRun(
  gpu: Gpu,
  arena: ParamArena,
  sizes: number[],
  settings: AdamwSettings,
  maxNorm: number,
  steps: number,
  seed: number,
  vec4?: boolean,
) {
  const params = sizes.map((n, k) => randomArray(n, seed + k));
  const state: AdamwRefState[] = params.map((p) => ({
    param: Float64Array.from(p),
    m: new Float64Array(p.length),
    v: new Float64Array(p.length),
    step: 0,
  }));
  const grads0 = sizes.map((n) => new Float32Array(n));
  const plan = normPlan(gpu, arena, grads0, maxNorm);
  const pb = params.map((p) => gpu.bufferFrom("test.adamw.param", p));
  const mb = sizes.map((n) => gpu.bufferFrom("test.adamw.m", new Float32Array(n)));
  const vb = sizes.map((n) => gpu.bufferFrom("test.adamw.v", new Float32Array(n)));
  const hp = gpu.buffer("test.adamw.hp", ADAMW_HP_FLOATS * 4);
  const dispatches = [
    ...plan.dispatches,
    ...sizes.flatMap((n, k) =>
      adamwUpdate(gpu, arena, {
        param: { buffer: pb[k] },
        grad: { buffer: plan.bufs[k] },
        m: { buffer: mb[k] },
        v: { buffer: vb[k] },
        stats: { buffer: plan.stats },
        hp: { buffer: hp },
        N: n,
        zeroGrad: k % 2 === 0,
        vec4,
      })
    ),
  ];
  const clips: number[] = [];
  for (let step = 1; step <= steps; step++) {
    // gradient scale varies so clipping engages on some steps only
    const grads = sizes.map((n, k) => randomArray(n, seed * 31 + step * 7 + k, 0.02 * step));
    grads.forEach((g, k) => gpu.write(plan.bufs[k], g));
    gpu.write(hp, adamwHyper(step, settings));
    gpu.run(dispatches); // recorded once, replayed every step
    const clip = clipScaleRef(gradNormRef(grads), maxNorm);
    clips.push(clip);
    state.forEach((st, k) => adamwStepRef(st, grads[k], settings, clip));
  }
  const got = (await gpu.read([...pb, ...mb, ...vb, ...plan.bufs].map((buffer) => ({ buffer }))))
    .map((b) => new Float32Array(b));
  const K = sizes.length;
  const err = { param: 0, m: 0, v: 0 };
  for (let k = 0; k < K; k++) {
    err.param = Math.max(err.param, maxRelErr(got[k], state[k].param, FLOOR_PARAM));
    err.m = Math.max(err.m, maxRelErr(got[K + k], state[k].m, 1e-2 * maxAbs(state[k].m)));
    err.v = Math.max(err.v, maxRelErr(got[2 * K + k], state[k].v, 1e-2 * maxAbs(state[k].v)));
    const g = got[3 * K + k];
    if (k % 2 === 0) assert.ok(g.every((x) => x === 0), "zeroGrad zeroes the gradient");
    else assert.ok(g.some((x) => x !== 0), "without zeroGrad the gradient stays");
  }
  for (const b of [...pb, ...mb, ...vb, ...plan.bufs, hp, plan.stats, plan.partials]) b.destroy();
  return { err, clips, got };
}

const SETTINGS: AdamwSettings = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

gpuTest("adamw: several steps match torch.optim.AdamW, clipping engaged and not", async (gpu) => {
  const arena = new ParamArena(gpu, "test.adamw");
  const cases: [string, AdamwSettings, number][] = [
    ["wd 0.1, clip 1", SETTINGS, 1],
    ["wd 0, no clip", { ...SETTINGS, weightDecay: 0 }, 0],
    ["β1 0.3 (other lerp branch), wd 0.01, clip 2", {
      ...SETTINGS,
      beta1: 0.3,
      weightDecay: 0.01,
    }, 2],
  ];
  for (const [name, s, maxNorm] of cases) {
    // 1024 takes the four-per-invocation kernel, the others the scalar one
    const { err, clips } = await adamwRun(gpu, arena, [1, 333, 4099, 1024], s, maxNorm, 5, 7);
    if (maxNorm > 0) {
      assert.ok(clips.some((c) => c < 1) && clips.some((c) => c === 1), `clips ${clips}`);
    }
    report(`adamw param (${name})`, err.param, TOL_PARAM);
    report(`adamw m (${name})`, err.m, TOL_MOMENT);
    report(`adamw v (${name})`, err.v, TOL_MOMENT);
    assert.ok(err.param <= TOL_PARAM, `param ${err.param}`);
    assert.ok(err.m <= TOL_MOMENT && err.v <= TOL_MOMENT, `m ${err.m} v ${err.v}`);
  }
});

gpuTest("adamw: a 2-D grid of workgroups covers every element and partial", async (gpu) => {
  const arena = new ParamArena(gpu, "test.adamw.grid");
  setGridMaxForTesting(65);
  try {
    // GRAD_NORM_CHUNK·65 + 1 elements: 66 partials on a 65 × 2 grid, 4161 update workgroups on
    // a 65 × 65 grid (64 surplus)
    const { err } = await adamwRun(gpu, arena, [GRAD_NORM_CHUNK * 65 + 1], SETTINGS, 1, 2, 3);
    report("adamw param on a 65-wide grid", err.param, TOL_PARAM);
    assert.ok(err.param <= TOL_PARAM && err.m <= TOL_MOMENT && err.v <= TOL_MOMENT, `${err}`);
  } finally {
    setGridMaxForTesting(null);
  }
});

gpuTest("adamw: a non-finite gradient norm skips the step", async (gpu) => {
  const arena = new ParamArena(gpu, "test.adamw.skip");
  for (const bad of [Infinity, NaN, 3e38]) {
    const N = 300;
    const grad = randomArray(N, 1);
    grad[17] = bad; // 3e38² overflows f32: the norm is not finite either
    const plan = normPlan(gpu, arena, [randomArray(50, 2), grad], 1);
    const p0 = randomArray(N, 3), m0 = randomArray(N, 4), v0 = randomArray(N, 5).map(Math.abs);
    const pb = gpu.bufferFrom("test.adamw.param", p0);
    const mb = gpu.bufferFrom("test.adamw.m", m0);
    const vb = gpu.bufferFrom("test.adamw.v", v0);
    const hp = gpu.bufferFrom("test.adamw.hp", adamwHyper(1, SETTINGS));
    gpu.run([
      ...plan.dispatches,
      ...adamwUpdate(gpu, arena, {
        param: { buffer: pb },
        grad: { buffer: plan.bufs[1] },
        m: { buffer: mb },
        v: { buffer: vb },
        stats: { buffer: plan.stats },
        hp: { buffer: hp },
        N,
        zeroGrad: true,
      }),
    ]);
    const [s, p, m, v, g] =
      (await gpu.read([plan.stats, pb, mb, vb, plan.bufs[1]].map((buffer) => ({
        buffer,
      })))).map((b) => new Float32Array(b));
    assert.equal(s[2], 0, `finite flag for ${bad}`);
    assert.ok(!Number.isFinite(s[0]), `norm for ${bad}`);
    assert.deepEqual(p, p0, "param untouched");
    assert.deepEqual(m, m0, "m untouched");
    assert.deepEqual(v, v0, "v untouched");
    assert.ok(g.every((x) => x === 0), "gradient still zeroed");
    for (const b of [pb, mb, vb, hp, plan.stats, plan.partials, ...plan.bufs]) b.destroy();
  }
});

gpuTest("adamw: the four-per-invocation update gives the scalar update's bits", async (gpu) => {
  const arena = new ParamArena(gpu, "test.adamw.vec4");
  const sizes = [4, 1024, 4100];
  const a = await adamwRun(gpu, arena, sizes, SETTINGS, 1, 3, 11, true);
  const b = await adamwRun(gpu, arena, sizes, SETTINGS, 1, 3, 11, false);
  report("adamw vec4 param vs f64", a.err.param, TOL_PARAM);
  assert.ok(a.err.param <= TOL_PARAM && a.err.m <= TOL_MOMENT && a.err.v <= TOL_MOMENT);
  a.got.forEach((x, k) => {
    assert.deepEqual(new Uint32Array(x.buffer), new Uint32Array(b.got[k].buffer), `tensor ${k}`);
  });
  assert.throws(() =>
    adamwUpdate(gpu, arena, {
      param: { buffer: gpu.buffer("t.p", 16) },
      grad: { buffer: gpu.buffer("t.g", 16) },
      m: { buffer: gpu.buffer("t.m", 16) },
      v: { buffer: gpu.buffer("t.v", 16) },
      stats: { buffer: gpu.buffer("t.s", 16) },
      hp: { buffer: gpu.buffer("t.h", 32) },
      N: 3,
      vec4: true,
    })
  );
});
