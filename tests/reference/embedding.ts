// Plain f64 reference of the token embedding and its backward (tests only).

/** out (T, C) = scale · table[ids[t]], in f64. */
export function embeddingForwardRef(
  table: ArrayLike<number>,
  ids: ArrayLike<number>,
  C: number,
  scale = 1,
): Float64Array {
  const T = ids.length;
  const out = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) out[t * C + c] = scale * table[ids[t] * C + c];
  }
  return out;
}

/** The amount the backward adds to dtable (V, C): scale · Σ_{t: ids[t] = v} dout[t], in f64. */
export function embeddingBackwardRef(
  dout: ArrayLike<number>,
  ids: ArrayLike<number>,
  V: number,
  C: number,
  scale = 1,
): Float64Array {
  const d = new Float64Array(V * C);
  for (let t = 0; t < ids.length; t++) {
    for (let c = 0; c < C; c++) d[ids[t] * C + c] += scale * dout[t * C + c];
  }
  return d;
}
