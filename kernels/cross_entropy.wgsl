// Fused, vocabulary-chunked cross-entropy: softmax statistics, per-token loss, dlogits in place.
//
// The launcher (kernels/cross_entropy.ts) recomputes one vocabulary chunk of z = scale · h·wᵀ at
// a time with the matmul GEMM, so the full (T, V) logits never exist:
//   pass 1, per chunk: cross_entropy_stats folds the chunk into per-token running (max, Σexp)
//           and picks the label logit; then cross_entropy_finalize: lse, per-token loss, and
//           lossAcc[0] += Σ loss (one workgroup, fixed order: deterministic);
//   pass 2, per chunk: z again, cross_entropy_grad turns it into dlogits in place, then the
//           GEMMs dh (+)= dlogits·w_chunk and dw_chunk += dlogitsᵀ·h.
// Label −100 = ignored (loss 0, dlogits 0); any other label outside [0, V) is an error and gives a
// NaN loss and NaN gradients, so it cannot go unnoticed.

struct Params {
  T: u32, // tokens
  n: u32, // width of this chunk (grad, stats)
  ldz: u32, // row stride of the chunk buffer
  v0: u32, // first vocabulary id of the chunk
  V: u32, // vocabulary size
  flags: u32, // stats: bit 0 = first chunk; finalize: bit 0 = write tokenLoss, bit 1 = add to lossAcc
  scale: f32, // logit scale (1/logits_scaling): d(h·wᵀ) = scale · dz
  _pad: u32,
}

const IGNORE = -100;
const NEG_MAX = -3.4028234663852886e38;
const QNAN = 0x7fc00000u;

@group(0) @binding(0) var<uniform> p: Params;

// cross_entropy_stats bindings
@group(0) @binding(1) var<storage, read_write> stats_s: array<f32>; // (T, 4): max, Σexp, z[label], lse
@group(0) @binding(2) var<storage, read> z_s: array<f32>; // (T, ldz) chunk of z
@group(0) @binding(3) var<storage, read> labels_s: array<i32>; // (T)

// cross_entropy_finalize bindings
@group(0) @binding(1) var<storage, read_write> stats_f: array<f32>; // (T, 4): [3] ← lse
@group(0) @binding(2) var<storage, read_write> loss_acc: array<f32>; // (≥1): [0] += Σ loss
@group(0) @binding(3) var<storage, read_write> token_loss: array<f32>; // (T), when flags bit 0
@group(0) @binding(4) var<storage, read> labels_f: array<i32>; // (T)

// cross_entropy_grad bindings
@group(0) @binding(1) var<storage, read_write> z_g: array<f32>; // (T, ldz): z in, dlogits out
@group(0) @binding(2) var<storage, read> stats_g: array<f32>; // (T, 4)
@group(0) @binding(3) var<storage, read> labels_g: array<i32>; // (T)
@group(0) @binding(4) var<storage, read> inv_tokens: array<f32>; // (1) 1/loss tokens of the step
@group(0) @binding(5) var<storage, read> loss_scale: array<f32>; // (4) [0]: the step's loss scale

const WG = 64u;
var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<f32, WG>;

/// Merge two (max, Σexp(x − max)) pairs.
fn merge(m1: f32, s1: f32, m2: f32, s2: f32) -> vec2<f32> {
  let m = max(m1, m2);
  return vec2<f32>(m, s1 * exp(m1 - m) + s2 * exp(m2 - m));
}

/// One workgroup per token (2D grid): fold this chunk into the running statistics.
@compute @workgroup_size(WG)
fn cross_entropy_stats(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= p.T) {
    return;
  }
  let row = t * p.ldz;
  // Single pass, online: each invocation keeps (max, Σexp) over its strided columns.
  var m = NEG_MAX;
  var s = 0.0;
  for (var j = lid.x; j < p.n; j += WG) {
    let x = z_s[row + j];
    if (x > m) {
      s = s * exp(m - x) + 1.0;
      m = x;
    } else {
      s += exp(x - m);
    }
  }
  red_max[lid.x] = m;
  red_sum[lid.x] = s;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half /= 2u) {
    if (lid.x < half) {
      let r = merge(red_max[lid.x], red_sum[lid.x], red_max[lid.x + half], red_sum[lid.x + half]);
      red_max[lid.x] = r.x;
      red_sum[lid.x] = r.y;
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    let st = t * 4u;
    var r = vec2<f32>(red_max[0], red_sum[0]);
    var zl = 0.0;
    if ((p.flags & 1u) == 0u) {
      r = merge(stats_s[st], stats_s[st + 1u], r.x, r.y);
      zl = stats_s[st + 2u];
    }
    let lab = labels_s[t];
    if (lab >= i32(p.v0) && lab < i32(p.v0 + p.n)) {
      zl = z_s[row + u32(lab) - p.v0];
    }
    stats_s[st] = r.x;
    stats_s[st + 1u] = r.y;
    stats_s[st + 2u] = zl;
  }
}

const FIN_WG = 256u;
var<workgroup> red_loss: array<f32, FIN_WG>;

/// One workgroup: lse and loss per token, then lossAcc[0] += Σ loss in a fixed order.
@compute @workgroup_size(FIN_WG)
fn cross_entropy_finalize(@builtin(local_invocation_id) lid: vec3<u32>) {
  var sum = 0.0;
  for (var t = lid.x; t < p.T; t += FIN_WG) {
    let st = t * 4u;
    let lse = stats_f[st] + log(stats_f[st + 1u]);
    stats_f[st + 3u] = lse;
    let lab = labels_f[t];
    var loss = 0.0;
    if (lab != IGNORE) {
      loss = lse - stats_f[st + 2u];
      if (lab < 0 || u32(lab) >= p.V) {
        loss = bitcast<f32>(QNAN);
      }
    }
    sum += loss;
    if ((p.flags & 1u) != 0u) {
      token_loss[t] = loss;
    }
  }
  red_loss[lid.x] = sum;
  workgroupBarrier();
  for (var half = FIN_WG / 2u; half > 0u; half /= 2u) {
    if (lid.x < half) {
      red_loss[lid.x] += red_loss[lid.x + half];
    }
    workgroupBarrier();
  }
  if (lid.x == 0u && (p.flags & 2u) != 0u) {
    loss_acc[0] += red_loss[0];
  }
}

/// dlogits = scale · invTokens · lossScale · (softmax(z) − onehot(label)) in place; 0 on ignored
/// rows.
/// Grid: x over columns (64 per workgroup), y·z over tokens.
@compute @workgroup_size(WG)
fn cross_entropy_grad(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let j = gid.x;
  let t = wid.y + wid.z * nwg.y;
  if (j >= p.n || t >= p.T) {
    return;
  }
  let idx = t * p.ldz + j;
  let lab = labels_g[t];
  if (lab == IGNORE) {
    z_g[idx] = 0.0;
    return;
  }
  var d = exp(z_g[idx] - stats_g[t * 4u + 3u]);
  if (i32(p.v0 + j) == lab) {
    d -= 1.0;
  }
  if (lab < 0 || u32(lab) >= p.V) {
    d = bitcast<f32>(QNAN);
  }
  z_g[idx] = p.scale * inv_tokens[0] * loss_scale[0] * d;
}

// cross_entropy_grad with four columns per invocation (n and ldz multiples of 4): the per-row
// loads (label, lse, scales) serve four logits and z moves as vec4s; bit-identical to the scalar
// entry point.
@group(0) @binding(1) var<storage, read_write> z_g4: array<vec4<f32>>; // (T, ldz / 4)

@compute @workgroup_size(WG)
fn cross_entropy_grad4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let j4 = gid.x;
  let t = wid.y + wid.z * nwg.y;
  if (j4 * 4u >= p.n || t >= p.T) {
    return;
  }
  let idx = t * (p.ldz / 4u) + j4;
  let lab = labels_g[t];
  if (lab == IGNORE) {
    z_g4[idx] = vec4<f32>(0.0);
    return;
  }
  var d = exp(z_g4[idx] - vec4<f32>(stats_g[t * 4u + 3u]));
  let col = vec4<i32>(i32(p.v0 + 4u * j4)) + vec4<i32>(0, 1, 2, 3);
  d -= select(vec4<f32>(0.0), vec4<f32>(1.0), col == vec4<i32>(lab));
  if (lab < 0 || u32(lab) >= p.V) {
    d = vec4<f32>(bitcast<f32>(QNAN));
  }
  z_g4[idx] = p.scale * inv_tokens[0] * loss_scale[0] * d;
}
