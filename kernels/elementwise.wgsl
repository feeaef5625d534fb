// Elementwise kernels over flat f32 vectors: axpy, scale-copy, fill, copy, and a deterministic sum.
//
// Every kernel indexes one element per invocation on a 2-D grid of workgroups (x fastest), so N can
// exceed 65535 × WG; workgroups past the end exit at once. `sum_partials` / `sum_finalize` form a
// fixed-order two-level reduction (no atomics): bit-identical across runs on the same adapter.

const WG: u32 = 256u;
const SUM_PER_THREAD: u32 = 64u; // elements each invocation of sum_partials adds in sequence
const SUM_CHUNK: u32 = WG * SUM_PER_THREAD; // elements per workgroup of sum_partials (one partial)

struct Params {
  n: u32, // elements (sum_finalize: number of partials)
  alpha: f32, // axpy / scale_copy factor, fill value
  index: u32, // sum_finalize: element of acc that receives the sum
  zero: u32, // always 0: an opaque value that keeps the compiler from folding Kahan away
}

@group(0) @binding(0) var<uniform> p: Params;

// #include flat_index.wgsl

// axpy / scale_copy / copy / fill
@group(0) @binding(1) var<storage, read_write> y: array<f32>; // (n)
@group(0) @binding(2) var<storage, read> x: array<f32>; // (n)

// sum_partials
@group(0) @binding(1) var<storage, read_write> partials: array<f32>; // (ceil(n / SUM_CHUNK))
@group(0) @binding(2) var<storage, read> xs: array<f32>; // (n)

// sum_finalize
@group(0) @binding(1) var<storage, read_write> acc: array<f32>; // (> index)
@group(0) @binding(2) var<storage, read> parts: array<f32>; // (n partials)

// #include workgroup_sum.wgsl

/** Linear workgroup number on the 2-D grid. */
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(WG)
fn axpy(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) {
    return;
  }
  y[i] = y[i] + p.alpha * x[i];
}

@compute @workgroup_size(WG)
fn scale_copy(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) {
    return;
  }
  y[i] = p.alpha * x[i];
}

@compute @workgroup_size(WG)
fn copy(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) {
    return;
  }
  y[i] = x[i];
}

// axpy4 / scale_copy4 / copy4: the same on vec4s (n in vec4 units; the launcher uses them when N is
// a multiple of 4). On lavapipe a vec4 load or store tests the execution mask once per lane for
// four values (kernels/README.md).
@group(0) @binding(1) var<storage, read_write> y4: array<vec4<f32>>; // (n)
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>; // (n)

@compute @workgroup_size(WG)
fn axpy4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) {
    return;
  }
  y4[i] = y4[i] + p.alpha * x4[i];
}

@compute @workgroup_size(WG)
fn scale_copy4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) {
    return;
  }
  y4[i] = p.alpha * x4[i];
}

@compute @workgroup_size(WG)
fn copy4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) {
    return;
  }
  y4[i] = x4[i];
}

// copy_rows4: y (rows, cols4) = the column block [offx4, offx4 + cols4) of x's rows (ldx4 apart),
// all in vec4 units: a dense copy of K or V out of a fused q/k/v activation.
struct RowsParams {
  rows: u32,
  cols4: u32,
  ldx4: u32,
  offx4: u32,
}
@group(0) @binding(0) var<uniform> rp: RowsParams;

@compute @workgroup_size(WG)
fn copy_rows4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= rp.rows * rp.cols4) {
    return;
  }
  let r = i / rp.cols4;
  y4[i] = x4[rp.offx4 + r * rp.ldx4 + (i - r * rp.cols4)];
}

@compute @workgroup_size(WG)
fn fill(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) {
    return;
  }
  y[i] = p.alpha;
}

// partials[g] = sum of xs[g·SUM_CHUNK ..][..SUM_CHUNK]: each invocation adds SUM_PER_THREAD
// elements strided by WG (coalesced), then a fixed tree over the workgroup.
@compute @workgroup_size(WG)
fn sum_partials(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid_v: vec3<u32>,
) {
  let lid = lid_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let g = group_index(wid, nwg);
  let base = g * SUM_CHUNK;
  if (base >= p.n) {
    return; // whole workgroup past the end (uniform)
  }
  var s = 0.0;
  for (var k = 0u; k < SUM_PER_THREAD; k++) {
    let i = base + k * WG + lid;
    if (i < p.n) {
      s = s + xs[i];
    }
  }
  let total = workgroup_sum(lid, s);
  if (lid == 0u) {
    partials[g] = total;
  }
}

// acc[index] += sum of the n partials: invocation lid adds partials lid, lid+WG, ... in order
// with Kahan compensation, then a fixed tree over the workgroup. One workgroup.
@compute @workgroup_size(WG)
fn sum_finalize(@builtin(local_invocation_id) lid_v: vec3<u32>) {
  let lid = lid_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  var s = 0.0;
  var comp = 0.0;
  for (var i = lid; i < p.n; i += WG) {
    let v = parts[i] - comp;
    let t = bitcast<f32>(bitcast<u32>(s + v) ^ p.zero);
    comp = (t - s) - v;
    s = t;
  }
  let total = workgroup_sum(lid, s);
  if (lid == 0u) {
    acc[p.index] = acc[p.index] + total;
  }
}
