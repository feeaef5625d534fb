// Placeholder for the 'initModelCommand' command until its issue lands.
import { UserError } from "../pipeline/errors.ts";

/** Not available yet: raises a clear error. */
export function initModelCommand(_v: Record<string, unknown>, _p: string[]): Promise<number> {
  throw new UserError("this command is not available yet in this build");
}
