// GPU-shaped packed varlen causal attention (flash-attention tiling): forward with LSE, dQ, dK/dV.
//
// Same contracts, Params and bindings as attention.wgsl (the backward delta pass stays there),
// Q/K/V layouts (ld_q, ld_kv, offsets) included, except that Q, K, V and dO are read as vec4s, so
// D and the layout's strides and offsets must be multiples of 4 (the launcher falls back to
// attention.wgsl otherwise): Q (T, Hq, D), K and V (T, Hkv, D) row-major; q head h reads
// kv head h / (Hq / Hkv); token i attends to key j when seqStart[i] <= j <= i.
//
// Work layout (no subgroups, no atomics). A workgroup of TR × TC threads owns BR = 4·TR "own"
// rows (queries in the forward and dQ, keys in dK/dV) and walks the "other" side (keys, or
// queries in dK/dV) in tiles of BC = 4·TC rows. Thread (tx, ty) owns the 4×4 score block of own
// rows 4ty..4ty+3 × tile rows 4tx..4tx+3 in registers, and 4 own rows × the dim quads
// tx, tx + TC, ... (NK of them) of every accumulator (O, dQ, dK, dV) in registers.
// - Own rows: the forward stages Q once, transposed (d-major, vec4 over 4 rows):
//   own[d · TR + row / 4]. The backward reads its own rows (Q and dO, or K and V) straight from
//   global memory as vec4s over d in the score loop: they are the same few KiB for every tile, so
//   they stay in L1, and the workgroup memory they would take goes to more threads.
// - The other tile, transposed (d-major, vec4 over 4 tile rows) with an XOR swizzle of the quad
//   index by the dim quad: oth[d · TC + (quad ^ (d / 4 % TC))]. The score loop (fixed d, quad =
//   tx) and the accumulation loop (fixed quad, d = 4 · (tx + TC k) + j) both hit distinct banks,
//   so one layout serves both products and nothing is staged twice. Staging gives consecutive
//   lanes consecutive rows (one vec4 of dims each), so its scalar stores hit distinct banks too.
// - The probability / dS tiles, row-major over the tile (vec4 over 4 tile rows), swizzled by the
//   own quad: tile_a / tile_b[row · TC + (quad ^ (row / 4 % TC))].
// Score blocks are mat4x4 (column = tile row, component = own row); accumulators are
// array<mat4x4, NKMAX> (one mat per dim quad: column = own row, component = dim). Override
// constants (DM, HD, TR, TC, NK, ACC_FIXED and the array sizes) come from the launcher, which sizes
// them to the device's workgroup memory. HD is the head dim as a compile-time constant on GPUs (the loops
// over d unroll there); 0 reads p.d at run time (lavapipe, where rolled loops compile fast).
// A 4×4 score block that the mask hides entirely skips its dot products.
// Loops of 4 (dims of a quad, rows of a block) are written out, and the forward's score loop takes
// 4 dims per iteration: Naga bounds every loop with a
// 64-bit counter, which keeps drivers from unrolling (see matmul.wgsl). Bit-identical to the
// rolled loops (checked on lavapipe at every grid); the effect on a GPU is not measured yet.

const MASKED: f32 = -1.0e30; // running max before any real score
const NKMAX: u32 = 8u; // capacity of the accumulator arrays (NK <= NKMAX)

override DM: u32 = 64u; // head-dim capacity of the staged arrays (16, 32, 64 or 128, >= D)
override HD: u32 = 0u; // head dim as a constant (equal to p.d), or 0: p.d at run time
override TR: u32 = 16u; // threads along own rows (4 rows each): BR = 4·TR
override TC: u32 = 16u; // threads along tile rows (4 each): BC = 4·TC
override NK: u32 = 1u; // dim quads per thread in the accumulators: ceil(DM / (4·TC)) <= NKMAX
override ACC_FIXED: bool = false; // accumulators indexed by constants only (see acc_add_a)
override OWN_N: u32 = 1024u; // vec4s of own (DM·TR, forward only)
override OA_N: u32 = 1024u; // vec4s of oth_a (>= DM·TC, >= TR·TC for the forward's reductions)
override OB_N: u32 = 1024u; // vec4s of oth_b (DM·TC)
override TILE_N: u32 = 1024u; // vec4s of tile_a and tile_b (4·TR·TC)

// #include attention_params.wgsl
// #include flat_index.wgsl

// Outputs (bindings 1, 2) of each entry point.
@group(0) @binding(1) var<storage, read_write> out_o: array<f32>; // forward (T, Hq, D)
@group(0) @binding(2) var<storage, read_write> out_lse: array<f32>; // forward (Hq, T)
@group(0) @binding(1) var<storage, read_write> out_dq: array<f32>; // dq (T, Hq, D)
@group(0) @binding(1) var<storage, read_write> out_dk: array<f32>; // dkv (T, Hkv, D)
@group(0) @binding(2) var<storage, read_write> out_dv: array<f32>; // dkv (T, Hkv, D)

// Inputs, at the same bindings as attention.wgsl (the (T, heads, D) ones as vec4 over d).
@group(0) @binding(3) var<storage, read> in_q: array<vec4<f32>>; // (T, Hq, D/4)
@group(0) @binding(4) var<storage, read> in_k: array<vec4<f32>>; // (T, Hkv, D/4)
@group(0) @binding(5) var<storage, read> in_v: array<vec4<f32>>; // (T, Hkv, D/4)
@group(0) @binding(6) var<storage, read> in_start: array<u32>; // (T) seqStart
@group(0) @binding(7) var<storage, read> in_end: array<u32>; // (T) seqEnd
@group(0) @binding(8) var<storage, read> in_dout: array<vec4<f32>>; // (T, Hq, D/4)
@group(0) @binding(9) var<storage, read> in_lse: array<f32>; // (Hq, T)
@group(0) @binding(10) var<storage, read> in_delta: array<f32>; // (Hq, T)
// dK/dV reduce: the partials of a split dK/dV, (parts, T, Hkv, D) of dK, then of dV at dv_off
@group(0) @binding(11) var<storage, read> in_parts: array<f32>;

// forward: own Q; oth_a K, then row-max / row-sum partials, then V; tile_a P
// dQ: oth_a K, oth_b V; tile_a dS
// dK/dV: oth_a Q, oth_b dO; tile_a Pᵀ, tile_b dSᵀ
var<workgroup> own: array<vec4<f32>, OWN_N>; // (DM, BR/4)
var<workgroup> oth_a: array<vec4<f32>, OA_N>; // (DM, BC/4) swizzled
var<workgroup> oth_b: array<vec4<f32>, OB_N>; // (DM, BC/4) swizzled
var<workgroup> tile_a: array<vec4<f32>, TILE_N>; // (BR, BC/4) swizzled
var<workgroup> tile_b: array<vec4<f32>, TILE_N>; // (BR, BC/4) swizzled

// ---------------------------------------------------------------------------------------------
// Indexing and loads.

// The head dim: HD when the launcher made it a constant, else p.d.
fn hd() -> u32 {
  if (HD != 0u) {
    return HD;
  }
  return p.d;
}

fn oth_at(d: u32, quad: u32) -> u32 {
  return d * TC + (quad ^ ((d >> 2u) % TC));
}

fn tile_at(row: u32, quad: u32) -> u32 {
  return row * TC + (quad ^ ((row >> 2u) % TC));
}

// Dims 4·d4..4·d4+3 of (row, head h) of Q, K, V or dO; zeros past T. (Separate functions, so an
// entry point binds only the tensors it reads.)
fn row_ok(row: u32) -> bool {
  return row < p.t;
}

fn ld_q(row: u32, h: u32, d4: u32) -> vec4<f32> {
  let r = select(0u, row, row_ok(row));
  return select(vec4<f32>(), in_q[(r * p.ld_q + p.q_off + h * hd()) / 4u + d4], row_ok(row));
}

fn ld_dout(row: u32, h: u32, d4: u32) -> vec4<f32> {
  let r = select(0u, row, row_ok(row));
  return select(vec4<f32>(), in_dout[(r * p.hq + h) * (hd() / 4u) + d4], row_ok(row));
}

fn ld_k(row: u32, h: u32, d4: u32) -> vec4<f32> {
  let r = select(0u, row, row_ok(row));
  return select(vec4<f32>(), in_k[(r * p.ld_kv + p.k_off + h * hd()) / 4u + d4], row_ok(row));
}

fn ld_v(row: u32, h: u32, d4: u32) -> vec4<f32> {
  let r = select(0u, row, row_ok(row));
  return select(vec4<f32>(), in_v[(r * p.ld_kv + p.v_off + h * hd()) / 4u + d4], row_ok(row));
}

// Vec4 offsets of 4 own rows (clamped to T − 1) of head h in a tensor of rows `ld` elements apart
// from `off`.
fn own_base(r: u32, ld: u32, off: u32, h: u32) -> vec4<u32> {
  return (quad_rows(r) * vec4<u32>(ld) + vec4<u32>(off + h * hd())) / vec4<u32>(4u);
}

// Tile row r, dims d..d+3, into oth_a / oth_b (transposed, swizzled).
fn put_oth_a(x: vec4<f32>, r: u32, d: u32) {
  let q = r / 4u;
  let c = r % 4u;
  oth_a[oth_at(d, q)][c] = x.x;
  oth_a[oth_at(d + 1u, q)][c] = x.y;
  oth_a[oth_at(d + 2u, q)][c] = x.z;
  oth_a[oth_at(d + 3u, q)][c] = x.w;
}

fn put_oth_b(x: vec4<f32>, r: u32, d: u32) {
  let q = r / 4u;
  let c = r % 4u;
  oth_b[oth_at(d, q)][c] = x.x;
  oth_b[oth_at(d + 1u, q)][c] = x.y;
  oth_b[oth_at(d + 2u, q)][c] = x.z;
  oth_b[oth_at(d + 3u, q)][c] = x.w;
}

// Staging of tile rows r0..r0+4·TC−1, head h, by lane li of TR·TC. Element e is tile row
// e % BC, dims 4·(e / BC)..+3: consecutive lanes take consecutive rows, so the scalar stores of
// put_oth_* hit distinct banks.
// K (v false) or V (v true) into oth_a (forward).
fn stage_kv_a(v: bool, r0: u32, h: u32, li: u32) {
  let bc = 4u * TC;
  for (var e = li; e < bc * (hd() / 4u); e += TR * TC) {
    let r = e % bc;
    let d4 = e / bc;
    if (v) {
      put_oth_a(ld_v(r0 + r, h, d4), r, 4u * d4);
    } else {
      put_oth_a(ld_k(r0 + r, h, d4), r, 4u * d4);
    }
  }
}

// K into oth_a and V into oth_b (dQ).
fn stage_kv_ab(r0: u32, h: u32, li: u32) {
  let bc = 4u * TC;
  for (var e = li; e < bc * (hd() / 4u); e += TR * TC) {
    let r = e % bc;
    let d4 = e / bc;
    let k = ld_k(r0 + r, h, d4);
    let v = ld_v(r0 + r, h, d4);
    put_oth_a(k, r, 4u * d4);
    put_oth_b(v, r, 4u * d4);
  }
}

// Q into oth_a and dO into oth_b (dK/dV).
fn stage_qo_ab(r0: u32, h: u32, li: u32) {
  let bc = 4u * TC;
  for (var e = li; e < bc * (hd() / 4u); e += TR * TC) {
    let r = e % bc;
    let d4 = e / bc;
    let q = ld_q(r0 + r, h, d4);
    let o = ld_dout(r0 + r, h, d4);
    put_oth_a(q, r, 4u * d4);
    put_oth_b(o, r, 4u * d4);
  }
}

// Four consecutive rows from r, clamped to T − 1 (for per-row lookups; masks handle the rest).
fn quad_rows(r: u32) -> vec4<u32> {
  return min(vec4<u32>(r) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.t - 1u));
}

fn quad_start(r: u32) -> vec4<u32> {
  let c = quad_rows(r);
  return vec4<u32>(in_start[c.x], in_start[c.y], in_start[c.z], in_start[c.w]);
}

fn quad_lse(h: u32, r: u32) -> vec4<f32> {
  let c = quad_rows(r) + vec4<u32>(h * p.t);
  return vec4<f32>(in_lse[c.x], in_lse[c.y], in_lse[c.z], in_lse[c.w]);
}

fn quad_delta(h: u32, r: u32) -> vec4<f32> {
  let c = quad_rows(r) + vec4<u32>(h * p.t);
  return vec4<f32>(in_delta[c.x], in_delta[c.y], in_delta[c.z], in_delta[c.w]);
}

// ---------------------------------------------------------------------------------------------
// 4×4 blocks.

// s + x ⊗ y: x over 4 own rows (components), y over 4 tile rows (columns).
fn outer(s: mat4x4<f32>, x: vec4<f32>, y: vec4<f32>) -> mat4x4<f32> {
  return s + mat4x4<f32>(x * y.x, x * y.y, x * y.z, x * y.w);
}

// One tile quad of an accumulation: own rows of P (pr[r]: vec4 over the quad's 4 tile rows)
// against 4 dims (v[j]: vec4s over the same tile rows); column = own row, component = dim.
fn dots(pr: mat4x4<f32>, v: mat4x4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(
    vec4<f32>(dot(pr[0], v[0]), dot(pr[0], v[1]), dot(pr[0], v[2]), dot(pr[0], v[3])),
    vec4<f32>(dot(pr[1], v[0]), dot(pr[1], v[1]), dot(pr[1], v[2]), dot(pr[1], v[3])),
    vec4<f32>(dot(pr[2], v[0]), dot(pr[2], v[1]), dot(pr[2], v[2]), dot(pr[2], v[3])),
    vec4<f32>(dot(pr[3], v[0]), dot(pr[3], v[1]), dot(pr[3], v[2]), dot(pr[3], v[3])),
  );
}

// Own rows 4ty..4ty+3 of tile_a / tile_b at tile quad c (column = own row).
fn tile_rows_a(ty: u32, c: u32) -> mat4x4<f32> {
  return mat4x4<f32>(tile_a[tile_at(4u * ty, c)], tile_a[tile_at(4u * ty + 1u, c)],
                     tile_a[tile_at(4u * ty + 2u, c)], tile_a[tile_at(4u * ty + 3u, c)]);
}

fn tile_rows_b(ty: u32, c: u32) -> mat4x4<f32> {
  return mat4x4<f32>(tile_b[tile_at(4u * ty, c)], tile_b[tile_at(4u * ty + 1u, c)],
                     tile_b[tile_at(4u * ty + 2u, c)], tile_b[tile_at(4u * ty + 3u, c)]);
}

// Dims d0..d0+3 of the staged oth_a / oth_b at tile quad c (column = dim).
fn oth_dims_a(d0: u32, c: u32) -> mat4x4<f32> {
  return mat4x4<f32>(oth_a[oth_at(d0, c)], oth_a[oth_at(d0 + 1u, c)], oth_a[oth_at(d0 + 2u, c)],
                     oth_a[oth_at(d0 + 3u, c)]);
}

fn oth_dims_b(d0: u32, c: u32) -> mat4x4<f32> {
  return mat4x4<f32>(oth_b[oth_at(d0, c)], oth_b[oth_at(d0 + 1u, c)], oth_b[oth_at(d0 + 2u, c)],
                     oth_b[oth_at(d0 + 3u, c)]);
}

// The two score blocks of the backward over tile quad tx, with their own rows read from global
// memory at vec4 offsets b and c (4 rows each): Q (b)·oth_a and dO (c)·oth_b (keys false: dQ), or
// K (b)·oth_a and V (c)·oth_b (keys true: dK/dV). Each is Σ_d own[d] ⊗ oth[d] (column = tile row, component = own row).
fn scores2(keys: bool, b: vec4<u32>, c: vec4<u32>, tx: u32) -> array<mat4x4<f32>, 2> {
  var s = mat4x4<f32>();
  var t = mat4x4<f32>();
  for (var d4 = 0u; d4 < hd() / 4u; d4++) {
    var x: mat4x4<f32>; // rows of the own block: column = own row, component = dim
    var y: mat4x4<f32>;
    if (keys) {
      x = mat4x4<f32>(in_k[b.x + d4], in_k[b.y + d4], in_k[b.z + d4], in_k[b.w + d4]);
      y = mat4x4<f32>(in_v[c.x + d4], in_v[c.y + d4], in_v[c.z + d4], in_v[c.w + d4]);
    } else {
      x = mat4x4<f32>(in_q[b.x + d4], in_q[b.y + d4], in_q[b.z + d4], in_q[b.w + d4]);
      y = mat4x4<f32>(in_dout[c.x + d4], in_dout[c.y + d4], in_dout[c.z + d4], in_dout[c.w + d4]);
    }
    let xt = transpose(x); // column = dim, component = own row
    let yt = transpose(y);
    let a0 = oth_at(4u * d4, tx);
    s = outer(s, xt[0], oth_a[a0]);
    t = outer(t, yt[0], oth_b[a0]);
    let a1 = oth_at(4u * d4 + 1u, tx);
    s = outer(s, xt[1], oth_a[a1]);
    t = outer(t, yt[1], oth_b[a1]);
    let a2 = oth_at(4u * d4 + 2u, tx);
    s = outer(s, xt[2], oth_a[a2]);
    t = outer(t, yt[2], oth_b[a2]);
    let a3 = oth_at(4u * d4 + 3u, tx);
    s = outer(s, xt[3], oth_a[a3]);
    t = outer(t, yt[3], oth_b[a3]);
  }
  return array<mat4x4<f32>, 2>(s, t);
}

// Masks of a score block: own query rows × tile keys from j (forward, dQ): seqStart <= key <= row.
fn mask_keys(rows: vec4<u32>, start: vec4<u32>, j: u32) -> array<vec4<bool>, 4> {
  let live = rows < vec4<u32>(p.t);
  let k0 = vec4<u32>(j);
  let k1 = vec4<u32>(j + 1u);
  let k2 = vec4<u32>(j + 2u);
  let k3 = vec4<u32>(j + 3u);
  return array<vec4<bool>, 4>(
    live & (k0 >= start) & (k0 <= rows),
    live & (k1 >= start) & (k1 <= rows),
    live & (k2 >= start) & (k2 <= rows),
    live & (k3 >= start) & (k3 <= rows),
  );
}

// Own keys × tile queries from i (dK/dV): key < T, query < T, seqStart[query] <= key <= query.
fn mask_queries(keys: vec4<u32>, i: u32, st: vec4<u32>) -> array<vec4<bool>, 4> {
  let live = keys < vec4<u32>(p.t);
  let q = vec4<u32>(i) + vec4<u32>(0u, 1u, 2u, 3u);
  return array<vec4<bool>, 4>(
    live & vec4<bool>(q.x < p.t) & (keys <= vec4<u32>(q.x)) & (keys >= vec4<u32>(st.x)),
    live & vec4<bool>(q.y < p.t) & (keys <= vec4<u32>(q.y)) & (keys >= vec4<u32>(st.y)),
    live & vec4<bool>(q.z < p.t) & (keys <= vec4<u32>(q.z)) & (keys >= vec4<u32>(st.z)),
    live & vec4<bool>(q.w < p.t) & (keys <= vec4<u32>(q.w)) & (keys >= vec4<u32>(st.w)),
  );
}

// Whether any pair of a block's mask is visible.
fn any_kept(m: array<vec4<bool>, 4>) -> bool {
  return any((m[0] | m[1]) | (m[2] | m[3]));
}

// Writes the block (column = tile row, component = own row) into the tile layout at own rows
// r0..r0+3, tile quad `quad`, of tile_a or tile_b.
fn put_tile_a(s: mat4x4<f32>, r0: u32, quad: u32) {
  let t = transpose(s);
  tile_a[tile_at(r0, quad)] = t[0];
  tile_a[tile_at(r0 + 1u, quad)] = t[1];
  tile_a[tile_at(r0 + 2u, quad)] = t[2];
  tile_a[tile_at(r0 + 3u, quad)] = t[3];
}

fn put_tile_b(s: mat4x4<f32>, r0: u32, quad: u32) {
  let t = transpose(s);
  tile_b[tile_at(r0, quad)] = t[0];
  tile_b[tile_at(r0 + 1u, quad)] = t[1];
  tile_b[tile_at(r0 + 2u, quad)] = t[2];
  tile_b[tile_at(r0 + 3u, quad)] = t[3];
}

// ---------------------------------------------------------------------------------------------
// Accumulators: dim quad k of a thread's rows (dims quad_d0(tx, k)..+3, k < NK) in acc[k], in one
// of two forms the autotune times against each other (ACC_FIXED, same bits): a loop over k < NK,
// or every access at a constant index, written out for k < 4 (the launcher asks for this form only
// when NK <= 4), the override NK dropping the steps past it at pipeline creation. A loop index into
// the array, in a loop that wgpu's loop bounding keeps the driver from unrolling, may send the
// whole array to local memory.

alias Acc = array<mat4x4<f32>, NKMAX>;

fn quad_d0(tx: u32, k: u32) -> u32 {
  return 4u * (tx + TC * k);
}

// Fixed form: acc[k] += dots(pr, the staged oth_a dims of quad k at tile quad c), every k < NK
// inside D.
fn acc_add_a(acc: ptr<function, Acc>, pr: mat4x4<f32>, tx: u32, c: u32) {
  if (NK > 0u && quad_d0(tx, 0u) < hd()) {
    (*acc)[0] += dots(pr, oth_dims_a(quad_d0(tx, 0u), c));
  }
  if (NK > 1u && quad_d0(tx, 1u) < hd()) {
    (*acc)[1] += dots(pr, oth_dims_a(quad_d0(tx, 1u), c));
  }
  if (NK > 2u && quad_d0(tx, 2u) < hd()) {
    (*acc)[2] += dots(pr, oth_dims_a(quad_d0(tx, 2u), c));
  }
  if (NK > 3u && quad_d0(tx, 3u) < hd()) {
    (*acc)[3] += dots(pr, oth_dims_a(quad_d0(tx, 3u), c));
  }
}

// The same from oth_b.
fn acc_add_b(acc: ptr<function, Acc>, pr: mat4x4<f32>, tx: u32, c: u32) {
  if (NK > 0u && quad_d0(tx, 0u) < hd()) {
    (*acc)[0] += dots(pr, oth_dims_b(quad_d0(tx, 0u), c));
  }
  if (NK > 1u && quad_d0(tx, 1u) < hd()) {
    (*acc)[1] += dots(pr, oth_dims_b(quad_d0(tx, 1u), c));
  }
  if (NK > 2u && quad_d0(tx, 2u) < hd()) {
    (*acc)[2] += dots(pr, oth_dims_b(quad_d0(tx, 2u), c));
  }
  if (NK > 3u && quad_d0(tx, 3u) < hd()) {
    (*acc)[3] += dots(pr, oth_dims_b(quad_d0(tx, 3u), c));
  }
}

// acc += (own rows 4ty..4ty+3 of tile_a) · (the staged oth_a rows), over the whole tile: the forward's
// O += P·V and dQ's dQ += dS·K. The loop form is the kernel as first measured on a GPU; the fixed
// form also takes the tile quads 4 per iteration.
fn acc_tile_a(acc: ptr<function, Acc>, ty: u32, tx: u32) {
  if (!ACC_FIXED) {
    for (var c = 0u; c < TC; c++) {
      let pr = tile_rows_a(ty, c);
      for (var k = 0u; k < NK; k++) {
        let d0 = quad_d0(tx, k);
        if (d0 < hd()) {
          (*acc)[k] += dots(pr, oth_dims_a(d0, c));
        }
      }
    }
    return;
  }
  for (var c = 0u; c < TC; c += 4u) { // TC is a multiple of 4: four steps written out
    acc_add_a(acc, tile_rows_a(ty, c), tx, c);
    acc_add_a(acc, tile_rows_a(ty, c + 1u), tx, c + 1u);
    acc_add_a(acc, tile_rows_a(ty, c + 2u), tx, c + 2u);
    acc_add_a(acc, tile_rows_a(ty, c + 3u), tx, c + 3u);
  }
}

// dv += Pᵀ (tile_a) · dO (oth_b) and dk += dSᵀ (tile_b) · Q (oth_a) over the whole tile (dK/dV), in
// the two forms of acc_tile_a.
fn acc_tile_dkv(dv: ptr<function, Acc>, dk: ptr<function, Acc>, ty: u32, tx: u32) {
  if (!ACC_FIXED) {
    for (var c = 0u; c < TC; c++) {
      let pr = tile_rows_a(ty, c);
      let gr = tile_rows_b(ty, c);
      for (var k = 0u; k < NK; k++) {
        let d0 = quad_d0(tx, k);
        if (d0 < hd()) {
          (*dv)[k] += dots(pr, oth_dims_b(d0, c));
          (*dk)[k] += dots(gr, oth_dims_a(d0, c));
        }
      }
    }
    return;
  }
  for (var c = 0u; c < TC; c += 4u) { // TC is a multiple of 4: four steps written out
    acc_add_b(dv, tile_rows_a(ty, c), tx, c);
    acc_add_a(dk, tile_rows_b(ty, c), tx, c);
    acc_add_b(dv, tile_rows_a(ty, c + 1u), tx, c + 1u);
    acc_add_a(dk, tile_rows_b(ty, c + 1u), tx, c + 1u);
    acc_add_b(dv, tile_rows_a(ty, c + 2u), tx, c + 2u);
    acc_add_a(dk, tile_rows_b(ty, c + 2u), tx, c + 2u);
    acc_add_b(dv, tile_rows_a(ty, c + 3u), tx, c + 3u);
    acc_add_a(dk, tile_rows_b(ty, c + 3u), tx, c + 3u);
  }
}

// acc[k] with row r scaled by alpha[r] (the forward's running-max correction), every k < NK.
fn acc_rescale(acc: ptr<function, Acc>, alpha: vec4<f32>) {
  if (!ACC_FIXED) {
    for (var k = 0u; k < NK; k++) {
      let a = (*acc)[k];
      (*acc)[k] = mat4x4<f32>(a[0] * alpha.x, a[1] * alpha.y, a[2] * alpha.z, a[3] * alpha.w);
    }
    return;
  }
  if (NK > 0u) {
    let a = (*acc)[0];
    (*acc)[0] = mat4x4<f32>(a[0] * alpha.x, a[1] * alpha.y, a[2] * alpha.z, a[3] * alpha.w);
  }
  if (NK > 1u) {
    let a = (*acc)[1];
    (*acc)[1] = mat4x4<f32>(a[0] * alpha.x, a[1] * alpha.y, a[2] * alpha.z, a[3] * alpha.w);
  }
  if (NK > 2u) {
    let a = (*acc)[2];
    (*acc)[2] = mat4x4<f32>(a[0] * alpha.x, a[1] * alpha.y, a[2] * alpha.z, a[3] * alpha.w);
  }
  if (NK > 3u) {
    let a = (*acc)[3];
    (*acc)[3] = mat4x4<f32>(a[0] * alpha.x, a[1] * alpha.y, a[2] * alpha.z, a[3] * alpha.w);
  }
}

// acc[k] for a k known only at run time (the write-backs), through constant indices.
fn acc_at(acc: ptr<function, Acc>, k: u32) -> mat4x4<f32> {
  if (!ACC_FIXED) {
    return (*acc)[k];
  }
  switch k {
    case 0u: {
      return (*acc)[0];
    }
    case 1u: {
      return (*acc)[1];
    }
    case 2u: {
      return (*acc)[2];
    }
    default: {
      return (*acc)[3];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward: workgroup (BR queries, q head h). Online softmax over the key tiles from seqStart of
// the first query to the last query. Per tile: S in registers; row max of the tile across the TC
// threads of a row through oth_a (the K tile is dead by then); P into tile_a; V into oth_a;
// O += P·V. Row sums stay per thread (partial over its columns) and are reduced once at the end.

@compute @workgroup_size(TC, TR)
fn attention_gpu_forward(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let D = hd();
  let T = p.t;
  let h = wid.y;
  let kvh = h / p.group;
  let tx = lid.x;
  let ty = lid.y;
  let nt = TR * TC;
  let q0 = wid.x * 4u * TR;
  let rows = vec4<u32>(q0 + 4u * ty) + vec4<u32>(0u, 1u, 2u, 3u);
  let start = quad_start(q0 + 4u * ty);
  let qHi = min(q0 + 4u * TR, T) - 1u;
  let kLo = in_start[q0];

  for (var e = li; e < 4u * TR * (D / 4u); e += nt) {
    let r = e % (4u * TR);
    let d = 4u * (e / (4u * TR));
    let x = ld_q(q0 + r, h, d / 4u);
    let o = d * TR + r / 4u;
    own[o][r % 4u] = x.x;
    own[o + TR][r % 4u] = x.y;
    own[o + 2u * TR][r % 4u] = x.z;
    own[o + 3u * TR][r % 4u] = x.w;
  }
  var m = vec4<f32>(MASKED);
  var l = vec4<f32>(); // partial over this thread's columns
  var acc: Acc;

  for (var k0 = kLo; k0 <= qHi; k0 += 4u * TC) {
    workgroupBarrier();
    stage_kv_a(false, k0, kvh, li);
    workgroupBarrier();
    let keep = mask_keys(rows, start, k0 + 4u * tx);
    var s = mat4x4<f32>();
    if (any_kept(keep)) {
      for (var d = 0u; d < D; d += 4u) { // D is a multiple of 4: four steps written out
        s = outer(s, own[d * TR + ty], oth_a[oth_at(d, tx)]);
        s = outer(s, own[(d + 1u) * TR + ty], oth_a[oth_at(d + 1u, tx)]);
        s = outer(s, own[(d + 2u) * TR + ty], oth_a[oth_at(d + 2u, tx)]);
        s = outer(s, own[(d + 3u) * TR + ty], oth_a[oth_at(d + 3u, tx)]);
      }
    }
    let mv = vec4<f32>(MASKED);
    s = mat4x4<f32>(
      select(mv, s[0] * p.scale, keep[0]),
      select(mv, s[1] * p.scale, keep[1]),
      select(mv, s[2] * p.scale, keep[2]),
      select(mv, s[3] * p.scale, keep[3]),
    );
    workgroupBarrier(); // K reads done: oth_a takes the row-max partials
    oth_a[tx * TR + ty] = max(max(s[0], s[1]), max(s[2], s[3]));
    workgroupBarrier();
    var mNew = m;
    for (var t = 0u; t < TC; t++) {
      mNew = max(mNew, oth_a[t * TR + ty]);
    }
    let alpha = exp(m - mNew);
    let z = vec4<f32>();
    let pr = mat4x4<f32>(
      select(z, exp(s[0] - mNew), keep[0]),
      select(z, exp(s[1] - mNew), keep[1]),
      select(z, exp(s[2] - mNew), keep[2]),
      select(z, exp(s[3] - mNew), keep[3]),
    );
    l = l * alpha + ((pr[0] + pr[1]) + (pr[2] + pr[3]));
    m = mNew;
    acc_rescale(&acc, alpha);
    put_tile_a(pr, 4u * ty, tx);
    workgroupBarrier(); // partials read: oth_a takes V
    stage_kv_a(true, k0, kvh, li);
    workgroupBarrier();
    acc_tile_a(&acc, ty, tx);
  }

  workgroupBarrier(); // V reads done: oth_a takes the row-sum partials
  oth_a[tx * TR + ty] = l;
  workgroupBarrier();
  var lt = vec4<f32>();
  for (var t = 0u; t < TC; t++) {
    lt += oth_a[t * TR + ty];
  }
  let inv = 1.0 / lt;
  let lse = m + log(lt);
  for (var i = 0u; i < 4u; i++) {
    let row = rows[i];
    if (row >= T) {
      break;
    }
    if (tx == 0u) {
      out_lse[h * T + row] = lse[i];
    }
    for (var k = 0u; k < NK; k++) {
      let d0 = 4u * (tx + TC * k);
      for (var j = 0u; j < 4u; j++) {
        if (d0 + j < D) {
          out_o[(row * p.hq + h) * D + d0 + j] = acc_at(&acc, k)[i][j] * inv[i];
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// dQ: workgroup (BR queries, q head h), key tiles as in the forward:
// dQ_i = scale · Σ_j P_ij (dP_ij − delta_i) K_j, P_ij = exp(scale · q_i·k_j − lse_i),
// dP_ij = dO_i · V_j. Per tile: K and V staged; S and dP in registers (own Q and dO rows from
// global memory); dS into tile_a; dQ += dS·K from oth_a. Three barriers per tile.

@compute @workgroup_size(TC, TR)
fn attention_gpu_backward_dq(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let D = hd();
  let T = p.t;
  let h = wid.y;
  let kvh = h / p.group;
  let tx = lid.x;
  let ty = lid.y;
  let q0 = wid.x * 4u * TR;
  let rows = vec4<u32>(q0 + 4u * ty) + vec4<u32>(0u, 1u, 2u, 3u);
  let start = quad_start(q0 + 4u * ty);
  let lse = quad_lse(h, q0 + 4u * ty);
  let delta = quad_delta(h, q0 + 4u * ty);
  let base = own_base(q0 + 4u * ty, p.ld_q, p.q_off, h); // Q
  let base_o = own_base(q0 + 4u * ty, p.hq * D, 0u, h); // dO (dense)
  let qHi = min(q0 + 4u * TR, T) - 1u;
  let kLo = in_start[q0];
  var acc: Acc;

  for (var k0 = kLo; k0 <= qHi; k0 += 4u * TC) {
    workgroupBarrier(); // last tile's reads done
    stage_kv_ab(k0, kvh, li);
    workgroupBarrier();
    let keep = mask_keys(rows, start, k0 + 4u * tx);
    var sp = array<mat4x4<f32>, 2>(); // S, dP
    if (any_kept(keep)) {
      sp = scores2(false, base, base_o, tx);
    }
    var ds: mat4x4<f32>;
    ds[0] = select(vec4<f32>(), exp(sp[0][0] * p.scale - lse) * (sp[1][0] - delta), keep[0]);
    ds[1] = select(vec4<f32>(), exp(sp[0][1] * p.scale - lse) * (sp[1][1] - delta), keep[1]);
    ds[2] = select(vec4<f32>(), exp(sp[0][2] * p.scale - lse) * (sp[1][2] - delta), keep[2]);
    ds[3] = select(vec4<f32>(), exp(sp[0][3] * p.scale - lse) * (sp[1][3] - delta), keep[3]);
    put_tile_a(ds, 4u * ty, tx);
    workgroupBarrier();
    acc_tile_a(&acc, ty, tx);
  }

  for (var i = 0u; i < 4u; i++) {
    let row = rows[i];
    if (row >= T) {
      break;
    }
    for (var k = 0u; k < NK; k++) {
      let d0 = 4u * (tx + TC * k);
      for (var j = 0u; j < 4u; j++) {
        if (d0 + j < D) {
          out_dq[row * p.ld_q + p.q_off + h * D + d0 + j] = acc_at(&acc, k)[i][j] * p.scale;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// dK and dV: workgroup (BR keys, kv head); loops over the q heads of its group and the query
// tiles from its first key to seqEnd of its last key. Split (p.parts > 1): workgroup y is
// (kv head, part) and loops over group / parts of the q heads; each part writes its partial dK
// and dV at part · T·Hkv·D of out_dk / out_dv (scratch), and attention_gpu_dkv_reduce sums them. Scores are transposed here (component =
// own key, column = tile query): dV_j = Σ_i P_ij dO_i, dK_j = scale · Σ_i P_ij (dP_ij − delta_i)
// Q_i. Per tile: Q and dO staged; Sᵀ and dPᵀ in registers (own K and V rows from global
// memory); Pᵀ into tile_a and dSᵀ into tile_b; dV += Pᵀ·dO and dK += dSᵀ·Q in one pass.
// Three barriers per tile.

@compute @workgroup_size(TC, TR)
fn attention_gpu_backward_dkv(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let D = hd();
  let T = p.t;
  let parts = max(p.parts, 1u);
  let kvh = wid.y / parts;
  let part = wid.y % parts;
  let per = p.group / parts; // q heads of this part
  let tx = lid.x;
  let ty = lid.y;
  let k0 = wid.x * 4u * TR;
  let keys = vec4<u32>(k0 + 4u * ty) + vec4<u32>(0u, 1u, 2u, 3u);
  let base = own_base(k0 + 4u * ty, p.ld_kv, p.k_off, kvh); // K
  let base_v = own_base(k0 + 4u * ty, p.ld_kv, p.v_off, kvh); // V
  let qEnd = in_end[min(k0 + 4u * TR, T) - 1u];
  var dk: Acc;
  var dv: Acc;

  for (var gh = part * per; gh < (part + 1u) * per; gh++) {
    let h = kvh * p.group + gh;
    for (var i0 = k0; i0 < qEnd; i0 += 4u * TC) {
      workgroupBarrier(); // last tile's reads done
      stage_qo_ab(i0, h, li);
      workgroupBarrier();
      let i = i0 + 4u * tx;
      let keep = mask_queries(keys, i, quad_start(i));
      var sp = array<mat4x4<f32>, 2>(); // Sᵀ, dPᵀ
      if (any_kept(keep)) {
        sp = scores2(true, base, base_v, tx);
      }
      let lse = quad_lse(h, i);
      let delta = quad_delta(h, i);
      var pr: mat4x4<f32>;
      var ds: mat4x4<f32>;
      pr[0] = select(vec4<f32>(), exp(sp[0][0] * p.scale - vec4<f32>(lse[0])), keep[0]);
      ds[0] = pr[0] * (sp[1][0] - vec4<f32>(delta[0]));
      pr[1] = select(vec4<f32>(), exp(sp[0][1] * p.scale - vec4<f32>(lse[1])), keep[1]);
      ds[1] = pr[1] * (sp[1][1] - vec4<f32>(delta[1]));
      pr[2] = select(vec4<f32>(), exp(sp[0][2] * p.scale - vec4<f32>(lse[2])), keep[2]);
      ds[2] = pr[2] * (sp[1][2] - vec4<f32>(delta[2]));
      pr[3] = select(vec4<f32>(), exp(sp[0][3] * p.scale - vec4<f32>(lse[3])), keep[3]);
      ds[3] = pr[3] * (sp[1][3] - vec4<f32>(delta[3]));
      put_tile_a(pr, 4u * ty, tx);
      put_tile_b(ds, 4u * ty, tx);
      workgroupBarrier();
      acc_tile_dkv(&dv, &dk, ty, tx);
    }
  }

  for (var i = 0u; i < 4u; i++) {
    let key = keys[i];
    if (key >= T) {
      break;
    }
    for (var k = 0u; k < NK; k++) {
      let d0 = 4u * (tx + TC * k);
      for (var j = 0u; j < 4u; j++) {
        if (d0 + j < D) {
          if (parts > 1u) { // dense partials in the scratch
            let o = part * T * p.hkv * D + (key * p.hkv + kvh) * D + d0 + j;
            out_dk[o] = acc_at(&dk, k)[i][j] * p.scale;
            out_dv[o] = acc_at(&dv, k)[i][j];
          } else {
            let o = key * p.ld_kv + kvh * D + d0 + j;
            out_dk[o + p.k_off] = acc_at(&dk, k)[i][j] * p.scale;
            out_dv[o + p.v_off] = acc_at(&dv, k)[i][j];
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// dK/dV reduce (split dK/dV only): dk = Σ_part partial dK, dv = Σ_part partial dV, in part order
// (deterministic); one invocation per element of (T, Hkv, D), 2-D grid of 64-wide workgroups.

@compute @workgroup_size(64)
fn attention_gpu_dkv_reduce(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nw: vec3<u32>,
) {
  let e = flat_index(gid, nw, 64u);
  let n = p.t * p.hkv * p.d;
  if (e >= n) {
    return;
  }
  var sk = 0.0;
  var sv = 0.0;
  for (var q = 0u; q < p.parts; q++) {
    sk += in_parts[q * n + e];
    sv += in_parts[p.dv_off + q * n + e];
  }
  let w = p.hkv * p.d; // (T, Hkv·D) partials into the dK / dV layout
  let o = (e / w) * p.ld_kv + e % w;
  out_dk[o + p.k_off] = sk;
  out_dv[o + p.v_off] = sv;
}
