// Tensor arena: many f32 tensors packed at aligned offsets into a few large GPU buffers.
import { alignUp, type BufferSlice, type Gpu, GpuError } from "../kernels/runtime.ts";

/** A tensor placed in an arena: its slice and element count. */
export interface ArenaTensor extends BufferSlice {
  buffer: GPUBuffer;
  offset: number;
  size: number;
  numel: number;
  label: string;
}

/** One buffer of an arena and how much of it is used. */
interface Chunk {
  buffer: GPUBuffer | null;
  used: number;
  capacity: number;
  /** The tensor's name when the chunk holds one tensor (separate mode). */
  label?: string;
}

/**
 * Packs tensors into buffers no larger than one storage binding, so each tensor can be bound
 * whole. Layout is planned first (`reserve`), buffers are created by `allocate()`.
 */
export class TensorArena {
  readonly chunks: Chunk[] = [];
  private pending: { t: ArenaTensor; chunk: number }[] = [];
  private readonly chunkBytes: number;
  static readonly ALIGN = 256;

  /**
   * `separate`: every tensor gets a buffer of its own. WebGPU forbids binding one buffer as
   * writable and readable in the same dispatch, so tensors that a kernel writes while reading
   * another (activations, workspaces) must not share a buffer; read-only weights may.
   */
  constructor(
    readonly gpu: Gpu,
    readonly label: string,
    maxChunkBytes?: number,
    readonly separate = false,
  ) {
    const lim = gpu.limits;
    this.chunkBytes = Math.min(
      maxChunkBytes ?? 1 << 30,
      lim.maxStorageBufferBindingSize,
      lim.maxBufferSize,
    );
    this.chunkBytes -= this.chunkBytes % TensorArena.ALIGN;
  }

  /** Plan a tensor of `numel` f32 elements; its buffer exists after {@link allocate}. */
  reserve(label: string, numel: number): ArenaTensor {
    const bytes = alignUp(Math.max(numel, 1) * 4, 4);
    if (bytes > this.chunkBytes) {
      throw new GpuError(
        `tensor of ${bytes} bytes exceeds one storage binding (${this.chunkBytes} bytes)`,
        `${this.label}:${label}`,
      );
    }
    let ci = this.separate
      ? -1
      : this.chunks.findIndex((c) => alignUp(c.used, TensorArena.ALIGN) + bytes <= c.capacity);
    if (ci < 0) {
      this.chunks.push({
        buffer: null,
        used: 0,
        capacity: this.chunkBytes,
        label: this.separate ? label : undefined,
      });
      ci = this.chunks.length - 1;
    }
    const c = this.chunks[ci];
    const offset = alignUp(c.used, TensorArena.ALIGN);
    c.used = offset + bytes;
    const t = { buffer: null as unknown as GPUBuffer, offset, size: bytes, numel, label };
    this.pending.push({ t, chunk: ci });
    return t;
  }

  /**
   * Plan tensors back to back in one region (one binding of all of them serves a fused GEMM):
   * the region and each tensor's view into it, or null when they cannot be: a tensor whose size is
   * not a multiple of ALIGN (the next view would start unaligned), or a region larger than one
   * binding.
   */
  reserveGroup(
    label: string,
    parts: { label: string; numel: number }[],
  ): { whole: ArenaTensor; parts: ArenaTensor[] } | null {
    if (!this.groupable(parts.map((p) => p.numel))) return null;
    const total = parts.reduce((s, p) => s + p.numel, 0);
    const whole = this.reserve(label, total);
    const chunk = this.pending[this.pending.length - 1].chunk;
    let offset = whole.offset;
    const views = parts.map((p) => {
      const t = {
        buffer: null as unknown as GPUBuffer,
        offset,
        size: p.numel * 4,
        numel: p.numel,
        label: p.label,
      };
      offset += p.numel * 4;
      this.pending.push({ t, chunk });
      return t;
    });
    return { whole, parts: views };
  }

  /** Whether reserveGroup would take tensors of these element counts. */
  groupable(numels: number[]): boolean {
    return numels.every((n) => (n * 4) % TensorArena.ALIGN === 0) &&
      numels.reduce((s, n) => s + n, 0) * 4 <= this.chunkBytes;
  }

  /** Create the buffers (each sized to its use) and fill in every reserved tensor's buffer. */
  allocate(): void {
    this.chunks.forEach((c, i) => {
      if (!c.buffer) {
        c.capacity = alignUp(c.used, TensorArena.ALIGN);
        c.buffer = this.gpu.buffer(
          `${this.label}#${i}${c.label ? `:${c.label}` : ""}`,
          Math.max(c.capacity, 256),
        );
      }
    });
    for (const { t, chunk } of this.pending) t.buffer = this.chunks[chunk].buffer!;
    this.pending = [];
  }

  /** Total bytes of the arena's buffers. */
  get bytes(): number {
    return this.chunks.reduce((s, c) => s + alignUp(c.used, TensorArena.ALIGN), 0);
  }

  /** Each buffer as one flat slice (for whole-arena ops such as AdamW and gradient norms). */
  flat(): { buffer: GPUBuffer; numel: number }[] {
    return this.chunks.map((c) => ({ buffer: c.buffer!, numel: alignUp(c.used, 256) / 4 }));
  }

  /** Destroy every buffer. */
  destroy(): void {
    for (const c of this.chunks) c.buffer?.destroy();
  }
}
