// Packed varlen causal attention through materialised 64×64 score tiles (GPU adapters): forward, dQ, dK/dV.
//
// The contracts of attention_gpu.wgsl (same Params, bindings 1–10, Q/K/V layouts, D and strides
// multiples of 4, (T, heads, D) tensors read as vec4 over d; token i attends to key j when
// seqStart[i] <= j <= i), computed the way eager PyTorch does it: the scores are written to memory
// and every product is a tiled GEMM with a 4×4 register block per thread, 16×16 threads per
// 64×64 output tile and the reduction staged 16 deep in workgroup memory (as matmul_tiled).
//
// The band. Tokens form query tiles qt of BT = 64 rows (nqt of them). Query tile qt sees the key
// tiles from lo(qt) = seqStart[64·qt] / 64 to qt, at most p.slots of them (the launcher sizes slots
// from the longest sample). The score tile of (q head h, query tile qt, key tile qt − s) is a
// 64×64 row-major block (row = query, column = key) at band[(((h − h0) · nqt + qt) · slots + s) ·
// 4096]: a band holds one block of heads from p.h0 (whole GQA groups; all heads unless the
// launcher had to cut them into blocks, which then run one after another through the same band).
// Tiles with qt − s < lo(qt) are never written or read.
//
// Forward: attention_band_scores writes scale · q·k (masked pairs MASKED); attention_band_softmax
// turns each row into P = exp(score − max) / sum in place and writes lse; attention_band_pv
// computes O = P·V (split over chunks of key tiles when p.kchunk > 0, then attention_band_reduce
// sums the chunks). Backward (delta = rowsum(dO∘O) from attention.wgsl first):
// attention_band_backward_scores recomputes P = exp(scale · q·k − lse) and writes it with
// dS = P ∘ (dO·Vᵀ − delta) to two bands; attention_band_dq computes dQ = scale · dS·K (split as
// P·V, summed by attention_band_reduce); attention_band_dkv computes dV = Σ_h Pᵀ·dO and
// dK = scale · Σ_h dSᵀ·Q over the q heads of a kv head (split over them into partials when
// p.parts > 1, summed by attention_gpu_dkv_reduce).
// Every k loop over a staged slice is written out (16 steps): Naga bounds each loop with a 64-bit
// counter that keeps drivers from unrolling it (see matmul.wgsl). Each step's global loads for the
// next slice are issued before its multiply-adds (register prefetch, as matmul_tiled), so their
// latency hides behind the arithmetic.

const BT: u32 = 64u; // rows of a query or key tile
const TILE: u32 = 4096u; // floats of a score tile (BT × BT)
const MASKED: f32 = -1.0e30; // score of a masked pair

// #include attention_params.wgsl
// #include flat_index.wgsl

// Outputs (bindings 1, 2) of each entry point.
@group(0) @binding(1) var<storage, read_write> out_band: array<vec4<f32>>; // scores: band (row-major, vec4 over keys)
@group(0) @binding(1) var<storage, read_write> io_band: array<f32>; // softmax: band, in place
@group(0) @binding(2) var<storage, read_write> out_lse: array<f32>; // softmax: (Hq, T)
// pv, reduce: O (T, Hq, D); dq, reduce: dQ (T, Hq, D) by ld_q; split pv, dq: the partials
@group(0) @binding(1) var<storage, read_write> out_od: array<f32>;
@group(0) @binding(1) var<storage, read_write> out_p: array<vec4<f32>>; // backward scores: P band
@group(0) @binding(2) var<storage, read_write> out_ds: array<vec4<f32>>; // backward scores: dS band
@group(0) @binding(1) var<storage, read_write> out_dk: array<f32>; // dkv: (T, Hkv, D) by ld_kv
@group(0) @binding(2) var<storage, read_write> out_dv: array<f32>; // dkv: (T, Hkv, D) by ld_kv

// Inputs, at attention_gpu.wgsl's bindings.
@group(0) @binding(3) var<storage, read> in_q: array<vec4<f32>>; // (T, Hq, D/4)
@group(0) @binding(4) var<storage, read> in_k: array<vec4<f32>>; // (T, Hkv, D/4)
@group(0) @binding(5) var<storage, read> in_v: array<vec4<f32>>; // (T, Hkv, D/4)
@group(0) @binding(6) var<storage, read> in_start: array<u32>; // (T) seqStart
@group(0) @binding(8) var<storage, read> in_dout: array<vec4<f32>>; // (T, Hq, D/4)
@group(0) @binding(9) var<storage, read> in_lse: array<f32>; // (Hq, T)
@group(0) @binding(10) var<storage, read> in_delta: array<f32>; // (Hq, T)
@group(0) @binding(11) var<storage, read> in_parts: array<f32>; // reduce: (chunks, T, Hq, D)
@group(0) @binding(12) var<storage, read> in_band: array<vec4<f32>>; // P (O = P·V, dV) or dS (dQ, dK/dV)
@group(0) @binding(13) var<storage, read> in_band2: array<vec4<f32>>; // dS (dK/dV)

// Staged slices, 16 deep × 64 wide, vec4 over 4 consecutive columns of the output tile, at
// stage[base + kk · 16 + quad]: A (base SA) and B (SB) feed one product, C and D a second (the
// backward scores' dO·Vᵀ).
const SA: u32 = 0u;
const SB: u32 = 256u;
const SC: u32 = 512u;
const SD: u32 = 768u;
var<workgroup> stage: array<vec4<f32>, 1024>;
var<workgroup> red: array<f32, 256>; // softmax row reductions

// ---------------------------------------------------------------------------------------------
// Indexing and loads.

fn nqt() -> u32 {
  return (p.t + BT - 1u) / BT;
}

// First key tile query tile qt sees.
fn lo_tile(qt: u32) -> u32 {
  return in_start[qt * BT] / BT;
}

// Float offset of score tile (q head h, qt, s): the band holds the heads of one block from p.h0.
fn tile_base(h: u32, qt: u32, s: u32) -> u32 {
  return (((h - p.h0) * nqt() + qt) * p.slots + s) * TILE;
}

// Dims 4·d4..4·d4+3 of (row, head h); zeros past T and past D.
fn live(row: u32, d4: u32) -> bool {
  return row < p.t && 4u * d4 < p.d;
}

fn ld_q(row: u32, h: u32, d4: u32) -> vec4<f32> {
  let ok = live(row, d4);
  let i = (select(0u, row, ok) * p.ld_q + p.q_off + h * p.d) / 4u + select(0u, d4, ok);
  return select(vec4<f32>(), in_q[i], ok);
}

fn ld_k(row: u32, h: u32, d4: u32) -> vec4<f32> {
  let ok = live(row, d4);
  let i = (select(0u, row, ok) * p.ld_kv + p.k_off + h * p.d) / 4u + select(0u, d4, ok);
  return select(vec4<f32>(), in_k[i], ok);
}

fn ld_v(row: u32, h: u32, d4: u32) -> vec4<f32> {
  let ok = live(row, d4);
  let i = (select(0u, row, ok) * p.ld_kv + p.v_off + h * p.d) / 4u + select(0u, d4, ok);
  return select(vec4<f32>(), in_v[i], ok);
}

fn ld_dout(row: u32, h: u32, d4: u32) -> vec4<f32> {
  let ok = live(row, d4);
  let i = (select(0u, row, ok) * p.hq + h) * (p.d / 4u) + select(0u, d4, ok);
  return select(vec4<f32>(), in_dout[i], ok);
}

// x (vec4 over 4 reduction steps 4·k4..+3 of tile row r) into the slice at `base`, transposed:
// stage[base + (4·k4 + c) · 16 + r / 4][r % 4] = x[c].
fn put_t(x: vec4<f32>, base: u32, r: u32, k4: u32) {
  let o = base + 4u * k4 * 16u + r / 4u;
  stage[o][r % 4u] = x.x;
  stage[o + 16u][r % 4u] = x.y;
  stage[o + 32u][r % 4u] = x.z;
  stage[o + 48u][r % 4u] = x.w;
}

// ---------------------------------------------------------------------------------------------
// The 4×4 block products (column j = output column 4tx + j, component i = output row 4ty + i).

fn outer(acc: mat4x4<f32>, x: vec4<f32>, y: vec4<f32>) -> mat4x4<f32> {
  return acc + mat4x4<f32>(x * y.x, x * y.y, x * y.z, x * y.w);
}

// acc + Σ_kk stage[a + kk·16 + ty] ⊗ stage[b + kk·16 + tx] over one staged slice (rows of the block
// from the slice at a, columns from b), 16 steps written out.
fn mma(acc0: mat4x4<f32>, a: u32, b: u32, tx: u32, ty: u32) -> mat4x4<f32> {
  var m = acc0;
  m = outer(m, stage[a + ty], stage[b + tx]);
  m = outer(m, stage[a + 16u + ty], stage[b + 16u + tx]);
  m = outer(m, stage[a + 32u + ty], stage[b + 32u + tx]);
  m = outer(m, stage[a + 48u + ty], stage[b + 48u + tx]);
  m = outer(m, stage[a + 64u + ty], stage[b + 64u + tx]);
  m = outer(m, stage[a + 80u + ty], stage[b + 80u + tx]);
  m = outer(m, stage[a + 96u + ty], stage[b + 96u + tx]);
  m = outer(m, stage[a + 112u + ty], stage[b + 112u + tx]);
  m = outer(m, stage[a + 128u + ty], stage[b + 128u + tx]);
  m = outer(m, stage[a + 144u + ty], stage[b + 144u + tx]);
  m = outer(m, stage[a + 160u + ty], stage[b + 160u + tx]);
  m = outer(m, stage[a + 176u + ty], stage[b + 176u + tx]);
  m = outer(m, stage[a + 192u + ty], stage[b + 192u + tx]);
  m = outer(m, stage[a + 208u + ty], stage[b + 208u + tx]);
  m = outer(m, stage[a + 224u + ty], stage[b + 224u + tx]);
  m = outer(m, stage[a + 240u + ty], stage[b + 240u + tx]);
  return m;
}

// Pairs of a score block that the mask keeps: query rows (components) × keys k0..k0+3 (columns).
fn keep_block(rows: vec4<u32>, start: vec4<u32>, k0: u32) -> array<vec4<bool>, 4> {
  let live = rows < vec4<u32>(p.t);
  return array<vec4<bool>, 4>(
    live & (vec4<u32>(k0) >= start) & (vec4<u32>(k0) <= rows),
    live & (vec4<u32>(k0 + 1u) >= start) & (vec4<u32>(k0 + 1u) <= rows),
    live & (vec4<u32>(k0 + 2u) >= start) & (vec4<u32>(k0 + 2u) <= rows),
    live & (vec4<u32>(k0 + 3u) >= start) & (vec4<u32>(k0 + 3u) <= rows),
  );
}

fn quad_start(rows: vec4<u32>) -> vec4<u32> {
  let c = min(rows, vec4<u32>(p.t - 1u));
  return vec4<u32>(in_start[c.x], in_start[c.y], in_start[c.z], in_start[c.w]);
}

// Whether the band holds score tile (qt, s): key tile qt − s is one query tile qt sees.
fn tile_live(qt: u32, s: u32) -> bool {
  return qt >= s && qt - s >= lo_tile(qt);
}

// The mask of thread (tx, ty)'s 4×4 block of score tile (qt, key tile kt).
fn block_keep(qt: u32, kt: u32, tx: u32, ty: u32) -> array<vec4<bool>, 4> {
  let rows = vec4<u32>(qt * BT + 4u * ty) + vec4<u32>(0u, 1u, 2u, 3u);
  return keep_block(rows, quad_start(rows), kt * BT + 4u * tx);
}

// Vec4 index of thread (tx, ty)'s first row of its block in score tile (h, qt, s); rows 16 apart.
fn block_at(h: u32, qt: u32, s: u32, tx: u32, ty: u32) -> u32 {
  return tile_base(h, qt, s) / 4u + 4u * ty * 16u + tx;
}

// ---------------------------------------------------------------------------------------------
// Forward 1: scores of tile (key tile qt − s, query tile qt, q head h) = workgroup (s, qt, h).

@compute @workgroup_size(16, 16)
fn attention_band_scores(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let s = wid.x;
  let qt = wid.y;
  let h = p.h0 + wid.z;
  if (!tile_live(qt, s)) {
    return; // a tile the band never reads (uniform over the workgroup)
  }
  let kt = qt - s;
  let kvh = h / p.group;
  let tx = lid.x;
  let ty = lid.y;
  let r = li / 4u;
  let k4 = li % 4u;
  var acc = mat4x4<f32>();
  var xq = ld_q(qt * BT + r, h, k4); // the slice at d0 = 0; each step loads the next one early
  var xk = ld_k(kt * BT + r, kvh, k4);
  for (var d0 = 0u; d0 < p.d; d0 += 16u) {
    workgroupBarrier();
    put_t(xq, SA, r, k4);
    put_t(xk, SB, r, k4);
    workgroupBarrier();
    xq = ld_q(qt * BT + r, h, (d0 + 16u) / 4u + k4); // zeros past D
    xk = ld_k(kt * BT + r, kvh, (d0 + 16u) / 4u + k4);
    acc = mma(acc, SA, SB, tx, ty);
  }
  let keep = block_keep(qt, kt, tx, ty);
  let m = vec4<f32>(MASKED);
  let sc = mat4x4<f32>(
    select(m, acc[0] * p.scale, keep[0]),
    select(m, acc[1] * p.scale, keep[1]),
    select(m, acc[2] * p.scale, keep[2]),
    select(m, acc[3] * p.scale, keep[3]),
  );
  let t = transpose(sc); // t[i] = row 4ty + i over keys 4tx..4tx+3
  let b = block_at(h, qt, s, tx, ty);
  out_band[b] = t[0];
  out_band[b + 16u] = t[1];
  out_band[b + 32u] = t[2];
  out_band[b + 48u] = t[3];
}

// ---------------------------------------------------------------------------------------------
// Forward 2: row softmax in place and lse. Workgroup (4 query rows, q head h), 64 threads per row,
// thread c reading column c of each of the row's key tiles.

@compute @workgroup_size(64, 4)
fn attention_band_softmax(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  let row = wid.x * 4u + lid.y;
  let h = p.h0 + wid.y;
  let c = lid.x;
  let ok = row < p.t;
  let qt = min(row, p.t - 1u) / BT;
  let r = min(row, p.t - 1u) % BT;
  // The tile's key tiles, qt − sHi .. qt: those before the row's own first key hold masked scores
  // and become zeros, which attention_band_pv reads.
  let sHi = qt - lo_tile(qt);
  let base = tile_base(h, qt, 0u) + r * BT + c;
  var m = MASKED;
  if (ok) {
    for (var s = 0u; s <= sHi; s++) {
      m = max(m, io_band[base + s * TILE]);
    }
  }
  let slot = lid.y * 64u;
  red[slot + c] = m;
  workgroupBarrier();
  for (var w = 32u; w > 0u; w >>= 1u) {
    if (c < w) {
      red[slot + c] = max(red[slot + c], red[slot + c + w]);
    }
    workgroupBarrier();
  }
  let mx = red[slot];
  workgroupBarrier();
  var l = 0.0;
  if (ok) {
    for (var s = 0u; s <= sHi; s++) {
      l += exp(io_band[base + s * TILE] - mx);
    }
  }
  red[slot + c] = l;
  workgroupBarrier();
  for (var w = 32u; w > 0u; w >>= 1u) {
    if (c < w) {
      red[slot + c] += red[slot + c + w];
    }
    workgroupBarrier();
  }
  let lsum = red[slot];
  let inv = 1.0 / lsum;
  if (ok) {
    if (c == 0u) {
      out_lse[h * p.t + row] = mx + log(lsum);
    }
    // exp(score − max) / sum rather than exp(score − lse): the rounding of lse would scale a whole
    // row of P, and O with it (a relative 7.6e-6 at lse = 64).
    for (var s = 0u; s <= sHi; s++) {
      io_band[base + s * TILE] = exp(io_band[base + s * TILE] - mx) * inv;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward 3 and dQ: out (query tile qt, q head h, dims 64·dt..) = Σ over the tile's key tiles of
// band (64 × 64) · Y (64 keys × dims): O = P·V (Y = V), dQ = scale · dS·K (Y = K). Workgroup
// (dt + dTiles · c, qt, h). Unsplit (p.kchunk = 0, c = 0) it walks all the tile's key tiles and
// writes O or dQ. Split, workgroup c walks key tiles qt − s for s in [c, c + 1) · p.kchunk only
// and writes its partial sum (unscaled) densely at c · T·Hq·D + (row · Hq + h) · D + d of binding
// 1 (a scratch), which attention_band_reduce sums in chunk order: a query tile at the end
// of a long sample sees many key tiles, one at its start only its own, so unsplit the longest
// workgroups set the pace.

// The 16-key steps [x, y) of workgroup (dt + dTiles · c, qt): 4 per key tile.
fn pv_steps(c: u32, qt: u32) -> vec2<u32> {
  let n = 4u * (qt - lo_tile(qt) + 1u);
  if (p.kchunk == 0u) {
    return vec2<u32>(0u, n);
  }
  let x = min(n, 4u * p.kchunk * c);
  return vec2<u32>(x, min(n, x + 4u * p.kchunk));
}

// The staged values of step `it` (key tile qt − it / 4, keys 16·(it % 4)..+15) for lane li: A, the
// band's row li / 4 at keys +4·(li % 4)..+3; B, key li / 16 at dim quad dq0 + li % 16 of K or V.
// Zeros from step `end` on.
fn pv_step(it: u32, end: u32, h: u32, qt: u32, dq0: u32, li: u32, use_k: bool)
  -> array<vec4<f32>, 2> {
  if (it >= end) {
    return array<vec4<f32>, 2>();
  }
  let s = it / 4u;
  let c0 = (it % 4u) * 16u;
  let a = in_band[tile_base(h, qt, s) / 4u + (li / 4u) * 16u + c0 / 4u + li % 4u];
  let key = (qt - s) * BT + c0 + li / 16u;
  let kvh = h / p.group;
  let b = select(ld_v(key, kvh, dq0 + li % 16u), ld_k(key, kvh, dq0 + li % 16u), use_k);
  return array<vec4<f32>, 2>(a, b);
}

// Σ over steps [r.x, r.y) of the block products, for output dims from dim quad dq0.
fn band_times_kv(r: vec2<u32>, h: u32, qt: u32, dq0: u32, lid: vec3<u32>, li: u32, use_k: bool)
  -> mat4x4<f32> {
  var acc = mat4x4<f32>();
  var x = pv_step(r.x, r.y, h, qt, dq0, li, use_k);
  for (var it = r.x; it < r.y; it++) {
    workgroupBarrier();
    put_t(x[0], SA, li / 4u, li % 4u); // transposed: vec4 over band rows
    stage[SB + li] = x[1];
    workgroupBarrier();
    x = pv_step(it + 1u, r.y, h, qt, dq0, li, use_k); // the next step's loads, early
    acc = mma(acc, SA, SB, lid.x, lid.y);
  }
  return acc;
}

// Thread (tx, ty)'s block of workgroup (dt + dTiles · c, qt, h): O (use_k false) or dQ, or the
// chunk's partial. Workgroups past the tile's key tiles write nothing (the reduce skips them).
fn band_pv_dq(wid: vec3<u32>, lid: vec3<u32>, li: u32, use_k: bool) {
  let dTiles = (p.d + BT - 1u) / BT;
  let dt = wid.x % dTiles;
  let c = wid.x / dTiles;
  let qt = wid.y;
  let h = p.h0 + wid.z;
  let r = pv_steps(c, qt);
  if (r.x >= r.y) {
    return; // an empty chunk (uniform over the workgroup)
  }
  let acc = band_times_kv(r, h, qt, dt * 16u, lid, li, use_k);
  let split = p.kchunk > 0u;
  for (var i = 0u; i < 4u; i++) {
    let row = qt * BT + 4u * lid.y + i;
    for (var j = 0u; j < 4u; j++) {
      let d = dt * BT + 4u * lid.x + j;
      if (row < p.t && d < p.d) {
        if (use_k && !split) {
          out_od[row * p.ld_q + p.q_off + h * p.d + d] = acc[j][i] * p.scale;
        } else {
          out_od[((c * p.t + row) * p.hq + h) * p.d + d] = acc[j][i]; // O: c = 0
        }
      }
    }
  }
}

@compute @workgroup_size(16, 16)
fn attention_band_pv(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  band_pv_dq(wid, lid, li, false);
}

@compute @workgroup_size(16, 16)
fn attention_band_dq(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  band_pv_dq(wid, lid, li, true);
}

// attention_band_reduce: O = Σ_c partial O (REDUCE_DQ 0: split P·V) or dQ = scale · Σ_c partial
// dS·K (REDUCE_DQ 1: split dQ, into dQ's layout), over the chunks each row's query tile filled: one
// thread per element e = (row · Hq + h) · D + d of the (T, Hq, D) output.
override REDUCE_DQ: u32 = 0u;

@compute @workgroup_size(64)
fn attention_band_reduce(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nw: vec3<u32>,
) {
  let e = flat_index(gid, nw, 64u);
  let n = p.t * p.hq * p.d;
  if (e >= n) {
    return;
  }
  let w = p.hq * p.d;
  let row = e / w;
  let qt = row / BT;
  let chunks = (qt - lo_tile(qt) + p.kchunk) / p.kchunk; // ⌈key tiles / kchunk⌉
  var sum = 0.0;
  for (var c = 0u; c < chunks; c++) {
    sum += in_parts[c * n + e];
  }
  if (REDUCE_DQ == 1u) {
    out_od[row * p.ld_q + p.q_off + e % w] = sum * p.scale;
  } else {
    out_od[e] = sum;
  }
}

// ---------------------------------------------------------------------------------------------
// Backward 1: P and dS of tile (s, qt, h), as attention_band_scores: S = Q·Kᵀ and dP = dO·Vᵀ side
// by side, P = exp(scale · S − lse) and dS = P ∘ (dP − delta) where the mask keeps the pair, else 0.

@compute @workgroup_size(16, 16)
fn attention_band_backward_scores(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let s = wid.x;
  let qt = wid.y;
  let h = p.h0 + wid.z;
  if (!tile_live(qt, s)) {
    return; // a tile the band never reads (uniform over the workgroup)
  }
  let kt = qt - s;
  let kvh = h / p.group;
  let tx = lid.x;
  let ty = lid.y;
  let r = li / 4u;
  let k4 = li % 4u;
  var acc = mat4x4<f32>(); // S
  var dpa = mat4x4<f32>(); // dP
  var xq = ld_q(qt * BT + r, h, k4); // the slice at d0 = 0; each step loads the next one early
  var xk = ld_k(kt * BT + r, kvh, k4);
  var xo = ld_dout(qt * BT + r, h, k4);
  var xv = ld_v(kt * BT + r, kvh, k4);
  for (var d0 = 0u; d0 < p.d; d0 += 16u) {
    workgroupBarrier();
    put_t(xq, SA, r, k4);
    put_t(xk, SB, r, k4);
    put_t(xo, SC, r, k4);
    put_t(xv, SD, r, k4);
    workgroupBarrier();
    let nd = (d0 + 16u) / 4u + k4; // zeros past D
    xq = ld_q(qt * BT + r, h, nd);
    xk = ld_k(kt * BT + r, kvh, nd);
    xo = ld_dout(qt * BT + r, h, nd);
    xv = ld_v(kt * BT + r, kvh, nd);
    acc = mma(acc, SA, SB, tx, ty);
    dpa = mma(dpa, SC, SD, tx, ty);
  }
  let keep = block_keep(qt, kt, tx, ty);
  let rows = vec4<u32>(qt * BT + 4u * ty) + vec4<u32>(0u, 1u, 2u, 3u);
  let c = min(rows, vec4<u32>(p.t - 1u)) + vec4<u32>(h * p.t);
  let lse = vec4<f32>(in_lse[c.x], in_lse[c.y], in_lse[c.z], in_lse[c.w]);
  let delta = vec4<f32>(in_delta[c.x], in_delta[c.y], in_delta[c.z], in_delta[c.w]);
  let z = vec4<f32>();
  var pr: mat4x4<f32>;
  var ds: mat4x4<f32>;
  pr[0] = select(z, exp(acc[0] * p.scale - lse), keep[0]);
  ds[0] = pr[0] * (dpa[0] - delta);
  pr[1] = select(z, exp(acc[1] * p.scale - lse), keep[1]);
  ds[1] = pr[1] * (dpa[1] - delta);
  pr[2] = select(z, exp(acc[2] * p.scale - lse), keep[2]);
  ds[2] = pr[2] * (dpa[2] - delta);
  pr[3] = select(z, exp(acc[3] * p.scale - lse), keep[3]);
  ds[3] = pr[3] * (dpa[3] - delta);
  let pt = transpose(pr);
  let dt = transpose(ds);
  let b = block_at(h, qt, s, tx, ty);
  out_p[b] = pt[0];
  out_p[b + 16u] = pt[1];
  out_p[b + 32u] = pt[2];
  out_p[b + 48u] = pt[3];
  out_ds[b] = dt[0];
  out_ds[b + 16u] = dt[1];
  out_ds[b + 32u] = dt[2];
  out_ds[b + 48u] = dt[3];
}

// ---------------------------------------------------------------------------------------------
// Backward 2: dV (wid.z even) and dK (odd) of (key tile kt = wid.y, kv head, dims 64·wid.x..):
// Σ over the group's q heads and the query tiles qt = kt + s that see kt of band(h, qt, s)ᵀ · Y
// (64 queries × dims): dV from P and dO, dK = scale · Σ dSᵀ·Q. Split (p.parts > 1): wid.z / 2 is
// (kv head, part), each part sums group / parts q heads and writes its partial dK and dV densely at
// part · T·Hkv·D of out_dk / out_dv (scratch), which attention_gpu_dkv_reduce sums in part order.
// The split evens out the work: a key tile at the start of a sample sees every query tile after
// it, one at its end only its own.

// The staged values of step `it` of a dK/dV workgroup (q head gh0 + it / (4·ns), query tile
// kt + it / 4 % ns, queries 16·(it % 4)..+15) for lane li: A, band row li / 16 at key quad li % 16
// (dS for dK, P for dV); B, that query's dim quad dq0 + li % 16 of Q (dK) or dO (dV). Zeros past
// the last step.
fn dkv_step(
  it: u32,
  n: u32,
  ns: u32,
  h0: u32,
  kt: u32,
  dq0: u32,
  li: u32,
  want_k: bool,
) -> array<vec4<f32>, 2> {
  if (it >= n) {
    return array<vec4<f32>, 2>();
  }
  let h = h0 + it / (4u * ns);
  let s = it / 4u % ns;
  let row = (it % 4u) * 16u + li / 16u; // query row within the tile
  let qt = kt + s;
  let i = tile_base(h, qt, s) / 4u + row * 16u + li % 16u;
  if (want_k) {
    return array<vec4<f32>, 2>(in_band2[i], ld_q(qt * BT + row, h, dq0 + li % 16u));
  }
  return array<vec4<f32>, 2>(in_band[i], ld_dout(qt * BT + row, h, dq0 + li % 16u));
}

@compute @workgroup_size(16, 16)
fn attention_band_dkv(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let kt = wid.y;
  let parts = max(p.parts, 1u);
  let kvh = p.h0 / p.group + wid.z / 2u / parts; // the block holds whole groups
  let part = wid.z / 2u % parts;
  let per = p.group / parts; // q heads of this part
  let want_k = wid.z % 2u == 1u;
  let dq0 = wid.x * 16u;
  // The query tiles that see kt: kt, kt + 1, ... while lo_tile(qt) <= kt (lo_tile grows with qt).
  var ns = 0u;
  for (var s = 0u; s < p.slots; s++) {
    if (kt + s >= nqt() || kt < lo_tile(kt + s)) {
      break;
    }
    ns++;
  }
  let h0 = kvh * p.group + part * per;
  let n = per * ns * 4u; // 16-query steps over the part's q heads and those query tiles
  var acc = mat4x4<f32>();
  var x = dkv_step(0u, n, ns, h0, kt, dq0, li, want_k);
  for (var it = 0u; it < n; it++) {
    workgroupBarrier();
    stage[SA + li] = x[0]; // natural layout: vec4 over keys, the output rows
    stage[SB + li] = x[1];
    workgroupBarrier();
    x = dkv_step(it + 1u, n, ns, h0, kt, dq0, li, want_k); // the next step's loads, early
    acc = mma(acc, SA, SB, lid.x, lid.y);
  }
  let tx = lid.x;
  let ty = lid.y;
  let alpha = select(1.0, p.scale, want_k);
  for (var i = 0u; i < 4u; i++) {
    let key = kt * BT + 4u * ty + i;
    for (var j = 0u; j < 4u; j++) {
      let d = wid.x * BT + 4u * tx + j;
      if (key < p.t && d < p.d) {
        var o = key * p.ld_kv + kvh * p.d + d + select(p.v_off, p.k_off, want_k);
        if (parts > 1u) { // dense partials in the scratch
          o = part * p.t * p.hkv * p.d + (key * p.hkv + kvh) * p.d + d;
        }
        if (want_k) {
          out_dk[o] = acc[j][i] * alpha;
        } else {
          out_dv[o] = acc[j][i];
        }
      }
    }
  }
}
