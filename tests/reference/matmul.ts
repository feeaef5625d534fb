// Plain f64 references for the matmul launchers (linear layer forward, dX, dW, bias grad).

/** Y = X·Wᵀ (+ bias): X (M,K), W (N,K), bias (N) → Y (M,N), in f64. */
export function matmulRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  bias?: ArrayLike<number>,
): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      y[m * N + n] = s;
    }
  }
  return y;
}

/** dX = dY·W: dY (M, lddy ≥ N), W (N,K) → dX (M,K), in f64. */
export function matmulBackwardInputRef(
  dy: ArrayLike<number>,
  w: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  lddy = N,
): Float64Array {
  const dx = new Float64Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dy[m * lddy + n] * w[n * K + k];
      dx[m * K + k] = s;
    }
  }
  return dx;
}

/** dW = dYᵀ·X: dY (M, lddy ≥ N), X (M,K) → dW (N,K), in f64. */
export function matmulBackwardWeightRef(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  lddy = N,
): Float64Array {
  const dw = new Float64Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let m = 0; m < M; m++) s += dy[m * lddy + n] * x[m * K + k];
      dw[n * K + k] = s;
    }
  }
  return dw;
}

/** db = Σ_m dY[m, :]: dY (M, lddy ≥ N) → db (N), in f64. */
export function biasBackwardRef(
  dy: ArrayLike<number>,
  M: number,
  N: number,
  lddy = N,
): Float64Array {
  const db = new Float64Array(N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) db[n] += dy[m * lddy + n];
  return db;
}

/**
 * The scalar L = Σ G ⊙ (X·Wᵀ + b) whose gradients are dX = G·W, dW = Gᵀ·X, db = Σ_m G, used
 * for central finite differences of the backward launchers.
 */
export function linearProbeLoss(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  bias: ArrayLike<number>,
  g: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
): number {
  const y = matmulRef(x, w, M, N, K, bias);
  let s = 0;
  for (let i = 0; i < M * N; i++) s += g[i] * y[i];
  return s;
}
