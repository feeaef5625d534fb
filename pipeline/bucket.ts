// Bucket stage (multipack): per optimizer step, the micro-batches of every rank, packed to a token capacity.
import { UserError } from "./errors.ts";

/** Inputs of {@link planBuckets}. */
export interface BucketOptions {
  /** (n) tokens per sample. */
  lengths: ArrayLike<number>;
  /** Effective batch size B: samples per optimizer step (on average; see the algorithm). */
  batchSize: number;
  /** Number of data-parallel ranks N. */
  ranks: number;
  /** Token capacity of one micro-batch on one rank. */
  capacity: number;
  seed: number;
  epoch: number;
  /**
   * Padding-aware mode: a micro-batch costs (longest sample × samples), as for attention over a
   * padded (batch, seq) tensor; otherwise it costs the sum of its lengths (packed sequences).
   */
  padToLongest?: boolean;
  /**
   * How far (fraction of the step's target) a step may stray from B to keep its micro-batches
   * full; past it the step takes exactly its target with partly filled micro-batches. Default 0.1.
   */
  batchTolerance?: number;
}

/** Figures of a plan. */
export interface BucketSummary {
  /** Samples given. */
  samples: number;
  /** Samples placed (all but the over-capacity ones), each exactly once. */
  planned: number;
  /** Samples longer than the capacity: not placed, reported here. */
  overCapacity: number;
  /** Up to 20 of their indices. */
  overCapacityIndices: number[];
  batchSize: number;
  ranks: number;
  capacity: number;
  seed: number;
  epoch: number;
  padToLongest: boolean;
  steps: number;
  /** Micro-batches in all (every rank, every step), empty ones included. */
  microBatches: number;
  /** Gradient-accumulation micro-batches per rank per step. */
  microBatchesPerStep: { min: number; mean: number; max: number };
  /** Samples per optimizer step around B, over all steps but the last (all when only one). */
  samplesPerStep: { min: number; mean: number; max: number; std: number };
  /** Samples in the last step (what is left of the epoch; may be far below B). */
  lastStepSamples: number;
  /** Tokens of the planned samples. */
  realTokens: number;
  /** Tokens the micro-batches cost (= realTokens without padding; longest × count with it). */
  costTokens: number;
  /** realTokens / (capacity × microBatches). */
  efficiency: number;
  /** realTokens / costTokens (1 without padding). */
  paddingEfficiency: number;
  /** Mean over steps of (most loaded rank / mean rank load); 1 is perfectly balanced. */
  rankImbalance: number;
}

/**
 * A plan, stored flat for big data: the micro-batch of step s, rank r, number m (0 ≤ m < M_s) is
 * order[mbStart[b] .. mbStart[b+1]) with b = stepStart[s] + r·M_s + m and M_s =
 * microBatchesPerRank[s]. Micro-batches may be empty (a rank with nothing left in a small step).
 */
export interface BucketPlan {
  /** Sample indices, micro-batch after micro-batch. */
  order: Uint32Array;
  /** (microBatches + 1) start of each micro-batch in `order`. */
  mbStart: Uint32Array;
  /** (steps + 1) first micro-batch of each step. */
  stepStart: Uint32Array;
  /** (steps) micro-batches per rank in each step. */
  microBatchesPerRank: Uint32Array;
  summary: BucketSummary;
}

/** Deterministic PRNG for (seed, epoch): mulberry32 over a mixed 32-bit seed. */
export function epochRng(seed: number, epoch: number): () => number {
  let s = (Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) ^
    Math.imul((epoch >>> 0) + 0x632be5ab, 0xc2b2ae35)) >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher–Yates shuffle of `a` in place with the (seed, epoch) PRNG. */
export function shuffleInPlace(a: Uint32Array, seed: number, epoch: number): Uint32Array {
  const r = epochRng(seed, epoch);
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return a;
}

/**
 * First-fit bins over a segment tree: `leftmost(x)` finds the first bin whose free value is ≥ x in
 * O(log K). Free value = remaining tokens (packed) or remaining sample slots (padding mode).
 */
class BinTree {
  size = 1;
  tree: Int32Array;
  constructor(bins: number) {
    while (this.size < bins) this.size *= 2;
    this.tree = new Int32Array(2 * this.size).fill(-1);
  }
  reset(bins: number, value: number): void {
    const t = this.tree;
    t.fill(-1);
    for (let i = 0; i < bins; i++) t[this.size + i] = value;
    for (let i = this.size - 1; i >= 1; i--) t[i] = Math.max(t[2 * i], t[2 * i + 1]);
  }
  set(bin: number, value: number): void {
    const t = this.tree;
    let i = this.size + bin;
    t[i] = value;
    for (i >>= 1; i >= 1; i >>= 1) {
      const a = t[2 * i], b = t[2 * i + 1], m = a > b ? a : b;
      if (t[i] === m) break; // ancestors unchanged
      t[i] = m;
    }
  }
  get(bin: number): number {
    return this.tree[this.size + bin];
  }
  /** Leftmost bin with free value ≥ x, or -1. */
  leftmost(x: number): number {
    const t = this.tree;
    if (t[1] < x) return -1;
    let i = 1;
    while (i < this.size) i = t[2 * i] >= x ? 2 * i : 2 * i + 1;
    return i - this.size;
  }
}

/**
 * Packs runs of the shuffled sequence into K bins, first-fit decreasing. `prepare(from, w)` sorts a
 * window once (counting sort on the length); `pack(r, ...)` then packs its first r items (the
 * sorted window filtered by offset), so the searches of a step sort only once.
 */
class Packer {
  private tree = new BinTree(1);
  private sortedLen = new Uint32Array(0);
  private sortedOff = new Uint32Array(0);
  private counts: Uint32Array;
  private from = -1;
  private w = 0;
  /** Bin of each item of the last recorded pack (by offset in the run), per-bin width/count/load. */
  binOf = new Int32Array(0);
  width = new Float64Array(0);
  count = new Uint32Array(0);
  load = new Float64Array(0);

  constructor(private lens: Uint32Array, private capacity: number, private pad: boolean) {
    this.counts = new Uint32Array(capacity + 2);
  }

  /** Make sure items [from, from + w) are sorted by length, descending (ties: earlier first). */
  prepare(from: number, w: number): void {
    if (from === this.from && w <= this.w) return;
    if (this.sortedLen.length < w) {
      const size = Math.max(w, 2 * this.sortedLen.length);
      this.sortedLen = new Uint32Array(size);
      this.sortedOff = new Uint32Array(size);
    }
    const lens = this.lens, C = this.capacity;
    if (C <= 4 * w + 8192) {
      // Counting sort: bucket c holds length C − c, so ascending buckets = descending lengths.
      const counts = this.counts;
      counts.fill(0);
      for (let i = 0; i < w; i++) counts[C - lens[from + i] + 1]++;
      for (let c = 0; c <= C; c++) counts[c + 1] += counts[c];
      for (let i = 0; i < w; i++) {
        const l = lens[from + i];
        const k = counts[C - l]++;
        this.sortedLen[k] = l;
        this.sortedOff[k] = i;
      }
    } else {
      // Native sort of keys (C − length) · 2^21 + offset: descending length, then offset.
      if (w >= 2097152) throw new UserError(`bucket: a step of ${w} samples is too large`);
      const keys = new Float64Array(w);
      for (let i = 0; i < w; i++) keys[i] = (C - lens[from + i]) * 2097152 + i;
      keys.sort();
      for (let k = 0; k < w; k++) {
        const off = keys[k] % 2097152;
        this.sortedOff[k] = off;
        this.sortedLen[k] = lens[from + off];
      }
    }
    this.from = from;
    this.w = w;
  }

  /**
   * Items of the prepared window's first r that first-fit decreasing cannot place in `bins` bins
   * (it carries on past a failure, so the count guides the search); 0 = they all fit.
   */
  misses(r: number, bins: number): number {
    if (r > this.w) throw new Error("bucket: pack beyond the prepared window");
    if (r <= bins) return 0; // one item per bin always fits (all ≤ capacity)
    const C = this.capacity, w = this.w, sl = this.sortedLen, so = this.sortedOff;
    let miss = 0;
    if (this.pad) {
      let b = -1, slots = 0;
      for (let k = 0; k < w; k++) {
        if (so[k] >= r) continue;
        if (slots === 0) {
          if (b + 1 === bins) {
            miss++;
            continue;
          }
          b++;
          slots = Math.floor(C / Math.max(sl[k], 1));
        }
        slots--;
      }
      return miss;
    }
    if (this.tree.size < bins) this.tree = new BinTree(bins);
    const tree = this.tree, t = tree.tree, size = tree.size;
    tree.reset(bins, C);
    for (let k = 0; k < w; k++) {
      if (so[k] >= r) continue;
      const len = sl[k];
      if (t[1] < len) {
        miss++;
        continue;
      }
      let i = 1;
      while (i < size) i = t[2 * i] >= len ? 2 * i : 2 * i + 1;
      t[i] -= len;
      for (i >>= 1; i >= 1; i >>= 1) {
        const a = t[2 * i], b = t[2 * i + 1], m = a > b ? a : b;
        if (t[i] === m) break; // ancestors unchanged
        t[i] = m;
      }
    }
    return miss;
  }

  /**
   * First-fit decreasing of the prepared window's first r items into `bins` bins; returns whether
   * all fit. With `record`, fills binOf/width/count/load for those bins.
   */
  pack(r: number, bins: number, record = false, balanced = false): boolean {
    if (r > this.w) throw new Error("bucket: pack beyond the prepared window");
    if (r === 0) {
      if (record) this.clearRecord(bins);
      return true;
    }
    if (r <= bins && !record) return true; // one item per bin always fits (all ≤ capacity)
    const C = this.capacity, w = this.w, sl = this.sortedLen, so = this.sortedOff;
    if (record) this.clearRecord(bins);
    if (this.pad && balanced) {
      // Balanced (under-filled steps): deal the sorted items round-robin, so bins get equal counts
      // of similar lengths; a bin's first item is its longest.
      for (let k = 0, j = 0; k < w; k++) {
        const off = so[k];
        if (off >= r) continue;
        const b = j++ % bins;
        if (this.count[b] === 0) this.width[b] = sl[k];
        if ((this.count[b] + 1) * Math.max(this.width[b], 1) > C) {
          this.clearRecord(bins);
          return false;
        }
        this.binOf[off] = b;
        this.count[b]++;
      }
      for (let i = 0; i < bins; i++) this.load[i] = this.width[i] * this.count[i];
      return true;
    }
    if (this.pad) {
      // Padded cost: a bin's first (longest) item sets its width and its C / width slots. In
      // decreasing order first-fit only ever finds the newest bin open, so it is next-fit.
      let b = -1, slots = 0;
      for (let k = 0; k < w; k++) {
        const off = so[k];
        if (off >= r) continue;
        const len = sl[k];
        if (slots === 0) {
          if (++b === bins) return false;
          slots = Math.floor(C / Math.max(len, 1));
          if (record) this.width[b] = len;
        }
        slots--;
        if (record) {
          this.binOf[off] = b;
          this.count[b]++;
        }
      }
      if (record) { for (let i = 0; i < bins; i++) this.load[i] = this.width[i] * this.count[i]; }
      return true;
    }
    if (this.tree.size < bins) this.tree = new BinTree(bins);
    const tree = this.tree;
    tree.reset(bins, C);
    for (let k = 0; k < w; k++) {
      const off = so[k];
      if (off >= r) continue;
      const len = sl[k];
      // First fit; balanced (worst fit = LPT over bins): the emptiest bin.
      const b = balanced
        ? (tree.tree[1] >= len ? tree.leftmost(tree.tree[1]) : -1)
        : tree.leftmost(len);
      if (b < 0) return false;
      tree.set(b, tree.get(b) - len);
      if (record) {
        this.binOf[off] = b;
        this.count[b]++;
        this.load[b] += len;
      }
    }
    return true;
  }

  private clearRecord(bins: number): void {
    if (this.binOf.length < this.w) {
      this.binOf = new Int32Array(Math.max(this.w, 2 * this.binOf.length));
    }
    if (this.width.length < bins) {
      this.width = new Float64Array(bins);
      this.count = new Uint32Array(bins);
      this.load = new Float64Array(bins);
    }
    this.width.fill(0, 0, bins);
    this.count.fill(0, 0, bins);
    this.load.fill(0, 0, bins);
  }
}

/**
 * Plan one epoch. The algorithm, in the spirit of MultipackV2 (instructlab's multipack sampler):
 *
 * 1. Samples longer than the capacity are set aside and reported; the rest are shuffled with a
 *    PRNG seeded by (seed, epoch).
 * 2. Steps take consecutive runs of the shuffled order. For step s the target is
 *    t = (s+1)·B − (samples already planned), so the running mean stays at B (error diffusion).
 *    A run packs into M·N micro-batches (M per rank). `longestFit(M)` = the longest run from the
 *    current position that first-fit-decreasing packs into M·N bins of the capacity, found by
 *    binary search (its upper bound comes from the token prefix sums). M_hi is the smallest M whose
 *    longest fit reaches t; the step takes whichever of longestFit(M_hi − 1) and
 *    longestFit(M_hi) is closer to t, so its micro-batches are full, provided it is within
 *    `batchTolerance`·t of t. Otherwise (B small next to one round of N micro-batches) the step
 *    takes exactly t samples in M_hi rounds, partly filled. The last step takes what is left, at
 *    the smallest M that fits it. Partly filled steps are packed balanced (worst-fit decreasing,
 *    i.e. LPT over the micro-batches; round-robin of the sorted lengths in padding mode), falling
 *    back to first-fit decreasing when that does not fit.
 * 3. The step's M·N bins go to ranks by longest-processing-time: heaviest bin first, each to the
 *    least loaded rank that has fewer than M bins, so every rank runs M micro-batches.
 *
 * In padding mode a bin costs longest × count; packing runs in decreasing length, so a bin's first
 * sample is its longest and samples of similar length share micro-batches.
 */
export function planBuckets(opts: BucketOptions): BucketPlan {
  const { batchSize: B, ranks: N, capacity: C } = opts;
  const pad = opts.padToLongest ?? false;
  const tol = opts.batchTolerance ?? 0.1;
  if (!(tol >= 0)) throw new UserError(`batch tolerance must be ≥ 0, got ${tol}`);
  for (const [k, v] of [["batch_size", B], ["ranks", N], ["capacity", C]] as const) {
    if (!Number.isInteger(v) || v < 1) {
      throw new UserError(`${k} must be a positive integer, got ${v}`);
    }
  }
  const total = opts.lengths.length;
  const src = opts.lengths;
  const fits = new Uint32Array(total);
  const over: number[] = [];
  let n = 0;
  for (let i = 0; i < total; i++) {
    const l = src[i];
    if (!(l >= 0 && l < 4294967296) || l !== Math.floor(l)) {
      throw new UserError(`sample ${i} has invalid length ${l}`);
    }
    if (l > C) over.push(i);
    else fits[n++] = i;
  }
  const perm = shuffleInPlace(fits.subarray(0, n), opts.seed, opts.epoch);
  const lens = new Uint32Array(n);
  const cum = new Float64Array(n + 1);
  for (let j = 0; j < n; j++) {
    lens[j] = opts.lengths[perm[j]];
    cum[j + 1] = cum[j] + lens[j];
  }
  const packer = new Packer(lens, C, pad);

  /** Largest j − pos with cum[j] − cum[pos] ≤ tokens (runs whose token sum fits). */
  const tokenBound = (pos: number, tokens: number): number => {
    const limit = cum[pos] + tokens;
    let a = pos, b = n;
    while (a < b) {
      const m = (a + b + 1) >> 1;
      if (cum[m] <= limit) a = m;
      else b = m - 1;
    }
    return a - pos;
  };

  /**
   * Longest r such that items [pos, pos + r) pack into `bins` bins. The token sum bounds r from
   * above (the window that is sorted once). FFD usually fits within a few items of it: each failed
   * probe steps down by the number of items it could not place, then a bisection closes the gap.
   */
  const longestFit = (pos: number, bins: number): number => {
    const hi = tokenBound(pos, bins * C);
    packer.prepare(pos, hi); // no-op when the step's window already covers it
    let miss = packer.misses(hi, bins);
    if (miss === 0) return hi;
    let lo = Math.min(bins, hi); // one item per bin always fits
    let bad = hi;
    for (let guess = hi - miss; guess > lo; guess -= Math.max(1, miss)) {
      miss = packer.misses(guess, bins);
      if (miss === 0) {
        lo = guess;
        break;
      }
      bad = guess;
    }
    while (bad - lo > 1) {
      const m = (lo + bad) >> 1;
      if (packer.misses(m, bins) === 0) lo = m;
      else bad = m;
    }
    return lo;
  };

  const order = new Uint32Array(n);
  const mbStart: number[] = [0];
  const stepStart: number[] = [0];
  const mPerStep: number[] = [];
  const stepSamples: number[] = [];
  let costTokens = 0, imbalanceSum = 0;
  let pos = 0, written = 0;
  while (pos < n) {
    const s = stepStart.length - 1;
    const rest = n - pos;
    const t = Math.max(1, (s + 1) * B - pos);
    let M: number, take: number, balanced = false;
    if (rest <= t) {
      // Last step: everything left, at the smallest M that fits it.
      take = rest;
      M = Math.max(1, Math.ceil((cum[n] - cum[pos]) / (N * C)));
      packer.prepare(pos, take);
      while (packer.misses(take, M * N) > 0) M++;
      balanced = true;
    } else {
      M = Math.max(1, Math.ceil((cum[pos + t] - cum[pos]) / (N * C)));
      packer.prepare(pos, tokenBound(pos, (M + 1) * N * C)); // one sort covers M and M ± 1
      let fitHi = longestFit(pos, M * N);
      while (fitHi < t) fitHi = longestFit(pos, ++M * N);
      const slack = tol * t;
      const hiOk = fitHi - t <= slack;
      // longestFit(M − 1) ≤ its token bound: skip it when even that bound cannot win.
      const loBound = M > 1 ? tokenBound(pos, (M - 1) * N * C) : 0;
      const tryLo = M > 1 && t - loBound <= slack && (!hiOk || t - loBound < fitHi - t);
      const fitLo = tryLo ? longestFit(pos, (M - 1) * N) : 0;
      const loOk = tryLo && t - fitLo <= slack;
      if (loOk && (!hiOk || t - fitLo < fitHi - t)) {
        M--;
        take = fitLo;
      } else if (hiOk) take = fitHi;
      else {
        take = t; // no full pack near the target: exactly t samples in M rounds, balanced
        balanced = true;
      }
    }
    packer.prepare(pos, take);
    // (FFD is not monotone in the run length: a shorter run than a fitting one may, rarely, need
    // one more round.)
    while (!(balanced && packer.pack(take, M * N, true, true)) && !packer.pack(take, M * N, true)) {
      M++;
    }
    const bins = M * N;

    // Longest-processing-time assignment of the bins to ranks, M per rank.
    const binIdx = Array.from({ length: bins }, (_, b) => b).sort((a, b) =>
      packer.load[b] - packer.load[a] || a - b
    );
    const rankLoad = new Float64Array(N), rankCount = new Uint32Array(N);
    const slot = new Int32Array(bins); // bin → position rank·M + m
    for (const b of binIdx) {
      let best = -1;
      for (let r = 0; r < N; r++) {
        if (rankCount[r] < M && (best < 0 || rankLoad[r] < rankLoad[best])) best = r;
      }
      slot[b] = best * M + rankCount[best]++;
      rankLoad[best] += packer.load[b];
    }
    let maxLoad = 0, sumLoad = 0;
    for (let r = 0; r < N; r++) {
      maxLoad = Math.max(maxLoad, rankLoad[r]);
      sumLoad += rankLoad[r];
    }
    imbalanceSum += sumLoad > 0 ? maxLoad / (sumLoad / N) : 1;
    costTokens += sumLoad;

    // Emit: counting sort of the run's items by slot.
    const counts = new Uint32Array(bins + 1);
    for (let i = 0; i < take; i++) counts[slot[packer.binOf[i]] + 1]++;
    for (let k = 0; k < bins; k++) counts[k + 1] += counts[k];
    const base = written;
    for (let k = 0; k < bins; k++) mbStart.push(base + counts[k + 1]);
    const fill = counts.slice(0, bins);
    for (let i = 0; i < take; i++) order[base + fill[slot[packer.binOf[i]]]++] = perm[pos + i];
    written += take;
    pos += take;
    stepStart.push(mbStart.length - 1);
    mPerStep.push(M);
    stepSamples.push(take);
  }

  const steps = mPerStep.length;
  const microBatches = mbStart.length - 1;
  const realTokens = cum[n];
  let sMin = Infinity, sMax = 0, sSum = 0, sSq = 0, mMin = Infinity, mMax = 0, mSum = 0;
  const full = steps > 1 ? steps - 1 : steps; // the spread leaves out the last, partial step
  for (let s = 0; s < steps; s++) {
    if (s < full) {
      sMin = Math.min(sMin, stepSamples[s]);
      sMax = Math.max(sMax, stepSamples[s]);
      sSum += stepSamples[s];
      sSq += stepSamples[s] ** 2;
    }
    mMin = Math.min(mMin, mPerStep[s]);
    mMax = Math.max(mMax, mPerStep[s]);
    mSum += mPerStep[s];
  }
  const sMean = full ? sSum / full : 0;
  const summary: BucketSummary = {
    samples: total,
    planned: n,
    overCapacity: over.length,
    overCapacityIndices: over.slice(0, 20),
    batchSize: B,
    ranks: N,
    capacity: C,
    seed: opts.seed,
    epoch: opts.epoch,
    padToLongest: pad,
    steps,
    microBatches,
    microBatchesPerStep: {
      min: steps ? mMin : 0,
      mean: steps ? mSum / steps : 0,
      max: mMax,
    },
    samplesPerStep: {
      min: steps ? sMin : 0,
      mean: sMean,
      max: sMax,
      std: full ? Math.sqrt(Math.max(0, sSq / full - sMean * sMean)) : 0,
    },
    lastStepSamples: steps ? stepSamples[steps - 1] : 0,
    realTokens,
    costTokens,
    efficiency: microBatches ? realTokens / (C * microBatches) : 0,
    paddingEfficiency: costTokens ? realTokens / costTokens : 1,
    rankImbalance: steps ? imbalanceSum / steps : 1,
  };
  return {
    order,
    mbStart: Uint32Array.from(mbStart),
    stepStart: Uint32Array.from(stepStart),
    microBatchesPerRank: Uint32Array.from(mPerStep),
    summary,
  };
}

/** Sample indices of micro-batch m of rank r in step s (a view into plan.order). */
export function microBatch(plan: BucketPlan, step: number, rank: number, m: number): Uint32Array {
  const M = plan.microBatchesPerRank[step];
  if (m < 0 || m >= M || rank < 0 || rank >= plan.summary.ranks) {
    throw new RangeError(`no micro-batch (${step}, ${rank}, ${m})`);
  }
  const b = plan.stepStart[step] + rank * M + m;
  return plan.order.subarray(plan.mbStart[b], plan.mbStart[b + 1]);
}

/** The plan as nested arrays: steps[s][r][m] = sample indices of that micro-batch. */
export function planToNested(plan: BucketPlan): number[][][][] {
  const out: number[][][][] = [];
  for (let s = 0; s < plan.microBatchesPerRank.length; s++) {
    const M = plan.microBatchesPerRank[s];
    const ranks: number[][][] = [];
    for (let r = 0; r < plan.summary.ranks; r++) {
      const mbs: number[][] = [];
      for (let m = 0; m < M; m++) mbs.push(Array.from(microBatch(plan, s, r, m)));
      ranks.push(mbs);
    }
    out.push(ranks);
  }
  return out;
}

/** Contents of buckets.json. */
export interface BucketsFile {
  epochs: { summary: BucketSummary; steps: number[][][][] }[];
}

/**
 * Write <run_dir>/data/buckets.json: for each planned epoch its summary and its steps
 * (steps[s][r][m] = sample indices), one step per line; temp file then rename.
 */
export async function writeBuckets(path: string, plans: BucketPlan[]): Promise<void> {
  const parts: string[] = ['{"epochs": [\n'];
  plans.forEach((p, e) => {
    parts.push(`{"summary": ${JSON.stringify(p.summary, null, 1)},\n"steps": [\n`);
    const nested = planToNested(p);
    parts.push(nested.map((s) => JSON.stringify(s)).join(",\n"));
    parts.push(`\n]}${e + 1 < plans.length ? "," : ""}\n`);
  });
  parts.push("]}\n");
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, parts.join(""));
  await Deno.rename(tmp, path);
}

/** Read a buckets.json written by {@link writeBuckets}. */
export async function readBuckets(path: string): Promise<BucketsFile> {
  return JSON.parse(await Deno.readTextFile(path)) as BucketsFile;
}

/** One line on a plan for logs: steps, micro-batches, samples per step, efficiency. */
export function describePlan(s: BucketSummary): string {
  const over = s.overCapacity > 0
    ? `, ${s.overCapacity} sample(s) over capacity ${s.capacity} left out (e.g. #${
      s.overCapacityIndices.slice(0, 5).join(", #")
    })`
    : "";
  return `epoch ${s.epoch}: ${s.planned} samples → ${s.steps} steps × ${s.ranks} rank(s), ` +
    `${s.microBatchesPerStep.min}–${s.microBatchesPerStep.max} micro-batches/rank/step, ` +
    `samples/step ${s.samplesPerStep.min}–${s.samplesPerStep.max} (mean ${
      s.samplesPerStep.mean.toFixed(1)
    }, B ${s.batchSize}, last ${s.lastStepSamples}), efficiency ${
      (100 * s.efficiency).toFixed(1)
    }%` +
    (s.padToLongest ? ` (padding ${(100 * s.paddingEfficiency).toFixed(1)}%)` : "") + over;
}
