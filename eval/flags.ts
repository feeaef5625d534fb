// Flag parsing shared by the eval and chat commands: required strings and bounded integers.
import { UserError } from "../pipeline/errors.ts";

/** A required string flag. */
export function requiredFlag(v: Record<string, unknown>, flag: string, hint: string): string {
  const s = v[flag];
  if (typeof s !== "string" || !s) throw new UserError(`--${flag} is required`, hint);
  return s;
}

/** An optional integer flag ≥ min (null when absent). */
export function intFlag(v: Record<string, unknown>, flag: string, min: number): number | null {
  const s = v[flag];
  if (s === undefined) return null;
  const n = Number(s);
  if (typeof s !== "string" || s.trim() === "" || !Number.isInteger(n) || n < min) {
    throw new UserError(`--${flag} must be an integer >= ${min} (got ${JSON.stringify(s)})`);
  }
  return n;
}
