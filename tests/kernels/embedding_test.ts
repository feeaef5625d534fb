// Embedding lookup and its deterministic backward against the f64 reference (and finite differences).
import assert from "node:assert/strict";
import {
  buildEmbeddingIndex,
  embeddingBackward,
  embeddingForward,
  embeddingIndexLength,
} from "../../kernels/embedding.ts";
import { setGridMaxForTesting } from "../../kernels/elementwise.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";
import { embeddingBackwardRef, embeddingForwardRef } from "../reference/embedding.ts";

const TOL_FWD = 1e-5; // elementwise (one product)
const TOL_BWD = 1e-4; // a sum over the tokens of an id
const FLOOR_FWD = 1e-6; // relative-error floor of the forward
// Backward adds token sums (|dout| < 1, up to 64 terms) into a random dtable (|·| < 1); where they
// cancel, the error is judged against 0.1 (the O(1) scale of the terms).
const FLOOR_BWD = 0.1;
const TOL_FD = 1e-8; // reference vs central differences (f64), relative, floor 1e-3

function nanBuffer(gpu: Gpu, label: string, n: number) {
  return gpu.bufferFrom(label, new Float32Array(n).fill(NaN));
}

function randomIds(T: number, V: number, seed: number): Uint32Array {
  const r = randomArray(T, seed);
  // squash toward small ids so repeats are common
  return Uint32Array.from(r, (v) => Math.min(V - 1, Math.floor(v * v * V)));
}

interface Case {
  T: number;
  C: number;
  V: number;
  ids: Uint32Array;
  scale: number;
  capacity?: number;
}

const CASES: Case[] = [
  { T: 1, C: 1, V: 3, ids: new Uint32Array([2]), scale: 1 },
  { T: 5, C: 7, V: 11, ids: new Uint32Array([3, 3, 0, 10, 3]), scale: 1 },
  { T: 9, C: 333, V: 4, ids: new Uint32Array(9).fill(1), scale: 12 }, // one id only
  { T: 64, C: 300, V: 50, ids: randomIds(64, 50, 5), scale: 1 },
  { T: 4, C: 7, V: 9, ids: new Uint32Array([8, 1, 8, 0]), scale: 0.5, capacity: 6 }, // padded
];

Deno.test("embedding: buildEmbeddingIndex groups positions by id", () => {
  const idx = buildEmbeddingIndex(new Uint32Array([5, 2, 5, 7, 2, 5]), 8);
  assert.equal(idx.length, embeddingIndexLength(8));
  assert.equal(idx[0], 3); // unique ids
  assert.equal(idx[1], 6); // tokens
  assert.deepEqual([...idx.subarray(2, 5)], [2, 5, 7]);
  assert.deepEqual([...idx.subarray(2 + 8, 2 + 8 + 4)], [0, 2, 5, 6]); // segment starts
  assert.deepEqual([...idx.subarray(3 + 16, 3 + 16 + 6)], [1, 4, 0, 2, 5, 3]); // positions
  assert.throws(() => buildEmbeddingIndex(new Uint32Array([1, 9]), 2, 9), /vocab size/);
  assert.throws(() => buildEmbeddingIndex(new Uint32Array(3), 2), /capacity/);
  assert.equal(buildEmbeddingIndex(new Uint32Array(0), 4)[0], 0);
});

Deno.test("embedding: reference backward matches central differences (f64)", () => {
  const T = 6, C = 3, V = 4, scale = 1.7;
  const ids = new Uint32Array([1, 3, 1, 0, 1, 3]);
  const table = Float64Array.from(randomArray(V * C, 1));
  const dout = Float64Array.from(randomArray(T * C, 2));
  const loss = (tab: Float64Array) =>
    embeddingForwardRef(tab, ids, C, scale).reduce((s, v, i) => s + v * dout[i], 0);
  const h = 1e-4;
  const fd = new Float64Array(V * C);
  for (let i = 0; i < V * C; i++) {
    const p = table.slice(), m = table.slice();
    p[i] += h;
    m[i] -= h;
    fd[i] = (loss(p) - loss(m)) / (2 * h);
  }
  const e = maxRelErr(embeddingBackwardRef(dout, ids, V, C, scale), fd, 1e-3);
  report("embedding reference vs finite differences", e, TOL_FD);
  assert.ok(e <= TOL_FD, `${e}`);
});

async function runCase(gpu: Gpu, arena: ParamArena, c: Case, seed: number) {
  const { T, C, V, ids, scale } = c;
  const cap = c.capacity ?? T;
  const table = randomArray(V * C, seed);
  const dout = randomArray(cap * C, seed + 1);
  const dtable0 = randomArray(V * C, seed + 2);
  const idsPadded = new Uint32Array(cap);
  idsPadded.set(ids);
  const tb = gpu.bufferFrom("test.embedding.table", table);
  const ib = gpu.bufferFrom("test.embedding.ids", idsPadded);
  const db = gpu.bufferFrom("test.embedding.dout", dout);
  const xb = gpu.bufferFrom("test.embedding.index", buildEmbeddingIndex(ids, cap, V));
  const out = nanBuffer(gpu, "test.embedding.out", T * C);
  const dts = [0, 1].map(() => gpu.bufferFrom("test.embedding.dtable", dtable0));
  gpu.run([
    ...embeddingForward(gpu, arena, {
      out: { buffer: out },
      table: { buffer: tb },
      ids: { buffer: ib },
      T,
      C,
      scale,
    }),
    ...dts.flatMap((dt) =>
      embeddingBackward(gpu, arena, {
        dtable: { buffer: dt },
        dout: { buffer: db },
        index: { buffer: xb },
        T: cap,
        C,
        scale,
      })
    ),
  ]);
  const [o, d0, d1] = (await gpu.read([out, ...dts].map((buffer) => ({ buffer }))))
    .map((b) => new Float32Array(b));
  for (const b of [tb, ib, db, xb, out, ...dts]) b.destroy();
  const ref = embeddingBackwardRef(dout, ids, V, C, scale);
  const touched = new Set(ids);
  for (let v = 0; v < V; v++) {
    if (touched.has(v)) continue;
    assert.deepEqual(d0.subarray(v * C, v * C + C), dtable0.subarray(v * C, v * C + C));
  }
  assert.deepEqual(d0, d1, "backward is bit-identical across runs");
  return {
    fwd: maxRelErr(o, embeddingForwardRef(table, ids, C, scale), FLOOR_FWD),
    bwd: maxRelErr(d0, Array.from(dtable0, (v, i) => v + ref[i]), FLOOR_BWD),
  };
}

gpuTest(
  "embedding: forward and backward match the reference (repeats, one id, padding)",
  async (gpu) => {
    const arena = new ParamArena(gpu, "test.embedding");
    for (const [k, c] of CASES.entries()) {
      const e = await runCase(gpu, arena, c, 10 * k + 1);
      const name = `T=${c.T} C=${c.C} V=${c.V} scale=${c.scale}`;
      report(`embedding forward ${name}`, e.fwd, TOL_FWD);
      report(`embedding backward ${name}`, e.bwd, TOL_BWD);
      assert.ok(e.fwd <= TOL_FWD, `forward ${name}: ${e.fwd}`);
      assert.ok(e.bwd <= TOL_BWD, `backward ${name}: ${e.bwd}`);
    }
  },
);

gpuTest("embedding: a 2-D grid of workgroups covers every token and id", async (gpu) => {
  const arena = new ParamArena(gpu, "test.embedding.grid");
  setGridMaxForTesting(12);
  try {
    const c: Case = { T: 40, C: 300, V: 30, ids: randomIds(40, 30, 9), scale: 2 };
    const e = await runCase(gpu, arena, c, 99);
    report("embedding forward on a 12-wide grid", e.fwd, TOL_FWD);
    report("embedding backward on a 12-wide grid", e.bwd, TOL_BWD);
    assert.ok(e.fwd <= TOL_FWD && e.bwd <= TOL_BWD, `${e.fwd} ${e.bwd}`);
  } finally {
    setGridMaxForTesting(null);
  }
});

gpuTest("embedding: an id outside the table gives NaN, not another row", async (gpu) => {
  const arena = new ParamArena(gpu, "test.embedding.oob");
  const C = 4, V = 3;
  const tb = gpu.bufferFrom("test.embedding.table", randomArray(V * C, 3));
  const ib = gpu.bufferFrom("test.embedding.ids", new Uint32Array([1, 3]));
  const out = gpu.bufferFrom("test.embedding.out", new Float32Array(2 * C));
  gpu.run(embeddingForward(gpu, arena, {
    out: { buffer: out },
    table: { buffer: tb, size: V * C * 4 },
    ids: { buffer: ib },
    T: 2,
    C,
  }));
  const r = await gpu.readF32(out);
  assert.ok(r.subarray(0, C).every(Number.isFinite));
  assert.ok(r.subarray(C).every(Number.isNaN));
});
