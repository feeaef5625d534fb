// SwiGLU activation of the Llama MLP: out = silu(gate) · up, and its backward.
//
// One element per invocation on a 2-D grid of workgroups (x fastest) so n may exceed 65535 × WG.

const WG: u32 = 256u;

struct Params {
  n: u32, // elements (T · I)
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// swiglu_forward
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (T, I)
@group(0) @binding(2) var<storage, read> gate_f: array<f32>; // (T, I)
@group(0) @binding(3) var<storage, read> up_f: array<f32>; // (T, I)

// swiglu_backward
@group(0) @binding(1) var<storage, read_write> dgate: array<f32>; // (T, I)
@group(0) @binding(2) var<storage, read_write> dup: array<f32>; // (T, I)
@group(0) @binding(3) var<storage, read> dout: array<f32>; // (T, I)
@group(0) @binding(4) var<storage, read> gate_b: array<f32>; // (T, I)
@group(0) @binding(5) var<storage, read> up_b: array<f32>; // (T, I)

fn sigmoid(g: f32) -> f32 {
  return 1.0 / (1.0 + exp(-g));
}

@compute @workgroup_size(WG)
fn swiglu_forward(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= p.n) {
    return;
  }
  let g = gate_f[i];
  out[i] = g * sigmoid(g) * up_f[i];
}

// d silu(g)/dg = s · (1 + g · (1 − s)), s = sigmoid(g).
@compute @workgroup_size(WG)
fn swiglu_backward(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= p.n) {
    return;
  }
  let g = gate_b[i];
  let u = up_b[i];
  let d = dout[i];
  let s = sigmoid(g);
  dgate[i] = d * u * (s * (1.0 + g * (1.0 - s)));
  dup[i] = d * (g * s);
}
