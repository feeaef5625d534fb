// Generic strided GEMM kernels behind every linear layer: C (+)= alpha * A.B (+ bias), plus bias grads.
//
// One kernel serves the three linear-layer products by strides (see kernels/matmul.ts):
//   C[offC + i*ldc + j] = alpha * sum_p A[offA + i*sAi + p*sAp] * B[offB + p*sBp + j*sBj]
//                         (+ C[...] when accumulating) (+ bias[offBias + j] when biased)
// for i < M, j < N, p < K. Every load index is clamped into range and every store is guarded, so
// any shape works (edges not multiples of the tile, M, N or K = 1).
//
// Two implementations of the same contract:
// - matmul_tiled / matmul_big: the classic GPU kernels. A 64x64 (128x128) output tile per
//   workgroup of 16x16 threads, K-slices of 16 staged in workgroup memory, a 4x4 (8x8) register
//   block per thread; optionally split along K (matmul_splitk_reduce sums the slices).
// - matmul_wide: for CPU adapters (lavapipe / llvmpipe) where every storage or workgroup load runs
//   as a per-lane scalar loop, so the cost is loads per multiply-add. No workgroup memory; each
//   invocation owns a WIDE_TR x WIDE_TC register block (columns j0 + c*WIDE_WG, lanes adjacent)
//   and reuses each loaded value WIDE_TC or WIDE_TR times; K is unrolled by 4 into partial sums.
//   The body is written out for the largest block (16 x 16); the override constants cut it down at
//   pipeline creation (constant-false branches vanish), which also keeps compile time in check.
//
// The GPU kernels' k loop over a staged slice is written out, TILE_K (16) steps in a row (here and
// in matmul_f16.wgsl). Naga bounds every loop with a 64-bit iteration counter kept in a local
// variable, so the driver cannot unroll a loop or overlap one step's loads with another's
// multiply-adds. On an H100, writing it out took matmul_big_v4 from 23-24 to 33.8-37.0 TFLOP/s
// (bit-identical: the same products in the same order). A changed TILE_K needs the steps rewritten.

struct GemmParams {
  M: u32, // rows of C
  N: u32, // columns of C
  K: u32, // reduction length
  ldc: u32, // row stride of C (elements)
  sAi: u32, // A stride along i
  sAp: u32, // A stride along p
  sBp: u32, // B stride along p
  sBj: u32, // B stride along j
  offA: u32, // element offsets into the bound buffers
  offB: u32,
  offC: u32,
  flags: u32, // bit 0: accumulate into C, bit 1: add bias
  alpha: f32,
  offBias: u32,
  kSlice: u32, // matmul_tiled / matmul_big: reduction length per z-slice (split-K), K when unsplit
  sliceStride: u32, // split-K: elements between the partial products of consecutive z-slices
}

const FLAG_ACCUMULATE = 1u;
const FLAG_BIAS = 2u;

@group(0) @binding(0) var<uniform> p: GemmParams;

// #include flat_index.wgsl
@group(0) @binding(1) var<storage, read_write> c: array<f32>; // (M, ldc)
@group(0) @binding(2) var<storage, read> a: array<f32>; // A (i, p) by strides
@group(0) @binding(3) var<storage, read> b: array<f32>; // B (p, j) by strides
@group(0) @binding(4) var<storage, read> bias: array<f32>; // (N), read only when FLAG_BIAS

/// The final store of one output element: alpha * acc, plus the old value and the bias if asked.
fn storeOne(i: u32, j: u32, acc: f32) {
  if (i >= p.M || j >= p.N) {
    return;
  }
  let idx = p.offC + i * p.ldc + j;
  var r = p.alpha * acc;
  if ((p.flags & FLAG_ACCUMULATE) != 0u) {
    r += c[idx];
  }
  if ((p.flags & FLAG_BIAS) != 0u) {
    r += bias[p.offBias + j];
  }
  c[idx] = r;
}

// ---------------------------------------------------------------------------------------------
// GPU kernels: matmul_tiled (64x64 output tiles, 4x4 per thread) for small grids and
// matmul_big (128x128 tiles, 8x8 per thread) for large ones; both 256 threads, K staged in slices
// of 16 through workgroup memory, with the next slice's global loads issued before the current
// slice's arithmetic (register prefetch), so load latency hides behind the multiply-adds.
// Split-K: workgroup z covers p in [z * kSlice, min(K, (z + 1) * kSlice)) and, when gridded over z
// (> 1 slice), writes its partial product to C + z * sliceStride with flags 0 (the launcher
// points C at a scratch buffer); matmul_splitk_reduce then sums the slices into the real C.

const TILE_K = 16u; // reduction slice staged per step (the GPU kernels write out 16 steps)

/// A(i, p) with the indices clamped into range, zero outside [.., kEnd).
fn loadA(i: u32, q: u32, kEnd: u32) -> f32 {
  let v = a[p.offA + min(i, p.M - 1u) * p.sAi + min(q, p.K - 1u) * p.sAp];
  return select(0.0, v, i < p.M && q < kEnd);
}

/// B(p, j) with the indices clamped into range, zero outside [.., kEnd).
fn loadB(q: u32, j: u32, kEnd: u32) -> f32 {
  let v = b[p.offB + min(q, p.K - 1u) * p.sBp + min(j, p.N - 1u) * p.sBj];
  return select(0.0, v, j < p.N && q < kEnd);
}

/// Element e of a (TILE_K, edge) tile as (row along the tile edge, step along K): consecutive e
/// walk the operand's unit stride, so neighbouring threads read neighbouring addresses.
fn tileCoord(e: u32, edge: u32, kContiguous: bool) -> vec2<u32> {
  if (kContiguous) {
    return vec2<u32>(e / TILE_K, e % TILE_K);
  }
  return vec2<u32>(e % edge, e / edge);
}

/// Store four consecutive columns j..j+3 of row i.
fn storeRow4(i: u32, j: u32, v: vec4<f32>) {
  storeOne(i, j, v.x);
  storeOne(i, j + 1u, v.y);
  storeOne(i, j + 2u, v.z);
  storeOne(i, j + 3u, v.w);
}

/// The z-slice's reduction range [kBeg, kEnd) and where its output goes (offC, or the slice's
/// partial product when split).
fn sliceRange(z: u32) -> vec2<u32> {
  let kBeg = z * p.kSlice;
  return vec2<u32>(kBeg, min(p.K, kBeg + p.kSlice));
}

// --- matmul_tiled: 64x64 tile, 16x16 threads, 4x4 block per thread ---------------------------

const TILE = 64u; // output tile edge (rows and columns)
const TILE_ROW4 = 17u; // vec4s per staged row: 16 + 1 of padding against bank conflicts

var<workgroup> tileA: array<vec4<f32>, 272>; // (TILE_K, TILE_ROW4): A[i0 + i, k0 + q] at [q][i]
var<workgroup> tileB: array<vec4<f32>, 272>; // (TILE_K, TILE_ROW4): B[k0 + q, j0 + j] at [q][j]

@compute @workgroup_size(16, 16)
fn matmul_tiled(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let i0 = wid.y * TILE;
  let j0 = wid.x * TILE;
  let kr = sliceRange(wid.z);
  let aK = p.sAp == 1u;
  let bK = p.sBj != 1u;
  // this thread's 4 staged elements of each tile (e = li + 256 r)
  let ea0 = tileCoord(li, TILE, aK);
  let ea1 = tileCoord(li + 256u, TILE, aK);
  let ea2 = tileCoord(li + 512u, TILE, aK);
  let ea3 = tileCoord(li + 768u, TILE, aK);
  let eb0 = tileCoord(li, TILE, bK);
  let eb1 = tileCoord(li + 256u, TILE, bK);
  let eb2 = tileCoord(li + 512u, TILE, bK);
  let eb3 = tileCoord(li + 768u, TILE, bK);
  var ra = vec4<f32>(
    loadA(i0 + ea0.x, kr.x + ea0.y, kr.y),
    loadA(i0 + ea1.x, kr.x + ea1.y, kr.y),
    loadA(i0 + ea2.x, kr.x + ea2.y, kr.y),
    loadA(i0 + ea3.x, kr.x + ea3.y, kr.y),
  );
  var rb = vec4<f32>(
    loadB(kr.x + eb0.y, j0 + eb0.x, kr.y),
    loadB(kr.x + eb1.y, j0 + eb1.x, kr.y),
    loadB(kr.x + eb2.y, j0 + eb2.x, kr.y),
    loadB(kr.x + eb3.y, j0 + eb3.x, kr.y),
  );
  var c0 = vec4<f32>(0.0);
  var c1 = vec4<f32>(0.0);
  var c2 = vec4<f32>(0.0);
  var c3 = vec4<f32>(0.0);
  for (var k0 = kr.x; k0 < kr.y; k0 += TILE_K) {
    tileA[ea0.y * TILE_ROW4 + ea0.x / 4u][ea0.x % 4u] = ra.x;
    tileA[ea1.y * TILE_ROW4 + ea1.x / 4u][ea1.x % 4u] = ra.y;
    tileA[ea2.y * TILE_ROW4 + ea2.x / 4u][ea2.x % 4u] = ra.z;
    tileA[ea3.y * TILE_ROW4 + ea3.x / 4u][ea3.x % 4u] = ra.w;
    tileB[eb0.y * TILE_ROW4 + eb0.x / 4u][eb0.x % 4u] = rb.x;
    tileB[eb1.y * TILE_ROW4 + eb1.x / 4u][eb1.x % 4u] = rb.y;
    tileB[eb2.y * TILE_ROW4 + eb2.x / 4u][eb2.x % 4u] = rb.z;
    tileB[eb3.y * TILE_ROW4 + eb3.x / 4u][eb3.x % 4u] = rb.w;
    workgroupBarrier();
    let kn = k0 + TILE_K; // prefetch the next slice (all zeros past the end)
    ra = vec4<f32>(
      loadA(i0 + ea0.x, kn + ea0.y, kr.y),
      loadA(i0 + ea1.x, kn + ea1.y, kr.y),
      loadA(i0 + ea2.x, kn + ea2.y, kr.y),
      loadA(i0 + ea3.x, kn + ea3.y, kr.y),
    );
    rb = vec4<f32>(
      loadB(kn + eb0.y, j0 + eb0.x, kr.y),
      loadB(kn + eb1.y, j0 + eb1.x, kr.y),
      loadB(kn + eb2.y, j0 + eb2.x, kr.y),
      loadB(kn + eb3.y, j0 + eb3.x, kr.y),
    );
    // TILE_K (16) k steps written out: see the note at the top of matmul.wgsl
    { // k = 0
      let av = tileA[0u * TILE_ROW4 + lid.y];
      let bv = tileB[0u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 1
      let av = tileA[1u * TILE_ROW4 + lid.y];
      let bv = tileB[1u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 2
      let av = tileA[2u * TILE_ROW4 + lid.y];
      let bv = tileB[2u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 3
      let av = tileA[3u * TILE_ROW4 + lid.y];
      let bv = tileB[3u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 4
      let av = tileA[4u * TILE_ROW4 + lid.y];
      let bv = tileB[4u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 5
      let av = tileA[5u * TILE_ROW4 + lid.y];
      let bv = tileB[5u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 6
      let av = tileA[6u * TILE_ROW4 + lid.y];
      let bv = tileB[6u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 7
      let av = tileA[7u * TILE_ROW4 + lid.y];
      let bv = tileB[7u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 8
      let av = tileA[8u * TILE_ROW4 + lid.y];
      let bv = tileB[8u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 9
      let av = tileA[9u * TILE_ROW4 + lid.y];
      let bv = tileB[9u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 10
      let av = tileA[10u * TILE_ROW4 + lid.y];
      let bv = tileB[10u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 11
      let av = tileA[11u * TILE_ROW4 + lid.y];
      let bv = tileB[11u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 12
      let av = tileA[12u * TILE_ROW4 + lid.y];
      let bv = tileB[12u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 13
      let av = tileA[13u * TILE_ROW4 + lid.y];
      let bv = tileB[13u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 14
      let av = tileA[14u * TILE_ROW4 + lid.y];
      let bv = tileB[14u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 15
      let av = tileA[15u * TILE_ROW4 + lid.y];
      let bv = tileB[15u * TILE_ROW4 + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    workgroupBarrier();
  }
  splitStore4(i0 + lid.y * 4u, j0 + lid.x * 4u, wid.z, c0, c1, c2, c3);
}

/// Store a 4x4 block at rows i.., columns j..: into C, or into slice z's partial product.
fn splitStore4(i: u32, j: u32, z: u32, c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>) {
  if (p.kSlice < p.K) {
    partialRow4(i, j, z, c0);
    partialRow4(i + 1u, j, z, c1);
    partialRow4(i + 2u, j, z, c2);
    partialRow4(i + 3u, j, z, c3);
    return;
  }
  storeRow4(i, j, c0);
  storeRow4(i + 1u, j, c1);
  storeRow4(i + 2u, j, c2);
  storeRow4(i + 3u, j, c3);
}

/// Split-K partial product of row i, columns j..j+3 (dense (M, N) per slice, no alpha).
fn partialRow4(i: u32, j: u32, z: u32, v: vec4<f32>) {
  if (i >= p.M) {
    return;
  }
  let base = z * p.sliceStride + i * p.N;
  if (j < p.N) { c[base + j] = v.x; }
  if (j + 1u < p.N) { c[base + j + 1u] = v.y; }
  if (j + 2u < p.N) { c[base + j + 2u] = v.z; }
  if (j + 3u < p.N) { c[base + j + 3u] = v.w; }
}

// --- matmul_big: 128x128 tile, 16x16 threads, 8x8 block per thread ---------------------------
// Thread (x, y) owns rows y*4..y*4+3 and 64+y*4..64+y*4+3, and the same split of columns, so
// a warp's vec4 reads of the staged tiles hit consecutive addresses.

const BIG = 128u;
const BIG_ROW4 = 33u; // vec4s per staged row: 32 + 1 of padding

var<workgroup> bigA: array<vec4<f32>, 528>; // (TILE_K, BIG_ROW4)
var<workgroup> bigB: array<vec4<f32>, 528>; // (TILE_K, BIG_ROW4)

fn putBigA(e: vec2<u32>, v: f32) {
  bigA[e.y * BIG_ROW4 + e.x / 4u][e.x % 4u] = v;
}

fn putBigB(e: vec2<u32>, v: f32) {
  bigB[e.y * BIG_ROW4 + e.x / 4u][e.x % 4u] = v;
}

/// Stage this thread's 8 elements (li + 256 r) of the A tile: v0 holds r = 0..3, v1 r = 4..7.
fn stageBigA(li: u32, kc: bool, v0: vec4<f32>, v1: vec4<f32>) {
  putBigA(tileCoord(li, BIG, kc), v0.x);
  putBigA(tileCoord(li + 256u, BIG, kc), v0.y);
  putBigA(tileCoord(li + 512u, BIG, kc), v0.z);
  putBigA(tileCoord(li + 768u, BIG, kc), v0.w);
  putBigA(tileCoord(li + 1024u, BIG, kc), v1.x);
  putBigA(tileCoord(li + 1280u, BIG, kc), v1.y);
  putBigA(tileCoord(li + 1536u, BIG, kc), v1.z);
  putBigA(tileCoord(li + 1792u, BIG, kc), v1.w);
}

/// As stageBigA, for the B tile.
fn stageBigB(li: u32, kc: bool, v0: vec4<f32>, v1: vec4<f32>) {
  putBigB(tileCoord(li, BIG, kc), v0.x);
  putBigB(tileCoord(li + 256u, BIG, kc), v0.y);
  putBigB(tileCoord(li + 512u, BIG, kc), v0.z);
  putBigB(tileCoord(li + 768u, BIG, kc), v0.w);
  putBigB(tileCoord(li + 1024u, BIG, kc), v1.x);
  putBigB(tileCoord(li + 1280u, BIG, kc), v1.y);
  putBigB(tileCoord(li + 1536u, BIG, kc), v1.z);
  putBigB(tileCoord(li + 1792u, BIG, kc), v1.w);
}

/// A at the tile (i0, k0): elements li + 256 (r + 4 h), r = 0..3, read from memory.
fn fetchBigA(li: u32, h: u32, i0: u32, k0: u32, kEnd: u32, kc: bool) -> vec4<f32> {
  let e = li + 1024u * h;
  let e0 = tileCoord(e, BIG, kc);
  let e1 = tileCoord(e + 256u, BIG, kc);
  let e2 = tileCoord(e + 512u, BIG, kc);
  let e3 = tileCoord(e + 768u, BIG, kc);
  return vec4<f32>(
    loadA(i0 + e0.x, k0 + e0.y, kEnd),
    loadA(i0 + e1.x, k0 + e1.y, kEnd),
    loadA(i0 + e2.x, k0 + e2.y, kEnd),
    loadA(i0 + e3.x, k0 + e3.y, kEnd),
  );
}

/// As fetchBigA, for B at the tile (k0, j0).
fn fetchBigB(li: u32, h: u32, j0: u32, k0: u32, kEnd: u32, kc: bool) -> vec4<f32> {
  let e = li + 1024u * h;
  let e0 = tileCoord(e, BIG, kc);
  let e1 = tileCoord(e + 256u, BIG, kc);
  let e2 = tileCoord(e + 512u, BIG, kc);
  let e3 = tileCoord(e + 768u, BIG, kc);
  return vec4<f32>(
    loadB(k0 + e0.y, j0 + e0.x, kEnd),
    loadB(k0 + e1.y, j0 + e1.x, kEnd),
    loadB(k0 + e2.y, j0 + e2.x, kEnd),
    loadB(k0 + e3.y, j0 + e3.x, kEnd),
  );
}

@compute @workgroup_size(16, 16)
fn matmul_big(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let i0 = wid.y * BIG;
  let j0 = wid.x * BIG;
  let kr = sliceRange(wid.z);
  let aK = p.sAp == 1u;
  let bK = p.sBj != 1u;
  var ra0 = fetchBigA(li, 0u, i0, kr.x, kr.y, aK);
  var ra1 = fetchBigA(li, 1u, i0, kr.x, kr.y, aK);
  var rb0 = fetchBigB(li, 0u, j0, kr.x, kr.y, bK);
  var rb1 = fetchBigB(li, 1u, j0, kr.x, kr.y, bK);
  // c<row group><row><column half>: rows y*4+r (g = 0) and 64+y*4+r (g = 1)
  var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0);
  var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
  var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0);
  var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
  var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0);
  var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
  var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0);
  var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);
  for (var k0 = kr.x; k0 < kr.y; k0 += TILE_K) {
    stageBigA(li, aK, ra0, ra1);
    stageBigB(li, bK, rb0, rb1);
    workgroupBarrier();
    let kn = k0 + TILE_K; // prefetch the next slice (all zeros past the end)
    ra0 = fetchBigA(li, 0u, i0, kn, kr.y, aK);
    ra1 = fetchBigA(li, 1u, i0, kn, kr.y, aK);
    rb0 = fetchBigB(li, 0u, j0, kn, kr.y, bK);
    rb1 = fetchBigB(li, 1u, j0, kn, kr.y, bK);
    // TILE_K (16) k steps written out: see the note at the top of matmul.wgsl
    { // k = 0
      let a0 = bigA[0u * BIG_ROW4 + lid.y];
      let a1 = bigA[0u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[0u * BIG_ROW4 + lid.x];
      let b1 = bigB[0u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 1
      let a0 = bigA[1u * BIG_ROW4 + lid.y];
      let a1 = bigA[1u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[1u * BIG_ROW4 + lid.x];
      let b1 = bigB[1u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 2
      let a0 = bigA[2u * BIG_ROW4 + lid.y];
      let a1 = bigA[2u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[2u * BIG_ROW4 + lid.x];
      let b1 = bigB[2u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 3
      let a0 = bigA[3u * BIG_ROW4 + lid.y];
      let a1 = bigA[3u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[3u * BIG_ROW4 + lid.x];
      let b1 = bigB[3u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 4
      let a0 = bigA[4u * BIG_ROW4 + lid.y];
      let a1 = bigA[4u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[4u * BIG_ROW4 + lid.x];
      let b1 = bigB[4u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 5
      let a0 = bigA[5u * BIG_ROW4 + lid.y];
      let a1 = bigA[5u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[5u * BIG_ROW4 + lid.x];
      let b1 = bigB[5u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 6
      let a0 = bigA[6u * BIG_ROW4 + lid.y];
      let a1 = bigA[6u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[6u * BIG_ROW4 + lid.x];
      let b1 = bigB[6u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 7
      let a0 = bigA[7u * BIG_ROW4 + lid.y];
      let a1 = bigA[7u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[7u * BIG_ROW4 + lid.x];
      let b1 = bigB[7u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 8
      let a0 = bigA[8u * BIG_ROW4 + lid.y];
      let a1 = bigA[8u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[8u * BIG_ROW4 + lid.x];
      let b1 = bigB[8u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 9
      let a0 = bigA[9u * BIG_ROW4 + lid.y];
      let a1 = bigA[9u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[9u * BIG_ROW4 + lid.x];
      let b1 = bigB[9u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 10
      let a0 = bigA[10u * BIG_ROW4 + lid.y];
      let a1 = bigA[10u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[10u * BIG_ROW4 + lid.x];
      let b1 = bigB[10u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 11
      let a0 = bigA[11u * BIG_ROW4 + lid.y];
      let a1 = bigA[11u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[11u * BIG_ROW4 + lid.x];
      let b1 = bigB[11u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 12
      let a0 = bigA[12u * BIG_ROW4 + lid.y];
      let a1 = bigA[12u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[12u * BIG_ROW4 + lid.x];
      let b1 = bigB[12u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 13
      let a0 = bigA[13u * BIG_ROW4 + lid.y];
      let a1 = bigA[13u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[13u * BIG_ROW4 + lid.x];
      let b1 = bigB[13u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 14
      let a0 = bigA[14u * BIG_ROW4 + lid.y];
      let a1 = bigA[14u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[14u * BIG_ROW4 + lid.x];
      let b1 = bigB[14u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 15
      let a0 = bigA[15u * BIG_ROW4 + lid.y];
      let a1 = bigA[15u * BIG_ROW4 + 16u + lid.y];
      let b0 = bigB[15u * BIG_ROW4 + lid.x];
      let b1 = bigB[15u * BIG_ROW4 + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    workgroupBarrier();
  }
  let ia = i0 + lid.y * 4u;
  let ib = i0 + 64u + lid.y * 4u;
  let ja = j0 + lid.x * 4u;
  let jb = j0 + 64u + lid.x * 4u;
  splitStore4(ia, ja, wid.z, c00, c10, c20, c30);
  splitStore4(ia, jb, wid.z, c01, c11, c21, c31);
  splitStore4(ib, ja, wid.z, c40, c50, c60, c70);
  splitStore4(ib, jb, wid.z, c41, c51, c61, c71);
}

// --- matmul_big_v4: matmul_big with 16-byte global loads and double-buffered tiles --------------
// For operands whose unit-stride dimension, other stride and offset are multiples of 4 (every
// transformer shape): each thread fetches 2 vec4s of A and 2 of B per K-slice through 16-byte
// views of the same bindings, and the two tile buffers alternate, so one barrier per slice
// suffices (the slice being filled is not the one being read).

@group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>; // A, 16-byte view (v4 only)
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>; // B, 16-byte view (v4 only)

const BIG_BUF = 528u; // vec4s per staged tile (TILE_K x BIG_ROW4)
var<workgroup> v4A: array<vec4<f32>, 1056>; // two (TILE_K, BIG_ROW4) tiles of A
var<workgroup> v4B: array<vec4<f32>, 1056>; // two (TILE_K, BIG_ROW4) tiles of B

/// Where vec4 number q of a (TILE_K, 4·edge4) tile comes from, as (offset along the tile edge,
/// offset along K): 4 consecutive k at one row when the operand is K-contiguous (kc), else 4
/// consecutive rows at one k.
fn coord4(q: u32, kc: bool, edge4: u32) -> vec2<u32> {
  if (kc) {
    return vec2<u32>(q / 4u, (q % 4u) * 4u);
  }
  return vec2<u32>((q % edge4) * 4u, q / edge4);
}

/// Where vec4 number q lands in a staged tile of `row4` vec4s per k: K-contiguous operands
/// scatter it over 4 k rows at (x + r·row4)[y], the others store it whole at x.
fn slot4(q: u32, kc: bool, edge4: u32, row4: u32) -> vec2<u32> {
  let e = coord4(q, kc, edge4);
  return vec2<u32>(e.y * row4 + e.x / 4u, e.x % 4u);
}

/// vec4 number q of the A tile at (i0, k0) of a 4·edge4-row tile (zeros outside the operand or
/// past kEnd).
fn fetchA4(q: u32, i0: u32, k0: u32, kEnd: u32, kc: bool, edge4: u32) -> vec4<f32> {
  let e = coord4(q, kc, edge4);
  let i = i0 + e.x;
  let k = k0 + e.y;
  // clamped into range: the vec4's first index stops 4 short of the end along its own axis
  let ic = select(min(i, p.M - 4u), min(i, p.M - 1u), kc);
  let kcl = select(min(k, p.K - 1u), min(k, p.K - 4u), kc);
  let v = a4[(p.offA + ic * p.sAi + kcl * p.sAp) / 4u];
  return select(vec4<f32>(0.0), v, i < p.M && k < kEnd);
}

/// vec4 number q of the B tile at (k0, j0) of a 4·edge4-column tile.
fn fetchB4(q: u32, j0: u32, k0: u32, kEnd: u32, kc: bool, edge4: u32) -> vec4<f32> {
  let e = coord4(q, kc, edge4);
  let j = j0 + e.x;
  let k = k0 + e.y;
  let jc = select(min(j, p.N - 4u), min(j, p.N - 1u), kc);
  let kcl = select(min(k, p.K - 1u), min(k, p.K - 4u), kc);
  let v = b4[(p.offB + kcl * p.sBp + jc * p.sBj) / 4u];
  return select(vec4<f32>(0.0), v, j < p.N && k < kEnd);
}

/// Stage vec4 number q of the 128-edge A tile into buffer half `base`.
fn putA4(base: u32, q: u32, kc: bool, v: vec4<f32>) {
  let s = slot4(q, kc, 32u, BIG_ROW4);
  if (kc) {
    v4A[base + s.x][s.y] = v.x;
    v4A[base + s.x + BIG_ROW4][s.y] = v.y;
    v4A[base + s.x + 2u * BIG_ROW4][s.y] = v.z;
    v4A[base + s.x + 3u * BIG_ROW4][s.y] = v.w;
  } else {
    v4A[base + s.x] = v;
  }
}

/// Stage vec4 number q of the 128-edge B tile into buffer half `base`.
fn putB4(base: u32, q: u32, kc: bool, v: vec4<f32>) {
  let s = slot4(q, kc, 32u, BIG_ROW4);
  if (kc) {
    v4B[base + s.x][s.y] = v.x;
    v4B[base + s.x + BIG_ROW4][s.y] = v.y;
    v4B[base + s.x + 2u * BIG_ROW4][s.y] = v.z;
    v4B[base + s.x + 3u * BIG_ROW4][s.y] = v.w;
  } else {
    v4B[base + s.x] = v;
  }
}

@compute @workgroup_size(16, 16)
fn matmul_big_v4(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let i0 = wid.y * BIG;
  let j0 = wid.x * BIG;
  let kr = sliceRange(wid.z);
  let aK = p.sAp == 1u;
  let bK = p.sBj != 1u;
  putA4(0u, li, aK, fetchA4(li, i0, kr.x, kr.y, aK, 32u));
  putA4(0u, li + 256u, aK, fetchA4(li + 256u, i0, kr.x, kr.y, aK, 32u));
  putB4(0u, li, bK, fetchB4(li, j0, kr.x, kr.y, bK, 32u));
  putB4(0u, li + 256u, bK, fetchB4(li + 256u, j0, kr.x, kr.y, bK, 32u));
  workgroupBarrier();
  var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0);
  var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
  var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0);
  var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
  var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0);
  var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
  var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0);
  var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);
  var cur = 0u;
  for (var k0 = kr.x; k0 < kr.y; k0 += TILE_K) {
    let kn = k0 + TILE_K; // the next slice's loads, issued before this slice's arithmetic
    let na0 = fetchA4(li, i0, kn, kr.y, aK, 32u);
    let na1 = fetchA4(li + 256u, i0, kn, kr.y, aK, 32u);
    let nb0 = fetchB4(li, j0, kn, kr.y, bK, 32u);
    let nb1 = fetchB4(li + 256u, j0, kn, kr.y, bK, 32u);
    // TILE_K (16) k steps written out: see the note at the top of matmul.wgsl
    { // k = 0
      let r = cur + 0u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 1
      let r = cur + 1u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 2
      let r = cur + 2u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 3
      let r = cur + 3u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 4
      let r = cur + 4u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 5
      let r = cur + 5u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 6
      let r = cur + 6u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 7
      let r = cur + 7u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 8
      let r = cur + 8u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 9
      let r = cur + 9u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 10
      let r = cur + 10u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 11
      let r = cur + 11u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 12
      let r = cur + 12u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 13
      let r = cur + 13u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 14
      let r = cur + 14u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    { // k = 15
      let r = cur + 15u * BIG_ROW4;
      let a0 = v4A[r + lid.y];
      let a1 = v4A[r + 16u + lid.y];
      let b0 = v4B[r + lid.x];
      let b1 = v4B[r + 16u + lid.x];
      c00 += a0.x * b0; c01 += a0.x * b1;
      c10 += a0.y * b0; c11 += a0.y * b1;
      c20 += a0.z * b0; c21 += a0.z * b1;
      c30 += a0.w * b0; c31 += a0.w * b1;
      c40 += a1.x * b0; c41 += a1.x * b1;
      c50 += a1.y * b0; c51 += a1.y * b1;
      c60 += a1.z * b0; c61 += a1.z * b1;
      c70 += a1.w * b0; c71 += a1.w * b1;
    }
    // fill the other half (last read before the previous barrier), then one barrier
    let nxt = BIG_BUF - cur;
    putA4(nxt, li, aK, na0);
    putA4(nxt, li + 256u, aK, na1);
    putB4(nxt, li, bK, nb0);
    putB4(nxt, li + 256u, bK, nb1);
    workgroupBarrier();
    cur = nxt;
  }
  let ia = i0 + lid.y * 4u;
  let ib = i0 + 64u + lid.y * 4u;
  let ja = j0 + lid.x * 4u;
  let jb = j0 + 64u + lid.x * 4u;
  splitStore4(ia, ja, wid.z, c00, c10, c20, c30);
  splitStore4(ia, jb, wid.z, c01, c11, c21, c31);
  splitStore4(ib, ja, wid.z, c40, c50, c60, c70);
  splitStore4(ib, jb, wid.z, c41, c51, c61, c71);
}

// --- matmul_tiled_v4: matmul_tiled with 16-byte global loads and double-buffered tiles --------
// Same operand conditions as matmul_big_v4; one vec4 of A and one of B per thread per K-slice.

const TILED_BUF = 272u; // vec4s per staged tile (TILE_K x TILE_ROW4)
var<workgroup> t4A: array<vec4<f32>, 544>; // two (TILE_K, TILE_ROW4) tiles of A
var<workgroup> t4B: array<vec4<f32>, 544>; // two (TILE_K, TILE_ROW4) tiles of B

/// Stage vec4 number q of the 64-edge A tile into buffer half `base`.
fn putTA4(base: u32, q: u32, kc: bool, v: vec4<f32>) {
  let s = slot4(q, kc, 16u, TILE_ROW4);
  if (kc) {
    t4A[base + s.x][s.y] = v.x;
    t4A[base + s.x + TILE_ROW4][s.y] = v.y;
    t4A[base + s.x + 2u * TILE_ROW4][s.y] = v.z;
    t4A[base + s.x + 3u * TILE_ROW4][s.y] = v.w;
  } else {
    t4A[base + s.x] = v;
  }
}

/// Stage vec4 number q of the 64-edge B tile into buffer half `base`.
fn putTB4(base: u32, q: u32, kc: bool, v: vec4<f32>) {
  let s = slot4(q, kc, 16u, TILE_ROW4);
  if (kc) {
    t4B[base + s.x][s.y] = v.x;
    t4B[base + s.x + TILE_ROW4][s.y] = v.y;
    t4B[base + s.x + 2u * TILE_ROW4][s.y] = v.z;
    t4B[base + s.x + 3u * TILE_ROW4][s.y] = v.w;
  } else {
    t4B[base + s.x] = v;
  }
}

@compute @workgroup_size(16, 16)
fn matmul_tiled_v4(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let i0 = wid.y * TILE;
  let j0 = wid.x * TILE;
  let kr = sliceRange(wid.z);
  let aK = p.sAp == 1u;
  let bK = p.sBj != 1u;
  putTA4(0u, li, aK, fetchA4(li, i0, kr.x, kr.y, aK, 16u));
  putTB4(0u, li, bK, fetchB4(li, j0, kr.x, kr.y, bK, 16u));
  workgroupBarrier();
  var c0 = vec4<f32>(0.0);
  var c1 = vec4<f32>(0.0);
  var c2 = vec4<f32>(0.0);
  var c3 = vec4<f32>(0.0);
  var cur = 0u;
  for (var k0 = kr.x; k0 < kr.y; k0 += TILE_K) {
    let kn = k0 + TILE_K; // the next slice's loads, issued before this slice's arithmetic
    let na = fetchA4(li, i0, kn, kr.y, aK, 16u);
    let nb = fetchB4(li, j0, kn, kr.y, bK, 16u);
    // TILE_K (16) k steps written out: see the note at the top of matmul.wgsl
    { // k = 0
      let r = cur + 0u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 1
      let r = cur + 1u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 2
      let r = cur + 2u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 3
      let r = cur + 3u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 4
      let r = cur + 4u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 5
      let r = cur + 5u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 6
      let r = cur + 6u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 7
      let r = cur + 7u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 8
      let r = cur + 8u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 9
      let r = cur + 9u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 10
      let r = cur + 10u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 11
      let r = cur + 11u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 12
      let r = cur + 12u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 13
      let r = cur + 13u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 14
      let r = cur + 14u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    { // k = 15
      let r = cur + 15u * TILE_ROW4;
      let av = t4A[r + lid.y];
      let bv = t4B[r + lid.x];
      c0 += av.x * bv;
      c1 += av.y * bv;
      c2 += av.z * bv;
      c3 += av.w * bv;
    }
    let nxt = TILED_BUF - cur;
    putTA4(nxt, li, aK, na);
    putTB4(nxt, li, bK, nb);
    workgroupBarrier();
    cur = nxt;
  }
  splitStore4(i0 + lid.y * 4u, j0 + lid.x * 4u, wid.z, c0, c1, c2, c3);
}

// --- matmul_splitk_reduce: C[i, j] (+)= alpha * sum_z partial[z][i, j] (+ bias[j]) -------------
// A (binding 2) holds the K (= slice count) partial products, sliceStride apart, each dense
// (M, N). One invocation per output element; the slices are summed in order (deterministic).

@compute @workgroup_size(64)
fn matmul_splitk_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let e = flat_index(gid, nw, 64u);
  if (e >= p.M * p.N) {
    return;
  }
  var s = 0.0;
  for (var z = 0u; z < p.K; z++) {
    s += a[z * p.sliceStride + e];
  }
  storeOne(e / p.N, e % p.N, s);
}

// ---------------------------------------------------------------------------------------------
// matmul_wide (CPU adapters)

override WIDE_WG: u32 = 8u; // invocations per workgroup (one SIMD row on llvmpipe)
override WIDE_TR: u32 = 16u; // rows per workgroup (1..16)
override WIDE_TC: u32 = 16u; // columns per invocation (4, 8, 12 or 16)

/// Store four columns j, j + WIDE_WG, j + 2 WIDE_WG, j + 3 WIDE_WG of row i.
fn storeWide(i: u32, j: u32, v: vec4<f32>) {
  storeOne(i, j, v.x);
  storeOne(i, j + WIDE_WG, v.y);
  storeOne(i, j + 2u * WIDE_WG, v.z);
  storeOne(i, j + 3u * WIDE_WG, v.w);
}

// The body below is regular: row r (r < 16) and column group g (g < 4, columns 4g..4g+3 of the
// invocation) are present only when WIDE_TR > r and WIDE_TC > 4g. K advances by 4 per iteration
// (four products summed before each accumulator update); past the end of K the indices are clamped
// and the A values zeroed, so those steps add 0 · B(clamped, finite) = 0.
@compute @workgroup_size(WIDE_WG)
fn matmul_wide(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let j0 = wid.x * WIDE_WG * WIDE_TC + lid.x; // first column of this lane; column c is j0 + c * WIDE_WG
  let i0 = wid.y * WIDE_TR; // first row of this workgroup
  let nLast = p.N - 1u;
  let mLast = p.M - 1u;
  // B column offsets (clamped so every load is in bounds; out-of-range columns are never stored)
  var bj0 = vec4<u32>(0u); var bj1 = vec4<u32>(0u); var bj2 = vec4<u32>(0u); var bj3 = vec4<u32>(0u);
  { bj0 = p.offB + min(j0 + vec4<u32>(0u, 1u, 2u, 3u) * WIDE_WG, vec4<u32>(nLast)) * p.sBj; }
  if (WIDE_TC > 4u) { bj1 = p.offB + min(j0 + vec4<u32>(4u, 5u, 6u, 7u) * WIDE_WG, vec4<u32>(nLast)) * p.sBj; }
  if (WIDE_TC > 8u) { bj2 = p.offB + min(j0 + vec4<u32>(8u, 9u, 10u, 11u) * WIDE_WG, vec4<u32>(nLast)) * p.sBj; }
  if (WIDE_TC > 12u) { bj3 = p.offB + min(j0 + vec4<u32>(12u, 13u, 14u, 15u) * WIDE_WG, vec4<u32>(nLast)) * p.sBj; }
  // A row offsets
  var ai0 = 0u; var ai1 = 0u; var ai2 = 0u; var ai3 = 0u; var ai4 = 0u; var ai5 = 0u; var ai6 = 0u; var ai7 = 0u;
  var ai8 = 0u; var ai9 = 0u; var ai10 = 0u; var ai11 = 0u; var ai12 = 0u; var ai13 = 0u; var ai14 = 0u; var ai15 = 0u;
  { ai0 = p.offA + min(i0 + 0u, mLast) * p.sAi; }
  if (WIDE_TR > 1u) { ai1 = p.offA + min(i0 + 1u, mLast) * p.sAi; }
  if (WIDE_TR > 2u) { ai2 = p.offA + min(i0 + 2u, mLast) * p.sAi; }
  if (WIDE_TR > 3u) { ai3 = p.offA + min(i0 + 3u, mLast) * p.sAi; }
  if (WIDE_TR > 4u) { ai4 = p.offA + min(i0 + 4u, mLast) * p.sAi; }
  if (WIDE_TR > 5u) { ai5 = p.offA + min(i0 + 5u, mLast) * p.sAi; }
  if (WIDE_TR > 6u) { ai6 = p.offA + min(i0 + 6u, mLast) * p.sAi; }
  if (WIDE_TR > 7u) { ai7 = p.offA + min(i0 + 7u, mLast) * p.sAi; }
  if (WIDE_TR > 8u) { ai8 = p.offA + min(i0 + 8u, mLast) * p.sAi; }
  if (WIDE_TR > 9u) { ai9 = p.offA + min(i0 + 9u, mLast) * p.sAi; }
  if (WIDE_TR > 10u) { ai10 = p.offA + min(i0 + 10u, mLast) * p.sAi; }
  if (WIDE_TR > 11u) { ai11 = p.offA + min(i0 + 11u, mLast) * p.sAi; }
  if (WIDE_TR > 12u) { ai12 = p.offA + min(i0 + 12u, mLast) * p.sAi; }
  if (WIDE_TR > 13u) { ai13 = p.offA + min(i0 + 13u, mLast) * p.sAi; }
  if (WIDE_TR > 14u) { ai14 = p.offA + min(i0 + 14u, mLast) * p.sAi; }
  if (WIDE_TR > 15u) { ai15 = p.offA + min(i0 + 15u, mLast) * p.sAi; }
  var c0_0 = vec4<f32>(0.0); var c0_1 = vec4<f32>(0.0); var c0_2 = vec4<f32>(0.0); var c0_3 = vec4<f32>(0.0);
  var c1_0 = vec4<f32>(0.0); var c1_1 = vec4<f32>(0.0); var c1_2 = vec4<f32>(0.0); var c1_3 = vec4<f32>(0.0);
  var c2_0 = vec4<f32>(0.0); var c2_1 = vec4<f32>(0.0); var c2_2 = vec4<f32>(0.0); var c2_3 = vec4<f32>(0.0);
  var c3_0 = vec4<f32>(0.0); var c3_1 = vec4<f32>(0.0); var c3_2 = vec4<f32>(0.0); var c3_3 = vec4<f32>(0.0);
  var c4_0 = vec4<f32>(0.0); var c4_1 = vec4<f32>(0.0); var c4_2 = vec4<f32>(0.0); var c4_3 = vec4<f32>(0.0);
  var c5_0 = vec4<f32>(0.0); var c5_1 = vec4<f32>(0.0); var c5_2 = vec4<f32>(0.0); var c5_3 = vec4<f32>(0.0);
  var c6_0 = vec4<f32>(0.0); var c6_1 = vec4<f32>(0.0); var c6_2 = vec4<f32>(0.0); var c6_3 = vec4<f32>(0.0);
  var c7_0 = vec4<f32>(0.0); var c7_1 = vec4<f32>(0.0); var c7_2 = vec4<f32>(0.0); var c7_3 = vec4<f32>(0.0);
  var c8_0 = vec4<f32>(0.0); var c8_1 = vec4<f32>(0.0); var c8_2 = vec4<f32>(0.0); var c8_3 = vec4<f32>(0.0);
  var c9_0 = vec4<f32>(0.0); var c9_1 = vec4<f32>(0.0); var c9_2 = vec4<f32>(0.0); var c9_3 = vec4<f32>(0.0);
  var c10_0 = vec4<f32>(0.0); var c10_1 = vec4<f32>(0.0); var c10_2 = vec4<f32>(0.0); var c10_3 = vec4<f32>(0.0);
  var c11_0 = vec4<f32>(0.0); var c11_1 = vec4<f32>(0.0); var c11_2 = vec4<f32>(0.0); var c11_3 = vec4<f32>(0.0);
  var c12_0 = vec4<f32>(0.0); var c12_1 = vec4<f32>(0.0); var c12_2 = vec4<f32>(0.0); var c12_3 = vec4<f32>(0.0);
  var c13_0 = vec4<f32>(0.0); var c13_1 = vec4<f32>(0.0); var c13_2 = vec4<f32>(0.0); var c13_3 = vec4<f32>(0.0);
  var c14_0 = vec4<f32>(0.0); var c14_1 = vec4<f32>(0.0); var c14_2 = vec4<f32>(0.0); var c14_3 = vec4<f32>(0.0);
  var c15_0 = vec4<f32>(0.0); var c15_1 = vec4<f32>(0.0); var c15_2 = vec4<f32>(0.0); var c15_3 = vec4<f32>(0.0);
  for (var k = 0u; k < p.K; k += 4u) {
    let k0 = min(k + 0u, p.K - 1u);
    let v0 = k + 0u < p.K;
    let pa0 = k0 * p.sAp;
    let pb0 = k0 * p.sBp;
    let k1 = min(k + 1u, p.K - 1u);
    let v1 = k + 1u < p.K;
    let pa1 = k1 * p.sAp;
    let pb1 = k1 * p.sBp;
    let k2 = min(k + 2u, p.K - 1u);
    let v2 = k + 2u < p.K;
    let pa2 = k2 * p.sAp;
    let pb2 = k2 * p.sBp;
    let k3 = min(k + 3u, p.K - 1u);
    let v3 = k + 3u < p.K;
    let pa3 = k3 * p.sAp;
    let pb3 = k3 * p.sBp;
    var b0_0 = vec4<f32>(0.0);
    var b0_1 = vec4<f32>(0.0);
    var b0_2 = vec4<f32>(0.0);
    var b0_3 = vec4<f32>(0.0);
    { b0_0 = vec4<f32>(b[bj0.x + pb0], b[bj0.y + pb0], b[bj0.z + pb0], b[bj0.w + pb0]); }
    if (WIDE_TC > 4u) { b0_1 = vec4<f32>(b[bj1.x + pb0], b[bj1.y + pb0], b[bj1.z + pb0], b[bj1.w + pb0]); }
    if (WIDE_TC > 8u) { b0_2 = vec4<f32>(b[bj2.x + pb0], b[bj2.y + pb0], b[bj2.z + pb0], b[bj2.w + pb0]); }
    if (WIDE_TC > 12u) { b0_3 = vec4<f32>(b[bj3.x + pb0], b[bj3.y + pb0], b[bj3.z + pb0], b[bj3.w + pb0]); }
    var b1_0 = vec4<f32>(0.0);
    var b1_1 = vec4<f32>(0.0);
    var b1_2 = vec4<f32>(0.0);
    var b1_3 = vec4<f32>(0.0);
    { b1_0 = vec4<f32>(b[bj0.x + pb1], b[bj0.y + pb1], b[bj0.z + pb1], b[bj0.w + pb1]); }
    if (WIDE_TC > 4u) { b1_1 = vec4<f32>(b[bj1.x + pb1], b[bj1.y + pb1], b[bj1.z + pb1], b[bj1.w + pb1]); }
    if (WIDE_TC > 8u) { b1_2 = vec4<f32>(b[bj2.x + pb1], b[bj2.y + pb1], b[bj2.z + pb1], b[bj2.w + pb1]); }
    if (WIDE_TC > 12u) { b1_3 = vec4<f32>(b[bj3.x + pb1], b[bj3.y + pb1], b[bj3.z + pb1], b[bj3.w + pb1]); }
    var b2_0 = vec4<f32>(0.0);
    var b2_1 = vec4<f32>(0.0);
    var b2_2 = vec4<f32>(0.0);
    var b2_3 = vec4<f32>(0.0);
    { b2_0 = vec4<f32>(b[bj0.x + pb2], b[bj0.y + pb2], b[bj0.z + pb2], b[bj0.w + pb2]); }
    if (WIDE_TC > 4u) { b2_1 = vec4<f32>(b[bj1.x + pb2], b[bj1.y + pb2], b[bj1.z + pb2], b[bj1.w + pb2]); }
    if (WIDE_TC > 8u) { b2_2 = vec4<f32>(b[bj2.x + pb2], b[bj2.y + pb2], b[bj2.z + pb2], b[bj2.w + pb2]); }
    if (WIDE_TC > 12u) { b2_3 = vec4<f32>(b[bj3.x + pb2], b[bj3.y + pb2], b[bj3.z + pb2], b[bj3.w + pb2]); }
    var b3_0 = vec4<f32>(0.0);
    var b3_1 = vec4<f32>(0.0);
    var b3_2 = vec4<f32>(0.0);
    var b3_3 = vec4<f32>(0.0);
    { b3_0 = vec4<f32>(b[bj0.x + pb3], b[bj0.y + pb3], b[bj0.z + pb3], b[bj0.w + pb3]); }
    if (WIDE_TC > 4u) { b3_1 = vec4<f32>(b[bj1.x + pb3], b[bj1.y + pb3], b[bj1.z + pb3], b[bj1.w + pb3]); }
    if (WIDE_TC > 8u) { b3_2 = vec4<f32>(b[bj2.x + pb3], b[bj2.y + pb3], b[bj2.z + pb3], b[bj2.w + pb3]); }
    if (WIDE_TC > 12u) { b3_3 = vec4<f32>(b[bj3.x + pb3], b[bj3.y + pb3], b[bj3.z + pb3], b[bj3.w + pb3]); }
    var a0_0 = 0.0; var a0_1 = 0.0; var a0_2 = 0.0; var a0_3 = 0.0;
    { a0_0 = select(0.0, a[ai0 + pa0], v0); a0_1 = select(0.0, a[ai0 + pa1], v1); a0_2 = select(0.0, a[ai0 + pa2], v2); a0_3 = select(0.0, a[ai0 + pa3], v3); }
    var a1_0 = 0.0; var a1_1 = 0.0; var a1_2 = 0.0; var a1_3 = 0.0;
    if (WIDE_TR > 1u) { a1_0 = select(0.0, a[ai1 + pa0], v0); a1_1 = select(0.0, a[ai1 + pa1], v1); a1_2 = select(0.0, a[ai1 + pa2], v2); a1_3 = select(0.0, a[ai1 + pa3], v3); }
    var a2_0 = 0.0; var a2_1 = 0.0; var a2_2 = 0.0; var a2_3 = 0.0;
    if (WIDE_TR > 2u) { a2_0 = select(0.0, a[ai2 + pa0], v0); a2_1 = select(0.0, a[ai2 + pa1], v1); a2_2 = select(0.0, a[ai2 + pa2], v2); a2_3 = select(0.0, a[ai2 + pa3], v3); }
    var a3_0 = 0.0; var a3_1 = 0.0; var a3_2 = 0.0; var a3_3 = 0.0;
    if (WIDE_TR > 3u) { a3_0 = select(0.0, a[ai3 + pa0], v0); a3_1 = select(0.0, a[ai3 + pa1], v1); a3_2 = select(0.0, a[ai3 + pa2], v2); a3_3 = select(0.0, a[ai3 + pa3], v3); }
    var a4_0 = 0.0; var a4_1 = 0.0; var a4_2 = 0.0; var a4_3 = 0.0;
    if (WIDE_TR > 4u) { a4_0 = select(0.0, a[ai4 + pa0], v0); a4_1 = select(0.0, a[ai4 + pa1], v1); a4_2 = select(0.0, a[ai4 + pa2], v2); a4_3 = select(0.0, a[ai4 + pa3], v3); }
    var a5_0 = 0.0; var a5_1 = 0.0; var a5_2 = 0.0; var a5_3 = 0.0;
    if (WIDE_TR > 5u) { a5_0 = select(0.0, a[ai5 + pa0], v0); a5_1 = select(0.0, a[ai5 + pa1], v1); a5_2 = select(0.0, a[ai5 + pa2], v2); a5_3 = select(0.0, a[ai5 + pa3], v3); }
    var a6_0 = 0.0; var a6_1 = 0.0; var a6_2 = 0.0; var a6_3 = 0.0;
    if (WIDE_TR > 6u) { a6_0 = select(0.0, a[ai6 + pa0], v0); a6_1 = select(0.0, a[ai6 + pa1], v1); a6_2 = select(0.0, a[ai6 + pa2], v2); a6_3 = select(0.0, a[ai6 + pa3], v3); }
    var a7_0 = 0.0; var a7_1 = 0.0; var a7_2 = 0.0; var a7_3 = 0.0;
    if (WIDE_TR > 7u) { a7_0 = select(0.0, a[ai7 + pa0], v0); a7_1 = select(0.0, a[ai7 + pa1], v1); a7_2 = select(0.0, a[ai7 + pa2], v2); a7_3 = select(0.0, a[ai7 + pa3], v3); }
    var a8_0 = 0.0; var a8_1 = 0.0; var a8_2 = 0.0; var a8_3 = 0.0;
    if (WIDE_TR > 8u) { a8_0 = select(0.0, a[ai8 + pa0], v0); a8_1 = select(0.0, a[ai8 + pa1], v1); a8_2 = select(0.0, a[ai8 + pa2], v2); a8_3 = select(0.0, a[ai8 + pa3], v3); }
    var a9_0 = 0.0; var a9_1 = 0.0; var a9_2 = 0.0; var a9_3 = 0.0;
    if (WIDE_TR > 9u) { a9_0 = select(0.0, a[ai9 + pa0], v0); a9_1 = select(0.0, a[ai9 + pa1], v1); a9_2 = select(0.0, a[ai9 + pa2], v2); a9_3 = select(0.0, a[ai9 + pa3], v3); }
    var a10_0 = 0.0; var a10_1 = 0.0; var a10_2 = 0.0; var a10_3 = 0.0;
    if (WIDE_TR > 10u) { a10_0 = select(0.0, a[ai10 + pa0], v0); a10_1 = select(0.0, a[ai10 + pa1], v1); a10_2 = select(0.0, a[ai10 + pa2], v2); a10_3 = select(0.0, a[ai10 + pa3], v3); }
    var a11_0 = 0.0; var a11_1 = 0.0; var a11_2 = 0.0; var a11_3 = 0.0;
    if (WIDE_TR > 11u) { a11_0 = select(0.0, a[ai11 + pa0], v0); a11_1 = select(0.0, a[ai11 + pa1], v1); a11_2 = select(0.0, a[ai11 + pa2], v2); a11_3 = select(0.0, a[ai11 + pa3], v3); }
    var a12_0 = 0.0; var a12_1 = 0.0; var a12_2 = 0.0; var a12_3 = 0.0;
    if (WIDE_TR > 12u) { a12_0 = select(0.0, a[ai12 + pa0], v0); a12_1 = select(0.0, a[ai12 + pa1], v1); a12_2 = select(0.0, a[ai12 + pa2], v2); a12_3 = select(0.0, a[ai12 + pa3], v3); }
    var a13_0 = 0.0; var a13_1 = 0.0; var a13_2 = 0.0; var a13_3 = 0.0;
    if (WIDE_TR > 13u) { a13_0 = select(0.0, a[ai13 + pa0], v0); a13_1 = select(0.0, a[ai13 + pa1], v1); a13_2 = select(0.0, a[ai13 + pa2], v2); a13_3 = select(0.0, a[ai13 + pa3], v3); }
    var a14_0 = 0.0; var a14_1 = 0.0; var a14_2 = 0.0; var a14_3 = 0.0;
    if (WIDE_TR > 14u) { a14_0 = select(0.0, a[ai14 + pa0], v0); a14_1 = select(0.0, a[ai14 + pa1], v1); a14_2 = select(0.0, a[ai14 + pa2], v2); a14_3 = select(0.0, a[ai14 + pa3], v3); }
    var a15_0 = 0.0; var a15_1 = 0.0; var a15_2 = 0.0; var a15_3 = 0.0;
    if (WIDE_TR > 15u) { a15_0 = select(0.0, a[ai15 + pa0], v0); a15_1 = select(0.0, a[ai15 + pa1], v1); a15_2 = select(0.0, a[ai15 + pa2], v2); a15_3 = select(0.0, a[ai15 + pa3], v3); }
    {
      { c0_0 += a0_0 * b0_0 + a0_1 * b1_0 + a0_2 * b2_0 + a0_3 * b3_0; }
      if (WIDE_TC > 4u) { c0_1 += a0_0 * b0_1 + a0_1 * b1_1 + a0_2 * b2_1 + a0_3 * b3_1; }
      if (WIDE_TC > 8u) { c0_2 += a0_0 * b0_2 + a0_1 * b1_2 + a0_2 * b2_2 + a0_3 * b3_2; }
      if (WIDE_TC > 12u) { c0_3 += a0_0 * b0_3 + a0_1 * b1_3 + a0_2 * b2_3 + a0_3 * b3_3; }
    }
    if (WIDE_TR > 1u) {
      { c1_0 += a1_0 * b0_0 + a1_1 * b1_0 + a1_2 * b2_0 + a1_3 * b3_0; }
      if (WIDE_TC > 4u) { c1_1 += a1_0 * b0_1 + a1_1 * b1_1 + a1_2 * b2_1 + a1_3 * b3_1; }
      if (WIDE_TC > 8u) { c1_2 += a1_0 * b0_2 + a1_1 * b1_2 + a1_2 * b2_2 + a1_3 * b3_2; }
      if (WIDE_TC > 12u) { c1_3 += a1_0 * b0_3 + a1_1 * b1_3 + a1_2 * b2_3 + a1_3 * b3_3; }
    }
    if (WIDE_TR > 2u) {
      { c2_0 += a2_0 * b0_0 + a2_1 * b1_0 + a2_2 * b2_0 + a2_3 * b3_0; }
      if (WIDE_TC > 4u) { c2_1 += a2_0 * b0_1 + a2_1 * b1_1 + a2_2 * b2_1 + a2_3 * b3_1; }
      if (WIDE_TC > 8u) { c2_2 += a2_0 * b0_2 + a2_1 * b1_2 + a2_2 * b2_2 + a2_3 * b3_2; }
      if (WIDE_TC > 12u) { c2_3 += a2_0 * b0_3 + a2_1 * b1_3 + a2_2 * b2_3 + a2_3 * b3_3; }
    }
    if (WIDE_TR > 3u) {
      { c3_0 += a3_0 * b0_0 + a3_1 * b1_0 + a3_2 * b2_0 + a3_3 * b3_0; }
      if (WIDE_TC > 4u) { c3_1 += a3_0 * b0_1 + a3_1 * b1_1 + a3_2 * b2_1 + a3_3 * b3_1; }
      if (WIDE_TC > 8u) { c3_2 += a3_0 * b0_2 + a3_1 * b1_2 + a3_2 * b2_2 + a3_3 * b3_2; }
      if (WIDE_TC > 12u) { c3_3 += a3_0 * b0_3 + a3_1 * b1_3 + a3_2 * b2_3 + a3_3 * b3_3; }
    }
    if (WIDE_TR > 4u) {
      { c4_0 += a4_0 * b0_0 + a4_1 * b1_0 + a4_2 * b2_0 + a4_3 * b3_0; }
      if (WIDE_TC > 4u) { c4_1 += a4_0 * b0_1 + a4_1 * b1_1 + a4_2 * b2_1 + a4_3 * b3_1; }
      if (WIDE_TC > 8u) { c4_2 += a4_0 * b0_2 + a4_1 * b1_2 + a4_2 * b2_2 + a4_3 * b3_2; }
      if (WIDE_TC > 12u) { c4_3 += a4_0 * b0_3 + a4_1 * b1_3 + a4_2 * b2_3 + a4_3 * b3_3; }
    }
    if (WIDE_TR > 5u) {
      { c5_0 += a5_0 * b0_0 + a5_1 * b1_0 + a5_2 * b2_0 + a5_3 * b3_0; }
      if (WIDE_TC > 4u) { c5_1 += a5_0 * b0_1 + a5_1 * b1_1 + a5_2 * b2_1 + a5_3 * b3_1; }
      if (WIDE_TC > 8u) { c5_2 += a5_0 * b0_2 + a5_1 * b1_2 + a5_2 * b2_2 + a5_3 * b3_2; }
      if (WIDE_TC > 12u) { c5_3 += a5_0 * b0_3 + a5_1 * b1_3 + a5_2 * b2_3 + a5_3 * b3_3; }
    }
    if (WIDE_TR > 6u) {
      { c6_0 += a6_0 * b0_0 + a6_1 * b1_0 + a6_2 * b2_0 + a6_3 * b3_0; }
      if (WIDE_TC > 4u) { c6_1 += a6_0 * b0_1 + a6_1 * b1_1 + a6_2 * b2_1 + a6_3 * b3_1; }
      if (WIDE_TC > 8u) { c6_2 += a6_0 * b0_2 + a6_1 * b1_2 + a6_2 * b2_2 + a6_3 * b3_2; }
      if (WIDE_TC > 12u) { c6_3 += a6_0 * b0_3 + a6_1 * b1_3 + a6_2 * b2_3 + a6_3 * b3_3; }
    }
    if (WIDE_TR > 7u) {
      { c7_0 += a7_0 * b0_0 + a7_1 * b1_0 + a7_2 * b2_0 + a7_3 * b3_0; }
      if (WIDE_TC > 4u) { c7_1 += a7_0 * b0_1 + a7_1 * b1_1 + a7_2 * b2_1 + a7_3 * b3_1; }
      if (WIDE_TC > 8u) { c7_2 += a7_0 * b0_2 + a7_1 * b1_2 + a7_2 * b2_2 + a7_3 * b3_2; }
      if (WIDE_TC > 12u) { c7_3 += a7_0 * b0_3 + a7_1 * b1_3 + a7_2 * b2_3 + a7_3 * b3_3; }
    }
    if (WIDE_TR > 8u) {
      { c8_0 += a8_0 * b0_0 + a8_1 * b1_0 + a8_2 * b2_0 + a8_3 * b3_0; }
      if (WIDE_TC > 4u) { c8_1 += a8_0 * b0_1 + a8_1 * b1_1 + a8_2 * b2_1 + a8_3 * b3_1; }
      if (WIDE_TC > 8u) { c8_2 += a8_0 * b0_2 + a8_1 * b1_2 + a8_2 * b2_2 + a8_3 * b3_2; }
      if (WIDE_TC > 12u) { c8_3 += a8_0 * b0_3 + a8_1 * b1_3 + a8_2 * b2_3 + a8_3 * b3_3; }
    }
    if (WIDE_TR > 9u) {
      { c9_0 += a9_0 * b0_0 + a9_1 * b1_0 + a9_2 * b2_0 + a9_3 * b3_0; }
      if (WIDE_TC > 4u) { c9_1 += a9_0 * b0_1 + a9_1 * b1_1 + a9_2 * b2_1 + a9_3 * b3_1; }
      if (WIDE_TC > 8u) { c9_2 += a9_0 * b0_2 + a9_1 * b1_2 + a9_2 * b2_2 + a9_3 * b3_2; }
      if (WIDE_TC > 12u) { c9_3 += a9_0 * b0_3 + a9_1 * b1_3 + a9_2 * b2_3 + a9_3 * b3_3; }
    }
    if (WIDE_TR > 10u) {
      { c10_0 += a10_0 * b0_0 + a10_1 * b1_0 + a10_2 * b2_0 + a10_3 * b3_0; }
      if (WIDE_TC > 4u) { c10_1 += a10_0 * b0_1 + a10_1 * b1_1 + a10_2 * b2_1 + a10_3 * b3_1; }
      if (WIDE_TC > 8u) { c10_2 += a10_0 * b0_2 + a10_1 * b1_2 + a10_2 * b2_2 + a10_3 * b3_2; }
      if (WIDE_TC > 12u) { c10_3 += a10_0 * b0_3 + a10_1 * b1_3 + a10_2 * b2_3 + a10_3 * b3_3; }
    }
    if (WIDE_TR > 11u) {
      { c11_0 += a11_0 * b0_0 + a11_1 * b1_0 + a11_2 * b2_0 + a11_3 * b3_0; }
      if (WIDE_TC > 4u) { c11_1 += a11_0 * b0_1 + a11_1 * b1_1 + a11_2 * b2_1 + a11_3 * b3_1; }
      if (WIDE_TC > 8u) { c11_2 += a11_0 * b0_2 + a11_1 * b1_2 + a11_2 * b2_2 + a11_3 * b3_2; }
      if (WIDE_TC > 12u) { c11_3 += a11_0 * b0_3 + a11_1 * b1_3 + a11_2 * b2_3 + a11_3 * b3_3; }
    }
    if (WIDE_TR > 12u) {
      { c12_0 += a12_0 * b0_0 + a12_1 * b1_0 + a12_2 * b2_0 + a12_3 * b3_0; }
      if (WIDE_TC > 4u) { c12_1 += a12_0 * b0_1 + a12_1 * b1_1 + a12_2 * b2_1 + a12_3 * b3_1; }
      if (WIDE_TC > 8u) { c12_2 += a12_0 * b0_2 + a12_1 * b1_2 + a12_2 * b2_2 + a12_3 * b3_2; }
      if (WIDE_TC > 12u) { c12_3 += a12_0 * b0_3 + a12_1 * b1_3 + a12_2 * b2_3 + a12_3 * b3_3; }
    }
    if (WIDE_TR > 13u) {
      { c13_0 += a13_0 * b0_0 + a13_1 * b1_0 + a13_2 * b2_0 + a13_3 * b3_0; }
      if (WIDE_TC > 4u) { c13_1 += a13_0 * b0_1 + a13_1 * b1_1 + a13_2 * b2_1 + a13_3 * b3_1; }
      if (WIDE_TC > 8u) { c13_2 += a13_0 * b0_2 + a13_1 * b1_2 + a13_2 * b2_2 + a13_3 * b3_2; }
      if (WIDE_TC > 12u) { c13_3 += a13_0 * b0_3 + a13_1 * b1_3 + a13_2 * b2_3 + a13_3 * b3_3; }
    }
    if (WIDE_TR > 14u) {
      { c14_0 += a14_0 * b0_0 + a14_1 * b1_0 + a14_2 * b2_0 + a14_3 * b3_0; }
      if (WIDE_TC > 4u) { c14_1 += a14_0 * b0_1 + a14_1 * b1_1 + a14_2 * b2_1 + a14_3 * b3_1; }
      if (WIDE_TC > 8u) { c14_2 += a14_0 * b0_2 + a14_1 * b1_2 + a14_2 * b2_2 + a14_3 * b3_2; }
      if (WIDE_TC > 12u) { c14_3 += a14_0 * b0_3 + a14_1 * b1_3 + a14_2 * b2_3 + a14_3 * b3_3; }
    }
    if (WIDE_TR > 15u) {
      { c15_0 += a15_0 * b0_0 + a15_1 * b1_0 + a15_2 * b2_0 + a15_3 * b3_0; }
      if (WIDE_TC > 4u) { c15_1 += a15_0 * b0_1 + a15_1 * b1_1 + a15_2 * b2_1 + a15_3 * b3_1; }
      if (WIDE_TC > 8u) { c15_2 += a15_0 * b0_2 + a15_1 * b1_2 + a15_2 * b2_2 + a15_3 * b3_2; }
      if (WIDE_TC > 12u) { c15_3 += a15_0 * b0_3 + a15_1 * b1_3 + a15_2 * b2_3 + a15_3 * b3_3; }
    }
  }
  // Epilogue: gather the block into one array and store it row by row in a loop (one copy of
  // the store code instead of 64; the trip count is dynamic so the loop is not unrolled).
  var blk: array<vec4<f32>, 64>;
  { blk[0] = c0_0; blk[1] = c0_1; blk[2] = c0_2; blk[3] = c0_3; }
  if (WIDE_TR > 1u) { blk[4] = c1_0; blk[5] = c1_1; blk[6] = c1_2; blk[7] = c1_3; }
  if (WIDE_TR > 2u) { blk[8] = c2_0; blk[9] = c2_1; blk[10] = c2_2; blk[11] = c2_3; }
  if (WIDE_TR > 3u) { blk[12] = c3_0; blk[13] = c3_1; blk[14] = c3_2; blk[15] = c3_3; }
  if (WIDE_TR > 4u) { blk[16] = c4_0; blk[17] = c4_1; blk[18] = c4_2; blk[19] = c4_3; }
  if (WIDE_TR > 5u) { blk[20] = c5_0; blk[21] = c5_1; blk[22] = c5_2; blk[23] = c5_3; }
  if (WIDE_TR > 6u) { blk[24] = c6_0; blk[25] = c6_1; blk[26] = c6_2; blk[27] = c6_3; }
  if (WIDE_TR > 7u) { blk[28] = c7_0; blk[29] = c7_1; blk[30] = c7_2; blk[31] = c7_3; }
  if (WIDE_TR > 8u) { blk[32] = c8_0; blk[33] = c8_1; blk[34] = c8_2; blk[35] = c8_3; }
  if (WIDE_TR > 9u) { blk[36] = c9_0; blk[37] = c9_1; blk[38] = c9_2; blk[39] = c9_3; }
  if (WIDE_TR > 10u) { blk[40] = c10_0; blk[41] = c10_1; blk[42] = c10_2; blk[43] = c10_3; }
  if (WIDE_TR > 11u) { blk[44] = c11_0; blk[45] = c11_1; blk[46] = c11_2; blk[47] = c11_3; }
  if (WIDE_TR > 12u) { blk[48] = c12_0; blk[49] = c12_1; blk[50] = c12_2; blk[51] = c12_3; }
  if (WIDE_TR > 13u) { blk[52] = c13_0; blk[53] = c13_1; blk[54] = c13_2; blk[55] = c13_3; }
  if (WIDE_TR > 14u) { blk[56] = c14_0; blk[57] = c14_1; blk[58] = c14_2; blk[59] = c14_3; }
  if (WIDE_TR > 15u) { blk[60] = c15_0; blk[61] = c15_1; blk[62] = c15_2; blk[63] = c15_3; }
  let rows = min(WIDE_TR, p.M - min(i0, p.M));
  for (var r = 0u; r < rows; r++) {
    storeWide(i0 + r, j0, blk[4u * r]);
    if (WIDE_TC > 4u) { storeWide(i0 + r, j0 + 4u * WIDE_WG, blk[4u * r + 1u]); }
    if (WIDE_TC > 8u) { storeWide(i0 + r, j0 + 8u * WIDE_WG, blk[4u * r + 2u]); }
    if (WIDE_TC > 12u) { storeWide(i0 + r, j0 + 12u * WIDE_WG, blk[4u * r + 3u]); }
  }
}

// ---------------------------------------------------------------------------------------------
// matmul_bias_backward: db[j] (+)= sum_m dY[m, j], reusing GemmParams (M rows, N columns, sAi =
// row stride of dY, offA / offC = element offsets of dY / db, FLAG_ACCUMULATE). One invocation
// per column sums its rows in a fixed order, so the result is deterministic.

@compute @workgroup_size(64)
fn matmul_bias_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  if (j >= p.N) {
    return;
  }
  var s0 = 0.0;
  var s1 = 0.0;
  var s2 = 0.0;
  var s3 = 0.0;
  var m = 0u;
  for (; m + 4u <= p.M; m += 4u) {
    let base = p.offA + m * p.sAi + j;
    s0 += a[base];
    s1 += a[base + p.sAi];
    s2 += a[base + 2u * p.sAi];
    s3 += a[base + 3u * p.sAi];
  }
  for (; m < p.M; m++) {
    s0 += a[p.offA + m * p.sAi + j];
  }
  var r = (s0 + s1) + (s2 + s3);
  let idx = p.offC + j;
  if ((p.flags & FLAG_ACCUMULATE) != 0u) {
    r += c[idx];
  }
  c[idx] = r;
}
