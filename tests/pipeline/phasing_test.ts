// Tests of pipeline/phasing.ts: bottom/top halves by response length, 1 % replay, files written verbatim.
import assert from "node:assert/strict";
import { join } from "node:path";
import { phaseDataset, splitByDifficulty } from "../../pipeline/phasing.ts";
import { UserError } from "../../pipeline/errors.ts";
import { randomArray } from "../helpers.ts";

Deno.test("phasing: bottom 50% / top 50% + 1% replay of the short half", () => {
  const n = 1001;
  const lens = Array.from(randomArray(n, 3, 1), (x) => Math.round((x + 1) * 200));
  const s = splitByDifficulty(lens, { seed: 5 });
  assert.equal(s.phase1.length, 500);
  assert.equal(s.replay.length, 5); // ⌈1% of 500⌉
  assert.equal(s.phase2.length, 501 + 5);
  const long = s.phase2.filter((i) => !s.replay.includes(i));
  assert.equal(long.length, 501);
  // Every short sample is no longer than every long one; together they cover all samples once.
  const maxShort = Math.max(...s.phase1.map((i) => lens[i]));
  const minLong = Math.min(...long.map((i) => lens[i]));
  assert.ok(maxShort <= minLong, `${maxShort} ≤ ${minLong}`);
  assert.equal(s.threshold, minLong);
  assert.deepEqual(
    [...s.phase1, ...long].sort((a, b) => a - b),
    Array.from({ length: n }, (_, i) => i),
  );
  for (const r of s.replay) assert.ok(s.phase1.includes(r), "replay comes from the short half");
  assert.deepEqual(s.phase1, [...s.phase1].sort((a, b) => a - b), "index order");
  console.log(`  threshold ${s.threshold} loss tokens, replay ${JSON.stringify(s.replay)}`);

  assert.deepEqual(splitByDifficulty(lens, { seed: 5 }), s, "deterministic");
  assert.notDeepEqual(splitByDifficulty(lens, { seed: 6 }).replay, s.replay, "seeded draw");
  assert.equal(splitByDifficulty(lens, { replayFraction: 0 }).replay.length, 0);
  assert.throws(() => splitByDifficulty(lens, { replayFraction: 2 }), UserError);
});

Deno.test("phasing: ties are split by index; tiny datasets", () => {
  const s = splitByDifficulty([7, 7, 7, 7], {});
  assert.deepEqual(s.phase1, [0, 1]);
  assert.deepEqual(s.phase2.filter((i) => !s.replay.includes(i)), [2, 3]);
  assert.equal(s.replay.length, 1);
  const one = splitByDifficulty([3], {});
  assert.deepEqual(one.phase1, []);
  assert.deepEqual(one.phase2, [0]);
});

Deno.test("phasing: phaseDataset writes the two phases of a tokenized file verbatim", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const input = join(dir, "train.jsonl");
    const lines = Array.from({ length: 10 }, (_, i) => {
      const loss = (i * 7) % 10 + 1;
      return JSON.stringify({ input_ids: [1, 2], labels: [-100, 2], len: 2, loss_tokens: loss });
    });
    await Deno.writeTextFile(input, lines.join("\n") + "\n");
    const r = await phaseDataset({ input, runDir: dir, name: "train", seed: 1 });
    assert.equal(r.phase1, 5);
    assert.equal(r.replay, 1);
    assert.equal(r.phase2, 6);
    const p1 = (await Deno.readTextFile(r.phase1Path)).trimEnd().split("\n");
    const p2 = (await Deno.readTextFile(r.phase2Path)).trimEnd().split("\n");
    for (const l of [...p1, ...p2]) assert.ok(lines.includes(l), "verbatim line");
    assert.ok(p1.every((l) => JSON.parse(l).loss_tokens <= 5));
    assert.equal(p2.filter((l) => JSON.parse(l).loss_tokens > 5).length, 5);
    await Deno.writeTextFile(input, "{}\n");
    await assert.rejects(() => phaseDataset({ input, runDir: dir, name: "x" }), UserError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
