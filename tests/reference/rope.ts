// Plain-TS f64 references for RoPE: the Llama-3 frequency formula and the rotate-half rotation.

/** Llama-3 `rope_scaling` fields (as in config.json). */
export interface Llama3ScalingRef {
  factor: number;
  low_freq_factor: number;
  high_freq_factor: number;
  original_max_position_embeddings: number;
}

/** Inverse frequencies in f64 straight from the formula (no float32 rounding). */
export function invFreqRef(
  headDim: number,
  theta: number,
  scaling: Llama3ScalingRef | null,
): Float64Array {
  const half = headDim / 2;
  const out = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    const f = Math.pow(theta, -(2 * i) / headDim);
    if (!scaling) {
      out[i] = f;
      continue;
    }
    const old = scaling.original_max_position_embeddings;
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < old / scaling.high_freq_factor) out[i] = f;
    else if (wavelen > old / scaling.low_freq_factor) out[i] = f / scaling.factor;
    else {
      const s = (old / wavelen - scaling.low_freq_factor) /
        (scaling.high_freq_factor - scaling.low_freq_factor);
      out[i] = (1 - s) * (f / scaling.factor) + s * f;
    }
  }
  return out;
}

/**
 * Rotate-half RoPE of x (T, H, D) in f64 at angles fround(invFreq[i]·pos[t]) (the float32 angle
 * transformers uses); `transpose` applies Rᵀ (the backward).
 */
export function ropeRef(
  x: ArrayLike<number>,
  pos: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  T: number,
  H: number,
  D: number,
  transpose = false,
): Float64Array {
  const half = D / 2;
  const out = new Float64Array(T * H * D);
  const sgn = transpose ? -1 : 1;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const base = (t * H + h) * D;
      for (let i = 0; i < half; i++) {
        const ang = Math.fround(invFreq[i] * pos[t]);
        const c = Math.cos(ang), s = sgn * Math.sin(ang);
        const a = x[base + i], b = x[base + i + half];
        out[base + i] = a * c - b * s;
        out[base + i + half] = b * c + a * s;
      }
    }
  }
  return out;
}
