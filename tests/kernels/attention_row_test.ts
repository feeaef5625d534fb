// The generated row-per-lane attention kernels: the checked-in WGSL matches its generator.
// (Their values against the f64 reference run in attention_test.ts as the "row" variant.)
import assert from "node:assert/strict";
import { attentionRowSource, ROW_MAX_HEAD_DIM } from "../../kernels/attention_row_gen.ts";
import { attentionRowTakes } from "../../kernels/attention.ts";

Deno.test("attention_row.wgsl is the output of attention_row_gen.ts (run it after an edit)", () => {
  const file = Deno.readTextFileSync(new URL("../../kernels/attention_row.wgsl", import.meta.url));
  assert.equal(file, attentionRowSource());
});

Deno.test("the row kernels take head dims up to ROW_MAX_HEAD_DIM, larger ones fall back", () => {
  assert.equal(attentionRowTakes(1), true);
  assert.equal(attentionRowTakes(ROW_MAX_HEAD_DIM), true);
  assert.equal(attentionRowTakes(ROW_MAX_HEAD_DIM + 1), false);
});
