// Self-contained SVG charts (lines and scatter points, linear or log axes, legend) for run and sweep reports.

/** One series of a plot: points (x[i], y[i]); non-finite points break the line and are skipped. */
export interface Series {
  name: string;
  x: ArrayLike<number>;
  y: ArrayLike<number>;
  /** CSS colour; default: the palette colour of the series' position. */
  color?: string;
  /** "line" (default), "points" (scatter) or "both". */
  mode?: "line" | "points" | "both";
  /** Dashed line. */
  dashed?: boolean;
  /** Text drawn beside each point (points/both modes), e.g. member names on a scatter plot. */
  labels?: string[];
}

/** A vertical marker line (e.g. the end of a sweep's probe window). */
export interface Marker {
  x: number;
  label?: string;
}

/** Options of {@link plotSvg}. */
export interface PlotOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  /** Pixel size of the whole image (the legend adds rows below). Default 720 × 360. */
  width?: number;
  height?: number;
  /** Log-10 y axis; points with y <= 0 are skipped. */
  logY?: boolean;
  /** Log-10 x axis; points with x <= 0 are skipped. */
  logX?: boolean;
  markers?: Marker[];
  /** Hide the legend (default: shown when there are 2 or more named series). */
  legend?: boolean;
  /** Most points drawn per line series; longer ones keep each bucket's min and max. Default 1200. */
  maxPoints?: number;
}

/** Ten distinct colours (Tableau 10), reused in order. */
export const PALETTE = [
  "#4e79a7",
  "#f28e2b",
  "#e15759",
  "#76b7b2",
  "#59a14f",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
] as const;

/** Escape text for an SVG/XML text node or attribute. */
export function escapeXml(s: string): string {
  return s.replace(
    /[<>&"']/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&#39;" })[c]!,
  );
}

/**
 * About `count` round tick values (1, 2 or 5 × 10^k steps) covering [min, max]; the first tick is
 * <= min and the last >= max. A degenerate range is widened around its value.
 */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  if (min > max) [min, max] = [max, min];
  if (min === max) {
    const d = min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= d;
    max += d;
  }
  const raw = (max - min) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw * 0.999) ?? 10 * mag;
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  // Rounded to the step's precision, so 3 × 1e-5 is 3e-5 and not 2.9999999999999997e-5.
  const digits = Math.min(100, Math.max(0, 2 - Math.floor(Math.log10(step))));
  const out: number[] = [];
  for (let i = 0; lo + i * step <= hi + step * 1e-6 && i < 100; i++) {
    const v = Number((lo + i * step).toFixed(digits));
    out.push(v === 0 ? 0 : v);
  }
  return out;
}

/** Decade ticks (10^k) covering [min, max] (both > 0), plus 2× and 5× when there are few decades. */
export function logTicks(min: number, max: number): number[] {
  if (!(min > 0) || !(max > 0)) return [1, 10];
  if (min > max) [min, max] = [max, min];
  const lo = Math.floor(Math.log10(min) + 1e-9);
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(max) - 1e-9));
  const decades = hi - lo;
  const mults = decades <= 1 ? [1, 2, 5] : decades <= 3 ? [1, 3] : [1];
  const out: number[] = [];
  for (let k = lo; k <= hi; k++) {
    for (const m of mults) {
      const v = m * 10 ** k;
      if (k === hi && m > 1) break;
      out.push(Number(v.toPrecision(6)));
    }
  }
  // Trim to the ticks that bracket the data.
  while (out.length > 2 && out[1] <= min) out.shift();
  while (out.length > 2 && out[out.length - 2] >= max) out.pop();
  return out;
}

/** A short label for a tick value: 1200 → "1.2k", 0.0003 → "3e-4", 2.5 → "2.5". */
export function formatTick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6) return trimNum(v / 1e6) + "M";
  if (a >= 1e4) return trimNum(v / 1e3) + "k";
  if (a < 1e-3) {
    const [m, e] = v.toExponential(1).split("e");
    return `${m.replace(/\.0$/, "")}e${Number(e)}`;
  }
  return trimNum(v);
}

function trimNum(v: number): string {
  return String(Number(v.toPrecision(4)));
}

/**
 * Reduce a series to at most ~`max` points for drawing: when longer, x is cut into max/2 equal
 * buckets and each bucket keeps its first point plus its min and max y (spikes survive).
 */
export function decimate(
  x: ArrayLike<number>,
  y: ArrayLike<number>,
  max: number,
): { x: number[]; y: number[] } {
  const n = Math.min(x.length, y.length);
  if (n <= max) {
    return {
      x: Array.from({ length: n }, (_, i) => x[i]),
      y: Array.from({ length: n }, (_, i) => y[i]),
    };
  }
  const buckets = Math.max(1, Math.floor(max / 2));
  const per = n / buckets;
  const ox: number[] = [], oy: number[] = [];
  for (let b = 0; b < buckets; b++) {
    const s = Math.floor(b * per), e = Math.min(n, Math.floor((b + 1) * per));
    let lo = -1, hi = -1;
    for (let i = s; i < e; i++) {
      if (!Number.isFinite(y[i])) continue;
      if (lo < 0 || y[i] < y[lo]) lo = i;
      if (hi < 0 || y[i] > y[hi]) hi = i;
    }
    const keep = [...new Set([lo, hi].filter((i) => i >= 0))].sort((a, b) => a - b);
    for (const i of keep) {
      ox.push(x[i]);
      oy.push(y[i]);
    }
  }
  return { x: ox, y: oy };
}

interface Axis {
  min: number;
  max: number;
  log: boolean;
  ticks: number[];
}

function makeAxis(values: number[], log: boolean, pad: boolean): Axis {
  const v = values.filter((a) => Number.isFinite(a) && (!log || a > 0));
  if (!v.length) return { min: log ? 1 : 0, max: log ? 10 : 1, log, ticks: log ? [1, 10] : [0, 1] };
  let min = Math.min(...v), max = Math.max(...v);
  if (log) {
    const ticks = logTicks(min, max);
    return { min: Math.min(min, ticks[0]), max: Math.max(max, ticks.at(-1)!), log, ticks };
  }
  if (pad && min === max) {
    min -= Math.abs(min) * 0.1 || 1;
    max += Math.abs(max) * 0.1 || 1;
  }
  const ticks = niceTicks(min, max, 5);
  return { min: ticks[0], max: ticks.at(-1)!, log, ticks };
}

function scale(a: Axis, v: number, p0: number, p1: number): number {
  const t = a.log
    ? (Math.log10(v) - Math.log10(a.min)) / (Math.log10(a.max) - Math.log10(a.min))
    : (v - a.min) / (a.max - a.min);
  return p0 + t * (p1 - p0);
}

function f(n: number): string {
  return String(Math.round(n * 10) / 10);
}

/** The pixel rectangle of the plotting area for an image of the given size (exported for tests). */
export function plotArea(width: number, height: number): {
  left: number;
  right: number;
  top: number;
  bottom: number;
} {
  return { left: 64, right: width - 16, top: 30, bottom: height - 44 };
}

/**
 * Draw `series` as one SVG image (a string): axes with round ticks, grid lines, optional log
 * scales, markers and a legend under the plot. Non-finite points are skipped (a line breaks there);
 * an empty plot says "no data".
 */
export function plotSvg(series: Series[], o: PlotOptions = {}): string {
  const width = o.width ?? 720, height = o.height ?? 360;
  const maxPoints = o.maxPoints ?? 1200;
  const drawn = series.map((s, i) => {
    const mode = s.mode ?? "line";
    const d = mode === "points" ? decimate(s.x, s.y, Infinity) : decimate(s.x, s.y, maxPoints);
    return { ...s, mode, x: d.x, y: d.y, color: s.color ?? PALETTE[i % PALETTE.length] };
  });
  const ok = (x: number, y: number) =>
    Number.isFinite(x) && Number.isFinite(y) && (!o.logX || x > 0) && (!o.logY || y > 0);
  const xs: number[] = [], ys: number[] = [];
  for (const s of drawn) {
    for (let i = 0; i < s.x.length; i++) {
      if (ok(s.x[i], s.y[i])) {
        xs.push(s.x[i]);
        ys.push(s.y[i]);
      }
    }
  }
  for (const m of o.markers ?? []) if (Number.isFinite(m.x)) xs.push(m.x);
  const ax = makeAxis(xs, !!o.logX, true);
  const ay = makeAxis(ys, !!o.logY, true);
  const showLegend = o.legend ?? drawn.filter((s) => s.name).length >= 2;
  const legendCols = Math.max(1, Math.floor((width - 64) / 170));
  const legendRows = showLegend ? Math.ceil(drawn.length / legendCols) : 0;
  const totalH = height + legendRows * 18 + (legendRows ? 6 : 0);
  const { left, right, top, bottom } = plotArea(width, height);
  const X = (v: number) => scale(ax, v, left, right);
  const Y = (v: number) => scale(ay, v, bottom, top);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${totalH}" ` +
      `viewBox="0 0 ${width} ${totalH}" font-family="sans-serif" font-size="11">`,
  );
  out.push(`<rect width="${width}" height="${totalH}" fill="#ffffff"/>`);
  if (o.title) {
    out.push(
      `<text x="${width / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold">${
        escapeXml(o.title)
      }</text>`,
    );
  }
  // Grid and ticks.
  out.push(`<g stroke="#e5e5e5" stroke-width="1">`);
  for (const t of ax.ticks) {
    out.push(`<line x1="${f(X(t))}" y1="${top}" x2="${f(X(t))}" y2="${bottom}"/>`);
  }
  for (const t of ay.ticks) {
    out.push(`<line x1="${left}" y1="${f(Y(t))}" x2="${right}" y2="${f(Y(t))}"/>`);
  }
  out.push(`</g>`);
  out.push(
    `<rect x="${left}" y="${top}" width="${right - left}" height="${bottom - top}" ` +
      `fill="none" stroke="#888888"/>`,
  );
  out.push(`<g fill="#333333">`);
  for (const t of ax.ticks) {
    out.push(
      `<text x="${f(X(t))}" y="${bottom + 14}" text-anchor="middle">${formatTick(t)}</text>`,
    );
  }
  for (const t of ay.ticks) {
    out.push(`<text x="${left - 5}" y="${f(Y(t) + 4)}" text-anchor="end">${formatTick(t)}</text>`);
  }
  out.push(`</g>`);
  if (o.xLabel) {
    out.push(
      `<text x="${(left + right) / 2}" y="${bottom + 32}" text-anchor="middle">${
        escapeXml(o.xLabel)
      }</text>`,
    );
  }
  if (o.yLabel) {
    const cy = (top + bottom) / 2;
    out.push(
      `<text x="14" y="${cy}" text-anchor="middle" transform="rotate(-90 14 ${cy})">${
        escapeXml(o.yLabel)
      }</text>`,
    );
  }
  // Markers.
  for (const m of o.markers ?? []) {
    if (!Number.isFinite(m.x) || (o.logX && m.x <= 0)) continue;
    const x = f(X(m.x));
    out.push(
      `<line x1="${x}" y1="${top}" x2="${x}" y2="${bottom}" stroke="#555555" stroke-dasharray="4 3"/>`,
    );
    if (m.label) {
      out.push(
        `<text x="${Number(x) + 3}" y="${top + 11}" fill="#555555">${escapeXml(m.label)}</text>`,
      );
    }
  }
  // Data.
  if (!xs.length) {
    out.push(
      `<text x="${(left + right) / 2}" y="${
        (top + bottom) / 2
      }" text-anchor="middle" fill="#888888">no data</text>`,
    );
  }
  for (const s of drawn) {
    const label = escapeXml(s.name);
    if (s.mode !== "points") {
      let d = "";
      let pen = false;
      for (let i = 0; i < s.x.length; i++) {
        if (!ok(s.x[i], s.y[i])) {
          pen = false;
          continue;
        }
        d += `${pen ? "L" : "M"}${f(X(s.x[i]))},${f(Y(s.y[i]))}`;
        pen = true;
      }
      if (d) {
        out.push(
          `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.5"${
            s.dashed ? ' stroke-dasharray="6 3"' : ""
          }><title>${label}</title></path>`,
        );
      }
    }
    if (s.mode !== "line") {
      out.push(`<g fill="${s.color}"><title>${label}</title>`);
      for (let i = 0; i < s.x.length; i++) {
        if (ok(s.x[i], s.y[i])) {
          out.push(`<circle cx="${f(X(s.x[i]))}" cy="${f(Y(s.y[i]))}" r="3.5"/>`);
          const text = s.labels?.[i];
          if (text) {
            // Beside the point, or to its left when it would run past the plot's right edge.
            const px = X(s.x[i]), left = px + 6 + text.length * 6.2 > width;
            out.push(
              `<text x="${f(left ? px - 6 : px + 6)}" y="${f(Y(s.y[i]) - 5)}"${
                left ? ' text-anchor="end"' : ""
              }>${escapeXml(text)}</text>`,
            );
          }
        }
      }
      out.push(`</g>`);
    }
  }
  // Legend.
  if (showLegend) {
    const colW = (width - 64) / legendCols;
    drawn.forEach((s, i) => {
      const lx = 64 + (i % legendCols) * colW, ly = height + 4 + Math.floor(i / legendCols) * 18;
      out.push(
        s.mode === "points"
          ? `<circle cx="${f(lx + 9)}" cy="${ly + 6}" r="3.5" fill="${s.color}"/>`
          : `<line x1="${f(lx)}" y1="${ly + 6}" x2="${f(lx + 18)}" y2="${
            ly + 6
          }" stroke="${s.color}" ` +
            `stroke-width="2"${s.dashed ? ' stroke-dasharray="6 3"' : ""}/>`,
      );
      out.push(`<text x="${f(lx + 24)}" y="${ly + 10}">${escapeXml(s.name)}</text>`);
    });
  }
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
