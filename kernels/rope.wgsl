// Rotary position embedding (HF rotate-half layout): forward and backward, in place or not.
//
// One thread rotates one (token, head) row of D values: for i < D/2 the pair (x[i], x[i + D/2])
// turns by the angle table[pos[t], i]. A row per thread (not a pair) keeps the index arithmetic
// out of the loop, which is 3× faster on CPU drivers. Token t's heads start at t·ld + off: a dense
// (T, H, D) tensor (ld = H·D, off = 0), or the q or k columns of a fused (T, q+k+v) projection.

struct Params {
  rows: u32, // T · H
  h: u32, // heads per token
  half: u32, // D / 2
  ld: u32, // elements between tokens
  off: u32, // element offset of token 0's first head
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// #include flat_index.wgsl
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (T, ld) from off
@group(0) @binding(2) var<storage, read> x: array<f32>; // (T, ld) from off
@group(0) @binding(3) var<storage, read> pos: array<u32>; // (T)
@group(0) @binding(4) var<storage, read> table: array<vec2<f32>>; // (maxPos, D/2) of (cos, sin)

// out[i] = a·cos − b·sin, out[i + D/2] = b·cos + a·sin; sin_sign −1 gives the transpose.
fn apply(row: u32, sin_sign: f32) {
  if (row >= p.rows) {
    return;
  }
  let tb = pos[row / p.h] * p.half;
  let base = (row / p.h) * p.ld + p.off + (row % p.h) * 2u * p.half;
  for (var i = 0u; i < p.half; i++) {
    let cs = table[tb + i];
    let s = sin_sign * cs.y;
    let a = x[base + i];
    let b = x[base + i + p.half];
    out[base + i] = a * cs.x - b * s;
    out[base + i + p.half] = b * cs.x + a * s;
  }
}

// Same, reading and writing `out` (in place).
fn apply_inplace(row: u32, sin_sign: f32) {
  if (row >= p.rows) {
    return;
  }
  let tb = pos[row / p.h] * p.half;
  let base = (row / p.h) * p.ld + p.off + (row % p.h) * 2u * p.half;
  for (var i = 0u; i < p.half; i++) {
    let cs = table[tb + i];
    let s = sin_sign * cs.y;
    let a = out[base + i];
    let b = out[base + i + p.half];
    out[base + i] = a * cs.x - b * s;
    out[base + i + p.half] = b * cs.x + a * s;
  }
}

// In place on vec4s (D/2, ld and off multiples of 4): the same arithmetic per component, so
// bit-identical, with a quarter of the loads and stores (a vec4 pays lavapipe's per-lane mask test
// once for four values). The table's (cos, sin) pairs are read two per vec4.
@group(0) @binding(1) var<storage, read_write> out4: array<vec4<f32>>; // (T, ld / 4) from off / 4
@group(0) @binding(4) var<storage, read> table4: array<vec4<f32>>; // (maxPos, D/4) of 2 pairs

fn apply_inplace4(row: u32, sin_sign: f32) {
  if (row >= p.rows) {
    return;
  }
  let tb = pos[row / p.h] * p.half / 2u; // vec4 index of the row's first two (cos, sin) pairs
  let base = ((row / p.h) * p.ld + p.off + (row % p.h) * 2u * p.half) / 4u;
  let h4 = p.half / 4u;
  for (var i = 0u; i < h4; i++) {
    let t0 = table4[tb + 2u * i];
    let t1 = table4[tb + 2u * i + 1u];
    let c = vec4<f32>(t0.x, t0.z, t1.x, t1.z);
    let s = sin_sign * vec4<f32>(t0.y, t0.w, t1.y, t1.w);
    let a = out4[base + i];
    let b = out4[base + i + h4];
    out4[base + i] = a * c - b * s;
    out4[base + i + h4] = b * c + a * s;
  }
}

@compute @workgroup_size(64)
fn rope_forward_inplace4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  apply_inplace4(flat_index(gid, nwg, 64u), 1.0);
}

@compute @workgroup_size(64)
fn rope_backward_inplace4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  apply_inplace4(flat_index(gid, nwg, 64u), -1.0);
}

@compute @workgroup_size(64)
fn rope_forward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  apply(flat_index(gid, nwg, 64u), 1.0);
}

@compute @workgroup_size(64)
fn rope_backward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  apply(flat_index(gid, nwg, 64u), -1.0);
}

@compute @workgroup_size(64)
fn rope_forward_inplace(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  apply_inplace(flat_index(gid, nwg, 64u), 1.0);
}

@compute @workgroup_size(64)
fn rope_backward_inplace(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  apply_inplace(flat_index(gid, nwg, 64u), -1.0);
}
