// Token embedding lookup out = scale · table[ids], and its deterministic backward (no atomics).
//
// Forward: one element of out per invocation on a 2-D grid of workgroups (x fastest).
// Backward: one workgroup per (unique id, block of WG channels); it adds the token rows of its id
// in ascending position order (from the CPU-built index) and owns dtable[id, block] alone, so the
// result is bit-identical across runs. Layout of the index (u32, capacity T):
//   [0] U unique ids, [1] tokens, [2 .. 2+T) unique ids ascending,
//   [2+T .. 3+2T) segment starts (U+1 used), [3+2T .. 3+3T) token positions grouped by id.

const WG: u32 = 256u;

struct Params {
  T: u32, // tokens (forward), index capacity (backward)
  C: u32, // channels
  scale: f32, // embedding multiplier (Granite), 1 otherwise
  cblocks: u32, // backward: ceil(C / WG)
  v0: u32, // first vocabulary row held by `table` (a row shard of a larger table), else 0
  rows: u32, // rows held by `table`; 0 = all of it
  vocab: u32, // rows of the whole table; 0 = the rows of `table`
  _pad: u32,
}

/** Rows held by the bound table (shard) and of the whole table. */
fn shard_rows(len: u32) -> vec2<u32> {
  let held = select(p.rows, len / p.C, p.rows == 0u);
  let vocab = select(p.vocab, p.v0 + held, p.vocab == 0u);
  return vec2<u32>(held, vocab);
}

@group(0) @binding(0) var<uniform> p: Params;

// #include flat_index.wgsl

// embedding_forward
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (T, C)
@group(0) @binding(2) var<storage, read> table: array<f32>; // (V, C)
@group(0) @binding(3) var<storage, read> ids: array<u32>; // (T)

// embedding_backward
@group(0) @binding(1) var<storage, read_write> dtable: array<f32>; // (V, C)
@group(0) @binding(2) var<storage, read> dout: array<f32>; // (T, C)
@group(0) @binding(3) var<storage, read> index: array<u32>; // (3T + 3)

@compute @workgroup_size(WG)
fn embedding_forward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.T * p.C) {
    return;
  }
  let t = i / p.C;
  let c = i - t * p.C;
  let id = ids[t];
  let r = shard_rows(arrayLength(&table));
  if (id >= r.y) {
    // id outside the table: NaN (written by the last shard), never a silent wrong row
    if (p.v0 + r.x >= r.y) {
      out[i] = bitcast<f32>(0x7fc00000u);
    }
    return;
  }
  if (id < p.v0 || id >= p.v0 + r.x) {
    return; // another shard's row
  }
  out[i] = p.scale * table[(id - p.v0) * p.C + c];
}

@compute @workgroup_size(WG)
fn embedding_backward(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid_v: vec3<u32>,
) {
  let lid = lid_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let g = wid.x + wid.y * nwg.x;
  let u = g / p.cblocks;
  let c = (g - u * p.cblocks) * WG + lid;
  if (u >= index[0] || c >= p.C) {
    return; // more workgroups than unique ids: the surplus exits
  }
  let id = index[2u + u];
  let r = shard_rows(arrayLength(&dtable));
  if (id < p.v0 || id >= p.v0 + r.x) {
    return; // another shard's row, or outside the table (the CPU index builder rejects those)
  }
  let seg = 2u + p.T;
  let pos = 3u + 2u * p.T;
  var s = 0.0;
  for (var k = index[seg + u]; k < index[seg + u + 1u]; k++) {
    s = s + dout[index[pos + k] * p.C + c];
  }
  let o = (id - p.v0) * p.C + c;
  dtable[o] = dtable[o] + p.scale * s;
}
