// Rotary position embedding (Hugging Face rotate-half layout), forward and backward, optionally in place.

struct Params {
  n: u32, // T · H · D/2 rotation pairs
  h: u32, // heads per token
  half: u32, // D / 2
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (T, H, D)
@group(0) @binding(2) var<storage, read> x: array<f32>; // (T, H, D)
@group(0) @binding(3) var<storage, read> pos: array<u32>; // (T)
@group(0) @binding(4) var<storage, read> table: array<vec2<f32>>; // (maxPos, D/2) (cos, sin)

// Element index of the first value of pair `k`, and the (cos, ±sin) of its angle.
struct Pair {
  base: u32,
  cs: vec2<f32>,
}

fn pair_of(k: u32, sin_sign: f32) -> Pair {
  let i = k % p.half;
  let th = k / p.half; // t · H + head
  let t = th / p.h;
  let cs = table[pos[t] * p.half + i];
  return Pair(th * 2u * p.half + i, vec2<f32>(cs.x, sin_sign * cs.y));
}

// out[i] = a·cos − b·sin, out[i+D/2] = b·cos + a·sin (sin negated for the backward).
fn rotate(a: f32, b: f32, cs: vec2<f32>) -> vec2<f32> {
  return vec2<f32>(a * cs.x - b * cs.y, b * cs.x + a * cs.y);
}

// Linear pair index of a 2-D dispatch of 256-wide workgroups.
fn linear(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

// Rotate pair k of x into out (out and x distinct buffers or ranges).
fn apply(k: u32, sin_sign: f32) {
  if (k >= p.n) {
    return;
  }
  let q = pair_of(k, sin_sign);
  let r = rotate(x[q.base], x[q.base + p.half], q.cs);
  out[q.base] = r.x;
  out[q.base + p.half] = r.y;
}

// Rotate pair k of out in place.
fn apply_inplace(k: u32, sin_sign: f32) {
  if (k >= p.n) {
    return;
  }
  let q = pair_of(k, sin_sign);
  let r = rotate(out[q.base], out[q.base + p.half], q.cs);
  out[q.base] = r.x;
  out[q.base + p.half] = r.y;
}

@compute @workgroup_size(256)
fn rope_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  apply(linear(gid, nwg), 1.0);
}

@compute @workgroup_size(256)
fn rope_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  apply(linear(gid, nwg), -1.0);
}

@compute @workgroup_size(256)
fn rope_forward_inplace(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  apply_inplace(linear(gid, nwg), 1.0);
}

@compute @workgroup_size(256)
fn rope_backward_inplace(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  apply_inplace(linear(gid, nwg), -1.0);
}
