// Canary kernel for `doctor` and runtime tests: y = a * x + b over n elements.

struct Params {
  n: u32,
  a: f32,
  b: f32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>; // (n)
@group(0) @binding(2) var<storage, read> x: array<f32>; // (n)

@compute @workgroup_size(64)
fn canary_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= p.n) {
    return;
  }
  y[i] = p.a * x[i] + p.b;
}
