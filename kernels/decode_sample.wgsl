// Next-token choice on the GPU for decoding: greedy argmax or temperature sampling by inverse CDF.
//
// step = [pos (u32), u (f32 in [0, 1)), inv_temp (f32), 0]: inv_temp <= 0 picks the argmax (the
// first index of the largest logit), otherwise a token is drawn from softmax(logit_scale ·
// inv_temp · logits) with the uniform draw u. The token goes to ids[0] (the next step's input)
// and to ring[pos + 1] (the generated sequence by position). One workgroup, fixed order.

const WG: u32 = 256u;

struct Params {
  v: u32, // vocabulary size
  ring_len: u32, // entries of ring
  logit_scale: f32, // 1 / logits_scaling (Granite), else 1
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> ids: array<u32>; // [next token]
@group(0) @binding(2) var<storage, read_write> ring: array<u32>; // (ring_len) token at each position
@group(0) @binding(3) var<storage, read> logits: array<f32>; // (V)
@group(0) @binding(4) var<storage, read> step: array<u32>; // [pos, u, inv_temp, 0]

var<workgroup> rv: array<f32, WG>;
var<workgroup> ri: array<u32, WG>;
var<workgroup> winv: f32;
var<workgroup> wu: f32;
var<workgroup> wtok: u32;

// (value, index) of the first largest logit; NaN logits never win.
fn argmax(li: u32) -> u32 {
  var best = -3.4e38;
  var idx = 0xffffffffu;
  for (var i = li; i < p.v; i += WG) {
    let x = logits[i];
    if (x > best) {
      best = x;
      idx = i;
    }
  }
  rv[li] = best;
  ri[li] = idx;
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (li < s) {
      let bv = rv[li + s];
      let bi = ri[li + s];
      if (bv > rv[li] || (bv == rv[li] && bi < ri[li])) {
        rv[li] = bv;
        ri[li] = bi;
      }
    }
  }
  workgroupBarrier();
  return select(ri[0], 0u, ri[0] == 0xffffffffu);
}

// Inverse-CDF draw from softmax(s · logits): thread chunks of contiguous ids, then thread 0
// walks the chunk sums and the chosen chunk in id order.
fn sample(li: u32, s: f32, u: f32) -> u32 {
  let chunk = (p.v + WG - 1u) / WG;
  let lo = min(li * chunk, p.v);
  let hi = min(lo + chunk, p.v);
  var m = -3.4e38;
  for (var i = lo; i < hi; i++) {
    m = max(m, logits[i] * s);
  }
  rv[li] = m;
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    workgroupBarrier();
    if (li < st) {
      rv[li] = max(rv[li], rv[li + st]);
    }
  }
  workgroupBarrier();
  let mx = rv[0];
  workgroupBarrier();
  var z = 0.0;
  for (var i = lo; i < hi; i++) {
    z += exp(logits[i] * s - mx);
  }
  rv[li] = z;
  workgroupBarrier();
  if (li == 0u) {
    var total = 0.0;
    for (var t = 0u; t < WG; t++) {
      total += rv[t];
    }
    let goal = u * total;
    var cum = 0.0;
    var tok = 0u;
    var found = false;
    var last = 0u; // last id with a non-zero probability (rounding fallback)
    for (var t = 0u; t < WG && !found; t++) {
      let t_lo = min(t * chunk, p.v);
      let t_hi = min(t_lo + chunk, p.v);
      if (rv[t] > 0.0) {
        if (cum + rv[t] > goal) {
          var acc = cum;
          for (var i = t_lo; i < t_hi; i++) {
            let e = exp(logits[i] * s - mx);
            if (e > 0.0) {
              last = i;
            }
            acc += e;
            if (acc > goal) {
              tok = i;
              found = true;
              break;
            }
          }
        } else {
          for (var i = t_hi; i > t_lo; i--) {
            if (exp(logits[i - 1u] * s - mx) > 0.0) {
              last = i - 1u;
              break;
            }
          }
        }
        cum += rv[t];
      }
    }
    wtok = select(last, tok, found);
  }
  workgroupBarrier();
  return wtok;
}

@compute @workgroup_size(WG)
fn sample_token(@builtin(local_invocation_id) li_v: vec3<u32>) {
  let li = li_v.x; // not local_invocation_index: slow on lavapipe (kernels/README)
  if (li == 0u) {
    wu = bitcast<f32>(step[1]);
    winv = bitcast<f32>(step[2]);
  }
  let u = workgroupUniformLoad(&wu);
  let inv_temp = workgroupUniformLoad(&winv);
  var tok: u32;
  if (inv_temp <= 0.0) {
    tok = argmax(li);
  } else {
    tok = sample(li, p.logit_scale * inv_temp, u);
  }
  if (li == 0u) {
    ids[0] = tok;
    let at = step[0] + 1u;
    if (at < p.ring_len) {
      ring[at] = tok;
    }
  }
}
