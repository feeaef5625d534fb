// Benchmark cases of the memory-bound kernels: embedding, RMSNorm, SwiGLU and the elementwise ops.
import type { KernelCase, KernelSetup } from "../lib.ts";
import {
  buildEmbeddingIndex,
  embeddingBackward,
  embeddingForward,
} from "../../kernels/embedding.ts";
import {
  axpy,
  copy,
  fill,
  scaleCopy,
  sumInto,
  sumIntoWorkspaceBytes,
} from "../../kernels/elementwise.ts";
import { rmsnormBackward, rmsnormForward, rmsnormWorkspaceBytes } from "../../kernels/rmsnorm.ts";
import { type BufferSlice, type Dispatch, type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { swigluBackward, swigluForward } from "../../kernels/swiglu.ts";
import { embeddingBackwardRef, embeddingForwardRef } from "../../tests/reference/embedding.ts";
import { rmsnormBackwardRef, rmsnormForwardRef } from "../../tests/reference/rmsnorm.ts";
import { swigluBackwardRef, swigluForwardRef } from "../../tests/reference/swiglu.ts";

// Llama-family training shapes: T tokens per micro-batch, hidden C, MLP width I (TinyLlama 1.1B).
const T = 2048, C = 2048, I = 5632, V = 32000;

/** Deterministic floats in [-scale, scale) (mulberry32). */
function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** Max |a − b| / max(|b|, 1e-2 · max |b|): relative error, floored at 1% of the output's scale. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let mx = 0;
  for (let i = 0; i < b.length; i++) mx = Math.max(mx, Math.abs(b[i]));
  const floor = Math.max(1e-2 * mx, 1e-6);
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    const e = Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), floor);
    if (!(e <= m)) m = Number.isNaN(e) ? Infinity : e;
  }
  return m;
}

/** Buffers of one case, destroyed by cleanup. */
class Bufs {
  private all: GPUBuffer[] = [];
  constructor(readonly gpu: Gpu, readonly prefix: string) {}
  up(label: string, data: ArrayBufferView): BufferSlice {
    const b = this.gpu.bufferFrom(`${this.prefix}.${label}`, data);
    this.all.push(b);
    return { buffer: b };
  }
  make(label: string, bytes: number): BufferSlice {
    const b = this.gpu.buffer(`${this.prefix}.${label}`, bytes);
    this.all.push(b);
    return { buffer: b };
  }
  destroy(): void {
    for (const b of this.all) b.destroy();
  }
}

async function readAll(gpu: Gpu, slices: BufferSlice[]): Promise<Float32Array[]> {
  return (await gpu.read(slices)).map((b) => new Float32Array(b));
}

function rmsnormSetup(gpu: Gpu, backward: boolean): KernelSetup {
  const B = new Bufs(gpu, "bench.rmsnorm");
  const arena = new ParamArena(gpu, "bench.rmsnorm.params", 4096);
  const x = rand(T * C, 1, 2), w = rand(C, 2), dy = rand(T * C, 3);
  const eps = 1e-5;
  const xb = B.up("x", x), wb = B.up("w", w), dyb = B.up("dy", dy);
  const y = B.make("y", T * C * 4), rstd = B.make("rstd", T * 4);
  const dx = B.make("dx", T * C * 4), dw = B.make("dw", C * 4);
  const ws = B.make("ws", rmsnormWorkspaceBytes(T, C));
  const fwd = rmsnormForward(gpu, arena, { y, rstd, x: xb, w: wb, T, C, eps });
  const bwd = rmsnormBackward(gpu, arena, {
    dx,
    dw,
    dy: dyb,
    x: xb,
    w: wb,
    rstd,
    T,
    C,
    workspace: ws,
  });
  const zeroDw = fill(gpu, arena, { y: dw, value: 0, N: C });
  gpu.run(fwd, "bench.rmsnorm.forward"); // rstd for the backward
  return {
    dispatches: backward ? bwd : fwd,
    check: async () => {
      if (!backward) {
        const [ry, rr] = await readAll(gpu, [y, rstd]);
        const f = rmsnormForwardRef(x, w, T, C, eps);
        return { maxRelErr: Math.max(relErr(ry, f.y), relErr(rr, f.rstd)), tolerance: 1e-4 };
      }
      gpu.run([...zeroDw, ...bwd], "bench.rmsnorm.check"); // dw accumulates: start from 0
      const [rdx, rdw] = await readAll(gpu, [dx, dw]);
      const b = rmsnormBackwardRef(dy, x, w, T, C, eps);
      return { maxRelErr: Math.max(relErr(rdx, b.dx), relErr(rdw, b.dw)), tolerance: 1e-4 };
    },
    cleanup: () => B.destroy(),
  };
}

function swigluSetup(gpu: Gpu, backward: boolean): KernelSetup {
  const B = new Bufs(gpu, "bench.swiglu");
  const arena = new ParamArena(gpu, "bench.swiglu.params", 4096);
  const N = T * I;
  const g = rand(N, 4, 4), u = rand(N, 5), d = rand(N, 6);
  const gate = B.up("gate", g), up = B.up("up", u), dout = B.up("dout", d);
  const out = B.make("out", N * 4), dgate = B.make("dgate", N * 4), dup = B.make("dup", N * 4);
  const dispatches = backward
    ? swigluBackward(gpu, arena, { dgate, dup, dout, gate, up, T, I })
    : swigluForward(gpu, arena, { out, gate, up, T, I });
  return {
    dispatches,
    check: async () => {
      if (!backward) {
        const [o] = await readAll(gpu, [out]);
        return { maxRelErr: relErr(o, swigluForwardRef(g, u)), tolerance: 1e-5 };
      }
      const [dg, du] = await readAll(gpu, [dgate, dup]);
      const r = swigluBackwardRef(d, g, u);
      return { maxRelErr: Math.max(relErr(dg, r.dgate), relErr(du, r.dup)), tolerance: 1e-5 };
    },
    cleanup: () => B.destroy(),
  };
}

/** Vocabulary that fits one storage binding on this adapter (lavapipe: 128 MiB). */
function vocab(gpu: Gpu): number {
  return Math.min(V, Math.floor(gpu.limits.maxStorageBufferBindingSize / (C * 4)));
}

function tokenIds(Vb: number): Uint32Array {
  // Zipf-like: many repeats of small ids, as in text
  const r = rand(T, 7);
  return Uint32Array.from(r, (v) => Math.min(Vb - 1, Math.floor(Vb ** Math.abs(v)) - 1));
}

function embeddingSetup(gpu: Gpu, backward: boolean): KernelSetup {
  const B = new Bufs(gpu, "bench.embedding");
  const arena = new ParamArena(gpu, "bench.embedding.params", 4096);
  const Vb = vocab(gpu);
  const ids = tokenIds(Vb);
  const dout = rand(T * C, 8);
  const idsb = B.up("ids", ids), doutb = B.up("dout", dout);
  const index = B.up("index", buildEmbeddingIndex(ids, T, Vb));
  const table = B.make("table", Vb * C * 4);
  const out = B.make("out", T * C * 4);
  const tableInit = rand(Vb * C, 9);
  gpu.write(table.buffer, tableInit);
  const scale = 1;
  const dispatches = backward
    ? embeddingBackward(gpu, arena, { dtable: table, dout: doutb, index, T, C, scale })
    : embeddingForward(gpu, arena, { out, table, ids: idsb, T, C, scale });
  return {
    dispatches,
    check: async () => {
      if (!backward) {
        const [o] = await readAll(gpu, [out]);
        return {
          maxRelErr: relErr(o, embeddingForwardRef(tableInit, ids, C, scale)),
          tolerance: 1e-5,
        };
      }
      gpu.write(table.buffer, new Float32Array(Vb * C)); // dtable accumulates: start from 0
      gpu.run(dispatches, "bench.embedding.check");
      const [d] = await readAll(gpu, [table]);
      return {
        maxRelErr: relErr(d, embeddingBackwardRef(dout, ids, Vb, C, scale)),
        tolerance: 1e-4,
      };
    },
    cleanup: () => B.destroy(),
  };
}

type Elementwise = "axpy" | "scale_copy" | "copy" | "fill" | "sum_into";

function elementwiseSetup(gpu: Gpu, op: Elementwise, N: number): KernelSetup {
  const B = new Bufs(gpu, `bench.${op}`);
  const arena = new ParamArena(gpu, `bench.${op}.params`, 4096);
  const x = rand(N, 10).map((v) => v + 1.5); // positive, so sum_into is well conditioned
  const y0 = rand(N, 11);
  const xb = B.up("x", x), y = B.up("y", y0);
  const acc = B.up("acc", new Float32Array(4));
  const ws = B.make("ws", sumIntoWorkspaceBytes(N));
  const alpha = 0.5;
  let dispatches: Dispatch[];
  if (op === "axpy") dispatches = axpy(gpu, arena, { y, x: xb, alpha, N });
  else if (op === "scale_copy") dispatches = scaleCopy(gpu, arena, { y, x: xb, alpha, N });
  else if (op === "copy") dispatches = copy(gpu, arena, { y, x: xb, N });
  else if (op === "fill") dispatches = fill(gpu, arena, { y, value: alpha, N });
  else dispatches = sumInto(gpu, arena, { acc, x: xb, N, index: 1, workspace: ws });
  return {
    dispatches,
    check: async () => {
      gpu.write(y.buffer, y0);
      gpu.write(acc.buffer, new Float32Array(4));
      gpu.run(dispatches, `bench.${op}.check`);
      const [ry, ra] = await readAll(gpu, [y, acc]);
      let ref: ArrayLike<number>;
      let got: ArrayLike<number> = ry;
      if (op === "axpy") ref = Array.from(y0, (v, i) => v + alpha * x[i]);
      else if (op === "scale_copy") ref = Array.from(x, (v) => alpha * v);
      else if (op === "copy") ref = x;
      else if (op === "fill") ref = new Float32Array(N).fill(alpha);
      else {
        let s = 0;
        for (const v of x) s += v;
        ref = [s];
        got = [ra[1]];
      }
      return { maxRelErr: relErr(got, ref), tolerance: op === "sum_into" ? 1e-4 : 1e-5 };
    },
    cleanup: () => B.destroy(),
  };
}

/** The cases of this module; `filter` (a substring of the kernel name) skips the others. */
export function cases(filter?: string): KernelCase[] {
  const N = T * C;
  const all: KernelCase[] = [
    {
      kernel: "rmsnorm_forward",
      shape: `T${T} C${C}`,
      bytes: 4 * (2 * T * C + C + T),
      setup: (gpu) => rmsnormSetup(gpu, false),
    },
    {
      kernel: "rmsnorm_backward",
      shape: `T${T} C${C}`,
      // dx pass: dy, x in, dx out; dw pass: dy, x in (rows re-read from cache not counted)
      bytes: 4 * (5 * T * C + 2 * Math.ceil(T / 64) * C + 2 * C + 2 * T),
      setup: (gpu) => rmsnormSetup(gpu, true),
    },
    {
      kernel: "swiglu_forward",
      shape: `T${T} I${I}`,
      bytes: 4 * 3 * T * I,
      setup: (gpu) => swigluSetup(gpu, false),
    },
    {
      kernel: "swiglu_backward",
      shape: `T${T} I${I}`,
      bytes: 4 * 5 * T * I,
      setup: (gpu) => swigluSetup(gpu, true),
    },
    {
      kernel: "embedding_forward",
      shape: `T${T} C${C} V≤${V}`,
      bytes: 4 * (2 * T * C + T),
      setup: (gpu) => embeddingSetup(gpu, false),
    },
    {
      kernel: "embedding_backward",
      shape: `T${T} C${C} V≤${V}`,
      // dout once, plus a read and a write of each touched table row (≤ T rows; counted as T)
      bytes: 4 * (3 * T * C),
      setup: (gpu) => embeddingSetup(gpu, true),
    },
    {
      kernel: "axpy",
      shape: `N${N}`,
      bytes: 12 * N,
      setup: (gpu) => elementwiseSetup(gpu, "axpy", N),
    },
    {
      kernel: "scale_copy",
      shape: `N${N}`,
      bytes: 8 * N,
      setup: (gpu) => elementwiseSetup(gpu, "scale_copy", N),
    },
    {
      kernel: "copy",
      shape: `N${N}`,
      bytes: 8 * N,
      setup: (gpu) => elementwiseSetup(gpu, "copy", N),
    },
    {
      kernel: "fill",
      shape: `N${N}`,
      bytes: 4 * N,
      setup: (gpu) => elementwiseSetup(gpu, "fill", N),
    },
    {
      kernel: "sum_into",
      shape: `N${N}`,
      bytes: 4 * N,
      setup: (gpu) => elementwiseSetup(gpu, "sum_into", N),
    },
  ];
  return all.filter((c) => !filter || c.kernel.includes(filter));
}
