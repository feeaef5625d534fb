// Attention benchmark cases: packed causal forward and backward at training shapes, checked against the f64 reference.
import type { KernelCase, KernelSetup } from "../lib.ts";
import {
  type AttentionAcc,
  attentionAccForms,
  attentionBackward,
  attentionBackwardWorkspaceBytes,
  attentionForward,
  type AttentionGpuEntry,
  attentionGpuShapeCandidates,
  attentionGpuTakes,
  type AttentionGrid,
  bandSplitTakes,
  setAttentionAcc,
  setAttentionForm,
  setAttentionGpuShapes,
} from "../../kernels/attention.ts";
import { isCpuAdapter } from "../../kernels/matmul.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { maxRelErr, randomArray } from "../../tests/helpers.ts";
import {
  attentionBackwardRef,
  attentionRef,
  type AttnShape,
  packSamples,
} from "../../tests/reference/attention.ts";

interface Shape {
  lengths: number[];
  Hq: number;
  Hkv: number;
  D: number;
}

const SHAPES: Shape[] = [
  { lengths: [256, 256, 256, 256], Hq: 8, Hkv: 4, D: 64 },
  { lengths: [100, 412, 1, 511], Hq: 4, Hkv: 1, D: 128 },
  { lengths: [128, 128], Hq: 8, Hkv: 4, D: 8 },
];

/** Query/key pairs the causal block-diagonal mask keeps, per head. */
function unmaskedPairs(lengths: number[]): number {
  return lengths.reduce((a, n) => a + (n * (n + 1)) / 2, 0);
}

function label(s: Shape): string {
  const T = s.lengths.reduce((a, b) => a + b, 0);
  return `T${T}/${s.lengths.length}seq h${s.Hq}/${s.Hkv} d${s.D}`;
}

/** Max relative error with a floor of 1e-2 · max |ref|. */
function relErr(got: Float32Array, ref: Float64Array): number {
  let m = 0;
  for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(ref[i]));
  return maxRelErr(got, ref, Math.max(1e-2 * m, 1e-6));
}

/**
 * Sweep shapes (`--filter attention_sweep`): the SmolLM2-135M and Llama-3.2-1B attention at 4
 * micro-batch rows of 1,024 tokens, as `deno task bench train` runs them on a GPU.
 */
const SWEEP_SHAPES: Shape[] = [
  { lengths: [1024, 1024, 1024, 1024], Hq: 9, Hkv: 3, D: 64 },
  { lengths: [1024, 1024, 1024, 1024], Hq: 32, Hkv: 8, D: 64 },
];

/**
 * One case's buffers and dispatches: the adapter's default kernels; a forced attention_gpu grid and
 * accumulator form (`grid`); or a band form (`band`, attention_band.wgsl). The launches know the
 * longest sample, as a training graph's do. `verify`: check against the f64 reference (not at the
 * sweep shapes, where it would take minutes).
 */
function setup(
  gpu: Gpu,
  s: Shape,
  which: "forward" | "backward",
  grid?: { entry: AttentionGpuEntry; grid: AttentionGrid; acc: AttentionAcc },
  band?: "band" | "band-split",
  verify = !grid,
): KernelSetup {
  const T = s.lengths.reduce((a, b) => a + b, 0);
  const sh: AttnShape = { T, Hq: s.Hq, Hkv: s.Hkv, D: s.D, scale: 1 / Math.sqrt(s.D) };
  const maxSample = Math.max(...s.lengths);
  const { seqStart, seqEnd } = packSamples(s.lengths);
  const q = randomArray(T * s.Hq * s.D, 1), k = randomArray(T * s.Hkv * s.D, 2);
  const v = randomArray(T * s.Hkv * s.D, 3), dout = randomArray(T * s.Hq * s.D, 4);
  const nq = T * s.Hq * s.D * 4, nk = T * s.Hkv * s.D * 4;
  const up = (l: string, a: ArrayBufferView) => ({
    buffer: gpu.bufferFrom(`bench.attention.${l}`, a),
  });
  const mk = (l: string, n: number) => ({ buffer: gpu.buffer(`bench.attention.${l}`, n) });
  const b = {
    q: up("q", q),
    k: up("k", k),
    v: up("v", v),
    dout: up("dout", dout),
    seqStart: up("seqStart", seqStart),
    seqEnd: up("seqEnd", seqEnd),
    o: mk("o", nq),
    lse: mk("lse", T * s.Hq * 4),
    dq: mk("dq", nq),
    dk: mk("dk", nk),
    dv: mk("dv", nk),
    workspace: mk("ws", attentionBackwardWorkspaceBytes(T, s.Hq)),
  };
  const arena = new ParamArena(gpu, "bench.attention.params", 4096);
  if (grid) {
    setAttentionGpuShapes(gpu, { [grid.entry]: grid.grid });
    setAttentionAcc(gpu, grid.acc);
  }
  if (band) setAttentionForm(gpu, band);
  const variant = grid || band ? "gpu" : undefined;
  let fwd, bwd;
  try {
    fwd = attentionForward(gpu, arena, { ...b, ...sh, variant, maxSample });
    bwd = attentionBackward(gpu, arena, { ...b, ...sh, variant, maxSample });
  } finally {
    if (grid) {
      setAttentionGpuShapes(gpu, null);
      setAttentionAcc(gpu, null);
    }
    if (band) setAttentionForm(gpu, null);
  }
  if (which === "backward") gpu.run(fwd, "bench.attention.forward"); // o and lse for the backward
  return {
    dispatches: which === "forward" ? fwd : bwd,
    // sweep shapes: the f64 reference would take minutes; the tests check every grid
    check: !verify ? undefined : async () => {
      if (which === "forward") {
        const [o, lse] = (await gpu.read([b.o, b.lse])).map((a) => new Float32Array(a));
        const ref = attentionRef(q, k, v, seqStart, sh);
        return { maxRelErr: Math.max(relErr(o, ref.o), relErr(lse, ref.lse)), tolerance: 1e-4 };
      }
      const [dq, dk, dv] = (await gpu.read([b.dq, b.dk, b.dv])).map((a) => new Float32Array(a));
      const ref = attentionBackwardRef(q, k, v, dout, seqStart, sh);
      const err = Math.max(relErr(dq, ref.dq), relErr(dk, ref.dk), relErr(dv, ref.dv));
      return { maxRelErr: err, tolerance: 1e-4 };
    },
    cleanup: () => {
      for (const x of Object.values(b)) x.buffer.destroy();
      arena.destroy();
    },
  };
}

/**
 * Attention forward and backward cases. FLOPs count only unmasked (query, key) pairs:
 * forward 4·D per pair and head (QKᵀ, PV), backward 10·D (QKᵀ recomputed, dP, dV, dK, dQ). With
 * a filter containing "sweep", every attention_gpu thread grid at the sweep shapes as well.
 */
export function cases(filter?: string, gpu?: Gpu): KernelCase[] {
  const out: KernelCase[] = [];
  for (const s of SHAPES) {
    const pairs = unmaskedPairs(s.lengths) * s.Hq;
    out.push({
      kernel: "attention_forward",
      shape: label(s),
      flops: 4 * s.D * pairs,
      setup: (gpu) => setup(gpu, s, "forward"),
    });
    out.push({
      kernel: "attention_backward",
      shape: label(s),
      flops: 10 * s.D * pairs,
      setup: (gpu) => setup(gpu, s, "backward"),
    });
    if (!attentionGpuTakes(s.D)) continue;
    // the band forms (GPU adapters' alternative to flash, chosen by the autotune), same FLOP count
    const T = s.lengths.reduce((a, b) => a + b, 0), maxSample = Math.max(...s.lengths);
    for (const form of ["band", "band-split"] as const) {
      for (const which of ["forward", "backward"] as const) {
        const cuts = bandSplitTakes(which, { T, Hq: s.Hq, Hkv: s.Hkv, maxSample });
        if (form === "band-split" && !cuts) continue; // the same as band
        out.push({
          kernel: `attention_${form.replace("-", "_")}_${which}`,
          shape: label(s),
          flops: (which === "forward" ? 4 : 10) * s.D * pairs,
          setup: (gpu) => setup(gpu, s, which, undefined, form),
        });
      }
    }
  }
  if (filter?.includes("sweep")) out.push(...sweepCases(gpu));
  return out.filter((c) => !filter || c.kernel.includes(filter));
}

/**
 * One case per attention_gpu thread grid that fits the device (and dK/dV split of the q-head
 * group) and accumulator form, per entry point and sweep shape (the other entry points at their
 * defaults): the figures for choosing ATTENTION_GPU_SHAPES' order. dQ and dK/dV grids are timed through the whole
 * backward (delta, dQ, dK/dV and a split's reduce). Then the band form's forward and backward,
 * unsplit and split (band-split: P·V and dQ in chunks of key tiles, dK/dV per q head).
 */
function sweepCases(gpu?: Gpu): KernelCase[] {
  if (!gpu) return [];
  const out: KernelCase[] = [];
  // on CPU adapters (where the gpu kernels are not the default) 2 rows of 64 tokens: a smoke run
  const shapes = isCpuAdapter(gpu)
    ? SWEEP_SHAPES.map((s) => ({ ...s, lengths: [64, 64] }))
    : SWEEP_SHAPES;
  for (const s of shapes) {
    if (!attentionGpuTakes(s.D)) continue;
    const pairs = unmaskedPairs(s.lengths) * s.Hq;
    for (const entry of ["forward", "dq", "dkv"] as AttentionGpuEntry[]) {
      for (const grid of attentionGpuShapeCandidates(gpu, entry, s.D, s.Hq / s.Hkv)) {
        for (const acc of attentionAccForms(s.D, grid)) {
          const which = entry === "forward" ? "forward" : "backward";
          const split = grid[2] ? ` split ${grid[2]}` : "";
          out.push({
            kernel: `attention_sweep_${entry} ${grid[0]}×${grid[1]}${split} ${acc}`,
            shape: label(s),
            flops: (which === "forward" ? 4 : 10) * s.D * pairs,
            setup: (g) => setup(g, s, which, { entry, grid, acc }),
          });
        }
      }
    }
    for (const form of ["band", "band-split"] as const) {
      for (const which of ["forward", "backward"] as const) {
        const T = s.lengths.reduce((a, b) => a + b, 0), maxSample = Math.max(...s.lengths);
        const cuts = bandSplitTakes(which, { T, Hq: s.Hq, Hkv: s.Hkv, maxSample });
        if (form === "band-split" && !cuts) continue; // the same as band
        out.push({
          kernel: `attention_sweep_${form} ${which}`,
          shape: label(s),
          flops: (which === "forward" ? 4 : 10) * s.D * pairs,
          setup: (g) => setup(g, s, which, undefined, form, false),
        });
      }
    }
  }
  return out;
}
