// GPU runtime shared by every kernel: device acquisition, pipeline cache, buffers, read-back, timing.

/** Limits we request explicitly (the adapter's real values), and print in `doctor`. */
export const LIMITS_THAT_MATTER = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxUniformBuffersPerShaderStage",
  "maxUniformBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxBindingsPerBindGroup",
  "minStorageBufferOffsetAlignment",
  "minUniformBufferOffsetAlignment",
] as const;

/** Optional features we use when the adapter offers them. */
export const OPTIONAL_FEATURES: GPUFeatureName[] = ["shader-f16", "timestamp-query"];

/** Raised for every GPU-side failure; `kernel` names the culprit when known. */
export class GpuError extends Error {
  constructor(message: string, readonly kernel?: string) {
    super(kernel ? `[${kernel}] ${message}` : message);
    this.name = "GpuError";
  }
}

/** Raised when no WebGPU adapter can be found; carries an install hint. */
export class NoAdapterError extends Error {
  constructor() {
    super(
      "no WebGPU adapter found. Install a Vulkan driver; on a GPU-less Debian/Ubuntu box: " +
        "apt-get install -t bookworm-backports mesa-vulkan-drivers (lavapipe)",
    );
    this.name = "NoAdapterError";
  }
}

/** What we know of the adapter, for `doctor` and benchmark reports. */
export interface AdapterSummary {
  description: string;
  vendor: string;
  architecture: string;
  device: string;
  isFallback: boolean;
  backend: string;
  features: string[];
  limits: Record<string, number>;
}

/** A compiled kernel entry point. */
export interface Kernel {
  name: string; // "<file>.<entry>" with constants, used in labels and errors
  pipeline: GPUComputePipeline;
}

/** One recorded dispatch of a plan. */
export interface Dispatch {
  kernel: Kernel;
  bindGroup: GPUBindGroup;
  workgroups: [number, number, number];
}

/** A buffer region bound to a kernel. */
export interface BufferSlice {
  buffer: GPUBuffer;
  offset?: number;
  size?: number;
}

const KERNEL_DIR = new URL("./", import.meta.url);

/**
 * Bytes of the uniform windows that CPU-adapter kernels read operands through
 * (`array<vec4<f32>, 4096>`: WebGPU's default maxUniformBufferBindingSize).
 */
export const UNIFORM_WINDOW_BYTES = 65536;

/** Round `n` up to a multiple of `a`. */
export function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

const scratches = new WeakMap<Gpu, Map<string, GPUBuffer>>();

/**
 * The scratch buffer `label` of `gpu`, at least `bytes` long (and `minBytes`): one serves every
 * dispatch that needs it, since the dispatches of a queue run in order; when a larger one is
 * needed it replaces the old one, which the bind groups already built keep alive.
 */
export function sharedScratch(gpu: Gpu, label: string, bytes: number, minBytes = 0): GPUBuffer {
  let m = scratches.get(gpu);
  if (!m) scratches.set(gpu, m = new Map());
  let s = m.get(label);
  if (!s || s.size < bytes) {
    s = gpu.buffer(label, Math.max(bytes, minBytes));
    m.set(label, s);
  }
  return s;
}

/**
 * Destroy the scratch buffer `label` of `gpu`, when one exists and no dispatch still to be built or
 * run needs it (the caller knows: e.g. the autotune after timing a form it did not keep).
 */
export function releaseSharedScratch(gpu: Gpu, label: string): void {
  const m = scratches.get(gpu);
  const s = m?.get(label);
  if (!s) return;
  s.destroy();
  m!.delete(label);
}

/** The device, its limits and the caches every launcher uses. */
export class Gpu {
  readonly pipelines = new Map<string, Kernel>();
  /** Settles when a pipeline's validation is known (its error scope popped). */
  private compiled = new Map<string, Promise<void>>();
  readonly hasF16: boolean;
  readonly hasTimestamps: boolean;
  /** A CPU adapter (lavapipe / llvmpipe / SwiftShader): kernels pick their CPU forms. */
  readonly isCpu: boolean;
  /**
   * Launchers use their vec4 forms (16-byte loads and stores, bit-identical to the scalar ones)
   * where the shape allows. Tests set it false to run the scalar forms at the same shapes.
   */
  vec4Forms = true;
  private sources = new Map<string, string>();
  private lostReason: string | null = null;
  private uncaptured: string[] = [];
  private staging: GPUBuffer | null = null;

  constructor(
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly summary: AdapterSummary,
  ) {
    this.hasF16 = device.features.has("shader-f16");
    this.hasTimestamps = device.features.has("timestamp-query");
    const d = `${summary.description} ${summary.backend}`.toLowerCase();
    this.isCpu = summary.isFallback || /llvmpipe|lavapipe|swiftshader/.test(d);
    device.lost.then((info) => {
      this.lostReason = `device lost (${info.reason}): ${info.message}`;
    });
    device.addEventListener("uncapturederror", (ev) => {
      const err = (ev as GPUUncapturedErrorEvent).error;
      this.uncaptured.push(err.message);
    });
  }

  /** Device limits as granted. */
  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /** Throws if the device was lost or an uncaptured error happened since the last check. */
  check(context?: string): void {
    if (this.lostReason) throw new GpuError(this.lostReason, context);
    if (this.uncaptured.length) {
      const msgs = this.uncaptured.splice(0);
      throw new GpuError(msgs.join("\n"), context);
    }
  }

  /** WGSL source of `kernels/<file>.wgsl`, with `// #include <name>.wgsl` lines expanded. */
  source(file: string): string {
    let src = this.sources.get(file);
    if (src === undefined) {
      src = loadWgsl(file);
      this.sources.set(file, src);
    }
    return src;
  }

  /**
   * A compute pipeline for `entry` in `kernels/<file>.wgsl`, cached by file, entry and override
   * constants. Compilation errors are raised as GpuError naming the kernel.
   */
  kernel(file: string, entry: string, constants: Record<string, number> = {}): Kernel {
    const ck = Object.keys(constants).sort().map((k) => `${k}=${constants[k]}`).join(",");
    const key = `${file}.${entry}${ck ? `{${ck}}` : ""}`;
    const hit = this.pipelines.get(key);
    if (hit) return hit;
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ label: key, code: this.source(file) });
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: "auto",
      compute: { module, entryPoint: entry, constants },
    });
    const k: Kernel = { name: key, pipeline };
    this.pipelines.set(key, k);
    this.compiled.set(key, this.scoped(key, () => this.pipelines.delete(key)));
    return k;
  }

  /** Compile a kernel and wait for validation so errors surface here, naming the kernel. */
  async kernelChecked(
    file: string,
    entry: string,
    constants: Record<string, number> = {},
  ): Promise<Kernel> {
    const k = this.kernel(file, entry, constants);
    await this.compiled.get(k.name); // kernel()'s own error scope, named after the kernel
    this.check(k.name);
    return k;
  }

  /**
   * A labelled storage buffer (usable as copy source and destination; on CPU adapters also as a
   * uniform buffer, so matmul_vec can read 64 KiB windows of it through uniform bindings).
   */
  buffer(label: string, size: number, extraUsage = 0): GPUBuffer {
    const max = this.device.limits.maxBufferSize;
    if (size > max) {
      throw new GpuError(`buffer of ${size} bytes exceeds maxBufferSize ${max}`, label);
    }
    return this.device.createBuffer({
      label,
      size: alignUp(Math.max(size, 4), 4),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST |
        (this.isCpu ? GPUBufferUsage.UNIFORM : 0) | extraUsage,
    });
  }

  /** A storage buffer holding `data`. */
  bufferFrom(label: string, data: ArrayBufferView): GPUBuffer {
    const buf = this.buffer(label, data.byteLength);
    this.write(buf, data);
    return buf;
  }

  /** A labelled uniform buffer of `size` bytes. */
  uniform(label: string, size: number): GPUBuffer {
    return this.device.createBuffer({
      label,
      size: alignUp(Math.max(size, 16), 16),
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
  }

  /** Queue a write of `data` into `buf` at `offset` (bytes); pads the tail to 4 bytes. */
  write(buf: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    let bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 !== 0) {
      const padded = new Uint8Array(alignUp(bytes.byteLength, 4));
      padded.set(bytes);
      bytes = padded;
    }
    this.device.queue.writeBuffer(
      buf,
      offset,
      bytes.buffer as ArrayBuffer,
      bytes.byteOffset,
      bytes.byteLength,
    );
  }

  /** A bind group for `kernel` with `entries` keyed by binding number (group 0). */
  bind(kernel: Kernel, entries: Record<number, GPUBuffer | BufferSlice>): GPUBindGroup {
    const list: GPUBindGroupEntry[] = Object.entries(entries).map(([b, r]) => {
      const s = r instanceof GPUBuffer ? { buffer: r } : r;
      return { binding: Number(b), resource: s as GPUBufferBinding };
    });
    this.device.pushErrorScope("validation");
    const bg = this.device.createBindGroup({
      label: kernel.name,
      layout: kernel.pipeline.getBindGroupLayout(0),
      entries: list,
    });
    this.scoped(`${kernel.name} bind group`);
    return bg;
  }

  /** Pop the error scope pushed just before; an error is raised at the next check, named. */
  private scoped(name: string, onError?: () => void): Promise<void> {
    return this.device.popErrorScope().then((err) => {
      if (!err) return;
      onError?.();
      this.uncaptured.push(`[${name}] ${err.message}`);
    });
  }

  /** Encode `dispatches` in one compute pass and submit (no waiting). */
  run(dispatches: Dispatch[], label = "step"): void {
    const enc = this.device.createCommandEncoder({ label });
    const pass = enc.beginComputePass({ label });
    encodeDispatches(pass, dispatches);
    pass.end();
    this.device.queue.submit([enc.finish()]);
  }

  /**
   * Read several buffer regions back with one staging copy and one mapAsync. Never call this
   * inside a training step: a map costs ≥10 ms on Deno.
   */
  async read(slices: BufferSlice[]): Promise<ArrayBuffer[]> {
    const sizes = slices.map((s) => alignUp(s.size ?? s.buffer.size - (s.offset ?? 0), 4));
    const offsets: number[] = [];
    let total = 0;
    for (const sz of sizes) {
      offsets.push(total);
      total += alignUp(sz, 256);
    }
    if (!this.staging || this.staging.size < total) {
      this.staging?.destroy();
      this.staging = this.device.createBuffer({
        label: "runtime.staging",
        size: alignUp(Math.max(total, 256), 65536),
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
    }
    const enc = this.device.createCommandEncoder({ label: "runtime.read" });
    slices.forEach((s, i) => {
      enc.copyBufferToBuffer(s.buffer, s.offset ?? 0, this.staging!, offsets[i], sizes[i]);
    });
    this.device.queue.submit([enc.finish()]);
    await this.staging.mapAsync(GPUMapMode.READ, 0, alignUp(total, 4) || 4);
    this.check("runtime.read");
    const mapped = this.staging.getMappedRange(0, alignUp(total, 4) || 4);
    const out = sizes.map((sz, i) => mapped.slice(offsets[i], offsets[i] + sz));
    this.staging.unmap();
    return out;
  }

  /** Read one buffer region as Float32Array. */
  async readF32(buf: GPUBuffer, offset = 0, count?: number): Promise<Float32Array> {
    const size = count === undefined ? buf.size - offset : count * 4;
    const [ab] = await this.read([{ buffer: buf, offset, size }]);
    return new Float32Array(ab, 0, size / 4);
  }

  /** Wait until the queue is idle and raise any pending error. */
  async sync(context?: string): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    this.check(context);
  }

  /**
   * Run `dispatches` once with a GPU timestamp pair around each (one pass per dispatch), and
   * return the elapsed milliseconds per dispatch. Needs `timestamp-query`; for profiling only.
   */
  async profile(dispatches: Dispatch[]): Promise<number[]> {
    if (!this.hasTimestamps) throw new GpuError("adapter lacks timestamp-query", "profile");
    const n = dispatches.length;
    if (n === 0) return [];
    const resolve = this.device.createBuffer({
      label: "profile.resolve",
      size: 16 * n,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const enc = this.device.createCommandEncoder({ label: "profile" });
    // A query set holds at most 4,096 queries (a WebGPU limit): one set per PROFILE_CHUNK passes.
    const sets: GPUQuerySet[] = [];
    for (let c0 = 0; c0 < n; c0 += PROFILE_CHUNK) {
      const m = Math.min(PROFILE_CHUNK, n - c0);
      const qs = this.device.createQuerySet({ label: "profile", type: "timestamp", count: 2 * m });
      sets.push(qs);
      for (let i = 0; i < m; i++) {
        const d = dispatches[c0 + i];
        const pass = enc.beginComputePass({
          label: d.kernel.name,
          timestampWrites: {
            querySet: qs,
            beginningOfPassWriteIndex: 2 * i,
            endOfPassWriteIndex: 2 * i + 1,
          },
        });
        encodeDispatches(pass, [d]);
        pass.end();
      }
      enc.resolveQuerySet(qs, 0, 2 * m, resolve, 16 * c0); // 16·PROFILE_CHUNK: 256-byte aligned
    }
    this.device.queue.submit([enc.finish()]);
    const [ab] = await this.read([{ buffer: resolve, size: 16 * n }]);
    const t = new BigUint64Array(ab);
    for (const qs of sets) qs.destroy();
    resolve.destroy();
    return dispatches.map((_, i) => Number(t[2 * i + 1] - t[2 * i]) / 1e6);
  }

  /** Release the device. */
  destroy(): void {
    this.staging?.destroy();
    this.device.destroy();
  }
}

/** Dispatches timed per query set by `Gpu.profile` (two timestamps each, at most 4,096 per set). */
export const PROFILE_CHUNK = 2048;

/** Record `dispatches` into an open compute pass. */
export function encodeDispatches(pass: GPUComputePassEncoder, dispatches: Dispatch[]): void {
  let last: GPUComputePipeline | null = null;
  for (const d of dispatches) {
    if (d.kernel.pipeline !== last) {
      pass.setPipeline(d.kernel.pipeline);
      last = d.kernel.pipeline;
    }
    pass.setBindGroup(0, d.bindGroup);
    pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
  }
}

/** Read `kernels/<file>.wgsl`, expanding `// #include <other>.wgsl` lines once each. */
export function loadWgsl(file: string, seen = new Set<string>()): string {
  const name = file.endsWith(".wgsl") ? file : `${file}.wgsl`;
  if (seen.has(name)) return "";
  seen.add(name);
  let text: string;
  try {
    text = Deno.readTextFileSync(new URL(name, KERNEL_DIR));
  } catch (e) {
    throw new GpuError(`cannot read kernel source: ${(e as Error).message}`, name);
  }
  return text.replace(
    /^\/\/ #include ([\w.]+)\s*$/gm,
    (_, inc: string) => loadWgsl(inc, seen),
  );
}

/**
 * Uniform parameters of many dispatches in one buffer, each at an aligned offset, so a plan
 * builds its bind groups once and a schedule can rewrite a value without new buffers. When a
 * buffer of `capacity` bytes is full, the arena continues in another of the same size (a plan of
 * many GEMM chunks can need more slots than one buffer holds).
 */
export class ParamArena {
  /** The first buffer (most plans need only this one). */
  readonly buffer: GPUBuffer;
  private readonly buffers: GPUBuffer[];
  private current = 0;
  private used = 0;
  private readonly align: number;

  constructor(readonly gpu: Gpu, readonly label: string, readonly capacity = 1 << 20) {
    this.align = gpu.limits.minUniformBufferOffsetAlignment;
    this.buffer = gpu.uniform(label, capacity);
    this.buffers = [this.buffer];
  }

  /** Reserve a slot and write `data` (at most 256 bytes) into it. */
  alloc(data: ArrayBufferView): BufferSlice {
    const size = alignUp(Math.max(data.byteLength, 16), 16);
    if (size > this.capacity) {
      throw new GpuError(`param slot of ${size} bytes exceeds ${this.capacity}`, this.label);
    }
    let offset = alignUp(this.used, this.align);
    if (offset + size > this.capacity) {
      this.current++;
      if (this.current === this.buffers.length) {
        this.buffers.push(this.gpu.uniform(`${this.label}#${this.current}`, this.capacity));
      }
      offset = 0;
    }
    this.used = offset + size;
    const buffer = this.buffers[this.current];
    this.gpu.write(buffer, data, offset);
    return { buffer, offset, size };
  }

  /** Forget every slot (the buffers are reused). */
  reset(): void {
    this.current = 0;
    this.used = 0;
  }

  /** Bytes of uniform buffers the arena holds. */
  get bytes(): number {
    return this.buffers.length * this.capacity;
  }

  /** Release every buffer of the arena. */
  destroy(): void {
    for (const b of this.buffers) b.destroy();
  }
}

/**
 * Pack uniform fields in order: integers as u32 (negative as i32), values in `floats` (by index)
 * as f32. Every field takes 4 bytes; WGSL structs of scalars match this layout.
 */
export function packParams(fields: number[], floats: number[] = []): Uint32Array {
  const out = new Uint32Array(alignUp(Math.max(fields.length, 4), 4));
  const f = new Float32Array(out.buffer);
  const fl = new Set(floats);
  fields.forEach((v, i) => {
    if (fl.has(i)) f[i] = v;
    else out[i] = v < 0 ? (v >>> 0) : v;
  });
  return out;
}

/** Work out the backend name from what the adapter tells (Deno reports none directly). */
function guessBackend(info: GPUAdapterInfo): string {
  const d = `${info.description} ${info.architecture}`.toLowerCase();
  if (Deno.build.os === "darwin") return "metal";
  if (Deno.build.os === "windows") return "dx12/vulkan";
  if (d.includes("llvmpipe")) return "vulkan (lavapipe, CPU)";
  return "vulkan";
}

/** Options for {@link acquireGpu}. */
export interface AcquireOptions {
  powerPreference?: GPUPowerPreference;
  /** Features to request in addition to the optional ones the adapter offers. */
  requiredFeatures?: GPUFeatureName[];
}

/**
 * On Linux, ask Deno's wgpu for the Vulkan backend alone unless DENO_WEBGPU_BACKEND is set. With
 * every backend enabled wgpu also loads Mesa's EGL for its GL backend (never used for compute
 * here), and EGL's teardown at process exit races with exiting threads: a heap-corruption abort
 * after all work is done, seen in about one run in five of the test suite on lavapipe.
 */
function preferVulkanOnLinux(): void {
  if (Deno.build.os !== "linux") return;
  try {
    if (Deno.env.get("DENO_WEBGPU_BACKEND") === undefined) {
      Deno.env.set("DENO_WEBGPU_BACKEND", "vulkan");
    }
  } catch {
    // no env permission: keep wgpu's default backends
  }
}

/**
 * Find an adapter and open a device with the adapter's real limits (not the defaults) and the
 * optional features it offers. Throws NoAdapterError when none exists.
 */
export async function acquireGpu(opts: AcquireOptions = {}): Promise<Gpu> {
  if (!("gpu" in navigator) || !navigator.gpu) throw new NoAdapterError();
  preferVulkanOnLinux();
  const adapter = await navigator.gpu.requestAdapter({
    powerPreference: opts.powerPreference ?? "high-performance",
  });
  if (!adapter) throw new NoAdapterError();
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMITS_THAT_MATTER) {
    const v = (adapter.limits as unknown as Record<string, number>)[k];
    if (typeof v === "number") requiredLimits[k] = v;
  }
  const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f));
  for (const f of opts.requiredFeatures ?? []) {
    if (!adapter.features.has(f)) throw new GpuError(`adapter lacks required feature ${f}`);
    if (!requiredFeatures.includes(f)) requiredFeatures.push(f);
  }
  const device = await adapter.requestDevice({
    label: "finetune",
    requiredLimits,
    requiredFeatures,
  });
  const info = adapter.info;
  const limits: Record<string, number> = {};
  for (const k of LIMITS_THAT_MATTER) {
    limits[k] = (device.limits as unknown as Record<string, number>)[k];
  }
  const summary: AdapterSummary = {
    description: info.description || "(no description)",
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    isFallback: Boolean((info as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter),
    backend: guessBackend(info),
    features: [...adapter.features].sort(),
    limits,
  };
  return new Gpu(adapter, device, summary);
}

let shared: Promise<Gpu> | null = null;

/** One Gpu per process, opened on first use (tests and CLI share it). */
export function sharedGpu(): Promise<Gpu> {
  if (!shared) shared = acquireGpu();
  return shared;
}
