// matmul_vec (the CPU adapters' 16-byte GEMM): generator sync, the window planner, and values
// against f64 and against matmul_wide for every operand form, with and without uniform windows.
//
// The forms: forward (A along K, B along K), dX (A along K, B across columns), dW (A across rows,
// B across columns, K not a multiple of 4). Windows need buffers of at least 64 KiB, so these tests
// place the operands at an offset inside padded buffers; a small window size (vecWindow) makes the
// launcher cut rows, columns and K into several dispatches at test shapes.
import assert from "node:assert/strict";
import {
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulForward,
  matmulGemm,
  type MatmulTuning,
  matmulTuning,
  planVec,
  setMatmulTuning,
  VEC_WINDOW_ELEMENTS,
  vecForms,
} from "../../kernels/matmul.ts";
import { matmulVecSource } from "../../kernels/matmul_vec_gen.ts";
import { type Dispatch, type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";
import { matmulBackwardInputRef, matmulBackwardWeightRef, matmulRef } from "../reference/matmul.ts";

const TOL = 1e-4;

Deno.test("matmul_vec.wgsl is the output of matmul_vec_gen.ts (run it after an edit)", () => {
  const file = Deno.readTextFileSync(new URL("../../kernels/matmul_vec.wgsl", import.meta.url));
  assert.equal(file, matmulVecSource());
});

Deno.test("vecForms: which operand axes matmul_vec reads 16 bytes at a time", () => {
  const fwd = { M: 8, N: 12, K: 16, sAi: 16, sAp: 1, sBp: 1, sBj: 16, ldc: 12 };
  assert.deepEqual(vecForms(fwd as never), { av: 0, bv: 0 });
  const dx = { M: 8, N: 16, K: 12, sAi: 12, sAp: 1, sBp: 16, sBj: 1, ldc: 16 };
  assert.deepEqual(vecForms(dx as never), { av: 0, bv: 1 });
  const dw = { M: 12, N: 16, K: 7, sAi: 1, sAp: 12, sBp: 16, sBj: 1, ldc: 16 };
  assert.deepEqual(vecForms(dw as never), { av: 1, bv: 1 });
  assert.equal(
    vecForms({ ...fwd, K: 15, sAi: 15, sBj: 15 } as never),
    null,
    "K not a multiple of 4",
  );
  assert.equal(vecForms({ ...fwd, ldc: 13 } as never), null, "ldc not a multiple of 4");
  assert.equal(vecForms({ ...fwd, offA: 2 } as never), null, "offset not a multiple of 4");
  assert.equal(vecForms({ ...dw, M: 10, sAp: 10 } as never), null, "A across rows, M = 10");
});

Deno.test("planVec: every chunk fits its window, and the stories260K GEMMs use windows", () => {
  const cap = VEC_WINDOW_ELEMENTS - 8;
  const T = 512;
  let windowed = 0, total = 0;
  for (const [M, N, K] of [[T, 128, 64], [T, 64, 64], [T, 344, 64], [T, 64, 172], [T, 512, 64]]) {
    const gs = [
      { M, N, K, sAi: K, sAp: 1, sBp: 1, sBj: K, ldc: N },
      { M, N: K, K: N, sAi: N, sAp: 1, sBp: K, sBj: 1, ldc: K },
      { M: N, N: K, K: M, sAi: 1, sAp: N, sBp: K, sBj: 1, ldc: K },
    ];
    for (const g of gs) {
      const p = planVec(g as never, { rows: 8, cols: 32 }, { a: true, b: true }, cap + 8, 8);
      if (p.au) assert.ok((p.rc - 1) * g.sAi + (p.pc - 1) * g.sAp + 1 <= cap, "A window");
      if (p.bu) assert.ok((p.pc - 1) * g.sBp + (p.jc - 1) * g.sBj + 1 <= cap, "B window");
      assert.ok(p.pc % 4 === 0 || p.pc === g.K, `pc ${p.pc}`);
      assert.equal(
        p.dispatches,
        Math.ceil(g.M / p.rc) * Math.ceil(g.N / p.jc) * Math.ceil(g.K / p.pc),
      );
      total++;
      if (p.au || p.bu) windowed++;
      // without windows: one dispatch over the whole GEMM
      const s = planVec(g as never, { rows: 8, cols: 32 }, { a: false, b: false }, cap + 8, 8);
      assert.deepEqual([s.au, s.bu, s.rc, s.jc, s.pc, s.dispatches], [
        false,
        false,
        g.M,
        g.N,
        g.K,
        1,
      ]);
    }
  }
  assert.equal(
    windowed,
    total,
    "every stories260K GEMM reads at least one operand through a window",
  );
});

Deno.test("planVec: chunks pay for whole workgroups, shared among the adapter's threads", () => {
  // stories15M's q/k/v GEMM (1024 × 864 × 288): a 64 KiB window of A holds 56 rows of 288
  const g = { M: 1024, N: 864, K: 288, sAi: 288, sAp: 1, sBp: 1, sBj: 288, ldc: 864 };
  const plan = (rows: number, cols: number, threads: number) =>
    planVec(
      g as never,
      { rows, cols },
      { a: true, b: true },
      VEC_WINDOW_ELEMENTS,
      0,
      false,
      threads,
    );
  // 16 × 16 runs 128-row workgroups: 56-row chunks would pay for 128 rows each
  assert.deepEqual([plan(16, 16, 1).au, plan(16, 16, 1).dispatches], [false, 18]);
  // 8 × 16 (64-row workgroups): windowed chunks of 56 rows × 48 columns are 3 workgroups, which
  // one thread runs in 3 turns but two threads in 2, so on two threads A stays in storage
  assert.deepEqual([plan(8, 16, 1).au, plan(8, 16, 1).dispatches], [true, 342]);
  assert.deepEqual([plan(8, 16, 2).au, plan(8, 16, 2).dispatches], [false, 18]);
});

/** One GEMM case: which launcher, its shape, and whether it accumulates. */
interface Case {
  op: "fwd" | "dx" | "dw";
  M: number;
  N: number;
  K: number;
  accumulate: boolean;
}

const CASES: Case[] = [
  { op: "fwd", M: 100, N: 72, K: 48, accumulate: false },
  { op: "fwd", M: 37, N: 44, K: 20, accumulate: true },
  { op: "dx", M: 90, N: 52, K: 36, accumulate: false },
  { op: "dx", M: 33, N: 20, K: 40, accumulate: true },
  { op: "dw", M: 61, N: 36, K: 44, accumulate: false }, // dW: K (here M = 61 tokens) not ×4
  { op: "dw", M: 130, N: 28, K: 16, accumulate: true },
];

/** Offset (bytes) of every operand inside its padded buffer: not a multiple of 64 KiB. */
const PAD_OFFSET = 768;

/**
 * Run one case with the tuning `t`: operands at PAD_OFFSET inside buffers of at least 64 KiB
 * (so windows are possible), the output poisoned with NaN unless accumulating. Returns the output
 * and the number of dispatches.
 */
async function runCase(
  gpu: Gpu,
  c: Case,
  t: Partial<MatmulTuning>,
  data: { x: Float32Array; w: Float32Array; dy: Float32Array; init: Float32Array },
): Promise<{ got: Float32Array; dispatches: number; kernels: string }> {
  const before = { ...matmulTuning(gpu) };
  const bufs: GPUBuffer[] = [];
  const up = (label: string, a: Float32Array) => {
    const size = Math.max(VEC_WINDOW_ELEMENTS * 4 + 4096, PAD_OFFSET + a.byteLength + 256);
    const buf = gpu.buffer(label, size);
    gpu.write(buf, a, PAD_OFFSET);
    bufs.push(buf);
    return { buffer: buf, offset: PAD_OFFSET, size: a.byteLength };
  };
  const arena = new ParamArena(gpu, "test.matmul_vec", 1 << 16);
  try {
    setMatmulTuning(gpu, t);
    const { M, N, K, accumulate } = c;
    const out = up("test.out", data.init);
    let ds: Dispatch[];
    if (c.op === "fwd") {
      ds = matmulForward(gpu, arena, {
        y: out,
        x: up("test.x", data.x),
        w: up("test.w", data.w),
        M,
        N,
        K,
        accumulate,
      });
    } else if (c.op === "dx") {
      ds = matmulBackwardInput(gpu, arena, {
        dx: out,
        dy: up("test.dy", data.dy),
        w: up("test.w", data.w),
        M,
        N,
        K,
        accumulate,
      });
    } else {
      ds = matmulBackwardWeight(gpu, arena, {
        dw: out,
        dy: up("test.dy", data.dy),
        x: up("test.x", data.x),
        M,
        N,
        K,
        accumulate,
      });
    }
    gpu.run(ds);
    const got = await gpu.readF32(out.buffer, PAD_OFFSET, data.init.length);
    return { got, dispatches: ds.length, kernels: ds.map((d) => d.kernel.name).join(" ") };
  } finally {
    setMatmulTuning(gpu, before);
    for (const b of bufs) b.destroy();
    arena.destroy();
  }
}

function caseData(c: Case) {
  const { M, N, K } = c;
  const x = randomArray(M * K, 1 + M, 1), w = randomArray(N * K, 2 + N, 1);
  const dy = randomArray(M * N, 3 + K, 1);
  const outLen = c.op === "fwd" ? M * N : c.op === "dx" ? M * K : N * K;
  const init = c.accumulate ? randomArray(outLen, 4, 1) : new Float32Array(outLen).fill(NaN);
  let ref: Float64Array | Float32Array;
  if (c.op === "fwd") ref = matmulRef(x, w, M, N, K);
  else if (c.op === "dx") ref = matmulBackwardInputRef(dy, w, M, N, K);
  else ref = matmulBackwardWeightRef(dy, x, M, N, K);
  const full = new Float64Array(outLen);
  for (let i = 0; i < outLen; i++) full[i] = ref[i] + (c.accumulate ? init[i] : 0);
  return { x, w, dy, init, ref: full };
}

function rms(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s / Math.max(a.length, 1));
}

const WIDE: Partial<MatmulTuning> = { variant: "wide", wideWg: 8, wideRows: 16, wideCols: 16 };

for (
  const [name, tuning] of [
    ["8x32 storage", { variant: "vec", vecRows: 8, vecCols: 32, vecWindows: "off" }],
    ["8x32 whole windows", { variant: "vec", vecRows: 8, vecCols: 32, vecWindows: "force" }],
    ["4x8 windows of 512", {
      variant: "vec",
      vecRows: 4,
      vecCols: 8,
      vecWindow: 512,
      vecWindows: "force",
    }],
    ["16x16 windows of 1536", {
      variant: "vec",
      vecRows: 16,
      vecCols: 16,
      vecWindow: 1536,
      vecWindows: "force",
    }],
  ] as [string, Partial<MatmulTuning>][]
) {
  gpuTest(`matmul_vec[${name}]: forward, dX and dW match f64 (and matmul_wide)`, async (gpu) => {
    let worst = 0, chunked = 0, aWindows = 0, bWindows = 0;
    for (const c of CASES) {
      const data = caseData(c);
      const { got, dispatches, kernels } = await runCase(gpu, c, tuning, data);
      assert.ok(kernels.includes("matmul_vec.matmul_vec"), kernels);
      if (kernels.includes("AU=1")) aWindows++;
      if (kernels.includes("BU=1")) bWindows++;
      const err = maxRelErr(got, data.ref, 1e-2 * rms(data.ref));
      assert.ok(err <= TOL, `${c.op} ${c.M}x${c.N}x${c.K} acc=${c.accumulate}: err ${err}`);
      worst = Math.max(worst, err);
      if (dispatches > 1) chunked++;
      if (dispatches === 1) {
        // one dispatch sums every output in matmul_wide's order: the same bits
        const wide = await runCase(gpu, c, WIDE, data);
        assert.deepEqual(got, wide.got, `${c.op} ${c.M}x${c.N}x${c.K}: differs from matmul_wide`);
      }
    }
    // uniform windows need buffers with UNIFORM usage, which the runtime adds on CPU adapters only
    if (tuning.vecWindows === "force" && gpu.isCpu) {
      assert.ok(aWindows >= 3 && bWindows >= 3, `windows: A in ${aWindows}, B in ${bWindows}`);
    } else {
      assert.equal(aWindows + bWindows, 0);
    }
    if ((tuning.vecWindow ?? VEC_WINDOW_ELEMENTS) < VEC_WINDOW_ELEMENTS && gpu.isCpu) {
      assert.ok(chunked >= 4, `only ${chunked} cases were cut into several dispatches`);
    }
    report(`matmul_vec ${name}: ${CASES.length} cases (${chunked} cut)`, worst, TOL);
  });
}

gpuTest("matmul_vec: chunks that start on a window's start get the whole window", async (gpu) => {
  if (!gpu.isCpu) return; // uniform windows exist on CPU adapters only
  // A (512, 64) read through 64 KiB windows of 256 rows, VR = 4 (32-row workgroups): at offset 0
  // every chunk starts on an aligned window start (2 chunks of 256 rows); 16 bytes in, a chunk may
  // start up to 7 elements into its window, so 255 rows fit: 224 + 224 + 64.
  const M = 512, N = 16, K = 64;
  assert.equal(gpu.limits.minUniformBufferOffsetAlignment, 32, "the figures assume 32 bytes");
  const x = randomArray(M * K, 5, 1), w = randomArray(N * K, 6, 1);
  const ref = matmulRef(x, w, M, N, K);
  const before = { ...matmulTuning(gpu) };
  const arena = new ParamArena(gpu, "test.matmul_vec", 1 << 16);
  const a = gpu.buffer("test.a", (M * K + 64) * 4),
    b = gpu.buffer("test.b", VEC_WINDOW_ELEMENTS * 4);
  const c = gpu.buffer("test.c", M * N * 4);
  try {
    setMatmulTuning(gpu, { variant: "vec", vecRows: 4, vecCols: 8, vecWindows: "force" });
    gpu.write(b, w);
    const counts: number[] = [];
    for (const offA of [0, 4]) {
      gpu.write(a, x, offA * 4);
      const g = { c, a, b, M, N, K, sAi: K, sAp: 1, sBp: 1, sBj: K, ldc: N, offA };
      const ds = matmulGemm(gpu, arena, g);
      const names = ds.map((d) => d.kernel.name).join(" ");
      assert.ok(names.includes("AU=1") && names.includes("BU=1"), names);
      gpu.run(ds);
      const err = maxRelErr(await gpu.readF32(c), ref, 1e-2 * rms(ref));
      report(`matmul_vec A at element offset ${offA}: ${ds.length} dispatches`, err, TOL);
      assert.ok(err <= TOL, `offA ${offA}: ${err}`);
      counts.push(ds.length);
    }
    assert.deepEqual(counts, [2, 3]);
  } finally {
    setMatmulTuning(gpu, before);
    for (const buf of [a, b, c]) buf.destroy();
    arena.destroy();
  }
});

gpuTest(
  "matmul_vec: the CPU default where the shape allows it; vec: false keeps matmul_wide",
  async (gpu) => {
    const c = CASES[0];
    const data = caseData(c);
    const cpu = { variant: "cpu" as const, wideChoices: new Map() };
    const on = await runCase(gpu, c, { ...cpu, vec: true }, data);
    const off = await runCase(gpu, c, { ...cpu, vec: false }, data);
    if (gpu.isCpu) assert.ok(on.kernels.includes("matmul_vec.matmul_vec"), on.kernels);
    assert.ok(off.kernels.includes("matmul.matmul_wide"), off.kernels);
    assert.deepEqual(on.got, off.got);
  },
);
