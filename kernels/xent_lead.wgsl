// Fused, vocabulary-chunked cross-entropy: per-row online log-sum-exp over logits chunks that the
// launcher recomputes with matmul, the per-token loss, and dlogits written in place.
//
// z = scale · logits (scale = 1/logits_scaling for Granite, 1 otherwise). Rows whose label is
// −100 are ignored (loss 0, gradient 0). One workgroup per row; fixed-order tree reductions.

const WG: u32 = 256u;
const IGNORE: i32 = -100;

struct Params {
  T: u32, // rows
  n: u32, // width of this logits chunk
  v0: u32, // first vocabulary id of the chunk
  first: u32, // 1 on the first chunk: (re)initialise the running statistics
  scale: f32, // logit scale
  V: u32, // vocabulary size (labels ≥ V are errors: NaN loss)
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// cross_entropy_stats: running max / sum-exp / label logit per row over one chunk
@group(0) @binding(1) var<storage, read_write> stats: array<f32>; // (T, 4): max, sumexp, label z, -
@group(0) @binding(2) var<storage, read> logits_s: array<f32>; // (T, n)
@group(0) @binding(3) var<storage, read> labels_s: array<i32>; // (T)

// cross_entropy_forward: per-row loss from the statistics
@group(0) @binding(1) var<storage, read_write> row_loss: array<f32>; // (T)
@group(0) @binding(2) var<storage, read_write> stats_f: array<f32>; // (T, 4): [3] ← lse
@group(0) @binding(3) var<storage, read> labels_f: array<i32>; // (T)

// cross_entropy_backward: dlogits in place over one chunk
@group(0) @binding(1) var<storage, read_write> dlogits: array<f32>; // (T, n) logits in, grads out
@group(0) @binding(2) var<storage, read> stats_b: array<f32>; // (T, 4)
@group(0) @binding(3) var<storage, read> labels_b: array<i32>; // (T)
@group(0) @binding(4) var<storage, read> inv_tokens: array<f32>; // (1) 1 / loss tokens of the step

var<workgroup> red_max: array<f32, WG>;
var<workgroup> red_sum: array<f32, WG>;

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}

@compute @workgroup_size(WG)
fn cross_entropy_stats(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let t = row_of(wid, nwg);
  if (t >= p.T) {
    return;
  }
  let base = t * p.n;
  // Local max, then local sum of exp relative to it.
  var m = -3.4028235e38;
  for (var j = lid.x; j < p.n; j += WG) {
    m = max(m, p.scale * logits_s[base + j]);
  }
  var s = 0.0;
  for (var j = lid.x; j < p.n; j += WG) {
    s += exp(p.scale * logits_s[base + j] - m);
  }
  red_max[lid.x] = m;
  red_sum[lid.x] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid.x < stride) {
      let m1 = red_max[lid.x];
      let m2 = red_max[lid.x + stride];
      let mm = max(m1, m2);
      red_sum[lid.x] = red_sum[lid.x] * exp(m1 - mm) + red_sum[lid.x + stride] * exp(m2 - mm);
      red_max[lid.x] = mm;
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    let cm = red_max[0];
    let cs = red_sum[0];
    var om = -3.4028235e38;
    var os = 0.0;
    var lz = stats[t * 4u + 2u];
    if (p.first == 1u) {
      lz = 0.0;
    } else {
      om = stats[t * 4u];
      os = stats[t * 4u + 1u];
    }
    let nm = max(om, cm);
    stats[t * 4u] = nm;
    stats[t * 4u + 1u] = os * exp(om - nm) + cs * exp(cm - nm);
    let lab = labels_s[t];
    if (lab >= i32(p.v0) && lab < i32(p.v0 + p.n)) {
      lz = p.scale * logits_s[base + u32(lab) - p.v0];
    }
    stats[t * 4u + 2u] = lz;
  }
}

@compute @workgroup_size(64)
fn cross_entropy_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = gid.x + gid.y * nwg.x * 64u;
  if (t >= p.T) {
    return;
  }
  let lse = stats_f[t * 4u] + log(stats_f[t * 4u + 1u]);
  stats_f[t * 4u + 3u] = lse;
  let lab = labels_f[t];
  if (lab == IGNORE) {
    row_loss[t] = 0.0;
  } else if (lab < 0 || u32(lab) >= p.V) {
    row_loss[t] = bitcast<f32>(0x7fc00000u); // NaN: a label outside the vocabulary
  } else {
    row_loss[t] = lse - stats_f[t * 4u + 2u];
  }
}

@compute @workgroup_size(WG)
fn cross_entropy_backward(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let t = row_of(wid, nwg);
  if (t >= p.T) {
    return;
  }
  let base = t * p.n;
  let lab = labels_b[t];
  if (lab == IGNORE) {
    for (var j = lid.x; j < p.n; j += WG) {
      dlogits[base + j] = 0.0;
    }
    return;
  }
  let lse = stats_b[t * 4u + 3u];
  let g = inv_tokens[0] * p.scale; // chain rule through z = scale · logits
  for (var j = lid.x; j < p.n; j += WG) {
    var d = exp(p.scale * dlogits[base + j] - lse);
    if (i32(p.v0 + j) == lab) {
      d -= 1.0;
    }
    dlogits[base + j] = g * d;
  }
}
