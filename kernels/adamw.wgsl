// AdamW with global gradient-norm clipping: sums of squares per workgroup, a fixed-order
// finalize (norm, clip scale, finite flag, loss scale), and the fp32 update of params and moments.
//
// Loss scaling (f16 matmuls): the gradients arrive multiplied by the loss scale S (the loss
// gradient is, in cross_entropy_grad); the finalize divides the norm by S and folds 1/S into the
// multiplier AdamW applies, and, when dynamic, updates S as torch's GradScaler does: halved (and
// the step skipped) on a non-finite gradient, doubled after `growth interval` finite steps in a
// row. A skipped step is no AdamW step: as in torch, the bias corrections count applied updates
// only, so the dynamic finalize writes them into the step's hyper-parameters itself. With S = 1
// every result is bit-identical to unscaled training (S is a power of two).
//
// grad_norm_squares writes one partial per workgroup of NORM_CHUNK elements; several tensors
// write disjoint ranges of one partials buffer and grad_norm_finalize reduces them all. The
// update matches torch.optim.AdamW (single-tensor path): param *= 1 − lr·wd; m = lerp(m, g, 1 − β1);
// v = β2·v + (1 − β2)·g²; param −= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps). No atomics.

const WG: u32 = 256u;
const NORM_PER_THREAD: u32 = 64u;
const NORM_CHUNK: u32 = WG * NORM_PER_THREAD; // elements per partial

override ZERO_GRAD: bool = false; // adamw_update: zero the gradient after reading it

struct Params {
  n: u32, // elements (finalize: number of partials)
  offset: u32, // grad_norm_squares: first partial slot of this tensor; finalize: 1 = dynamic S
  max_norm: f32, // finalize: clipping threshold, ≤ 0 = no clipping
  zero: u32, // always 0: an opaque value that keeps the compiler from folding Kahan away
}

/** Per-step hyper-parameters, rewritten by the trainer (ADAMW_HP_FLOATS = 8). */
struct Hyper {
  lr: f32,
  beta1: f32,
  beta2: f32,
  eps: f32,
  weight_decay: f32,
  bc1: f32, // 1 − β1^t
  bc2: f32, // 1 − β2^t
  t: f32, // the step t (1-based) that bc1 and bc2 were computed for
}

@group(0) @binding(0) var<uniform> p: Params;

// #include flat_index.wgsl

// grad_norm_squares
@group(0) @binding(1) var<storage, read_write> partials_out: array<f32>; // (≥ offset + chunks)
@group(0) @binding(2) var<storage, read> grad_in: array<f32>; // (n)

// grad_norm_finalize
@group(0) @binding(1) var<storage, read_write> stats_out: array<f32>; // (4): norm, mult, finite, S
@group(0) @binding(2) var<storage, read> partials_in: array<f32>; // (n)
@group(0) @binding(3) var<storage, read_write> loss_scale: array<f32>; // (4): S, run, growth, t
@group(0) @binding(4) var<storage, read_write> hp_rw: Hyper; // dynamic: bc1, bc2 ← applied steps

// adamw_update
@group(0) @binding(1) var<storage, read_write> param: array<f32>; // (n)
@group(0) @binding(2) var<storage, read_write> m: array<f32>; // (n)
@group(0) @binding(3) var<storage, read_write> v: array<f32>; // (n)
@group(0) @binding(4) var<storage, read_write> grad: array<f32>; // (n)
@group(0) @binding(5) var<storage, read> stats: array<f32>; // (3)
@group(0) @binding(6) var<storage, read> hp: Hyper;

// adamw_update4: the same four tensors as 16-byte views (n % 4 == 0, offsets 16-byte aligned)
@group(0) @binding(1) var<storage, read_write> param4: array<vec4<f32>>; // (n / 4)
@group(0) @binding(2) var<storage, read_write> m4: array<vec4<f32>>; // (n / 4)
@group(0) @binding(3) var<storage, read_write> v4: array<vec4<f32>>; // (n / 4)
@group(0) @binding(4) var<storage, read_write> grad4: array<vec4<f32>>; // (n / 4)

// #include workgroup_sum.wgsl

/// 1 − β^t without the cancellation of 1 − pow(β, t) when β^t is near 1: −expm1(t · ln β), by
/// its Taylor series for small arguments (relative error ~1e-7 throughout).
fn bias_correction(beta: f32, t: f32) -> f32 {
  let x = t * log(beta);
  if (x > -0.1) {
    // −expm1(x) = −x·(1 + x/2·(1 + x/3·(1 + x/4·(1 + x/5·(1 + x/6)))))
    return -x * (1.0 + x / 2.0 * (1.0 + x / 3.0 * (1.0 + x / 4.0 * (1.0 + x / 5.0 * (1.0 + x / 6.0)))));
  }
  return 1.0 - exp(x);
}

/** Finite test on the bits (fast-math compilers may fold x != x). */
fn is_finite(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(WG)
fn grad_norm_squares(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid_v: vec3<u32>,
) {
  let lid = lid_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  let g = wid.x + wid.y * nwg.x;
  let base = g * NORM_CHUNK;
  if (base >= p.n) {
    return; // surplus workgroup of the grid (uniform)
  }
  var s = 0.0;
  for (var k = 0u; k < NORM_PER_THREAD; k++) {
    let i = base + k * WG + lid;
    if (i < p.n) {
      let x = grad_in[i];
      s = s + x * x;
    }
  }
  let total = workgroup_sum(lid, s);
  if (lid == 0u) {
    partials_out[p.offset + g] = total;
  }
}

// One workgroup: invocation lid adds partials lid, lid + WG, ... with Kahan compensation, then a
// fixed tree (pairwise) over the workgroup. The running sum passes through an XOR with the
// uniform p.zero so a fast-math compiler cannot rewrite (s + y) − s − y to 0.
@compute @workgroup_size(WG)
fn grad_norm_finalize(@builtin(local_invocation_id) lid_v: vec3<u32>) {
  let lid = lid_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  var s = 0.0;
  var comp = 0.0;
  for (var i = lid; i < p.n; i += WG) {
    let y = partials_in[i] - comp;
    let t = bitcast<f32>(bitcast<u32>(s + y) ^ p.zero);
    comp = (t - s) - y;
    s = t;
  }
  let total = workgroup_sum(lid, s);
  if (lid == 0u) {
    let s = loss_scale[0];
    let norm = sqrt(total) / s;
    let finite = is_finite(total);
    var clip = 1.0;
    if (p.max_norm > 0.0 && finite) {
      clip = min(1.0, p.max_norm / (norm + 1e-6));
    }
    stats_out[0] = norm;
    stats_out[1] = clip / s;
    stats_out[2] = select(0.0, 1.0, finite);
    stats_out[3] = s;
    if (p.offset == 1u) {
      if (finite) {
        let t = loss_scale[3] + 1.0; // AdamW updates applied, this one included
        loss_scale[3] = t;
        if (t != hp_rw.t) { // steps were skipped: the host's corrections are for a later t
          hp_rw.bc1 = bias_correction(hp_rw.beta1, t);
          hp_rw.bc2 = bias_correction(hp_rw.beta2, t);
          hp_rw.t = t;
        }
      }
      if (!finite) {
        loss_scale[0] = s * 0.5;
        loss_scale[1] = 0.0;
      } else if (loss_scale[1] + 1.0 >= loss_scale[2]) {
        loss_scale[0] = s * 2.0;
        loss_scale[1] = 0.0;
      } else {
        loss_scale[1] = loss_scale[1] + 1.0;
      }
    }
  }
}

/// One AdamW step on four elements (the scalar kernel passes one element in every lane).
struct AdamState {
  param: vec4<f32>,
  m: vec4<f32>,
  v: vec4<f32>,
}

fn adamStep(g: vec4<f32>, s: AdamState) -> AdamState {
  let w = s.param * (1.0 - hp.lr * hp.weight_decay);
  // torch.lerp(m, g, wt): m + wt·(g − m) when wt < 0.5, else g − (g − m)·(1 − wt)
  let wt = 1.0 - hp.beta1;
  let m1 = select(g - (g - s.m) * (1.0 - wt), s.m + wt * (g - s.m), wt < 0.5);
  let v1 = s.v * hp.beta2 + (1.0 - hp.beta2) * (g * g);
  let denom = sqrt(v1) / sqrt(hp.bc2) + hp.eps;
  return AdamState(w - (hp.lr / hp.bc1) * (m1 / denom), m1, v1);
}

@compute @workgroup_size(WG)
fn adamw_update(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) {
    return;
  }
  let g = grad[i] * stats[1];
  if (ZERO_GRAD) {
    grad[i] = 0.0; // zeroed even when the step is skipped: the next step starts clean
  }
  if (stats[2] == 0.0) {
    return; // non-finite gradient norm: leave param, m and v untouched
  }
  let s = adamStep(vec4<f32>(g), AdamState(vec4<f32>(param[i]), vec4<f32>(m[i]), vec4<f32>(v[i])));
  m[i] = s.m.x;
  v[i] = s.v.x;
  param[i] = s.param.x;
}

/// adamw_update on four elements per invocation (p.n counts vec4s): a quarter of the invocations
/// and 16-byte memory accesses, the same arithmetic.
@compute @workgroup_size(WG)
fn adamw_update4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat_index(gid, nwg, WG);
  if (i >= p.n) {
    return;
  }
  let g = grad4[i] * stats[1];
  if (ZERO_GRAD) {
    grad4[i] = vec4<f32>(0.0);
  }
  if (stats[2] == 0.0) {
    return;
  }
  let s = adamStep(g, AdamState(param4[i], m4[i], v4[i]));
  m4[i] = s.m;
  v4[i] = s.v;
  param4[i] = s.param;
}
