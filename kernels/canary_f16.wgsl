// f16 canary: y = f32(f16(x) * f16(a)) over n elements; checks `shader-f16` really computes.
enable f16;

struct Params {
  n: u32,
  a: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>; // (n)
@group(0) @binding(2) var<storage, read> x: array<f32>; // (n)

@compute @workgroup_size(64)
fn canary_f16_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= p.n) {
    return;
  }
  let h: f16 = f16(x[i]) * f16(p.a);
  y[i] = f32(h);
}
