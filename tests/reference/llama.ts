// Plain-TypeScript f64 reference Llama-family model (forward, backward, greedy decoding) to test the GPU graph.
import type { ModelConfig, RopeScaling } from "../../model/config.ts";

/** Weights by HF name; f32 or f64 arrays. */
export type RefWeights = Map<string, Float64Array | Float32Array>;

/** One packed row of tokens: labels are aligned with ids (label of token t = the id to predict after t). */
export interface RefBatch {
  ids: Int32Array; // (T)
  labels: Int32Array; // (T) −100 = ignored
  pos: Uint32Array; // (T) position within its sample
  seqStart: Uint32Array; // (T) index of the first token of its sample
  seqEnd: Uint32Array; // (T) one past the last token of its sample
}

/** Result of referenceForwardBackward. */
export interface RefResult {
  /** Σ over labelled tokens of −log p(label) (not scaled by lossScale). */
  lossSum: number;
  lossTokens: number;
  /** d(lossScale · lossSum)/dθ for every parameter (tied: lm_head folded into embed_tokens). */
  grads: Map<string, Float64Array>;
}

const f = Math.fround;

/**
 * RoPE inverse frequencies as transformers computes them (float32 tensors), Llama-3 scaling included.
 */
export function refInvFreq(D: number, theta: number, scaling: RopeScaling | null): Float64Array {
  const half = D / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(theta ** f((2 * i) / D)));
  if (!scaling) return inv;
  const { factor, low_freq_factor: lo, high_freq_factor: hi } = scaling;
  const old = scaling.original_max_position_embeddings;
  const lowWave = old / lo, highWave = old / hi;
  for (let i = 0; i < half; i++) {
    const wavelen = f((2 * Math.PI) / inv[i]);
    let v = wavelen > lowWave ? f(inv[i] / factor) : inv[i];
    const smooth = f((f(old / wavelen) - lo) / (hi - lo));
    const smoothed = f(f(f(f(1 - smooth) * v) / factor) + f(smooth * v));
    if (!(wavelen < highWave) && !(wavelen > lowWave)) v = smoothed;
    inv[i] = v;
  }
  return inv;
}

interface Dims {
  T: number;
  C: number;
  Hq: number;
  Hkv: number;
  D: number;
  I: number;
  V: number;
}

function dims(cfg: ModelConfig, T: number): Dims {
  return {
    T,
    C: cfg.hiddenSize,
    Hq: cfg.numHeads,
    Hkv: cfg.numKvHeads,
    D: cfg.headDim,
    I: cfg.intermediateSize,
    V: cfg.vocabSize,
  };
}

function to64(weights: RefWeights): Map<string, Float64Array> {
  const m = new Map<string, Float64Array>();
  for (const [k, v] of weights) m.set(k, v instanceof Float64Array ? v : Float64Array.from(v));
  return m;
}

function need(w: Map<string, Float64Array>, name: string): Float64Array {
  const v = w.get(name);
  if (!v) throw new Error(`reference llama: missing weight '${name}'`);
  return v;
}

/** y (T,N) = x (T,K) · wᵀ (N,K) + b. */
function linear(
  x: Float64Array,
  w: Float64Array,
  b: Float64Array | undefined,
  T: number,
  K: number,
  N: number,
) {
  const y = new Float64Array(T * N);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      let s = b ? b[n] : 0;
      const xo = t * K, wo = n * K;
      for (let k = 0; k < K; k++) s += x[xo + k] * w[wo + k];
      y[t * N + n] = s;
    }
  }
  return y;
}

/** dx (T,K) += dy·w; dw (N,K) += dyᵀ·x; db (N) += Σ dy. */
function linearBack(
  dy: Float64Array,
  x: Float64Array,
  w: Float64Array,
  T: number,
  K: number,
  N: number,
  dx: Float64Array,
  dw: Float64Array,
  db?: Float64Array,
) {
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      const g = dy[t * N + n];
      if (g === 0) continue;
      const xo = t * K, wo = n * K;
      for (let k = 0; k < K; k++) {
        dx[xo + k] += g * w[wo + k];
        dw[wo + k] += g * x[xo + k];
      }
      if (db) db[n] += g;
    }
  }
}

function rmsnorm(x: Float64Array, w: Float64Array, T: number, C: number, eps: number) {
  const y = new Float64Array(T * C), rstd = new Float64Array(T);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[t * C + c] ** 2;
    const r = 1 / Math.sqrt(ss / C + eps);
    rstd[t] = r;
    for (let c = 0; c < C; c++) y[t * C + c] = x[t * C + c] * r * w[c];
  }
  return { y, rstd };
}

/** dx (=) and dw (+=) of y = x·rstd·w. */
function rmsnormBack(
  dy: Float64Array,
  x: Float64Array,
  w: Float64Array,
  rstd: Float64Array,
  T: number,
  C: number,
  dw: Float64Array,
): Float64Array {
  const dx = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    const r = rstd[t];
    let dot = 0;
    for (let c = 0; c < C; c++) {
      const i = t * C + c;
      dw[c] += dy[i] * x[i] * r;
      dot += dy[i] * w[c] * x[i];
    }
    for (let c = 0; c < C; c++) {
      const i = t * C + c;
      dx[i] = r * w[c] * dy[i] - (x[i] * r * r * r * dot) / C;
    }
  }
  return dx;
}

function ropeTables(cfg: ModelConfig, pos: Uint32Array) {
  const half = cfg.headDim / 2;
  const inv = refInvFreq(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling);
  const cos = new Float64Array(pos.length * half), sin = new Float64Array(pos.length * half);
  for (let t = 0; t < pos.length; t++) {
    for (let i = 0; i < half; i++) {
      const a = f(inv[i] * pos[t]);
      cos[t * half + i] = f(Math.cos(a));
      sin[t * half + i] = f(Math.sin(a));
    }
  }
  return { cos, sin };
}

/** In-place rotate-half RoPE of x (T, H, D); `inverse` applies the transpose (for backward). */
function rope(
  x: Float64Array,
  H: number,
  D: number,
  T: number,
  tab: { cos: Float64Array; sin: Float64Array },
  inverse = false,
) {
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const o = (t * H + h) * D;
      for (let i = 0; i < half; i++) {
        const c = tab.cos[t * half + i],
          s = inverse ? -tab.sin[t * half + i] : tab.sin[t * half + i];
        const a = x[o + i], b = x[o + i + half];
        x[o + i] = a * c - b * s;
        x[o + i + half] = b * c + a * s;
      }
    }
  }
}

interface LayerCache {
  xIn: Float64Array;
  n1: Float64Array;
  rstd1: Float64Array;
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  p: Float64Array[]; // per (h, t): softmax over keys seqStart[t]..t
  o: Float64Array;
  xMid: Float64Array;
  n2: Float64Array;
  rstd2: Float64Array;
  gate: Float64Array;
  up: Float64Array;
  act: Float64Array;
}

function checkBatch(cfg: ModelConfig, b: RefBatch) {
  const T = b.ids.length;
  for (const [k, a] of Object.entries(b)) {
    if ((a as ArrayLike<number>).length !== T) throw new Error(`batch.${k} length != ${T}`);
  }
  for (let t = 0; t < T; t++) {
    if (b.ids[t] < 0 || b.ids[t] >= cfg.vocabSize) throw new Error(`id ${b.ids[t]} out of range`);
    const l = b.labels[t];
    if (l !== -100 && (l < 0 || l >= cfg.vocabSize)) throw new Error(`label ${l} out of range`);
    if (!(b.seqStart[t] <= t && t < b.seqEnd[t] && b.seqEnd[t] <= T)) {
      throw new Error(`token ${t}: bad seqStart/seqEnd ${b.seqStart[t]}/${b.seqEnd[t]}`);
    }
  }
}

function forward(cfg: ModelConfig, W: Map<string, Float64Array>, b: RefBatch) {
  const { T, C, Hq, Hkv, D, I } = dims(cfg, b.ids.length);
  const emb = need(W, "model.embed_tokens.weight");
  let x = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) x[t * C + c] = emb[b.ids[t] * C + c] * cfg.embeddingMultiplier;
  }
  const tab = ropeTables(cfg, b.pos);
  const group = Hq / Hkv;
  const caches: LayerCache[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const P = `model.layers.${l}.`;
    const g = (n: string) => need(W, P + n);
    const opt = (n: string) => W.get(P + n);
    const xIn = x;
    const { y: n1, rstd: rstd1 } = rmsnorm(xIn, g("input_layernorm.weight"), T, C, cfg.rmsNormEps);
    const q = linear(n1, g("self_attn.q_proj.weight"), opt("self_attn.q_proj.bias"), T, C, Hq * D);
    const k = linear(n1, g("self_attn.k_proj.weight"), opt("self_attn.k_proj.bias"), T, C, Hkv * D);
    const v = linear(n1, g("self_attn.v_proj.weight"), opt("self_attn.v_proj.bias"), T, C, Hkv * D);
    rope(q, Hq, D, T, tab);
    rope(k, Hkv, D, T, tab);
    const o = new Float64Array(T * Hq * D);
    const p: Float64Array[] = [];
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / group);
      for (let t = 0; t < T; t++) {
        const s0 = b.seqStart[t], n = t - s0 + 1;
        const pr = new Float64Array(n);
        let mx = -Infinity;
        for (let j = 0; j < n; j++) {
          let s = 0;
          const qo = (t * Hq + h) * D, ko = ((s0 + j) * Hkv + kh) * D;
          for (let d = 0; d < D; d++) s += q[qo + d] * k[ko + d];
          pr[j] = s * cfg.attentionScale;
          if (pr[j] > mx) mx = pr[j];
        }
        let z = 0;
        for (let j = 0; j < n; j++) z += pr[j] = Math.exp(pr[j] - mx);
        const oo = (t * Hq + h) * D;
        for (let j = 0; j < n; j++) {
          pr[j] /= z;
          const vo = ((s0 + j) * Hkv + kh) * D;
          for (let d = 0; d < D; d++) o[oo + d] += pr[j] * v[vo + d];
        }
        p[h * T + t] = pr;
      }
    }
    const attn = linear(
      o,
      g("self_attn.o_proj.weight"),
      opt("self_attn.o_proj.bias"),
      T,
      Hq * D,
      C,
    );
    const xMid = new Float64Array(T * C);
    for (let i = 0; i < T * C; i++) xMid[i] = xIn[i] + cfg.residualMultiplier * attn[i];
    const { y: n2, rstd: rstd2 } = rmsnorm(
      xMid,
      g("post_attention_layernorm.weight"),
      T,
      C,
      cfg.rmsNormEps,
    );
    const gate = linear(n2, g("mlp.gate_proj.weight"), undefined, T, C, I);
    const up = linear(n2, g("mlp.up_proj.weight"), undefined, T, C, I);
    const act = new Float64Array(T * I);
    for (let i = 0; i < T * I; i++) act[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
    const mlp = linear(act, g("mlp.down_proj.weight"), undefined, T, I, C);
    x = new Float64Array(T * C);
    for (let i = 0; i < T * C; i++) x[i] = xMid[i] + cfg.residualMultiplier * mlp[i];
    caches.push({ xIn, n1, rstd1, q, k, v, p, o, xMid, n2, rstd2, gate, up, act });
  }
  const { y: h, rstd: rstdF } = rmsnorm(x, need(W, "model.norm.weight"), T, C, cfg.rmsNormEps);
  return { caches, xLast: x, h, rstdF, tab };
}

function lmHead(cfg: ModelConfig, W: Map<string, Float64Array>): Float64Array {
  return need(W, cfg.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight");
}

/** Logits (rows, V) for the given hidden rows (rows, C). */
function logitsOf(cfg: ModelConfig, W: Map<string, Float64Array>, h: Float64Array, rows: number) {
  const y = linear(h, lmHead(cfg, W), undefined, rows, cfg.hiddenSize, cfg.vocabSize);
  for (let i = 0; i < y.length; i++) y[i] /= cfg.logitsScaling;
  return y;
}

/** Forward only: logits (T, V) in f64 for a packed row. */
export function referenceLogits(
  cfg: ModelConfig,
  weights: RefWeights,
  ids: Int32Array,
  pos: Uint32Array,
  seqStart: Uint32Array,
  seqEnd: Uint32Array,
): Float64Array {
  const W = to64(weights);
  const batch = { ids, labels: new Int32Array(ids.length).fill(-100), pos, seqStart, seqEnd };
  checkBatch(cfg, batch);
  const { h } = forward(cfg, W, batch);
  return logitsOf(cfg, W, h, ids.length);
}

/** Forward only: Σ over labelled tokens of −log p(label), and how many tokens are labelled. */
export function referenceLoss(
  cfg: ModelConfig,
  weights: RefWeights,
  batch: RefBatch,
): { lossSum: number; lossTokens: number } {
  checkBatch(cfg, batch);
  const W = to64(weights);
  const T = batch.ids.length, V = cfg.vocabSize;
  const { h } = forward(cfg, W, batch);
  const logits = logitsOf(cfg, W, h, T);
  let lossSum = 0, lossTokens = 0;
  for (let t = 0; t < T; t++) {
    const lab = batch.labels[t];
    if (lab === -100) continue;
    lossSum += logSumExp(logits.subarray(t * V, (t + 1) * V)) - logits[t * V + lab];
    lossTokens++;
  }
  return { lossSum, lossTokens };
}

function logSumExp(row: Float64Array): number {
  let mx = -Infinity;
  for (let v = 0; v < row.length; v++) if (row[v] > mx) mx = row[v];
  let z = 0;
  for (let v = 0; v < row.length; v++) z += Math.exp(row[v] - mx);
  return mx + Math.log(z);
}

/** Greedy decoding of `n` tokens after `promptIds` (one sequence, full recompute per token). */
export function greedyGenerate(
  cfg: ModelConfig,
  weights: RefWeights,
  promptIds: ArrayLike<number>,
  n: number,
): number[] {
  const W = to64(weights);
  const ids = Array.from(promptIds);
  const out: number[] = [];
  const C = cfg.hiddenSize;
  for (let s = 0; s < n; s++) {
    const T = ids.length;
    const batch: RefBatch = {
      ids: Int32Array.from(ids),
      labels: new Int32Array(T).fill(-100),
      pos: Uint32Array.from({ length: T }, (_, i) => i),
      seqStart: new Uint32Array(T),
      seqEnd: new Uint32Array(T).fill(T),
    };
    const { h } = forward(cfg, W, batch);
    const logits = logitsOf(cfg, W, h.subarray((T - 1) * C), 1);
    let best = 0;
    for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
    out.push(best);
    ids.push(best);
  }
  return out;
}

/**
 * Loss and exact gradients (f64) of lossScale · Σ cross-entropy over the labelled tokens of one packed
 * row, for every parameter.
 */
export function referenceForwardBackward(
  cfg: ModelConfig,
  weights: RefWeights,
  batch: RefBatch,
  opts: { lossScale?: number } = {},
): RefResult {
  checkBatch(cfg, batch);
  const W = to64(weights);
  const scale = opts.lossScale ?? 1;
  const { T, C, Hq, Hkv, D, I, V } = dims(cfg, batch.ids.length);
  const group = Hq / Hkv;
  const grads = new Map<string, Float64Array>();
  const G = (name: string) => {
    let gr = grads.get(name);
    if (!gr) {
      gr = new Float64Array(need(W, name).length);
      grads.set(name, gr);
    }
    return gr;
  };
  const { caches, xLast, h, rstdF, tab } = forward(cfg, W, batch);

  // Cross-entropy over the labelled tokens, dlogits = scale · (softmax − onehot).
  const logits = logitsOf(cfg, W, h, T);
  let lossSum = 0, lossTokens = 0;
  const dlogits = new Float64Array(T * V);
  for (let t = 0; t < T; t++) {
    const lab = batch.labels[t];
    if (lab === -100) continue;
    const row = logits.subarray(t * V, (t + 1) * V);
    const lse = logSumExp(row);
    lossSum += lse - row[lab];
    lossTokens++;
    for (let v = 0; v < V; v++) {
      dlogits[t * V + v] = scale * (Math.exp(row[v] - lse) - (v === lab ? 1 : 0)) /
        cfg.logitsScaling;
    }
  }
  const headName = cfg.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  const dh = new Float64Array(T * C);
  linearBack(dlogits, h, lmHead(cfg, W), T, C, V, dh, G(headName));
  let dx = rmsnormBack(
    dh,
    xLast,
    need(W, "model.norm.weight"),
    rstdF,
    T,
    C,
    G("model.norm.weight"),
  );

  for (let l = cfg.numLayers - 1; l >= 0; l--) {
    const P = `model.layers.${l}.`;
    const c = caches[l];
    const g = (n: string) => need(W, P + n);
    const rm = cfg.residualMultiplier;
    // MLP branch: x = xMid + rm · down(silu(gate) · up).
    const dmlp = dx.map((v) => v * rm);
    const dact = new Float64Array(T * I);
    linearBack(
      dmlp,
      c.act,
      g("mlp.down_proj.weight"),
      T,
      I,
      C,
      dact,
      G(P + "mlp.down_proj.weight"),
    );
    const dgate = new Float64Array(T * I), dup = new Float64Array(T * I);
    for (let i = 0; i < T * I; i++) {
      const gt = c.gate[i], sg = 1 / (1 + Math.exp(-gt));
      dup[i] = dact[i] * gt * sg;
      dgate[i] = dact[i] * c.up[i] * sg * (1 + gt * (1 - sg));
    }
    const dn2 = new Float64Array(T * C);
    linearBack(dgate, c.n2, g("mlp.gate_proj.weight"), T, C, I, dn2, G(P + "mlp.gate_proj.weight"));
    linearBack(dup, c.n2, g("mlp.up_proj.weight"), T, C, I, dn2, G(P + "mlp.up_proj.weight"));
    const dxMid = rmsnormBack(
      dn2,
      c.xMid,
      g("post_attention_layernorm.weight"),
      c.rstd2,
      T,
      C,
      G(P + "post_attention_layernorm.weight"),
    );
    for (let i = 0; i < T * C; i++) dxMid[i] += dx[i];

    // Attention branch: xMid = xIn + rm · o_proj(attn(rope(q), rope(k), v)).
    const dattn = dxMid.map((v) => v * rm);
    const dO = new Float64Array(T * Hq * D);
    linearBack(
      dattn,
      c.o,
      g("self_attn.o_proj.weight"),
      T,
      Hq * D,
      C,
      dO,
      G(P + "self_attn.o_proj.weight"),
      cfg.oBias ? G(P + "self_attn.o_proj.bias") : undefined,
    );
    const dq = new Float64Array(T * Hq * D);
    const dk = new Float64Array(T * Hkv * D), dv = new Float64Array(T * Hkv * D);
    for (let hh = 0; hh < Hq; hh++) {
      const kh = Math.floor(hh / group);
      for (let t = 0; t < T; t++) {
        const s0 = batch.seqStart[t], pr = c.p[hh * T + t], n = pr.length;
        const oo = (t * Hq + hh) * D;
        const dp = new Float64Array(n);
        let dot = 0;
        for (let j = 0; j < n; j++) {
          const vo = ((s0 + j) * Hkv + kh) * D;
          let s = 0;
          for (let d = 0; d < D; d++) {
            s += dO[oo + d] * c.v[vo + d];
            dv[vo + d] += pr[j] * dO[oo + d];
          }
          dp[j] = s;
          dot += pr[j] * s;
        }
        for (let j = 0; j < n; j++) {
          const ds = pr[j] * (dp[j] - dot) * cfg.attentionScale;
          const ko = ((s0 + j) * Hkv + kh) * D;
          for (let d = 0; d < D; d++) {
            dq[oo + d] += ds * c.k[ko + d];
            dk[ko + d] += ds * c.q[oo + d];
          }
        }
      }
    }
    rope(dq, Hq, D, T, tab, true);
    rope(dk, Hkv, D, T, tab, true);
    const dn1 = new Float64Array(T * C);
    const bias = (n: string) => (cfg.qkvBias ? G(P + n) : undefined);
    linearBack(
      dq,
      c.n1,
      g("self_attn.q_proj.weight"),
      T,
      C,
      Hq * D,
      dn1,
      G(P + "self_attn.q_proj.weight"),
      bias("self_attn.q_proj.bias"),
    );
    linearBack(
      dk,
      c.n1,
      g("self_attn.k_proj.weight"),
      T,
      C,
      Hkv * D,
      dn1,
      G(P + "self_attn.k_proj.weight"),
      bias("self_attn.k_proj.bias"),
    );
    linearBack(
      dv,
      c.n1,
      g("self_attn.v_proj.weight"),
      T,
      C,
      Hkv * D,
      dn1,
      G(P + "self_attn.v_proj.weight"),
      bias("self_attn.v_proj.bias"),
    );
    const dxIn = rmsnormBack(
      dn1,
      c.xIn,
      g("input_layernorm.weight"),
      c.rstd1,
      T,
      C,
      G(P + "input_layernorm.weight"),
    );
    for (let i = 0; i < T * C; i++) dxIn[i] += dxMid[i];
    dx = dxIn;
  }
  const dE = G("model.embed_tokens.weight");
  for (let t = 0; t < T; t++) {
    const id = batch.ids[t];
    for (let cc = 0; cc < C; cc++) dE[id * C + cc] += cfg.embeddingMultiplier * dx[t * C + cc];
  }
  // Every parameter gets an entry, zero when untouched.
  for (const name of W.keys()) G(name);
  if (cfg.tieWordEmbeddings) grads.delete("lm_head.weight");
  return { lossSum, lossTokens, grads };
}
