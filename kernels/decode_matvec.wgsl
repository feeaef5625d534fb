// Matrix-vector products for single-token decoding: y = [y +] alpha · (W·x [+ b]), and the fused
// SwiGLU MLP input y = silu(Wg·x) · (Wu·x).
//
// A workgroup of 256 threads computes ROWS = 256 / LANES rows with LANES threads per row (a power
// of two up to 32, chosen by the launcher from K); lane l sums the columns l, l + LANES, ...
// (coalesced reads of W), then the LANES partials are reduced in a fixed tree order.
// The vec4 entries read W and x four floats at a time (K a multiple of 4, 16-byte aligned slices).

const WG: u32 = 256u; // ROWS · LANES

override LANES: u32 = 32u; // threads per row: a power of two, 1..32

override ACCUMULATE: u32 = 0u; // 1: y += alpha · (...), 0: y = alpha · (...)

struct Params {
  n: u32, // rows of W (outputs)
  k: u32, // columns of W (inputs)
  alpha: f32,
  y_off: u32, // matvec: first element of y written (row shards of W); 0 for matvecSwiglu
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>; // (N)
@group(0) @binding(2) var<storage, read> x: array<f32>; // (K)
@group(0) @binding(3) var<storage, read> w: array<f32>; // (N, K)
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>; // (K / 4)
@group(0) @binding(3) var<storage, read> w4: array<vec4<f32>>; // (N, K / 4)
@group(0) @binding(4) var<storage, read> b: array<f32>; // (N)
@group(0) @binding(4) var<storage, read> wu: array<f32>; // (N, K) up_proj (swiglu entries; W = gate)
@group(0) @binding(4) var<storage, read> wu4: array<vec4<f32>>; // (N, K / 4)

var<workgroup> red: array<f32, WG>;
var<workgroup> red2: array<f32, WG>;

fn row_of(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * (WG / LANES) + li / LANES;
}

fn dot_scalar(n: u32, lane: u32) -> f32 {
  var acc = 0.0;
  if (n < p.n) {
    let o = n * p.k;
    for (var c = lane; c < p.k; c += LANES) {
      acc += w[o + c] * x[c];
    }
  }
  return acc;
}

fn dot_vec4(n: u32, lane: u32) -> f32 {
  var acc = vec4<f32>(0.0);
  if (n < p.n) {
    let k4 = p.k / 4u;
    let o = n * k4;
    for (var c = lane; c < k4; c += LANES) {
      acc += w4[o + c] * x4[c];
    }
  }
  return (acc.x + acc.y) + (acc.z + acc.w);
}

// Reduce the 32 lane partials of each row (fixed tree); lane 0 of a row gets the full dot.
fn reduce_rows(li: u32, v: f32) -> f32 {
  red[li] = v;
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (li % LANES < s) {
      red[li] = red[li] + red[li + s];
    }
  }
  workgroupBarrier();
  return red[li];
}

fn dot_scalar_up(n: u32, lane: u32) -> f32 {
  var acc = 0.0;
  if (n < p.n) {
    let o = n * p.k;
    for (var c = lane; c < p.k; c += LANES) {
      acc += wu[o + c] * x[c];
    }
  }
  return acc;
}

fn dot_vec4_up(n: u32, lane: u32) -> f32 {
  var acc = vec4<f32>(0.0);
  if (n < p.n) {
    let k4 = p.k / 4u;
    let o = n * k4;
    for (var c = lane; c < k4; c += LANES) {
      acc += wu4[o + c] * x4[c];
    }
  }
  return (acc.x + acc.y) + (acc.z + acc.w);
}

// The same fixed tree as reduce_rows, over a second array (the up projection).
fn reduce_rows2(li: u32, v: f32) -> f32 {
  red2[li] = v;
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (li % LANES < s) {
      red2[li] = red2[li] + red2[li + s];
    }
  }
  workgroupBarrier();
  return red2[li];
}

// silu(g) · u, as swiglu_forward computes it.
fn swiglu(g: f32, u: f32) -> f32 {
  return g * (1.0 / (1.0 + exp(-g))) * u;
}

fn store(n: u32, v: f32) {
  if (ACCUMULATE == 1u) {
    y[p.y_off + n] = y[p.y_off + n] + p.alpha * v;
  } else {
    y[p.y_off + n] = p.alpha * v;
  }
}

@compute @workgroup_size(WG)
fn matvec(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) li_v: vec3<u32>,
) {
  let li = li_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let n = row_of(wid, nwg, li);
  let r = reduce_rows(li, dot_scalar(n, li % LANES));
  if (li % LANES == 0u && n < p.n) {
    store(n, r);
  }
}

@compute @workgroup_size(WG)
fn matvec_bias(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) li_v: vec3<u32>,
) {
  let li = li_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let n = row_of(wid, nwg, li);
  let r = reduce_rows(li, dot_scalar(n, li % LANES));
  if (li % LANES == 0u && n < p.n) {
    store(n, r + b[n]);
  }
}

@compute @workgroup_size(WG)
fn matvec4(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) li_v: vec3<u32>,
) {
  let li = li_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let n = row_of(wid, nwg, li);
  let r = reduce_rows(li, dot_vec4(n, li % LANES));
  if (li % LANES == 0u && n < p.n) {
    store(n, r);
  }
}

@compute @workgroup_size(WG)
fn matvec4_bias(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) li_v: vec3<u32>,
) {
  let li = li_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let n = row_of(wid, nwg, li);
  let r = reduce_rows(li, dot_vec4(n, li % LANES));
  if (li % LANES == 0u && n < p.n) {
    store(n, r + b[n]);
  }
}

@compute @workgroup_size(WG)
fn matvec_swiglu(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) li_v: vec3<u32>,
) {
  let li = li_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let n = row_of(wid, nwg, li);
  let g = reduce_rows(li, dot_scalar(n, li % LANES));
  let u = reduce_rows2(li, dot_scalar_up(n, li % LANES));
  if (li % LANES == 0u && n < p.n) {
    y[n] = swiglu(g, u);
  }
}

@compute @workgroup_size(WG)
fn matvec4_swiglu(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) li_v: vec3<u32>,
) {
  let li = li_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let n = row_of(wid, nwg, li);
  let g = reduce_rows(li, dot_vec4(n, li % LANES));
  let u = reduce_rows2(li, dot_vec4_up(n, li % LANES));
  if (li % LANES == 0u && n < p.n) {
    y[n] = swiglu(g, u);
  }
}
