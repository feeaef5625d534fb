// Plain-TS f64 references for packed causal attention: explicit masked softmax per sample, and its backward.

/** Shape of a packed attention problem. */
export interface AttnShape {
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  scale: number;
}

/** seqStart/seqEnd (T) of samples of the given lengths packed in one row. */
export function packSamples(lengths: number[]): { seqStart: Uint32Array; seqEnd: Uint32Array } {
  const T = lengths.reduce((a, b) => a + b, 0);
  const seqStart = new Uint32Array(T), seqEnd = new Uint32Array(T);
  let s = 0;
  for (const n of lengths) {
    for (let i = s; i < s + n; i++) {
      seqStart[i] = s;
      seqEnd[i] = s + n;
    }
    s += n;
  }
  return { seqStart, seqEnd };
}

/** Softmax probabilities of query i, q head h over its keys seqStart[i]..i (f64), and the LSE. */
function probs(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  seqStart: ArrayLike<number>,
  sh: AttnShape,
  i: number,
  h: number,
): { p: Float64Array; lse: number; j0: number } {
  const { Hq, Hkv, D, scale } = sh;
  const kvh = Math.floor(h / (Hq / Hkv));
  const j0 = seqStart[i];
  const s = new Float64Array(i - j0 + 1);
  let m = -Infinity;
  for (let j = j0; j <= i; j++) {
    let dot = 0;
    for (let d = 0; d < D; d++) dot += q[(i * Hq + h) * D + d] * k[(j * Hkv + kvh) * D + d];
    s[j - j0] = dot * scale;
    m = Math.max(m, s[j - j0]);
  }
  let z = 0;
  for (let n = 0; n < s.length; n++) z += Math.exp(s[n] - m);
  const p = s.map((x) => Math.exp(x - m) / z);
  return { p, lse: m + Math.log(z), j0 };
}

/** o (T, Hq, D) and lse (Hq, T) in f64. */
export function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  seqStart: ArrayLike<number>,
  sh: AttnShape,
): { o: Float64Array; lse: Float64Array } {
  const { T, Hq, Hkv, D } = sh;
  const o = new Float64Array(T * Hq * D);
  const lse = new Float64Array(Hq * T);
  for (let h = 0; h < Hq; h++) {
    const kvh = Math.floor(h / (Hq / Hkv));
    for (let i = 0; i < T; i++) {
      const { p, lse: l, j0 } = probs(q, k, seqStart, sh, i, h);
      lse[h * T + i] = l;
      for (let j = j0; j <= i; j++) {
        for (let d = 0; d < D; d++) {
          o[(i * Hq + h) * D + d] += p[j - j0] * v[(j * Hkv + kvh) * D + d];
        }
      }
    }
  }
  return { o, lse };
}

/** Analytic backward in f64: dq, dk, dv for the upstream gradient dout (T, Hq, D). */
export function attentionBackwardRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dout: ArrayLike<number>,
  seqStart: ArrayLike<number>,
  sh: AttnShape,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { T, Hq, Hkv, D, scale } = sh;
  const dq = new Float64Array(T * Hq * D);
  const dk = new Float64Array(T * Hkv * D);
  const dv = new Float64Array(T * Hkv * D);
  for (let h = 0; h < Hq; h++) {
    const kvh = Math.floor(h / (Hq / Hkv));
    for (let i = 0; i < T; i++) {
      const { p, j0 } = probs(q, k, seqStart, sh, i, h);
      const qi = (i * Hq + h) * D;
      // dP_ij = dO_i · V_j; dS_ij = P_ij (dP_ij − Σ_j' P_ij' dP_ij')
      const dp = new Float64Array(p.length);
      let dot = 0;
      for (let j = j0; j <= i; j++) {
        let x = 0;
        for (let d = 0; d < D; d++) x += dout[qi + d] * v[(j * Hkv + kvh) * D + d];
        dp[j - j0] = x;
        dot += p[j - j0] * x;
      }
      for (let j = j0; j <= i; j++) {
        const kj = (j * Hkv + kvh) * D;
        const pj = p[j - j0];
        const ds = pj * (dp[j - j0] - dot) * scale;
        for (let d = 0; d < D; d++) {
          dv[kj + d] += pj * dout[qi + d];
          dq[qi + d] += ds * k[kj + d];
          dk[kj + d] += ds * q[qi + d];
        }
      }
    }
  }
  return { dq, dk, dv };
}
