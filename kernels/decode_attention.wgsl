// Decode attention against a GPU KV cache: RoPE of q and k with K/V appended, then split-K attention of one query row (GQA).
//
// The cache of a layer is (Lmax, Hkv, D) row-major; `step[0]` is the position p of the token
// being decoded (it attends to cache rows 0..p). rope_append rotates q in place (HF rotate-half,
// the same arithmetic as rope.wgsl) and writes the rotated k and the raw v into cache row p. decode_attention_partial: workgroup (key chunk c
// of CHUNK rows, q head h) writes the chunk's max score m, Σ exp(s − m) and Σ exp(s − m)·v into
// the workspace; decode_attention_combine: workgroup per q head merges the chunks in a fixed
// order. Deterministic: every reduction has a fixed order, no atomics.

const CHUNK: u32 = 64u; // keys per partial workgroup (= threads)
const MASKED: f32 = -1.0e30;

override D: u32 = 64u; // head dim

struct Params {
  hq: u32, // query heads
  hkv: u32, // key/value heads
  group: u32, // hq / hkv
  lmax: u32, // cache rows
  scale: f32, // softmax scale
  chunks: u32, // ceil(lmax / CHUNK): partials per head in the workspace
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// rope_append bindings
@group(0) @binding(1) var<storage, read_write> a_q: array<f32>; // (Hq, D) rotated in place
@group(0) @binding(2) var<storage, read_write> a_kc: array<f32>; // (Lmax, Hkv, D)
@group(0) @binding(3) var<storage, read_write> a_vc: array<f32>; // (Lmax, Hkv, D)
@group(0) @binding(4) var<storage, read> a_k: array<f32>; // (Hkv, D) new key (before RoPE)
@group(0) @binding(5) var<storage, read> a_v: array<f32>; // (Hkv, D) new value
@group(0) @binding(6) var<storage, read> a_step: array<u32>; // [pos, ...]
@group(0) @binding(7) var<storage, read> a_table: array<vec2<f32>>; // (Lmax, D/2) (cos, sin)

// decode_attention_partial bindings
@group(0) @binding(1) var<storage, read_write> s_part: array<f32>; // (Hq, chunks, D + 2)
@group(0) @binding(2) var<storage, read> s_q: array<f32>; // (Hq, D)
@group(0) @binding(3) var<storage, read> s_kc: array<f32>; // (Lmax, Hkv, D)
@group(0) @binding(4) var<storage, read> s_vc: array<f32>; // (Lmax, Hkv, D)
@group(0) @binding(5) var<storage, read> s_step: array<u32>; // [pos, ...]

// decode_attention_combine bindings
@group(0) @binding(1) var<storage, read_write> c_o: array<f32>; // (Hq, D)
@group(0) @binding(2) var<storage, read> c_part: array<f32>; // (Hq, chunks, D + 2)
@group(0) @binding(3) var<storage, read> c_step: array<u32>; // [pos, ...]

var<workgroup> wq: array<f32, D>; // the query row of this head
var<workgroup> wred: array<f32, CHUNK>; // reduction scratch
var<workgroup> wp: array<f32, CHUNK>; // exp(s − m) of the chunk's keys
var<workgroup> wpos: u32;

// One thread per rotation pair of q (Hq·D/2), then per pair of k (Hkv·D/2, written to the
// cache row), then per element of v (Hkv·D, copied to the cache row).
@compute @workgroup_size(256)
fn rope_append(@builtin(global_invocation_id) gid: vec3<u32>) {
  let half = D / 2u;
  let nq = p.hq * half;
  let nk = p.hkv * half;
  let nv = p.hkv * D;
  let e = gid.x;
  let pos = a_step[0];
  if (e < nq) {
    let i = e % half;
    let base = (e / half) * D + i;
    let cs = a_table[pos * half + i];
    let a = a_q[base];
    let b = a_q[base + half];
    a_q[base] = a * cs.x - b * cs.y;
    a_q[base + half] = b * cs.x + a * cs.y;
  } else if (e < nq + nk) {
    let k = e - nq;
    let i = k % half;
    let base = (k / half) * D + i;
    let cs = a_table[pos * half + i];
    let a = a_k[base];
    let b = a_k[base + half];
    let row = pos * nv;
    a_kc[row + base] = a * cs.x - b * cs.y;
    a_kc[row + base + half] = b * cs.x + a * cs.y;
  } else if (e < nq + nk + nv) {
    let v = e - nq - nk;
    a_vc[pos * nv + v] = a_v[v];
  }
}

// Tree reduction of wred (max when `is_max`, else sum); every thread returns the result.
fn reduce(li: u32, is_max: bool) -> f32 {
  for (var s = CHUNK / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (li < s) {
      if (is_max) {
        wred[li] = max(wred[li], wred[li + s]);
      } else {
        wred[li] = wred[li] + wred[li + s];
      }
    }
  }
  workgroupBarrier();
  let r = wred[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(CHUNK)
fn decode_attention_partial(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) li_v: vec3<u32>,
) {
  let li = li_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  if (li == 0u) {
    wpos = s_step[0];
  }
  let pos = workgroupUniformLoad(&wpos);
  let c = wid.x;
  let h = wid.y;
  let j0 = c * CHUNK;
  if (j0 > pos) {
    return; // chunk past the last key: never read by the combine
  }
  let kvh = h / p.group;
  for (var d = li; d < D; d += CHUNK) {
    wq[d] = s_q[h * D + d];
  }
  workgroupBarrier();
  let j = j0 + li;
  let valid = j <= pos;
  let ks = p.hkv * D;
  var s = MASKED;
  if (valid) {
    let ko = j * ks + kvh * D;
    var acc = 0.0;
    for (var d = 0u; d < D; d++) {
      acc += wq[d] * s_kc[ko + d];
    }
    s = acc * p.scale;
  }
  wred[li] = s;
  let m = reduce(li, true);
  let e = select(0.0, exp(s - m), valid);
  wp[li] = e;
  wred[li] = e;
  let l = reduce(li, false);
  let n = min(CHUNK, pos + 1u - j0);
  let base = (h * p.chunks + c) * (D + 2u);
  if (li == 0u) {
    s_part[base] = m;
    s_part[base + 1u] = l;
  }
  for (var d = li; d < D; d += CHUNK) {
    var acc = 0.0;
    for (var jj = 0u; jj < n; jj++) {
      acc += wp[jj] * s_vc[(j0 + jj) * ks + kvh * D + d];
    }
    s_part[base + 2u + d] = acc;
  }
}

@compute @workgroup_size(CHUNK)
fn decode_attention_combine(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) li_v: vec3<u32>,
) {
  let li = li_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let h = wid.x;
  let nc = c_step[0] / CHUNK + 1u;
  let stride = D + 2u;
  let head = h * p.chunks * stride;
  var mx = MASKED;
  for (var c = 0u; c < nc; c++) {
    mx = max(mx, c_part[head + c * stride]);
  }
  var denom = 0.0;
  for (var c = 0u; c < nc; c++) {
    denom += exp(c_part[head + c * stride] - mx) * c_part[head + c * stride + 1u];
  }
  let inv = 1.0 / denom;
  for (var d = li; d < D; d += CHUNK) {
    var acc = 0.0;
    for (var c = 0u; c < nc; c++) {
      acc += exp(c_part[head + c * stride] - mx) * c_part[head + c * stride + 2u + d];
    }
    c_o[h * D + d] = acc * inv;
  }
}
