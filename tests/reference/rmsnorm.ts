// Plain f64 reference of RMSNorm (Llama: y = w · x / sqrt(mean(x²) + eps)) and its backward (tests only).

/** y (T, C) and rstd (T) of RMSNorm, in f64. */
export function rmsnormForwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  T: number,
  C: number,
  eps: number,
): { y: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(T * C);
  const rstd = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[t * C + c] ** 2;
    const r = 1 / Math.sqrt(ss / C + eps);
    rstd[t] = r;
    for (let c = 0; c < C; c++) y[t * C + c] = x[t * C + c] * r * w[c];
  }
  return { y, rstd };
}

/**
 * dx (T, C) and dw (C) of RMSNorm for upstream gradient dy, in f64:
 * dx = r·dy·w − r³/C · x · Σ_c dy·w·x, dw = Σ_t dy · x · r.
 */
export function rmsnormBackwardRef(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  T: number,
  C: number,
  eps: number,
): { dx: Float64Array; dw: Float64Array } {
  const { rstd } = rmsnormForwardRef(x, w, T, C, eps);
  const dx = new Float64Array(T * C);
  const dw = new Float64Array(C);
  for (let t = 0; t < T; t++) {
    const r = rstd[t];
    let dot = 0;
    for (let c = 0; c < C; c++) dot += dy[t * C + c] * w[c] * x[t * C + c];
    for (let c = 0; c < C; c++) {
      const i = t * C + c;
      dx[i] = r * dy[i] * w[c] - (r ** 3 / C) * x[i] * dot;
      dw[c] += dy[i] * x[i] * r;
    }
  }
  return { dx, dw };
}
