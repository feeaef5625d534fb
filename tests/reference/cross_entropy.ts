// Plain f64 reference for the fused cross-entropy: loss, per-token loss, dh and dw.

/** Result of {@link crossEntropyRef}. */
export interface CrossEntropyRef {
  loss: number; // Σ over non-ignored tokens of −log softmax(z)[label]
  tokenLoss: Float64Array; // (T), 0 where ignored
  dh: Float64Array; // (T, C) of invTokens · loss
  dw: Float64Array; // (V, C) of invTokens · loss
}

/**
 * z = scale · h·wᵀ for h (T,C), w (V,C); labels (T) with −100 = ignored. Gradients are those of
 * invTokens · loss, i.e. dz = invTokens · (softmax − onehot) on non-ignored rows, in f64.
 */
export function crossEntropyRef(
  h: ArrayLike<number>,
  w: ArrayLike<number>,
  labels: ArrayLike<number>,
  T: number,
  C: number,
  V: number,
  scale: number,
  invTokens: number,
): CrossEntropyRef {
  const tokenLoss = new Float64Array(T);
  const dh = new Float64Array(T * C);
  const dw = new Float64Array(V * C);
  let loss = 0;
  const z = new Float64Array(V);
  for (let t = 0; t < T; t++) {
    const lab = labels[t];
    if (lab === -100) continue;
    let m = -Infinity;
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += h[t * C + c] * w[v * C + c];
      z[v] = scale * s;
      m = Math.max(m, z[v]);
    }
    let se = 0;
    for (let v = 0; v < V; v++) se += Math.exp(z[v] - m);
    const lse = m + Math.log(se);
    tokenLoss[t] = lse - z[lab];
    loss += tokenLoss[t];
    for (let v = 0; v < V; v++) {
      const dz = invTokens * (Math.exp(z[v] - lse) - (v === lab ? 1 : 0)) * scale;
      for (let c = 0; c < C; c++) {
        dh[t * C + c] += dz * w[v * C + c];
        dw[v * C + c] += dz * h[t * C + c];
      }
    }
  }
  return { loss, tokenLoss, dh, dw };
}

/** The summed loss alone (for finite differences), in f64. */
export function crossEntropyLossRef(
  h: ArrayLike<number>,
  w: ArrayLike<number>,
  labels: ArrayLike<number>,
  T: number,
  C: number,
  V: number,
  scale: number,
): number {
  let loss = 0;
  for (let t = 0; t < T; t++) {
    const lab = labels[t];
    if (lab === -100) continue;
    const z = new Float64Array(V);
    let m = -Infinity;
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += h[t * C + c] * w[v * C + c];
      z[v] = scale * s;
      m = Math.max(m, z[v]);
    }
    let se = 0;
    for (let v = 0; v < V; v++) se += Math.exp(z[v] - m);
    loss += m + Math.log(se) - z[lab];
  }
  return loss;
}
