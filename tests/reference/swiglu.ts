// Plain f64 reference of the SwiGLU activation out = silu(gate) · up and its backward (tests only).

function sigmoid(g: number): number {
  return 1 / (1 + Math.exp(-g));
}

/** out = gate · sigmoid(gate) · up, in f64. */
export function swigluForwardRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const out = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
  return out;
}

/** dgate = dout · up · s·(1 + g·(1 − s)), dup = dout · g·s (s = sigmoid(g)), in f64. */
export function swigluBackwardRef(
  dout: ArrayLike<number>,
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
): { dgate: Float64Array; dup: Float64Array } {
  const n = gate.length;
  const dgate = new Float64Array(n);
  const dup = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const g = gate[i], s = sigmoid(g);
    dgate[i] = dout[i] * up[i] * s * (1 + g * (1 - s));
    dup[i] = dout[i] * g * s;
  }
  return { dgate, dup };
}
