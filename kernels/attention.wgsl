// Packed varlen causal attention (flash-attention style): forward with LSE; backward delta, dQ, dK, dV.
//
// Q (T, Hq, D), K and V (T, Hkv, D) row-major, token rows ld_q / ld_kv apart from offsets q_off,
// k_off, v_off (dense tensors: Hq·D, Hkv·D and 0; a fused q/k/v projection: one (T, q+k+v) tensor
// bound for all three, the same for dQ, dK, dV); q head h reads kv head h / (Hq / Hkv). Token i
// attends to key j when seqStart[i] <= j <= i (block-diagonal causal mask of contiguous packed
// samples, so seqStart and seqEnd are non-decreasing).
//
// Work layout. A workgroup has RQ threads; each thread owns FOUR consecutive rows (queries in the
// forward and dQ, keys in dK/dV), handled as vec4s across those rows. The other side (keys, or
// queries in dK/dV) is staged in workgroup memory in tiles of 16·NG rows, transposed so that one
// vec4 holds 4 tile rows at one head dim: tile[d · 4NG + quad]. A group of 16 tile rows is
// processed with the 4×16 score block in registers (S16, column = tile row, component = own
// row): for each dim d, S16 += own(d) ⊗ tile(d, 16 rows), then, per dim again,
// acc(d) += S16 · tile(d, 16 rows). Own-row inputs are read from the storage buffers, own-row
// accumulators live in workgroup memory (acc[d · RQ + thread]). Loops over d stay loops: on CPU
// drivers (lavapipe) large register arrays and unrolled code cost minutes of shader compilation
// (an unrolled D = 128 forward took 300 s), and per-thread conditional stores inside loops cost
// seconds, so outputs are written cooperatively after a barrier.

const MASKED: f32 = -1.0e30; // score of a masked pair, and the running max before any real score
const THRESHOLD: f32 = -1.0e29; // scores below this are masked

override DM: u32 = 64u; // head-dim capacity of the workgroup arrays (16, 32, 64 or 128, >= D)
override RQ: u32 = 16u; // threads per workgroup (4 own rows each)
override NG: u32 = 2u; // 16-row groups per staged tile
override BC4: u32 = 4u * NG; // quads of 4 rows per staged tile

// #include attention_params.wgsl
// #include flat_index.wgsl

var<private> D: u32; // head dim, p.d (set first thing by every entry point)

// #include attention_bindings.wgsl

var<workgroup> ta: array<vec4<f32>, DM * BC4>; // tile A (D, 16NG): K (forward, dQ) or Q (dK/dV)
var<workgroup> tb: array<vec4<f32>, DM * BC4>; // tile B (D, 16NG): V (forward, dQ) or dO (dK/dV)
var<workgroup> acc1: array<vec4<f32>, DM * RQ>; // own rows (D, 4RQ): O, dQ or dK accumulator
var<workgroup> acc2: array<vec4<f32>, DM * RQ>; // own rows (D, 4RQ): dV accumulator

// Scores of 4 own rows (components) × 16 tile rows (columns of a, b, c, d in order).
struct S16 {
  a: mat4x4<f32>,
  b: mat4x4<f32>,
  c: mat4x4<f32>,
  d: mat4x4<f32>,
}

// ---------------------------------------------------------------------------------------------
// Own rows: element offsets `o` (+ d) of four token rows of head h of Q, dO (dense), K or V. Rows
// past T are clamped to T − 1: their scores are masked, so what they read never matters.

fn offsets(rows: vec4<u32>, ld: u32, off: u32, h: u32) -> vec4<u32> {
  return min(rows, vec4<u32>(p.t - 1u)) * ld + vec4<u32>(off + h * D);
}

fn own_q(o: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(in_q[o.x], in_q[o.y], in_q[o.z], in_q[o.w]);
}

fn own_dout(o: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(in_dout[o.x], in_dout[o.y], in_dout[o.z], in_dout[o.w]);
}

fn own_k(o: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(in_k[o.x], in_k[o.y], in_k[o.z], in_k[o.w]);
}

fn own_v(o: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(in_v[o.x], in_v[o.y], in_v[o.z], in_v[o.w]);
}

fn starts(rows: vec4<u32>) -> vec4<u32> {
  let r = min(rows, vec4<u32>(p.t - 1u));
  return vec4<u32>(in_start[r.x], in_start[r.y], in_start[r.z], in_start[r.w]);
}

// lse and delta of head h at four consecutive tokens from i (clamped to T).
fn quad_lse(h: u32, i: u32) -> vec4<f32> {
  let r = min(vec4<u32>(i) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.t - 1u)) + vec4<u32>(h * p.t);
  return vec4<f32>(in_lse[r.x], in_lse[r.y], in_lse[r.z], in_lse[r.w]);
}

fn quad_delta(h: u32, i: u32) -> vec4<f32> {
  let r = min(vec4<u32>(i) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.t - 1u)) + vec4<u32>(h * p.t);
  return vec4<f32>(in_delta[r.x], in_delta[r.y], in_delta[r.z], in_delta[r.w]);
}

// ---------------------------------------------------------------------------------------------
// Staging 16·NG rows from row r0 (zero past T), transposed: tile[d · BC4 + r / 4][r % 4].

// Lane li stages rows li, li + RQ, ..., every dim of each (no division by the run-time D: lavapipe
// runs a vector integer division lane by lane).

// K and V rows of kv head kvh.
fn stage_kv(r0: u32, kvh: u32, li: u32) {
  for (var r = li; r < 16u * NG; r += RQ) {
    let o = min(r0 + r, p.t - 1u) * p.ld_kv + kvh * D;
    let ok = r0 + r < p.t;
    for (var d = 0u; d < D; d++) {
      ta[d * BC4 + r / 4u][r % 4u] = select(0.0, in_k[o + p.k_off + d], ok);
      tb[d * BC4 + r / 4u][r % 4u] = select(0.0, in_v[o + p.v_off + d], ok);
    }
  }
}

// Q and dO rows of q head h.
fn stage_qdo(r0: u32, h: u32, li: u32) {
  for (var r = li; r < 16u * NG; r += RQ) {
    let row = min(r0 + r, p.t - 1u);
    let oq = row * p.ld_q + p.q_off + h * D;
    let oo = row * (p.hq * D) + h * D;
    let ok = r0 + r < p.t;
    for (var d = 0u; d < D; d++) {
      ta[d * BC4 + r / 4u][r % 4u] = select(0.0, in_q[oq + d], ok);
      tb[d * BC4 + r / 4u][r % 4u] = select(0.0, in_dout[oo + d], ok);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 4×16 blocks.

// s + x ⊗ (16 tile rows at the dim of tile index `at`).
fn outer_a(s: S16, x: vec4<f32>, at: u32) -> S16 {
  let t0 = ta[at];
  let t1 = ta[at + 1u];
  let t2 = ta[at + 2u];
  let t3 = ta[at + 3u];
  return S16(
    s.a + mat4x4<f32>(x * t0.x, x * t0.y, x * t0.z, x * t0.w),
    s.b + mat4x4<f32>(x * t1.x, x * t1.y, x * t1.z, x * t1.w),
    s.c + mat4x4<f32>(x * t2.x, x * t2.y, x * t2.z, x * t2.w),
    s.d + mat4x4<f32>(x * t3.x, x * t3.y, x * t3.z, x * t3.w),
  );
}

fn outer_b(s: S16, x: vec4<f32>, at: u32) -> S16 {
  let t0 = tb[at];
  let t1 = tb[at + 1u];
  let t2 = tb[at + 2u];
  let t3 = tb[at + 3u];
  return S16(
    s.a + mat4x4<f32>(x * t0.x, x * t0.y, x * t0.z, x * t0.w),
    s.b + mat4x4<f32>(x * t1.x, x * t1.y, x * t1.z, x * t1.w),
    s.c + mat4x4<f32>(x * t2.x, x * t2.y, x * t2.z, x * t2.w),
    s.d + mat4x4<f32>(x * t3.x, x * t3.y, x * t3.z, x * t3.w),
  );
}

// Σ over the 16 tile rows of w[row] · tile(row, dim of `at`): a vec4 over the own rows.
fn contract_a(w: S16, at: u32) -> vec4<f32> {
  return (w.a * ta[at] + w.b * ta[at + 1u]) + (w.c * ta[at + 2u] + w.d * ta[at + 3u]);
}

fn contract_b(w: S16, at: u32) -> vec4<f32> {
  return (w.a * tb[at] + w.b * tb[at + 1u]) + (w.c * tb[at + 2u] + w.d * tb[at + 3u]);
}

fn scaled(s: S16, f: f32) -> S16 {
  return S16(s.a * f, s.b * f, s.c * f, s.d * f);
}

// Query-side mask for tile keys j..j+3 (columns) of own query rows: seqStart <= j <= row < T.
fn keep_keys(s: mat4x4<f32>, j: u32, rows: vec4<u32>, start: vec4<u32>) -> mat4x4<f32> {
  let ok = rows < vec4<u32>(p.t);
  let m = vec4<f32>(MASKED);
  let j0 = vec4<u32>(j);
  let j1 = vec4<u32>(j + 1u);
  let j2 = vec4<u32>(j + 2u);
  let j3 = vec4<u32>(j + 3u);
  return mat4x4<f32>(
    select(m, s[0], ok & (j0 >= start) & (j0 <= rows)),
    select(m, s[1], ok & (j1 >= start) & (j1 <= rows)),
    select(m, s[2], ok & (j2 >= start) & (j2 <= rows)),
    select(m, s[3], ok & (j3 >= start) & (j3 <= rows)),
  );
}

fn keep_keys16(s: S16, j: u32, rows: vec4<u32>, start: vec4<u32>) -> S16 {
  return S16(
    keep_keys(s.a, j, rows, start),
    keep_keys(s.b, j + 4u, rows, start),
    keep_keys(s.c, j + 8u, rows, start),
    keep_keys(s.d, j + 12u, rows, start),
  );
}

// Key-side mask for tile queries i..i+3 (columns, seqStart st) of own key rows:
// key < T, query < T, key <= query, key >= seqStart[query].
fn keep_queries(s: mat4x4<f32>, i: u32, st: vec4<u32>, keys: vec4<u32>) -> mat4x4<f32> {
  let ok = keys < vec4<u32>(p.t);
  let m = vec4<f32>(MASKED);
  let T = p.t;
  let i1 = i + 1u;
  let i2 = i + 2u;
  let i3 = i + 3u;
  return mat4x4<f32>(
    select(m, s[0], ok & vec4<bool>(i < T) & (keys <= vec4<u32>(i)) & (keys >= vec4<u32>(st.x))),
    select(m, s[1], ok & vec4<bool>(i1 < T) & (keys <= vec4<u32>(i1)) & (keys >= vec4<u32>(st.y))),
    select(m, s[2], ok & vec4<bool>(i2 < T) & (keys <= vec4<u32>(i2)) & (keys >= vec4<u32>(st.z))),
    select(m, s[3], ok & vec4<bool>(i3 < T) & (keys <= vec4<u32>(i3)) & (keys >= vec4<u32>(st.w))),
  );
}

// Row maximum over the 16 columns.
fn row_max(s: S16) -> vec4<f32> {
  let a = max(max(s.a[0], s.a[1]), max(s.a[2], s.a[3]));
  let b = max(max(s.b[0], s.b[1]), max(s.b[2], s.b[3]));
  let c = max(max(s.c[0], s.c[1]), max(s.c[2], s.c[3]));
  let d = max(max(s.d[0], s.d[1]), max(s.d[2], s.d[3]));
  return max(max(a, b), max(c, d));
}

fn row_sum(s: S16) -> vec4<f32> {
  let a = (s.a[0] + s.a[1]) + (s.a[2] + s.a[3]);
  let b = (s.b[0] + s.b[1]) + (s.b[2] + s.b[3]);
  let c = (s.c[0] + s.c[1]) + (s.c[2] + s.c[3]);
  let d = (s.d[0] + s.d[1]) + (s.d[2] + s.d[3]);
  return (a + b) + (c + d);
}

// exp(s − m) per own row (m: vec4 over rows), 0 where masked.
fn probs(s: mat4x4<f32>, m: vec4<f32>) -> mat4x4<f32> {
  let z = vec4<f32>();
  let t = vec4<f32>(THRESHOLD);
  return mat4x4<f32>(
    select(z, exp(s[0] - m), s[0] > t),
    select(z, exp(s[1] - m), s[1] > t),
    select(z, exp(s[2] - m), s[2] > t),
    select(z, exp(s[3] - m), s[3] > t),
  );
}

fn probs16(s: S16, m: vec4<f32>) -> S16 {
  return S16(probs(s.a, m), probs(s.b, m), probs(s.c, m), probs(s.d, m));
}

// exp(s[:, col] − m[col]) per tile column (m: one value per column), 0 where masked.
fn probs_cols(s: mat4x4<f32>, m: vec4<f32>) -> mat4x4<f32> {
  let z = vec4<f32>();
  let t = vec4<f32>(THRESHOLD);
  return mat4x4<f32>(
    select(z, exp(s[0] - vec4<f32>(m.x)), s[0] > t),
    select(z, exp(s[1] - vec4<f32>(m.y)), s[1] > t),
    select(z, exp(s[2] - vec4<f32>(m.z)), s[2] > t),
    select(z, exp(s[3] - vec4<f32>(m.w)), s[3] > t),
  );
}

// dS = P ∘ (dP − delta) with delta per own row.
fn dsoft(pr: mat4x4<f32>, dp: mat4x4<f32>, delta: vec4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(
    pr[0] * (dp[0] - delta),
    pr[1] * (dp[1] - delta),
    pr[2] * (dp[2] - delta),
    pr[3] * (dp[3] - delta),
  );
}

// dS = P ∘ (dP − delta) with delta per tile column.
fn dsoft_cols(pr: mat4x4<f32>, dp: mat4x4<f32>, delta: vec4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(
    pr[0] * (dp[0] - vec4<f32>(delta.x)),
    pr[1] * (dp[1] - vec4<f32>(delta.y)),
    pr[2] * (dp[2] - vec4<f32>(delta.z)),
    pr[3] * (dp[3] - vec4<f32>(delta.w)),
  );
}

// ---------------------------------------------------------------------------------------------
// Forward: workgroup (4·RQ queries, q head h). Online softmax over the key tiles from seqStart of
// the first query to the last query; a thread skips the 16-key groups none of its rows sees.

@compute @workgroup_size(RQ)
fn attention_forward(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  D = p.d;
  let T = p.t;
  let h = wid.y;
  let kvh = h / p.group;
  let q0 = wid.x * 4u * RQ;
  let rows = vec4<u32>(q0 + 4u * li) + vec4<u32>(0u, 1u, 2u, 3u);
  let start = starts(rows);
  let live = rows.x < T;
  let qHi = min(q0 + 4u * RQ, T) - 1u;
  let kLo = in_start[q0];
  let qo = offsets(rows, p.ld_q, p.q_off, h);
  for (var d = 0u; d < D; d++) {
    acc1[d * RQ + li] = vec4<f32>();
  }
  var m = vec4<f32>(MASKED);
  var l = vec4<f32>();

  for (var k0 = kLo; k0 <= qHi; k0 += 16u * NG) {
    workgroupBarrier();
    stage_kv(k0, kvh, li);
    workgroupBarrier();
    for (var g = 0u; g < NG; g++) {
      let j = k0 + 16u * g;
      if (!live || j > rows.w || j + 15u < start.x) {
        continue;
      }
      var s = S16();
      for (var d = 0u; d < D; d++) {
        s = outer_a(s, own_q(qo + vec4<u32>(d)), d * BC4 + 4u * g);
      }
      s = keep_keys16(scaled(s, p.scale), j, rows, start);
      let mNew = max(m, row_max(s));
      let alpha = exp(m - mNew);
      let pr = probs16(s, mNew);
      l = l * alpha + row_sum(pr);
      m = mNew;
      for (var d = 0u; d < D; d++) {
        let at = d * RQ + li;
        acc1[at] = acc1[at] * alpha + contract_b(pr, d * BC4 + 4u * g);
      }
    }
  }

  let inv = 1.0 / l;
  for (var d = 0u; d < D; d++) {
    acc1[d * RQ + li] *= inv;
  }
  let lse = m + log(l);
  if (rows.x < T) {
    out_lse[h * T + rows.x] = lse.x;
  }
  if (rows.y < T) {
    out_lse[h * T + rows.y] = lse.y;
  }
  if (rows.z < T) {
    out_lse[h * T + rows.z] = lse.z;
  }
  if (rows.w < T) {
    out_lse[h * T + rows.w] = lse.w;
  }
  workgroupBarrier();
  for (var e = li; e < 4u * RQ * D; e += RQ) {
    let r = e / D;
    let d = e % D;
    if (q0 + r < T) {
      out_o[((q0 + r) * p.hq + h) * D + d] = acc1[d * RQ + r / 4u][r % 4u];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward pass 1: delta[h, i] = Σ_d dO[i, h, d] · O[i, h, d], one thread per (token, head).

@compute @workgroup_size(64)
fn attention_backward_delta(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  D = p.d;
  let idx = flat_index(gid, nwg, 64u); // i · Hq + h
  if (idx >= p.t * p.hq) {
    return;
  }
  var acc = 0.0;
  for (var d = 0u; d < D; d++) {
    acc += in_dout[idx * D + d] * in_o[idx * D + d];
  }
  out_delta[(idx % p.hq) * p.t + idx / p.hq] = acc;
}

// ---------------------------------------------------------------------------------------------
// Backward pass 2: dQ. Workgroup (4·RQ queries, q head h), key tiles as in the forward:
// dQ_i = scale · Σ_j P_ij (dP_ij − delta_i) K_j, P_ij = exp(scale · q_i·k_j − lse_i),
// dP_ij = dO_i · V_j.

@compute @workgroup_size(RQ)
fn attention_backward_dq(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  D = p.d;
  let T = p.t;
  let h = wid.y;
  let kvh = h / p.group;
  let q0 = wid.x * 4u * RQ;
  let rows = vec4<u32>(q0 + 4u * li) + vec4<u32>(0u, 1u, 2u, 3u);
  let start = starts(rows);
  let live = rows.x < T;
  let qHi = min(q0 + 4u * RQ, T) - 1u;
  let kLo = in_start[q0];
  let rc = min(rows, vec4<u32>(T - 1u)) + vec4<u32>(h * T);
  let lse = vec4<f32>(in_lse[rc.x], in_lse[rc.y], in_lse[rc.z], in_lse[rc.w]);
  let delta = vec4<f32>(in_delta[rc.x], in_delta[rc.y], in_delta[rc.z], in_delta[rc.w]);
  let qo = offsets(rows, p.ld_q, p.q_off, h);
  let oo = offsets(rows, p.hq * D, 0u, h); // dO (dense)
  for (var d = 0u; d < D; d++) {
    acc1[d * RQ + li] = vec4<f32>();
  }

  for (var k0 = kLo; k0 <= qHi; k0 += 16u * NG) {
    workgroupBarrier();
    stage_kv(k0, kvh, li);
    workgroupBarrier();
    for (var g = 0u; g < NG; g++) {
      let j = k0 + 16u * g;
      if (!live || j > rows.w || j + 15u < start.x) {
        continue;
      }
      var s = S16();
      var dp = S16();
      for (var d = 0u; d < D; d++) {
        let at = d * BC4 + 4u * g;
        s = outer_a(s, own_q(qo + vec4<u32>(d)), at);
        dp = outer_b(dp, own_dout(oo + vec4<u32>(d)), at);
      }
      s = keep_keys16(scaled(s, p.scale), j, rows, start);
      let pr = probs16(s, lse);
      let ds = S16(
        dsoft(pr.a, dp.a, delta),
        dsoft(pr.b, dp.b, delta),
        dsoft(pr.c, dp.c, delta),
        dsoft(pr.d, dp.d, delta),
      );
      for (var d = 0u; d < D; d++) {
        let at = d * RQ + li;
        acc1[at] += contract_a(ds, d * BC4 + 4u * g);
      }
    }
  }

  workgroupBarrier();
  for (var e = li; e < 4u * RQ * D; e += RQ) {
    let r = e / D;
    let d = e % D;
    if (q0 + r < T) {
      out_dq[(q0 + r) * p.ld_q + p.q_off + h * D + d] = acc1[d * RQ + r / 4u][r % 4u] * p.scale;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward pass 3: dK and dV. Workgroup (4·RQ keys, kv head); loops over the q heads of its group
// and the query tiles from its first key to the last seqEnd of its keys. Scores are transposed
// here (component = own key, column = tile query): dV_j = Σ_i P_ij dO_i,
// dK_j = scale · Σ_i P_ij (dP_ij − delta_i) Q_i.

@compute @workgroup_size(RQ)
fn attention_backward_dkv(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  D = p.d;
  let T = p.t;
  let kvh = wid.y;
  let k0 = wid.x * 4u * RQ;
  let keys = vec4<u32>(k0 + 4u * li) + vec4<u32>(0u, 1u, 2u, 3u);
  let live = keys.x < T;
  let myEnd = in_end[min(keys.w, T - 1u)];
  let qEnd = in_end[min(k0 + 4u * RQ, T) - 1u];
  let ko = offsets(keys, p.ld_kv, p.k_off, kvh);
  let vo = offsets(keys, p.ld_kv, p.v_off, kvh);
  for (var d = 0u; d < D; d++) {
    acc1[d * RQ + li] = vec4<f32>();
    acc2[d * RQ + li] = vec4<f32>();
  }

  for (var gh = 0u; gh < p.group; gh++) {
    let h = kvh * p.group + gh;
    for (var i0 = k0; i0 < qEnd; i0 += 16u * NG) {
      workgroupBarrier();
      stage_qdo(i0, h, li);
      workgroupBarrier();
      for (var g = 0u; g < NG; g++) {
        let i = i0 + 16u * g;
        if (!live || i + 15u < keys.x || i >= myEnd) {
          continue;
        }
        var s = S16();
        var dp = S16();
        for (var d = 0u; d < D; d++) {
          let at = d * BC4 + 4u * g;
          s = outer_a(s, own_k(ko + vec4<u32>(d)), at);
          dp = outer_b(dp, own_v(vo + vec4<u32>(d)), at);
        }
        // mask, P and dS one quad of queries at a time (a loop: less shader code to compile)
        let q4 = 4u * g;
        let sq = array<mat4x4<f32>, 4>(s.a, s.b, s.c, s.d);
        let dq = array<mat4x4<f32>, 4>(dp.a, dp.b, dp.c, dp.d);
        var pq: array<mat4x4<f32>, 4>;
        var dsq: array<mat4x4<f32>, 4>;
        for (var n = 0u; n < 4u; n++) {
          let iq = i + 4u * n;
          let st = starts(vec4<u32>(iq) + vec4<u32>(0u, 1u, 2u, 3u));
          let pn = probs_cols(keep_queries(sq[n] * p.scale, iq, st, keys), quad_lse(h, iq));
          pq[n] = pn;
          dsq[n] = dsoft_cols(pn, dq[n], quad_delta(h, iq));
        }
        let pr = S16(pq[0], pq[1], pq[2], pq[3]);
        let ds = S16(dsq[0], dsq[1], dsq[2], dsq[3]);
        for (var d = 0u; d < D; d++) {
          let at = d * RQ + li;
          let t = d * BC4 + q4;
          acc1[at] += contract_a(ds, t);
          acc2[at] += contract_b(pr, t);
        }
      }
    }
  }

  workgroupBarrier();
  for (var e = li; e < 4u * RQ * D; e += RQ) {
    let r = e / D;
    let d = e % D;
    if (k0 + r < T) {
      let o = (k0 + r) * p.ld_kv + kvh * D + d;
      out_dk[o + p.k_off] = acc1[d * RQ + r / 4u][r % 4u] * p.scale;
      out_dv[o + p.v_off] = acc2[d * RQ + r / 4u][r % 4u];
    }
  }
}
