// RoPE benchmark cases: forward and backward (in place) at training shapes, checked against the f64 reference.
import type { KernelCase, KernelSetup } from "../lib.ts";
import { ropeBackward, ropeForward, ropeInvFreq, ropeTable } from "../../kernels/rope.ts";
import { type Gpu, ParamArena } from "../../kernels/runtime.ts";
import { maxRelErr, randomArray } from "../../tests/helpers.ts";
import { ropeRef } from "../../tests/reference/rope.ts";

interface Shape {
  T: number;
  H: number;
  D: number;
  sample: number; // positions restart every `sample` tokens
}

const SHAPES: Shape[] = [
  { T: 1024, H: 8, D: 64, sample: 256 }, // Llama-3.2-1B queries
  { T: 1024, H: 32, D: 128, sample: 512 }, // 8B-class queries
];

const LLAMA3 = {
  type: "llama3" as const,
  factor: 32,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 8192,
};

function setup(gpu: Gpu, s: Shape, dir: "forward" | "backward"): KernelSetup {
  const n = s.T * s.H * s.D;
  const pos = new Uint32Array(s.T).map((_, t) => t % s.sample);
  const x = randomArray(n, 7);
  const arena = new ParamArena(gpu, "bench.rope.params", 4096);
  const xBuf = gpu.bufferFrom("bench.rope.x", x);
  const outBuf = gpu.buffer("bench.rope.out", n * 4);
  const posBuf = gpu.bufferFrom("bench.rope.pos", pos);
  const table = gpu.bufferFrom("bench.rope.table", ropeTable(s.D, 500000, LLAMA3, s.sample));
  const common = { pos: { buffer: posBuf }, table: { buffer: table }, T: s.T, H: s.H, D: s.D };
  const dispatches = dir === "forward"
    ? ropeForward(gpu, arena, { out: { buffer: outBuf }, x: { buffer: xBuf }, ...common })
    : ropeBackward(gpu, arena, { dx: { buffer: outBuf }, dout: { buffer: xBuf }, ...common });
  return {
    dispatches,
    check: async () => {
      const got = await gpu.readF32(outBuf);
      const inv = ropeInvFreq(s.D, 500000, LLAMA3);
      const ref = ropeRef(x, pos, inv, s.T, s.H, s.D, dir === "backward");
      return { maxRelErr: maxRelErr(got, ref, 0.1), tolerance: 1e-5 };
    },
    cleanup: () => {
      for (const b of [xBuf, outBuf, posBuf, table, arena.buffer]) b.destroy();
    },
  };
}

/** RoPE forward and backward cases; bytes = x read + out written + the cos/sin pairs read. */
export function cases(filter?: string): KernelCase[] {
  const out: KernelCase[] = [];
  for (const s of SHAPES) {
    const n = s.T * s.H * s.D;
    for (const dir of ["forward", "backward"] as const) {
      out.push({
        kernel: `rope_${dir}`,
        shape: `T${s.T} h${s.H} d${s.D}`,
        bytes: 4 * (2 * n + n) + 4 * s.T,
        setup: (gpu) => setup(gpu, s, dir),
      });
    }
  }
  return out.filter((c) => !filter || c.kernel.includes(filter));
}
