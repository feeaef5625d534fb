// Answer extraction and exact-match comparison (GSM8K `#### N` conventions of lm-eval-harness, plain text otherwise).

/** lm-eval gsm8k "strict-match": the number after "#### ". */
const STRICT = /#### (-?[0-9.,]+)/;
/** lm-eval gsm8k "flexible-extract": every number-like span; the last one is taken. */
const FLEXIBLE = /(-?[$0-9.,]{2,})|(-?[0-9]+)/g;

/** Whether a reference answer is in the GSM8K format (ends with `#### N`). */
export function isGsm8kAnswer(reference: string): boolean {
  return STRICT.test(reference);
}

/**
 * lm-eval's exact_match preprocessing of gsm8k (regexes_to_ignore ",", "\$", "(?s).*#### ",
 * "\.$"): drop everything up to "#### ", commas, dollar signs and one trailing period; trim.
 */
export function normalizeNumber(s: string): string {
  return s.replace(/[\s\S]*#### /, "").replaceAll(",", "").replaceAll("$", "").trim().replace(
    /\.$/,
    "",
  );
}

/** The strict answer of a generation (the number after "#### "), or null. */
export function extractStrict(text: string): string | null {
  const m = STRICT.exec(text);
  return m ? m[1] : null;
}

/** The flexible answer of a generation (the last number-like span), or null. */
export function extractFlexible(text: string): string | null {
  let last: string | null = null;
  for (const m of text.matchAll(FLEXIBLE)) {
    const g = m[1] ?? m[2];
    if (g !== undefined && /[0-9]/.test(g)) last = g;
  }
  return last;
}

/** Collapse whitespace and trim (for plain-text answers). */
export function normalizeText(s: string): string {
  return s.trim().replace(/\s+/g, " ");
}

/** How one generation scored. */
export interface MatchResult {
  /** Extracted prediction (normalized), or null when nothing could be extracted. */
  prediction: string | null;
  /** Normalized reference. */
  reference: string;
  /** Strict match (GSM8K: "#### N" present and equal; plain text: equal after trimming). */
  strict: boolean;
  /** Flexible match (GSM8K: strict answer, else the last number; plain text: same as strict). */
  flexible: boolean;
}

/**
 * Score a generation against a reference. GSM8K references (`#### N`): the strict prediction is
 * the number after "#### ", the flexible one that number or else the last number in the text;
 * both are compared after lm-eval's normalization. Other references: whitespace-normalized text
 * equality (the answer is the whole generation).
 */
export function scoreAnswer(generation: string, reference: string): MatchResult {
  if (isGsm8kAnswer(reference)) {
    const ref = normalizeNumber(extractStrict(reference)!);
    const strict = extractStrict(generation);
    const flex = strict ?? extractFlexible(generation);
    const sNorm = strict === null ? null : normalizeNumber(strict);
    const fNorm = flex === null ? null : normalizeNumber(flex);
    return {
      prediction: fNorm,
      reference: ref,
      strict: sNorm !== null && sNorm === ref,
      flexible: fNorm !== null && fNorm === ref,
    };
  }
  const ref = normalizeText(reference), pred = normalizeText(generation);
  return { prediction: pred, reference: ref, strict: pred === ref, flexible: pred === ref };
}

/** Cut `text` at the first of `stops` (returns the text before it) and say whether one was found. */
export function cutAtStop(
  text: string,
  stops: readonly string[],
): { text: string; stopped: boolean } {
  let at = -1;
  for (const s of stops) {
    if (!s) continue;
    const i = text.indexOf(s);
    if (i >= 0 && (at < 0 || i < at)) at = i;
  }
  return at < 0 ? { text, stopped: false } : { text: text.slice(0, at), stopped: true };
}
