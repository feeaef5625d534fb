// SVG plots: round ticks, log ticks, tick labels, decimation, pixel mapping, gaps, escaping, well-formedness.
import assert from "node:assert/strict";
import {
  decimate,
  escapeXml,
  formatTick,
  logTicks,
  niceTicks,
  plotArea,
  plotSvg,
} from "../../pipeline/svg_plot.ts";

/** Every open tag is closed in order (a small XML well-formedness check; no DOMParser in Deno). */
function assertWellFormed(svg: string): void {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)[^>]*?(\/?)>/g)) {
    const [, close, name, self] = m;
    if (self) continue;
    if (close) assert.equal(stack.pop(), name, `</${name}> closes the wrong tag`);
    else stack.push(name);
  }
  assert.deepEqual(stack, [], "unclosed tags");
  assert.doesNotMatch(svg.replace(/&(lt|gt|amp|quot|#39);/g, ""), /&/, "a raw & in the SVG");
}

/** The [x, y] pixel points of every subpath of the first `<path d=...>`. */
function pathPoints(svg: string, nth = 0): [number, number][][] {
  const d = [...svg.matchAll(/<path d="([^"]+)"/g)][nth][1];
  return d.split("M").filter(Boolean).map((sub) =>
    sub.split("L").map((p) => p.split(",").map(Number) as [number, number])
  );
}

Deno.test("svg_plot: niceTicks covers the range with 1/2/2.5/5 × 10^k steps", () => {
  const cases: [number, number][] = [[0, 1], [0.13, 0.97], [-3, 17], [1e-5, 3e-5], [1200, 98000], [
    5,
    5,
  ]];
  for (const [lo, hi] of cases) {
    const t = niceTicks(lo, hi, 5);
    assert.ok(t[0] <= lo && t.at(-1)! >= hi, `${t} covers [${lo}, ${hi}]`);
    assert.ok(t.length >= 2 && t.length <= 12, `${t.length} ticks for [${lo}, ${hi}]`);
    const step = t[1] - t[0];
    const mant = step / 10 ** Math.floor(Math.log10(step));
    assert.ok([1, 2, 2.5, 5].some((m) => Math.abs(mant - m) < 1e-6), `step ${step}`);
    for (let i = 1; i < t.length; i++) assert.ok(Math.abs(t[i] - t[i - 1] - step) < step * 1e-6);
  }
  assert.deepEqual(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(1e-5, 3e-5, 4), [1e-5, 1.5e-5, 2e-5, 2.5e-5, 3e-5]);
});

Deno.test("svg_plot: logTicks bracket the data with decades", () => {
  // The first tick is the largest one <= min, the last the smallest one >= max.
  assert.deepEqual(logTicks(0.003, 0.2), [0.003, 0.01, 0.03, 0.1, 0.3]);
  assert.deepEqual(logTicks(0.004, 0.2), [0.003, 0.01, 0.03, 0.1, 0.3]);
  const t = logTicks(2e-5, 3e-2);
  assert.ok(t[0] <= 2e-5 && t.at(-1)! >= 3e-2);
  const one = logTicks(3, 4);
  assert.ok(one[0] <= 3 && one.at(-1)! >= 4, `${one}`);
});

Deno.test("svg_plot: formatTick and escapeXml", () => {
  assert.equal(formatTick(0), "0");
  assert.equal(formatTick(1200), "1200");
  assert.equal(formatTick(25000), "25k");
  assert.equal(formatTick(3_000_000), "3M");
  assert.equal(formatTick(0.0003), "3e-4");
  assert.equal(formatTick(2.5), "2.5");
  assert.equal(formatTick(0.1 + 0.2), "0.3");
  assert.equal(escapeXml(`a<b>&"c'`), "a&lt;b&gt;&amp;&quot;c&#39;");
});

Deno.test("svg_plot: decimate caps the points and keeps every bucket's extremes", () => {
  const n = 10_000;
  const x = Array.from({ length: n }, (_, i) => i);
  const y = x.map((i) => Math.sin(i / 50));
  y[4321] = 99; // a spike
  y[777] = -99;
  const d = decimate(x, y, 400);
  assert.ok(d.x.length <= 400, `${d.x.length} points`);
  assert.ok(d.y.includes(99) && d.y.includes(-99), "spikes survive");
  for (let i = 1; i < d.x.length; i++) assert.ok(d.x[i] > d.x[i - 1], "x stays increasing");
  const short = decimate([1, 2, 3], [4, 5, 6], 400);
  assert.deepEqual(short, { x: [1, 2, 3], y: [4, 5, 6] });
});

Deno.test("svg_plot: points land on the right pixels; NaN breaks the line", () => {
  const W = 600, H = 300;
  const svg = plotSvg([{ name: "a", x: [0, 5, 10], y: [0, 50, 100] }], { width: W, height: H });
  assertWellFormed(svg);
  const a = plotArea(W, H);
  // niceTicks(0, 10) = 0..10 and niceTicks(0, 100) = 0..100: the corners are exact.
  const [pts] = pathPoints(svg);
  const want = [[a.left, a.bottom], [(a.left + a.right) / 2, (a.top + a.bottom) / 2], [
    a.right,
    a.top,
  ]];
  pts.forEach((p, i) => {
    assert.ok(Math.abs(p[0] - want[i][0]) <= 0.05 && Math.abs(p[1] - want[i][1]) <= 0.05, `${p}`);
  });
  const gap = plotSvg([{ name: "g", x: [0, 1, 2, 3, 4], y: [1, 2, NaN, 4, 5] }]);
  const subs = pathPoints(gap);
  assert.equal(subs.length, 2, "a NaN splits the line in two");
  assert.deepEqual(subs.map((s) => s.length), [2, 2]);
});

Deno.test("svg_plot: log axis skips non-positive values; legend, markers, labels, no data", () => {
  const svg = plotSvg([
    { name: "lr <1e-3> & co", x: [1, 2, 3, 4], y: [1e-3, 0, 1e-2, 1e-1] },
    { name: "b", x: [1, 4], y: [2e-3, 5e-2], mode: "points", labels: ["first", "last"] },
  ], { logY: true, markers: [{ x: 2.5, label: "probe" }], title: "t & t", yLabel: "y" });
  assertWellFormed(svg);
  assert.match(svg, /lr &lt;1e-3&gt; &amp; co/);
  assert.equal(pathPoints(svg).length, 2, "y = 0 breaks the line on a log axis");
  assert.equal((svg.match(/<circle /g) ?? []).length, 3, "2 points + 1 legend dot");
  assert.match(svg, />first</);
  assert.match(svg, />probe</);
  assert.match(svg, /stroke-dasharray="4 3"/, "the marker line");
  const empty = plotSvg([{ name: "none", x: [], y: [] }], { title: "empty" });
  assertWellFormed(empty);
  assert.match(empty, /no data/);
});
