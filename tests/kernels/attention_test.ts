// Attention tests: packed varlen causal forward/backward vs f64 references and finite differences.
import assert from "node:assert/strict";
import {
  attentionAccForms,
  attentionBackward,
  attentionBackwardWorkspaceBytes,
  attentionForward,
  type AttentionGpuEntry,
  attentionGpuShapeCandidates,
  type AttentionVariant,
  dkvSplits,
  gpuTileConfig,
  kvWindowsTake,
  setAttentionAcc,
  setAttentionForm,
  setAttentionGpuShapes,
} from "../../kernels/attention.ts";
import {
  bandBlocks,
  setAttentionBandCap,
  setAttentionBandKeyChunk,
} from "../../kernels/attention_band.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { assertSameBits, gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";
import {
  attentionBackwardRef,
  attentionRef,
  type AttnShape,
  packSamples,
} from "../reference/attention.ts";

const TOL = 1e-4;
/** Every implementation runs everywhere (the adapter's default is only a launch-time choice). */
/**
 * The launch variants, plus the gpu variant with a band form forced ("band-split": dK/dV split per
 * q head, P·V and dQ in chunks of key tiles as in training; "band-split-k1": chunks of one key tile,
 * so that every case of more than one tile is cut).
 */
type TestVariant = AttentionVariant | "band" | "band-split" | "band-split-k1";
const VARIANTS: TestVariant[] = ["row", "cpu", "gpu", "band", "band-split", "band-split-k1"];
/** Relative-error floor: this fraction of the reference's largest magnitude (at least 1e-6). */
const FLOOR_FRAC = 1e-2;

interface Case {
  name: string;
  lengths: number[];
  Hq: number;
  Hkv: number;
  D: number;
  scale?: number;
  inScale?: number;
}

interface GpuResult {
  o: Float32Array;
  lse: Float32Array;
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
  /** The kernels dispatched, in order ("<file>.<entry>"). */
  kernels: string[];
}

/**
 * Upload, poison outputs with NaN, run forward then backward, read everything back. `fused`: Q, K
 * and V as the column blocks of one (T, q+k+v+4) tensor (a fused projection's output, 4 columns of
 * padding), dQ, dK, dV likewise (the padding must stay untouched).
 */
async function runGpu(
  gpu: Gpu,
  variant: TestVariant,
  sh: AttnShape,
  lengths: number[],
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dout: Float32Array,
  fused = false,
): Promise<GpuResult> {
  if (variant === "band" || variant === "band-split" || variant === "band-split-k1") {
    setAttentionForm(gpu, variant === "band" ? "band" : "band-split");
    if (variant === "band-split-k1") setAttentionBandKeyChunk(1);
    try {
      return await runGpu(gpu, "gpu", sh, lengths, q, k, v, dout, fused);
    } finally {
      setAttentionForm(gpu, null);
      setAttentionBandKeyChunk(null);
    }
  }
  const { T, Hq, Hkv, D } = sh;
  const { seqStart, seqEnd } = packSamples(lengths);
  const nq = T * Hq * D, nk = T * Hkv * D;
  const nan = (n: number) => new Float32Array(n).fill(NaN);
  const up = (label: string, a: ArrayBufferView) => ({ buffer: gpu.bufferFrom(label, a) });
  if (fused) return runFused(gpu, variant, sh, seqStart, seqEnd, q, k, v, dout);
  const b = {
    q: up("attention_test.q", q),
    k: up("attention_test.k", k),
    v: up("attention_test.v", v),
    dout: up("attention_test.dout", dout),
    seqStart: up("attention_test.seqStart", seqStart),
    seqEnd: up("attention_test.seqEnd", seqEnd),
    o: up("attention_test.o", nan(nq)),
    lse: up("attention_test.lse", nan(Hq * T)),
    dq: up("attention_test.dq", nan(nq)),
    dk: up("attention_test.dk", nan(nk)),
    dv: up("attention_test.dv", nan(nk)),
    workspace: up("attention_test.ws", nan(attentionBackwardWorkspaceBytes(T, Hq) / 4)),
  };
  const arena = new ParamArena(gpu, "attention_test.params", 4096);
  const fwd = attentionForward(gpu, arena, { ...b, ...sh, variant });
  const bwd = attentionBackward(gpu, arena, { ...b, ...sh, variant });
  gpu.run([...fwd, ...bwd], "attention_test");
  const r = await gpu.read([b.o, b.lse, b.dq, b.dk, b.dv]);
  for (const x of Object.values(b)) x.buffer.destroy();
  arena.destroy();
  const [o, lse, dq, dk, dv] = r.map((a) => new Float32Array(a));
  return { o, lse, dq, dk, dv, kernels: [...fwd, ...bwd].map((d) => d.kernel.name) };
}

const PAD = 12345; // the fused tensors' padding columns

/** runGpu on the fused layout (see there). */
async function runFused(
  gpu: Gpu,
  variant: AttentionVariant,
  sh: AttnShape,
  seqStart: Uint32Array,
  seqEnd: Uint32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dout: Float32Array,
): Promise<GpuResult> {
  const { T, Hq, Hkv, D } = sh;
  const wq = Hq * D, wk = Hkv * D, ld = wq + 2 * wk + 4;
  const layout = { ldQ: ld, ldKv: ld, qOff: 0, kOff: wq, vOff: wq + wk };
  const qkv = new Float32Array(T * ld).fill(PAD);
  for (let t = 0; t < T; t++) {
    qkv.set(q.subarray(t * wq, (t + 1) * wq), t * ld);
    qkv.set(k.subarray(t * wk, (t + 1) * wk), t * ld + wq);
    qkv.set(v.subarray(t * wk, (t + 1) * wk), t * ld + wq + wk);
  }
  const up = (label: string, a: ArrayBufferView) => ({ buffer: gpu.bufferFrom(label, a) });
  const all = up("attention_test.qkv", qkv);
  const grads = up("attention_test.dqkv", new Float32Array(T * ld).fill(PAD));
  const b = {
    q: all,
    k: all,
    v: all,
    dout: up("attention_test.dout", dout),
    seqStart: up("attention_test.seqStart", seqStart),
    seqEnd: up("attention_test.seqEnd", seqEnd),
    o: up("attention_test.o", new Float32Array(T * wq).fill(NaN)),
    lse: up("attention_test.lse", new Float32Array(Hq * T).fill(NaN)),
    dq: grads,
    dk: grads,
    dv: grads,
    workspace: up(
      "attention_test.ws",
      new Float32Array(attentionBackwardWorkspaceBytes(T, Hq) / 4),
    ),
  };
  const arena = new ParamArena(gpu, "attention_test.params", 4096);
  const fwd = attentionForward(gpu, arena, { ...b, ...sh, variant, layout });
  const bwd = attentionBackward(gpu, arena, { ...b, ...sh, variant, layout });
  gpu.run([...fwd, ...bwd], "attention_test.fused");
  const [o, lse, g] = (await gpu.read([b.o, b.lse, grads])).map((a) => new Float32Array(a));
  for (const x of new Set(Object.values(b))) x.buffer.destroy();
  arena.destroy();
  const dq = new Float32Array(T * wq), dk = new Float32Array(T * wk), dv = new Float32Array(T * wk);
  for (let t = 0; t < T; t++) {
    dq.set(g.subarray(t * ld, t * ld + wq), t * wq);
    dk.set(g.subarray(t * ld + wq, t * ld + wq + wk), t * wk);
    dv.set(g.subarray(t * ld + wq + wk, t * ld + wq + 2 * wk), t * wk);
    for (let j = ld - 4; j < ld; j++) assert.equal(g[t * ld + j], PAD, `padding of token ${t}`);
  }
  return { o, lse, dq, dk, dv, kernels: [...fwd, ...bwd].map((d) => d.kernel.name) };
}

/** Max relative error with a floor of max(FLOOR_FRAC × max |ref|, 1e-6). */
function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(ref[i]));
  return maxRelErr(got, ref, Math.max(FLOOR_FRAC * m, 1e-6));
}

// Head dims share pipelines by bucket (16, 64, 128), so these few shapes compile few kernels.
// On lavapipe (32 KiB of workgroup memory) the gpu variant's dQ / dK/dV grids are 16×16 / 8×16
// at D <= 16, 16×8 at D = 64 and 16×4 at D = 128, so TC = 4, 8, 16 and NK = 1, 2, 8 all run.
// T > 64 makes several query/key workgroups; lengths include 1s and samples crossing tiles.
const CASES: Case[] = [
  { name: "GQA Hq=4 Hkv=2 D=16", lengths: [1, 7, 20, 1, 3, 5], Hq: 4, Hkv: 2, D: 16 },
  { name: "Hq=Hkv=2 D=48, 4 samples", lengths: [50, 1, 12, 70], Hq: 2, Hkv: 2, D: 48 },
  {
    name: "GQA Hq=6 Hkv=1 D=8, 8 samples",
    lengths: [3, 1, 1, 30, 9, 100, 2, 60],
    Hq: 6,
    Hkv: 1,
    D: 8,
  },
  { name: "Hq=2 Hkv=1 D=64, one sample of 150", lengths: [150], Hq: 2, Hkv: 1, D: 64 },
  { name: "GQA Hq=4 Hkv=2 D=128", lengths: [37, 1, 20, 9], Hq: 4, Hkv: 2, D: 128 },
  {
    name: "Hq=3 Hkv=3 D=12, 70 samples of length 1",
    lengths: new Array(70).fill(1),
    Hq: 3,
    Hkv: 3,
    D: 12,
  },
  { name: "T=1", lengths: [1], Hq: 2, Hkv: 1, D: 16 },
  // not a multiple of 4: the gpu variant falls back to the cpu kernels
  { name: "Hq=2 Hkv=1 D=6, 2 samples", lengths: [9, 14], Hq: 2, Hkv: 1, D: 6 },
  // several query/key blocks of the gpu variant at its main D (64-row blocks, T = 267)
  {
    name: "GQA Hq=4 Hkv=2 D=64, T=267 in 5 samples",
    lengths: [1, 130, 66, 1, 69],
    Hq: 4,
    Hkv: 2,
    D: 64,
  },
  // D = 128 (7B models) over several blocks, T not a multiple of any block
  { name: "GQA Hq=2 Hkv=1 D=128, T=141 in 3 samples", lengths: [70, 1, 70], Hq: 2, Hkv: 1, D: 128 },
  {
    name: "Hq=2 Hkv=1 D=16 scale=1, inputs ±2 (large scores)",
    lengths: [17, 18],
    Hq: 2,
    Hkv: 1,
    D: 16,
    scale: 1,
    inScale: 2,
  },
  // the same at a head dim the row kernels take (their online softmax meets large scores)
  {
    name: "Hq=2 Hkv=1 D=8 scale=1, inputs ±2 (large scores)",
    lengths: [17, 80],
    Hq: 2,
    Hkv: 1,
    D: 8,
    scale: 1,
    inScale: 2,
  },
];

for (const variant of VARIANTS) {
  for (const c of CASES) {
    gpuTest(
      `attention[${variant}]: forward and backward vs f64 reference (${c.name})`,
      async (gpu) => {
        const T = c.lengths.reduce((a, b) => a + b, 0);
        const sh: AttnShape = {
          T,
          Hq: c.Hq,
          Hkv: c.Hkv,
          D: c.D,
          scale: c.scale ?? 1 / Math.sqrt(c.D),
        };
        const s = c.inScale ?? 1;
        const q = randomArray(T * c.Hq * c.D, 1, s);
        const k = randomArray(T * c.Hkv * c.D, 2, s);
        const v = randomArray(T * c.Hkv * c.D, 3);
        const dout = randomArray(T * c.Hq * c.D, 4);
        const g = await runGpu(gpu, variant, sh, c.lengths, q, k, v, dout);
        const { seqStart } = packSamples(c.lengths);
        const ref = attentionRef(q, k, v, seqStart, sh);
        const bref = attentionBackwardRef(q, k, v, dout, seqStart, sh);
        const errs: [string, number][] = [
          ["o", relErr(g.o, ref.o)],
          ["lse", relErr(g.lse, ref.lse)],
          ["dq", relErr(g.dq, bref.dq)],
          ["dk", relErr(g.dk, bref.dk)],
          ["dv", relErr(g.dv, bref.dv)],
        ];
        for (const [n, e] of errs) report(`${n} (floor ${FLOOR_FRAC}·max|ref|)`, e, TOL);
        for (const [n, e] of errs) assert.ok(e <= TOL, `${n}: ${e}`);
        // The split forms cut P·V and dQ into chunks of key tiles (4 or more in training, so only
        // T = 267 among these cases; one in band-split-k1, so every case of two or more tiles).
        const tiles = Math.ceil(T / 64);
        const cut = c.D % 4 === 0 &&
          (variant === "band-split-k1" ? tiles > 1 : variant === "band-split" && tiles > 4);
        for (const dq of [0, 1]) {
          const name = `attention_band.attention_band_reduce{REDUCE_DQ=${dq}}`;
          assert.equal(g.kernels.includes(name), cut, `${name} dispatched`);
        }
      },
    );
  }
}

// Every thread grid a sweep or tuner may pick, per gpu entry point (the others at their default),
// on one case spanning several blocks of the smallest grids: D = 16 keeps the pipelines small.
const GRID_CASE: Case = {
  name: "GQA Hq=4 Hkv=2 D=16",
  lengths: [1, 40, 9, 30],
  Hq: 4,
  Hkv: 2,
  D: 16,
};
for (const entry of ["forward", "dq", "dkv"] as AttentionGpuEntry[]) {
  gpuTest(`attention[gpu]: every fitting ${entry} thread grid matches f64`, async (gpu) => {
    const c = GRID_CASE;
    const T = c.lengths.reduce((a, b) => a + b, 0);
    const sh: AttnShape = { T, Hq: c.Hq, Hkv: c.Hkv, D: c.D, scale: 1 / Math.sqrt(c.D) };
    const q = randomArray(T * c.Hq * c.D, 5), k = randomArray(T * c.Hkv * c.D, 6);
    const v = randomArray(T * c.Hkv * c.D, 7), dout = randomArray(T * c.Hq * c.D, 8);
    const { seqStart } = packSamples(c.lengths);
    const ref = attentionRef(q, k, v, seqStart, sh);
    const bref = attentionBackwardRef(q, k, v, dout, seqStart, sh);
    const grids = attentionGpuShapeCandidates(gpu, entry, c.D, c.Hq / c.Hkv);
    assert.ok(grids.length >= 3, `${grids.length} grids fit`);
    if (entry === "dkv") assert.ok(grids.some((g) => g[2] === 2), "dK/dV split in halves");
    let worst = 0;
    for (const grid of grids) {
      setAttentionGpuShapes(gpu, { [entry]: grid });
      try {
        const g = await runGpu(gpu, "gpu", sh, c.lengths, q, k, v, dout);
        const errs: [string, number][] = entry === "forward"
          ? [["o", relErr(g.o, ref.o)], ["lse", relErr(g.lse, ref.lse)]]
          : entry === "dq"
          ? [["dq", relErr(g.dq, bref.dq)]]
          : [["dk", relErr(g.dk, bref.dk)], ["dv", relErr(g.dv, bref.dv)]];
        for (const [n, e] of errs) {
          assert.ok(e <= TOL, `${entry} grid ${grid.join("×")}: ${n} ${e}`);
          worst = Math.max(worst, e);
        }
      } finally {
        setAttentionGpuShapes(gpu, null);
      }
    }
    report(`${entry}: ${grids.length} thread grids (${grids.map((g) => g.join("×"))})`, worst, TOL);
    if (entry === "dkv") {
      // splits of larger groups (3 and 4 q heads per kv head), at the first grid
      for (const [Hq, Hkv] of [[6, 2], [8, 2]]) {
        const sh2: AttnShape = { T, Hq, Hkv, D: c.D, scale: 1 / Math.sqrt(c.D) };
        const q2 = randomArray(T * Hq * c.D, 9), d2 = randomArray(T * Hq * c.D, 10);
        const b2 = attentionBackwardRef(q2, k, v, d2, seqStart, sh2);
        for (const parts of dkvSplits(Hq / Hkv)) {
          const [tr, tc] = grids[0];
          setAttentionGpuShapes(gpu, { dkv: [tr, tc, parts] });
          try {
            const g = await runGpu(gpu, "gpu", sh2, c.lengths, q2, k, v, d2);
            for (const [n, e] of [["dk", relErr(g.dk, b2.dk)], ["dv", relErr(g.dv, b2.dv)]]) {
              assert.ok((e as number) <= TOL, `Hq=${Hq} Hkv=${Hkv} split ${parts}: ${n} ${e}`);
            }
          } finally {
            setAttentionGpuShapes(gpu, null);
          }
        }
      }
      setAttentionGpuShapes(gpu, { dkv: [grids[0][0], grids[0][1], 3] }); // 3 does not divide 2
      try {
        await assert.rejects(
          () => runGpu(gpu, "gpu", sh, c.lengths, q, k, v, dout),
          /does not divide/,
        );
      } finally {
        setAttentionGpuShapes(gpu, null);
      }
    }
    setAttentionGpuShapes(gpu, { [entry]: [64, 64] }); // 4,096 threads: never fits
    try {
      assert.throws(() => gpuTileConfig(gpu, entry, c.D), /does not fit/);
    } finally {
      setAttentionGpuShapes(gpu, null);
    }
  });
}

// The two accumulator forms the autotune chooses between give the same bits. D = 60 on grids with
// 4 threads per tile row: 4 dim quads per thread, the written-out maximum, the last one past D for
// some threads and not others.
gpuTest("attention[gpu]: fixed accumulators give the loop form's bits", async (gpu) => {
  const c: Case = { name: "D=60", lengths: [1, 23, 9], Hq: 4, Hkv: 2, D: 60 };
  const T = c.lengths.reduce((a, b) => a + b, 0);
  const sh: AttnShape = { T, Hq: c.Hq, Hkv: c.Hkv, D: c.D, scale: 1 / Math.sqrt(c.D) };
  const q = randomArray(T * c.Hq * c.D, 31), k = randomArray(T * c.Hkv * c.D, 32);
  const v = randomArray(T * c.Hkv * c.D, 33), dout = randomArray(T * c.Hq * c.D, 34);
  const entries = ["forward", "dq", "dkv"] as AttentionGpuEntry[];
  const grids = Object.fromEntries(entries.map((e) => {
    const g = attentionGpuShapeCandidates(gpu, e, c.D).find((g) => g[1] === 4 && !g[2]);
    assert.ok(g, `${e}: a grid with TC = 4 fits`);
    return [e, g];
  }));
  setAttentionGpuShapes(gpu, grids);
  try {
    for (const e of entries) assert.equal(gpuTileConfig(gpu, e, c.D).NK, 4);
    // the fixed form is written out for at most 4 dim quads; past that only the loop form exists
    assert.deepEqual(attentionAccForms(c.D, [16, 4]), ["loop", "fixed"]);
    assert.deepEqual(attentionAccForms(128, [16, 4]), ["loop"]);
    const loop = await runGpu(gpu, "gpu", sh, c.lengths, q, k, v, dout);
    setAttentionAcc(gpu, "fixed");
    for (const e of entries) assert.equal(gpuTileConfig(gpu, e, c.D).ACC_FIXED, 1);
    const fixed = await runGpu(gpu, "gpu", sh, c.lengths, q, k, v, dout);
    const keys = ["o", "lse", "dq", "dk", "dv"] as const;
    assertSameBits(keys.map((x) => fixed[x]), keys.map((x) => loop[x]), "fixed vs loop");
    // and both match f64
    const { seqStart } = packSamples(c.lengths);
    const ref = attentionRef(q, k, v, seqStart, sh);
    const bref = attentionBackwardRef(q, k, v, dout, seqStart, sh);
    const err = Math.max(
      relErr(fixed.o, ref.o),
      relErr(fixed.dq, bref.dq),
      relErr(fixed.dk, bref.dk),
      relErr(fixed.dv, bref.dv),
    );
    report(`fixed accumulators, grids ${entries.map((e) => grids[e].join("×"))}`, err, TOL);
    assert.ok(err <= TOL, `${err}`);
  } finally {
    setAttentionAcc(gpu, null);
    setAttentionGpuShapes(gpu, null);
  }
});

// A band capped below the whole shape runs in blocks of heads (whole GQA groups) through the same
// buffers: the same bits as one block; below one group's band the flash form runs instead.
gpuTest(
  "attention[band]: head blocks give the one-block bits, and flash below one group",
  async (gpu) => {
    const c = CASES.find((x) => x.name === "GQA Hq=4 Hkv=2 D=64, T=267 in 5 samples")!;
    const T = c.lengths.reduce((a, b) => a + b, 0);
    const sh: AttnShape = { T, Hq: c.Hq, Hkv: c.Hkv, D: c.D, scale: 1 / Math.sqrt(c.D) };
    const q = randomArray(T * c.Hq * c.D, 31), k = randomArray(T * c.Hkv * c.D, 32);
    const v = randomArray(T * c.Hkv * c.D, 33), dout = randomArray(T * c.Hq * c.D, 34);
    const one = bandBlocks(sh, Infinity)!;
    assert.equal(one.blocks, 1);
    try {
      for (const variant of ["band", "band-split", "band-split-k1"] as const) {
        setAttentionBandCap(null);
        const whole = await runGpu(gpu, variant, sh, c.lengths, q, k, v, dout);
        setAttentionBandCap(one.bytes / 2); // one kv head (2 q heads) per block
        assert.equal(bandBlocks(sh, one.bytes / 2)!.blocks, 2);
        const blocked = await runGpu(gpu, variant, sh, c.lengths, q, k, v, dout);
        for (const key of ["o", "lse", "dq", "dk", "dv"] as const) {
          assert.deepEqual(blocked[key], whole[key], `${variant}: ${key}`);
        }
      }
      setAttentionBandCap(one.bytes / 2 - 1); // not even one group: the flash form
      assert.equal(bandBlocks(sh, one.bytes / 2 - 1), null);
      const fallback = await runGpu(gpu, "band", sh, c.lengths, q, k, v, dout);
      const flash = await runGpu(gpu, "gpu", sh, c.lengths, q, k, v, dout);
      for (const key of ["o", "lse", "dq", "dk", "dv"] as const) {
        assert.deepEqual(fallback[key], flash[key], `fallback: ${key}`);
      }
    } finally {
      setAttentionBandCap(null);
    }
  },
);

// Q, K, V (and their gradients) as column blocks of one fused tensor: the same bits as dense.
for (const variant of VARIANTS) {
  gpuTest(
    `attention[${variant}]: the fused q/k/v layout gives the dense results exactly`,
    async (gpu) => {
      const names = ["GQA Hq=4 Hkv=2 D=64, T=267 in 5 samples", "Hq=2 Hkv=1 D=6, 2 samples"];
      const cases = CASES.filter((x) => names.includes(x.name));
      assert.equal(cases.length, names.length);
      for (const c of cases) {
        const T = c.lengths.reduce((a, b) => a + b, 0);
        const sh: AttnShape = { T, Hq: c.Hq, Hkv: c.Hkv, D: c.D, scale: 1 / Math.sqrt(c.D) };
        const q = randomArray(T * c.Hq * c.D, 21), k = randomArray(T * c.Hkv * c.D, 22);
        const v = randomArray(T * c.Hkv * c.D, 23), dout = randomArray(T * c.Hq * c.D, 24);
        const splits = variant === "gpu" ? [1, 2] : [1];
        for (const parts of splits) {
          if (parts > 1) {
            const [tr, tc] = attentionGpuShapeCandidates(gpu, "dkv", c.D)[0];
            setAttentionGpuShapes(gpu, { dkv: [tr, tc, parts] });
          }
          try {
            const dense = await runGpu(gpu, variant, sh, c.lengths, q, k, v, dout);
            const fused = await runGpu(gpu, variant, sh, c.lengths, q, k, v, dout, true);
            for (const key of ["o", "lse", "dq", "dk", "dv"] as const) {
              assert.deepEqual(fused[key], dense[key], `${c.name} split ${parts}: ${key}`);
            }
          } finally {
            setAttentionGpuShapes(gpu, null);
          }
        }
      }
    },
  );
}

for (const variant of VARIANTS) {
  gpuTest(
    `attention[${variant}]: backward matches central finite differences in f64`,
    async (gpu) => {
      const lengths = [2, 1, 6];
      const T = 9, Hq = 4, Hkv = 2, D = 4;
      const sh: AttnShape = { T, Hq, Hkv, D, scale: 0.7 };
      const { seqStart } = packSamples(lengths);
      const q = randomArray(T * Hq * D, 5), k = randomArray(T * Hkv * D, 6);
      const v = randomArray(T * Hkv * D, 7), w = randomArray(T * Hq * D, 8);
      // loss L = Σ o ∘ w, so dL/do = w
      const loss = (qq: Float64Array, kk: Float64Array, vv: Float64Array) => {
        const { o } = attentionRef(qq, kk, vv, seqStart, sh);
        let s = 0;
        for (let i = 0; i < o.length; i++) s += o[i] * w[i];
        return s;
      };
      const base = [Float64Array.from(q), Float64Array.from(k), Float64Array.from(v)];
      const fd = base.map((x) => {
        const g = new Float64Array(x.length);
        const eps = 1e-5;
        for (let i = 0; i < x.length; i++) {
          const keep = x[i];
          x[i] = keep + eps;
          const lp = loss(base[0], base[1], base[2]);
          x[i] = keep - eps;
          const lm = loss(base[0], base[1], base[2]);
          x[i] = keep;
          g[i] = (lp - lm) / (2 * eps);
        }
        return g;
      });
      const an = attentionBackwardRef(q, k, v, w, seqStart, sh);
      const refErr = Math.max(
        relErr(an.dq, fd[0]),
        relErr(an.dk, fd[1]),
        relErr(an.dv, fd[2]),
      );
      report("f64 analytic reference vs finite differences", refErr, 1e-7);
      assert.ok(refErr <= 1e-7);
      const g = await runGpu(gpu, variant, sh, lengths, q, k, v, w);
      const errs: [string, number][] = [
        ["dq", relErr(g.dq, fd[0])],
        ["dk", relErr(g.dk, fd[1])],
        ["dv", relErr(g.dv, fd[2])],
      ];
      for (const [n, e] of errs) {
        report(`GPU ${n} vs finite differences (floor ${FLOOR_FRAC}·max|fd|)`, e, TOL);
      }
      for (const [n, e] of errs) assert.ok(e <= TOL, `${n}: ${e}`);
    },
  );
}

for (const variant of VARIANTS) {
  gpuTest(
    `attention[${variant}]: two runs are bit-identical (no atomics, fixed reduction order)`,
    async (gpu) => {
      const lengths = [40, 1, 33];
      const T = 74, Hq = 4, Hkv = 2, D = 16;
      const sh: AttnShape = { T, Hq, Hkv, D, scale: 0.25 };
      const inputs = [T * Hq * D, T * Hkv * D, T * Hkv * D, T * Hq * D].map((n, i) =>
        randomArray(n, 20 + i)
      );
      const a = await runGpu(gpu, variant, sh, lengths, inputs[0], inputs[1], inputs[2], inputs[3]);
      const b = await runGpu(gpu, variant, sh, lengths, inputs[0], inputs[1], inputs[2], inputs[3]);
      for (const key of ["o", "lse", "dq", "dk", "dv"] as const) {
        assert.deepEqual(new Uint32Array(a[key].buffer), new Uint32Array(b[key].buffer), key);
      }
    },
  );
}

gpuTest("attention[row]: the _v4 entry points equal the scalar ones bit for bit", async (gpu) => {
  const lengths = [40, 1, 33, 10];
  const T = 84;
  // D = 4 only: each (entry, D) pipeline of the 16-row kernels takes 10–20 s to compile cold; D = 8
  // `_v4` entries are checked against the f64 reference and the windowed `_u` entries elsewhere
  for (const [Hq, Hkv, D] of [[4, 2, 4]]) {
    const sh: AttnShape = { T, Hq, Hkv, D, scale: 1 / Math.sqrt(D) };
    const q = randomArray(T * Hq * D, 41), k = randomArray(T * Hkv * D, 42);
    const v = randomArray(T * Hkv * D, 43), dout = randomArray(T * Hq * D, 44);
    for (const fused of [false, true]) {
      const v4 = await runGpu(gpu, "row", sh, lengths, q, k, v, dout, fused);
      gpu.vec4Forms = false;
      try {
        const scalar = await runGpu(gpu, "row", sh, lengths, q, k, v, dout, fused);
        for (const key of ["o", "lse", "dq", "dk", "dv"] as const) {
          assert.deepEqual(
            v4[key],
            scalar[key],
            `Hq=${Hq} Hkv=${Hkv} D=${D} fused=${fused}: ${key}`,
          );
        }
        assert.ok(v4.kernels.some((n) => n.includes("_v4")), "the _v4 entry points ran");
        assert.ok(!scalar.kernels.some((n) => n.includes("_v4")), "the scalar ones ran");
      } finally {
        gpu.vec4Forms = true;
      }
    }
  }
});

gpuTest(
  "attention[row]: K and V through uniform windows (_u), whole or in query chunks, equal _v4 bit for bit",
  async (gpu) => {
    const Hq = 8, Hkv = 4, D = 8; // 512 tokens of dense K fill one 64 KiB window
    // chunks: dispatches of the forward and of dQ (blocks of 128 queries)
    const cases = [
      { lengths: [200, 1, 150, 161], kv: {}, chunks: 1 }, // T = 512: one window
      // T = 1024: chunks of 128 queries, windows from tokens 0, 0, 0, 0, 128, 256, 384, 512
      { lengths: [200, 1, 150, 161, 250, 262], kv: { maxSample: 262 }, chunks: 8 },
      // 400-token windows: chunks of 128 queries, windows from 272 tokens before each
      {
        lengths: [200, 1, 150, 161, 250, 262],
        kv: { maxSample: 262, windowTokens: 400 },
        chunks: 8,
      },
    ];
    for (const { lengths, kv, chunks } of cases) {
      const T = lengths.reduce((x, y) => x + y, 0);
      const sh = { T, Hq, Hkv, D, scale: 1 / Math.sqrt(D) };
      // windows need UNIFORM usage, which the runtime gives buffers on CPU adapters only
      assert.equal(
        kvWindowsTake(gpu, { ...sh, ...kv }),
        gpu.isCpu && chunks !== undefined,
        `T ${T}`,
      );
      const { seqStart, seqEnd } = packSamples(lengths);
      const nq = T * Hq * D, nk = T * Hkv * D;
      const up = (label: string, a: Float32Array | Uint32Array) => ({
        buffer: gpu.bufferFrom(label, a),
      });
      const b = {
        q: up("attention_test.q", randomArray(nq, 51)),
        k: up("attention_test.k", randomArray(nk, 52)),
        v: up("attention_test.v", randomArray(nk, 53)),
        dout: up("attention_test.dout", randomArray(nq, 54)),
        seqStart: up("attention_test.seqStart", seqStart),
        seqEnd: up("attention_test.seqEnd", seqEnd),
        workspace: up(
          "attention_test.ws",
          new Float32Array(attentionBackwardWorkspaceBytes(T, Hq) / 4),
        ),
      };
      const arena = new ParamArena(gpu, "attention_test.params.u", 16384);
      const outs: Float32Array[][] = [];
      for (const windows of [false, true]) {
        const o = up("attention_test.o", new Float32Array(nq)),
          lse = up("attention_test.lse", new Float32Array(Hq * T));
        const dq = up("attention_test.dq", new Float32Array(nq)),
          dk = up("attention_test.dk", new Float32Array(nk));
        const dv = up("attention_test.dv", new Float32Array(nk));
        const kvDense = windows ? { k: b.k, v: b.v, ...kv } : undefined;
        const fwd = attentionForward(gpu, arena, { ...b, ...sh, o, lse, variant: "row", kvDense });
        const bwd = attentionBackward(gpu, arena, {
          ...b,
          ...sh,
          o,
          lse,
          dq,
          dk,
          dv,
          variant: "row",
          kvDense,
        });
        const names = [...fwd, ...bwd].map((d) => d.kernel.name);
        const windowed = names.filter((n) => n.includes("_u{")).length;
        assert.equal(windowed, windows && gpu.isCpu ? 2 * (chunks ?? 0) : 0, names.join(" "));
        gpu.run([...fwd, ...bwd], "attention_test.u");
        outs.push((await gpu.read([o, lse, dq, dk, dv])).map((a) => new Float32Array(a)));
        for (const x of [o, lse, dq, dk, dv]) x.buffer.destroy();
      }
      assertSameBits(outs[1], outs[0], `T ${T}, ${JSON.stringify(kv)}`);
      for (const x of Object.values(b)) x.buffer.destroy();
      arena.destroy();
    }
  },
);
