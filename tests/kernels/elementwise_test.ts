// Elementwise kernels against plain f64 references: odd sizes, slices, 2-D grids, large N, determinism.
import assert from "node:assert/strict";
import {
  axpy,
  copy,
  copyRows,
  fill,
  scaleCopy,
  setGridMaxForTesting,
  SUM_CHUNK,
  sumInto,
  sumIntoWorkspaceBytes,
} from "../../kernels/elementwise.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";

const TOL_ELEMENTWISE = 1e-5;
const TOL_REDUCTION = 1e-4;
const FLOOR = 1e-6; // relative-error floor for products and sums of positive values
// axpy adds values of either sign (|x|, |y| < 2): where they cancel, the f32 rounding of α·x
// (~1e-7 absolute) dominates, so its relative error is taken against max(|ref|, 0.1).
const FLOOR_AXPY = 0.1;
const SIZES = [1, 7, 256, 333, 4099];

function nanBuffer(gpu: Gpu, label: string, n: number) {
  return gpu.bufferFrom(label, new Float32Array(n).fill(NaN));
}

gpuTest("elementwise: axpy, scaleCopy, copy, fill at odd sizes", async (gpu) => {
  const arena = new ParamArena(gpu, "test.elementwise");
  for (const N of SIZES) {
    const x = randomArray(N, 1 + N, 2);
    const y0 = randomArray(N, 2 + N, 2);
    const alpha = -0.7;
    const xb = gpu.bufferFrom("test.elementwise.x", x);
    const ya = gpu.bufferFrom("test.elementwise.axpy", y0);
    const ys = nanBuffer(gpu, "test.elementwise.scale_copy", N);
    const yc = nanBuffer(gpu, "test.elementwise.copy", N);
    const yf = nanBuffer(gpu, "test.elementwise.fill", N);
    gpu.run([
      ...axpy(gpu, arena, { y: { buffer: ya }, x: { buffer: xb }, alpha, N }),
      ...scaleCopy(gpu, arena, { y: { buffer: ys }, x: { buffer: xb }, alpha, N }),
      ...copy(gpu, arena, { y: { buffer: yc }, x: { buffer: xb }, N }),
      ...fill(gpu, arena, { y: { buffer: yf }, value: 0.25, N }),
    ]);
    const [ra, rs, rc, rf] = (await gpu.read([ya, ys, yc, yf].map((buffer) => ({ buffer }))))
      .map((b) => new Float32Array(b));
    const eAxpy = maxRelErr(ra, Array.from(y0, (v, i) => v + alpha * x[i]), FLOOR_AXPY);
    const eScale = maxRelErr(rs, Array.from(x, (v) => alpha * v), FLOOR);
    report(`axpy N=${N}`, eAxpy, TOL_ELEMENTWISE);
    report(`scaleCopy N=${N}`, eScale, TOL_ELEMENTWISE);
    assert.ok(eAxpy <= TOL_ELEMENTWISE, `axpy N=${N}: ${eAxpy}`);
    assert.ok(eScale <= TOL_ELEMENTWISE, `scaleCopy N=${N}: ${eScale}`);
    assert.deepEqual(rc, x, `copy N=${N}`);
    assert.ok(rf.every((v) => v === 0.25), `fill N=${N}`);
    for (const b of [xb, ya, ys, yc, yf]) b.destroy();
  }
});

gpuTest("elementwise: slices at an offset leave their neighbours alone", async (gpu) => {
  const arena = new ParamArena(gpu, "test.elementwise.slice");
  const N = 100, off = 64; // elements; 256 bytes
  const x = randomArray(N, 11);
  const buf = nanBuffer(gpu, "test.elementwise.slice", off + N + 64);
  const xb = gpu.bufferFrom("test.elementwise.x", x);
  gpu.run(scaleCopy(gpu, arena, {
    y: { buffer: buf, offset: off * 4, size: N * 4 },
    x: { buffer: xb },
    alpha: 2,
    N,
  }));
  const r = await gpu.readF32(buf);
  assert.ok(r.subarray(0, off).every(Number.isNaN), "head untouched");
  assert.ok(r.subarray(off + N).every(Number.isNaN), "tail untouched");
  assert.deepEqual(r.subarray(off, off + N), x.map((v) => 2 * v));
});

gpuTest("elementwise: sumInto adds a fixed-order sum into acc[index]", async (gpu) => {
  const arena = new ParamArena(gpu, "test.sum_into");
  for (const N of [...SIZES, SUM_CHUNK, SUM_CHUNK + 1, 2 * SUM_CHUNK + 5]) {
    const x = randomArray(N, 3 + N).map((v) => v + 1); // positive: relative error is meaningful
    const acc0 = new Float32Array([1.5, -2, 3.25, 4]);
    const xb = gpu.bufferFrom("test.elementwise.x", x);
    const ws = nanBuffer(gpu, "test.elementwise.ws", sumIntoWorkspaceBytes(N) / 4);
    const runs: Float32Array[] = [];
    for (let rep = 0; rep < 2; rep++) {
      const acc = gpu.bufferFrom("test.elementwise.acc", acc0);
      gpu.run(
        sumInto(gpu, arena, {
          acc: { buffer: acc },
          x: { buffer: xb },
          N,
          index: 2,
          workspace: { buffer: ws },
        }),
      );
      runs.push(await gpu.readF32(acc));
      acc.destroy();
    }
    let ref = 0;
    for (const v of x) ref += v;
    const err = maxRelErr([runs[0][2]], [acc0[2] + ref], FLOOR);
    report(`sumInto N=${N}`, err, TOL_REDUCTION);
    assert.ok(err <= TOL_REDUCTION, `sumInto N=${N}: ${err}`);
    assert.deepEqual([runs[0][0], runs[0][1], runs[0][3]], [1.5, -2, 4], "other slots untouched");
    assert.deepEqual(runs[0], runs[1], "bit-identical across runs");
    xb.destroy();
    ws.destroy();
  }
});

gpuTest("elementwise: a 2-D grid of workgroups covers every element once", async (gpu) => {
  const arena = new ParamArena(gpu, "test.elementwise.grid");
  setGridMaxForTesting(6);
  // 20 workgroups on a 6 × 4 grid (4 surplus): N = 5,000 one element per invocation, and
  // N = 20,000 four per invocation (the vec4 forms)
  for (const [N, scalar] of [[5000, true], [20000, false]] as const) {
    gpu.vec4Forms = !scalar;
    try {
      const x = randomArray(N, 5);
      const xb = gpu.bufferFrom("test.elementwise.x", x);
      const y = gpu.bufferFrom("test.elementwise.y", new Float32Array(N).fill(1));
      const z = nanBuffer(gpu, "test.elementwise.z", N);
      const NS = 10 * SUM_CHUNK - 100; // 10 partials on a 6 × 2 grid
      const xs = gpu.bufferFrom("test.elementwise.xs", randomArray(NS, 6).map((v) => v + 1));
      const ws = nanBuffer(gpu, "test.elementwise.ws", sumIntoWorkspaceBytes(NS) / 4);
      const acc = gpu.bufferFrom("test.elementwise.acc", new Float32Array(1));
      gpu.run([
        ...axpy(gpu, arena, { y: { buffer: y }, x: { buffer: xb }, alpha: 3, N }),
        ...copy(gpu, arena, { y: { buffer: z }, x: { buffer: xb }, N }),
        ...sumInto(gpu, arena, {
          acc: { buffer: acc },
          x: { buffer: xs },
          N: NS,
          workspace: { buffer: ws },
        }),
      ]);
      const [ry, rz, ra] = (await gpu.read([{ buffer: y }, { buffer: z }, { buffer: acc }]))
        .map((b) => new Float32Array(b));
      const e = maxRelErr(ry, Array.from(x, (v) => 1 + 3 * v), FLOOR_AXPY);
      report("axpy on a 6-wide grid", e, TOL_ELEMENTWISE);
      assert.ok(e <= TOL_ELEMENTWISE);
      assert.deepEqual(rz, x);
      let ref = 0;
      for (const v of await gpu.readF32(xs)) ref += v;
      const es = maxRelErr(ra, [ref], FLOOR);
      report("sumInto on a 6-wide grid", es, TOL_REDUCTION);
      assert.ok(es <= TOL_REDUCTION);
    } finally {
      setGridMaxForTesting(null);
      gpu.vec4Forms = true;
    }
  }
});

gpuTest(
  "elementwise: the vec4 forms (N a multiple of 4) equal the scalar ones bit for bit",
  async (gpu) => {
    const arena = new ParamArena(gpu, "test.elementwise.v4");
    const N = 1000;
    const x = randomArray(N, 21, 3), y0 = randomArray(N, 22, 3);
    const xb = gpu.bufferFrom("test.elementwise.x", x);
    const out: Float32Array[][] = [];
    for (const scalar of [false, true]) {
      gpu.vec4Forms = !scalar;
      const ya = gpu.bufferFrom("test.elementwise.axpy", y0);
      const ys = nanBuffer(gpu, "test.elementwise.scale_copy", N);
      const yc = nanBuffer(gpu, "test.elementwise.copy", N);
      const ds = [
        ...axpy(gpu, arena, { y: { buffer: ya }, x: { buffer: xb }, alpha: 0.3, N }),
        ...scaleCopy(gpu, arena, { y: { buffer: ys }, x: { buffer: xb }, alpha: -1.7, N }),
        ...copy(gpu, arena, { y: { buffer: yc }, x: { buffer: xb }, N }),
      ];
      assert.equal(ds.every((d) => d.kernel.name.endsWith("4")), !scalar);
      gpu.run(ds);
      out.push(
        (await gpu.read([ya, ys, yc].map((buffer) => ({ buffer })))).map((b) =>
          new Float32Array(b)
        ),
      );
      for (const b of [ya, ys, yc]) {
        b.destroy();
      }
    }
    gpu.vec4Forms = true;
    assert.deepEqual(out[0], out[1]);
    xb.destroy();
  },
);

gpuTest("elementwise: N beyond 65535 × 256 uses the second grid dimension", async (gpu) => {
  const arena = new ParamArena(gpu, "test.elementwise.large");
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const N = max * 256 + 513; // 65536 workgroups + 3 elements: a 65535 × 2 grid
  if (N * 4 > gpu.limits.maxStorageBufferBindingSize) return;
  const y = gpu.buffer("test.elementwise.y", N * 4); // zeros: an unwritten element is not 1.25
  gpu.run(fill(gpu, arena, { y: { buffer: y }, value: 1.25, N }));
  const r = await gpu.readF32(y);
  const bad = r.findIndex((v) => v !== 1.25);
  assert.equal(bad, -1, `first wrong element ${bad} of ${N}`);
  y.destroy();
});

gpuTest("elementwise: copyRows copies a column block of wider rows, densely", async (gpu) => {
  const arena = new ParamArena(gpu, "test.elementwise.rows");
  const rows = 37, ldx = 40, offx = 16, cols = 8;
  const x = randomArray(rows * ldx, 31);
  const xb = gpu.bufferFrom("test.elementwise.x", x);
  const y = nanBuffer(gpu, "test.elementwise.y", rows * cols + 4);
  gpu.run(copyRows(gpu, arena, { y: { buffer: y }, x: { buffer: xb }, rows, cols, ldx, offx }));
  const r = await gpu.readF32(y);
  for (let t = 0; t < rows; t++) {
    for (let c = 0; c < cols; c++) {
      assert.equal(r[t * cols + c], x[t * ldx + offx + c], `${t},${c}`);
    }
  }
  assert.ok(r.subarray(rows * cols).every(Number.isNaN), "tail untouched");
  assert.throws(() =>
    copyRows(gpu, arena, { y: { buffer: y }, x: { buffer: xb }, rows, cols: 6, ldx, offx })
  );
  xb.destroy();
  y.destroy();
});
