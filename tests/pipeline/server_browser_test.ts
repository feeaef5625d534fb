// Browser test of the live page: headless Chromium over the DevTools protocol; no console errors, charts fill.
import assert from "node:assert/strict";
import { join } from "node:path";
import { fakeRun } from "../../bench/server.ts";
import { createEventLog } from "../../pipeline/progress.ts";
import { startServer } from "../../pipeline/server.ts";

const inCI = Deno.env.get("CI") === "true";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Path of a Chromium binary (env CHROMIUM, else the usual names on PATH), or null. */
function findChromium(): string | null {
  const env = Deno.env.get("CHROMIUM");
  if (env) return env;
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    for (const name of ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]) {
      try {
        if (Deno.statSync(join(dir, name)).isFile) return join(dir, name);
      } catch {
        // not here
      }
    }
  }
  return null;
}

const chromium = findChromium();
if (!chromium) {
  if (inCI) throw new Error("CI=true but chromium is missing (apt-get install -y chromium)");
  console.warn("skipping the browser test: no chromium on PATH (apt-get install -y chromium)");
}

/** A minimal DevTools-protocol client over Deno's WebSocket. */
class Cdp {
  #ws: WebSocket;
  #next = 1;
  #pending = new Map<number, { ok: (v: unknown) => void; err: (e: Error) => void }>();
  #handlers: ((method: string, params: Record<string, unknown>) => void)[] = [];

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (m) => {
      const msg = JSON.parse(String(m.data));
      if (msg.id !== undefined) {
        const p = this.#pending.get(msg.id);
        this.#pending.delete(msg.id);
        if (msg.error) p?.err(new Error(`${msg.error.message} (${msg.error.code})`));
        else p?.ok(msg.result);
      } else {
        for (const h of this.#handlers) h(msg.method, msg.params ?? {});
      }
    };
  }

  static async connect(url: string): Promise<Cdp> {
    const ws = new WebSocket(url);
    await new Promise<void>((ok, err) => {
      ws.onopen = () => ok();
      ws.onerror = (e) => err(new Error(`devtools websocket: ${(e as ErrorEvent).message}`));
    });
    return new Cdp(ws);
  }

  on(h: (method: string, params: Record<string, unknown>) => void): void {
    this.#handlers.push(h);
  }

  send<T = Record<string, unknown>>(
    method: string,
    params: Record<string, unknown> = {},
  ): Promise<T> {
    const id = this.#next++;
    this.#ws.send(JSON.stringify({ id, method, params }));
    return new Promise<T>((ok, err) =>
      this.#pending.set(id, { ok: ok as (v: unknown) => void, err })
    );
  }

  async eval<T>(expression: string): Promise<T> {
    const r = await this.send<{ result: { value: T }; exceptionDetails?: { text: string } }>(
      "Runtime.evaluate",
      { expression, returnByValue: true },
    );
    if (r.exceptionDetails) throw new Error(`evaluate ${expression}: ${r.exceptionDetails.text}`);
    return r.result.value;
  }

  close(): Promise<void> {
    return new Promise((ok) => {
      if (this.#ws.readyState === WebSocket.CLOSED) return ok();
      this.#ws.onclose = () => ok();
      this.#ws.close();
    });
  }
}

Deno.test({
  name: "server page: headless chromium loads it with no console errors and charts every point",
  ignore: chromium === null,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const runDir = await Deno.makeTempDir({ prefix: "ft-browser-run-" });
    const outDir = await Deno.makeTempDir({ prefix: "ft-browser-out-" });
    const profile = await Deno.makeTempDir({ prefix: "ft-browser-profile-" });
    const log = createEventLog(runDir);
    const server = startServer({ runDir, log });
    const steps = 40;
    // Part of the run happens before the page opens, the rest live while it is open.
    const running = fakeRun(log, { steps, stepMs: 40, saveEvery: 10, runId: "browser-run" });
    await sleep(400);

    const proc = new Deno.Command(chromium!, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        `--user-data-dir=${profile}`,
        "--remote-debugging-port=0",
        "--window-size=1280,1500",
        "about:blank",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Drain chromium's stderr (a full pipe would stall it); shown when the test fails.
    let stderrText = "";
    const drained = (async () => {
      for await (const t of proc.stderr.pipeThrough(new TextDecoderStream())) {
        if (stderrText.length < 20_000) stderrText += t;
      }
    })();
    let cdp: Cdp | null = null;
    try {
      // Chromium writes its DevTools port to <profile>/DevToolsActivePort once it listens.
      let port = 0;
      const until = Date.now() + 30_000;
      while (!port && Date.now() < until) {
        try {
          port = Number(
            (await Deno.readTextFile(join(profile, "DevToolsActivePort"))).split("\n")[0],
          );
        } catch {
          await sleep(50);
        }
      }
      assert.ok(port > 0, "chromium did not open its DevTools port within 30 s");
      const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
        type: string;
        webSocketDebuggerUrl: string;
      }[];
      const page = targets.find((t) => t.type === "page");
      assert.ok(page, "no page target");
      cdp = await Cdp.connect(page.webSocketDebuggerUrl);
      const problems: string[] = [];
      cdp.on((method, p) => {
        if (method === "Runtime.consoleAPICalled" && (p.type === "error" || p.type === "assert")) {
          const args = p.args as { value?: unknown; description?: string }[];
          problems.push(
            `console.${p.type}: ${args.map((a) => a.value ?? a.description).join(" ")}`,
          );
        } else if (method === "Runtime.exceptionThrown") {
          const d = p.exceptionDetails as { text: string; exception?: { description?: string } };
          problems.push(`exception: ${d.exception?.description ?? d.text}`);
        } else if (method === "Log.entryAdded") {
          const e = p.entry as { level: string; text: string; url?: string };
          if (e.level === "error") problems.push(`log: ${e.text} ${e.url ?? ""}`);
        }
      });
      await cdp.send("Runtime.enable");
      await cdp.send("Log.enable");
      await cdp.send("Page.enable");
      await cdp.send("Page.navigate", { url: server.url });

      await running;
      const lastId = log.lastId();
      let state = { points: -1, lastId: -1, stages: 0, evals: 0, chart: -1, canvases: 0 };
      const end = Date.now() + 20_000;
      while (Date.now() < end) {
        state = await cdp.eval(`globalThis.ft ? {
          points: ft.points(), lastId: ft.lastId(), stages: ft.stages(), evals: ft.evals(),
          chart: ft.charts.loss.data[0].length,
          canvases: document.querySelectorAll(".uplot canvas").length,
        } : { points: -1, lastId: -1, stages: 0, evals: 0, chart: -1, canvases: 0 }`);
        if (state.lastId === lastId && state.chart === steps) break;
        await sleep(100);
      }
      await sleep(2500); // the page renders the snapshot (/progress) after its throttle
      const text = await cdp.eval<{ state: string; step: string; loss: string; rows: number }>(`({
        state: document.getElementById("state").textContent,
        step: document.getElementById("s-step").textContent,
        loss: document.getElementById("s-loss").textContent,
        rows: document.querySelectorAll("#scores tbody tr").length,
      })`);
      const shot = await cdp.send<{ data: string }>("Page.captureScreenshot", { format: "png" });
      const png = join(outDir, "progress_page.png");
      await Deno.writeFile(png, Uint8Array.from(atob(shot.data), (c) => c.charCodeAt(0)));
      console.log(`screenshot: ${png}`);
      console.log(`page state: ${JSON.stringify({ ...state, ...text })}`);

      assert.deepEqual(problems, [], "no console errors");
      assert.equal(state.lastId, lastId, "the page saw every event");
      assert.equal(state.points, steps, "one chart point per step");
      assert.equal(state.chart, steps, "the loss chart holds every point");
      assert.ok(state.canvases >= 4, `${state.canvases} chart canvases`);
      assert.equal(state.stages, 4);
      assert.equal(state.evals, 4);
      assert.equal(text.state, "finished");
      assert.equal(text.step, `${steps} / ${steps}`);
      assert.equal(text.rows, 4);
    } catch (e) {
      console.error(`chromium stderr:\n${stderrText.slice(-4000)}`);
      throw e;
    } finally {
      await cdp?.close();
      proc.kill("SIGTERM");
      await proc.status;
      await drained.catch(() => {});
      await server.close();
      await log.close();
      await Deno.remove(runDir, { recursive: true });
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    }
  },
});
