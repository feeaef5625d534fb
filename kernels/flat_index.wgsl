// The flat index of an invocation on a 2-D grid of 1-D workgroups (grid2d: x fastest).

/// (wid.x + wid.y · nwg.x) · wg + lane, computed from the global invocation id: on lavapipe an
/// address derived from local_invocation_index runs at half speed (kernels/README).
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>, wg: u32) -> u32 {
  return gid.x + gid.y * nwg.x * wg;
}
