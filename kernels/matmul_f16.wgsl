// f16-arithmetic GEMMs (matmul precision "f16"): the matmul.wgsl contract with f32 in and out.
//
// Same operands, strides, split-K, accumulate and bias as matmul_tiled_v4 / matmul_big_v4 (the
// whole of matmul.wgsl is included: bindings, params, helpers). What differs:
// - the staged tiles hold f16: each f32 read from memory is rounded to f16 once, at staging, which
//   halves the workgroup memory and its traffic;
// - the multiply-adds run on vec4<f16> (packed half2 FMAs where the hardware has them, twice the
//   f32 rate on most GPUs), summed in f16 over one K-slice (TILE_K = 16 products), then added to
//   f32 accumulators, so the rounding error stays that of a 16-term f16 sum plus the f16 rounding
//   of the inputs, at any K: |error| <= about 18 * 2^-11 * sum_p |A(i,p) B(p,j)|.
// Values beyond the f16 range (|x| > 65504) turn into infinities, never silent wrong numbers: the
// trainer's dynamic loss scale (model/llama_graph.ts) backs off and skips such a step.

enable f16;

// #include matmul.wgsl

// --- matmul_big_h: 128x128 tile, 16x16 threads, 8x8 block per thread, f16 tiles --------------

var<workgroup> hA: array<vec4<f16>, 1056>; // two (TILE_K, BIG_ROW4) tiles of A
var<workgroup> hB: array<vec4<f16>, 1056>; // two (TILE_K, BIG_ROW4) tiles of B

/// Stage vec4 number q of a 4·edge4-edge A tile, rounded to f16, into tile half `base` of rows
/// of `row4` vec4s.
fn putHA(base: u32, q: u32, kc: bool, v: vec4<f32>, edge4: u32, row4: u32) {
  let s = slot4(q, kc, edge4, row4);
  let h = vec4<f16>(v);
  if (kc) {
    hA[base + s.x][s.y] = h.x;
    hA[base + s.x + row4][s.y] = h.y;
    hA[base + s.x + 2u * row4][s.y] = h.z;
    hA[base + s.x + 3u * row4][s.y] = h.w;
  } else {
    hA[base + s.x] = h;
  }
}

/// As putHA, for the B tile.
fn putHB(base: u32, q: u32, kc: bool, v: vec4<f32>, edge4: u32, row4: u32) {
  let s = slot4(q, kc, edge4, row4);
  let h = vec4<f16>(v);
  if (kc) {
    hB[base + s.x][s.y] = h.x;
    hB[base + s.x + row4][s.y] = h.y;
    hB[base + s.x + 2u * row4][s.y] = h.z;
    hB[base + s.x + 3u * row4][s.y] = h.w;
  } else {
    hB[base + s.x] = h;
  }
}

@compute @workgroup_size(16, 16)
fn matmul_big_h(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let i0 = wid.y * BIG;
  let j0 = wid.x * BIG;
  let kr = sliceRange(wid.z);
  let aK = p.sAp == 1u;
  let bK = p.sBj != 1u;
  putHA(0u, li, aK, fetchA4(li, i0, kr.x, kr.y, aK, 32u), 32u, BIG_ROW4);
  putHA(0u, li + 256u, aK, fetchA4(li + 256u, i0, kr.x, kr.y, aK, 32u), 32u, BIG_ROW4);
  putHB(0u, li, bK, fetchB4(li, j0, kr.x, kr.y, bK, 32u), 32u, BIG_ROW4);
  putHB(0u, li + 256u, bK, fetchB4(li + 256u, j0, kr.x, kr.y, bK, 32u), 32u, BIG_ROW4);
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
    // this slice's 16 products per output, summed in f16
    var h00 = vec4<f16>(); var h01 = vec4<f16>();
    var h10 = vec4<f16>(); var h11 = vec4<f16>();
    var h20 = vec4<f16>(); var h21 = vec4<f16>();
    var h30 = vec4<f16>(); var h31 = vec4<f16>();
    var h40 = vec4<f16>(); var h41 = vec4<f16>();
    var h50 = vec4<f16>(); var h51 = vec4<f16>();
    var h60 = vec4<f16>(); var h61 = vec4<f16>();
    var h70 = vec4<f16>(); var h71 = vec4<f16>();
    // TILE_K (16) k steps written out: see the note at the top of matmul.wgsl
    { // k = 0
      let r = cur + 0u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 1
      let r = cur + 1u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 2
      let r = cur + 2u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 3
      let r = cur + 3u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 4
      let r = cur + 4u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 5
      let r = cur + 5u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 6
      let r = cur + 6u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 7
      let r = cur + 7u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 8
      let r = cur + 8u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 9
      let r = cur + 9u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 10
      let r = cur + 10u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 11
      let r = cur + 11u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 12
      let r = cur + 12u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 13
      let r = cur + 13u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 14
      let r = cur + 14u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    { // k = 15
      let r = cur + 15u * BIG_ROW4;
      let a0 = hA[r + lid.y];
      let a1 = hA[r + 16u + lid.y];
      let b0 = hB[r + lid.x];
      let b1 = hB[r + 16u + lid.x];
      h00 += a0.x * b0; h01 += a0.x * b1;
      h10 += a0.y * b0; h11 += a0.y * b1;
      h20 += a0.z * b0; h21 += a0.z * b1;
      h30 += a0.w * b0; h31 += a0.w * b1;
      h40 += a1.x * b0; h41 += a1.x * b1;
      h50 += a1.y * b0; h51 += a1.y * b1;
      h60 += a1.z * b0; h61 += a1.z * b1;
      h70 += a1.w * b0; h71 += a1.w * b1;
    }
    c00 += vec4<f32>(h00); c01 += vec4<f32>(h01);
    c10 += vec4<f32>(h10); c11 += vec4<f32>(h11);
    c20 += vec4<f32>(h20); c21 += vec4<f32>(h21);
    c30 += vec4<f32>(h30); c31 += vec4<f32>(h31);
    c40 += vec4<f32>(h40); c41 += vec4<f32>(h41);
    c50 += vec4<f32>(h50); c51 += vec4<f32>(h51);
    c60 += vec4<f32>(h60); c61 += vec4<f32>(h61);
    c70 += vec4<f32>(h70); c71 += vec4<f32>(h71);
    // fill the other half (last read before the previous barrier), then one barrier
    let nxt = BIG_BUF - cur;
    putHA(nxt, li, aK, na0, 32u, BIG_ROW4);
    putHA(nxt, li + 256u, aK, na1, 32u, BIG_ROW4);
    putHB(nxt, li, bK, nb0, 32u, BIG_ROW4);
    putHB(nxt, li + 256u, bK, nb1, 32u, BIG_ROW4);
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

// --- matmul_tiled_h: 64x64 tile, 16x16 threads, 4x4 block per thread, f16 tiles --------------
// The first 2 · TILED_BUF vec4s of hA / hB serve as its two tile halves.

@compute @workgroup_size(16, 16)
fn matmul_tiled_h(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
) {
  let i0 = wid.y * TILE;
  let j0 = wid.x * TILE;
  let kr = sliceRange(wid.z);
  let aK = p.sAp == 1u;
  let bK = p.sBj != 1u;
  putHA(0u, li, aK, fetchA4(li, i0, kr.x, kr.y, aK, 16u), 16u, TILE_ROW4);
  putHB(0u, li, bK, fetchB4(li, j0, kr.x, kr.y, bK, 16u), 16u, TILE_ROW4);
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
    var h0 = vec4<f16>();
    var h1 = vec4<f16>();
    var h2 = vec4<f16>();
    var h3 = vec4<f16>();
    // TILE_K (16) k steps written out: see the note at the top of matmul.wgsl
    { // k = 0
      let r = cur + 0u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 1
      let r = cur + 1u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 2
      let r = cur + 2u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 3
      let r = cur + 3u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 4
      let r = cur + 4u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 5
      let r = cur + 5u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 6
      let r = cur + 6u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 7
      let r = cur + 7u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 8
      let r = cur + 8u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 9
      let r = cur + 9u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 10
      let r = cur + 10u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 11
      let r = cur + 11u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 12
      let r = cur + 12u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 13
      let r = cur + 13u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 14
      let r = cur + 14u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    { // k = 15
      let r = cur + 15u * TILE_ROW4;
      let av = hA[r + lid.y];
      let bv = hB[r + lid.x];
      h0 += av.x * bv;
      h1 += av.y * bv;
      h2 += av.z * bv;
      h3 += av.w * bv;
    }
    c0 += vec4<f32>(h0);
    c1 += vec4<f32>(h1);
    c2 += vec4<f32>(h2);
    c3 += vec4<f32>(h3);
    let nxt = TILED_BUF - cur;
    putHA(nxt, li, aK, na, 16u, TILE_ROW4);
    putHB(nxt, li, bK, nb, 16u, TILE_ROW4);
    workgroupBarrier();
    cur = nxt;
  }
  splitStore4(i0 + lid.y * 4u, j0 + lid.x * 4u, wid.z, c0, c1, c2, c3);
}
