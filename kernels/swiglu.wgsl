// SwiGLU activation of the Llama MLP: out = silu(gate) · up, and its backward.
//
// Gate and up are (T, I) blocks with row stride `ld`: separate tensors (ld = I), or the two halves
// of one (T, 2I) tensor that a fused gate/up projection wrote (ld = 2I, up at column offset I);
// their gradients take the same layout. `out` and `dout` are dense (T, I). One element per
// invocation: x over 64-column chunks of a row, y·z over rows.

const WG: u32 = 64u;

struct Params {
  rows: u32, // T
  cols: u32, // I
  ld: u32, // row stride of gate, up, dgate and dup
  up_off: u32, // element offset of up (and dup) in its binding: 0, or I when it shares gate's
}

@group(0) @binding(0) var<uniform> p: Params;

// swiglu_forward
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // (T, I)
@group(0) @binding(2) var<storage, read> gate_f: array<f32>; // (T, ld)
@group(0) @binding(3) var<storage, read> up_f: array<f32>; // (T, ld) from up_off

// swiglu_backward
@group(0) @binding(1) var<storage, read_write> dgate: array<f32>; // (T, ld)
@group(0) @binding(2) var<storage, read_write> dup: array<f32>; // (T, ld) from up_off
@group(0) @binding(3) var<storage, read> dout: array<f32>; // (T, I)
@group(0) @binding(4) var<storage, read> gate_b: array<f32>; // (T, ld)
@group(0) @binding(5) var<storage, read> up_b: array<f32>; // (T, ld) from up_off

fn sigmoid(g: f32) -> f32 {
  return 1.0 / (1.0 + exp(-g));
}

/// (index in the dense (T, I) tensors, index of gate in its (T, ld) layout), or none past the end.
fn indices(gid: vec3<u32>, wid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
  let row = wid.y + wid.z * nwg.y;
  if (gid.x >= p.cols || row >= p.rows) {
    return vec2<u32>(0xffffffffu);
  }
  return vec2<u32>(row * p.cols + gid.x, row * p.ld + gid.x);
}

@compute @workgroup_size(WG)
fn swiglu_forward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let ix = indices(gid, wid, nwg);
  if (ix.x == 0xffffffffu) {
    return;
  }
  let g = gate_f[ix.y];
  out[ix.x] = g * sigmoid(g) * up_f[ix.y + p.up_off];
}

// d silu(g)/dg = s · (1 + g · (1 − s)), s = sigmoid(g).
@compute @workgroup_size(WG)
fn swiglu_backward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let ix = indices(gid, wid, nwg);
  if (ix.x == 0xffffffffu) {
    return;
  }
  let g = gate_b[ix.y];
  let u = up_b[ix.y + p.up_off];
  let d = dout[ix.x];
  let s = sigmoid(g);
  dgate[ix.y] = d * u * (s * (1.0 + g * (1.0 - s)));
  dup[ix.y + p.up_off] = d * (g * s);
}

// --- 16-byte forms: the same math on vec4s of four columns (I, ld and up_off multiples of 4; the
// launcher passes cols, ld and up_off in vec4 units). On lavapipe a vec4 load or store tests the
// execution mask once per lane for four values (kernels/README.md).

// swiglu_forward4
@group(0) @binding(1) var<storage, read_write> out4: array<vec4<f32>>; // (T, I / 4)
@group(0) @binding(2) var<storage, read> gate_f4: array<vec4<f32>>; // (T, ld / 4)
@group(0) @binding(3) var<storage, read> up_f4: array<vec4<f32>>; // (T, ld / 4) from up_off

// swiglu_backward4
@group(0) @binding(1) var<storage, read_write> dgate4: array<vec4<f32>>; // (T, ld / 4)
@group(0) @binding(2) var<storage, read_write> dup4: array<vec4<f32>>; // (T, ld / 4) from up_off
@group(0) @binding(3) var<storage, read> dout4: array<vec4<f32>>; // (T, I / 4)
@group(0) @binding(4) var<storage, read> gate_b4: array<vec4<f32>>; // (T, ld / 4)
@group(0) @binding(5) var<storage, read> up_b4: array<vec4<f32>>; // (T, ld / 4) from up_off

fn sigmoid4(g: vec4<f32>) -> vec4<f32> {
  return 1.0 / (1.0 + exp(-g));
}

@compute @workgroup_size(WG)
fn swiglu_forward4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let ix = indices(gid, wid, nwg);
  if (ix.x == 0xffffffffu) {
    return;
  }
  let g = gate_f4[ix.y];
  out4[ix.x] = g * sigmoid4(g) * up_f4[ix.y + p.up_off];
}

@compute @workgroup_size(WG)
fn swiglu_backward4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let ix = indices(gid, wid, nwg);
  if (ix.x == 0xffffffffu) {
    return;
  }
  let g = gate_b4[ix.y];
  let u = up_b4[ix.y + p.up_off];
  let d = dout4[ix.x];
  let s = sigmoid4(g);
  dgate4[ix.y] = d * u * (s * (1.0 + g * (1.0 - s)));
  dup4[ix.y + p.up_off] = d * (g * s);
}
