// RoPE tests: Llama-3 inverse frequencies, the cos/sin table, and the GPU rotation forward/backward.
import assert from "node:assert/strict";
import { ropeBackward, ropeForward, ropeInvFreq, ropeTable } from "../../kernels/rope.ts";
import { ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";
import { invFreqRef, ropeRef } from "../reference/rope.ts";

const LLAMA32_1B = {
  type: "llama3" as const,
  factor: 32,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 8192,
};

Deno.test("rope: llama3 inv_freq matches the formula (Llama-3.2-1B, head_dim 64)", () => {
  const got = ropeInvFreq(64, 500000, LLAMA32_1B);
  const ref = invFreqRef(64, 500000, LLAMA32_1B);
  // float32 rounding at each of ~10 steps: a few ulps (2^-24 ≈ 6e-8 each)
  const err = maxRelErr(got, ref, 1e-30);
  report("inv_freq llama3 vs f64 formula", err, 1e-6);
  assert.ok(err <= 1e-6);
  // By hand: i=0 high frequency (kept), i=15..17 medium (smoothed), i=31 low (divided by 32).
  const hand: [number, number][] = [
    [0, 1.0],
    [15, 0.001290547928209264], // wavelen 2948: s = (8192/2948.30 − 1)/3
    [16, 0.00042955679655936815], // 500000^-0.5 = 1.41421e-3, wavelen 4442.88
    [17, 9.70828780262767e-05], // wavelen 6695.11
    [31, 3.013858152139171e-06 / 32], // wavelen 2.08e6 > 8192
  ];
  for (const [i, v] of hand) {
    assert.ok(Math.abs(got[i] - v) / v < 1e-6, `inv_freq[${i}] = ${got[i]}, hand ${v}`);
  }
  // unscaled: plain 1/theta^(2i/D)
  const plain = ropeInvFreq(8, 10000, null);
  const errPlain = maxRelErr(plain, invFreqRef(8, 10000, null), 1e-30);
  report("inv_freq plain vs f64 formula", errPlain, 1e-6);
  assert.ok(errPlain <= 1e-6);
  assert.equal(plain[1], Math.fround(1 / Math.fround(Math.pow(10000, 0.25))));
});

Deno.test("rope: table holds float32 cos/sin of the float32 angle", () => {
  const D = 16, maxPos = 300;
  const inv = ropeInvFreq(D, 10000, null);
  const tab = ropeTable(D, 10000, null, maxPos);
  assert.equal(tab.length, maxPos * D);
  for (const t of [0, 1, 17, 299]) {
    for (let i = 0; i < D / 2; i++) {
      const a = Math.fround(inv[i] * t);
      assert.equal(tab[(t * D / 2 + i) * 2], Math.fround(Math.cos(a)));
      assert.equal(tab[(t * D / 2 + i) * 2 + 1], Math.fround(Math.sin(a)));
    }
  }
  assert.equal(tab[0], 1);
  assert.equal(tab[1], 0);
});

/** Positions of packed samples of the given lengths (restarting at 0 for each). */
function packedPositions(lengths: number[]): Uint32Array {
  const pos: number[] = [];
  for (const n of lengths) for (let i = 0; i < n; i++) pos.push(i);
  return new Uint32Array(pos);
}

const TOL = 1e-5;
const FLOOR = 0.1; // inputs are in [-1, 1]: errors are judged against at least 10% of that scale

for (
  const c of [
    { name: "D=8 H=4 stories260K", D: 8, H: 4, lengths: [5, 1, 9, 3], theta: 10000, scaling: null },
    {
      name: "D=64 H=3 llama3",
      D: 64,
      H: 3,
      lengths: [40, 1, 23],
      theta: 500000,
      scaling: LLAMA32_1B,
    },
    { name: "D=128 H=2", D: 128, H: 2, lengths: [7, 13], theta: 10000, scaling: null },
  ]
) {
  gpuTest(`rope: forward/backward, in place and not (${c.name})`, async (gpu) => {
    const pos = packedPositions(c.lengths);
    const T = pos.length, H = c.H, D = c.D, n = T * H * D;
    const maxPos = Math.max(...c.lengths);
    const inv = ropeInvFreq(D, c.theta, c.scaling);
    const arena = new ParamArena(gpu, "rope_test.params", 4096);
    const x = randomArray(n, 11 + D, 1);
    const posBuf = gpu.bufferFrom("rope_test.pos", pos);
    const table = gpu.bufferFrom("rope_test.table", ropeTable(D, c.theta, c.scaling, maxPos));
    const xBuf = gpu.bufferFrom("rope_test.x", x);
    const outBuf = gpu.buffer("rope_test.out", n * 4);
    const ipBuf = gpu.buffer("rope_test.inplace", n * 4);
    const nan = new Float32Array(n).fill(NaN);
    const args = { pos: { buffer: posBuf }, table: { buffer: table }, T, H, D };
    const [xs, outs, ips] = [xBuf, outBuf, ipBuf].map((buffer) => ({ buffer }));
    for (const dir of ["forward", "backward"] as const) {
      gpu.write(outBuf, nan);
      gpu.write(ipBuf, x);
      const d = dir === "forward"
        ? [
          ...ropeForward(gpu, arena, { out: outs, x: xs, ...args }),
          ...ropeForward(gpu, arena, { out: ips, x: ips, ...args }),
        ]
        : [
          ...ropeBackward(gpu, arena, { dx: outs, dout: xs, ...args }),
          ...ropeBackward(gpu, arena, { dx: ips, dout: ips, ...args }),
        ];
      gpu.run(d, "rope_test");
      const [o, ip] = await gpu.read([{ buffer: outBuf }, { buffer: ipBuf }]);
      const ref = ropeRef(x, pos, inv, T, H, D, dir === "backward");
      const e1 = maxRelErr(new Float32Array(o), ref, FLOOR);
      const e2 = maxRelErr(new Float32Array(ip), ref, FLOOR);
      report(`${dir} ${c.name} (floor ${FLOOR})`, e1, TOL);
      report(`${dir} in place ${c.name} (floor ${FLOOR})`, e2, TOL);
      assert.ok(e1 <= TOL && e2 <= TOL);
    }
    // positions restart: token 0 of every sample is left unrotated (pos 0 → cos 1, sin 0)
    gpu.run(ropeForward(gpu, arena, { out: outs, x: xs, ...args }), "rope_test");
    const o = await gpu.readF32(outBuf);
    let start = 0;
    for (const len of c.lengths) {
      for (let j = 0; j < H * D; j++) assert.equal(o[start * H * D + j], x[start * H * D + j]);
      start += len;
    }
    for (const b of [posBuf, table, xBuf, outBuf, ipBuf, arena.buffer]) b.destroy();
  });
}

gpuTest(
  "rope: a head block inside wider rows (fused q/k/v) rotates as the dense tensor does",
  async (gpu) => {
    const lengths = [5, 1, 9];
    const pos = packedPositions(lengths);
    const T = pos.length, H = 3, D = 8, W = H * D, ld = W + 20, off = 12;
    const arena = new ParamArena(gpu, "rope_test.strided", 4096);
    const x = randomArray(T * W, 17, 1);
    const wide = new Float32Array(T * ld).fill(12345); // sentinels outside the block
    for (let t = 0; t < T; t++) wide.set(x.subarray(t * W, (t + 1) * W), t * ld + off);
    const posBuf = gpu.bufferFrom("rope_test.pos", pos);
    const table = gpu.bufferFrom("rope_test.table", ropeTable(D, 10000, null, 16));
    const dense = gpu.bufferFrom("rope_test.dense", x);
    const strided = gpu.bufferFrom("rope_test.strided", wide);
    const args = { pos: { buffer: posBuf }, table: { buffer: table }, T, H, D };
    for (const dir of ["forward", "backward"] as const) {
      gpu.write(dense, x);
      gpu.write(strided, wide);
      const d = { buffer: dense }, s = { buffer: strided };
      gpu.run(
        dir === "forward"
          ? [
            ...ropeForward(gpu, arena, { out: d, x: d, ...args }),
            ...ropeForward(gpu, arena, { out: s, x: s, ...args, ld, off }),
          ]
          : [
            ...ropeBackward(gpu, arena, { dx: d, dout: d, ...args }),
            ...ropeBackward(gpu, arena, { dx: s, dout: s, ...args, ld, off }),
          ],
        "rope_test.strided",
      );
      const [a, b] = (await gpu.read([d, s])).map((r) => new Float32Array(r));
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < ld; j++) {
          const inBlock = j >= off && j < off + W;
          assert.equal(b[t * ld + j], inBlock ? a[t * W + j - off] : 12345, `${dir} t=${t} j=${j}`);
        }
      }
    }
    for (const buf of [posBuf, table, dense, strided, arena.buffer]) buf.destroy();
  },
);

gpuTest("rope: the vec4 in-place kernels equal the one-pair ones bit for bit", async (gpu) => {
  const pos = packedPositions([7, 3, 12]);
  const T = pos.length, H = 3;
  const arena = new ParamArena(gpu, "rope_test.v4", 4096);
  try {
    for (const D of [8, 16, 64]) {
      const x = randomArray(T * H * D, 29 + D, 1);
      const posBuf = gpu.bufferFrom("rope_test.pos", pos);
      const table = gpu.bufferFrom("rope_test.table", ropeTable(D, 10000, null, 16));
      const buf = gpu.bufferFrom("rope_test.x", x);
      const args = { pos: { buffer: posBuf }, table: { buffer: table }, T, H, D };
      const s = { buffer: buf };
      const results: Float32Array[] = [];
      for (const scalar of [false, true]) {
        gpu.vec4Forms = !scalar;
        gpu.write(buf, x);
        const ds = [
          ...ropeForward(gpu, arena, { out: s, x: s, ...args }),
          ...ropeBackward(gpu, arena, { dx: s, dout: s, ...args }),
          ...ropeForward(gpu, arena, { out: s, x: s, ...args }),
        ];
        assert.equal(ds.every((d) => d.kernel.name.endsWith("inplace4")), !scalar);
        gpu.run(ds, "rope_test.v4");
        results.push(await gpu.readF32(buf));
      }
      assert.deepEqual(results[0], results[1], `D=${D}`);
      for (const b of [posBuf, table, buf]) b.destroy();
    }
  } finally {
    gpu.vec4Forms = true;
    arena.destroy();
  }
});
