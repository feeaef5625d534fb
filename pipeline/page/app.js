// Live progress page: folds the /events stream into uPlot charts, a stage timeline and score tables.
/* global uPlot */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  /** Metrics points, x = samples seen (monotonic across phases). */
  const pts = { x: [], loss: [], gradnorm: [], lr: [] };
  /** Stage name -> {name, state, start, end, seconds, error, reason} (times in ms). */
  const stages = new Map();
  /** Checkpoint dir -> {checkpoint, phase, samples, scores}. */
  const evals = new Map();
  let selection = null;
  let lastId = -1;
  let runState = "waiting";
  let scoreKeys = "";
  const charts = {};

  // ------------------------------------------------------------------------------------------
  // Formatting

  const dash = "–";
  const fixed = (v, d) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(d) : dash);
  const expo = (v) => (typeof v === "number" && Number.isFinite(v) ? v.toExponential(2) : dash);
  const int = (v) => (typeof v === "number" && Number.isFinite(v) ? v.toLocaleString("en") : dash);
  const base = (p) => String(p ?? "").split(/[\\/]/).filter(Boolean).pop() ?? "";
  function duration(s) {
    if (typeof s !== "number" || !Number.isFinite(s)) return dash;
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h
      ? `${h}h${String(m).padStart(2, "0")}m`
      : m
      ? `${m}m${String(sec).padStart(2, "0")}s`
      : `${sec}s`;
  }
  const scoreFmt = (v) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(4) : dash);

  // ------------------------------------------------------------------------------------------
  // Charts (uPlot)

  function chartWidth(el) {
    return Math.max(200, Math.floor(el.parentElement.clientWidth - 14));
  }

  function makeChart(id, label, stroke, logScale, tickFmt) {
    const el = $(id);
    const opts = {
      width: chartWidth(el),
      height: 220,
      legend: { show: true },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: false }, y: logScale ? { distr: 3 } : {} },
      axes: [
        { label: "samples seen", size: 40 },
        { size: 64, values: tickFmt ? (_u, vals) => vals.map(tickFmt) : undefined },
      ],
      series: [
        { label: "samples" },
        { label, stroke, width: 1.5, points: { show: false } },
      ],
    };
    return new uPlot(opts, [[], []], el);
  }

  function makeScoreChart(keys) {
    const el = $("chart-scores");
    charts.scores?.destroy();
    el.textContent = "";
    const palette = ["#2f6fde", "#d2693c", "#1e9e5a", "#8e44ad", "#c0392b", "#16a085"];
    charts.scores = new uPlot(
      {
        width: chartWidth(el),
        height: 200,
        scales: { x: { time: false } },
        axes: [{ label: "samples seen", size: 40 }, { size: 64 }],
        series: [
          { label: "samples" },
          ...keys.map((k, i) => ({
            label: k,
            stroke: palette[i % palette.length],
            width: 1.5,
            points: { show: true, size: 6 },
          })),
        ],
      },
      [[], ...keys.map(() => [])],
      el,
    );
  }

  // ------------------------------------------------------------------------------------------
  // Event folding

  function onMetrics(ev) {
    const x = ev.samples_seen;
    if (typeof x !== "number") return;
    // A resumed phase replays the steps after its last checkpoint: drop points from there on.
    while (pts.x.length && pts.x[pts.x.length - 1] >= x) {
      pts.x.pop();
      pts.loss.pop();
      pts.gradnorm.pop();
      pts.lr.pop();
    }
    pts.x.push(x);
    pts.loss.push(Number.isFinite(ev.loss) ? ev.loss : null);
    pts.gradnorm.push(Number.isFinite(ev.gradnorm) ? ev.gradnorm : null);
    pts.lr.push(Number.isFinite(ev.lr) ? ev.lr : null);
  }

  function onStage(ev) {
    const t = Date.parse(ev.time);
    let s = stages.get(ev.name);
    if (!s || ev.state === "start" || ev.state === "skip") {
      stages.delete(ev.name); // a re-run moves to the end
      s = { name: ev.name, start: t, end: null };
      stages.set(ev.name, s);
    }
    s.state = ev.state;
    if (ev.state !== "start") s.end = t;
    s.seconds = ev.seconds;
    s.error = ev.error;
    s.reason = ev.reason;
  }

  function apply(ev) {
    if (typeof ev.id === "number") {
      if (ev.id <= lastId) return; // already seen (a replay after reconnecting)
      lastId = ev.id;
    }
    switch (ev.type) {
      case "metrics":
        onMetrics(ev);
        break;
      case "stage":
        onStage(ev);
        break;
      case "eval":
        evals.set(ev.checkpoint, ev);
        break;
      case "selection":
        selection = ev;
        break;
      case "run":
        runState = ev.state;
        break;
    }
    schedule();
  }

  // ------------------------------------------------------------------------------------------
  // Rendering (throttled)

  let renderTimer = null;
  let progressTimer = null;
  function schedule() {
    renderTimer ??= setTimeout(render, 150);
    progressTimer ??= setTimeout(fetchProgress, 500);
  }

  function render() {
    renderTimer = null;
    charts.loss.setData([pts.x, pts.loss]);
    charts.gradnorm.setData([pts.x, pts.gradnorm]);
    charts.lr.setData([pts.x, pts.lr]);
    renderTimeline();
    renderScores();
  }

  function renderTimeline() {
    const el = $("timeline");
    const list = [...stages.values()];
    if (!list.length) return;
    const now = runState === "running" ? Date.now() : 0;
    const t0 = Math.min(...list.map((s) => s.start));
    const t1 = Math.max(now, ...list.map((s) => s.end ?? s.start), t0 + 1);
    el.textContent = "";
    for (const s of list) {
      const row = document.createElement("div");
      row.className = "tl-row";
      const name = document.createElement("span");
      name.textContent = s.name;
      const track = document.createElement("div");
      track.className = "tl-track";
      const bar = document.createElement("div");
      bar.className = `tl-bar ${s.state}`;
      const end = s.end ?? Math.max(now, s.start);
      bar.style.left = `${((s.start - t0) / (t1 - t0)) * 100}%`;
      bar.style.width = `${((end - s.start) / (t1 - t0)) * 100}%`;
      bar.title = `${s.name}: ${s.state}` + (s.reason ? ` (${s.reason})` : "") +
        (s.error ? `: ${s.error}` : "");
      track.append(bar);
      const time = document.createElement("span");
      time.className = "tl-time";
      time.textContent = s.state === "skip"
        ? "skipped"
        : s.state === "start"
        ? "running"
        : `${s.state === "fail" ? "failed " : ""}${duration(s.seconds)}`;
      row.append(name, track, time);
      el.append(row);
    }
  }

  function renderScores() {
    const list = [...evals.values()].sort((a, b) => a.samples - b.samples);
    $("scores-empty").hidden = list.length > 0;
    if (!list.length) return;
    const keys = [...new Set(list.flatMap((e) => Object.keys(e.scores ?? {})))].sort();
    if (keys.join("\n") !== scoreKeys) {
      scoreKeys = keys.join("\n");
      makeScoreChart(keys);
    }
    charts.scores.setData([
      list.map((e) => e.samples),
      ...keys.map((k) => list.map((e) => (Number.isFinite(e.scores?.[k]) ? e.scores[k] : null))),
    ]);
    const head = $("scores").tHead;
    head.textContent = "";
    const hr = head.insertRow();
    for (const h of ["checkpoint", "phase", "samples", ...keys]) {
      const th = document.createElement("th");
      th.textContent = h === selection?.primary ? `${h} (primary)` : h;
      hr.append(th);
    }
    const body = $("scores").tBodies[0];
    body.textContent = "";
    for (const e of list) {
      const tr = body.insertRow();
      if (selection?.best?.dir === e.checkpoint) tr.className = "best";
      for (
        const v of [
          base(e.checkpoint),
          e.phase,
          int(e.samples),
          ...keys.map((k) => scoreFmt(e.scores?.[k])),
        ]
      ) {
        tr.insertCell().textContent = v;
      }
    }
  }

  function renderProgress(p) {
    for (const el of document.querySelectorAll(".stat b")) el.title = el.textContent;
    $("run-id").textContent = p.run_id ?? "";
    document.title = `${p.state} · ${p.run_id ?? "run"} · finetune`;
    const badge = $("state");
    badge.textContent = p.state;
    badge.className = `badge ${p.state}`;
    const err = $("error");
    err.hidden = !p.error;
    err.textContent = p.error ? `run failed: ${p.error}` : "";
    $("s-stage").textContent = p.stage
      ? `${p.stage}${p.stage_state === "start" ? "" : ` (${p.stage_state})`}`
      : dash;
    $("s-phase").textContent = p.phase ?? dash;
    $("s-step").textContent = p.steps_done === null
      ? dash
      : `${int(p.steps_done)} / ${int(p.total_steps)}`;
    const frac = p.total_steps ? Math.min(1, (p.steps_done ?? 0) / p.total_steps) : 0;
    $("s-step-bar").style.width = `${frac * 100}%`;
    $("s-epoch").textContent = p.epoch ?? dash;
    $("s-samples").textContent = p.total_samples
      ? `${int(p.samples_seen)} / ${int(p.total_samples)}`
      : int(p.samples_seen);
    $("s-loss").textContent = fixed(p.loss, 4);
    $("s-gradnorm").textContent = fixed(p.gradnorm, 3);
    $("s-lr").textContent = expo(p.lr);
    $("s-tps").textContent = typeof p.tokens_per_s === "number"
      ? Math.round(p.tokens_per_s).toLocaleString("en")
      : dash;
    $("s-eta").textContent = duration(p.eta_s);
    const c = p.last_checkpoint;
    $("s-ckpt").textContent = c
      ? `${base(c.dir)} (${c.phase}, step ${c.step}${c.final ? ", final" : ""})`
      : dash;
    const sel = p.selection;
    const primary = sel?.best?.scores?.[sel.primary];
    $("s-best").textContent = sel
      ? `${base(sel.best?.dir)} (${sel.primary} ${scoreFmt(primary)})`
      : dash;
  }

  async function fetchProgress() {
    progressTimer = null;
    try {
      const r = await fetch("progress", { cache: "no-store" });
      if (r.ok) renderProgress(await r.json());
    } catch {
      // offline for a moment: the event stream's reconnect shows it
    }
  }

  // ------------------------------------------------------------------------------------------
  // Start

  charts.loss = makeChart("chart-loss", "loss", "#2f6fde", false);
  charts.gradnorm = makeChart("chart-gradnorm", "grad norm", "#d2693c", false);
  charts.lr = makeChart("chart-lr", "lr", "#1e9e5a", false, (v) => v.toExponential(1));

  addEventListener("resize", () => {
    for (const [id, ch] of Object.entries(charts)) {
      const el = $(`chart-${id}`);
      if (el) ch.setSize({ width: chartWidth(el), height: ch.height });
    }
  });

  const es = new EventSource("events");
  const conn = $("conn");
  es.onopen = () => {
    conn.textContent = "live";
    conn.className = "conn live";
  };
  es.onerror = () => {
    conn.textContent = "reconnecting…";
    conn.className = "conn";
  };
  const onEvent = (m) => {
    try {
      apply(JSON.parse(m.data));
    } catch (e) {
      console.warn("bad event", e);
    }
  };
  es.onmessage = onEvent;
  for (const t of ["run", "stage", "metrics", "checkpoint", "eval", "selection"]) {
    es.addEventListener(t, onEvent);
  }
  fetchProgress();
  setInterval(fetchProgress, 5000);

  /** For tests and the console: the charts and counts of what arrived. */
  globalThis.ft = {
    charts,
    points: () => pts.x.length,
    lastId: () => lastId,
    stages: () => stages.size,
    evals: () => evals.size,
  };
})();
