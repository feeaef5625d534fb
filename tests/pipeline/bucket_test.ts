// Tests of pipeline/bucket.ts: every sample once, capacity, structure, batch size, determinism, figures.
import assert from "node:assert/strict";
import {
  type BucketOptions,
  type BucketPlan,
  microBatch,
  planBuckets,
  planToNested,
  readBuckets,
  writeBuckets,
} from "../../pipeline/bucket.ts";
import { UserError } from "../../pipeline/errors.ts";
import { randomArray } from "../helpers.ts";

/** Lengths with a long tail, like chat data: 16 … 4096, median ≈ 300. */
function chatLengths(n: number, seed: number, max = 4096): Uint32Array {
  const u = randomArray(2 * n, seed, 1);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const a = (u[2 * i] + 1) / 2 + 1e-9, b = (u[2 * i + 1] + 1) / 2;
    const z = Math.sqrt(-2 * Math.log(a)) * Math.cos(2 * Math.PI * b);
    out[i] = Math.max(16, Math.min(max, Math.round(Math.exp(5.7 + 0.6 * z))));
  }
  return out;
}

/** Check a plan against its options with plain loops; returns figures recomputed from scratch. */
function verify(plan: BucketPlan, o: BucketOptions) {
  const C = o.capacity, N = o.ranks, pad = o.padToLongest ?? false;
  const seen = new Uint8Array(o.lengths.length);
  let micro = 0, real = 0;
  const perStep: number[] = [];
  const nested = planToNested(plan);
  assert.equal(nested.length, plan.summary.steps);
  for (let s = 0; s < nested.length; s++) {
    assert.equal(nested[s].length, N, "every rank present");
    const M = nested[s][0].length;
    let inStep = 0;
    for (let r = 0; r < N; r++) {
      assert.equal(nested[s][r].length, M, `step ${s}: every rank runs M micro-batches`);
      for (let m = 0; m < M; m++) {
        const mb = nested[s][r][m];
        assert.deepEqual(Array.from(microBatch(plan, s, r, m)), mb);
        let sum = 0, longest = 0;
        for (const i of mb) {
          assert.equal(seen[i], 0, `sample ${i} twice`);
          seen[i] = 1;
          sum += o.lengths[i];
          longest = Math.max(longest, o.lengths[i]);
        }
        assert.ok((pad ? longest * mb.length : sum) <= C, `micro-batch over capacity`);
        micro++;
        real += sum;
        inStep += mb.length;
      }
    }
    perStep.push(inStep);
  }
  const over: number[] = [];
  for (let i = 0; i < o.lengths.length; i++) {
    if (o.lengths[i] > C) {
      assert.equal(seen[i], 0);
      over.push(i);
    } else assert.equal(seen[i], 1, `sample ${i} missing`);
  }
  assert.equal(plan.summary.overCapacity, over.length);
  assert.deepEqual(plan.summary.overCapacityIndices, over.slice(0, 20));
  assert.equal(plan.summary.microBatches, micro);
  assert.equal(plan.summary.realTokens, real);
  assert.ok(Math.abs(plan.summary.efficiency - real / (C * micro)) < 1e-12);
  assert.equal(plan.summary.lastStepSamples, perStep[perStep.length - 1] ?? 0);
  return { perStep, efficiency: real / (C * micro) };
}

Deno.test("bucket: every sample exactly once, capacity kept, M micro-batches per rank (grid)", () => {
  let cases = 0;
  for (const pad of [false, true]) {
    for (const N of [1, 3, 8]) {
      for (const B of [1, 7, 64, 1000]) {
        const lengths = chatLengths(700, 11 + N + B, 1500);
        lengths[5] = 2000; // over capacity
        const o: BucketOptions = {
          lengths,
          batchSize: B,
          ranks: N,
          capacity: 1024,
          seed: 3,
          epoch: 1,
          padToLongest: pad,
        };
        const plan = planBuckets(o);
        const { perStep } = verify(plan, o);
        assert.ok(plan.summary.overCapacity >= 1);
        // Each step lands within 10% of its target t = (s+1)·B − planned, so the running total
        // stays within 0.1·B/(1 − 0.1) of (s+1)·B and a step within twice that of B.
        let planned = 0;
        perStep.slice(0, -1).forEach((n, s) => {
          planned += n;
          assert.ok(
            Math.abs(planned - (s + 1) * B) <= B / 9 + 1,
            `B ${B}: running total ${planned}`,
          );
          assert.ok(Math.abs(n - B) <= (2 * B) / 9 + 1, `B ${B}: step of ${n}`);
        });
        cases++;
      }
    }
  }
  console.log(`  ${cases} configurations verified`);
});

Deno.test("bucket: deterministic per (seed, epoch); epochs reshuffle", () => {
  const lengths = chatLengths(2000, 5);
  const o = { lengths, batchSize: 128, ranks: 2, capacity: 4096, seed: 9, epoch: 0 };
  const a = planBuckets(o), b = planBuckets(o), c = planBuckets({ ...o, epoch: 1 });
  assert.deepEqual(a.order, b.order);
  assert.deepEqual(a.mbStart, b.mbStart);
  assert.notDeepEqual(a.order, c.order);
  assert.notDeepEqual(a.order, planBuckets({ ...o, seed: 10 }).order);
});

Deno.test("bucket: efficiency ≥ 98% and samples/step around B on chat-like lengths (capacity 4096)", () => {
  const lengths = chatLengths(20000, 21);
  for (const [B, N] of [[128, 1], [512, 2], [3840, 8]]) {
    const o = { lengths, batchSize: B, ranks: N, capacity: 4096, seed: 1, epoch: 0 };
    const plan = planBuckets(o);
    const { perStep, efficiency } = verify(plan, o);
    const s = plan.summary;
    const full = perStep.slice(0, -1);
    const mean = full.reduce((x, y) => x + y, 0) / full.length;
    console.log(
      `  B ${B} N ${N}: efficiency ${(100 * efficiency).toFixed(2)}% (target ≥ 98%), ` +
        `samples/step ${s.samplesPerStep.min}–${s.samplesPerStep.max} mean ${mean.toFixed(1)}, ` +
        `micro-batches/rank ${s.microBatchesPerStep.min}–${s.microBatchesPerStep.max}, ` +
        `rank imbalance ${s.rankImbalance.toFixed(3)}`,
    );
    assert.ok(efficiency >= 0.98, `efficiency ${efficiency}`);
    assert.ok(Math.abs(mean - B) <= 0.02 * B, `mean samples/step ${mean}`);
    assert.equal(s.samplesPerStep.min, Math.min(...full));
    assert.equal(s.samplesPerStep.max, Math.max(...full));
    assert.ok(s.rankImbalance < 1.05);
  }
});

Deno.test("bucket: padding-aware mode costs longest × count and groups similar lengths", () => {
  const lengths = chatLengths(5000, 4);
  const o = { lengths, batchSize: 1000, ranks: 2, capacity: 4096, seed: 2, epoch: 0 };
  const packed = planBuckets(o), padded = planBuckets({ ...o, padToLongest: true });
  verify(padded, { ...o, padToLongest: true });
  const s = padded.summary;
  console.log(
    `  padded: efficiency ${(100 * s.efficiency).toFixed(2)}%, padding efficiency ` +
      `${(100 * s.paddingEfficiency).toFixed(2)}% (packed: ${
        (100 * packed.summary.efficiency).toFixed(2)
      }%)`,
  );
  assert.ok(s.costTokens >= s.realTokens);
  assert.ok(s.paddingEfficiency > 0.97, "sorted packing keeps padding low");
  assert.equal(packed.summary.paddingEfficiency, 1);
});

Deno.test("bucket: datasets smaller than one batch still train (one step, empty micro-batches allowed)", () => {
  const o = {
    lengths: [30, 50, 20, 10, 40],
    batchSize: 64,
    ranks: 4,
    capacity: 100,
    seed: 0,
    epoch: 0,
  };
  const plan = planBuckets(o);
  verify(plan, o);
  assert.equal(plan.summary.steps, 1);
  assert.equal(plan.summary.planned, 5);
  assert.equal(plan.summary.lastStepSamples, 5);
  const nonEmpty = planToNested(plan)[0].flat().filter((mb) => mb.length > 0).length;
  assert.ok(nonEmpty >= 2, "spread over ranks");
  const empty = planBuckets({ ...o, lengths: [] });
  assert.equal(empty.summary.steps, 0);
  assert.equal(empty.summary.microBatches, 0);
});

Deno.test("bucket: B smaller than one round takes exactly B per step", () => {
  const lengths = new Uint32Array(100).fill(10);
  const o = { lengths, batchSize: 8, ranks: 2, capacity: 1000, seed: 0, epoch: 0 };
  const plan = planBuckets(o);
  const { perStep } = verify(plan, o);
  assert.deepEqual(perStep, [...new Array(12).fill(8), 4]);
  // Balanced: both ranks get 4 samples.
  for (const step of planToNested(plan).slice(0, -1)) {
    assert.deepEqual(step.map((r) => r.flat().length), [4, 4]);
  }
});

Deno.test("bucket: buckets.json round trip and bad arguments", async () => {
  const lengths = chatLengths(300, 8);
  const plans = [0, 1].map((epoch) =>
    planBuckets({ lengths, batchSize: 32, ranks: 2, capacity: 2048, seed: 4, epoch })
  );
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/buckets.json`;
    await writeBuckets(path, plans);
    const back = await readBuckets(path);
    assert.equal(back.epochs.length, 2);
    for (let e = 0; e < 2; e++) {
      assert.deepEqual(back.epochs[e].steps, planToNested(plans[e]));
      assert.deepEqual(back.epochs[e].summary, plans[e].summary);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const o = { lengths, batchSize: 32, ranks: 2, capacity: 2048, seed: 4, epoch: 0 };
  assert.throws(() => planBuckets({ ...o, batchSize: 0 }), UserError);
  assert.throws(() => planBuckets({ ...o, ranks: 1.5 }), UserError);
  assert.throws(() => planBuckets({ ...o, capacity: -1 }), UserError);
  assert.throws(() => planBuckets({ ...o, lengths: [1, NaN] }), UserError);
});
