// Packed variable-length causal attention (flash-attention style): forward with LSE, backward delta/dQ/dK·dV.
//
// Q (T, Hq, D), K and V (T, Hkv, D) row-major; q head h reads kv head h / (Hq / Hkv). Token i
// attends to key j when seqStart[i] <= j <= i (block-diagonal causal mask of contiguous packed
// samples, so seqStart and seqEnd are non-decreasing).
//
// Layout of the work: a workgroup is WG = 16 threads and each thread owns FOUR rows (queries in
// the forward and dQ, keys in dK/dV), held as vec4s across the rows. Head dims are grouped in
// blocks of 4 (D4 = ceil(D/4) blocks, zero-padded): the four rows × four dims of a block are one
// mat4x4 (column c = dim 4b+c, component r = row), and 4 blocks make a Blk4 (16 dims). Up to 8
// Blk4 registers per operand give D <= 128. The other side (keys, or queries in dK/dV) is staged
// in workgroup memory in tiles of NQ quads of 4 rows, stored per (quad, block) as mat4x4 with
// column k = row 4·quad+k, component c = dim 4b+c. Then for one quad:
//   scores (4 own rows × 4 tile rows) = Σ_b own_b · tile[quad, b]
//   own_b += P · transpose(tile[quad, b])      (P: 4 own rows × 4 tile rows)
// Every register index is a constant: the unrolled `if (D4 > n)` lines below replace loops,
// because loop bounding in the WGSL compiler keeps drivers from unrolling them, and a loop over
// a register array would turn it into per-lane scratch memory (10× slower on lavapipe).

const WG: u32 = 16u; // threads per workgroup
const ROWS: u32 = 64u; // rows owned by a workgroup (4 per thread)
const MASKED: f32 = -1.0e30; // running max before any unmasked score (never a real score)

override D: u32 = 64u; // head dim, 1..128
override NQ: u32 = 8u; // quads (of 4 rows) per staged tile
override D4: u32 = (D + 3u) / 4u; // blocks of 4 dims
override DP: u32 = D4 * 4u; // padded head dim

struct Params {
  t: u32, // tokens in the packed row
  hq: u32, // query heads
  hkv: u32, // key/value heads
  group: u32, // hq / hkv
  scale: f32, // softmax scale (1/sqrt(D) or attention_multiplier)
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Outputs (binding 1, 2) per entry point.
@group(0) @binding(1) var<storage, read_write> out_o: array<f32>; // forward (T, Hq, D)
@group(0) @binding(2) var<storage, read_write> out_lse: array<f32>; // forward (Hq, T)
@group(0) @binding(1) var<storage, read_write> out_delta: array<f32>; // delta (Hq, T)
@group(0) @binding(1) var<storage, read_write> out_dq: array<f32>; // dq (T, Hq, D)
@group(0) @binding(1) var<storage, read_write> out_dk: array<f32>; // dkv (T, Hkv, D)
@group(0) @binding(2) var<storage, read_write> out_dv: array<f32>; // dkv (T, Hkv, D)

// Inputs, at the same binding in every entry point that reads them.
@group(0) @binding(3) var<storage, read> in_q: array<f32>; // (T, Hq, D)
@group(0) @binding(4) var<storage, read> in_k: array<f32>; // (T, Hkv, D)
@group(0) @binding(5) var<storage, read> in_v: array<f32>; // (T, Hkv, D)
@group(0) @binding(6) var<storage, read> in_start: array<u32>; // (T) seqStart
@group(0) @binding(7) var<storage, read> in_end: array<u32>; // (T) seqEnd
@group(0) @binding(8) var<storage, read> in_dout: array<f32>; // (T, Hq, D)
@group(0) @binding(9) var<storage, read> in_lse: array<f32>; // (Hq, T)
@group(0) @binding(10) var<storage, read> in_delta: array<f32>; // (Hq, T)
@group(0) @binding(11) var<storage, read> in_o: array<f32>; // (T, Hq, D)

var<workgroup> ta: array<mat4x4<f32>, NQ * D4>; // tile A: K (forward, dQ) or Q (dK/dV)
var<workgroup> tb: array<mat4x4<f32>, NQ * D4>; // tile B: V (forward, dQ) or dO (dK/dV)
var<workgroup> trow: array<vec4<f32>, NQ * 2u>; // dK/dV: lse and delta of the query quads
var<workgroup> tstart: array<vec4<u32>, NQ>; // dK/dV: seqStart of the query quads

// 16 head dims of four rows: m_n column c = dim 16g + 4n + c (g: which Blk4), component = row.
struct Blk4 {
  m0: mat4x4<f32>,
  m1: mat4x4<f32>,
  m2: mat4x4<f32>,
  m3: mat4x4<f32>,
}

// ---------------------------------------------------------------------------------------------
// Gathering four rows into registers (once per workgroup).

// Element offsets of dim d of four token rows in a (T, heads, D) tensor, clamped in bounds.
fn offsets(rows: vec4<u32>, heads: u32, h: u32, d: u32) -> vec4<u32> {
  return min(rows, vec4<u32>(p.t - 1u)) * (heads * D) + vec4<u32>(h * D + min(d, D - 1u));
}

// True where the row is a token and d a real dim.
fn inside(rows: vec4<u32>, d: u32) -> vec4<bool> {
  return (rows < vec4<u32>(p.t)) & vec4<bool>(d < D);
}

fn dim_q(rows: vec4<u32>, h: u32, d: u32) -> vec4<f32> {
  let o = offsets(rows, p.hq, h, d);
  return select(vec4<f32>(), vec4<f32>(in_q[o.x], in_q[o.y], in_q[o.z], in_q[o.w]), inside(rows, d));
}

fn dim_dout(rows: vec4<u32>, h: u32, d: u32) -> vec4<f32> {
  let o = offsets(rows, p.hq, h, d);
  let v = vec4<f32>(in_dout[o.x], in_dout[o.y], in_dout[o.z], in_dout[o.w]);
  return select(vec4<f32>(), v, inside(rows, d));
}

fn dim_k(rows: vec4<u32>, h: u32, d: u32) -> vec4<f32> {
  let o = offsets(rows, p.hkv, h, d);
  return select(vec4<f32>(), vec4<f32>(in_k[o.x], in_k[o.y], in_k[o.z], in_k[o.w]), inside(rows, d));
}

fn dim_v(rows: vec4<u32>, h: u32, d: u32) -> vec4<f32> {
  let o = offsets(rows, p.hkv, h, d);
  return select(vec4<f32>(), vec4<f32>(in_v[o.x], in_v[o.y], in_v[o.z], in_v[o.w]), inside(rows, d));
}

fn blk_q(rows: vec4<u32>, h: u32, b: u32) -> mat4x4<f32> {
  let d = 4u * b;
  return mat4x4<f32>(dim_q(rows, h, d), dim_q(rows, h, d + 1u), dim_q(rows, h, d + 2u), dim_q(rows, h, d + 3u));
}

fn blk_dout(rows: vec4<u32>, h: u32, b: u32) -> mat4x4<f32> {
  let d = 4u * b;
  return mat4x4<f32>(
    dim_dout(rows, h, d),
    dim_dout(rows, h, d + 1u),
    dim_dout(rows, h, d + 2u),
    dim_dout(rows, h, d + 3u),
  );
}

fn blk_k(rows: vec4<u32>, h: u32, b: u32) -> mat4x4<f32> {
  let d = 4u * b;
  return mat4x4<f32>(dim_k(rows, h, d), dim_k(rows, h, d + 1u), dim_k(rows, h, d + 2u), dim_k(rows, h, d + 3u));
}

fn blk_v(rows: vec4<u32>, h: u32, b: u32) -> mat4x4<f32> {
  let d = 4u * b;
  return mat4x4<f32>(dim_v(rows, h, d), dim_v(rows, h, d + 1u), dim_v(rows, h, d + 2u), dim_v(rows, h, d + 3u));
}

fn blk4_q(rows: vec4<u32>, h: u32, g: u32) -> Blk4 {
  let b = 4u * g;
  return Blk4(blk_q(rows, h, b), blk_q(rows, h, b + 1u), blk_q(rows, h, b + 2u), blk_q(rows, h, b + 3u));
}

fn blk4_dout(rows: vec4<u32>, h: u32, g: u32) -> Blk4 {
  let b = 4u * g;
  return Blk4(
    blk_dout(rows, h, b),
    blk_dout(rows, h, b + 1u),
    blk_dout(rows, h, b + 2u),
    blk_dout(rows, h, b + 3u),
  );
}

fn blk4_k(rows: vec4<u32>, h: u32, g: u32) -> Blk4 {
  let b = 4u * g;
  return Blk4(blk_k(rows, h, b), blk_k(rows, h, b + 1u), blk_k(rows, h, b + 2u), blk_k(rows, h, b + 3u));
}

fn blk4_v(rows: vec4<u32>, h: u32, g: u32) -> Blk4 {
  let b = 4u * g;
  return Blk4(blk_v(rows, h, b), blk_v(rows, h, b + 1u), blk_v(rows, h, b + 2u), blk_v(rows, h, b + 3u));
}

// ---------------------------------------------------------------------------------------------
// Writing four rows of one Blk4 (times a per-row factor) back to a (T, heads, D) tensor.

fn put_o(x: Blk4, g: u32, rows: vec4<u32>, h: u32, f: vec4<f32>) {
  for (var n = 0u; n < 4u; n++) {
    var m = x.m0;
    if (n == 1u) {
      m = x.m1;
    } else if (n == 2u) {
      m = x.m2;
    } else if (n == 3u) {
      m = x.m3;
    }
    for (var c = 0u; c < 4u; c++) {
      let d = 16u * g + 4u * n + c;
      let v = m[c] * f;
      let o = offsets(rows, p.hq, h, d);
      let ok = inside(rows, d);
      if (ok.x) {
        out_o[o.x] = v.x;
      }
      if (ok.y) {
        out_o[o.y] = v.y;
      }
      if (ok.z) {
        out_o[o.z] = v.z;
      }
      if (ok.w) {
        out_o[o.w] = v.w;
      }
    }
  }
}

fn put_dq(x: Blk4, g: u32, rows: vec4<u32>, h: u32, f: vec4<f32>) {
  for (var n = 0u; n < 4u; n++) {
    var m = x.m0;
    if (n == 1u) {
      m = x.m1;
    } else if (n == 2u) {
      m = x.m2;
    } else if (n == 3u) {
      m = x.m3;
    }
    for (var c = 0u; c < 4u; c++) {
      let d = 16u * g + 4u * n + c;
      let v = m[c] * f;
      let o = offsets(rows, p.hq, h, d);
      let ok = inside(rows, d);
      if (ok.x) {
        out_dq[o.x] = v.x;
      }
      if (ok.y) {
        out_dq[o.y] = v.y;
      }
      if (ok.z) {
        out_dq[o.z] = v.z;
      }
      if (ok.w) {
        out_dq[o.w] = v.w;
      }
    }
  }
}

fn put_dk(x: Blk4, g: u32, rows: vec4<u32>, h: u32, f: vec4<f32>) {
  for (var n = 0u; n < 4u; n++) {
    var m = x.m0;
    if (n == 1u) {
      m = x.m1;
    } else if (n == 2u) {
      m = x.m2;
    } else if (n == 3u) {
      m = x.m3;
    }
    for (var c = 0u; c < 4u; c++) {
      let d = 16u * g + 4u * n + c;
      let v = m[c] * f;
      let o = offsets(rows, p.hkv, h, d);
      let ok = inside(rows, d);
      if (ok.x) {
        out_dk[o.x] = v.x;
      }
      if (ok.y) {
        out_dk[o.y] = v.y;
      }
      if (ok.z) {
        out_dk[o.z] = v.z;
      }
      if (ok.w) {
        out_dk[o.w] = v.w;
      }
    }
  }
}

fn put_dv(x: Blk4, g: u32, rows: vec4<u32>, h: u32, f: vec4<f32>) {
  for (var n = 0u; n < 4u; n++) {
    var m = x.m0;
    if (n == 1u) {
      m = x.m1;
    } else if (n == 2u) {
      m = x.m2;
    } else if (n == 3u) {
      m = x.m3;
    }
    for (var c = 0u; c < 4u; c++) {
      let d = 16u * g + 4u * n + c;
      let v = m[c] * f;
      let o = offsets(rows, p.hkv, h, d);
      let ok = inside(rows, d);
      if (ok.x) {
        out_dv[o.x] = v.x;
      }
      if (ok.y) {
        out_dv[o.y] = v.y;
      }
      if (ok.z) {
        out_dv[o.z] = v.z;
      }
      if (ok.w) {
        out_dv[o.w] = v.w;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Staging tiles of NQ·4 rows (zero outside T×D) in workgroup memory.

// Tile slot of element e (row-major over NQ·4 rows × DP dims): (mat index, column, component).
fn slot(e: u32) -> vec3<u32> {
  let r = e / DP;
  let d = e % DP;
  return vec3<u32>((r / 4u) * D4 + d / 4u, r % 4u, d % 4u);
}

// K and V rows k0.. of kv head `kvh` into ta and tb.
fn stage_kv(k0: u32, kvh: u32, li: u32) {
  for (var e = li; e < NQ * 4u * DP; e += WG) {
    let j = k0 + e / DP;
    let d = e % DP;
    let ok = j < p.t && d < D;
    let o = min(j, p.t - 1u) * (p.hkv * D) + kvh * D + min(d, D - 1u);
    let s = slot(e);
    ta[s.x][s.y][s.z] = select(0.0, in_k[o], ok);
    tb[s.x][s.y][s.z] = select(0.0, in_v[o], ok);
  }
}

// Q and dO rows i0.. of q head h into ta and tb, with their lse, delta and seqStart.
fn stage_qdo(i0: u32, h: u32, li: u32) {
  for (var e = li; e < NQ * 4u * DP; e += WG) {
    let i = i0 + e / DP;
    let d = e % DP;
    let ok = i < p.t && d < D;
    let o = min(i, p.t - 1u) * (p.hq * D) + h * D + min(d, D - 1u);
    let s = slot(e);
    ta[s.x][s.y][s.z] = select(0.0, in_q[o], ok);
    tb[s.x][s.y][s.z] = select(0.0, in_dout[o], ok);
  }
  for (var r = li; r < NQ * 4u; r += WG) {
    let i = min(i0 + r, p.t - 1u);
    trow[2u * (r / 4u)][r % 4u] = in_lse[h * p.t + i];
    trow[2u * (r / 4u) + 1u][r % 4u] = in_delta[h * p.t + i];
    tstart[r / 4u][r % 4u] = in_start[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Block arithmetic on one Blk4 (blocks 4g.. of quad `base` = quad · D4), skipping blocks >= D4.

// s + Σ_n x.m_n · ta[base + 4g + n]: scores of the 4 own rows (components) × 4 tile rows (columns).
fn dot_a(s: mat4x4<f32>, x: Blk4, g: u32, base: u32) -> mat4x4<f32> {
  let b = 4u * g;
  var t = s + x.m0 * ta[base + b];
  if (D4 > b + 1u) {
    t += x.m1 * ta[base + b + 1u];
  }
  if (D4 > b + 2u) {
    t += x.m2 * ta[base + b + 2u];
  }
  if (D4 > b + 3u) {
    t += x.m3 * ta[base + b + 3u];
  }
  return t;
}

// Same with tile B.
fn dot_b(s: mat4x4<f32>, x: Blk4, g: u32, base: u32) -> mat4x4<f32> {
  let b = 4u * g;
  var t = s + x.m0 * tb[base + b];
  if (D4 > b + 1u) {
    t += x.m1 * tb[base + b + 1u];
  }
  if (D4 > b + 2u) {
    t += x.m2 * tb[base + b + 2u];
  }
  if (D4 > b + 3u) {
    t += x.m3 * tb[base + b + 3u];
  }
  return t;
}

// x + w · tile_Aᵀ: accumulate Σ_k w[k] · (tile row k) into the own rows.
fn acc_a(x: Blk4, w: mat4x4<f32>, g: u32, base: u32) -> Blk4 {
  let b = 4u * g;
  var y = x;
  y.m0 += w * transpose(ta[base + b]);
  if (D4 > b + 1u) {
    y.m1 += w * transpose(ta[base + b + 1u]);
  }
  if (D4 > b + 2u) {
    y.m2 += w * transpose(ta[base + b + 2u]);
  }
  if (D4 > b + 3u) {
    y.m3 += w * transpose(ta[base + b + 3u]);
  }
  return y;
}

// Same with tile B.
fn acc_b(x: Blk4, w: mat4x4<f32>, g: u32, base: u32) -> Blk4 {
  let b = 4u * g;
  var y = x;
  y.m0 += w * transpose(tb[base + b]);
  if (D4 > b + 1u) {
    y.m1 += w * transpose(tb[base + b + 1u]);
  }
  if (D4 > b + 2u) {
    y.m2 += w * transpose(tb[base + b + 2u]);
  }
  if (D4 > b + 3u) {
    y.m3 += w * transpose(tb[base + b + 3u]);
  }
  return y;
}

// Rescale every row (component) of m by f.
fn rows_scaled(m: mat4x4<f32>, f: vec4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(m[0] * f, m[1] * f, m[2] * f, m[3] * f);
}

// Forward update: x · diag(alpha) + w · tile_Bᵀ.
fn rescale_acc_b(x: Blk4, alpha: vec4<f32>, w: mat4x4<f32>, g: u32, base: u32) -> Blk4 {
  let b = 4u * g;
  var y = x;
  y.m0 = rows_scaled(x.m0, alpha) + w * transpose(tb[base + b]);
  if (D4 > b + 1u) {
    y.m1 = rows_scaled(x.m1, alpha) + w * transpose(tb[base + b + 1u]);
  }
  if (D4 > b + 2u) {
    y.m2 = rows_scaled(x.m2, alpha) + w * transpose(tb[base + b + 2u]);
  }
  if (D4 > b + 3u) {
    y.m3 = rows_scaled(x.m3, alpha) + w * transpose(tb[base + b + 3u]);
  }
  return y;
}

// Query-side mask of key j for four query rows: seqStart[i] <= j <= i and i < T.
fn seen_by(rows: vec4<u32>, start: vec4<u32>, j: u32) -> vec4<bool> {
  return (rows < vec4<u32>(p.t)) & (vec4<u32>(j) >= start) & (vec4<u32>(j) <= rows);
}

fn starts(rows: vec4<u32>) -> vec4<u32> {
  let r = min(rows, vec4<u32>(p.t - 1u));
  return vec4<u32>(in_start[r.x], in_start[r.y], in_start[r.z], in_start[r.w]);
}

// ---------------------------------------------------------------------------------------------
// Forward: workgroup (64 queries, q head h); each thread keeps 4 query rows and their output
// accumulators in registers; online softmax over K/V tiles from seqStart of the first query to
// the last query (tiles outside every query's range are never visited).

@compute @workgroup_size(WG)
fn attention_forward(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let T = p.t;
  let h = wid.y;
  let kvh = h / p.group;
  let q0 = wid.x * ROWS;
  let rows = vec4<u32>(q0 + 4u * li) + vec4<u32>(0u, 1u, 2u, 3u);
  let start = starts(rows);
  let qHi = min(q0 + ROWS, T) - 1u;
  let kLo = in_start[q0];

  var q_0 = blk4_q(rows, h, 0u);
  var q_1 = Blk4();
  var q_2 = Blk4();
  var q_3 = Blk4();
  var q_4 = Blk4();
  var q_5 = Blk4();
  var q_6 = Blk4();
  var q_7 = Blk4();
  if (D4 > 4u) {
    q_1 = blk4_q(rows, h, 1u);
  }
  if (D4 > 8u) {
    q_2 = blk4_q(rows, h, 2u);
  }
  if (D4 > 12u) {
    q_3 = blk4_q(rows, h, 3u);
  }
  if (D4 > 16u) {
    q_4 = blk4_q(rows, h, 4u);
  }
  if (D4 > 20u) {
    q_5 = blk4_q(rows, h, 5u);
  }
  if (D4 > 24u) {
    q_6 = blk4_q(rows, h, 6u);
  }
  if (D4 > 28u) {
    q_7 = blk4_q(rows, h, 7u);
  }
  var o_0 = Blk4();
  var o_1 = Blk4();
  var o_2 = Blk4();
  var o_3 = Blk4();
  var o_4 = Blk4();
  var o_5 = Blk4();
  var o_6 = Blk4();
  var o_7 = Blk4();
  var m = vec4<f32>(MASKED);
  var l = vec4<f32>(0.0);

  for (var k0 = kLo; k0 <= qHi; k0 += NQ * 4u) {
    workgroupBarrier();
    stage_kv(k0, kvh, li);
    workgroupBarrier();
    for (var qd = 0u; qd < NQ; qd++) {
      let j = k0 + 4u * qd;
      let ok0 = seen_by(rows, start, j);
      let ok1 = seen_by(rows, start, j + 1u);
      let ok2 = seen_by(rows, start, j + 2u);
      let ok3 = seen_by(rows, start, j + 3u);
      if (!any(ok0 | ok1 | ok2 | ok3)) {
        continue;
      }
      let base = qd * D4;
      var s = dot_a(mat4x4<f32>(), q_0, 0u, base);
      if (D4 > 4u) {
        s = dot_a(s, q_1, 1u, base);
      }
      if (D4 > 8u) {
        s = dot_a(s, q_2, 2u, base);
      }
      if (D4 > 12u) {
        s = dot_a(s, q_3, 3u, base);
      }
      if (D4 > 16u) {
        s = dot_a(s, q_4, 4u, base);
      }
      if (D4 > 20u) {
        s = dot_a(s, q_5, 5u, base);
      }
      if (D4 > 24u) {
        s = dot_a(s, q_6, 6u, base);
      }
      if (D4 > 28u) {
        s = dot_a(s, q_7, 7u, base);
      }
      let s0 = select(vec4<f32>(MASKED), s[0] * p.scale, ok0);
      let s1 = select(vec4<f32>(MASKED), s[1] * p.scale, ok1);
      let s2 = select(vec4<f32>(MASKED), s[2] * p.scale, ok2);
      let s3 = select(vec4<f32>(MASKED), s[3] * p.scale, ok3);
      let mNew = max(m, max(max(s0, s1), max(s2, s3)));
      let alpha = exp(m - mNew);
      let pm = mat4x4<f32>(
        select(vec4<f32>(), exp(s0 - mNew), ok0),
        select(vec4<f32>(), exp(s1 - mNew), ok1),
        select(vec4<f32>(), exp(s2 - mNew), ok2),
        select(vec4<f32>(), exp(s3 - mNew), ok3),
      );
      l = l * alpha + (pm[0] + pm[1]) + (pm[2] + pm[3]);
      m = mNew;
      o_0 = rescale_acc_b(o_0, alpha, pm, 0u, base);
      if (D4 > 4u) {
        o_1 = rescale_acc_b(o_1, alpha, pm, 1u, base);
      }
      if (D4 > 8u) {
        o_2 = rescale_acc_b(o_2, alpha, pm, 2u, base);
      }
      if (D4 > 12u) {
        o_3 = rescale_acc_b(o_3, alpha, pm, 3u, base);
      }
      if (D4 > 16u) {
        o_4 = rescale_acc_b(o_4, alpha, pm, 4u, base);
      }
      if (D4 > 20u) {
        o_5 = rescale_acc_b(o_5, alpha, pm, 5u, base);
      }
      if (D4 > 24u) {
        o_6 = rescale_acc_b(o_6, alpha, pm, 6u, base);
      }
      if (D4 > 28u) {
        o_7 = rescale_acc_b(o_7, alpha, pm, 7u, base);
      }
    }
  }

  let inv = 1.0 / l;
  put_o(o_0, 0u, rows, h, inv);
  if (D4 > 4u) {
    put_o(o_1, 1u, rows, h, inv);
  }
  if (D4 > 8u) {
    put_o(o_2, 2u, rows, h, inv);
  }
  if (D4 > 12u) {
    put_o(o_3, 3u, rows, h, inv);
  }
  if (D4 > 16u) {
    put_o(o_4, 4u, rows, h, inv);
  }
  if (D4 > 20u) {
    put_o(o_5, 5u, rows, h, inv);
  }
  if (D4 > 24u) {
    put_o(o_6, 6u, rows, h, inv);
  }
  if (D4 > 28u) {
    put_o(o_7, 7u, rows, h, inv);
  }
  let lse = m + log(l);
  for (var r = 0u; r < 4u; r++) {
    if (rows[r] < T) {
      out_lse[h * T + rows[r]] = lse[r];
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
  let idx = gid.x + gid.y * nwg.x * 64u; // i · Hq + h
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
// Backward pass 2: dQ. Workgroup (64 queries, q head h), key tiles as in the forward:
// dQ_i = scale · Σ_j P_ij (dP_ij − delta_i) K_j, P_ij = exp(scale · q_i·k_j − lse_i),
// dP_ij = dO_i · V_j.

@compute @workgroup_size(WG)
fn attention_backward_dq(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let T = p.t;
  let h = wid.y;
  let kvh = h / p.group;
  let q0 = wid.x * ROWS;
  let rows = vec4<u32>(q0 + 4u * li) + vec4<u32>(0u, 1u, 2u, 3u);
  let start = starts(rows);
  let qHi = min(q0 + ROWS, T) - 1u;
  let kLo = in_start[q0];
  let rc = min(rows, vec4<u32>(T - 1u)) + vec4<u32>(h * T);
  let lse = vec4<f32>(in_lse[rc.x], in_lse[rc.y], in_lse[rc.z], in_lse[rc.w]);
  let delta = vec4<f32>(in_delta[rc.x], in_delta[rc.y], in_delta[rc.z], in_delta[rc.w]);

  var q_0 = blk4_q(rows, h, 0u);
  var q_1 = Blk4();
  var q_2 = Blk4();
  var q_3 = Blk4();
  var q_4 = Blk4();
  var q_5 = Blk4();
  var q_6 = Blk4();
  var q_7 = Blk4();
  var g_0 = blk4_dout(rows, h, 0u);
  var g_1 = Blk4();
  var g_2 = Blk4();
  var g_3 = Blk4();
  var g_4 = Blk4();
  var g_5 = Blk4();
  var g_6 = Blk4();
  var g_7 = Blk4();
  if (D4 > 4u) {
    q_1 = blk4_q(rows, h, 1u);
    g_1 = blk4_dout(rows, h, 1u);
  }
  if (D4 > 8u) {
    q_2 = blk4_q(rows, h, 2u);
    g_2 = blk4_dout(rows, h, 2u);
  }
  if (D4 > 12u) {
    q_3 = blk4_q(rows, h, 3u);
    g_3 = blk4_dout(rows, h, 3u);
  }
  if (D4 > 16u) {
    q_4 = blk4_q(rows, h, 4u);
    g_4 = blk4_dout(rows, h, 4u);
  }
  if (D4 > 20u) {
    q_5 = blk4_q(rows, h, 5u);
    g_5 = blk4_dout(rows, h, 5u);
  }
  if (D4 > 24u) {
    q_6 = blk4_q(rows, h, 6u);
    g_6 = blk4_dout(rows, h, 6u);
  }
  if (D4 > 28u) {
    q_7 = blk4_q(rows, h, 7u);
    g_7 = blk4_dout(rows, h, 7u);
  }
  var a_0 = Blk4();
  var a_1 = Blk4();
  var a_2 = Blk4();
  var a_3 = Blk4();
  var a_4 = Blk4();
  var a_5 = Blk4();
  var a_6 = Blk4();
  var a_7 = Blk4();

  for (var k0 = kLo; k0 <= qHi; k0 += NQ * 4u) {
    workgroupBarrier();
    stage_kv(k0, kvh, li);
    workgroupBarrier();
    for (var qd = 0u; qd < NQ; qd++) {
      let j = k0 + 4u * qd;
      let ok0 = seen_by(rows, start, j);
      let ok1 = seen_by(rows, start, j + 1u);
      let ok2 = seen_by(rows, start, j + 2u);
      let ok3 = seen_by(rows, start, j + 3u);
      if (!any(ok0 | ok1 | ok2 | ok3)) {
        continue;
      }
      let base = qd * D4;
      var s = dot_a(mat4x4<f32>(), q_0, 0u, base);
      var dp = dot_b(mat4x4<f32>(), g_0, 0u, base);
      if (D4 > 4u) {
        s = dot_a(s, q_1, 1u, base);
        dp = dot_b(dp, g_1, 1u, base);
      }
      if (D4 > 8u) {
        s = dot_a(s, q_2, 2u, base);
        dp = dot_b(dp, g_2, 2u, base);
      }
      if (D4 > 12u) {
        s = dot_a(s, q_3, 3u, base);
        dp = dot_b(dp, g_3, 3u, base);
      }
      if (D4 > 16u) {
        s = dot_a(s, q_4, 4u, base);
        dp = dot_b(dp, g_4, 4u, base);
      }
      if (D4 > 20u) {
        s = dot_a(s, q_5, 5u, base);
        dp = dot_b(dp, g_5, 5u, base);
      }
      if (D4 > 24u) {
        s = dot_a(s, q_6, 6u, base);
        dp = dot_b(dp, g_6, 6u, base);
      }
      if (D4 > 28u) {
        s = dot_a(s, q_7, 7u, base);
        dp = dot_b(dp, g_7, 7u, base);
      }
      let p0 = select(vec4<f32>(), exp(s[0] * p.scale - lse), ok0);
      let p1 = select(vec4<f32>(), exp(s[1] * p.scale - lse), ok1);
      let p2 = select(vec4<f32>(), exp(s[2] * p.scale - lse), ok2);
      let p3 = select(vec4<f32>(), exp(s[3] * p.scale - lse), ok3);
      let ds = mat4x4<f32>(p0 * (dp[0] - delta), p1 * (dp[1] - delta), p2 * (dp[2] - delta), p3 * (dp[3] - delta));
      a_0 = acc_a(a_0, ds, 0u, base);
      if (D4 > 4u) {
        a_1 = acc_a(a_1, ds, 1u, base);
      }
      if (D4 > 8u) {
        a_2 = acc_a(a_2, ds, 2u, base);
      }
      if (D4 > 12u) {
        a_3 = acc_a(a_3, ds, 3u, base);
      }
      if (D4 > 16u) {
        a_4 = acc_a(a_4, ds, 4u, base);
      }
      if (D4 > 20u) {
        a_5 = acc_a(a_5, ds, 5u, base);
      }
      if (D4 > 24u) {
        a_6 = acc_a(a_6, ds, 6u, base);
      }
      if (D4 > 28u) {
        a_7 = acc_a(a_7, ds, 7u, base);
      }
    }
  }

  let f = vec4<f32>(p.scale);
  put_dq(a_0, 0u, rows, h, f);
  if (D4 > 4u) {
    put_dq(a_1, 1u, rows, h, f);
  }
  if (D4 > 8u) {
    put_dq(a_2, 2u, rows, h, f);
  }
  if (D4 > 12u) {
    put_dq(a_3, 3u, rows, h, f);
  }
  if (D4 > 16u) {
    put_dq(a_4, 4u, rows, h, f);
  }
  if (D4 > 20u) {
    put_dq(a_5, 5u, rows, h, f);
  }
  if (D4 > 24u) {
    put_dq(a_6, 6u, rows, h, f);
  }
  if (D4 > 28u) {
    put_dq(a_7, 7u, rows, h, f);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward pass 3: dK and dV. Workgroup (64 keys, kv head); each thread keeps 4 key rows of K, V,
// dK, dV in registers and loops over the q heads of its group and the query tiles from its first
// key to the last seqEnd of its keys: dV_j = Σ_i P_ij dO_i, dK_j = scale · Σ_i P_ij (dP_ij −
// delta_i) Q_i. The scores are computed transposed: component = own key, column = query.

@compute @workgroup_size(WG)
fn attention_backward_dkv(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let T = p.t;
  let kvh = wid.y;
  let k0 = wid.x * ROWS;
  let keys = vec4<u32>(k0 + 4u * li) + vec4<u32>(0u, 1u, 2u, 3u);
  let kval = keys < vec4<u32>(T);
  let qEnd = in_end[min(k0 + ROWS, T) - 1u];

  var k_0 = blk4_k(keys, kvh, 0u);
  var k_1 = Blk4();
  var k_2 = Blk4();
  var k_3 = Blk4();
  var k_4 = Blk4();
  var k_5 = Blk4();
  var k_6 = Blk4();
  var k_7 = Blk4();
  var v_0 = blk4_v(keys, kvh, 0u);
  var v_1 = Blk4();
  var v_2 = Blk4();
  var v_3 = Blk4();
  var v_4 = Blk4();
  var v_5 = Blk4();
  var v_6 = Blk4();
  var v_7 = Blk4();
  if (D4 > 4u) {
    k_1 = blk4_k(keys, kvh, 1u);
    v_1 = blk4_v(keys, kvh, 1u);
  }
  if (D4 > 8u) {
    k_2 = blk4_k(keys, kvh, 2u);
    v_2 = blk4_v(keys, kvh, 2u);
  }
  if (D4 > 12u) {
    k_3 = blk4_k(keys, kvh, 3u);
    v_3 = blk4_v(keys, kvh, 3u);
  }
  if (D4 > 16u) {
    k_4 = blk4_k(keys, kvh, 4u);
    v_4 = blk4_v(keys, kvh, 4u);
  }
  if (D4 > 20u) {
    k_5 = blk4_k(keys, kvh, 5u);
    v_5 = blk4_v(keys, kvh, 5u);
  }
  if (D4 > 24u) {
    k_6 = blk4_k(keys, kvh, 6u);
    v_6 = blk4_v(keys, kvh, 6u);
  }
  if (D4 > 28u) {
    k_7 = blk4_k(keys, kvh, 7u);
    v_7 = blk4_v(keys, kvh, 7u);
  }
  var dk_0 = Blk4();
  var dk_1 = Blk4();
  var dk_2 = Blk4();
  var dk_3 = Blk4();
  var dk_4 = Blk4();
  var dk_5 = Blk4();
  var dk_6 = Blk4();
  var dk_7 = Blk4();
  var dv_0 = Blk4();
  var dv_1 = Blk4();
  var dv_2 = Blk4();
  var dv_3 = Blk4();
  var dv_4 = Blk4();
  var dv_5 = Blk4();
  var dv_6 = Blk4();
  var dv_7 = Blk4();

  for (var gh = 0u; gh < p.group; gh++) {
    let h = kvh * p.group + gh;
    for (var i0 = k0; i0 < qEnd; i0 += NQ * 4u) {
      workgroupBarrier();
      stage_qdo(i0, h, li);
      workgroupBarrier();
      for (var qd = 0u; qd < NQ; qd++) {
        let i = i0 + 4u * qd;
        let st = tstart[qd];
        // key mask for query i+c: key < T, i+c < T, key <= i+c, key >= seqStart[i+c]
        let ok0 = kval & vec4<bool>(i < T) & (keys <= vec4<u32>(i)) & (keys >= vec4<u32>(st.x));
        let ok1 = kval & vec4<bool>(i + 1u < T) & (keys <= vec4<u32>(i + 1u)) & (keys >= vec4<u32>(st.y));
        let ok2 = kval & vec4<bool>(i + 2u < T) & (keys <= vec4<u32>(i + 2u)) & (keys >= vec4<u32>(st.z));
        let ok3 = kval & vec4<bool>(i + 3u < T) & (keys <= vec4<u32>(i + 3u)) & (keys >= vec4<u32>(st.w));
        if (!any(ok0 | ok1 | ok2 | ok3)) {
          continue;
        }
        let base = qd * D4;
        var s = dot_a(mat4x4<f32>(), k_0, 0u, base);
        var dp = dot_b(mat4x4<f32>(), v_0, 0u, base);
        if (D4 > 4u) {
          s = dot_a(s, k_1, 1u, base);
          dp = dot_b(dp, v_1, 1u, base);
        }
        if (D4 > 8u) {
          s = dot_a(s, k_2, 2u, base);
          dp = dot_b(dp, v_2, 2u, base);
        }
        if (D4 > 12u) {
          s = dot_a(s, k_3, 3u, base);
          dp = dot_b(dp, v_3, 3u, base);
        }
        if (D4 > 16u) {
          s = dot_a(s, k_4, 4u, base);
          dp = dot_b(dp, v_4, 4u, base);
        }
        if (D4 > 20u) {
          s = dot_a(s, k_5, 5u, base);
          dp = dot_b(dp, v_5, 5u, base);
        }
        if (D4 > 24u) {
          s = dot_a(s, k_6, 6u, base);
          dp = dot_b(dp, v_6, 6u, base);
        }
        if (D4 > 28u) {
          s = dot_a(s, k_7, 7u, base);
          dp = dot_b(dp, v_7, 7u, base);
        }
        let lse = trow[2u * qd];
        let delta = trow[2u * qd + 1u];
        let p0 = select(vec4<f32>(), exp(s[0] * p.scale - lse.x), ok0);
        let p1 = select(vec4<f32>(), exp(s[1] * p.scale - lse.y), ok1);
        let p2 = select(vec4<f32>(), exp(s[2] * p.scale - lse.z), ok2);
        let p3 = select(vec4<f32>(), exp(s[3] * p.scale - lse.w), ok3);
        let pm = mat4x4<f32>(p0, p1, p2, p3);
        let ds = mat4x4<f32>(p0 * (dp[0] - delta.x), p1 * (dp[1] - delta.y), p2 * (dp[2] - delta.z), p3 * (dp[3] - delta.w));
        dv_0 = acc_b(dv_0, pm, 0u, base);
        dk_0 = acc_a(dk_0, ds, 0u, base);
        if (D4 > 4u) {
          dv_1 = acc_b(dv_1, pm, 1u, base);
          dk_1 = acc_a(dk_1, ds, 1u, base);
        }
        if (D4 > 8u) {
          dv_2 = acc_b(dv_2, pm, 2u, base);
          dk_2 = acc_a(dk_2, ds, 2u, base);
        }
        if (D4 > 12u) {
          dv_3 = acc_b(dv_3, pm, 3u, base);
          dk_3 = acc_a(dk_3, ds, 3u, base);
        }
        if (D4 > 16u) {
          dv_4 = acc_b(dv_4, pm, 4u, base);
          dk_4 = acc_a(dk_4, ds, 4u, base);
        }
        if (D4 > 20u) {
          dv_5 = acc_b(dv_5, pm, 5u, base);
          dk_5 = acc_a(dk_5, ds, 5u, base);
        }
        if (D4 > 24u) {
          dv_6 = acc_b(dv_6, pm, 6u, base);
          dk_6 = acc_a(dk_6, ds, 6u, base);
        }
        if (D4 > 28u) {
          dv_7 = acc_b(dv_7, pm, 7u, base);
          dk_7 = acc_a(dk_7, ds, 7u, base);
        }
      }
    }
  }

  let f = vec4<f32>(p.scale);
  let one = vec4<f32>(1.0);
  put_dk(dk_0, 0u, keys, kvh, f);
  put_dv(dv_0, 0u, keys, kvh, one);
  if (D4 > 4u) {
    put_dk(dk_1, 1u, keys, kvh, f);
    put_dv(dv_1, 1u, keys, kvh, one);
  }
  if (D4 > 8u) {
    put_dk(dk_2, 2u, keys, kvh, f);
    put_dv(dv_2, 2u, keys, kvh, one);
  }
  if (D4 > 12u) {
    put_dk(dk_3, 3u, keys, kvh, f);
    put_dv(dv_3, 3u, keys, kvh, one);
  }
  if (D4 > 16u) {
    put_dk(dk_4, 4u, keys, kvh, f);
    put_dv(dv_4, 4u, keys, kvh, one);
  }
  if (D4 > 20u) {
    put_dk(dk_5, 5u, keys, kvh, f);
    put_dv(dv_5, 5u, keys, kvh, one);
  }
  if (D4 > 24u) {
    put_dk(dk_6, 6u, keys, kvh, f);
    put_dv(dv_6, 6u, keys, kvh, one);
  }
  if (D4 > 28u) {
    put_dk(dk_7, 7u, keys, kvh, f);
    put_dv(dv_7, 7u, keys, kvh, one);
  }
}
