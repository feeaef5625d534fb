// User-facing errors: one clear line plus a hint, printed without a stack trace.

/** A mistake the user can fix (bad flag, bad file, bad config); main prints it as one line. */
export class UserError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(message);
    this.name = "UserError";
  }
}

/** `file:line:col` prefix for an error in an input file (line and column 1-based). */
export function where(file: string, line?: number, col?: number): string {
  if (line === undefined) return file;
  return col === undefined ? `${file}:${line}` : `${file}:${line}:${col}`;
}
