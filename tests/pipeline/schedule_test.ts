// LR schedules against hand-computed values (transformers' get_*_schedule_with_warmup convention).
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import { lrAt, lrFactorAt, warmupStepsFor } from "../../pipeline/schedule.ts";

// These are closed-form values computed by hand; 1e-12 absolute is float64 round-off.
const TOL = 1e-12;

function near(actual: number, expected: number, what: string): void {
  if (Math.abs(actual - expected) > TOL) {
    throw new Error(`${what}: got ${actual}, expected ${expected} (tolerance ${TOL})`);
  }
}

Deno.test("constant: full lr from step 0 without warmup", () => {
  for (const s of [0, 1, 50, 99]) {
    near(lrAt(s, 100, { lr: 2e-5, schedule: "constant" }), 2e-5, `step ${s}`);
  }
});

Deno.test("warmup: step s of W runs at s/W (step 0 at lr 0, as LambdaLR + lr_lambda(s))", () => {
  const o = { lr: 1, schedule: "constant" as const, warmupSteps: 4 };
  const got = [0, 1, 2, 3, 4, 5, 99].map((s) => lrAt(s, 100, o));
  assertEquals(got, [0, 0.25, 0.5, 0.75, 1, 1, 1]);
});

Deno.test("linear: warmup 2 then decay to 0 at step T", () => {
  const o = { lr: 1, schedule: "linear" as const, warmupSteps: 2 };
  // after warmup: (T - s) / (T - W) with T = 10, W = 2
  const expected: [number, number][] = [
    [0, 0],
    [1, 0.5],
    [2, 1],
    [6, 0.5],
    [9, 0.125],
    [10, 0],
    [12, 0],
  ];
  for (const [s, e] of expected) near(lrFactorAt(s, 10, o), e, `step ${s}`);
});

Deno.test("cosine: half-cosine from lr to min_lr_ratio·lr", () => {
  const o = { lr: 2, schedule: "cosine" as const };
  near(lrAt(0, 10, o), 2, "step 0");
  near(lrAt(2, 10, o), 2 * 0.5 * (1 + Math.cos(0.2 * Math.PI)), "step 2"); // 1.8090169943749475
  near(lrAt(2, 10, o), 1.8090169943749475, "step 2 (decimal)");
  near(lrAt(5, 10, o), 1, "step 5");
  near(lrAt(10, 10, o), 0, "step 10");
  near(lrAt(15, 10, o), 0, "past the end stays at the floor");
  const m = { ...o, minLrRatio: 0.1 };
  near(lrAt(5, 10, m), 2 * (0.1 + 0.9 * 0.5), "min 0.1, step 5");
  near(lrAt(10, 10, m), 0.2, "min 0.1, step 10");
  // With warmup 4 of 12: progress (s - 4) / 8.
  const w = { lr: 1, schedule: "cosine" as const, warmupSteps: 4 };
  near(lrAt(2, 12, w), 0.5, "warmup half");
  near(lrAt(8, 12, w), 0.5, "half-way through the decay");
});

Deno.test("linear with a floor", () => {
  const o = { lr: 1, schedule: "linear" as const, minLrRatio: 0.2 };
  near(lrAt(5, 10, o), 0.2 + 0.8 * 0.5, "step 5");
  near(lrAt(10, 10, o), 0.2, "step 10");
});

Deno.test("warmup ratio: ceil(T·r) steps, warmup_steps wins when > 0", () => {
  assertEquals(warmupStepsFor(100, { lr: 1, schedule: "linear", warmupRatio: 0.03 }), 3);
  assertEquals(warmupStepsFor(10, { lr: 1, schedule: "linear", warmupRatio: 0.03 }), 1);
  assertEquals(
    warmupStepsFor(100, { lr: 1, schedule: "linear", warmupSteps: 7, warmupRatio: 0.5 }),
    7,
  );
  const o = { lr: 1, schedule: "linear" as const, warmupRatio: 0.03 };
  near(lrAt(1, 100, o), 1 / 3, "step 1 of a 3-step warmup");
  near(lrAt(3, 100, o), 1, "first step after warmup");
  near(lrAt(50, 100, o), 50 / 97, "decay (T - s) / (T - W)");
});

Deno.test("bad steps throw", () => {
  assertThrows(() => lrAt(-1, 10, { lr: 1, schedule: "constant" }), RangeError);
  assertThrows(() => lrAt(1.5, 10, { lr: 1, schedule: "constant" }), RangeError);
});
