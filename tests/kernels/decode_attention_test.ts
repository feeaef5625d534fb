// Decode attention tests: RoPE + KV append and split-K single-query attention against f64 references.
import assert from "node:assert/strict";
import {
  decodeAttention,
  decodeAttentionWorkspaceBytes,
  ropeAppend,
} from "../../kernels/decode_attention.ts";
import { ropeTable } from "../../kernels/rope.ts";
import { stepData } from "../../kernels/decode_sample.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, maxRelErr, randomArray, report } from "../helpers.ts";

const TOL = 1e-4; // a reduction (softmax over up to Lmax keys, dot over D)
const ROPE_TOL = 1e-5; // elementwise: two products and a sum
const ROPE_FLOOR = 1e-3; // relative-error floor for rotated values in [-2, 2)

/** HF rotate-half RoPE of x (H, D) at position `pos`, in f64 with the f32 cos/sin table. */
function rotate(
  x: Float32Array,
  table: Float32Array,
  pos: number,
  H: number,
  D: number,
): Float32Array {
  const half = D / 2, out = new Float32Array(x.length);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < half; i++) {
      const c = table[(pos * half + i) * 2], s = table[(pos * half + i) * 2 + 1];
      const a = x[h * D + i], b = x[h * D + i + half];
      out[h * D + i] = a * c - b * s;
      out[h * D + i + half] = b * c + a * s;
    }
  }
  return out;
}
const FLOOR = 1e-3; // relative-error floor: outputs are O(1) averages of values in [-1, 1)

/** o (Hq, D) = softmax(scale · q·K[0..pos]ᵀ) · V[0..pos] in f64, GQA. */
function reference(
  q: Float32Array,
  kc: Float32Array,
  vc: Float32Array,
  pos: number,
  Hq: number,
  Hkv: number,
  D: number,
  scale: number,
): Float64Array {
  const o = new Float64Array(Hq * D);
  for (let h = 0; h < Hq; h++) {
    const kh = Math.floor(h / (Hq / Hkv));
    const s = new Float64Array(pos + 1);
    let mx = -Infinity;
    for (let j = 0; j <= pos; j++) {
      let acc = 0;
      for (let d = 0; d < D; d++) acc += q[h * D + d] * kc[(j * Hkv + kh) * D + d];
      s[j] = acc * scale;
      mx = Math.max(mx, s[j]);
    }
    let z = 0;
    for (let j = 0; j <= pos; j++) z += s[j] = Math.exp(s[j] - mx);
    for (let j = 0; j <= pos; j++) {
      for (let d = 0; d < D; d++) o[h * D + d] += (s[j] / z) * vc[(j * Hkv + kh) * D + d];
    }
  }
  return o;
}

async function runCase(
  gpu: Gpu,
  name: string,
  c: { Hq: number; Hkv: number; D: number; Lmax: number; positions: number[]; seed: number },
) {
  const { Hq, Hkv, D, Lmax } = c;
  const scale = 1 / Math.sqrt(D);
  const kc = randomArray(Lmax * Hkv * D, c.seed, 1);
  const vc = randomArray(Lmax * Hkv * D, c.seed + 1, 1);
  const kNew = randomArray(Hkv * D, c.seed + 2, 1);
  const vNew = randomArray(Hkv * D, c.seed + 3, 1);
  const q0 = randomArray(Hq * D, c.seed + 4, 2);
  const table = ropeTable(D, 10000, null, Lmax);
  const arena = new ParamArena(gpu, "decode_attention_test.params", 4096);
  const bufs = {
    kCache: { buffer: gpu.bufferFrom("decode_attention_test.kc", kc) },
    vCache: { buffer: gpu.bufferFrom("decode_attention_test.vc", vc) },
    k: { buffer: gpu.bufferFrom("decode_attention_test.k", kNew) },
    v: { buffer: gpu.bufferFrom("decode_attention_test.v", vNew) },
    q: { buffer: gpu.bufferFrom("decode_attention_test.q", q0) },
    table: { buffer: gpu.bufferFrom("decode_attention_test.table", table) },
    o: { buffer: gpu.buffer("decode_attention_test.o", Hq * D * 4) },
    step: { buffer: gpu.buffer("decode_attention_test.step", 16) },
    workspace: {
      buffer: gpu.buffer("decode_attention_test.ws", decodeAttentionWorkspaceBytes(Hq, D, Lmax)),
    },
  };
  const shape = { Hq, Hkv, D, Lmax };
  const append = ropeAppend(gpu, arena, { ...bufs, ...shape });
  const attend = decodeAttention(gpu, arena, { ...bufs, ...shape, scale });
  for (const pos of c.positions) {
    // Reference: q and k rotated at `pos` (f64 on the f32 table), the cache after the append.
    const q = rotate(q0, table, pos, Hq, D);
    const rk = kc.slice(), rv = vc.slice();
    rk.set(rotate(kNew, table, pos, Hkv, D), pos * Hkv * D);
    rv.set(vNew, pos * Hkv * D);
    gpu.write(bufs.q.buffer, q0);
    gpu.write(bufs.kCache.buffer, kc);
    gpu.write(bufs.vCache.buffer, vc);
    gpu.write(bufs.o.buffer, new Float32Array(Hq * D).fill(NaN));
    gpu.write(
      bufs.workspace.buffer,
      new Float32Array(decodeAttentionWorkspaceBytes(Hq, D, Lmax) / 4).fill(NaN),
    );
    gpu.write(bufs.step.buffer, stepData(pos, 0, 0));
    gpu.run([...append, ...attend], "decode_attention_test");
    const [o, gq, gk, gv] = (await gpu.read([bufs.o, bufs.q, bufs.kCache, bufs.vCache])).map((a) =>
      new Float32Array(a)
    );
    const ropeErr = Math.max(maxRelErr(gq, q, ROPE_FLOOR), maxRelErr(gk, rk, ROPE_FLOOR));
    report(`${name} pos ${pos} RoPE of q, k (floor ${ROPE_FLOOR})`, ropeErr, ROPE_TOL);
    assert.ok(ropeErr < ROPE_TOL, `${name} pos ${pos}: rope ${ropeErr}`);
    assert.deepEqual(gv, rv, `${name} pos ${pos}: V cache after append`);
    // Rows other than `pos` are untouched.
    for (let j = 0; j < Lmax; j++) {
      if (j === pos) continue;
      const a = j * Hkv * D, b = a + Hkv * D;
      assert.deepEqual(gk.subarray(a, b), kc.subarray(a, b), `K row ${j} changed`);
    }
    const ref = reference(q, rk, rv, pos, Hq, Hkv, D, scale);
    const err = maxRelErr(o, ref, FLOOR);
    report(`${name} pos ${pos} (floor ${FLOOR})`, err, TOL);
    assert.ok(err < TOL, `${name} pos ${pos}: ${err}`);
  }
  for (const b of Object.values(bufs)) b.buffer.destroy();
  arena.destroy();
}

gpuTest(
  "decode attention: RoPE + append, GQA over 1, 64, 65 and 150 keys (chunk edges)",
  async (gpu) => {
    await runCase(gpu, "gqa D16", {
      Hq: 4,
      Hkv: 2,
      D: 16,
      Lmax: 150,
      positions: [0, 63, 64, 149],
      seed: 1,
    });
  },
);

gpuTest("decode attention: head dim 80 > 64 threads, MHA, 1 kv head MQA", async (gpu) => {
  await runCase(gpu, "mha D80", { Hq: 3, Hkv: 3, D: 80, Lmax: 70, positions: [5, 69], seed: 7 });
  await runCase(gpu, "mqa D8", { Hq: 4, Hkv: 1, D: 8, Lmax: 40, positions: [39], seed: 9 });
});
