// Uniform parameters of every attention entry point (attention.wgsl, attention_gpu.wgsl, attention_band.wgsl).

struct Params {
  t: u32, // tokens in the packed row
  hq: u32, // query heads
  hkv: u32, // key/value heads
  group: u32, // hq / hkv
  scale: f32, // softmax scale (1/sqrt(D) or attention_multiplier)
  d: u32, // head dim D, <= DM (attention_gpu: a multiple of 4)
  parts: u32, // attention_gpu dK/dV: the q heads of a group split over this many workgroups (0, 1: unsplit)
  dv_off: u32, // attention_gpu dK/dV reduce: where the dV partials start in in_parts (elements)
  ld_q: u32, // elements between tokens of Q and dQ
  ld_kv: u32, // elements between tokens of K, V, dK and dV
  q_off: u32, // element offsets of token 0 of Q (dQ), K (dK), V (dV)
  k_off: u32,
  v_off: u32,
  q_base: u32, // row attention: first query (forward, dQ) of the dispatch
  q_end: u32, // row attention: one past its last query (forward, dQ); T unless chunked
  slots: u32, // attention_band: key tiles per query tile in the score band
  h0: u32, // attention_band: first q head of the dispatch's head block (the band holds its heads)
  kchunk: u32, // attention_band: key tiles per P·V / dQ workgroup (0: all; else partial sums)
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
