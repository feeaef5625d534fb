// Next-token kernel tests: greedy argmax (ties, NaN) and inverse-CDF sampling against a CPU walk.
import assert from "node:assert/strict";
import { sampleToken, stepData } from "../../kernels/decode_sample.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { gpuTest, randomArray } from "../helpers.ts";

async function pick(
  gpu: Gpu,
  logits: Float32Array,
  pos: number,
  u: number,
  temperature: number,
  logitScale = 1,
): Promise<{ id: number; ring: Uint32Array }> {
  const V = logits.length, ringLen = 8;
  const arena = new ParamArena(gpu, "decode_sample_test.params", 1024);
  const b = {
    ids: { buffer: gpu.bufferFrom("decode_sample_test.ids", new Uint32Array([0xdeadbeef])) },
    ring: {
      buffer: gpu.bufferFrom("decode_sample_test.ring", new Uint32Array(ringLen).fill(0xdeadbeef)),
    },
    logits: { buffer: gpu.bufferFrom("decode_sample_test.logits", logits) },
    step: { buffer: gpu.bufferFrom("decode_sample_test.step", stepData(pos, u, temperature)) },
  };
  gpu.run(sampleToken(gpu, arena, { ...b, V, ringLen, logitScale }), "decode_sample_test");
  const [ids, ring] = (await gpu.read([b.ids, b.ring])).map((a) => new Uint32Array(a));
  for (const x of Object.values(b)) x.buffer.destroy();
  arena.destroy();
  return { id: ids[0], ring };
}

/** The CPU inverse CDF in f64: first id whose cumulative probability exceeds u. */
function cpuDraw(logits: Float32Array, s: number, u: number): number {
  let mx = -Infinity;
  for (const x of logits) mx = Math.max(mx, x * s);
  const e = Array.from(logits, (x) => Math.exp(x * s - mx));
  const z = e.reduce((a, b) => a + b, 0);
  let c = 0;
  for (let i = 0; i < e.length; i++) {
    c += e[i] / z;
    if (c > u) return i;
  }
  return e.length - 1;
}

gpuTest("decode sample: greedy = first argmax; written to ids and ring[pos+1]", async (gpu) => {
  const V = 1000;
  const logits = randomArray(V, 3, 5);
  logits[517] = 9;
  logits[733] = 9; // a tie: the first index wins
  logits[12] = NaN; // never wins
  const { id, ring } = await pick(gpu, logits, 2, 0.5, 0);
  assert.equal(id, 517);
  assert.equal(ring[3], 517);
  assert.equal(ring[2], 0xdeadbeef);
  // A position past the ring writes ids only.
  const far = await pick(gpu, logits, 50, 0.5, 0);
  assert.equal(far.id, 517);
  assert.ok(far.ring.every((t) => t === 0xdeadbeef));
});

gpuTest("decode sample: temperature draws follow the inverse CDF of the softmax", async (gpu) => {
  const V = 700; // 3 ids per thread chunk, the last chunks empty
  const logits = randomArray(V, 5, 3);
  const us = [0, 0.05, 0.31, 0.5, 0.77, 0.999];
  for (const [t, scale] of [[1, 1], [0.5, 1], [2, 0.4]]) {
    for (const u of us) {
      const { id } = await pick(gpu, logits, 0, u, t, scale);
      const want = cpuDraw(logits, scale / t, u);
      // f32 partial sums may move a CDF boundary across u: accept at most a neighbour of the f64
      // answer (never seen with these draws; logged when it happens).
      assert.ok(Math.abs(id - want) <= 1, `T=${t} u=${u}: got ${id}, want ${want}`);
      if (id !== want) console.log(`  T=${t} u=${u}: boundary case ${id} vs ${want}`);
    }
  }
  // A peaked distribution at a tiny temperature is greedy.
  const peaked = randomArray(V, 6, 1);
  peaked[321] = 5;
  assert.equal((await pick(gpu, peaked, 0, 0.999, 0.01)).id, 321);
});
