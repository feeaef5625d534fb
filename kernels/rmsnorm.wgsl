// RMSNorm y = x · rstd · w (rstd = 1/sqrt(mean(x²) + eps) saved per row) and its backward.
//
// Forward and backward-dx: one workgroup per row (2-D grid of workgroups, x fastest), each
// invocation strides over the channels, row sums by a fixed tree (any C, up to 8192 and beyond);
// on CPU adapters the *_rows forms instead give each invocation a whole row (see below).
// Backward-dw: partial sums over blocks of ROWS rows into a workspace (ROWS_BLOCKS, C), then a
// fixed-order reduce over the blocks that adds into dw: deterministic, no atomics.

const WG: u32 = 256u;
// Invocations per row of the forward and backward-dx kernels: a power of two ≤ WG, chosen by the
// launcher from C (a 256-wide tree wastes most of its barriers on a 64-channel row).
override ROW_WG: u32 = 256u;
const ROWS: u32 = 64u; // rows per dw partial

override ACCUMULATE: bool = false; // backward dx: dx += instead of dx =

struct Params {
  T: u32, // rows
  C: u32, // channels
  eps: f32, // forward only
  blocks: u32, // dw kernels: ceil(T / ROWS)
}

@group(0) @binding(0) var<uniform> p: Params;

// #include flat_index.wgsl

// rmsnorm_forward
@group(0) @binding(1) var<storage, read_write> y: array<f32>; // (T, C)
@group(0) @binding(2) var<storage, read_write> rstd_out: array<f32>; // (T)
@group(0) @binding(3) var<storage, read> x_f: array<f32>; // (T, C)
@group(0) @binding(4) var<storage, read> w_f: array<f32>; // (C)

// rmsnorm_backward_dx
@group(0) @binding(1) var<storage, read_write> dx: array<f32>; // (T, C)
@group(0) @binding(2) var<storage, read> dy_b: array<f32>; // (T, C)
@group(0) @binding(3) var<storage, read> x_b: array<f32>; // (T, C)
@group(0) @binding(4) var<storage, read> w_b: array<f32>; // (C)
@group(0) @binding(5) var<storage, read> rstd_b: array<f32>; // (T)

// rmsnorm_backward_dw_partial
@group(0) @binding(1) var<storage, read_write> ws_out: array<f32>; // (blocks, C)
@group(0) @binding(2) var<storage, read> dy_p: array<f32>; // (T, C)
@group(0) @binding(3) var<storage, read> x_p: array<f32>; // (T, C)
@group(0) @binding(4) var<storage, read> rstd_p: array<f32>; // (T)

// rmsnorm_backward_dw_reduce
@group(0) @binding(1) var<storage, read_write> dw: array<f32>; // (C)
@group(0) @binding(2) var<storage, read> ws_in: array<f32>; // (blocks, C)

var<workgroup> red: array<f32, WG>;

/** Fixed-order tree sum of `v` over the workgroup; every invocation gets the total. */
fn workgroup_sum(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ROW_WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      red[lid] = red[lid] + red[lid + s];
    }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(ROW_WG)
fn rmsnorm_forward(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid_v: vec3<u32>,
) {
  let lid = lid_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let t = wid.x + wid.y * nwg.x;
  if (t >= p.T) {
    return; // surplus workgroup of the grid (uniform)
  }
  let row = t * p.C;
  var ss = 0.0;
  for (var c = lid; c < p.C; c += ROW_WG) {
    let v = x_f[row + c];
    ss = ss + v * v;
  }
  let total = workgroup_sum(lid, ss);
  let r = inverseSqrt(total / f32(p.C) + p.eps);
  for (var c = lid; c < p.C; c += ROW_WG) {
    y[row + c] = (x_f[row + c] * r) * w_f[c];
  }
  if (lid == 0u) {
    rstd_out[t] = r;
  }
}

// dx = rstd · (dy·w − x · rstd² · Σ_c(dy·w·x) / C)
@compute @workgroup_size(ROW_WG)
fn rmsnorm_backward_dx(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid_v: vec3<u32>,
) {
  let lid = lid_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let t = wid.x + wid.y * nwg.x;
  if (t >= p.T) {
    return;
  }
  let row = t * p.C;
  var dot = 0.0;
  for (var c = lid; c < p.C; c += ROW_WG) {
    dot = dot + dy_b[row + c] * w_b[c] * x_b[row + c];
  }
  let total = workgroup_sum(lid, dot);
  let r = rstd_b[t];
  let k = r * r * total / f32(p.C);
  for (var c = lid; c < p.C; c += ROW_WG) {
    let g = r * (dy_b[row + c] * w_b[c] - x_b[row + c] * k);
    if (ACCUMULATE) {
      dx[row + c] = dx[row + c] + g;
    } else {
      dx[row + c] = g;
    }
  }
}

// CPU adapters (lavapipe): one invocation per row, no workgroup memory and no barriers, which
// cost more there than the arithmetic of a short row. ROW_LANES rows per workgroup (one SIMD row).
// The row sums run in channel order, so results differ from the tree forms by rounding only.
const ROW_LANES: u32 = 8u;

@compute @workgroup_size(ROW_LANES)
fn rmsnorm_forward_rows(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let t = flat_index(gid, nwg, ROW_LANES);
  if (t >= p.T) {
    return;
  }
  let row = t * p.C;
  var ss = 0.0;
  for (var c = 0u; c < p.C; c++) {
    let v = x_f[row + c];
    ss = ss + v * v;
  }
  let r = inverseSqrt(ss / f32(p.C) + p.eps);
  for (var c = 0u; c < p.C; c++) {
    y[row + c] = (x_f[row + c] * r) * w_f[c];
  }
  rstd_out[t] = r;
}

@compute @workgroup_size(ROW_LANES)
fn rmsnorm_backward_dx_rows(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let t = flat_index(gid, nwg, ROW_LANES);
  if (t >= p.T) {
    return;
  }
  let row = t * p.C;
  var dot = 0.0;
  for (var c = 0u; c < p.C; c++) {
    dot = dot + dy_b[row + c] * w_b[c] * x_b[row + c];
  }
  let r = rstd_b[t];
  let k = r * r * dot / f32(p.C);
  for (var c = 0u; c < p.C; c++) {
    let g = r * (dy_b[row + c] * w_b[c] - x_b[row + c] * k);
    if (ACCUMULATE) {
      dx[row + c] = dx[row + c] + g;
    } else {
      dx[row + c] = g;
    }
  }
}

// The row kernels on vec4s of four channels (C a multiple of 4): the same sums in the same channel
// order, so bit-identical, with a quarter of the loads (on lavapipe each storage load is a per-lane
// loop; a vec4 pays its mask test once per lane for four values).
@group(0) @binding(1) var<storage, read_write> y4: array<vec4<f32>>; // (T, C / 4)
@group(0) @binding(3) var<storage, read> x_f4: array<vec4<f32>>; // (T, C / 4)
@group(0) @binding(4) var<storage, read> w_f4: array<vec4<f32>>; // (C / 4)
@group(0) @binding(1) var<storage, read_write> dx4: array<vec4<f32>>; // (T, C / 4)
@group(0) @binding(2) var<storage, read> dy_b4: array<vec4<f32>>; // (T, C / 4)
@group(0) @binding(3) var<storage, read> x_b4: array<vec4<f32>>; // (T, C / 4)
@group(0) @binding(4) var<storage, read> w_b4: array<vec4<f32>>; // (C / 4)

@compute @workgroup_size(ROW_LANES)
fn rmsnorm_forward_rows4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let t = flat_index(gid, nwg, ROW_LANES);
  if (t >= p.T) {
    return;
  }
  let c4 = p.C / 4u;
  let row = t * c4;
  var ss = 0.0;
  for (var c = 0u; c < c4; c++) {
    let v = x_f4[row + c];
    ss = ss + v.x * v.x;
    ss = ss + v.y * v.y;
    ss = ss + v.z * v.z;
    ss = ss + v.w * v.w;
  }
  let r = inverseSqrt(ss / f32(p.C) + p.eps);
  for (var c = 0u; c < c4; c++) {
    y4[row + c] = (x_f4[row + c] * r) * w_f4[c];
  }
  rstd_out[t] = r;
}

@compute @workgroup_size(ROW_LANES)
fn rmsnorm_backward_dx_rows4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let t = flat_index(gid, nwg, ROW_LANES);
  if (t >= p.T) {
    return;
  }
  let c4 = p.C / 4u;
  let row = t * c4;
  var dot = 0.0;
  for (var c = 0u; c < c4; c++) {
    let e = dy_b4[row + c] * w_b4[c] * x_b4[row + c];
    dot = dot + e.x;
    dot = dot + e.y;
    dot = dot + e.z;
    dot = dot + e.w;
  }
  let r = rstd_b[t];
  let k = r * r * dot / f32(p.C);
  for (var c = 0u; c < c4; c++) {
    let g = r * (dy_b4[row + c] * w_b4[c] - x_b4[row + c] * k);
    if (ACCUMULATE) {
      dx4[row + c] = dx4[row + c] + g;
    } else {
      dx4[row + c] = g;
    }
  }
}

// ws[b, c] = Σ_{t in rows b·ROWS ..} dy[t, c] · x[t, c] · rstd[t], in row order.
@compute @workgroup_size(WG)
fn rmsnorm_backward_dw_partial(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid_v: vec3<u32>,
) {
  let lid = lid_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let cblocks = (p.C + WG - 1u) / WG;
  let g = wid.x + wid.y * nwg.x;
  let b = g / cblocks;
  let c = (g - b * cblocks) * WG + lid;
  if (b >= p.blocks || c >= p.C) {
    return;
  }
  let t1 = min(b * ROWS + ROWS, p.T);
  var s = 0.0;
  for (var t = b * ROWS; t < t1; t++) {
    let i = t * p.C + c;
    s = s + dy_p[i] * (x_p[i] * rstd_p[t]);
  }
  ws_out[b * p.C + c] = s;
}

// dw[c] += Σ_b ws[b, c], in block order.
@compute @workgroup_size(WG)
fn rmsnorm_backward_dw_reduce(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let c = flat_index(gid, nwg, WG);
  if (c >= p.C) {
    return;
  }
  var s = 0.0;
  for (var b = 0u; b < p.blocks; b++) {
    s = s + ws_in[b * p.C + c];
  }
  dw[c] = dw[c] + s;
}
