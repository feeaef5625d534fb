// RMSNorm forward/backward against the f64 reference (itself checked by central differences).
import assert from "node:assert/strict";
import { setGridMaxForTesting } from "../../kernels/elementwise.ts";
import {
  rmsnormBackward,
  rmsnormForward,
  type RmsnormVariant,
  rmsnormWorkspaceBytes,
  setRmsnormVariant,
} from "../../kernels/rmsnorm.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";
import { rmsnormBackwardRef, rmsnormForwardRef } from "../reference/rmsnorm.ts";

const TOL = 1e-4; // every output involves a row or column reduction
// Relative-error floors: y and rstd never cancel (floor 1e-6). dx and dw are sums of terms of
// either sign (dw over T rows: |dw| ~ sqrt(T)); where they cancel to ~0 the f32 rounding of the
// terms is judged against 1% of the largest |reference| element of that output or of its leading
// term (dx: rstd·dy·w, which cancels against the projection term, e.g. to ~0 for C = 1).
const FLOOR = 1e-6;
const FLOOR_SHARE = 1e-2;

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** maxRelErr with the floor at FLOOR_SHARE of max(largest |reference| element, termScale). */
function relErrScaled(a: ArrayLike<number>, ref: ArrayLike<number>, termScale = 0): number {
  return maxRelErr(a, ref, Math.max(FLOOR, FLOOR_SHARE * Math.max(maxAbs(ref), termScale)));
}
const TOL_FD = 1e-7; // reference vs central differences (f64, h = 1e-5), relative, floor 1e-3

function nanBuffer(gpu: Gpu, label: string, n: number) {
  return gpu.bufferFrom(label, new Float32Array(n).fill(NaN));
}

Deno.test("rmsnorm: reference backward matches central differences (f64)", () => {
  const T = 3, C = 5, eps = 1e-5;
  const x = Float64Array.from(randomArray(T * C, 1, 2));
  const w = Float64Array.from(randomArray(C, 2, 2));
  const dy = Float64Array.from(randomArray(T * C, 3));
  const loss = (xx: Float64Array, ww: Float64Array) =>
    rmsnormForwardRef(xx, ww, T, C, eps).y.reduce((s, v, i) => s + v * dy[i], 0);
  const h = 1e-5;
  const fd = (arr: Float64Array, f: (a: Float64Array) => number) =>
    arr.map((_, i) => {
      const p = arr.slice(), m = arr.slice();
      p[i] += h;
      m[i] -= h;
      return (f(p) - f(m)) / (2 * h);
    });
  const ref = rmsnormBackwardRef(dy, x, w, T, C, eps);
  const ex = maxRelErr(ref.dx, fd(x, (a) => loss(a, w)), 1e-3);
  const ew = maxRelErr(ref.dw, fd(w, (a) => loss(x, a)), 1e-3);
  report("rmsnorm reference dx vs finite differences", ex, TOL_FD);
  report("rmsnorm reference dw vs finite differences", ew, TOL_FD);
  assert.ok(ex <= TOL_FD && ew <= TOL_FD, `${ex} ${ew}`);
});

async function runCase(
  gpu: Gpu,
  arena: ParamArena,
  T: number,
  C: number,
  eps: number,
  accumulateDx: boolean,
  seed: number,
) {
  const x = randomArray(T * C, seed, 2);
  const w = randomArray(C, seed + 1, 1.5);
  const dy = randomArray(T * C, seed + 2);
  const dx0 = randomArray(T * C, seed + 3);
  const dw0 = randomArray(C, seed + 4);
  const xb = gpu.bufferFrom("test.rmsnorm.x", x);
  const wb = gpu.bufferFrom("test.rmsnorm.w", w);
  const dyb = gpu.bufferFrom("test.rmsnorm.dy", dy);
  const y = nanBuffer(gpu, "test.rmsnorm.y", T * C);
  const rstd = nanBuffer(gpu, "test.rmsnorm.rstd", T);
  const ws = nanBuffer(gpu, "test.rmsnorm.ws", rmsnormWorkspaceBytes(T, C) / 4);
  const dxs = [0, 1].map(() =>
    accumulateDx ? gpu.bufferFrom("test.rmsnorm.dx", dx0) : nanBuffer(gpu, "test.rmsnorm.dx", T * C)
  );
  const dws = [0, 1].map(() => gpu.bufferFrom("test.rmsnorm.dw", dw0));
  gpu.run([
    ...rmsnormForward(gpu, arena, {
      y: { buffer: y },
      rstd: { buffer: rstd },
      x: { buffer: xb },
      w: { buffer: wb },
      T,
      C,
      eps,
    }),
    ...[0, 1].flatMap((k) =>
      rmsnormBackward(gpu, arena, {
        dx: { buffer: dxs[k] },
        dw: { buffer: dws[k] },
        dy: { buffer: dyb },
        x: { buffer: xb },
        w: { buffer: wb },
        rstd: { buffer: rstd },
        T,
        C,
        accumulateDx,
        workspace: { buffer: ws },
      })
    ),
  ]);
  const [ry, rr, dxa, dxb, dwa, dwb] = (
    await gpu.read([y, rstd, ...dxs, ...dws].map((buffer) => ({ buffer })))
  ).map((b) => new Float32Array(b));
  for (const b of [xb, wb, dyb, y, rstd, ws, ...dxs, ...dws]) b.destroy();
  assert.deepEqual(dxa, dxb, "dx bit-identical across runs");
  assert.deepEqual(dwa, dwb, "dw bit-identical across runs");
  const f = rmsnormForwardRef(x, w, T, C, eps);
  const b = rmsnormBackwardRef(dy, x, w, T, C, eps);
  const lead = maxAbs(Array.from(dy, (v, i) => f.rstd[Math.floor(i / C)] * v * w[i % C]));
  return {
    values: [ry, rr, dxa, dwa],
    y: maxRelErr(ry, f.y, FLOOR),
    rstd: maxRelErr(rr, f.rstd, FLOOR),
    dx: relErrScaled(dxa, accumulateDx ? Array.from(dx0, (v, i) => v + b.dx[i]) : b.dx, lead),
    dw: relErrScaled(dwa, Array.from(dw0, (v, i) => v + b.dw[i])),
  };
}

const SHAPES: [number, number][] = [
  [1, 1],
  [3, 7],
  [5, 333],
  [70, 300], // C a multiple of 4: the "rows" variant reads vec4s
  [130, 33],
  [2, 8192],
];

/** Both forms run everywhere (the adapter's default is only a launch-time choice). */
/** The forms under test: name, variant, and whether the vec4 row kernels may run. */
const VARIANTS: [string, RmsnormVariant, boolean][] = [
  ["tree", "tree", true],
  ["rows", "rows", true],
  ["rows1", "rows", false], // the one-channel row kernels at every shape
];

gpuTest("rmsnorm: the vec4 row kernels equal the one-channel ones bit for bit", async (gpu) => {
  const arena = new ParamArena(gpu, "test.rmsnorm.rows4");
  try {
    for (const [T, C] of [[70, 300], [9, 8], [3, 64]]) {
      for (const acc of [false, true]) {
        const out: Float32Array[][] = [];
        for (const vec4 of [true, false]) {
          await withVariant(gpu, "rows", vec4, async () => {
            out.push((await runCase(gpu, arena, T, C, 1e-5, acc, 7)).values);
          });
        }
        assert.deepEqual(out[0], out[1], `T=${T} C=${C} accumulate=${acc}`);
      }
    }
  } finally {
    arena.destroy();
  }
});

/** Run `fn` with the rmsnorm variant (and vec4 forms) forced, restoring the defaults afterwards. */
async function withVariant(
  gpu: Gpu,
  v: RmsnormVariant,
  vec4: boolean,
  fn: () => Promise<void>,
) {
  setRmsnormVariant(gpu, v);
  gpu.vec4Forms = vec4;
  try {
    await fn();
  } finally {
    setRmsnormVariant(gpu, null);
    gpu.vec4Forms = true;
  }
}

for (const [v, variant, vec4] of VARIANTS) {
  gpuTest(
    `rmsnorm[${v}]: forward and backward match the reference at odd shapes`,
    (gpu) =>
      withVariant(gpu, variant, vec4, async () => {
        const arena = new ParamArena(gpu, "test.rmsnorm");
        for (const [k, [T, C]] of SHAPES.entries()) {
          for (const acc of [false, true]) {
            const eps = k % 2 ? 1e-6 : 1e-5;
            const { values: _, ...e } = await runCase(
              gpu,
              arena,
              T,
              C,
              eps,
              acc,
              17 * k + (acc ? 1 : 0),
            );
            for (const [name, err] of Object.entries(e)) {
              report(`rmsnorm[${v}] ${name} T=${T} C=${C}${acc ? " (dx +=)" : ""}`, err, TOL);
              assert.ok(err <= TOL, `${name} T=${T} C=${C}: ${err}`);
            }
          }
        }
      }),
  );

  gpuTest(
    `rmsnorm[${v}]: a 2-D grid of workgroups covers every row and block`,
    (gpu) =>
      withVariant(gpu, variant, vec4, async () => {
        const arena = new ParamArena(gpu, "test.rmsnorm.grid");
        setGridMaxForTesting(16);
        try {
          // 140 rows on a 16 × 9 grid (tree) or 18 row groups on a 16 × 2 grid (rows)
          const { values: _, ...e } = await runCase(gpu, arena, 140, 600, 1e-5, true, 5);
          for (const [name, err] of Object.entries(e)) {
            report(`rmsnorm[${v}] ${name} on a 16-wide grid`, err, TOL);
            assert.ok(err <= TOL, `${name}: ${err}`);
          }
        } finally {
          setGridMaxForTesting(null);
        }
      }),
  );
}
