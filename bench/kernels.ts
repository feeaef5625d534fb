// `deno task bench kernels`: time every kernel at representative shapes, with its error.
import { acquireGpu, type Gpu } from "../kernels/runtime.ts";
import { type KernelCase, printKernelHeader, runKernelCases, writeResult } from "./lib.ts";

/** Case modules under bench/kernels/, each exporting `cases(filter?: string): KernelCase[]`. */
const MODULES = ["matmul", "cross_entropy", "attention", "rope", "norm_misc", "adamw"];

/** Run the kernel suite; `filter` keeps cases whose kernel name contains it. */
export async function benchKernels(filter?: string): Promise<void> {
  const gpu = await acquireGpu();
  console.log(`adapter: ${gpu.summary.description} (${gpu.summary.backend})`);
  const cases: KernelCase[] = [];
  for (const m of MODULES) {
    let mod: { cases(filter?: string, gpu?: Gpu): KernelCase[] };
    try {
      mod = await import(`./kernels/${m}.ts`);
    } catch (e) {
      if ((e as Error).message.includes("Module not found")) continue;
      throw e;
    }
    cases.push(...mod.cases(filter, gpu).filter((c) => !filter || c.kernel.includes(filter)));
  }
  printKernelHeader();
  const rows = await runKernelCases(gpu, cases);
  console.log(`wrote ${await writeResult("kernels", gpu, rows)}`);
  gpu.destroy();
}
