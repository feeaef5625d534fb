// Shared by kernels through `// #include workgroup_sum.wgsl`: a fixed-order tree sum over a workgroup.
// The including file declares `const WG: u32` (a power of two, its workgroup size) before the
// include line.

var<workgroup> red: array<f32, WG>;

/** Fixed-order tree sum of `v` over the workgroup; every invocation gets the total. */
fn workgroup_sum(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      red[lid] = red[lid] + red[lid + s];
    }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}
