// Fused cross-entropy against an f64 reference and finite differences: several vocabulary chunk
// sizes (one not dividing V), ignored labels, all-ignored batches, logit scaling, accumulation.
//
// Error metric: max |gpu − ref| / max(|ref|, floor) with floor = 1e-2 · RMS(ref) for dh and dw
// (entries that cancel to ~0 are judged against the typical size) and floor 1e-6 for the loss
// values; tolerance 1e-4 (f32 reductions).
import assert from "node:assert/strict";
import {
  crossEntropyForward,
  crossEntropyForwardBackward,
  crossEntropyWorkspace,
  crossEntropyWorkspaceBytes,
} from "../../kernels/cross_entropy.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { assertSameBits, gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";
import { crossEntropyLossRef, crossEntropyRef } from "../reference/cross_entropy.ts";

const TOL = 1e-4;

function rms(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s / Math.max(a.length, 1));
}

function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  return maxRelErr(got, ref, 1e-2 * rms(ref) || 1e-30);
}

/** Deterministic labels in [0, V) with −100 at the positions in `ignored`. */
function makeLabels(T: number, V: number, seed: number, ignored: (t: number) => boolean) {
  const r = randomArray(T, seed, 1);
  return Int32Array.from(r, (x, t) => (ignored(t) ? -100 : Math.floor((x + 1) / 2 * V) % V));
}

interface Case {
  T: number;
  C: number;
  V: number;
  chunk: number;
  scale: number;
  labels: Int32Array;
  seed: number;
}

interface Outputs {
  loss: number; // lossAcc[0] after the launch, minus its initial value
  tokenLoss: Float32Array;
  dh?: Float32Array;
  dw?: Float32Array; // after the launch, minus its initial value
}

const LOSS_INIT = 0.75;
const INV_TOKENS = 1 / 3;

/** Run one launch (with gradients unless `forwardOnly`) and read everything back. */
async function runCase(gpu: Gpu, c: Case, forwardOnly = false): Promise<
  Outputs & {
    h: Float32Array;
    w: Float32Array;
  }
> {
  const { T, C, V } = c;
  const h = randomArray(T * C, c.seed, 1.5);
  const w = randomArray(V * C, c.seed + 1, 1.5);
  const dwInit = randomArray(V * C, c.seed + 2, 0.1);
  const arena = new ParamArena(gpu, "test.ce", 65536);
  const bufs: GPUBuffer[] = [arena.buffer];
  const up = (label: string, d: Float32Array | Int32Array) => {
    const b = gpu.bufferFrom(label, d);
    bufs.push(b);
    return b;
  };
  const hb = up("test.h", h), wb = up("test.w", w), lb = up("test.labels", c.labels);
  const lossAcc = up("test.lossAcc", new Float32Array([LOSS_INIT, 0, 0, 0]));
  const tokenLoss = up("test.tokenLoss", new Float32Array(T).fill(NaN));
  const dh = up("test.dh", new Float32Array(T * C).fill(NaN));
  const dw = up("test.dw", dwInit);
  const inv = up("test.inv", new Float32Array([INV_TOKENS]));
  const ws = crossEntropyWorkspace(gpu, T, V, c.chunk);
  const base = {
    h: hb,
    w: wb,
    labels: lb,
    lossAcc,
    tokenLoss,
    T,
    C,
    V,
    logitScale: c.scale,
    workspace: ws,
  };
  const dispatches = forwardOnly
    ? crossEntropyForward(gpu, arena, base)
    : crossEntropyForwardBackward(gpu, arena, { ...base, dh, dw, invTokens: inv });
  gpu.run(dispatches, "test.ce");
  const [la, tl, dhr, dwr] = await gpu.read([
    { buffer: lossAcc, size: 4 },
    { buffer: tokenLoss },
    { buffer: dh },
    { buffer: dw },
  ]);
  gpu.check("test.ce");
  ws.destroy();
  for (const b of bufs) b.destroy();
  const dwGot = new Float32Array(dwr);
  for (let i = 0; i < dwGot.length; i++) dwGot[i] -= dwInit[i];
  return {
    h,
    w,
    loss: new Float32Array(la)[0] - LOSS_INIT,
    tokenLoss: new Float32Array(tl),
    dh: forwardOnly ? undefined : new Float32Array(dhr),
    dw: forwardOnly ? undefined : dwGot,
  };
}

/** Compare a launch with the f64 reference; returns the worst error over all outputs. */
function compare(c: Case, got: Awaited<ReturnType<typeof runCase>>, tag: string): number {
  const ref = crossEntropyRef(got.h, got.w, c.labels, c.T, c.C, c.V, c.scale, INV_TOKENS);
  const eLoss = Math.abs(got.loss - ref.loss) / Math.max(Math.abs(ref.loss), 1e-6);
  const eTok = maxRelErr(got.tokenLoss, ref.tokenLoss, 1e-6);
  assert.ok(eLoss <= TOL, `${tag}: loss ${got.loss} vs ${ref.loss}`);
  assert.ok(eTok <= TOL, `${tag}: tokenLoss err ${eTok}`);
  let worst = Math.max(eLoss, eTok);
  if (got.dh && got.dw) {
    const allIgnored = c.labels.every((l) => l === -100);
    const eDh = allIgnored ? maxRelErr(got.dh, ref.dh, 1) : relErr(got.dh, ref.dh);
    const eDw = allIgnored ? maxRelErr(got.dw, ref.dw, 1) : relErr(got.dw, ref.dw);
    assert.ok(eDh <= TOL, `${tag}: dh err ${eDh}`);
    assert.ok(eDw <= TOL, `${tag}: dw err ${eDw}`);
    worst = Math.max(worst, eDh, eDw);
  }
  return worst;
}

gpuTest(
  "cross_entropy: loss and grads match f64 for chunk sizes 1..V (some not dividing V)",
  async (gpu) => {
    const [T, C, V] = [7, 5, 11];
    const labels = makeLabels(T, V, 3, (t) => t === 2 || t === 5);
    let worst = 0;
    for (const chunk of [11, 64, 4, 3, 1]) {
      const c: Case = { T, C, V, chunk, scale: 1, labels, seed: 10 };
      worst = Math.max(worst, compare(c, await runCase(gpu, c), `chunk ${chunk}`));
    }
    report("loss, tokenLoss, dh, dw over chunks 11, 64, 4, 3, 1", worst, TOL);
  },
);

gpuTest("cross_entropy: larger odd shape with logit scaling and ignored tokens", async (gpu) => {
  const [T, C, V] = [33, 17, 203];
  const labels = makeLabels(T, V, 4, (t) => t % 4 === 1);
  labels[0] = 0;
  labels[T - 1] = V - 1; // first and last vocabulary ids
  let worst = 0;
  for (const chunk of [64, 203, 50]) {
    const c: Case = { T, C, V, chunk, scale: 0.25, labels, seed: 20 };
    worst = Math.max(worst, compare(c, await runCase(gpu, c), `chunk ${chunk}`));
  }
  report("T=33 C=17 V=203 scale 0.25, chunks 64, 203, 50", worst, TOL);
});

gpuTest(
  "cross_entropy: an all-ignored batch adds 0 to the loss and gives zero grads",
  async (gpu) => {
    const [T, C, V] = [6, 4, 9];
    const c: Case = { T, C, V, chunk: 4, scale: 1, labels: new Int32Array(T).fill(-100), seed: 30 };
    const got = await runCase(gpu, c);
    assert.equal(got.loss, 0);
    assert.ok(got.tokenLoss.every((x) => x === 0));
    assert.ok(got.dh!.every((x) => x === 0), "dh must be written with zeros");
    assert.ok(got.dw!.every((x) => x === 0), "dw must be left unchanged");
    report("all ignored", compare(c, got, "all ignored"), TOL);
  },
);

gpuTest("cross_entropy: forward only writes the same loss and tokenLoss", async (gpu) => {
  const [T, C, V] = [9, 6, 40];
  const c: Case = {
    T,
    C,
    V,
    chunk: 16,
    scale: 1,
    labels: makeLabels(T, V, 5, (t) => t === 4),
    seed: 40,
  };
  const got = await runCase(gpu, c, true);
  report("forward only", compare(c, got, "forward only"), TOL);
});

gpuTest(
  "cross_entropy: dh and dw match central finite differences of the f64 loss",
  async (gpu) => {
    const [T, C, V] = [3, 4, 5];
    const c: Case = {
      T,
      C,
      V,
      chunk: 2,
      scale: 0.5,
      labels: Int32Array.from([4, -100, 1]),
      seed: 50,
    };
    const got = await runCase(gpu, c);
    const eps = 1e-5;
    const fd = (arr: Float32Array, isH: boolean) => {
      const out = new Float64Array(arr.length);
      for (let i = 0; i < arr.length; i++) {
        const plus = Float64Array.from(arr), minus = Float64Array.from(arr);
        plus[i] += eps;
        minus[i] -= eps;
        const f = (v: Float64Array) =>
          crossEntropyLossRef(isH ? v : got.h, isH ? got.w : v, c.labels, T, C, V, c.scale);
        out[i] = INV_TOKENS * (f(plus) - f(minus)) / (2 * eps);
      }
      return out;
    };
    const eDh = relErr(got.dh!, fd(got.h, true));
    const eDw = relErr(got.dw!, fd(got.w, false));
    report("dh vs finite differences", eDh, TOL);
    report("dw vs finite differences", eDw, TOL);
    assert.ok(eDh <= TOL && eDw <= TOL);
  },
);

gpuTest("cross_entropy: a label outside the vocabulary gives a NaN loss", async (gpu) => {
  const c: Case = {
    T: 2,
    C: 3,
    V: 4,
    chunk: 4,
    scale: 1,
    labels: Int32Array.from([1, 7]),
    seed: 60,
  };
  const got = await runCase(gpu, c, true);
  assert.ok(Number.isNaN(got.loss));
  assert.ok(Number.isFinite(got.tokenLoss[0]) && Number.isNaN(got.tokenLoss[1]));
});

gpuTest("cross_entropy: two launches are bit-identical", async (gpu) => {
  const c: Case = {
    T: 20,
    C: 8,
    V: 70,
    chunk: 32,
    scale: 1,
    labels: makeLabels(20, 70, 7, (t) => t === 3),
    seed: 70,
  };
  const a = await runCase(gpu, c), b = await runCase(gpu, c);
  assert.equal(a.loss, b.loss);
  assert.deepEqual(a.dh, b.dh);
  assert.deepEqual(a.dw, b.dw);
});

Deno.test("cross_entropy: workspace bytes cover the logits chunk and the statistics", () => {
  assert.equal(crossEntropyWorkspaceBytes(10, 100, 30), 10 * 30 * 4 + 10 * 16);
  // the default chunk keeps (T, chunk) within a 128 MiB binding and is a multiple of 64
  const b = crossEntropyWorkspaceBytes(65536, 50000);
  assert.ok(b - 65536 * 16 <= 128 * 2 ** 20);
});

gpuTest(
  "cross_entropy: the four-column gradient equals the scalar one bit for bit",
  async (gpu) => {
    // chunks of 32 and 8 (multiples of 4: cross_entropy_grad4), ignored rows, labels in each chunk
    const c: Case = {
      T: 21,
      C: 8,
      V: 72,
      chunk: 32,
      scale: 0.5,
      labels: makeLabels(21, 72, 9, (t) => t % 5 === 2),
      seed: 72,
    };
    const four = await runCase(gpu, c);
    compare(c, four, "grad4");
    gpu.vec4Forms = false;
    try {
      const one = await runCase(gpu, c);
      assert.equal(four.loss, one.loss);
      assertSameBits([four.dh!, four.dw!], [one.dh!, one.dw!], "grad4 vs grad");
    } finally {
      gpu.vec4Forms = true;
    }
  },
);
