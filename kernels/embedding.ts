// Launchers for the token embedding (forward lookup, deterministic backward) and its CPU index.
import { ELEMENTWISE_WG, grid2d } from "./elementwise.ts";
import {
  type BufferSlice,
  type Dispatch,
  type Gpu,
  packParams,
  type ParamArena,
} from "./runtime.ts";

const WG = 256; // WG in embedding.wgsl

/** u32 length of the backward index for a capacity of T tokens: 3T + 3. */
export function embeddingIndexLength(T: number): number {
  return 3 * T + 3;
}

/**
 * The backward index of `ids` (u32, length embeddingIndexLength(capacity)): [0] number of unique
 * ids U, [1] tokens, then `capacity` slots of unique ids (ascending), `capacity + 1` segment starts
 * (U + 1 used) and `capacity` token positions grouped by id (ascending within an id). Built on the
 * CPU each micro-batch; `vocabSize`, when given, rejects ids outside the table.
 */
export function buildEmbeddingIndex(
  ids: Uint32Array,
  capacity: number = ids.length,
  vocabSize?: number,
): Uint32Array {
  const T = ids.length;
  if (T > capacity) throw new Error(`embedding index: ${T} tokens exceed capacity ${capacity}`);
  if (T >= 2 ** 21) throw new Error(`embedding index: ${T} tokens is too many`);
  const keys = new Float64Array(T); // id · 2^21 + position: sorts by id, then position (exact)
  for (let t = 0; t < T; t++) {
    if (vocabSize !== undefined && ids[t] >= vocabSize) {
      throw new Error(`embedding index: token id ${ids[t]} at ${t} ≥ vocab size ${vocabSize}`);
    }
    keys[t] = ids[t] * 2 ** 21 + t;
  }
  keys.sort();
  const out = new Uint32Array(embeddingIndexLength(capacity));
  const uniq = 2, seg = 2 + capacity, pos = 3 + 2 * capacity;
  let U = 0;
  let prev = -1;
  for (let k = 0; k < T; k++) {
    const id = Math.floor(keys[k] / 2 ** 21);
    if (id !== prev) {
      out[uniq + U] = id;
      out[seg + U] = k;
      U++;
      prev = id;
    }
    out[pos + k] = keys[k] - id * 2 ** 21;
  }
  out[seg + U] = T;
  out[0] = U;
  out[1] = T;
  return out;
}

/**
 * out (T, C) = scale · table[ids[t]] with table (V, C), ids (T) u32. An id past the end of the
 * `table` binding gives a NaN row (bind the table with its exact size to catch every id ≥ V).
 */
export function embeddingForward(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    out: BufferSlice;
    table: BufferSlice;
    ids: BufferSlice;
    T: number;
    C: number;
    scale?: number;
    /** Row shard of a larger table: `table` holds rows [v0, v0 + rows) of `vocab`. */
    shard?: { v0: number; rows: number; vocab: number };
  },
): Dispatch[] {
  const { out, table, ids, T, C } = args;
  if (T * C === 0) return [];
  const kernel = gpu.kernel("embedding", "embedding_forward");
  const sh = args.shard ?? { v0: 0, rows: 0, vocab: 0 };
  const p = arena.alloc(packParams([T, C, args.scale ?? 1, 0, sh.v0, sh.rows, sh.vocab, 0], [2]));
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: out, 2: table, 3: ids }),
    workgroups: grid2d(gpu, Math.ceil((T * C) / ELEMENTWISE_WG)),
  }];
}

/**
 * dtable (V, C) += scale · Σ_{t: ids[t] = v} dout[t] for every id in `index`
 * (buildEmbeddingIndex, capacity T; rewritten each micro-batch). dout (T, C). Dispatched for the
 * worst case of T unique ids; workgroups past the index's count exit. Deterministic.
 */
export function embeddingBackward(
  gpu: Gpu,
  arena: ParamArena,
  args: {
    dtable: BufferSlice;
    dout: BufferSlice;
    index: BufferSlice;
    T: number;
    C: number;
    scale?: number;
    /** Row shard of a larger gradient: `dtable` holds rows [v0, v0 + rows) of `vocab`. */
    shard?: { v0: number; rows: number; vocab: number };
  },
): Dispatch[] {
  const { dtable, dout, index, T, C } = args;
  if (T * C === 0) return [];
  const cblocks = Math.ceil(C / WG);
  const kernel = gpu.kernel("embedding", "embedding_backward");
  const sh = args.shard ?? { v0: 0, rows: 0, vocab: 0 };
  const p = arena.alloc(
    packParams([T, C, args.scale ?? 1, cblocks, sh.v0, sh.rows, sh.vocab, 0], [2]),
  );
  return [{
    kernel,
    bindGroup: gpu.bind(kernel, { 0: p, 1: dtable, 2: dout, 3: index }),
    workgroups: grid2d(gpu, T * cblocks),
  }];
}
